//! pushmirror: the upstream side of push mirroring. When an archive has finished updating, it
//! tells every downstream mirror to sync now, over SSH or HTTP, concurrently and politely, and
//! reports exactly what happened.
//!
//! # Layout
//!
//! A push flows one way: **config → plan → dispatch → transport → outcome → report**. The daemon
//! adds a source of pushes in front (watch → daemon → push) and readers behind (server);
//! `receive` is another source on a downstream (trigger → sync command → push of the next tier).
//! Nothing reaches back: dispatch only knows [`transport::Trigger`], so its retry and rate-limit
//! logic is tested with scripted fakes under paused time, and transports against real servers.
//! No module imports one that imports it back; `tests/it/layout.rs` fails the build if one does.
//!
//! Leaves (use nothing of the crate; everything may use them):
//! - [`model`]: the vocabulary — `Stage`, `ErrorClass`, `Outcome`, `SkipReason`, `Timestamp`.
//! - [`output`]: output `Format`, printing tables and JSON, and `exit_code`, the one mapping from
//!   how a command ended to exit status 0 / 1 / 2.
//! - [`units`]: durations, rate limits (`N/period`), millisecond formatting.
//! - [`secret`]: values that never print. [`clock`]: wall time that follows tokio's clock.
//!   [`signature`]: HMAC-signed HTTP triggers (sender and receiver side).
//!
//! The push, in flow order:
//! - [`config`]: loads the main YAML file and `mirrors.d/`, reports every error as
//!   `path:line:col: field: message`, positions from the YAML parser; resolves who each mirror's
//!   triggers of each archive are sent as (`identity:` key, `source_address:`: mirror file, else
//!   archive, else main file).
//! - [`plan`]: configuration + push request → which mirror gets which stage, or why it is skipped.
//! - [`dispatch`]: the fan-out engine — semaphore, rate limits, retries, backoff → one outcome
//!   per trigger.
//! - [`ratelimit`]: governor limiters per mirror, their sends persisted in `state_dir` (replaced
//!   atomically under a per-mirror lock; unreadable state fails the trigger, never lifts the limit).
//! - [`transport`]: the `Trigger` interface and the `Downstream` it is handed (with its key and
//!   source address); [`transport::http`] (reqwest, one client per source address),
//!   [`transport::ssh`] (russh client over a socket bound to the source address, each key loaded
//!   once, host key checks) and [`transport::known_hosts`].
//! - [`report`]: the report model (JSON, table) and the bounded history on disk.
//! - [`push`]: one push from plan to stored report, shared by every command that pushes.
//!
//! Around it:
//! - [`cli`]: clap definitions of the command line; [`commands`]: what each subcommand does;
//!   [`manpage`]: pushmirror(1), every subcommand and the configuration on one page.
//! - [`keys`]: the sender's SSH keys — loading them safely, `keygen`, the `authorized_keys` line,
//!   fingerprints.
//! - [`keypage`]: `pushmirror keys`, the page published for downstream admins — per archive each
//!   key's restricted `authorized_keys` line, its SHA256 and MD5 fingerprints, the source
//!   addresses to allow.
//! - [`hostkeys`]: `hostkeys scan`, recording mirrors' host keys in pushmirror's known_hosts.
//! - [`runmirrors`]: archvsync compatibility — the `runmirrors` CLI (also as an argv\[0\] symlink)
//!   that a hub's ftpsync calls, and `import-runmirrors` ([`runmirrors::import`]).
//! - [`freshness`]: `pushmirror freshness` — which version each mirror (`check:` URL) serves, how old
//!   it is, its upstream chain; check-only mirrors included.
//! - [`propagation`]: `push --follow` — watching each delivered mirror until it serves the pushed
//!   version.
//! - [`trace`]: the trace files a Debian mirror publishes (`master`, its own, `_hierarchy`), parsed.
//! - [`watch`]: an archive's version from its trace file, and update-completion detection
//!   (settle, lock globs, inotify plus a poll).
//! - [`daemon`]: the watch → push loop: coalescing, journalled due pushes ([`daemon::state`]),
//!   deferred triggers, SIGHUP reload generations, SIGTERM drain.
//! - [`page`]: the daemon's HTML page — mirrors, propagation chart (inline SVG), tiers, freshness.
//! - [`server`]: the daemon's status server (`/status`, `/metrics`, `/`, `/healthz`) and metrics.
//! - [`receive`]: the downstream side, `pushmirror receive` — accepts connections bounded in
//!   number and time (`receive::serve`), authenticates HTTP triggers (the signatures it accepted
//!   kept in its state directory, [`receive::replay`]; refusals logged once, then summarised,
//!   [`receive::refusals`]), runs the local sync command (one at a time per archive, later
//!   triggers coalesce into one queued run), then may push the next tier through [`push`].
//! - [`demo`]: in-process receivers used by `demo`, the tests and the benchmarks.
//! - [`owner`]: the ownership rule — commands that write run as the owner of `state_dir`, else
//!   refuse with the `sudo -u OWNER …` to run; "exists but is not readable by user X".
//! - [`fsutil`]: atomic file writes, locks shared by every process; secret files only their owner
//!   may read.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod broadcast;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dispatch;
pub mod fdlimit;
pub mod freshness;
pub mod fsutil;
pub mod hostkeys;
pub mod keypage;
pub mod keys;
pub mod manpage;
pub mod model;
pub mod output;
pub mod owner;
pub mod page;
pub mod plan;
pub mod propagation;
pub mod push;
pub mod ratelimit;
pub mod receive;
pub mod report;
pub mod runmirrors;
pub mod secret;
pub mod server;
pub mod signature;
pub mod supervise;
pub mod trace;
pub mod transport;
pub mod units;
pub mod watch;

use tracing_subscriber::EnvFilter;

/// Sends log output to stderr at the level `-v`/`-q` ask for (`RUST_LOG` overrides).
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("pushmirror={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
