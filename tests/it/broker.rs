//! A private mosquitto broker for MQTT interop tests: its own config, password file, ACL, TLS
//! files, persistence and log in a temp dir, on a free loopback port; never the system's broker.
//! Missing mosquitto skips the test outside CI and fails it under `CI`. Clients are Debian's
//! `mosquitto_pub`/`mosquitto_sub`, speaking MQTT 5.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const TOOLS: [&str; 3] = ["/usr/bin/mosquitto_passwd", "/usr/bin/mosquitto_pub", "/usr/bin/mosquitto_sub"];
/// How long the broker, a bridge or a subscription may take to come up.
const DEADLINE: Duration = Duration::from_secs(10);

/// What the broker is configured with.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Username and password pairs; none allows anonymous clients.
    pub users: Vec<(String, String)>,
    /// The ACL file's contents (see [`pushmirror_acl`]); `None` lets every client use every topic.
    pub acl: Option<String>,
    /// TLS on the listener, which then takes only `mqtts://` clients.
    pub tls: Option<TlsFiles>,
    /// Refuse TLS clients without a certificate signed by the test CA.
    pub require_client_cert: bool,
    /// A bridge from this broker to another one.
    pub bridge: Option<Bridge>,
    /// Keep sessions, subscriptions and queued messages across [`Broker::restart`].
    pub persistence: bool,
}

/// A bridge to the plain (non-TLS) listener of another broker on this machine.
#[derive(Clone, Debug)]
pub struct Bridge {
    /// The other broker's [`Broker::port`].
    pub remote_port: u16,
    /// The bridge's login on the other broker.
    pub username: String,
    pub password: String,
    /// mosquitto `topic` lines: pattern, direction (`in`, `out`, `both`) and QoS, e.g.
    /// `pushmirror/+/trigger in 1`.
    pub topics: Vec<String>,
}

/// PEM files of a test CA, a server certificate for `localhost` and `127.0.0.1`, and a client
/// certificate, all signed by that CA.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A running (or stopped) mosquitto; killed when dropped.
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    spec: Spec,
}

impl Broker {
    /// Starts a broker and waits until it listens. `None` (with a message) when mosquitto is not
    /// installed outside CI; under `CI` that panics instead.
    pub fn start(spec: Spec) -> Option<Broker> {
        if !Path::new(MOSQUITTO).exists() || TOOLS.iter().any(|tool| !Path::new(tool).exists()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "mosquitto is required in CI (apt-get install mosquitto mosquitto-clients)"
            );
            eprintln!("mosquitto not installed: skipping outside CI");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for (i, (user, password)) in spec.users.iter().enumerate() {
            let mut passwd = Command::new("mosquitto_passwd");
            if i == 0 {
                passwd.arg("-c");
            }
            let status = passwd
                .arg("-b")
                .arg(dir.path().join("passwd"))
                .args([user, password])
                .status()
                .expect("mosquitto_passwd");
            assert!(status.success(), "mosquitto_passwd failed for {user}");
        }
        if let Some(acl) = &spec.acl {
            std::fs::write(dir.path().join("acl"), acl).unwrap();
        }
        let mut broker = Broker { child: None, port: 0, dir, spec };
        // The port is free when the kernel hands it out, but another process may take it before
        // mosquitto binds it: then try another.
        for _ in 0..10 {
            broker.port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            std::fs::write(broker.dir.path().join("mosquitto.conf"), broker.config()).unwrap();
            match broker.launch() {
                Ok(()) => return Some(broker),
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("mosquitto did not start:\n{log}"),
            }
        }
        panic!("mosquitto found no free port:\n{}", broker.log());
    }

    /// The loopback port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`, or `mqtts://localhost:PORT` with TLS (the server certificate's
    /// name).
    pub fn url(&self) -> String {
        match self.spec.tls {
            Some(_) => format!("mqtts://localhost:{}", self.port),
            None => format!("mqtt://127.0.0.1:{}", self.port),
        }
    }

    /// The temp dir holding the config, password file, ACL, log and persistence database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the broker with SIGTERM, which saves its persistence database, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
            assert!(status.success(), "kill -TERM mosquitto failed");
            child.wait().unwrap();
        }
    }

    /// Stops the broker if it runs, and starts it again on the same port with the same config
    /// and dir, waiting until it listens.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("mosquitto did not restart on port {}:\n{log}", self.port);
        }
    }

    /// The broker's log (every message type) of all its runs so far.
    pub fn log(&self) -> String {
        let console = std::fs::read_to_string(self.dir().join("console.log")).unwrap_or_default();
        std::fs::read_to_string(self.dir().join("mosquitto.log")).unwrap_or_default() + &console
    }

    /// Whether the bridge is up: connected and, when it takes messages in, subscribed on the
    /// remote broker. Read from the log, so a remote broker that just went away may still count
    /// as connected for a moment.
    pub fn bridge_connected(&self) -> bool {
        let bridge = self.spec.bridge.as_ref().expect("this broker has no bridge");
        let local_id = format!("local.bridge-{}", self.port);
        // A bridge that takes messages in is up once the remote broker granted its subscriptions.
        let takes_in = bridge.topics.iter().any(|t| t.split_whitespace().nth(1).unwrap_or("out") != "out");
        let up = match takes_in {
            false => format!("Received CONNACK on connection {local_id}."),
            true => format!("Received SUBACK from {local_id}"),
        };
        let mut connected = false;
        for line in self.log().lines() {
            if line.ends_with(&up) {
                connected = true;
            } else if line.contains("Connecting bridge")
                || line.contains("Connection Refused")
                || (line.contains(&local_id)
                    && ["closed its connection", "Socket error", "disconnected"].iter().any(|s| line.contains(s)))
            {
                connected = false;
            }
        }
        connected
    }

    /// Waits until [`Broker::bridge_connected`]; panics with the log after 10 s.
    pub fn wait_bridge(&self) {
        let deadline = Instant::now() + DEADLINE;
        while !self.bridge_connected() {
            assert!(Instant::now() < deadline, "the bridge did not connect:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `mosquitto_pub` or `mosquitto_sub` command for this broker as `user`: MQTT 5, its
    /// host and port, and the CA (and client certificate, when required) with TLS.
    pub fn client(&self, program: &str, user: &str, password: &str) -> Command {
        let mut command = Command::new(program);
        command.args(["-V", "mqttv5", "-p", &self.port.to_string(), "-u", user, "-P", password]);
        match &self.spec.tls {
            Some(tls) => {
                command.args(["-h", "localhost", "--cafile"]).arg(&tls.ca);
                if self.spec.require_client_cert {
                    command.arg("--cert").arg(&tls.client_cert).arg("--key").arg(&tls.client_key);
                }
            }
            None => {
                command.args(["-h", "127.0.0.1"]);
            }
        }
        command
    }

    fn config(&self) -> String {
        let dir = self.dir().display();
        // `user root` keeps a broker started by root from switching to user `mosquitto`, who
        // cannot read the temp dir; mosquitto ignores it when not started by root.
        let mut config = format!("user root\nlog_dest file {dir}/mosquitto.log\nlog_type all\n");
        if self.spec.users.is_empty() {
            config += "allow_anonymous true\n";
        } else {
            config += &format!("allow_anonymous false\npassword_file {dir}/passwd\n");
        }
        if self.spec.acl.is_some() {
            config += &format!("acl_file {dir}/acl\n");
        }
        if self.spec.persistence {
            config += &format!("persistence true\npersistence_location {dir}/\nautosave_interval 1\n");
        }
        config += &format!("listener {} 127.0.0.1\n", self.port);
        if let Some(tls) = &self.spec.tls {
            config += &format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {}\n",
                tls.ca.display(),
                tls.server_cert.display(),
                tls.server_key.display(),
                self.spec.require_client_cert
            );
        }
        // The bridge's lines go last: every line after `connection` belongs to it. Its client id
        // names this broker's port, so bridges of several brokers to one remote do not clash.
        if let Some(bridge) = &self.spec.bridge {
            config += &format!(
                "connection pushmirror\naddress 127.0.0.1:{}\nremote_username {}\nremote_password {}\n\
                 remote_clientid bridge-{port}\nlocal_clientid local.bridge-{port}\ncleansession false\n\
                 bridge_protocol_version mqttv50\nrestart_timeout 1 1\nnotifications false\n",
                bridge.remote_port,
                bridge.username,
                bridge.password,
                port = self.port
            );
            for topic in &bridge.topics {
                config += &format!("topic {topic}\n");
            }
        }
        config
    }

    /// Runs mosquitto on the written config and waits until it logs that it runs (its listener
    /// is then bound), or returns the log when it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir().join("mosquitto.log");
        let seen = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        // Errors before the log file is opened (a bad config, a taken port) go to stderr.
        let console = std::fs::File::options().create(true).append(true).open(self.dir().join("console.log")).unwrap();
        let mut child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir().join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(seen..).unwrap_or_default()).into_owned();
            if new.lines().any(|line| line.contains(": mosquitto version ") && line.ends_with(" running")) {
                self.child = Some(child);
                return Ok(());
            }
            if child.try_wait().unwrap().is_some() {
                return Err(self.log());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not running after {DEADLINE:?}:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes a test CA, a server certificate for DNS `localhost` and IP `127.0.0.1`, and a client
/// certificate into `dir` as PEM files.
pub fn test_tls(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "pushmirror test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usage, file: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_path, key_path) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        // Private keys are the owner's alone (pushmirror refuses others, as OpenSSH does).
        std::fs::set_permissions(&key_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (cert_path, key_path)
    };
    let (server_cert, server_key) =
        leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    let (client_cert, client_key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, "client");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    TlsFiles { ca: ca_path, server_cert, server_key, client_cert, client_key }
}

/// The ACL of a pushmirror broker, the README's: `sender` writes `pushmirror/+/trigger` and
/// reads every ack; each mirror reads the triggers and writes only its own
/// `pushmirror/+/ack/<name>`; a bridge `(user, mirrors)` from a regional broker reads the triggers
/// and writes only the acks of the mirrors behind it.
pub fn pushmirror_acl(sender: &str, mirrors: &[&str], bridge: Option<(&str, &[&str])>) -> String {
    let mut acl = format!("user {sender}\ntopic write pushmirror/+/trigger\ntopic read pushmirror/+/ack/+\n");
    for mirror in mirrors {
        acl += &format!("\nuser {mirror}\ntopic read pushmirror/+/trigger\ntopic write pushmirror/+/ack/{mirror}\n");
    }
    if let Some((user, behind)) = bridge {
        acl += &format!("\nuser {user}\ntopic read pushmirror/+/trigger\n");
        for mirror in behind {
            acl += &format!("topic write pushmirror/+/ack/{mirror}\n");
        }
    }
    acl
}

/// A `mosquitto_sub` subscribed to one topic, waiting for a number of messages.
pub struct Sub {
    child: Child,
}

/// Subscribes as `user` and returns once the broker has acknowledged the subscription, so that
/// whatever is published from then on reaches [`Sub::recv`].
pub fn subscribe(broker: &Broker, user: &str, password: &str, topic: &str) -> Sub {
    subscribe_many(broker, user, password, topic, 1)
}

/// [`subscribe`] to `count` messages, which [`Sub::recv_all`] returns.
pub fn subscribe_many(broker: &Broker, user: &str, password: &str, topic: &str, count: usize) -> Sub {
    static SUBSCRIBERS: AtomicU32 = AtomicU32::new(0);
    let id = format!("sub-{}-{}", std::process::id(), SUBSCRIBERS.fetch_add(1, Ordering::Relaxed));
    // `%x` is the payload in hex; `%j` is JSON whose `user-properties` object keeps every user
    // property in order, duplicates too (`%P` joins them with spaces, which is ambiguous).
    let mut child = broker
        .client("mosquitto_sub", user, password)
        .args(["-q", "1", "-C", &count.to_string(), "-W", "10", "-i", &id, "-t", topic, "-F", "%x %j"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    let deadline = Instant::now() + DEADLINE;
    while !broker.log().contains(&format!("Sending SUBACK to {id}\n")) {
        let exited = child.try_wait().unwrap().is_some();
        if exited || Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("mosquitto_sub did not subscribe: {}\n{}", String::from_utf8_lossy(&out.stderr), broker.log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Sub { child }
}

impl Sub {
    /// The message's payload and its MQTT 5 user properties, in order; panics when none came
    /// within 10 s of subscribing.
    pub fn recv(self) -> (String, Vec<(String, String)>) {
        self.recv_all().remove(0)
    }

    /// Every message [`subscribe_many`] waited for, in order; panics when fewer came within 10 s
    /// of subscribing (or of the last one).
    pub fn recv_all(self) -> Vec<(String, Vec<(String, String)>)> {
        let out = self.child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.is_empty() {
            panic!("mosquitto_sub got too few messages: {}{stdout}", String::from_utf8_lossy(&out.stderr));
        }
        let message = |line: &str| {
            let (hex, json) = line.split_once(' ').expect("`%x %j`");
            let payload: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            (String::from_utf8_lossy(&payload).into_owned(), user_properties(json))
        };
        stdout.lines().map(message).collect()
    }
}

/// Reads one message from `topic` as `user`: its payload and MQTT 5 user properties. The
/// message must be retained or published within 10 s; use [`subscribe`] when the test publishes it.
pub fn sub_one(broker: &Broker, user: &str, password: &str, topic: &str) -> (String, Vec<(String, String)>) {
    subscribe(broker, user, password, topic).recv()
}

/// The pairs of the `"user-properties":{…}` object in `mosquitto_sub -F %j` output. Its key
/// cannot occur inside a JSON string, where every `"` is escaped.
fn user_properties(json: &str) -> Vec<(String, String)> {
    let Some((_, rest)) = json.split_once(r#""user-properties":{"#) else {
        return Vec::new();
    };
    let mut chars = rest.chars();
    let mut pairs = Vec::new();
    while let Some(key) = json_string(&mut chars) {
        assert_eq!(chars.next(), Some(':'), "{json}");
        pairs.push((key, json_string(&mut chars).expect(json)));
    }
    pairs
}

/// The next string of a JSON object, skipping the `,` before it; `None` at the object's end.
fn json_string(chars: &mut std::str::Chars) -> Option<String> {
    match chars.next()? {
        ',' => assert_eq!(chars.next(), Some('"')),
        '"' => {}
        _ => return None,
    }
    let mut s = String::new();
    loop {
        match chars.next().expect("unterminated JSON string") {
            '"' => return Some(s),
            '\\' => s.push(match chars.next().unwrap() {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap()
                }
                c => c,
            }),
            c => s.push(c),
        }
    }
}
