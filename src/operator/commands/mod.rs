//! What each subcommand does. Each returns how it ended ([`Ended`]); [`run`] turns that into the
//! exit status through [`conclude`], the one place that maps endings to exit codes.

mod inspect;
mod keys;
mod mirrors;
mod push;
mod services;

use crate::config::{self, Config};
use crate::operator::cli::{Cli, Command, HostkeysCommand, MirrorCommand, NotifyCommand};
use crate::vocab::output::{Ended, Format, Stop, Verdict, conclude, print_json};

/// Runs the parsed command line; returns the process exit status.
pub async fn run(cli: Cli) -> u8 {
    conclude(route(&cli).await)
}

/// Hands the command to the function that carries it out.
async fn route(cli: &Cli) -> Ended {
    match &cli.command {
        Command::Push(args) => push::push(cli, args).await,
        Command::Check => check(cli),
        Command::List { archive } => inspect::list(cli, archive.as_deref()),
        Command::Status { check, thresholds } => inspect::status(cli, check.then_some(thresholds)).await,
        Command::Daemon { grace } => services::daemon(cli, *grace).await,
        Command::Freshness { archive } => inspect::freshness(cli, archive.as_deref()).await,
        Command::Receive { file, grace } => services::receive(file, *grace).await,
        Command::Keygen(args) => keys::keygen(cli, args),
        Command::Keys { archive } => keys::keys(cli, archive.as_deref()),
        Command::Probe { archive, only } => keys::probe(cli, archive.as_deref(), only).await,
        Command::Mirror { command } => match command {
            MirrorCommand::Add(args) => mirrors::add(cli, args).await,
            MirrorCommand::Remove { name } => mirrors::edit(cli, name, mirrors::Edit::Remove),
            MirrorCommand::Disable { name } => mirrors::edit(cli, name, mirrors::Edit::Disable),
            MirrorCommand::Enable { name } => mirrors::edit(cli, name, mirrors::Edit::Enable),
        },
        Command::Hostkeys { command: HostkeysCommand::Scan { only, replace, fingerprint } } => {
            let replace = replace.clone().zip(fingerprint.clone());
            keys::hostkeys_scan(cli, only, replace).await
        }
        Command::Notify { command: NotifyCommand::Test { archive } } => notify_test(cli, archive.as_deref()).await,
        Command::Completions { shell } => {
            let mut command = Cli::definition();
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
pub(super) fn load(cli: &Cli) -> Result<Config, Stop> {
    config::load(&cli.config).map_err(|errors| shown(cli, &errors))
}

/// [`load`] for commands that write state: also the ownership rule and what they need on disk
/// ([`config::load_for_writing`]).
pub(super) fn load_for_writing(cli: &Cli) -> Result<Config, Stop> {
    config::load_for_writing(&cli.config).map_err(|errors| shown(cli, &errors))
}

/// Prints every configuration error, then that nothing was done.
pub(super) fn shown(cli: &Cli, errors: &config::ConfigErrors) -> Stop {
    eprintln!("{errors}");
    eprintln!("{}: {} error(s); nothing was done", cli.config.display(), errors.0.len());
    Stop::Shown
}

fn check(cli: &Cli) -> Ended {
    match config::load_for_check(&cli.config) {
        Ok(c) => {
            for archive in c.archives_without_mirrors() {
                eprintln!("warning: archives.{archive}: no mirror carries it: pushing it triggers nobody");
            }
            // What pushes and probes last saw: mirrors that accept another key but not this one.
            let history = crate::push::report::History::new(&c.state_dir, c.status.history);
            if let Ok(ledger) = crate::push::ledger::Ledger::read(&c.state_dir, &history) {
                for (archive, mirror, configured, seen) in ledger.stale_keys(&c) {
                    eprintln!(
                        "warning: mirror {mirror} (archive {archive}) was last seen ({} by {}) accepting {} but not \
                         the configured key {configured}: its triggers will fail with `auth` until its admin installs \
                         the new line (`pushmirror keys`); `pushmirror probe --only {mirror}` checks again",
                        seen.at, seen.by, seen.fingerprint
                    );
                }
            }
            for (field, why) in c.hooks_not_runnable() {
                let what = if field.ends_with("before_push") { ": every push would be skipped" } else { "" };
                eprintln!("warning: {field}: {why}{what}");
            }
            let counts = MirrorCounts::of(&c);
            match cli.format {
                Format::Json => print_json(&serde_json::json!({
                    "ok": true, "archives": c.archives.len(), "mirrors": counts.total(), "by_kind": counts, "errors": [],
                })),
                Format::Table => println!(
                    "{}: ok: {} archive(s), {} mirror(s) ({})",
                    cli.config.display(),
                    c.archives.len(),
                    counts.total(),
                    counts
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

/// An error with its whole chain of causes (`{:#}`), as a usage stop.
pub(super) fn alternate(e: anyhow::Error) -> Stop {
    Stop::Usage(format!("{e:#}"))
}

/// How many mirrors of each kind a configuration has: one count per transport, and the
/// check-only ones.
#[derive(Debug, Default, serde::Serialize)]
struct MirrorCounts {
    ssh: usize,
    http: usize,
    mqtt: usize,
    check_only: usize,
}

impl MirrorCounts {
    fn of(config: &Config) -> Self {
        let mut counts = MirrorCounts { check_only: config.watched.len(), ..MirrorCounts::default() };
        for m in &config.mirrors {
            *match m.transport {
                config::Transport::Ssh(_) => &mut counts.ssh,
                config::Transport::Http(_) => &mut counts.http,
                config::Transport::Mqtt(_) => &mut counts.mqtt,
            } += 1;
        }
        counts
    }

    fn total(&self) -> usize {
        self.ssh + self.http + self.mqtt + self.check_only
    }
}

impl std::fmt::Display for MirrorCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ssh, {} http, {} mqtt, {} check-only", self.ssh, self.http, self.mqtt, self.check_only)
    }
}

/// `notify test`: one test message through every channel configured for `archive` (else the
/// main file's), sent now, not queued.
async fn notify_test(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    if let Some(name) = archive.filter(|a| !config.archives.contains_key(*a)) {
        return Err(Stop::usage(format_args!("unknown archive `{name}`")));
    }
    let mut event = crate::notify::event::Event::new(crate::notify::event::EventKind::Test, &config);
    event.archive = archive.map(str::to_string);
    event.detail = Some(format!(
        "A test message, sent by `pushmirror notify test` as {}.",
        crate::sys::owner::user_name(crate::sys::owner::current_uid())
    ));
    let notifier = crate::notify::Notifier::new(&config.state_dir).map_err(alternate)?;
    let results = notifier.send_now(&config, &event).await;
    if results.is_empty() {
        return Err(Stop::usage(
            "no notification channel is configured (`notify:` mail or webhooks, or an on_event hook)",
        ));
    }
    match cli.format {
        Format::Json => print_json(
            &results
                .iter()
                .map(|(channel, r)| serde_json::json!({ "channel": channel, "ok": r.is_ok(), "error": r.as_ref().err() }))
                .collect::<Vec<_>>(),
        ),
        Format::Table => {
            for (channel, result) in &results {
                match result {
                    Ok(()) => println!("{channel}: sent"),
                    Err(e) => println!("{channel}: FAILED: {e}"),
                }
            }
        }
    }
    Ok(if results.iter().all(|(_, r)| r.is_ok()) { Verdict::Clean } else { Verdict::Failed })
}
