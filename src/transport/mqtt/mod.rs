//! The broadcast tier's sender: one connection to the broker, one signed, retained publish per
//! archive and stage, and each registered MQTT mirror's acknowledgement.
//!
//! To the engine every MQTT mirror is a trigger like any other: its attempt makes sure the
//! archive's trigger is published (once per push and stage, shared by all its mirrors: the first
//! attempt publishes, the others wait for the broker's PUBACK of that one publish), hands its
//! concurrency permit back, and waits for this mirror's ack on `{prefix}/{archive}/ack/{mirror}`.
//! A final ack (`ok`, `busy`, `failed`, `refused`) ends the attempt; none within `ack_timeout` ends it
//! [`Delivered::pending`]: published, not confirmed. Acks are kept per mirror after the push too
//! ([`MqttTransport::acks`]), so a late one still reaches the daemon's status. A mirror with an
//! `ack_key` counts only acks signed with it (`pushmirror-ack`); others change nothing.
//!
//! A broker that is down fails an attempt as `connect` once the mirror's `timeout` has passed
//! without a connection; the engine's retries publish it again (the same payload, so subscribers
//! that got the first one drop the second: same nonce). The connection task reconnects with
//! backoff for as long as the transport lives.

pub mod connect;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use russh::keys::{PrivateKey, PublicKey};
use tokio::sync::{broadcast, watch};

use super::{Attempt, AttemptError, AttemptResult, Delivered, TriggerRequest};
use crate::config::{Config, MqttSettings, MqttTarget, Transport};
use crate::vocab::clock::Clock;
use crate::vocab::model::{ErrorClass, Stage, Timestamp};
use crate::wire::mqtt::{self as wire, AckMessage, AckRecord, AckState, Signed, TriggerMessage};
use connect::{BrokerSession, Reconnect};

/// Publications remembered per push, so that retries re-send the same bytes; older pushes' are
/// dropped.
const PUSHES_REMEMBERED: u64 = 64;

/// The sender's connection to the broker and what it learned there.
#[derive(Clone)]
pub struct MqttTransport {
    inner: Arc<Inner>,
}

struct Inner {
    client: AsyncClient,
    shared: Arc<Conn>,
    settings: MqttSettings,
    /// Stamps each trigger's `sent_at`.
    clock: Clock,
    keys: HashMap<PathBuf, Arc<PrivateKey>>,
    publications: Mutex<HashMap<PublicationKey, Arc<Publication>>>,
    /// One trigger publish at a time, so that the PUBACK that follows is recognisably its own.
    publishing: tokio::sync::Mutex<()>,
    task: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the connection task shares with the attempts.
struct Conn {
    link: watch::Sender<Link>,
    packets: broadcast::Sender<Sent>,
    acks: Acks,
    prefix: String,
    broker: String,
}

/// The state of the connection.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// Connected (CONNACK received, not lost since).
    pub up: bool,
    /// Why the last connection attempt failed.
    pub error: Option<(ErrorClass, bool, String)>,
    /// The connection ended for good: its task died (a bug), or another client took over the
    /// session. Nothing will be sent any more; `error` says why.
    pub dead: bool,
}

#[derive(Debug, Clone, Copy)]
enum Sent {
    Publish(u16),
    PubAck(u16, PubAckReason),
    Down,
}

/// One slot per registered `(archive, mirror)`: acks from anyone else are dropped, so what is kept
/// is bounded by the configuration.
struct Acks {
    slots: HashMap<(String, String), watch::Sender<Option<AckRecord>>>,
    /// The subscriber's key of each mirror with an `ack_key`: only acks it signed count.
    keys: HashMap<String, PublicKey>,
    /// Mirrors whose unverified ack was already logged as a warning (once per mirror: a bound set
    /// of configured names, however many such acks arrive).
    warned: Mutex<HashSet<String>>,
    seq: AtomicU64,
    late: broadcast::Sender<AckRecord>,
}

impl Acks {
    fn receive(&self, prefix: &str, topic: &str, payload: &[u8], signature: Option<&str>) {
        let Some((archive, mirror)) = wire::parse_ack_topic(prefix, topic) else { return };
        let Some(slot) = self.slots.get(&(archive.to_string(), mirror.to_string())) else {
            tracing::debug!(%archive, %mirror, "ack from a mirror not registered for this archive: ignored");
            return;
        };
        if payload.len() > wire::MAX_MESSAGE {
            tracing::warn!(%archive, %mirror, bytes = payload.len(), "oversized ack dropped");
            return;
        }
        if let Some(key) = self.keys.get(mirror)
            && let Err(why) = wire::verify(Signed::Ack, payload, signature, std::slice::from_ref(key))
        {
            self.distrusted(archive, mirror, &why);
            return;
        }
        let Ok(ack) = serde_json::from_slice::<AckMessage>(payload) else {
            tracing::warn!(%archive, %mirror, bytes = payload.len(), "malformed ack dropped");
            return;
        };
        if ack.mirror != mirror {
            tracing::warn!(%archive, %mirror, claimed = %ack.mirror.chars().take(64).collect::<String>(), "ack names another mirror than its topic: dropped");
            return;
        }
        let record = AckRecord {
            archive: archive.to_string(),
            ack,
            received_at: Timestamp(SystemTime::now()),
            seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
        };
        tracing::info!(%archive, %mirror, state = %record.ack.state, serial = record.ack.serial.as_deref().unwrap_or(""), "ack");
        slot.send_replace(Some(record.clone()));
        let _ = self.late.send(record);
    }

    /// An ack not signed with the mirror's `ack_key`: it changes nothing. The first of each mirror
    /// is a warning (someone else can write its ack topic, or its subscriber signs with another
    /// key or not at all), the rest are only noted.
    fn distrusted(&self, archive: &str, mirror: &str, why: &wire::Unverified) {
        let first = self.warned.lock().unwrap_or_else(|e| e.into_inner()).insert(mirror.to_string());
        match first {
            true => tracing::warn!(
                %archive, %mirror,
                "ack ignored: {why}; only acks signed with the mirror's ack_key count (further ones from this \
                 mirror are logged at debug)"
            ),
            false => tracing::debug!(%archive, %mirror, "ack ignored: {why}"),
        }
    }
}

type PublicationKey = (u64, String, crate::vocab::model::Stage, PathBuf);
type Publishing = Shared<BoxFuture<'static, Result<(), AttemptError>>>;

/// One trigger message, signed once and sent until the broker confirms it.
struct Publication {
    /// When it was made: subscribers echo it in their acks.
    sent_at: Timestamp,
    topic: String,
    payload: Bytes,
    signature: String,
    /// [`Acks::seq`] when it was made: only later acks answer it.
    seq: u64,
    done: AtomicBool,
    attempt: Mutex<Option<Publishing>>,
}

impl MqttTransport {
    /// Connects (in the background) to the broker of `config.mqtt` and loads the keys its MQTT
    /// mirrors' triggers are signed with; `clock` stamps the triggers' `sent_at`. Must be called
    /// inside a tokio runtime.
    pub fn new(config: &Config, session: BrokerSession, clock: Clock) -> anyhow::Result<Self> {
        let settings =
            config.mqtt.clone().ok_or_else(|| anyhow::anyhow!("MQTT mirrors need `mqtt:` in the main file"))?;
        let mut slots = HashMap::new();
        let mut keys = HashMap::new();
        let mut ack_keys = HashMap::new();
        for mirror in &config.mirrors {
            let Transport::Mqtt(target) = &mirror.transport else { continue };
            if let Some(key) = &target.ack_key {
                ack_keys.insert(mirror.name.clone(), key.clone());
            }
            for (archive, sender) in &mirror.senders {
                slots.insert((archive.clone(), mirror.name.clone()), watch::Sender::new(None));
                if let Some(path) = &sender.identity
                    && !keys.contains_key(path)
                {
                    keys.insert(path.clone(), Arc::new(crate::wire::keys::load_identity(path)?));
                }
            }
        }
        let broker = &settings.broker;
        let client_id = match session {
            BrokerSession::Persistent => broker.client_id.clone(),
            // A CLI push beside the daemon must not take over the daemon's session.
            BrokerSession::Once => format!("{}-{}", broker.client_id, std::process::id()),
        };
        let options = connect::options(broker, &client_id, session)?;
        let (client, eventloop) = AsyncClient::new(options, 64);
        let shared = Arc::new(Conn {
            link: watch::Sender::new(Link::default()),
            packets: broadcast::channel(256).0,
            acks: Acks {
                slots,
                keys: ack_keys,
                warned: Mutex::new(HashSet::new()),
                seq: AtomicU64::new(0),
                late: broadcast::channel(1024).0,
            },
            prefix: broker.topic_prefix.clone(),
            broker: broker.to_string(),
        });
        let task = spawn_connection(eventloop, client.clone(), Arc::clone(&shared));
        Ok(MqttTransport {
            inner: Arc::new(Inner {
                client,
                shared,
                settings,
                clock,
                keys,
                publications: Mutex::new(HashMap::new()),
                publishing: tokio::sync::Mutex::new(()),
                task,
            }),
        })
    }

    /// The latest ack of every registered mirror that has sent one, by archive and mirror.
    pub fn acks(&self) -> Vec<AckRecord> {
        let mut all: Vec<AckRecord> =
            self.inner.shared.acks.slots.values().filter_map(|slot| slot.borrow().clone()).collect();
        all.sort_by(|a, b| (&a.archive, &a.ack.mirror).cmp(&(&b.archive, &b.ack.mirror)));
        all
    }

    /// Every ack from now on, as it arrives.
    pub fn subscribe_acks(&self) -> broadcast::Receiver<AckRecord> {
        self.inner.shared.acks.late.subscribe()
    }

    /// Ends the connection now (a reloaded daemon's old configuration: its successor connects
    /// with the same client id, and two connections would take the session from each other).
    /// Attempts still running fail; acks go to the successor.
    pub fn close(&self) {
        self.inner.task.abort();
        self.inner.shared.link.send_modify(|l| {
            l.up = false;
            l.error = Some((ErrorClass::Interrupted, false, "closed: the configuration was reloaded".into()));
        });
        let _ = self.inner.shared.packets.send(Sent::Down);
    }

    /// The connection's state.
    pub fn link(&self) -> watch::Receiver<Link> {
        self.inner.shared.link.subscribe()
    }

    /// One attempt at one MQTT mirror: the publication, then its ack.
    pub async fn fire(&self, target: &MqttTarget, req: TriggerRequest<'_>, attempt: &Attempt) -> AttemptResult {
        let inner = &self.inner;
        let slot =
            inner.shared.acks.slots.get(&(req.archive.to_string(), req.mirror.name.to_string())).ok_or_else(|| {
                AttemptError::permanent(ErrorClass::Other, "not a registered MQTT mirror of this archive")
            })?;
        let mut acks = slot.subscribe();
        let publication = self.publication(target, &req)?;
        publication.published(inner, req.mirror.timeout).await?;
        attempt.release_permit();
        let ack_timeout = target.ack_timeout;
        let mut started = false;
        let answered = async {
            loop {
                if let Some(record) = &*acks.borrow_and_update()
                    && publication.answered_by(record, req.serial)
                {
                    match record.ack.state {
                        AckState::Started => started = true,
                        // Queued behind a running sync: stage 1 still has to run before stage 2
                        // may be published, so only its end answers it.
                        AckState::Busy if req.stage == Stage::Stage1 => started = true,
                        _ => return answer(&record.ack),
                    }
                }
                if acks.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        };
        match tokio::time::timeout(ack_timeout, answered).await {
            Ok(result) => result,
            Err(_) => {
                let waited = humantime::format_duration(ack_timeout);
                let note = match started {
                    true => format!("published; sync started, no final ack within {waited}"),
                    false => format!("published; no ack within {waited}"),
                };
                Ok(Delivered { note: Some(note), pending: true, ..Delivered::default() })
            }
        }
    }

    /// The publication of this push, stage, topic and key: made and signed on first use.
    fn publication(&self, target: &MqttTarget, req: &TriggerRequest<'_>) -> Result<Arc<Publication>, AttemptError> {
        let inner = &self.inner;
        let identity = req.mirror.identity.ok_or_else(|| {
            AttemptError::permanent(ErrorClass::Other, "no `identity:` key to sign MQTT triggers with")
        })?;
        let topic = target.topic.clone().unwrap_or_else(|| wire::trigger_topic(&inner.shared.prefix, req.archive));
        let key = (req.push, topic, req.stage, identity.to_path_buf());
        let mut publications = inner.publications.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = publications.get(&key) {
            return Ok(Arc::clone(p));
        }
        // At the wire's precision (milliseconds), so that the `sent_at` acks echo equals it.
        let ms = inner.clock.now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let sent_at = Timestamp(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)));
        let message = TriggerMessage {
            archive: req.archive.to_string(),
            stage: req.stage,
            serial: req.serial.map(str::to_string),
            sent_at,
            sender: inner.settings.broker.client_id.clone(),
            nonce: Some(wire::new_nonce()),
        };
        let payload =
            serde_json::to_vec(&message).map_err(|e| AttemptError::permanent(ErrorClass::Internal, e.to_string()))?;
        let signature = sign(&inner.keys, identity, &payload)?;
        let publication = Arc::new(Publication {
            sent_at,
            topic: key.1.clone(),
            payload: Bytes::from(payload),
            signature,
            seq: inner.shared.acks.seq.load(Ordering::SeqCst),
            done: AtomicBool::new(false),
            attempt: Mutex::new(None),
        });
        publications.retain(|(push, ..), _| push + PUSHES_REMEMBERED > req.push);
        publications.insert(key, Arc::clone(&publication));
        Ok(publication)
    }
}

fn sign(keys: &HashMap<PathBuf, Arc<PrivateKey>>, identity: &Path, payload: &[u8]) -> Result<String, AttemptError> {
    let key = keys.get(identity).ok_or_else(|| {
        AttemptError::permanent(ErrorClass::Other, format!("key {} was not loaded", identity.display()))
    })?;
    wire::sign(key, wire::Signed::Trigger, payload)
        .map_err(|e| AttemptError::permanent(ErrorClass::Other, format!("cannot sign: {e}")))
}

/// An ack's verdict: `ok` and `busy` delivered; `failed` (its sync) and `refused` (the trigger)
/// failures no retry fixes.
fn answer(ack: &AckMessage) -> AttemptResult {
    if let Some((class, why)) = ack.failure() {
        return Err(AttemptError { exit_code: ack.exit_code, ..AttemptError::permanent(class, why) });
    }
    let sync_duration = ack.duration_ms.map(Duration::from_millis);
    match ack.state {
        AckState::Busy => Ok(Delivered { note: Some("downstream busy, re-run queued".into()), ..Delivered::default() }),
        _ => Ok(Delivered { exit_code: ack.exit_code, sync_duration, ..Delivered::default() }),
    }
}

impl Publication {
    /// Whether `record` answers this publication: it names its `sent_at` (pushmirror's
    /// subscribers do), or — from a subscriber that does not — it came after it with its serial.
    fn answered_by(&self, record: &AckRecord, serial: Option<&str>) -> bool {
        match record.ack.sent_at {
            Some(sent_at) => sent_at == self.sent_at,
            None => record.seq > self.seq && record.ack.serial.as_deref() == serial,
        }
    }

    /// Sent and confirmed by the broker: at most one attempt in flight, shared by every mirror
    /// waiting for it; a failed one is forgotten so that the next retry makes a new one.
    async fn published(self: &Arc<Self>, inner: &Arc<Inner>, timeout: Duration) -> Result<(), AttemptError> {
        if self.done.load(Ordering::SeqCst) {
            return Ok(());
        }
        let attempt = {
            let mut slot = self.attempt.lock().unwrap_or_else(|e| e.into_inner());
            // A task of its own: it runs to its end (bounded by `timeout`) and releases the publish
            // lock even when every attempt waiting for it was cancelled.
            slot.get_or_insert_with(|| {
                let task = tokio::spawn(publish(Arc::clone(inner), Arc::clone(self), timeout));
                let joined = task.map(|r| {
                    r.unwrap_or_else(|e| {
                        Err(AttemptError::permanent(ErrorClass::Internal, format!("the publish task failed: {e}")))
                    })
                });
                joined.boxed().shared()
            })
            .clone()
        };
        let result = attempt.clone().await;
        match &result {
            Ok(()) => self.done.store(true, Ordering::SeqCst),
            Err(_) => {
                let mut slot = self.attempt.lock().unwrap_or_else(|e| e.into_inner());
                if slot.as_ref().is_some_and(|current| current.ptr_eq(&attempt)) {
                    *slot = None;
                }
            }
        }
        result
    }
}

/// Waits (up to `timeout`) for the connection, publishes, and waits for the broker's PUBACK.
async fn publish(inner: Arc<Inner>, publication: Arc<Publication>, timeout: Duration) -> Result<(), AttemptError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let Ok(_one_at_a_time) = tokio::time::timeout_at(deadline, inner.publishing.lock()).await else {
        return Err(AttemptError::transient(ErrorClass::Timeout, "another trigger's publish did not end in time"));
    };
    let shared = &inner.shared;
    let mut link = shared.link.subscribe();
    // Up, dead, or refused for good (a refused login): waiting longer cannot help.
    let settled = |l: &Link| l.up || l.dead || l.error.as_ref().is_some_and(|(_, transient, _)| !transient);
    let _ = tokio::time::timeout_at(deadline, link.wait_for(settled)).await;
    let state = link.borrow().clone();
    if state.dead {
        let why = state.error.map_or_else(|| "the MQTT connection ended".to_string(), |(_, _, why)| why);
        return Err(AttemptError::permanent(ErrorClass::Internal, why));
    }
    if !state.up {
        let (class, transient, why) =
            state.error.unwrap_or((ErrorClass::Timeout, true, "no connection yet".to_string()));
        let message = format!("broker {}: {why}", shared.broker);
        return Err(match transient {
            true => AttemptError::transient(class, message),
            false => AttemptError::permanent(class, message),
        });
    }
    let mut sent = shared.packets.subscribe();
    let properties = PublishProperties {
        message_expiry_interval: Some(wire::expiry_seconds(inner.settings.expiry)),
        user_properties: vec![(wire::SIGNATURE_PROPERTY.to_string(), publication.signature.clone())],
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    inner
        .client
        .publish_with_properties(
            publication.topic.clone(),
            QoS::AtLeastOnce,
            true,
            publication.payload.clone(),
            properties,
        )
        .await
        .map_err(|e| AttemptError::transient(ErrorClass::Other, format!("cannot queue the publish: {e}")))?;
    let confirmed = async {
        let mut pkid = None;
        loop {
            match sent.recv().await {
                Ok(Sent::Publish(p)) if pkid.is_none() => pkid = Some(p),
                Ok(Sent::PubAck(p, reason)) if Some(p) == pkid => return puback(reason, &shared.broker),
                Ok(Sent::Down) => {
                    return Err(AttemptError::transient(
                        ErrorClass::Connect,
                        format!("broker {}: connection lost before it confirmed the trigger", shared.broker),
                    ));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(AttemptError::permanent(ErrorClass::Internal, "the MQTT connection task ended"));
                }
            }
        }
    };
    tokio::time::timeout_at(deadline, confirmed).await.unwrap_or_else(|_| {
        Err(AttemptError::transient(ErrorClass::Timeout, format!("broker {}: no PUBACK in time", shared.broker)))
    })
}

/// The broker's verdict on a trigger: delivered, or refused (by its ACL: `auth`).
fn puback(reason: PubAckReason, broker: &str) -> Result<(), AttemptError> {
    match reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
        PubAckReason::NotAuthorized => Err(AttemptError::permanent(
            ErrorClass::Auth,
            format!("broker {broker} refused the trigger: not authorised to publish it (ACL)"),
        )),
        other => {
            Err(AttemptError::transient(ErrorClass::Other, format!("broker {broker} refused the trigger: {other:?}")))
        }
    }
}

/// Runs the connection until the transport is dropped; a panic marks the link dead (every later
/// attempt then fails `internal`, and the daemon's supervisor stops the daemon).
fn spawn_connection(eventloop: EventLoop, client: AsyncClient, shared: Arc<Conn>) -> tokio::task::AbortHandle {
    let task = tokio::spawn(drive(eventloop, client, Arc::clone(&shared)));
    let abort = task.abort_handle();
    tokio::spawn(async move {
        if let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!(broker = %shared.broker, "the MQTT connection task died: {e}");
            shared.link.send_modify(|l| {
                l.up = false;
                l.dead = true;
                l.error = Some((ErrorClass::Internal, false, format!("the MQTT connection task died: {e}")));
            });
        }
    });
    abort
}

async fn drive(mut eventloop: EventLoop, client: AsyncClient, shared: Arc<Conn>) {
    let mut reconnect = Reconnect::default();
    let filter = wire::ack_filter(&shared.prefix);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                reconnect.connected();
                // On every connection: a kept session may lack the filter (a new topic_prefix).
                if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                    tracing::error!(broker = %shared.broker, "cannot subscribe to acks: {e}");
                }
                tracing::info!(broker = %shared.broker, session = ack.session_present, "connected to the MQTT broker");
                shared.link.send_modify(|l| {
                    l.up = true;
                    l.error = None;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.iter().any(|c| !matches!(c, SubscribeReasonCode::Success(QoS::AtLeastOnce))) {
                    tracing::error!(broker = %shared.broker, codes = ?ack.return_codes, "the broker did not grant the ack subscription at QoS 1: check its ACL; acks will not arrive");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic);
                let mut signatures = p
                    .properties
                    .iter()
                    .flat_map(|props| &props.user_properties)
                    .filter(|(k, _)| k == wire::SIGNATURE_PROPERTY)
                    .map(|(_, v)| v.as_str());
                // Exactly one, as for a trigger: two would leave it open which one was checked.
                let signature = match (signatures.next(), signatures.next()) {
                    (Some(one), None) => Some(one),
                    _ => None,
                };
                shared.acks.receive(&shared.prefix, &topic, &p.payload, signature);
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let _ = shared.packets.send(Sent::PubAck(ack.pkid, ack.reason));
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let _ = shared.packets.send(Sent::Publish(pkid));
            }
            Ok(_) => {}
            Err(e) if connect::taken_over(&e) => {
                // Another client logged in with our client id: a second sender configured alike
                // (or, at a reload, the old configuration's connection). Taking the session back
                // would go back and forth; this connection ends, and a daemon watching it stops.
                let why = "another client took over this MQTT session: is client_id shared with another sender?";
                tracing::error!(broker = %shared.broker, "{why}");
                shared.link.send_modify(|l| {
                    l.up = false;
                    l.dead = true;
                    l.error = Some((ErrorClass::Connect, false, why.into()));
                });
                let _ = shared.packets.send(Sent::Down);
                return;
            }
            Err(e) => {
                // Publishes that were not confirmed are not re-sent by the client: the attempt
                // that made one has failed (`Down`) and its retry publishes again, so a re-sent
                // one's PUBACK cannot be taken for another's.
                eventloop.pending.clear();
                let (class, transient) = connect::classify(&e);
                let was_up = shared.link.borrow().up;
                if was_up || shared.link.borrow().error.is_none() {
                    tracing::warn!(broker = %shared.broker, %class, "MQTT connection failed: {e}; reconnecting");
                }
                shared.link.send_modify(|l| {
                    l.up = false;
                    l.error = Some((class, transient, e.to_string()));
                });
                let _ = shared.packets.send(Sent::Down);
                tokio::time::sleep(reconnect.after_failure()).await;
            }
        }
    }
}
