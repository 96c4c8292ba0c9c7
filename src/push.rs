//! One push from start to report: plan, dispatch, save to history. Shared by every command that
//! pushes (`push`, `demo`, and later the daemon and `runmirrors`).

use std::sync::Arc;

use anyhow::Context as _;
use std::time::SystemTime;

use crate::broadcast::connect::Session;
use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::{Engine, Options};
use crate::plan::{Plan, PushRequest, plan};
use crate::ratelimit::RateLimits;
use crate::report::{History, Report};
use crate::transport::{Transports, Trigger};

/// Builds the engine a configuration asks for.
pub fn engine<T: Trigger>(config: &Config, transport: Arc<T>, clock: Clock) -> Engine<T> {
    let limits = RateLimits::persistent(&config.state_dir, clock.clone());
    Engine::new(transport, crate::fdlimit::concurrency(config.concurrency), limits, clock)
        .with_per_host(config.max_per_host)
        .with_sockets(crate::fdlimit::cap(usize::MAX, crate::fdlimit::current()))
}

/// The engine of a one-off push: the production transports and the OS clock.
fn production_engine(config: &Config) -> anyhow::Result<Engine<Transports>> {
    let transports = Arc::new(Transports::new(config, Session::Once).context("cannot set up transports")?);
    Ok(engine(config, transports, Clock::system()))
}

/// Plans a push, filling in the serial from the archive's trace file when not given.
pub fn plan_push(config: &Config, request: &PushRequest) -> Result<Plan, crate::plan::PlanError> {
    let mut plan = plan(config, request)?;
    if plan.serial.is_none() {
        plan.serial = config.archives.get(&plan.archive).and_then(crate::watch::read_version);
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

async fn dispatch<T: Trigger>(engine: &Engine<T>, plan: &Plan, options: &Options, origin: &str) -> Report {
    let started = SystemTime::now();
    let rows = engine.run(plan, options).await;
    Report::new(&plan.archive, plan.serial.clone(), origin, options.dry_run, started, rows)
}

/// Stores `report` in the history, unless it is a dry run.
fn save(config: &Config, report: &Report) {
    if !report.dry_run {
        let history = History::new(&config.state_dir, config.status.history);
        if let Err(e) = history.save(report) {
            tracing::error!(dir = %config.state_dir.display(), error = %e, "cannot write the report to the history");
        }
    }
}

/// [`once`], then [`crate::propagation::follow`] every delivered mirror with a `check:` URL
/// until it serves the pushed serial; the report, with its propagation, is stored after that.
/// Without a serial there is nothing to recognise, and nothing is followed.
pub async fn once_and_follow(config: &Config, plan: &Plan, options: &Options, origin: &str) -> anyhow::Result<Report> {
    let engine = production_engine(config)?;
    // Set up before anything is sent: a push that happened is always recorded.
    let prober = crate::freshness::Prober::new()?;
    let started = tokio::time::Instant::now();
    let mut report = dispatch(&engine, plan, options, origin).await;
    if let (Some(serial), Some(archive)) = (plan.serial.as_deref(), config.archives.get(&plan.archive)) {
        let follow = crate::propagation::delivered_with_check(config, &report);
        report.propagation =
            crate::propagation::follow(&prober, follow, serial, started, archive.propagation_timeout).await;
    }
    save(config, &report);
    Ok(report)
}

/// A one-off push with the production transports: `push`, `runmirrors`, `receive` and `demo`
/// (the daemon keeps one engine per configuration instead).
pub async fn once(config: &Config, plan: &Plan, options: &Options, origin: &str) -> anyhow::Result<Report> {
    let engine = production_engine(config)?;
    Ok(execute(config, &engine, plan, options, origin).await)
}
