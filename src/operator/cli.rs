//! Command-line definitions (clap derive). Behaviour lives in [`crate::operator::commands`].

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::compat::runmirrors::args::{ImportArgs, RunmirrorsArgs};
use crate::push::plan::PushKind;
use crate::vocab::output::Format;

/// Push mirroring: tell every downstream mirror to sync now, over SSH or HTTP, and report.
#[derive(Debug, Parser)]
#[command(name = "pushmirror", version, about, max_term_width = 100)]
pub struct Cli {
    /// Main configuration file.
    #[arg(short, long, global = true, env = "PUSHMIRROR_CONFIG", default_value = crate::config::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Output for people (table) or machines (one JSON document on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Neither `-c` nor `$PUSHMIRROR_CONFIG` named the config (set by [`Cli::parse_args`]), so
    /// `runmirrors` may look for it in more places.
    #[arg(skip)]
    pub config_is_default: bool,
}

impl Cli {
    /// The command line's definition.
    pub fn definition() -> clap::Command {
        Cli::command()
    }

    /// Parses the process's arguments like `Cli::parse`, and notes where the config path came
    /// from; exits with clap's message on a usage error.
    pub fn parse_args() -> Cli {
        let matches = Cli::definition().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        cli.config_is_default = matches.value_source("config") == Some(ValueSource::DefaultValue);
        // An option the subcommand ignores, given on the command line, is a mistake to say.
        if let Some((name, sub)) = matches.subcommand() {
            let given = |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine);
            let ignored = IGNORED_GLOBALS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, i)| *i);
            if let Some(arg) = ignored.iter().find(|a| given(a)) {
                let flag = if *arg == "config" { "-c/--config" } else { "--format" };
                let why = match (name, *arg) {
                    ("receive", "config") => {
                        "it reads its own file, given as FILE (default /etc/pushmirror/receive.yaml)"
                    }
                    _ => "its output has one form",
                };
                let message = format!("{flag} does not apply to `{name}`: {why}");
                Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
            }
        }
        // Relative paths in the file resolve against its directory, always: `-c pushmirror.yaml`
        // names ./pushmirror.yaml, whose directory is `.`, not "" (which resolved `state_dir:
        // state` against nothing and probed `/`).
        if let Ok(absolute) = std::path::absolute(&cli.config) {
            cli.config = absolute;
        }
        cli
    }
}

/// The global options each subcommand ignores: refused when given on its command line.
pub const IGNORED_GLOBALS: &[(&str, &[&str])] = &[
    ("daemon", &["format"]),
    ("receive", &["format", "config"]),
    ("manpage", &["format"]),
    ("completions", &["format"]),
];

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Push one archive to its mirrors (SSH, HTTP, MQTT) now and print the report.
    Push(PushArgs),
    /// Validate the configuration; print every error as path:line:col.
    Check,
    /// List mirrors: transport, target (redacted), limits, state.
    List {
        /// Only mirrors of this archive.
        archive: Option<String>,
    },
    /// Where every mirror of every archive stands, and each archive's last push.
    Status {
        /// Judge every mirror as a monitoring plugin: one status line with perfdata, a line per
        /// mirror not ok; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
        #[arg(long)]
        check: bool,
        /// Thresholds of --check.
        #[command(flatten)]
        thresholds: crate::operator::check::CheckArgs,
    },
    /// Survey which version each mirror serves, from the trace files under its `check:` URL.
    ///
    /// Per mirror (triggered or check-only): its standing (up to date, syncing, behind,
    /// unreachable), version, lag (how old the version it serves is), last sync's duration and
    /// upstream. Exit 0 all within their archive's max_lag, 1 some behind or unreachable, 2
    /// configuration error.
    Freshness {
        /// Only this archive.
        archive: Option<String>,
    },
    /// Watch the archives, push when an update completes, serve status; runs until SIGTERM.
    Daemon {
        /// After SIGTERM, how long running triggers may take before they are interrupted.
        #[arg(long, default_value = "30s", value_parser = crate::vocab::units::parse_grace)]
        grace: std::time::Duration,
    },
    /// Downstream side: accept HTTP (and MQTT) triggers, run the local sync command, then push
    /// the next tier. Reads FILE, not the main file: -c does not apply.
    Receive {
        /// The receive configuration (listen address, archives, their sync commands and secrets).
        #[arg(default_value = crate::receive::DEFAULT_CONFIG)]
        file: PathBuf,
        /// After SIGTERM, how long a running sync may take before it is killed.
        #[arg(long, default_value = "30s", value_parser = crate::vocab::units::parse_grace)]
        grace: std::time::Duration,
    },
    /// Create the sender's ed25519 key and print the authorized_keys line downstreams install.
    Keygen(KeygenArgs),
    /// Print, per archive, what downstream admins install: each key's restricted authorized_keys
    /// line, its SHA256 and legacy MD5 fingerprints, and the source addresses to allow.
    ///
    /// The text is meant to be published, signed with `gpg --clearsign` as it is.
    Keys {
        /// Only this archive.
        archive: Option<String>,
    },
    /// Check each mirror without triggering it: SSH host key, which of our keys it accepts
    /// (current, next), a login without running anything; HTTP DNS/TCP/TLS; MQTT the broker.
    ///
    /// Nothing is run on a downstream: SSH probes open no session channel, HTTP probes send no
    /// request, MQTT probes publish nothing. Exit 0 every mirror ready, 1 some not.
    Probe {
        /// Only this archive [default: every archive].
        archive: Option<String>,
        /// Only this mirror (repeatable).
        #[arg(long, value_name = "NAME")]
        only: Vec<String>,
    },
    /// Add, remove, disable or enable a mirror: its file in mirrors_dir, changed atomically and
    /// only if the configuration still passes `check`.
    Mirror {
        /// What to do.
        #[command(subcommand)]
        command: MirrorCommand,
    },
    /// Manage the SSH host keys of mirrors in pushmirror's own known_hosts.
    Hostkeys {
        /// What to do.
        #[command(subcommand)]
        command: HostkeysCommand,
    },
    /// Notifications (`notify:` and the `on_event` hook).
    Notify {
        /// What to do.
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Print shell completions for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    Manpage,
    /// archvsync's runmirrors, for ftpsync's HUB=true: push the archive's mirrors as `-k` says.
    ///
    /// Also what runs when pushmirror is invoked as `runmirrors` (a symlink), with runmirrors' own
    /// options only. The config is `-c`/`$PUSHMIRROR_CONFIG`, else
    /// `$HOME/.config/pushmirror/pushmirror.yaml` if it exists, else /etc/pushmirror/pushmirror.yaml.
    /// Exit 0 all ok, 1 a mirror failed (0 with -f: see -f), 2 usage or config error.
    Runmirrors(RunmirrorsArgs),
    /// Convert an archvsync runmirrors.mirror (+ runmirrors.conf) into mirrors.d files.
    ///
    /// Writes DIR/SHORTNAME.yaml per mirror line (never overwriting a file), prints the
    /// `identity:` line for pushmirror.yaml on stdout, and reports everything it cannot express
    /// as FILE:LINE: on stderr. Exit 0 all converted, 1 something was not, 2 usage error.
    ImportRunmirrors(ImportArgs),
    /// Start local receivers, push to them with the real engine, print the report.
    Demo {
        /// Number of demo mirrors.
        #[arg(long, default_value_t = 6)]
        mirrors: usize,
    },
}

/// Arguments of `push`.
#[derive(Debug, Args, Clone, Default)]
pub struct PushArgs {
    /// Archive to push (optional when exactly one is configured).
    pub archive: Option<String>,
    /// Only this mirror (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Only mirrors with this tag (repeatable; any tag matches).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Archive serial to put in templates and the report (default: read from the trace file).
    #[arg(long)]
    pub serial: Option<String>,
    /// Show who would get which trigger and when rate limits allow it; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for rate-limited mirrors and send to them when allowed, instead of deferring.
    #[arg(long)]
    pub wait: bool,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Then watch each delivered mirror with a `check:` URL until it serves the pushed version
    /// (or the archive's propagation_timeout passes); the report gets how long each took. Exit 1
    /// when one is not live in time.
    #[arg(long, conflicts_with = "dry_run")]
    pub follow: bool,
    /// Only the second stage, as `runmirrors -k stage2`: stage 2 to staged and mhop mirrors,
    /// sync:all to `all` mirrors, no stage 1 (a hub relaying its upstream's stage 2).
    #[arg(long, conflicts_with = "mhop")]
    pub staged: bool,
    /// Only the first stage of a multi-hop push, as `runmirrors -k mhop -f`: stage 1 to staged
    /// and mhop mirrors (mhop ones told sync:mhop), returning once all have finished it; nothing
    /// to `all` mirrors, no stage 2 (a hub relaying its upstream's mhop stage 1).
    #[arg(long)]
    pub mhop: bool,
}

impl PushArgs {
    /// The runmirrors push these flags ask for: `(kind, from_ftpsync)`. Without flags, a complete
    /// push like plain `runmirrors` (`-k mhop` outside ftpsync).
    pub fn kind(&self) -> (PushKind, bool) {
        match (self.staged, self.mhop) {
            (true, _) => (PushKind::Stage2, false),
            (false, true) => (PushKind::Mhop, true),
            (false, false) => (PushKind::Mhop, false),
        }
    }
}

/// Arguments of `keygen`.
#[derive(Debug, Args, Clone)]
pub struct KeygenArgs {
    /// Private key file to create (PATH.pub gets the public key) [default: the config's
    /// `identity:`, or with --archive that archive's].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Create this archive's key (its `identity:`, else the main file's) and print its line: the
    /// archive's `forced_command:` (default ~/bin/ftpsync) and `from=` its `source_address:`.
    #[arg(long, value_name = "NAME")]
    pub archive: Option<String>,
    /// Forced command of the printed authorized_keys line [default: ~/bin/ftpsync, as ftpsync's
    /// README has it, or with --archive the archive's `forced_command:`].
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Addresses the key may log in from (authorized_keys `from=`), e.g. "203.0.113.7,2001:db8::7"
    /// [default with --archive: the archive's source_address, when set].
    #[arg(long, value_name = "ADDRS")]
    pub from: Option<String>,
    /// Create the key a rotation moves to: the config's `next_identity:` (with --archive, that
    /// archive's) instead of `identity:`.
    #[arg(long)]
    pub next: bool,
}

/// Subcommands of `mirror`.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Onboard an SSH mirror: write mirrors_dir/NAME.yaml (never over an existing file), fetch
    /// and print its host key (pinned only with --host-key-fingerprint or --accept-new-host-key),
    /// probe it without triggering, and print "ready" or the authorized_keys line(s) to send its
    /// admin. Exit 0 ready, 1 written but not ready yet, 2 nothing written.
    Add(MirrorAddArgs),
    /// Remove a mirror's file.
    Remove {
        /// The mirror.
        name: String,
    },
    /// Set `enabled: false` in a mirror's file (its other lines and comments stay as they are).
    Disable {
        /// The mirror.
        name: String,
    },
    /// Set `enabled: true` in a mirror's file.
    Enable {
        /// The mirror.
        name: String,
    },
}

/// Arguments of `mirror add`.
#[derive(Debug, Args, Clone)]
pub struct MirrorAddArgs {
    /// The mirror's name (letters, digits, `.`, `_`, `-`): also its file's.
    pub name: String,
    /// Its SSH login: USER@HOST[:PORT] (an IPv6 address with a port in brackets).
    #[arg(long, value_name = "USER@HOST[:PORT]")]
    pub ssh: String,
    /// An archive it carries (repeatable) [default: every archive].
    #[arg(long = "archive", value_name = "NAME")]
    pub archives: Vec<String>,
    /// all, staged or mhop [default: all].
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The SHA256:… fingerprint its admin gave you: the host key is pinned in the file when it
    /// matches; when it does not, nothing is written.
    #[arg(long, value_name = "SHA256:…")]
    pub host_key_fingerprint: Option<String>,
    /// Pin whatever host key it offers now (trust on first use).
    #[arg(long, conflicts_with = "host_key_fingerprint")]
    pub accept_new_host_key: bool,
}

/// Subcommands of `notify`.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test message through every configured channel (mail, webhooks, the on_event
    /// hook) now, and print how each went; exit 1 when one failed.
    Test {
        /// The archive whose `notify:` to use [default: the main file's].
        archive: Option<String>,
    },
}

/// Subcommands of `hostkeys`.
#[derive(Debug, Subcommand)]
pub enum HostkeysCommand {
    /// Fetch SSH mirrors' host keys and record new ones in known_hosts; asks nothing, prints
    /// fingerprints, never overwrites a changed key (exit 1).
    Scan {
        /// Only this mirror (repeatable).
        #[arg(long, value_name = "NAME", conflicts_with = "replace")]
        only: Vec<String>,
        /// Replace this mirror's recorded host key with the one its host offers now — only when
        /// that key has the --fingerprint its admin gave you (out of band).
        #[arg(long, value_name = "NAME", requires = "fingerprint")]
        replace: Option<String>,
        /// The SHA256:… fingerprint the new host key of --replace must have.
        #[arg(long, value_name = "SHA256:…", requires = "replace")]
        fingerprint: Option<String>,
    },
}
