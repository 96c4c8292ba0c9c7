//! Propagation: after a push, watch each delivered mirror's `project/trace/master` (under its
//! `check:` URL) until it shows the pushed version, and record how long that took from the start
//! of the push. One check per mirror at a time, with backoff; conditional GETs (`ETag`,
//! `Last-Modified`), so an unchanged trace costs a 304; the [`Prober`]'s global cap on GETs in
//! flight; every mirror given up at the archive's `propagation_timeout`. Times are tokio's, so
//! the schedule is tested under paused time.

use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;

use crate::observe::freshness::{Fetched, Prober, Validators};
use crate::observe::trace::Trace;
use crate::push::report::Propagated;

/// The first check waits this long after the push started; each later wait doubles, to
/// [`MAX_INTERVAL`].
pub const FIRST_CHECK: Duration = Duration::from_secs(5);
/// The longest wait between two checks of one mirror.
pub const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// One mirror to follow.
#[derive(Debug, Clone)]
pub struct Follow {
    /// Its name.
    pub mirror: String,
    /// Its public base URL of the archive.
    pub check: Url,
}

/// The mirrors of `report` worth following: delivered (every row of it ok), with a `check:` URL.
pub fn delivered_with_check(config: &crate::config::Config, report: &crate::push::report::Report) -> Vec<Follow> {
    use crate::vocab::model::Outcome;
    // Delivered: a stage went out, and none failed, was deferred or was skipped (a staged
    // mirror whose stage 1 went out but whose stage 2 did not has not been told to finish).
    let delivered = |name: &str| {
        let mut rows = report.triggers.iter().filter(|t| t.mirror == name).peekable();
        rows.peek().is_some() && rows.all(|t| t.outcome == Outcome::Ok)
    };
    config
        .mirrors_of(&report.archive)
        .filter(|m| delivered(&m.name))
        .filter_map(|m| m.check.clone().map(|check| Follow { mirror: m.name.clone(), check }))
        .collect()
}

/// A one-off push ([`crate::push::once`]), then [`follow`] every delivered mirror with a
/// `check:` URL until it serves the pushed serial; the report, with its propagation, is stored
/// after that. Without a serial there is nothing to recognise, and nothing is followed.
pub async fn push_and_follow(
    config: &crate::config::Config,
    plan: &crate::push::plan::Plan,
    options: &crate::push::engine::Options,
    origin: &str,
) -> anyhow::Result<crate::push::report::Report> {
    let engine = crate::push::production_engine(config)?;
    // Set up before anything is sent: a push that happened is always recorded.
    let prober = Prober::new()?;
    let started = tokio::time::Instant::now();
    let mut report = crate::push::dispatch(&engine, plan, options, origin).await;
    if let (Some(serial), Some(archive)) = (plan.serial.as_deref(), config.archives.get(&plan.archive)) {
        let mirrors = delivered_with_check(config, &report);
        report.propagation = follow(&prober, mirrors, serial, started, archive.propagation_timeout).await;
    }
    crate::push::save(config, &report);
    Ok(report)
}

/// Follows every mirror concurrently until each shows `version` or `timeout` has passed since
/// `started`; rows in the order given.
pub async fn follow(
    prober: &Prober,
    mirrors: Vec<Follow>,
    version: &str,
    started: Instant,
    timeout: Duration,
) -> Vec<Propagated> {
    let deadline = started + timeout;
    let all = mirrors.iter().map(|m| follow_one(prober, m, version, started, deadline));
    futures::future::join_all(all).await
}

async fn follow_one(
    prober: &Prober,
    mirror: &Follow,
    version: &str,
    started: Instant,
    deadline: Instant,
) -> Propagated {
    let mut row =
        Propagated { mirror: mirror.mirror.clone(), live_after_ms: None, sync_ms: None, checks: 0, error: None };
    let mut validators = Validators::default();
    let mut wait = FIRST_CHECK;
    // The last check is at the deadline itself.
    let mut next = (started + wait).min(deadline);
    loop {
        tokio::time::sleep_until(next).await;
        row.checks += 1;
        match prober.get_if_changed(&mirror.check, "project/trace/master", &validators).await {
            Ok(Fetched::Body(text, fresh)) => {
                row.error = None;
                let seen = crate::archive::watch::version_of(text.as_bytes());
                if serves(&seen, version) {
                    row.live_after_ms = Some(crate::vocab::units::millis(next.saturating_duration_since(started)));
                    // Its own trace is the sync's only once it describes this version.
                    let (_, own) = prober.own_trace(&mirror.check).await;
                    let own = own.filter(|t| t.serial() == Some(seen.as_str()));
                    row.sync_ms = own.as_ref().and_then(Trace::sync_duration).map(crate::vocab::units::millis);
                    tracing::info!(mirror = %row.mirror, %version, after = %humantime::format_duration(started.elapsed()), "mirror live");
                    return row;
                }
                validators = fresh;
            }
            Ok(Fetched::NotModified) => row.error = None,
            Err(e) => row.error = Some(e),
        }
        if next >= deadline {
            let last = row.error.take().map(|e| format!("; last: {e}")).unwrap_or_default();
            row.error = Some(format!("not live within {}{last}", humantime::format_duration(deadline - started)));
            return row;
        }
        wait = (wait * 2).min(MAX_INTERVAL);
        next = (Instant::now() + wait).min(deadline);
    }
}

/// Whether a mirror whose `master` shows `seen` serves `pushed` (or a later version: it moved on
/// before it was checked). Later means numerically greater for serials of digits (Debian's
/// `YYYYMMDDNN`); other versions only compare equal.
pub fn serves(seen: &str, pushed: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    seen == pushed || (digits(seen) && digits(pushed) && seen.parse::<u64>().ok() > pushed.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_numeric_serial_serves_an_earlier_one_and_others_only_compare_equal() {
        assert!(serves("2026112902", "2026112902"));
        assert!(serves("2026112903", "2026112902"));
        assert!(!serves("2026112901", "2026112902"));
        assert!(!serves("b-release", "a-release"));
        assert!(serves("sha256:00ff", "sha256:00ff"));
    }
}
