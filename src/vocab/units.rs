//! Values of configuration and reports that are not about mirrors: durations (parsed and
//! printed) and rate limits. A leaf: it uses nothing of the crate.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The longest value of each duration field (README, configuration reference). Every duration
/// is bounded where it is parsed, so no time arithmetic downstream can overflow.
pub mod max {
    use super::{DAY, Duration, HOUR};
    /// `archives.*.settle`.
    pub const SETTLE: Duration = DAY;
    /// `archives.*.poll`.
    pub const POLL: Duration = DAY;
    /// A mirror's `timeout` (one attempt).
    pub const TIMEOUT: Duration = DAY;
    /// A mirror's `sync_timeout` (waiting for a downstream's sync).
    pub const SYNC_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
    /// `backoff.initial` and `backoff.max`.
    pub const BACKOFF: Duration = DAY;
    /// The period of a `rate_limit`.
    pub const RATE_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);
    /// `receive`'s per-archive sync `timeout`.
    pub const SYNC_COMMAND: Duration = Duration::from_secs(7 * 24 * 3600);
    /// `--grace` of `daemon` and `receive`.
    pub const GRACE: Duration = HOUR;
}

/// Parses a humantime duration, rejecting zero and anything longer than `max`.
pub fn parse_duration(s: &str, max: Duration) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!("duration `{s}` must be greater than zero")),
        Ok(d) if d > max => {
            Err(format!("duration `{s}` is longer than the maximum {}", humantime::format_duration(max)))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(format!("invalid duration `{s}`: {e} (examples: 30s, 5m, 6h)")),
    }
}

/// `--grace`: a duration of at most [`max::GRACE`] (zero allowed: stop at once).
pub fn parse_grace(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d > max::GRACE => Err(format!("at most {}", humantime::format_duration(max::GRACE))),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `N/period`: at most N triggers per period, bursts of up to N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Triggers allowed per period (and the burst size).
    pub count: NonZeroU32,
    /// The period.
    pub per: Duration,
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, per) =
            s.split_once('/').ok_or_else(|| format!("invalid rate limit `{s}`, expected N/duration such as 2/1h"))?;
        let count = n
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| format!("invalid rate limit `{s}`: `{n}` is not a positive whole number"))?;
        let per = parse_duration(per.trim(), max::RATE_PERIOD).map_err(|e| format!("invalid rate limit `{s}`: {e}"))?;
        Ok(RateLimit { count, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

/// `850ms`, `3.2s`, `4m12s`.
pub fn format_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_and_reject() {
        let two_an_hour = RateLimit { count: NonZeroU32::new(2).unwrap(), per: Duration::from_secs(3600) };
        assert_eq!("2/1h".parse::<RateLimit>(), Ok(two_an_hour));
        for bad in ["2", "0/1h", "x/1h", "2/soon", "2/0s", "1/300000000000y"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_beyond_their_maximum_are_refused() {
        assert_eq!(parse_duration("1d", max::SETTLE), Ok(Duration::from_secs(86_400)));
        let err = parse_duration("300000000000y", max::SETTLE).unwrap_err();
        assert!(err.contains("longer than the maximum 1day"), "{err}");
        assert!(parse_duration("25h", max::SETTLE).is_err());
        assert!(parse_grace("2h").is_err() && parse_grace("0s") == Ok(Duration::ZERO));
    }
}
