//! pushmirror: the upstream side of push mirroring. When an archive has finished updating, it
//! tells every downstream mirror to sync now, over SSH or HTTP, concurrently and politely, and
//! reports exactly what happened.
//!
//! # Layout
//!
//! Fourteen rooms, listed in the order a push flows through them. A room uses only the rooms
//! above it in this list, never one below (`tests/it/layout.rs` fails the build if it does, and
//! checks this list against its own):
//!
//! - [`vocab`]: the words everything speaks — stages, outcomes, error classes, skip reasons,
//!   timestamps ([`vocab::model`]), durations and rates, secrets that never print, the clock,
//!   output formats and exit codes. Leaves: nothing of the crate.
//! - [`sys`]: the operating system — atomic writes and locks, the ownership rule, the open-file
//!   limit, supervised tasks whose death ends the process.
//! - [`wire`]: formats third parties rely on — SSH keys and the `authorized_keys` line, signed
//!   HTTP triggers, the MQTT trigger/ack format and its SSHSIG. No network.
//! - [`config`]: the main file and `mirrors.d/`, every error as `path:line:col: field: message`.
//! - [`archive`]: an archive's version from its trace file, and when an update has completed.
//! - [`transport`]: the `Trigger` interface and its SSH, HTTP and MQTT implementations.
//! - [`push`]: one push — [`push::plan`] (who gets which stage), [`push::engine`] (semaphore,
//!   rate limits, retries → one row per trigger), [`push::ratelimit`], [`push::report`] (the
//!   report and its bounded history on disk).
//! - [`observe`]: what mirrors serve — trace files, freshness, propagation after a push.
//! - [`notify`]: mail, webhooks and hooks — events on changes of standing, a bounded queue in
//!   `state_dir`, delivery off the push's path.
//! - [`demo`]: in-process SSH and HTTP receivers for `demo`, the tests and the benchmarks.
//! - [`daemon`]: watch → push, per archive; deferred triggers; reload; the status server.
//! - [`receive`]: the downstream side — a trigger endpoint that runs the sync command, then may
//!   push the next tier.
//! - [`compat`]: archvsync's `runmirrors` command line and `import-runmirrors`.
//! - [`operator`]: the command line, what each command does, the man page, the key page, host
//!   keys.
//!
//! The path of a push: a source (the daemon's watcher, `receive`, `runmirrors`, the CLI) builds a
//! [`push::plan::PushRequest`]; [`push::once`] (or the daemon's engine) plans it, runs each
//! trigger through a [`transport::Trigger`] and stores the [`push::report::Report`]; readers
//! (`status`, the daemon's `/status`, `/metrics` and page) show it. Dispatch only knows the
//! `Trigger` interface, so its retry and rate-limit logic is tested with scripted fakes under
//! paused time, and transports against real servers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod compat;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod notify;
pub mod observe;
pub mod operator;
pub mod push;
pub mod receive;
pub mod sys;
pub mod transport;
pub mod vocab;
pub mod wire;
