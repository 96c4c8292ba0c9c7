//! `status --check`: a monitoring plugin (Nagios, Icinga, NRPE) that judges every mirror by its
//! current state in the ledger ([`crate::push::ledger`]), never by one report, following the
//! monitoring-plugins conventions: one status line with performance data, then one line per
//! mirror that is not ok (the long output), exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN.
//!
//! ```text
//! PUSHMIRROR CRITICAL - 2 failing (http-d, mirror-x), 1 behind | ok=997;;;0;1000 failed=2;;0;0;1000 …
//! debian/http-d: failing since 2026-12-06T10:00:00Z (3 failure(s): http-status HTTP 500)
//! ```
//!
//! CRITICAL when more mirrors than `--critical` are failing or behind by more than twice their
//! archive's `max_lag`; WARNING when more than `--warning` are not ok (failing, pending, deferred,
//! behind, unreachable), or the daemon's freshness sweep is overdue. Both thresholds are a count or
//! a percentage of the mirrors judged (disabled ones are not); both default to 0.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::push::ledger::{Health, MirrorView};
use crate::vocab::output::Nagios;

/// The options of `status --check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckArgs {
    /// WARNING when more mirrors than this are not ok: a count, or a percentage like 5%.
    #[arg(long, value_name = "N|P%", default_value = "0", requires = "check")]
    pub warning: Threshold,
    /// CRITICAL when more mirrors than this are failing (or far behind): a count or a percentage.
    #[arg(long, value_name = "N|P%", default_value = "0", requires = "check")]
    pub critical: Threshold,
    /// Judge what the daemon's status server says (`http://127.0.0.1:9470`) instead of reading
    /// `state_dir`: a monitoring user needs neither the configuration nor any secret.
    #[arg(long, value_name = "URL", requires = "check")]
    pub url: Option<reqwest::Url>,
}

/// The most of a `/status` answer that is read (a status of 10,000 mirrors is about 10 MB).
const MAX_STATUS: usize = 64 * 1024 * 1024;

/// Every mirror's view from the daemon's `/status` at `base`, or why it cannot be had.
pub async fn views_from_daemon(base: &reqwest::Url) -> Result<(Vec<MirrorView>, Vec<String>), String> {
    let url = base.join("/status").map_err(|e| format!("{base}: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut response =
        client.get(url.clone()).send().await.map_err(|e| format!("cannot reach the daemon at {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("the daemon at {url} answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_STATUS {
            return Err(format!("{url}: the answer is larger than {} MiB", MAX_STATUS >> 20));
        }
        body.extend_from_slice(&chunk);
    }
    let status: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not a daemon's status: {e}"))?;
    if let Some(why) = status.get("mirrors_error").and_then(|e| e.as_str()) {
        return Err(format!("the daemon cannot read the mirrors' state: {why}"));
    }
    let archives = status.get("archives").and_then(|a| a.as_array()).ok_or_else(|| format!("{url}: no archives"))?;
    let mut views = Vec::new();
    for archive in archives {
        let mirrors = archive.get("mirrors").cloned().unwrap_or_default();
        let some: Vec<MirrorView> = serde_json::from_value(mirrors).map_err(|e| format!("{url}: {e}"))?;
        views.extend(some);
    }
    // Absent when nothing was kept aside (and from daemons older than the field).
    let aside = match status.get("kept_aside") {
        Some(list) => serde_json::from_value(list.clone()).map_err(|e| format!("{url}: kept_aside: {e}"))?,
        None => Vec::new(),
    };
    Ok((views, aside))
}

/// How many mirrors may be in a state before it counts: `N`, or `P%` of those judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Threshold {
    /// At most this many.
    Count(u64),
    /// At most this share, in percent.
    Percent(f64),
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Count(0)
    }
}

impl FromStr for Threshold {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Threshold::Percent(p)),
                _ => Err(format!("`{s}`: a percentage is 0% to 100%")),
            },
            None => {
                s.parse::<u64>().map(Threshold::Count).map_err(|_| format!("`{s}`: a count, or a percentage like 5%"))
            }
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Threshold {
    /// The largest count that does not exceed the threshold, of `total` mirrors.
    pub fn allowed(self, total: usize) -> u64 {
        match self {
            Threshold::Count(n) => n,
            Threshold::Percent(p) => (total as f64 * p / 100.0).floor() as u64,
        }
    }
}

/// What `status --check` concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// The plugin state.
    #[serde(serialize_with = "state_word")]
    pub state: Nagios,
    /// The exit status it means.
    pub exit: u8,
    /// The status line's text after `PUSHMIRROR STATE - `.
    pub summary: String,
    /// Mirrors per state (disabled ones excluded), as in the perfdata.
    pub counts: Counts,
    /// The thresholds applied, as counts.
    pub warning_above: u64,
    /// See [`Judged::warning_above`].
    pub critical_above: u64,
    /// Every mirror that is not ok, as the ledger shows it.
    pub mirrors: Vec<MirrorView>,
}

fn state_word<S: serde::Serializer>(state: &Nagios, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(word(*state))
}

fn word(state: Nagios) -> &'static str {
    match state {
        Nagios::Ok => "OK",
        Nagios::Warning => "WARNING",
        Nagios::Critical => "CRITICAL",
        Nagios::Unknown => "UNKNOWN",
    }
}

/// Mirrors per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// ok
    pub ok: usize,
    /// failing (perfdata label `failed`)
    pub failed: usize,
    /// pending
    pub pending: usize,
    /// deferred
    pub deferred: usize,
    /// behind
    pub behind: usize,
    /// unreachable
    pub unreachable: usize,
    /// unknown: nothing learned yet
    pub unknown: usize,
    /// Of `behind`, those behind by more than twice their archive's `max_lag`.
    pub far_behind: usize,
}

impl Counts {
    fn of(views: &[MirrorView]) -> Self {
        let mut c = Counts::default();
        for v in views {
            *match v.health {
                Health::Ok => &mut c.ok,
                Health::Failing => &mut c.failed,
                Health::Pending => &mut c.pending,
                Health::Deferred => &mut c.deferred,
                Health::Behind => &mut c.behind,
                Health::Unreachable => &mut c.unreachable,
                Health::Unknown => &mut c.unknown,
                Health::Disabled => continue,
            } += 1;
            if v.far_behind && v.health == Health::Behind {
                c.far_behind += 1;
            }
        }
        c
    }

    fn total(&self) -> usize {
        self.ok + self.failed + self.pending + self.deferred + self.behind + self.unreachable + self.unknown
    }

    fn not_ok(&self) -> usize {
        self.failed + self.pending + self.deferred + self.behind + self.unreachable
    }
}

/// Judges `views`; `stale_sweep`: the daemon's last freshness sweep is overdue; `kept_aside`:
/// corrupt state files set aside (a WARNING while they are there).
pub fn judge(views: &[MirrorView], stale_sweep: bool, kept_aside: &[String], args: &CheckArgs) -> Judged {
    let counts = Counts::of(views);
    let total = counts.total();
    let (warning_above, critical_above) = (args.warning.allowed(total), args.critical.allowed(total));
    let not_ok: Vec<MirrorView> = views
        .iter()
        .filter(|v| !matches!(v.health, Health::Ok | Health::Unknown | Health::Disabled))
        .cloned()
        .collect();
    if total == 0 || counts.unknown == total {
        let why = if total == 0 { "no mirrors configured" } else { "nothing known yet: no push, no freshness sweep" };
        return Judged { counts, warning_above, critical_above, mirrors: not_ok, ..Judged::unknown(why.into()) };
    }
    let critical = (counts.failed + counts.far_behind) as u64 > critical_above;
    let warning = counts.not_ok() as u64 > warning_above || stale_sweep || !kept_aside.is_empty();
    let state = match (critical, warning) {
        (true, _) => Nagios::Critical,
        (false, true) => Nagios::Warning,
        (false, false) => Nagios::Ok,
    };
    let archives: std::collections::BTreeSet<&str> = views.iter().map(|v| v.state.archive.as_str()).collect();
    let name = |v: &MirrorView| {
        if archives.len() > 1 { format!("{}/{}", v.state.archive, v.state.mirror) } else { v.state.mirror.clone() }
    };
    let mut parts = Vec::new();
    for health in [Health::Failing, Health::Pending, Health::Deferred, Health::Behind, Health::Unreachable] {
        let named: Vec<String> = not_ok.iter().filter(|v| v.health == health).map(name).collect();
        if named.is_empty() {
            continue;
        }
        let shown = named.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let more = if named.len() > 5 { format!(", … {} more", named.len() - 5) } else { String::new() };
        parts.push(format!("{} {health} ({shown}{more})", named.len()));
    }
    if parts.is_empty() {
        parts.push(format!("{} of {total} mirror(s) ok", counts.ok));
    }
    if stale_sweep {
        parts.push("last freshness sweep overdue: is the daemon running?".into());
    }
    if let Some(first) = kept_aside.first() {
        parts.push(format!(
            "{} corrupt state file(s) kept aside, first {first}: look, then delete to clear",
            kept_aside.len()
        ));
    }
    Judged {
        state,
        exit: exit(state),
        summary: parts.join(", "),
        counts,
        warning_above,
        critical_above,
        mirrors: not_ok,
    }
}

fn exit(state: Nagios) -> u8 {
    match state {
        Nagios::Ok => 0,
        Nagios::Warning => 1,
        Nagios::Critical => 2,
        Nagios::Unknown => 3,
    }
}

impl Judged {
    /// UNKNOWN, saying why.
    pub fn unknown(why: String) -> Self {
        Judged {
            state: Nagios::Unknown,
            exit: exit(Nagios::Unknown),
            summary: why,
            counts: Counts::default(),
            warning_above: 0,
            critical_above: 0,
            mirrors: Vec::new(),
        }
    }

    /// The performance data: `label=value;warn;crit;min;max` per state. The thresholds sit on
    /// the label they are judged by: critical on `failed`, warning on `not_ok`.
    pub fn perfdata(&self) -> String {
        let c = &self.counts;
        let total = c.total();
        let (w, k) = (self.warning_above, self.critical_above);
        [
            format!("ok={};;;0;{total}", c.ok),
            format!("failed={};;{k};0;{total}", c.failed),
            format!("pending={};;;0;{total}", c.pending),
            format!("deferred={};;;0;{total}", c.deferred),
            format!("behind={};;;0;{total}", c.behind),
            format!("unreachable={};;;0;{total}", c.unreachable),
            format!("unknown={};;;0;{total}", c.unknown),
            format!("not_ok={};{w};;0;{total}", c.not_ok()),
        ]
        .join(" ")
    }

    /// The plugin's output: the status line with perfdata, then one line per mirror not ok.
    pub fn to_text(&self) -> String {
        let mut out = format!("PUSHMIRROR {} - {}", word(self.state), self.summary);
        if self.state != Nagios::Unknown || self.counts.total() > 0 {
            out.push_str(" | ");
            out.push_str(&self.perfdata());
        }
        out.push('\n');
        for v in &self.mirrors {
            let since = v.since.map(|t| format!(" since {t}")).unwrap_or_default();
            let detail = v.detail();
            let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
            out.push_str(&format!("{}/{}: {}{since}{detail}\n", v.state.archive, v.state.mirror, v.health));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_counts_or_percentages() {
        assert_eq!("3".parse::<Threshold>().unwrap().allowed(1000), 3);
        assert_eq!("5%".parse::<Threshold>().unwrap().allowed(1000), 50);
        assert_eq!("0.5%".parse::<Threshold>().unwrap().allowed(1000), 5);
        assert!("101%".parse::<Threshold>().is_err());
        assert!("x".parse::<Threshold>().is_err());
    }
}
