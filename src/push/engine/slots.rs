//! The slots a trigger attempt holds while it runs: one of the push's `concurrency`, one of its
//! host's `max_per_host`, and — for mirrors reached by a connection of their own — a socket slot
//! under the open-file limit. Each is an owned permit, released when the attempt ends, whatever
//! path it takes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::transport::Attempt;

/// Every bound the engine enforces, shared by its clones.
#[derive(Clone)]
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    hosts: Arc<HostLimits>,
    /// Connections open at once, waiting ones included (an SSH session held for a sync gives
    /// its concurrency slot back, not its socket); `None`: unbounded.
    sockets: Option<Arc<Semaphore>>,
}

/// At most `per_host` triggers in flight to one host and port, so that many mirrors on one host
/// never trip its sshd's `MaxStartups` (OpenSSH drops connections beyond 10 unauthenticated ones
/// by default). One semaphore per endpoint the configuration names.
#[derive(Default)]
struct HostLimits {
    per_host: Option<usize>,
    hosts: std::sync::Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

impl HostLimits {
    fn of(&self, endpoint: &(String, u16)) -> Option<Arc<Semaphore>> {
        let per_host = self.per_host?;
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let semaphore = hosts.entry(endpoint.clone()).or_insert_with(|| Arc::new(Semaphore::new(per_host.max(1))));
        Some(Arc::clone(semaphore))
    }
}

/// The slots one trigger's attempts take, looked up once per trigger.
pub(crate) struct TriggerSlots {
    host: Option<Arc<Semaphore>>,
    socket: Option<Arc<Semaphore>>,
    permits: Arc<Semaphore>,
}

impl Slots {
    /// `concurrency` triggers in flight at most; no host or socket bound yet.
    pub(crate) fn new(concurrency: usize) -> Self {
        Slots { permits: Arc::new(Semaphore::new(concurrency.max(1))), hosts: Arc::default(), sockets: None }
    }

    /// At most `sockets` connections open at once.
    pub(crate) fn with_sockets(self, sockets: usize) -> Self {
        Slots { sockets: Some(Arc::new(Semaphore::new(sockets.max(1)))), ..self }
    }

    /// At most `per_host` triggers in flight to one host and port.
    pub(crate) fn with_per_host(self, per_host: usize) -> Self {
        Slots { hosts: Arc::new(HostLimits { per_host: Some(per_host), ..HostLimits::default() }), ..self }
    }

    /// The slots of a trigger to `endpoint`: its host's bound and a socket slot only for mirrors
    /// reached by a connection of their own (not MQTT's: one broker connection carries them all).
    pub(crate) fn of(&self, endpoint: Option<&(String, u16)>) -> TriggerSlots {
        TriggerSlots {
            host: endpoint.and_then(|e| self.hosts.of(e)),
            socket: self.sockets.clone().filter(|_| endpoint.is_some()),
            permits: Arc::clone(&self.permits),
        }
    }
}

impl TriggerSlots {
    /// Waits for every slot of one attempt, the host's first (a trigger waiting for its host
    /// holds none of the push's); `None` when `cancel` fires first.
    pub(crate) async fn acquire(&self, cancel: &Option<CancellationToken>) -> Option<Attempt> {
        let acquire = |s: &Arc<Semaphore>| unless_cancelled(cancel, Arc::clone(s).acquire_owned());
        let mut permits = Vec::with_capacity(2);
        if let Some(host) = &self.host {
            permits.push(acquire(host).await?.ok()?);
        }
        let socket = match &self.socket {
            Some(sockets) => Some(acquire(sockets).await?.ok()?),
            None => None,
        };
        permits.push(acquire(&self.permits).await?.ok()?);
        Some(Attempt::new(permits, socket))
    }
}

/// Runs `f` unless `cancel` fires first.
pub(super) async fn unless_cancelled<F: std::future::Future>(
    cancel: &Option<CancellationToken>,
    f: F,
) -> Option<F::Output> {
    match cancel {
        Some(c) => tokio::select! {
            biased;
            _ = c.cancelled() => None,
            out = f => Some(out),
        },
        None => Some(f.await),
    }
}
