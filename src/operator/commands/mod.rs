//! What each subcommand does. Each returns how it ended ([`Ended`]); [`run`] turns that into the
//! exit status through [`output::conclude`], the one place that maps endings to exit codes.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::operator::cli::{Cli, Command, HostkeysCommand, KeygenArgs, PushArgs};
use crate::push::engine::Options;
use crate::push::plan::PushRequest;
use crate::push::report::{History, Report, TriggerReport, align};
use crate::vocab::model::Outcome;
use crate::vocab::output::{self, Ended, Format, Nagios, Stop, Verdict, conclude, print_json};

/// Runs the parsed command line; returns the process exit status.
pub async fn run(cli: Cli) -> u8 {
    conclude(dispatch(&cli).await)
}

async fn dispatch(cli: &Cli) -> Ended {
    match &cli.command {
        Command::Push(args) => push(cli, args).await,
        Command::Check => check(cli),
        Command::List { archive } => list(cli, archive.as_deref()),
        Command::Status { check } => status(cli, *check),
        Command::Daemon { grace } => daemon(cli, *grace).await,
        Command::Freshness { archive } => freshness(cli, archive.as_deref()).await,
        Command::Receive { file, grace } => receive(file, *grace).await,
        Command::Keygen(args) => keygen(cli, args),
        Command::Keys { archive } => keys(cli, archive.as_deref()),
        Command::Hostkeys { command: HostkeysCommand::Scan { only } } => hostkeys_scan(cli, only).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "pushmirror", &mut std::io::stdout());
            Ok(Verdict::Clean)
        }
        Command::Manpage => {
            crate::operator::manpage::render(&mut std::io::stdout()).map_err(Stop::usage)?;
            Ok(Verdict::Clean)
        }
        Command::Runmirrors(args) => {
            let config =
                if cli.config_is_default { crate::compat::runmirrors::discover_config() } else { cli.config.clone() };
            crate::compat::runmirrors::run(&config, args, cli.format).await
        }
        Command::ImportRunmirrors(args) => crate::compat::runmirrors::import::run(args, cli.format),
        Command::Demo { mirrors } => crate::demo::run(*mirrors, cli.format).await,
    }
}

/// Loads the config or prints every error (each with its position): nothing is done.
fn load(cli: &Cli) -> Result<Config, Stop> {
    config::load(&cli.config).map_err(|errors| shown(cli, &errors))
}

/// [`load`] for commands that write state: also the ownership rule and what they need on disk
/// ([`config::load_for_writing`]).
fn load_for_writing(cli: &Cli) -> Result<Config, Stop> {
    config::load_for_writing(&cli.config).map_err(|errors| shown(cli, &errors))
}

/// Prints every configuration error, then that nothing was done.
fn shown(cli: &Cli, errors: &config::ConfigErrors) -> Stop {
    eprintln!("{errors}");
    eprintln!("{}: {} error(s); nothing was done", cli.config.display(), errors.0.len());
    Stop::Shown
}

fn check(cli: &Cli) -> Ended {
    match config::load_for_check(&cli.config) {
        Ok(c) => {
            let ssh = c.mirrors.iter().filter(|m| m.transport_name() == "ssh").count();
            match cli.format {
                Format::Json => print_json(&serde_json::json!({
                    "ok": true, "archives": c.archives.len(), "mirrors": c.mirrors.len(), "errors": [],
                })),
                Format::Table => println!(
                    "{}: ok: {} archive(s), {} mirror(s) ({} ssh, {} http)",
                    cli.config.display(),
                    c.archives.len(),
                    c.mirrors.len(),
                    ssh,
                    c.mirrors.len() - ssh
                ),
            }
            Ok(Verdict::Clean)
        }
        Err(errors) => {
            if cli.format == Format::Json {
                let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                print_json(&serde_json::json!({ "ok": false, "errors": list }));
            }
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", cli.config.display(), errors.0.len());
            Err(Stop::Shown)
        }
    }
}

async fn daemon(cli: &Cli, grace: Duration) -> Ended {
    let config = config::load_for_daemon(&cli.config).map_err(|errors| shown(cli, &errors))?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    forward_signals(shutdown.clone(), reload_tx)?;
    let control = crate::daemon::Control::new(shutdown, reload_rx);
    let daemon = crate::daemon::start(cli.config.clone(), config, control, grace).await.map_err(alternate)?;
    match daemon.wait().await {
        Ok(()) => Ok(Verdict::Clean),
        Err(died) => {
            eprintln!("error: {died}");
            Ok(Verdict::Failed)
        }
    }
}

/// `receive`: serves triggers until SIGTERM/SIGINT, then drains like the daemon.
async fn receive(file: &std::path::Path, grace: Duration) -> Ended {
    let config = crate::receive::load(file).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{}: {} error(s); nothing was started", file.display(), errors.0.len());
        Stop::Shown
    })?;
    let shutdown = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel();
    forward_signals(shutdown.clone(), reload_tx)?;
    // The daemon reloads on SIGHUP; receive has nothing to reload, and says so rather than stay silent.
    tokio::spawn(async move {
        while reload_rx.recv().await.is_some() {
            tracing::warn!("SIGHUP ignored: `receive` reads its configuration only at start; restart it");
        }
    });
    let receiving = crate::receive::start(config, shutdown).await.map_err(alternate)?;
    match receiving.wait(grace).await {
        Ok(()) => Ok(Verdict::Clean),
        Err(died) => {
            eprintln!("error: {died}");
            Ok(Verdict::Failed)
        }
    }
}

/// An error with its whole chain of causes (`{:#}`), as a usage stop.
fn alternate(e: anyhow::Error) -> Stop {
    Stop::Usage(format!("{e:#}"))
}

/// SIGTERM and SIGINT cancel `shutdown`; SIGHUP asks for a reload.
fn forward_signals(shutdown: CancellationToken, reload: mpsc::UnboundedSender<()>) -> Result<(), Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| signal(kind).map_err(|e| Stop::usage(format_args!("cannot install signal handlers: {e}")));
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    let mut hup = install(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => shutdown.cancel(),
                _ = int.recv() => shutdown.cancel(),
                _ = hup.recv() => { let _ = reload.send(()); }
            }
        }
    });
    Ok(())
}

async fn push(cli: &Cli, args: &PushArgs) -> Ended {
    let config = load_for_writing(cli)?;
    let (kind, from_ftpsync) = args.kind();
    let request = PushRequest {
        archive: args.archive.clone(),
        only: args.only.clone(),
        tags: args.tag.clone(),
        serial: args.serial.clone(),
        kind,
        from_ftpsync,
    };
    let plan = crate::push::plan_push(&config, &request).map_err(Stop::usage)?;
    let sending = plan.entries.iter().filter(|e| e.skip.is_none()).map(|e| e.stages.len() as u64).sum();
    let show_bar = !args.no_progress && !args.dry_run && cli.format == Format::Table && std::io::stderr().is_terminal();
    let progress = show_bar.then(|| Progress::start(sending));
    let options = Options {
        wait: args.wait,
        dry_run: args.dry_run,
        on_done: progress.as_ref().map(Progress::callback),
        ..Options::default()
    };
    let report = if args.follow {
        crate::observe::propagation::push_and_follow(&config, &plan, &options, "cli").await
    } else {
        crate::push::once(&config, &plan, &options, "cli").await
    }
    .map_err(alternate)?;
    drop(progress);
    output::print(&report, cli.format);
    let not_live = report.propagation.iter().any(|p| p.live_after_ms.is_none());
    Ok(if not_live { Verdict::Failed } else { report.verdict() })
}

/// `keygen`: writes a new ed25519 key and prints the authorized_keys line for downstreams.
fn keygen(cli: &Cli, args: &KeygenArgs) -> Ended {
    // The config may not validate yet (its SSH mirrors need this very key), so only the settings
    // of the key are read from it.
    let archive = match &args.archive {
        Some(name) => Some(config::archive_key_settings(&cli.config, name).map_err(Stop::usage)?),
        None => None,
    };
    let configured = match &archive {
        Some(settings) => settings.identity.clone(),
        None => config::identity_path(&cli.config),
    };
    let named_by_config = args.out.is_none() && configured.is_some();
    let out = args.out.clone().or(configured).ok_or_else(|| {
        let config = cli.config.display();
        Stop::usage(match &args.archive {
            Some(name) => format!("--out PATH is required: {config} names no `identity:` key for archive {name}"),
            None => format!("--out PATH is required: {config} does not name an `identity:` key"),
        })
    })?;
    // The ownership rule (crate::sys::owner): a key the configuration names is the service user's; and
    // root writes no key into another user's directory (`--out /etc/pushmirror/keys/…` as root
    // would leave a key the daemon cannot read). Other users cannot write there anyway.
    if named_by_config && let Some(state_dir) = config::state_dir_path(&cli.config) {
        crate::sys::owner::require_owner(&state_dir, &cli.config).map_err(Stop::usage)?;
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty() && crate::sys::owner::current_uid() == 0) {
        crate::sys::owner::require_owner(dir, &cli.config).map_err(Stop::usage)?;
    }
    let command = match (&args.command, &archive) {
        (Some(command), _) => command.clone(),
        (None, Some(settings)) => {
            settings.forced_command.clone().unwrap_or_else(|| crate::wire::keys::FTPSYNC_FORCED_COMMAND.to_string())
        }
        (None, None) => crate::wire::keys::DEFAULT_FORCED_COMMAND.to_string(),
    };
    let from = args.from.clone().or_else(|| archive.as_ref()?.source_address.map(|a| a.to_string()));
    // Options first: a bad --command must not leave a key behind.
    crate::wire::keys::authorized_keys_options(&command, from.as_deref()).map_err(Stop::usage)?;
    let new = crate::wire::keys::generate(&out, &crate::wire::keys::default_comment()).map_err(Stop::usage)?;
    let line = crate::wire::keys::authorized_keys_line(&new.public, &command, from.as_deref()).map_err(Stop::usage)?;
    match cli.format {
        Format::Json => print_json(&serde_json::json!({
            "private_key": new.private,
            "public_key": new.public_path,
            "fingerprint": crate::wire::keys::fingerprint(&new.public),
            "authorized_keys": line,
        })),
        Format::Table => {
            eprintln!(
                "wrote {} (0600) and {}, {}",
                new.private.display(),
                new.public_path.display(),
                crate::wire::keys::fingerprint(&new.public)
            );
            eprintln!("downstreams add this line to the authorized_keys of their sync user:");
            println!("{line}");
        }
    }
    Ok(Verdict::Clean)
}

/// `freshness`: which version each mirror serves ([`crate::observe::freshness`]).
async fn freshness(cli: &Cli, archive: Option<&str>) -> Ended {
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

/// `keys`: what downstream admins install and allow, per archive (see [`crate::operator::keypage`]).
fn keys(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    let page = crate::operator::keypage::page(&config, archive).map_err(Stop::usage)?;
    match cli.format {
        Format::Json => print_json(&page),
        Format::Table => print!("{}", crate::operator::keypage::to_text(&page)),
    }
    Ok(Verdict::Clean)
}

/// `hostkeys scan`: records new host keys, reports known and changed ones.
async fn hostkeys_scan(cli: &Cli, only: &[String]) -> Ended {
    let config = load_for_writing(cli)?;
    let rows = crate::operator::hostkeys::scan(&config, only).await.map_err(Stop::usage)?;
    match cli.format {
        Format::Json => print_json(&rows),
        Format::Table if rows.is_empty() => eprintln!("no SSH mirrors configured"),
        Format::Table => rows.iter().for_each(|r| println!("{r}")),
    }
    Ok(if rows.iter().any(|r| r.status.is_problem()) { Verdict::Failed } else { Verdict::Clean })
}

/// A progress bar on stderr that appears only once a push has taken a second.
struct Progress {
    bar: ProgressBar,
    reveal: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos}/{len} triggers {wide_bar} {elapsed}") {
            bar.set_style(style);
        }
        let shown = bar.clone();
        let reveal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shown.set_draw_target(ProgressDrawTarget::stderr());
            shown.enable_steady_tick(Duration::from_millis(200));
        });
        Progress { bar, reveal }
    }

    fn callback(&self) -> crate::push::engine::OnDone {
        let bar = self.bar.clone();
        Arc::new(move |_row: &TriggerReport| bar.inc(1))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.reveal.abort();
        self.bar.finish_and_clear();
    }
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

fn list(cli: &Cli, archive: Option<&str>) -> Ended {
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

fn status(cli: &Cli, nagios: bool) -> Ended {
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
    let far = |r: &crate::observe::freshness::Row| {
        let max_lag = config.archives.get(&r.archive).map_or(config::DEFAULT_MAX_LAG, |a| a.max_lag);
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
