//! Commands that read what pushes left behind: `list`, `status` (and `status --check`),
//! `freshness`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::{alternate, load};
use crate::config::{self, Config};
use crate::operator::check::CheckArgs;
use crate::operator::cli::Cli;
use crate::push::ledger::{Kind, Ledger, LedgerError, MirrorView};
use crate::push::report::{History, Report};
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
    /// `ssh`, `http`, `mqtt` or `check-only`.
    transport: String,
    target: String,
    archives: Vec<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    rate_limit: Option<String>,
    timeout: Option<String>,
    retries: Option<u32>,
    enabled: bool,
    tags: Vec<String>,
    /// Per archive it carries: the key and source address its triggers are sent with.
    sent_as: Vec<SentAs>,
    /// Per archive it carries: where it stands (the ledger's view, as `status` shows it).
    states: Vec<MirrorView>,
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

/// The ledger of `config`'s `state_dir` (read only: a monitoring user need not own it).
fn ledger(config: &Config) -> Result<Ledger, LedgerError> {
    Ledger::read(&config.state_dir, &History::new(&config.state_dir, config.status.history))
}

pub(super) fn list(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    let views = ledger(&config).map_err(Stop::usage)?.views(&config, archive);
    let states = |name: &str| -> Vec<MirrorView> { views.iter().filter(|v| v.state.mirror == name).cloned().collect() };
    let all_archives = || config.archives.keys().cloned().collect::<Vec<_>>();
    let mut rows: Vec<MirrorListing> = config
        .mirrors
        .iter()
        .filter(|m| archive.is_none_or(|a| m.serves(a)))
        .map(|m| MirrorListing {
            name: m.name.clone(),
            transport: m.transport_name().to_string(),
            target: m.transport.display_target(),
            archives: m.archives.clone().unwrap_or_else(all_archives),
            kind: Some(m.kind.to_string()),
            rate_limit: m.rate_limit.map(|r| r.to_string()),
            timeout: Some(humantime::format_duration(m.timeout).to_string()),
            retries: Some(m.retries),
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
            states: states(&m.name),
        })
        .collect();
    rows.extend(config.watched.iter().filter(|w| archive.is_none_or(|a| w.serves(a))).map(|w| MirrorListing {
        name: w.name.clone(),
        transport: Kind::CheckOnly.to_string(),
        target: w.check.to_string(),
        archives: w.archives.clone().unwrap_or_else(all_archives),
        kind: None,
        rate_limit: None,
        timeout: None,
        retries: None,
        enabled: w.enabled,
        tags: w.tags.clone(),
        sent_as: Vec::new(),
        states: states(&w.name),
    }));
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    match cli.format {
        Format::Json => print_json(&rows),
        Format::Table => {
            let mut table = vec![
                ["NAME", "TRANSPORT", "TARGET", "ARCHIVES", "TYPE", "RATE", "TIMEOUT", "RETRIES", "SENT AS", "STATE"]
                    .map(String::from),
            ];
            let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            for r in &rows {
                table.push([
                    r.name.clone(),
                    r.transport.clone(),
                    r.target.clone(),
                    r.archives.join(","),
                    dash(r.kind.clone()),
                    dash(r.rate_limit.clone()),
                    dash(r.timeout.clone()),
                    dash(r.retries.map(|n| n.to_string())),
                    sent_as_text(&r.sent_as),
                    state_text(&r.states),
                ]);
            }
            print!("{}", align(&table));
        }
    }
    Ok(Verdict::Clean)
}

/// The STATE cell: one view per archive, the archive named when there are several.
fn state_text(views: &[MirrorView]) -> String {
    let one = |v: &MirrorView| match v.since {
        Some(t) => format!("{} since {t}", v.health),
        None => v.health.to_string(),
    };
    match views {
        [] => "-".to_string(),
        [v] => one(v),
        many => many.iter().map(|v| format!("{}: {}", v.state.archive, one(v))).collect::<Vec<_>>().join("; "),
    }
}

/// What `status --format json` prints per archive.
#[derive(Debug, Serialize)]
struct ArchiveState {
    /// Its last push, as stored.
    last_report: Option<Report>,
    /// Every mirror of it, as the ledger shows it.
    mirrors: Vec<MirrorView>,
    /// Its key rotation's progress, while one is under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<crate::push::ledger::Rotation>,
}

pub(super) async fn status(cli: &Cli, check: Option<&CheckArgs>) -> Ended {
    if let Some(args) = check {
        return Ok(Verdict::Nagios(nagios_status(cli, args).await));
    }
    let config = load(cli)?;
    let history = History::new(&config.state_dir, config.status.history);
    let latest = history
        .latest_per_archive()
        .map_err(|e| Stop::usage(format_args!("cannot read reports in {}: {e}", config.state_dir.display())))?;
    let picture = ledger(&config).map_err(Stop::usage)?.picture(&config);
    let archives: BTreeMap<String, ArchiveState> = config
        .archives
        .keys()
        .map(|name| {
            let mirrors = picture.views.iter().filter(|v| &v.state.archive == name).cloned().collect();
            let rotation = picture.rotations.iter().find(|r| &r.archive == name).cloned();
            (name.clone(), ArchiveState { last_report: latest.get(name).cloned(), mirrors, rotation })
        })
        .collect();
    match cli.format {
        Format::Json => print_json(&serde_json::json!({ "archives": archives })),
        Format::Table => {
            for (name, a) in &archives {
                match &a.last_report {
                    Some(r) => println!(
                        "== {name}: last push {} at {} ({}): {}",
                        r.serial.as_deref().unwrap_or("?"),
                        r.finished_at,
                        r.origin,
                        r.summary_text()
                    ),
                    None => println!("== {name}: no push yet"),
                }
                print!("{}", views_table(&a.mirrors));
                if let Some(r) = &a.rotation {
                    println!("key rotation {}", r.summary(20));
                }
            }
        }
    }
    Ok(Verdict::Clean)
}

/// Mirrors as a table: name, kind, state and since when, what was last delivered, detail.
fn views_table(views: &[MirrorView]) -> String {
    let mut rows = vec![["MIRROR", "KIND", "STATE", "SINCE", "DELIVERED", "LAST TRIGGER", "DETAIL"].map(String::from)];
    for v in views {
        let last = v.state.last.as_ref().map(|t| format!("{} {} ({})", t.outcome, t.at, t.origin));
        rows.push([
            v.state.mirror.clone(),
            v.kind.to_string(),
            v.health.to_string(),
            v.since.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
            v.state.delivered.clone().unwrap_or_else(|| "-".into()),
            last.unwrap_or_else(|| "-".into()),
            v.detail(),
        ]);
    }
    align(&rows)
}

/// `status --check`: a monitoring plugin. One status line (with perfdata) on stdout, then one
/// line per mirror that is not ok; `--format json` prints the same as one document.
async fn nagios_status(cli: &Cli, args: &CheckArgs) -> Nagios {
    // From the daemon, its sweeps are its own business: one that answers is sweeping.
    let views = match &args.url {
        Some(url) => crate::operator::check::views_from_daemon(url).await.map(|(views, aside)| (views, false, aside)),
        None => judge_from_ledger(cli),
    };
    let judged = match views {
        Ok((views, stale_sweep, aside)) => crate::operator::check::judge(&views, stale_sweep, &aside, args),
        Err(why) => crate::operator::check::Judged::unknown(why),
    };
    match cli.format {
        Format::Json => print_json(&judged),
        Format::Table => print!("{}", judged.to_text()),
    }
    judged.state
}

/// Every mirror's view and whether the daemon's freshness sweep is overdue, or why there is
/// nothing to judge by.
fn judge_from_ledger(cli: &Cli) -> Result<(Vec<MirrorView>, bool, Vec<String>), String> {
    let config = config::load(&cli.config).map_err(|errors| {
        eprintln!("{errors}");
        let first = errors.0.first().map(ToString::to_string).unwrap_or_default();
        format!("{} configuration error(s), first: {first}", errors.0.len())
    })?;
    let views = ledger(&config).map_err(|e| e.to_string())?.views(&config, None);
    // A sweep older than two intervals (and a minute): the daemon stopped sweeping.
    let newest = views.iter().filter_map(|v| v.state.live.as_ref()).map(|l| l.checked_at.0).max();
    let overdue = config.freshness_interval * 2 + Duration::from_secs(60);
    let stale_sweep =
        newest.is_some_and(|t| std::time::SystemTime::now().duration_since(t).unwrap_or_default() > overdue);
    let aside = crate::sys::fsutil::kept_aside(&config.state_dir).iter().map(|p| p.display().to_string()).collect();
    Ok((views, stale_sweep, aside))
}
