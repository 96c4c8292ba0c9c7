//! Commands that read what pushes left behind: `list`, `status` (and `status --check`),
//! `freshness`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{alternate, load};
use crate::config::{self, Config};
use crate::operator::cli::Cli;
use crate::push::report::{History, Report, TriggerReport};
use crate::vocab::model::Outcome;
use crate::vocab::output::{Ended, Format, Nagios, Stop, Verdict, align, print_json};

/// `freshness`: which version each mirror serves ([`crate::observe::freshness`]).
pub(super) async fn freshness(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    if let Some(name) = archive.filter(|a| !config.archives.contains_key(*a)) {
        let known: Vec<&str> = config.archives.keys().map(String::as_str).collect();
        return Err(Stop::usage(format_args!("unknown archive `{name}` (configured: {})", known.join(", "))));
    }
    for a in config.archives.values().filter(|a| archive.is_none_or(|o| o == a.name)) {
        let trace = a.root.join(&a.trace);
        if let Err(e) = crate::sys::fsutil::read_bounded(&trace, crate::sys::fsutil::limit::TRACE) {
            // Without this archive's own version no mirror can be up to date: say why.
            let why = crate::sys::owner::unreadable_reason(&trace, &e);
            eprintln!("warning: archives.{}.trace: cannot read {}: {why}", a.name, trace.display());
        }
    }
    let prober = crate::observe::freshness::Prober::new().map_err(alternate)?;
    let history = History::new(&config.state_dir, config.status.history).all().unwrap_or_default();
    let mut rows = crate::observe::freshness::survey(&config, archive, &prober, &history).await;
    // The daemon's memory gives since when each mirror serves its version; without one, unknown.
    let previous = crate::observe::freshness::recall(&config.state_dir).unwrap_or_default();
    crate::observe::freshness::annotate(&mut rows, &previous, &history);
    match cli.format {
        Format::Json => print_json(&rows),
        Format::Table if rows.is_empty() => println!("no mirror has a `check:` URL"),
        Format::Table => print!("{}", crate::observe::freshness::to_table(&rows)),
    }
    Ok(if crate::observe::freshness::all_fresh(&rows) { Verdict::Clean } else { Verdict::Failed })
}

/// One row of `list`.
#[derive(Debug, Serialize)]
struct MirrorListing {
    name: String,
    transport: &'static str,
    target: String,
    archives: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    rate_limit: Option<String>,
    timeout: String,
    retries: u32,
    enabled: bool,
    tags: Vec<String>,
    /// Per archive it carries: the key and source address its triggers are sent with.
    sent_as: Vec<SentAs>,
    last: Option<TriggerReport>,
}

/// Who a mirror's triggers of one archive are sent as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct SentAs {
    archive: String,
    /// The `SHA256:…` fingerprint of the SSH key.
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// The key's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_address: Option<IpAddr>,
}

impl SentAs {
    /// `SHA256:… from 192.0.2.7`, or `-` when neither is set.
    fn short(&self) -> String {
        let mut parts: Vec<String> = self.key.iter().cloned().collect();
        parts.extend(self.source_address.map(|a| format!("from {a}")));
        if parts.is_empty() { "-".to_string() } else { parts.join(" ") }
    }
}

/// The SENT AS cell: one value when every archive is sent alike, else one per archive.
fn sent_as_text(all: &[SentAs]) -> String {
    match all.split_first() {
        None => "-".to_string(),
        Some((first, rest)) if rest.iter().all(|s| s.short() == first.short()) => first.short(),
        Some(_) => all.iter().map(|s| format!("{}: {}", s.archive, s.short())).collect::<Vec<_>>().join("; "),
    }
}

pub(super) fn list(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    let last = last_rows(&config);
    let rows: Vec<MirrorListing> = config
        .mirrors
        .iter()
        .filter(|m| archive.is_none_or(|a| m.serves(a)))
        .map(|m| MirrorListing {
            name: m.name.clone(),
            transport: m.transport_name(),
            target: m.transport.display_target(),
            archives: m.archives.clone().unwrap_or_else(|| config.archives.keys().cloned().collect()),
            kind: m.kind.to_string(),
            rate_limit: m.rate_limit.map(|r| r.to_string()),
            timeout: humantime::format_duration(m.timeout).to_string(),
            retries: m.retries,
            enabled: m.enabled,
            tags: m.tags.clone(),
            sent_as: m
                .senders
                .iter()
                .filter(|(name, _)| archive.is_none_or(|a| a == name.as_str()))
                .map(|(name, s)| SentAs {
                    archive: name.clone(),
                    key: s.fingerprint.clone(),
                    identity: s.identity.clone(),
                    source_address: s.source_address,
                })
                .collect(),
            last: last.get(&m.name).cloned(),
        })
        .collect();
    match cli.format {
        Format::Json => print_json(&rows),
        Format::Table => {
            let mut table = vec![
                ["NAME", "TRANSPORT", "TARGET", "ARCHIVES", "TYPE", "RATE", "TIMEOUT", "RETRIES", "SENT AS", "LAST"]
                    .map(String::from),
            ];
            for r in &rows {
                let last = match (&r.last, r.enabled) {
                    (_, false) => "disabled".to_string(),
                    (Some(t), _) => {
                        format!("{} {}", t.outcome, t.started_at.map(|s| s.to_string()).unwrap_or_default())
                    }
                    (None, _) => "-".to_string(),
                };
                table.push([
                    r.name.clone(),
                    r.transport.to_string(),
                    r.target.clone(),
                    r.archives.join(","),
                    r.kind.clone(),
                    r.rate_limit.clone().unwrap_or_else(|| "-".into()),
                    r.timeout.clone(),
                    r.retries.to_string(),
                    sent_as_text(&r.sent_as),
                    last,
                ]);
            }
            print!("{}", align(&table));
        }
    }
    Ok(Verdict::Clean)
}

/// The newest trigger row of each mirror across the history.
fn last_rows(config: &Config) -> BTreeMap<String, TriggerReport> {
    let history = History::new(&config.state_dir, config.status.history);
    let mut last = BTreeMap::new();
    let Ok(reports) = history.newest_first() else { return last };
    for report in reports {
        // The newest report mentioning a mirror has its last outcome; the last row of a staged
        // mirror is its latest stage.
        for row in report.triggers.into_iter().rev() {
            if row.attempts > 0 || row.outcome == Outcome::Deferred {
                last.entry(row.mirror.clone()).or_insert(row);
            }
        }
        if last.len() == config.mirrors.len() {
            break;
        }
    }
    last
}

pub(super) fn status(cli: &Cli, nagios: bool) -> Ended {
    if nagios {
        return Ok(Verdict::Nagios(nagios_status(cli)));
    }
    let config = load(cli)?;
    let latest = History::new(&config.state_dir, config.status.history)
        .latest_per_archive()
        .map_err(|e| Stop::usage(format_args!("cannot read reports in {}: {e}", config.state_dir.display())))?;
    match cli.format {
        Format::Json => print_json(&latest),
        Format::Table if latest.is_empty() => println!("no reports yet in {}", config.state_dir.display()),
        Format::Table => {
            for report in latest.values() {
                println!("== {} at {} ({})", report.archive, report.finished_at, report.origin);
                print!("{}", report.to_table());
            }
        }
    }
    Ok(Verdict::Clean)
}

/// Nagios plugin semantics: OK, WARNING (deferred), CRITICAL (failed), UNKNOWN (no report, or
/// nothing readable to judge by). Whatever the state, exactly one status line on stdout: it is
/// what Nagios shows.
fn nagios_status(cli: &Cli) -> Nagios {
    let (state, line) = match nagios_judge(cli) {
        Ok((latest, freshness)) => nagios_verdict(&latest, &freshness),
        Err(why) => (Nagios::Unknown, format!("PUSHMIRROR UNKNOWN - {why}")),
    };
    println!("{line}");
    state
}

/// What the mirrors' freshness says, for `status --check`: each mirror's standing in the daemon's
/// last sweep and whether its lag is past twice its archive's `max_lag`.
struct FreshnessJudged {
    behind: usize,
    far_behind: usize,
    unreachable: usize,
    total: usize,
    /// The last sweep is older than two `freshness.interval`s.
    stale_sweep: bool,
}

/// The latest report of each archive and the last freshness sweep, or why there is nothing to
/// judge by.
fn nagios_judge(cli: &Cli) -> Result<(BTreeMap<String, Report>, FreshnessJudged), String> {
    use crate::observe::freshness::Standing;
    let config = config::load(&cli.config).map_err(|errors| {
        eprintln!("{errors}");
        let first = errors.0.first().map(ToString::to_string).unwrap_or_default();
        format!("{} configuration error(s), first: {first}", errors.0.len())
    })?;
    let latest = History::new(&config.state_dir, config.status.history)
        .latest_per_archive()
        .map_err(|e| format!("cannot read reports in {}: {e}", config.state_dir.display()))?;
    let rows = crate::observe::freshness::recall(&config.state_dir)?;
    // A sweep older than two intervals (and a minute): the daemon stopped sweeping.
    let newest = rows.iter().map(|r| r.checked_at.0).max();
    let overdue = config.freshness_interval * 2 + Duration::from_secs(60);
    let stale_sweep =
        newest.is_some_and(|t| std::time::SystemTime::now().duration_since(t).unwrap_or_default() > overdue);
    let far = |r: &crate::observe::freshness::FreshnessRow| {
        let max_lag = config.archives.get(&r.archive).map_or(config::defaults::MAX_LAG, |a| a.max_lag);
        r.lag_ms.is_none_or(|ms| Duration::from_millis(ms) > max_lag * 2)
    };
    let judged = FreshnessJudged {
        behind: rows.iter().filter(|r| r.standing == Standing::Behind).count(),
        far_behind: rows.iter().filter(|r| r.standing == Standing::Behind && far(r)).count(),
        unreachable: rows.iter().filter(|r| r.standing == Standing::Unreachable).count(),
        total: rows.len(),
        stale_sweep,
    };
    Ok((latest, judged))
}

/// OK; WARNING for a deferred trigger, a mirror behind its archive's `max_lag` or unreachable;
/// CRITICAL for a failed trigger or a mirror behind twice its `max_lag`.
fn nagios_verdict(latest: &BTreeMap<String, Report>, freshness: &FreshnessJudged) -> (Nagios, String) {
    if latest.is_empty() && freshness.total == 0 {
        return (Nagios::Unknown, "PUSHMIRROR UNKNOWN - no push reports yet".to_string());
    }
    let failed: usize = latest.values().map(|r| r.summary.failed).sum();
    let deferred: usize = latest.values().map(|r| r.summary.deferred).sum();
    let mut parts: Vec<String> = latest
        .values()
        .map(|r| {
            format!("{}: {} ok, {} failed, {} deferred", r.archive, r.summary.ok, r.summary.failed, r.summary.deferred)
        })
        .collect();
    if freshness.total > 0 {
        parts.push(format!(
            "freshness: {} of {} mirror(s) behind, {} unreachable{}",
            freshness.behind,
            freshness.total,
            freshness.unreachable,
            if freshness.stale_sweep { " (last sweep overdue: is the daemon running?)" } else { "" }
        ));
    }
    let critical = failed > 0 || freshness.far_behind > 0;
    let warning = deferred > 0 || freshness.behind > 0 || freshness.unreachable > 0 || freshness.stale_sweep;
    let (word, state) = match (critical, warning) {
        (true, _) => ("CRITICAL", Nagios::Critical),
        (false, true) => ("WARNING", Nagios::Warning),
        (false, false) => ("OK", Nagios::Ok),
    };
    (state, format!("PUSHMIRROR {word} - {}", parts.join("; ")))
}
