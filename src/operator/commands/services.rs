//! The long-running commands: `daemon` and `receive`, and the signals that steer them.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{alternate, shown};
use crate::config;
use crate::operator::cli::Cli;
use crate::vocab::output::{Ended, Stop, Verdict};

pub(super) async fn daemon(cli: &Cli, grace: Duration) -> Ended {
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
pub(super) async fn receive(file: &std::path::Path, grace: Duration) -> Ended {
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
