//! One push from start to report: plan, dispatch, save to history. Shared by every command that
//! pushes (`push`, `demo`, and later the daemon and `runmirrors`).

pub mod engine;
pub mod ledger;
pub mod plan;
pub mod probe;
pub mod ratelimit;
pub mod report;

use std::sync::Arc;

use anyhow::Context as _;
use std::time::SystemTime;

use crate::config::Config;
use crate::push::engine::{Engine, Options};
use crate::push::plan::{Plan, PushRequest, plan};
use crate::push::ratelimit::RateLimits;
use crate::push::report::{History, Report};
use crate::transport::mqtt::connect::BrokerSession;
use crate::transport::{Transports, Trigger};
use crate::vocab::clock::Clock;

/// Builds the engine a configuration asks for.
pub fn engine<T: Trigger>(config: &Config, transport: Arc<T>, clock: Clock) -> Engine<T> {
    let limits = RateLimits::persistent(&config.state_dir, clock.clone());
    Engine::new(transport, crate::sys::fdlimit::concurrency(config.concurrency), limits, clock)
        .with_per_host(config.max_per_host)
        .with_sockets(crate::sys::fdlimit::cap(usize::MAX, crate::sys::fdlimit::current()))
}

/// The engine of a one-off push: the production transports and the OS clock.
pub fn production_engine(config: &Config) -> anyhow::Result<Engine<Transports>> {
    let transports = Arc::new(Transports::new(config, BrokerSession::Once).context("cannot set up transports")?);
    Ok(engine(config, transports, Clock::system()))
}

/// Plans a push, filling in the serial from the archive's trace file when not given.
pub fn plan_push(config: &Config, request: &PushRequest) -> Result<Plan, crate::push::plan::PlanError> {
    let mut plan = plan(config, request)?;
    if plan.serial.is_none() {
        plan.serial = config.archives.get(&plan.archive).and_then(crate::archive::watch::read_version);
    }
    Ok(plan)
}

/// Carries out `plan` and, unless it is a dry run, stores the report in the history.
pub async fn execute<T: Trigger>(
    config: &Config,
    engine: &Engine<T>,
    plan: &Plan,
    options: &Options,
    origin: &str,
) -> Report {
    let report = dispatch(engine, plan, options, origin).await;
    save(config, &report);
    report
}

/// Sends `plan` and makes the report of it (not stored: see [`save`]).
pub async fn dispatch<T: Trigger>(engine: &Engine<T>, plan: &Plan, options: &Options, origin: &str) -> Report {
    let started = SystemTime::now();
    let rows = engine.run(plan, options).await;
    Report::new(&plan.archive, plan.serial.clone(), origin, options.dry_run, started, rows)
}

/// Stores `report` (unless it is a dry run): see [`store`].
pub fn save(config: &Config, report: &Report) {
    let history = History::new(&config.state_dir, config.status.history);
    store(&config.state_dir, &history, report);
}

/// What a push left behind: the ledger before and after it, and the stored report's file.
#[derive(Debug, Default)]
pub struct Stored {
    /// The ledger before and after, when it could be updated.
    pub ledger: Option<ledger::Change>,
    /// The report's file in the history, when it could be written.
    pub file: Option<std::path::PathBuf>,
}

/// Stores `report` (unless it is a dry run) in the history, and what it shows of each mirror in
/// the ledger ([`ledger`]). Blocking file work; failures are logged, never undo the push.
pub fn store(state_dir: &std::path::Path, history: &History, report: &Report) -> Stored {
    if report.dry_run {
        return Stored::default();
    }
    // The ledger first: one rebuilt from the history must not count this report twice.
    let ledger = change_ledger(state_dir, history, |l| l.record(report));
    let file = history
        .save(report)
        .map_err(|e| tracing::error!(dir = %state_dir.display(), error = %e, "cannot write the report to the history"))
        .ok();
    Stored { ledger, file }
}

/// Changes the ledger of `state_dir` (blocking file work); the ledger before and after, or
/// `None` when it could not be changed (logged).
pub fn change_ledger(
    state_dir: &std::path::Path,
    history: &History,
    change: impl FnOnce(&mut ledger::Ledger),
) -> Option<ledger::Change> {
    let mut before = None;
    let after = ledger::Ledger::update(state_dir, history, |l| {
        before = Some(l.clone());
        change(l);
    });
    match (before, after) {
        (Some(before), Ok(after)) => Some(ledger::Change { before, after }),
        (_, Err(e)) => {
            tracing::error!(error = %e, "cannot update the mirrors' state");
            None
        }
        (None, Ok(_)) => None,
    }
}

/// A one-off push with the production transports: `push`, `runmirrors`, `receive` and `demo`
/// (the daemon keeps one engine per configuration instead).
pub async fn once(config: &Config, plan: &Plan, options: &Options, origin: &str) -> anyhow::Result<Report> {
    let engine = production_engine(config)?;
    Ok(execute(config, &engine, plan, options, origin).await)
}
