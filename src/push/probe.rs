//! `probe`: what each downstream would say to a trigger, without triggering it.
//!
//! SSH mirrors: connect from the mirror's source address, check the host key (an unknown one is
//! reported, not recorded), ask which of our keys it accepts (public-key queries: the next key of
//! a rotation, then the current one), log in with the first accepted one and leave — no session
//! channel, so no forced command runs. HTTP mirrors: DNS, TCP and (https) the TLS handshake, no
//! request (one could be a trigger). MQTT mirrors: the broker lets us in with our credentials;
//! whether its ACL lets us publish to the mirror's topic cannot be learned without publishing,
//! which would be a trigger. The same `concurrency`, `max_per_host` and timeouts as a push; what
//! SSH mirrors said of our keys goes into the ledger, for rotations.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

use crate::config::{Config, Mirror, Transport};
use crate::push::engine::slots::Slots;
use crate::push::ledger::{Ledger, Rotation};
use crate::push::report::History;
use crate::transport::net::{tcp_connect, tls_handshake};
use crate::transport::ssh::{HostKeyState, Login, SshTransport};
use crate::transport::{AttemptError, mqtt};
use crate::vocab::model::{ErrorClass, KeyRole, KeyVerdict, Timestamp};

/// What a probe learned of one mirror for one archive.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    /// The archive (its key and source address).
    pub archive: String,
    /// The mirror.
    pub mirror: String,
    /// `ssh`, `http` or `mqtt`.
    pub transport: &'static str,
    /// Where (redacted).
    pub target: String,
    /// The local address it was reached from, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// Whether a trigger would get through, as far as can be told without sending one.
    pub ready: bool,
    /// SSH: its host key, checked against the pin or known_hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<HostKeyState>,
    /// SSH: that key's fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
    /// SSH: what it said of each of our keys (the next one first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyVerdict>,
    /// SSH: how logging in with the first accepted key went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
    /// SSH: a banner it showed before authentication (never answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// The connection's round trip (TCP connect; MQTT: CONNECT to CONNACK), milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// What was checked, and what could not be without triggering.
    pub checked: String,
    /// Why it is not ready, by class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Why it is not ready, in words (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything a probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Probed {
    /// One row per mirror and archive, in archive then mirror order.
    pub mirrors: Vec<ProbeRow>,
    /// Each rotating archive's progress after the probe.
    pub rotations: Vec<Rotation>,
}

impl Probed {
    /// Whether every mirror is ready.
    pub fn all_ready(&self) -> bool {
        self.mirrors.iter().all(|r| r.ready)
    }
}

/// Probes the mirrors of `archive` (every archive when `None`), only those named in `only` when
/// it is not empty, and records what SSH mirrors said of our keys in the ledger.
pub async fn probe(config: &Config, archive: Option<&str>, only: &[String]) -> anyhow::Result<Probed> {
    let pairs: Vec<(String, Arc<Mirror>)> = config
        .archives
        .keys()
        .filter(|a| archive.is_none_or(|x| x == *a))
        .flat_map(|a| {
            config
                .mirrors_of(a)
                .filter(|m| only.is_empty() || only.contains(&m.name))
                .map(move |m| (a.clone(), Arc::clone(m)))
        })
        .collect();
    let identities: Vec<std::path::PathBuf> = pairs
        .iter()
        .filter(|(_, m)| matches!(m.transport, Transport::Ssh(_)))
        .flat_map(|(a, m)| {
            let s = m.sender(a);
            s.identity.clone().into_iter().chain(s.next_identity.clone())
        })
        .collect();
    let ssh = match identities.is_empty() {
        true => None,
        false => Some(SshTransport::new(&identities, config.known_hosts.clone(), config.host_key_policy)?),
    };
    // One broker connection tells for every MQTT mirror.
    let broker = match (&config.mqtt, pairs.iter().any(|(_, m)| matches!(m.transport, Transport::Mqtt(_)))) {
        (Some(settings), true) => Some(mqtt::connect::probe_broker(&settings.broker, Duration::from_secs(10)).await),
        _ => None,
    };
    let broker = Arc::new(broker);
    let slots = Slots::new(crate::sys::fdlimit::concurrency(config.concurrency))
        .with_per_host(config.max_per_host)
        .with_sockets(crate::sys::fdlimit::cap(usize::MAX, crate::sys::fdlimit::current()));
    let mut tasks = JoinSet::new();
    for (index, (archive, mirror)) in pairs.into_iter().enumerate() {
        let (ssh, broker, slots) = (ssh.clone(), Arc::clone(&broker), slots.clone());
        let prefix = config.mqtt.as_ref().map(|m| m.broker.topic_prefix.clone()).unwrap_or_default();
        tasks.spawn(async move {
            let endpoint = mirror.endpoint();
            // Held for the probe: the same bounds as a trigger.
            let _slots = slots.of(endpoint.as_ref()).acquire(&None).await;
            let row = one(&archive, &mirror, ssh.as_ref(), &broker, &prefix).await;
            (index, row)
        });
    }
    let mut rows = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(row) => rows.push(row),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => anyhow::bail!("a probe task ended: {e}"),
        }
    }
    rows.sort_by_key(|(index, _)| *index);
    let mirrors: Vec<ProbeRow> = rows.into_iter().map(|(_, row)| row).collect();
    let rotations = record(config, &mirrors);
    Ok(Probed { mirrors, rotations })
}

/// Writes what SSH mirrors said of our keys into the ledger (when anything was learned and this
/// user may write `state_dir`); the rotations as they stand then.
fn record(config: &Config, rows: &[ProbeRow]) -> Vec<Rotation> {
    let history = History::new(&config.state_dir, config.status.history);
    let at = Timestamp(std::time::SystemTime::now());
    let learned: Vec<&ProbeRow> = rows.iter().filter(|r| !r.keys.is_empty()).collect();
    // The ownership rule: only the owner of state_dir writes it (root would leave a ledger the
    // daemon cannot replace).
    let owner = crate::sys::owner::require_owner(&config.state_dir, &config.path);
    if let (Err(refused), false) = (&owner, learned.is_empty()) {
        tracing::warn!(%refused, "what the probe learned of keys is not kept");
    }
    let ledger = if learned.is_empty() || owner.is_err() {
        Ledger::read(&config.state_dir, &history).ok()
    } else {
        let update = Ledger::update(&config.state_dir, &history, |l| {
            for r in &learned {
                l.record_keys(&r.archive, &r.mirror, &r.keys, at, "probe");
            }
        });
        match update {
            Ok(ledger) => Some(ledger),
            Err(e) => {
                tracing::warn!(error = %e, "what the probe learned of keys is not kept");
                Ledger::read(&config.state_dir, &history).ok()
            }
        }
    };
    ledger.map(|l| l.rotations(config)).unwrap_or_default()
}

/// Probes one mirror for one archive.
async fn one(
    archive: &str,
    mirror: &Mirror,
    ssh: Option<&SshTransport>,
    broker: &Option<Result<Duration, (ErrorClass, String)>>,
    prefix: &str,
) -> ProbeRow {
    let sender = mirror.sender(archive);
    let mut row = ProbeRow {
        archive: archive.to_string(),
        mirror: mirror.name.clone(),
        transport: mirror.transport_name(),
        target: mirror.transport.display_target(),
        source_address: sender.source_address,
        ready: false,
        host_key: None,
        host_key_fingerprint: None,
        keys: Vec::new(),
        login: None,
        banner: None,
        rtt_ms: None,
        checked: String::new(),
        error_class: None,
        error: None,
    };
    let fail = |row: &mut ProbeRow, e: AttemptError| {
        row.error_class = Some(e.class);
        row.error = Some(e.message);
    };
    match &mirror.transport {
        Transport::Ssh(target) => {
            row.checked = "host key, keys accepted, login (no command run)".into();
            let Some(ssh) = ssh else { return row };
            let p = ssh
                .probe(
                    target,
                    sender.identity.as_deref(),
                    sender.next_identity.as_deref(),
                    sender.source_address,
                    mirror.timeout,
                )
                .await;
            row.rtt_ms = p.connect_rtt.map(ms);
            (row.host_key, row.host_key_fingerprint) = p.host_key.map(|(s, f)| (Some(s), Some(f))).unwrap_or_default();
            (row.keys, row.login, row.banner) = (p.keys, p.login, p.banner);
            if let Some(e) = p.error {
                fail(&mut row, e);
                return row;
            }
            let not_ready = match (&row.host_key, &row.login) {
                (Some(HostKeyState::Unknown), _) => Some((
                    ErrorClass::HostKey,
                    "its host key is not recorded: `pushmirror hostkeys scan` (or pin it with host_key:)".to_string(),
                )),
                (_, None) => Some((ErrorClass::Auth, "it accepts none of our keys".to_string())),
                (_, Some(Login::AlsoNeeds(methods))) => Some((
                    ErrorClass::Auth,
                    format!(
                        "the key is accepted but it also asks for {}, which a trigger cannot answer",
                        methods.join(", ")
                    ),
                )),
                (_, Some(Login::Refused)) => {
                    Some((ErrorClass::Auth, "the key announced as accepted was refused when signed with".to_string()))
                }
                (_, Some(Login::Ok)) => None,
            };
            match not_ready {
                Some((class, why)) => (row.error_class, row.error) = (Some(class), Some(why)),
                None => row.ready = true,
            }
        }
        Transport::Http(target) => {
            let url = target.url.expose();
            let tls = url.scheme() == "https";
            row.checked = if tls { "DNS, TCP, TLS (no request sent)" } else { "DNS, TCP (no request sent)" }.into();
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return row };
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let reach = async {
                let started = tokio::time::Instant::now();
                let stream = tcp_connect(&host, port, sender.source_address).await?;
                let rtt = started.elapsed();
                if tls {
                    tls_handshake(stream, &host).await?;
                }
                Ok::<_, AttemptError>(rtt)
            };
            match tokio::time::timeout(mirror.timeout, reach).await {
                Ok(Ok(rtt)) => (row.ready, row.rtt_ms) = (true, Some(ms(rtt))),
                Ok(Err(e)) => fail(&mut row, e),
                Err(_) => fail(
                    &mut row,
                    AttemptError::transient(
                        ErrorClass::Timeout,
                        format!("no connection to {host} within {}", humantime::format_duration(mirror.timeout)),
                    ),
                ),
            }
        }
        Transport::Mqtt(target) => {
            let topic = target.topic.clone().unwrap_or_else(|| format!("{prefix}/{archive}/trigger"));
            row.checked = format!(
                "the broker accepts our credentials; publishing to {topic} is not checked (a publish is a trigger)"
            );
            match broker {
                Some(Ok(rtt)) => (row.ready, row.rtt_ms) = (true, Some(ms(*rtt))),
                Some(Err((class, why))) => (row.error_class, row.error) = (Some(*class), Some(why.clone())),
                None => {}
            }
        }
    }
    row
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The keys column: which keys it accepts (`next+current`, `current`, `next`, `none`), `-` when
/// none was asked about.
pub fn keys_word(keys: &[KeyVerdict]) -> String {
    if keys.is_empty() {
        return "-".into();
    }
    let accepted: Vec<String> = [KeyRole::Next, KeyRole::Current]
        .iter()
        .filter(|role| keys.iter().any(|k| k.role == **role && k.accepted))
        .map(ToString::to_string)
        .collect();
    if accepted.is_empty() { "none".into() } else { accepted.join("+") }
}
