//! The `Trigger` interface between the dispatch engine and the transports, and the protocol
//! values a trigger carries.
//!
//! Dispatch knows only [`Trigger`]: one attempt at one mirror, returning [`Delivered`] or an
//! [`AttemptError`] that says whether retrying can help. Transports own their timeouts because
//! their meaning differs (an SSH command still running at `timeout` counts as delivered).

pub mod http;
pub mod known_hosts;
pub mod mqtt;
pub mod net;
pub mod ssh;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OwnedSemaphorePermit;

use crate::config::{Config, HttpMethod, Mirror, Transport};
use crate::vocab::clock::Clock;
use crate::vocab::model::{ErrorClass, KeyVerdict, Stage};

/// What a transport knows of a mirror: where it is, what to say and how long to wait. Retries,
/// backoff and rate limits are the engine's, and out of a transport's reach.
#[derive(Debug, Clone, Copy)]
pub struct Downstream<'a> {
    /// The mirror's name (logs and messages).
    pub name: &'a str,
    /// How to reach it.
    pub transport: &'a Transport,
    /// Its own command template, instead of the ftpsync words.
    pub command: Option<&'a str>,
    /// Connect/answer timeout of one attempt.
    pub timeout: Duration,
    /// How long to wait for its sync, when waited for.
    pub sync_timeout: Duration,
    /// Wait for the remote sync to end (stage 1 always waits).
    pub wait_for_sync: bool,
    /// A remote exit code that means "busy, re-run queued": delivered.
    pub busy_exit: Option<i32>,
    /// The private key an SSH trigger authenticates with.
    pub identity: Option<&'a Path>,
    /// The key replacing it during a rotation: tried first.
    pub next_identity: Option<&'a Path>,
    /// The local address to bind before connecting; else the routing table picks.
    pub source_address: Option<IpAddr>,
}

impl<'a> Downstream<'a> {
    /// The transport's view of `mirror` when it is sent a trigger of `archive`: its sender
    /// (key and source address) is the one configured for that archive.
    pub fn of(mirror: &'a Mirror, archive: &str) -> Self {
        let sender = mirror.sender(archive);
        Downstream {
            identity: sender.identity.as_deref(),
            next_identity: sender.next_identity.as_deref(),
            source_address: sender.source_address,
            name: &mirror.name,
            transport: &mirror.transport,
            command: mirror.command.as_deref(),
            timeout: mirror.timeout,
            sync_timeout: mirror.sync_timeout,
            wait_for_sync: mirror.wait_for_sync,
            busy_exit: mirror.busy_exit,
        }
    }
}

/// One trigger, as a transport sees it.
#[derive(Debug, Clone, Copy)]
pub struct TriggerRequest<'a> {
    /// The mirror to trigger.
    pub mirror: Downstream<'a>,
    /// The archive to sync.
    pub archive: &'a str,
    /// Which stage.
    pub stage: Stage,
    /// The archive's serial, when known.
    pub serial: Option<&'a str>,
    /// Tell the downstream it is a hub in a multi-hop push (`sync:mhop`); see
    /// [`crate::push::plan::part_of`] for when.
    pub mhop: bool,
    /// Which push of this process it belongs to: the MQTT transport publishes once per push and
    /// stage, whatever the number of mirrors and retries.
    pub push: u64,
}

impl TriggerRequest<'_> {
    /// The ftpsync command string byte for byte as archvsync's runmirrors sends it:
    /// `" sync:archive:debian sync:all"`, with ` sync:mhop` before the stage when
    /// [`TriggerRequest::mhop`]; or the mirror's own `command:` template. The leading space is
    /// runmirrors' (ftpsync ignores it), kept because downstream wrappers compare
    /// `$SSH_ORIGINAL_COMMAND` with the exact string.
    pub fn command_string(&self) -> String {
        if let Some(template) = self.mirror.command {
            return self.substitute(template);
        }
        let mhop = if self.mhop { " sync:mhop" } else { "" };
        format!(" sync:archive:{}{} sync:{}", self.archive, mhop, self.stage)
    }

    /// Replaces `{archive}`, `{stage}` and `{serial}` in `template`.
    pub fn substitute(&self, template: &str) -> String {
        self.placeholders().iter().fold(template.to_string(), |text, (name, value)| text.replace(name, value))
    }

    /// `{archive}`, `{stage}` and `{serial}` replaced in a URL's path and query (nowhere else),
    /// each value percent-encoded (a serial is whatever the trace file said). The URL parser has
    /// already encoded the braces of the path (`%7Bserial%7D`), so both spellings are replaced. A
    /// value of `.` or `..` is refused: in a path it would move the request to another resource.
    pub fn substitute_url(&self, url: &reqwest::Url) -> Result<reqwest::Url, String> {
        // Most URLs name no placeholder: nothing to build per trigger.
        let templated = |t: &str| t.contains('{') || t.contains("%7B") || t.contains("%7b");
        if !templated(url.path()) && !url.query().is_some_and(templated) {
            return Ok(url.clone());
        }
        let placeholders = self.placeholders();
        let replace = |text: &str| {
            placeholders.iter().fold(text.to_string(), |text, (name, value)| {
                let encoded = percent_encoding::utf8_percent_encode(value, URL_VALUE).to_string();
                let braced = format!("%7B{}%7D", &name[1..name.len() - 1]);
                text.replace(name, &encoded).replace(&braced, &encoded)
            })
        };
        let mut out = url.clone();
        let path = replace(url.path());
        let query = url.query().map(replace);
        if path == url.path() && query.as_deref() == url.query() {
            return Ok(out);
        }
        let used = |name: &str| {
            let braced = format!("%7B{}%7D", &name[1..name.len() - 1]);
            [Some(url.path()), url.query()].into_iter().flatten().any(|t| t.contains(name) || t.contains(&braced))
        };
        if let Some((name, value)) = placeholders.iter().find(|(n, v)| (v == "." || v == "..") && used(n)) {
            // Neither URL is named: both may hold a secret token.
            return Err(format!("{name} is `{value}`, which cannot be put into a URL"));
        }
        out.set_path(&path);
        out.set_query(query.as_deref());
        Ok(out)
    }

    fn placeholders(&self) -> [(&'static str, String); 3] {
        [
            ("{archive}", self.archive.to_string()),
            ("{stage}", self.stage.to_string()),
            ("{serial}", self.serial.unwrap_or("").to_string()),
        ]
    }
}

/// What is percent-encoded in a value put into a URL: everything but RFC 3986's unreserved
/// characters.
const URL_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What a successful attempt learned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// "still running", "downstream busy, re-run queued", …
    pub note: Option<String>,
    /// HTTP status of the answer.
    pub http_status: Option<u16>,
    /// Exit code of the remote command, when it ended.
    pub exit_code: Option<i32>,
    /// How long the downstream's sync took, when we waited for it.
    pub sync_duration: Option<Duration>,
    /// Sent, but the downstream has not confirmed it: an MQTT mirror whose ack did not arrive
    /// within its `ack_timeout` (reported `pending`).
    pub pending: bool,
    /// What an SSH downstream said of each key offered, in the order offered.
    pub keys: Vec<KeyVerdict>,
}

/// A failed attempt: what class, what message (never a secret), and whether to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// Error class, as shown in reports.
    pub class: ErrorClass,
    /// Human-readable detail.
    pub message: String,
    /// Whether another attempt may succeed.
    pub transient: bool,
    /// A delay the downstream asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Remote exit code, for `remote-exit`.
    pub exit_code: Option<i32>,
    /// HTTP status, for `http-status`.
    pub http_status: Option<u16>,
    /// What an SSH downstream said of each key offered before the failure, in order.
    pub keys: Vec<KeyVerdict>,
}

impl AttemptError {
    /// A failure worth retrying.
    pub fn transient(class: ErrorClass, message: impl Into<String>) -> Self {
        AttemptError {
            class,
            message: message.into(),
            transient: true,
            retry_after: None,
            exit_code: None,
            http_status: None,
            keys: Vec::new(),
        }
    }

    /// A failure no retry will fix.
    pub fn permanent(class: ErrorClass, message: impl Into<String>) -> Self {
        AttemptError { transient: false, ..AttemptError::transient(class, message) }
    }
}

/// The result of one attempt.
pub type AttemptResult = Result<Delivered, AttemptError>;

/// Per-attempt context a transport may use: it holds the concurrency permit so that a transport
/// waiting for a long remote command can hand the permit back once the command is running.
#[derive(Debug, Default)]
pub struct Attempt {
    permits: Mutex<Vec<OwnedSemaphorePermit>>,
    /// Held until the attempt ends, whatever [`Attempt::release_permit`] does: its socket.
    _socket: Option<OwnedSemaphorePermit>,
}

impl Attempt {
    /// An attempt holding `permits` (the push's concurrency slot, and its host's when bounded)
    /// until it ends or [`Attempt::release_permit`] is called, and `socket` until it ends.
    pub fn new(permits: Vec<OwnedSemaphorePermit>, socket: Option<OwnedSemaphorePermit>) -> Self {
        Attempt { permits: Mutex::new(permits), _socket: socket }
    }

    /// Gives the permits back early (the trigger is delivered, only waiting remains); the socket's
    /// stays.
    pub fn release_permit(&self) {
        self.permits.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// One attempt at delivering a trigger. Implementations bound their own time.
pub trait Trigger: Send + Sync + 'static {
    /// Sends `req` once.
    fn fire(&self, req: TriggerRequest<'_>, attempt: &Attempt) -> impl Future<Output = AttemptResult> + Send;
}

/// Idle HTTP connections kept per host for reuse: `max_per_host`, but all `hosts` together at
/// most a quarter of the open-file limit `open_files` (a push to 10,000 hosts would otherwise
/// leave 10,000 idle sockets behind it for a few seconds). Not none while that budget allows:
/// without reuse every trigger opens a new connection while the last one's is still closing in
/// the background, and the descriptors in use overshoot the bound on sockets.
fn idle_per_host(hosts: usize, max_per_host: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => max_per_host.min(usize::try_from(limit / 4).unwrap_or(usize::MAX) / hosts.max(1)),
        None => max_per_host,
    }
}

/// What a trigger would do, for dry runs: the SSH command or the HTTP method and redacted URL.
pub fn describe(req: &TriggerRequest<'_>) -> String {
    match req.mirror.transport {
        Transport::Ssh(t) => format!("ssh {t} \"{}\"", req.command_string()),
        Transport::Http(t) => {
            let method = match t.method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
            };
            format!("{method} {}", t.redacted())
        }
        Transport::Mqtt(t) => format!("publish {t} \"{}\" and wait for its ack", req.stage),
    }
}

/// Every transport behind one [`Trigger`]: the engine's production transport.
#[derive(Clone)]
pub struct Transports {
    http: http::HttpTransport,
    /// Absent when no mirror uses SSH, so an HTTP-only setup needs no key.
    ssh: Option<ssh::SshTransport>,
    /// The broadcast tier's broker connection, when a mirror uses MQTT.
    mqtt: Option<mqtt::MqttTransport>,
}

impl Transports {
    /// Builds the transports `config` needs: HTTP always (one client per source address its HTTP
    /// mirrors leave from), SSH when a mirror uses it, loading each key its SSH mirrors
    /// authenticate with once.
    pub fn new(config: &Config, session: crate::transport::mqtt::connect::BrokerSession) -> anyhow::Result<Self> {
        Self::with_clock(config, session, Clock::system())
    }

    /// [`Transports::new`] with the wall clock that stamps MQTT triggers' `sent_at` (the OS clock
    /// in production; a fast one in fault tests).
    pub fn with_clock(
        config: &Config,
        session: crate::transport::mqtt::connect::BrokerSession,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let mut identities: BTreeSet<PathBuf> = BTreeSet::new();
        let mut http_sources: BTreeSet<IpAddr> = BTreeSet::new();
        let mut http_hosts: BTreeSet<(String, u16)> = BTreeSet::new();
        let (mut uses_ssh, mut uses_mqtt) = (false, false);
        for mirror in &config.mirrors {
            match &mirror.transport {
                Transport::Http(_) => http_hosts.extend(mirror.endpoint()),
                Transport::Mqtt(_) => uses_mqtt = true,
                Transport::Ssh(_) => {}
            }
            for (archive, sender) in &mirror.senders {
                match &mirror.transport {
                    Transport::Ssh(_) => {
                        uses_ssh = true;
                        let identity = sender.identity.clone().with_context(|| {
                            format!("SSH mirror {} has no `identity:` for archive {archive}", mirror.name)
                        })?;
                        identities.insert(identity);
                        identities.extend(sender.next_identity.clone());
                    }
                    Transport::Http(_) => http_sources.extend(sender.source_address),
                    Transport::Mqtt(_) => {}
                }
            }
        }
        let ssh = match uses_ssh {
            true => Some(
                ssh::SshTransport::new(&identities, config.known_hosts.clone(), config.host_key_policy)
                    .context("loading the SSH identities")?,
            ),
            false => None,
        };
        let mqtt = match uses_mqtt {
            true => {
                Some(mqtt::MqttTransport::new(config, session, clock).context("setting up the MQTT broadcast tier")?)
            }
            false => None,
        };
        let idle = idle_per_host(http_hosts.len(), config.max_per_host, crate::sys::fdlimit::current());
        let http = http::HttpTransport::new(http_sources, idle)?;
        Ok(Transports { http, ssh, mqtt })
    }

    /// The broadcast tier's connection, when a mirror uses MQTT.
    pub fn mqtt(&self) -> Option<&mqtt::MqttTransport> {
        self.mqtt.as_ref()
    }
}

impl Trigger for Transports {
    // The transports' futures are boxed: the engine spawns every trigger of a push at once (they
    // then wait for a permit), and an unboxed SSH handshake future inside each task would reserve
    // its full size up front — about 9 KiB per trigger, 90 MB for 10,000 mirrors.
    async fn fire(&self, req: TriggerRequest<'_>, attempt: &Attempt) -> AttemptResult {
        match (req.mirror.transport, &self.ssh) {
            (Transport::Http(target), _) => Box::pin(self.http.fire(target, req)).await,
            (Transport::Ssh(target), Some(ssh)) => Box::pin(ssh.fire(target, req, attempt)).await,
            (Transport::Ssh(_), None) => {
                Err(AttemptError::permanent(ErrorClass::Other, "no SSH keys loaded: no SSH mirror was configured"))
            }
            (Transport::Mqtt(target), _) => match &self.mqtt {
                Some(mqtt) => Box::pin(mqtt.fire(target, req, attempt)).await,
                None => {
                    Err(AttemptError::permanent(ErrorClass::Other, "no MQTT broker: no MQTT mirror was configured"))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn substituted(url: &str, serial: &str) -> Result<String, String> {
        let mirror = crate::config::Mirror::example("m");
        let req = TriggerRequest {
            mirror: Downstream::of(&mirror, "debian"),
            archive: "debian",
            stage: Stage::Stage1,
            serial: Some(serial),
            mhop: false,
            push: 0,
        };
        req.substitute_url(&url.parse().unwrap()).map(|u| u.to_string())
    }

    #[test]
    fn idle_connections_are_kept_only_while_they_fit_the_descriptors() {
        assert_eq!(idle_per_host(50, 8, Some(1_048_576)), 8);
        assert_eq!(idle_per_host(50, 8, None), 8);
        assert_eq!(idle_per_host(10_000, 8, Some(65_536)), 1, "10,000 idle, under 16,384");
        assert_eq!(idle_per_host(20_000, 8, Some(65_536)), 0, "20,000 would be over 16,384");
        assert_eq!(idle_per_host(32, 8, Some(1024)), 8);
        assert_eq!(idle_per_host(33, 8, Some(1024)), 7);
        assert_eq!(idle_per_host(1, 1000, Some(64)), 16, "one host: the whole budget");
    }

    #[test]
    fn placeholders_are_replaced_in_path_and_query_only() {
        assert_eq!(
            substituted("https://u:{serial}@h.example/{archive}/x?s={serial}&t=%7Bkeep%7D", "2026 1/2").unwrap(),
            "https://u:%7Bserial%7D@h.example/debian/x?s=2026%201%2F2&t=%7Bkeep%7D"
        );
        assert_eq!(substituted("https://h.example/a/{stage}", "1").unwrap(), "https://h.example/a/stage1");
        assert_eq!(substituted("https://h.example/plain?x=1", "..").unwrap(), "https://h.example/plain?x=1");
    }

    #[test]
    fn a_dot_segment_value_is_refused_without_naming_the_url() {
        let err = substituted("https://h.example/s3cret/{serial}/go", "..").unwrap_err();
        assert_eq!(err, "{serial} is `..`, which cannot be put into a URL");
        assert!(substituted("https://h.example/s3cret/?s={serial}", "..").is_err());
        assert!(substituted("https://h.example/{archive}/", "..").is_ok(), "serial not used");
    }
}
