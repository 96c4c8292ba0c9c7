//! `receive`'s subscriber of the broadcast tier: a persistent MQTT session (triggers published
//! while it was away arrive when it reconnects) subscribed to `{prefix}/{archive}/trigger` of its
//! archives. A trigger runs only when it is signed by a trusted key ([`crate::wire::mqtt::verify`]),
//! well-formed, for the archive of its topic, and admitted by what [`super::accepted`] remembers:
//! not dated more than `max_skew` ahead of this host's clock, not accepted before (its nonce), not
//! older than the window (so a replayed or re-delivered trigger, and the retained copy that comes
//! with every new subscription, run nothing); anything else is logged and dropped. Accepted triggers join the
//! same one-at-a-time, coalescing runner as HTTP triggers; every run's start and end is
//! acknowledged on `{prefix}/{archive}/ack/{mirror}`, and a trigger that arrives during a run is
//! acknowledged `busy`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, PublishProperties, RetainForwardRule, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::accepted::{Accepted, Judged};
use super::config::ReceiveMqtt;
use super::request::{SyncRequest, valid_serial};
use super::sync::{Lane, RunEvent, Workers};
use crate::transport::mqtt::connect::{self, BrokerSession, Reconnect};
use crate::vocab::model::Timestamp;
use crate::vocab::units::millis;
use crate::wire::mqtt::{self as wire, AckMessage, AckState, RefusalReason, TriggerMessage};

/// Why a received trigger runs nothing. Each is logged with the archive and sender.
#[derive(Debug, thiserror::Error)]
pub enum Dropped {
    /// Over [`wire::MAX_MESSAGE`].
    #[error("oversized ({0} bytes)")]
    TooLarge(usize),
    /// Not one of our trigger topics.
    #[error("not a trigger topic of this receiver")]
    Topic,
    /// The signature check failed.
    #[error("{0}")]
    Unverified(#[from] wire::Unverified),
    /// Not a trigger's JSON.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed for another archive than the one of the topic it came on.
    #[error("signed for archive `{signed_for}`, published on another archive's topic")]
    OtherArchive {
        /// The archive it names.
        signed_for: String,
    },
    /// Dated more than `max_skew` ahead of this host's clock: the sender's clock runs fast (or
    /// ours slow). Accepting it would make every correct trigger look older than it.
    #[error(
        "sent_at is {} ahead of this host's clock, more than max_skew {}: is either clock wrong?",
        crate::vocab::units::format_ms(millis(*ahead)),
        humantime::format_duration(*max_skew)
    )]
    Future {
        /// How far ahead.
        ahead: Duration,
        /// The bound it broke.
        max_skew: Duration,
    },
    /// More than `max_skew` older than the newest trigger accepted for the archive: its nonce
    /// may have been forgotten, or its sender's clock runs slow.
    #[error(
        "sent_at is {} older than the last trigger accepted for this archive, more than max_skew {}",
        crate::vocab::units::format_ms(millis(*behind)),
        humantime::format_duration(*max_skew)
    )]
    Stale {
        /// How much older.
        behind: Duration,
        /// The window it is outside of.
        max_skew: Duration,
    },
    /// Its nonce was accepted before: the retained copy of a new subscription, a re-delivery, a
    /// retry of the sender, or a replay. It ran once already.
    #[error("the same trigger (nonce) was accepted before: a repeat or a replay")]
    Duplicate,
    /// Without a nonce (an older sender), and not newer than the last trigger accepted for the
    /// archive.
    #[error(
        "not newer than the last trigger accepted for this archive (sent {sent}, last {last}): a replay or a repeat"
    )]
    NotNewer {
        /// When this one was sent.
        sent: Timestamp,
        /// When the last accepted one was.
        last: Timestamp,
    },
}

impl Dropped {
    /// Why a trigger signed by a trusted key is refused for what it says, and by how much its
    /// date was off: what its `refused` ack says. `None` for what is not acknowledged: what
    /// anyone could have published (unsigned, oversized, malformed), and repeats of a trigger
    /// that ran (the retained copy comes with every new subscription).
    fn refusal(&self) -> Option<(RefusalReason, Option<Duration>)> {
        match self {
            Dropped::Future { ahead, .. } => Some((RefusalReason::Future, Some(*ahead))),
            Dropped::Stale { behind, .. } => Some((RefusalReason::Stale, Some(*behind))),
            Dropped::OtherArchive { .. } => Some((RefusalReason::Archive, None)),
            _ => None,
        }
    }

    fn judged(judged: Judged, sent: Timestamp, max_skew: Duration) -> Self {
        match judged {
            Judged::Future { ahead } => Dropped::Future { ahead, max_skew },
            Judged::Stale { behind } => Dropped::Stale { behind, max_skew },
            Judged::Duplicate => Dropped::Duplicate,
            Judged::NotNewer { last } => Dropped::NotNewer { sent, last },
        }
    }
}

/// The subscriber's connection options; an error (unreadable TLS files) stops `receive` at start.
pub(super) fn options(settings: &ReceiveMqtt) -> anyhow::Result<MqttOptions> {
    let broker = &settings.broker;
    let mut options = connect::options(broker, &broker.client_id, BrokerSession::Persistent)?;
    // A trigger is acknowledged to the broker only once it is queued (or dropped), so one that
    // arrives as we stop is delivered again.
    options.set_manual_acks(true);
    Ok(options)
}

/// Subscribes and serves until `shutdown`; a broker that is down is retried with backoff for as
/// long as it takes. At shutdown no new trigger is taken (nor acknowledged to the broker, so it
/// is delivered again), but the acks of a sync still running are sent before it disconnects. An
/// error means the subscriber cannot go on: its connection task died (a bug), or another client
/// took over its session (two receivers with one `client_id`).
pub(super) async fn run(
    options: MqttOptions,
    settings: ReceiveMqtt,
    lanes: BTreeMap<String, Arc<Lane>>,
    workers: Arc<Workers>,
    state_dir: PathBuf,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let broker = &settings.broker;
    let (client, eventloop) = AsyncClient::new(options, 256);
    let topics = settings.topics();
    let (tx, mut incoming) = mpsc::channel(64);
    let filters = topics.keys().cloned().collect();
    let mut connection = tokio::spawn(drive(eventloop, client.clone(), filters, broker.to_string(), tx));
    let mut accepted = Accepted::load(state_dir.join("mqtt-accepted"), &settings.archives);
    let mut runs = workers.runs.subscribe();
    tracing::info!(broker = %broker, mirror = %settings.mirror, archives = %settings.archives.join(","), "subscribing to MQTT triggers");
    match &settings.identity {
        Some(key) => {
            tracing::info!(key = %crate::wire::keys::fingerprint(key.expose().public_key()), "acks are signed")
        }
        None => {
            tracing::info!("acks are not signed (no `identity:`): an upstream that requires signed acks ignores them")
        }
    }
    let idle = |workers: &Workers| workers.status.borrow().archives.iter().all(|a| a.running.is_none());
    let mut stopping = false;
    let ack_run = |event: RunEvent| {
        let RunEvent { archive, request, ended } = event;
        if !settings.archives.contains(&archive) {
            return;
        }
        let (state, code, took) = match ended {
            None => (AckState::Started, None, None),
            Some((Some(0), took)) => (AckState::Ok, Some(0), Some(took)),
            Some((code, took)) => (AckState::Failed, code, Some(took)),
        };
        acknowledge(&client, &settings, &archive, &request, state, code, took);
    };
    loop {
        if stopping && idle(&workers) {
            // A run's end is announced before the status says idle: its ack may still be queued.
            while let Ok(event) = runs.try_recv() {
                ack_run(event);
            }
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled(), if !stopping => stopping = true,
            _ = workers.hard_stop.cancelled() => break,
            publish = incoming.recv() => {
                let Some(publish) = publish else {
                    return Err(match (&mut connection).await {
                        Ok(Some(why)) => why,
                        Ok(None) => "the MQTT connection task ended".to_string(),
                        Err(e) => format!("the MQTT connection task died: {e}"),
                    });
                };
                if stopping {
                    continue;
                }
                let archive = topics.get(String::from_utf8_lossy(&publish.topic).as_ref());
                let topic_archive = archive.map_or("?", String::as_str);
                match handle(&publish, archive, &settings, &mut accepted, SystemTime::now()) {
                    Ok(message) => {
                        let request = SyncRequest { stage: message.stage, serial: message.serial, sent_at: Some(message.sent_at) };
                        tracing::info!(
                            archive = %message.archive, stage = %request.stage, serial = request.serial.as_deref().unwrap_or(""),
                            "trigger accepted from {} via MQTT", message.sender
                        );
                        if let Some(lane) = lanes.get(&message.archive)
                            && workers.enqueue(lane, request.clone())
                        {
                            acknowledge(&client, &settings, &message.archive, &request, AckState::Busy, None, None);
                        }
                    }
                    Err((why, message)) => dropped(&client, &settings, topic_archive, &why, message.as_deref()),
                }
                if let Err(e) = client.try_ack(&publish) {
                    tracing::warn!("cannot acknowledge the trigger to the broker: {e}");
                }
            }
            run = runs.recv() => match run {
                Ok(event) => ack_run(event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} run event(s) not acknowledged over MQTT (too many at once)");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    // A clean DISCONNECT once what is queued (the last acks) has gone out; bounded.
    let _ = client.try_disconnect();
    match tokio::time::timeout(Duration::from_secs(2), &mut connection).await {
        Ok(Err(e)) if e.is_panic() => Err(format!("the MQTT connection task died: {e}")),
        Ok(_) => Ok(()),
        Err(_) => {
            connection.abort();
            Ok(())
        }
    }
}

/// Logs why a trigger runs nothing, with its sender once its signature verified, and
/// acknowledges it `refused` when it was refused for what it says.
fn dropped(
    client: &AsyncClient,
    settings: &ReceiveMqtt,
    topic_archive: &str,
    why: &Dropped,
    message: Option<&TriggerMessage>,
) {
    match (why.refusal(), message) {
        (Some((reason, off)), Some(message)) => {
            tracing::warn!(
                archive = topic_archive, sender = %message.sender, %reason,
                serial = message.serial.as_deref().unwrap_or(""), "MQTT trigger refused: {why}"
            );
            refuse(client, settings, message, reason, off);
        }
        // The retained trigger comes again with every new subscription: not worth a warning.
        _ if matches!(why, Dropped::NotNewer { .. } | Dropped::Duplicate) => {
            tracing::info!(archive = topic_archive, "MQTT trigger dropped: {why}");
        }
        _ => tracing::warn!(archive = topic_archive, "MQTT trigger dropped: {why}"),
    }
}

/// Checks one trigger: size, topic, signature, content, freshness by this host's clock `now`;
/// then records it as accepted. A refusal carries the trigger once its signature is verified.
fn handle(
    publish: &Publish,
    archive: Option<&String>,
    settings: &ReceiveMqtt,
    accepted: &mut Accepted,
    now: SystemTime,
) -> Result<TriggerMessage, (Dropped, Option<Box<TriggerMessage>>)> {
    let archive = archive.ok_or((Dropped::Topic, None))?;
    let message = verified(publish, settings).map_err(|why| (why, None))?;
    if let Some(serial) = &message.serial
        && !valid_serial(serial)
    {
        return Err((Dropped::Malformed("invalid serial".into()), None));
    }
    if let Some(nonce) = &message.nonce
        && !wire::valid_nonce(nonce)
    {
        return Err((Dropped::Malformed("invalid nonce: 32 lowercase hex digits expected".into()), None));
    }
    if &message.archive != archive {
        return Err((Dropped::OtherArchive { signed_for: message.archive.clone() }, Some(Box::new(message))));
    }
    match accepted.admit(archive, message.sent_at, message.nonce.as_deref(), now, settings.max_skew) {
        Ok(()) => Ok(message),
        Err(judged) => Err((Dropped::judged(judged, message.sent_at, settings.max_skew), Some(Box::new(message)))),
    }
}

/// A trigger of at most [`wire::MAX_MESSAGE`] bytes, signed by a trusted key, that parses.
fn verified(publish: &Publish, settings: &ReceiveMqtt) -> Result<TriggerMessage, Dropped> {
    if publish.payload.len() > wire::MAX_MESSAGE {
        return Err(Dropped::TooLarge(publish.payload.len()));
    }
    let mut signatures = publish
        .properties
        .iter()
        .flat_map(|p| &p.user_properties)
        .filter(|(k, _)| k == wire::SIGNATURE_PROPERTY)
        .map(|(_, v)| v.as_str());
    let signature = match (signatures.next(), signatures.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    };
    wire::verify(wire::Signed::Trigger, &publish.payload, signature, &settings.trusted_keys)?;
    serde_json::from_slice(&publish.payload).map_err(|e| Dropped::Malformed(e.to_string()))
}

/// Publishes an ack (QoS 1, not retained) of `request`; queued by the client while the broker is
/// away.
fn acknowledge(
    client: &AsyncClient,
    settings: &ReceiveMqtt,
    archive: &str,
    request: &SyncRequest,
    state: AckState,
    exit_code: Option<i32>,
    took: Option<Duration>,
) {
    let ack = AckMessage {
        mirror: settings.mirror.clone(),
        serial: request.serial.clone(),
        state,
        exit_code,
        duration_ms: took.map(millis),
        stage: Some(request.stage),
        sent_at: request.sent_at,
        reason: None,
        off_by_ms: None,
    };
    publish_ack(client, settings, archive, &ack);
}

/// Acknowledges a refused trigger `refused` with its reason, on the ack topic of the archive it
/// was signed for (where its sender waits), so that the upstream's report says why instead of
/// waiting for an ack that never comes.
fn refuse(
    client: &AsyncClient,
    settings: &ReceiveMqtt,
    refused: &TriggerMessage,
    reason: RefusalReason,
    off: Option<Duration>,
) {
    if !crate::config::broker::valid_level(&refused.archive) {
        return;
    }
    let ack = AckMessage {
        mirror: settings.mirror.clone(),
        serial: refused.serial.clone(),
        state: AckState::Refused,
        exit_code: None,
        duration_ms: None,
        stage: Some(refused.stage),
        sent_at: Some(refused.sent_at),
        reason: Some(reason),
        off_by_ms: off.map(millis),
    };
    publish_ack(client, settings, &refused.archive, &ack);
}

/// Publishes `ack`, signed with this mirror's `identity` when it has one (an ack it cannot sign
/// is still sent: an upstream that requires signed acks ignores it, one that does not takes it).
fn publish_ack(client: &AsyncClient, settings: &ReceiveMqtt, archive: &str, ack: &AckMessage) {
    let topic = wire::ack_topic(&settings.broker.topic_prefix, archive, &settings.mirror);
    let payload = serde_json::to_vec(ack).unwrap_or_default();
    let state = ack.state;
    let mut properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        ..PublishProperties::default()
    };
    if let Some(key) = &settings.identity {
        match wire::sign(key.expose(), wire::Signed::Ack, &payload) {
            Ok(signature) => properties.user_properties.push((wire::SIGNATURE_PROPERTY.to_string(), signature)),
            Err(e) => tracing::error!(%archive, %state, "cannot sign the ack: {e}"),
        }
    }
    match client.try_publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties) {
        Ok(()) => tracing::info!(%archive, %state, "ack published"),
        Err(e) => tracing::warn!(%archive, %state, "cannot publish the ack: {e}"),
    }
}

/// Runs the connection: subscribes on every connection (a kept session may lack a topic added
/// since; the retained trigger is only sent for a new subscription), checks that the broker
/// granted each subscription, hands incoming publishes over, reconnects with backoff. Ends with
/// why the subscriber cannot go on (its session taken over), or `None` after our DISCONNECT.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Vec<String>,
    broker: String,
    incoming: mpsc::Sender<Publish>,
) -> Option<String> {
    let mut reconnect = Reconnect::default();
    let mut failing = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                reconnect.connected();
                failing = false;
                let filters = topics.iter().map(|t| Filter {
                    retain_forward_rule: RetainForwardRule::OnNewSubscribe,
                    ..Filter::new(t.clone(), QoS::AtLeastOnce)
                });
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::error!(%broker, "cannot subscribe: {e}");
                }
                tracing::info!(%broker, session = ack.session_present, at = %Timestamp(SystemTime::now()), "connected to the MQTT broker");
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if let Some(refused) = ack.return_codes.iter().find(|c| !granted(c)) {
                    tracing::error!(%broker, "the broker refused a trigger subscription ({refused:?}): check its ACL for this user");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if incoming.send(p).await.is_err() {
                    return None;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return None,
            Ok(_) => {}
            Err(e) if connect::taken_over(&e) => {
                let why = format!(
                    "another client took over this MQTT session: is client_id shared with another receiver? ({broker})"
                );
                tracing::error!("{why}");
                return Some(why);
            }
            Err(e) => {
                if !failing {
                    let (class, _) = connect::classify(&e);
                    tracing::warn!(%broker, %class, "MQTT connection failed: {e}; reconnecting");
                    failing = true;
                }
                tokio::time::sleep(reconnect.after_failure()).await;
            }
        }
    }
}

/// Whether a SUBACK reason code grants the subscription at QoS 1 (mosquitto answers a topic its
/// ACL refuses with a grant at QoS 0, and then delivers nothing).
fn granted(code: &SubscribeReasonCode) -> bool {
    matches!(code, SubscribeReasonCode::Success(QoS::AtLeastOnce | QoS::ExactlyOnce))
}
