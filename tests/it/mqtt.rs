//! The MQTT broadcast tier against real mosquitto brokers (password auth and an ACL: only the
//! sender may publish triggers, each mirror only its own ack topic): the daemon and the CLI push,
//! `pushmirror receive` subscribers in-process, signatures checked by OpenSSH's own verifier,
//! a broker restarted mid-push, TLS with client certificates, and two bridged brokers.

use std::path::PathBuf;
use std::time::Duration;

use pushmirror::daemon::status::DaemonStatus;
use pushmirror::daemon::{Control, Daemon};
use pushmirror::push::plan::PushRequest;
use pushmirror::push::report::Report;
use pushmirror::receive::Receiving;
use pushmirror::vocab::clock::Clock;
use pushmirror::vocab::model::{ErrorClass, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::{Bridge, Broker, Spec, TlsFiles};
use crate::common::{Fixture, eventually, row, stdout};

/// The password of user `name` on the test brokers.
fn password(name: &str) -> String {
    format!("{name}-pw")
}

fn users(names: &[&str]) -> Vec<(String, String)> {
    names.iter().map(|n| (n.to_string(), password(n))).collect()
}

/// A broker for the sender (user `sender`) and `mirrors`, with the pushmirror ACL.
fn network(mirrors: &[&str], persistence: bool) -> Option<Broker> {
    let all: Vec<&str> = ["sender"].iter().chain(mirrors).copied().collect();
    Broker::start(Spec {
        users: users(&all),
        acl: Some(crate::broker::pushmirror_acl("sender", mirrors, None)),
        persistence,
        ..Spec::default()
    })
}

/// `tls:` lines of an `mqtt:` section (indented by two).
fn tls_lines(tls: Option<&TlsFiles>) -> String {
    tls.map(|t| {
        format!(
            "  ca_file: {}\n  client_cert: {}\n  client_key: {}\n",
            t.ca.display(),
            t.client_cert.display(),
            t.client_key.display()
        )
    })
    .unwrap_or_default()
}

/// The upstream: its key (`id_up`), `mqtt:` logging in as `sender`, and one file per mirror.
fn upstream(url: &str, tls: Option<&TlsFiles>, mirrors: &[(&str, &str)]) -> (Fixture, String) {
    let f = Fixture::new();
    let key = pushmirror::wire::keys::generate(&f.path("id_up"), "up").unwrap();
    f.secret("secrets/mqtt", &password("sender"));
    f.set_main(&format!(
        "mirrors_dir: mirrors.d\nstate_dir: state\nidentity: id_up\nstatus: {{ listen: 127.0.0.1:0 }}\n\
         mqtt:\n  broker: {url}\n  username: sender\n  password_file: secrets/mqtt\n  client_id: up\n  ack_timeout: 30s\n{}\
         archives:\n  debian:\n    root: archive\n    settle: 100ms\n    poll: 1s\n",
        tls_lines(tls)
    ));
    for (name, yaml) in mirrors {
        f.mirror(name, yaml);
    }
    (f, key.public.to_openssh().unwrap())
}

/// A downstream host subscribed as mirror `name`, trusting `trusted`, whose sync command logs
/// `ARCHIVE STAGE SERIAL` per run.
struct Subscriber {
    dir: tempfile::TempDir,
}

impl Subscriber {
    fn new(url: &str, name: &str, trusted: &str, tls: Option<&TlsFiles>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs.log");
        let command = format!(
            "['/bin/sh', '-c', 'echo \"$PUSHMIRROR_ARCHIVE $PUSHMIRROR_STAGE $PUSHMIRROR_SERIAL\" >> \"$0\"', '{}']",
            runs.display()
        );
        Self::with_command(dir, url, name, trusted, tls, &command)
    }

    /// A subscriber whose sync command is `command` (a YAML flow list).
    fn with_command(
        dir: tempfile::TempDir,
        url: &str,
        name: &str,
        trusted: &str,
        tls: Option<&TlsFiles>,
        command: &str,
    ) -> Self {
        let s = Subscriber { dir };
        let secret = s.dir.path().join("secrets/mqtt");
        pushmirror::demo::write_secret(&secret, &password(name)).unwrap();
        let text = format!(
            "listen: 127.0.0.1:0\nstate_dir: state\nmqtt:\n  broker: {url}\n  username: {name}\n  \
             password_file: secrets/mqtt\n  client_id: {name}\n  trusted_keys: ['{trusted}']\n{}\
             archives:\n  debian:\n    command: {command}\n",
            tls_lines(tls)
        );
        std::fs::write(s.dir.path().join("receive.yaml"), text).unwrap();
        s
    }

    /// Gives the subscriber a key of its own (`identity:`), which signs its acks; its public key.
    fn sign_acks(&self) -> russh::keys::PublicKey {
        let made = pushmirror::wire::keys::generate(&self.dir.path().join("keys/ack"), "m1-acks").unwrap();
        let path = self.dir.path().join("receive.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("  trusted_keys:", "  identity: keys/ack\n  trusted_keys:")).unwrap();
        made.public
    }

    fn runs(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("runs.log")).unwrap_or_default();
        text.lines().map(String::from).collect()
    }

    async fn start(&self) -> Downstream {
        let path: PathBuf = self.dir.path().join("receive.yaml");
        let config = pushmirror::receive::load(&path).unwrap_or_else(|e| panic!("invalid receive.yaml:\n{e}"));
        let shutdown = CancellationToken::new();
        let receiving = pushmirror::receive::start(config, shutdown.clone()).await.unwrap();
        Downstream { receiving, shutdown }
    }
}

struct Downstream {
    receiving: Receiving,
    shutdown: CancellationToken,
}

impl Downstream {
    async fn stop(self) {
        self.shutdown.cancel();
        self.receiving.wait(Duration::ZERO).await.expect("the receiver stopped cleanly");
    }
}

/// Waits until the broker has a subscription of client `id` (its SUBACK in the broker's log).
async fn subscribed(broker: &Broker, id: &str) {
    eventually(&format!("{id} subscribed"), || broker.log().contains(&format!("Sending SUBACK to {id}\n"))).await;
}

/// Starts `sub` (mirror `m1`), pushes `debian` once from the CLI: `m1` acks `ok`, its command
/// ran once.
async fn pushed_to_one(broker: &Broker, f: &Fixture, sub: &Subscriber) {
    let running = sub.start().await;
    subscribed(broker, "m1").await;
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    assert_eq!(row(&report, "m1").outcome, Outcome::Ok, "{}", report.to_table());
    assert_eq!(sub.runs(), ["debian all 2026112501"]);
    running.stop().await;
}

async fn daemon(f: &Fixture) -> (Daemon, CancellationToken) {
    let shutdown = CancellationToken::new();
    let (_reload, rx) = mpsc::unbounded_channel();
    let control = Control { clock: Clock::system(), ..Control::new(shutdown.clone(), rx) };
    let config = pushmirror::config::load(&f.config_path()).unwrap_or_else(|e| panic!("{e}"));
    let daemon = pushmirror::daemon::start(f.config_path(), config, control, Duration::from_secs(5)).await.unwrap();
    (daemon, shutdown)
}

async fn until(daemon: &Daemon, what: &str, cond: impl Fn(&DaemonStatus) -> bool) -> DaemonStatus {
    let mut status = daemon.status.clone();
    let waited = tokio::time::timeout(Duration::from_secs(120), status.wait_for(|s| cond(s))).await.is_ok();
    let now = daemon.status.borrow().clone();
    assert!(waited, "status never showed: {what}\n{now:#?}");
    now
}

fn last_report(s: &DaemonStatus) -> Option<&Report> {
    s.archives[0].last_report.as_ref().filter(|r| r.serial.as_deref() == Some("2"))
}

fn outcome_of(s: &DaemonStatus, mirror: &str) -> Option<Outcome> {
    last_report(s).and_then(|r| r.triggers.iter().find(|t| t.mirror == mirror)).map(|t| t.outcome)
}

/// Daemon → mosquitto → 3 subscribers: each runs its command once and acks, with its duration in
/// the report. The third is down during the push: `pending (no ack)`; when it comes back its
/// persistent session delivers the trigger, it syncs, and its ack turns the row `ok` in `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_subscribers_sync_once_and_ack_and_one_that_was_down_catches_up() {
    let Some(broker) = network(&["m1", "m2", "m3"], false) else { return };
    let url = broker.url();
    let mirrors = [
        ("m1", "mqtt: {}\n"),
        ("m2", "mqtt: {}\n"),
        // Its ack cannot come while it is down: the push reports it pending after 1 s.
        ("m3", "mqtt: { ack_timeout: 1s }\n"),
    ];
    let (f, key) = upstream(&url, None, &mirrors);
    let subscribers: Vec<Subscriber> =
        ["m1", "m2", "m3"].iter().map(|m| Subscriber::new(&url, m, &key, None)).collect();
    let mut running = Vec::new();
    for (s, name) in subscribers.iter().zip(["m1", "m2", "m3"]) {
        running.push(s.start().await);
        subscribed(&broker, name).await;
    }
    // m3 leaves; the broker keeps its session and queues what is published for it.
    running.pop().unwrap().stop().await;

    let (d, shutdown) = daemon(&f).await;
    until(&d, "first version recorded", |s| s.archives[0].pushed_version.is_some()).await;
    f.set_serial("2");
    let s = until(&d, "push of 2 finished", |s| last_report(s).is_some()).await;
    let report = last_report(&s).unwrap();
    for m in ["m1", "m2"] {
        let r = row(report, m);
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
        assert!(r.sync_duration_ms.is_some(), "the ack's duration is in the row: {r:?}");
    }
    assert_eq!(row(report, "m3").outcome, Outcome::Pending, "{report:#?}");
    assert!(report.to_table().contains("pending (no ack)"), "{}", report.to_table());

    let m3 = subscribers[2].start().await;
    until(&d, "m3's late ack in /status", |s| outcome_of(s, "m3") == Some(Outcome::Ok)).await;
    let status: DaemonStatus = reqwest::get(format!("http://{}/status", d.addr)).await.unwrap().json().await.unwrap();
    assert_eq!(outcome_of(&status, "m3"), Some(Outcome::Ok));
    assert!(status.acks.iter().any(|a| a.ack.mirror == "m3" && a.ack.serial.as_deref() == Some("2")));
    for s in &subscribers {
        assert_eq!(s.runs(), ["debian all 2"], "each subscriber synced exactly once");
    }
    shutdown.cancel();
    d.wait().await.unwrap();
    m3.stop().await;
    for r in running {
        r.stop().await;
    }
}

/// What `mosquitto_pub` publishes as the sender: `payload` on the trigger topic, with the given
/// signature property (none when `None`).
fn publish_raw(broker: &Broker, payload: &[u8], signature: Option<&str>) {
    publish_as(broker, "sender", "pushmirror/debian/trigger", payload, signature);
}

/// What `mosquitto_pub` publishes as `user` on `topic`, with the given signature property.
fn publish_as(broker: &Broker, user: &str, topic: &str, payload: &[u8], signature: Option<&str>) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let mut command = broker.client("mosquitto_pub", user, &password(user));
    command.args(["-q", "1", "-t", topic, "-f"]).arg(file.path());
    if let Some(sig) = signature {
        command.args(["-D", "publish", "user-property", pushmirror::wire::mqtt::SIGNATURE_PROPERTY, sig]);
    }
    let out = command.output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn trigger(serial: &str, sent_ms: u64) -> Vec<u8> {
    let message = pushmirror::wire::mqtt::TriggerMessage {
        archive: "debian".into(),
        stage: pushmirror::vocab::model::Stage::All,
        serial: Some(serial.into()),
        sent_at: pushmirror::vocab::model::Timestamp(std::time::UNIX_EPOCH + Duration::from_millis(sent_ms)),
        sender: "up".into(),
        nonce: None,
    };
    serde_json::to_vec(&message).unwrap()
}

/// A trigger signed by another key, a tampered payload, an unsigned one, a replayed and an older
/// one never run the command; the valid ones run once each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_unsigned_and_replayed_triggers_never_run() {
    let Some(broker) = network(&["m1"], false) else { return };
    let dir = tempfile::tempdir().unwrap();
    let up = pushmirror::wire::keys::generate(&dir.path().join("up"), "up").unwrap();
    let other = pushmirror::wire::keys::generate(&dir.path().join("other"), "other").unwrap();
    let key = pushmirror::wire::keys::load_identity(&up.private).unwrap();
    let stranger = pushmirror::wire::keys::load_identity(&other.private).unwrap();
    let sub = Subscriber::new(&broker.url(), "m1", &up.public.to_openssh().unwrap(), None);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let t0 = 1_790_000_000_000;
    let sign = |k, p: &[u8]| pushmirror::wire::mqtt::sign(k, pushmirror::wire::mqtt::Signed::Trigger, p).unwrap();

    let first = trigger("1", t0);
    publish_raw(&broker, &first, Some(&sign(&key, &first)));
    let forged = trigger("2", t0 + 1000);
    publish_raw(&broker, &forged, Some(&sign(&stranger, &forged)));
    let tampered = trigger("3", t0 + 2000);
    let mut changed = tampered.clone();
    let at = changed.len() - 3;
    changed[at] ^= 1;
    publish_raw(&broker, &changed, Some(&sign(&key, &tampered)));
    let unsigned = trigger("4", t0 + 3000);
    publish_raw(&broker, &unsigned, None);
    publish_raw(&broker, &first, Some(&sign(&key, &first)));
    let older = trigger("5", t0 - 1000);
    publish_raw(&broker, &older, Some(&sign(&key, &older)));
    // Bigger than a trigger may be: over the client's maximum packet size the broker does not
    // even send it; under it, the subscriber drops it unread.
    let huge = [b' '; 40 * 1024].iter().chain(&trigger("7", t0 + 4000)).copied().collect::<Vec<u8>>();
    publish_raw(&broker, &huge, Some(&sign(&key, &huge)));
    let big = [b' '; 20 * 1024].iter().chain(&trigger("8", t0 + 4500)).copied().collect::<Vec<u8>>();
    publish_raw(&broker, &big, Some(&sign(&key, &big)));
    let last = trigger("6", t0 + 5000);
    publish_raw(&broker, &last, Some(&sign(&key, &last)));
    // Messages of one topic arrive in order: once the last has run, every other one was judged.
    eventually("the last trigger ran", || sub.runs().contains(&"debian all 6".to_string())).await;
    assert_eq!(sub.runs(), ["debian all 1", "debian all 6"]);
    // Accepted triggers are counted when queued (coalesced ones too): only those two were.
    assert_eq!(running.receiving.status.borrow().archive("debian").unwrap().triggers, 2);
    running.stop().await;
}

/// Subscriber `m1` (not started) trusting an upstream key made for the test; that key, and the
/// directory that holds it.
fn m1_trusting_a_new_key(broker: &Broker) -> (Subscriber, russh::keys::PrivateKey, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let up = pushmirror::wire::keys::generate(&dir.path().join("up"), "up").unwrap();
    let key = pushmirror::wire::keys::load_identity(&up.private).unwrap();
    let sub = Subscriber::new(&broker.url(), "m1", &up.public.to_openssh().unwrap(), None);
    (sub, key, dir)
}

/// Publishes `payload` as a trigger signed with `key`.
fn publish_bytes_signed(broker: &Broker, key: &russh::keys::PrivateKey, payload: &[u8]) {
    let signature = pushmirror::wire::mqtt::sign(key, pushmirror::wire::mqtt::Signed::Trigger, payload).unwrap();
    publish_raw(broker, payload, Some(&signature));
}

/// Milliseconds since the epoch, `offset` seconds from now (the wire's precision).
fn ms_from_now(offset: i64) -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    (now + offset * 1000) as u64
}

/// Publishes `trigger(serial, sent_ms)` signed with `key`, as the sender.
fn publish_signed(broker: &Broker, key: &russh::keys::PrivateKey, serial: &str, sent_ms: u64) {
    publish_bytes_signed(broker, key, &trigger(serial, sent_ms));
}

/// A correctly signed trigger stamped 10 minutes ahead of the subscriber's clock (an upstream
/// clock that ran fast, then was corrected) runs nothing, and the correct trigger after it runs.
/// It used to be accepted, and every correct trigger after it was dropped as "not newer" for
/// those 10 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_dated_trigger_runs_nothing_and_blocks_no_later_one() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (sub, key, _dir) = m1_trusting_a_new_key(&broker);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    publish_signed(&broker, &key, "F", ms_from_now(600));
    publish_signed(&broker, &key, "2", ms_from_now(0));
    eventually("a trigger ran", || !sub.runs().is_empty()).await;
    assert_eq!(sub.runs(), ["debian all 2"]);
    running.stop().await;
}

/// A high-water mark 10 minutes in the future, left in the state directory by a version that
/// accepted a future-dated trigger, does not block the triggers of the present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_high_water_mark_from_a_fast_clock_blocks_nothing() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (sub, key, _dir) = m1_trusting_a_new_key(&broker);
    let accepted = sub.dir.path().join("state/mqtt-accepted");
    std::fs::create_dir_all(&accepted).unwrap();
    let future = pushmirror::vocab::model::Timestamp(std::time::UNIX_EPOCH + Duration::from_millis(ms_from_now(600)));
    std::fs::write(accepted.join("debian.json"), serde_json::to_vec(&future).unwrap()).unwrap();
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    publish_signed(&broker, &key, "2", ms_from_now(0));
    eventually("the trigger ran", || !sub.runs().is_empty()).await;
    assert_eq!(sub.runs(), ["debian all 2"]);
    running.stop().await;
}

/// A trigger with a nonce, as the README's wire format has it.
fn trigger_with_nonce(serial: &str, sent_ms: u64, nonce: &str) -> Vec<u8> {
    trigger_json("debian", serial, sent_ms, nonce)
}

/// Replay protection by nonce, not by the newest `sent_at` alone: a trigger stamped 90 s ahead
/// (within `max_skew`: accepted) does not block the correct one sent after the upstream's clock
/// was corrected; the same trigger again (a repeat or a replay) and one older than the window run
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_runs_once_and_a_slightly_fast_trigger_blocks_nothing() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (sub, key, _dir) = m1_trusting_a_new_key(&broker);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let publish = |payload: &[u8]| publish_bytes_signed(&broker, &key, payload);
    let nonce = |n: u8| format!("{n:032x}");
    let fast = trigger_with_nonce("1", ms_from_now(90), &nonce(1));
    publish(&fast);
    eventually("the fast trigger ran", || sub.runs().len() == 1).await;
    publish(&trigger_with_nonce("2", ms_from_now(0), &nonce(2)));
    eventually("the correct trigger ran", || sub.runs().len() == 2).await;
    publish(&fast);
    publish(&trigger_with_nonce("3", ms_from_now(-300), &nonce(3)));
    publish(&trigger_with_nonce("4", ms_from_now(1), &nonce(4)));
    eventually("the last trigger ran", || sub.runs().contains(&"debian all 4".to_string())).await;
    assert_eq!(sub.runs(), ["debian all 1", "debian all 2", "debian all 4"]);
    // Counted when queued: the repeat and the stale one were not, even coalesced.
    assert_eq!(running.receiving.status.borrow().archive("debian").unwrap().triggers, 3);
    running.stop().await;
}

/// The upstream's clock runs 10 minutes fast: the subscriber refuses its trigger and says why in
/// its ack, so the report row is a failure naming the clock (it used to be `ok`, and the next
/// push's row `pending (no ack)`, exit 0). Once the clock is right, the next push is `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_from_a_fast_upstream_clock_is_refused_and_the_row_says_why() {
    let Some(broker) = network(&["m1"], false) else { return };
    let url = broker.url();
    let (f, key) = upstream(&url, None, &[("m1", "mqtt: { ack_timeout: 5s }\n")]);
    let sub = Subscriber::new(&url, "m1", &key, None);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let request = || PushRequest { archive: Some("debian".into()), ..PushRequest::default() };
    let fast = f.push_with_clock(request(), Clock::ahead_of_os(Duration::from_secs(600))).await;
    let r = row(&fast, "m1");
    assert_eq!((r.outcome, r.error_class), (Outcome::Failed, Some(ErrorClass::Refused)), "{}", fast.to_table());
    assert_eq!(r.attempts, 1, "a refusal is not retried");
    let table = fast.to_table();
    assert!(table.contains("failed (refused)") && table.contains("ahead of the subscriber's clock"), "{table}");
    assert!(sub.runs().is_empty(), "{:?}", sub.runs());
    let report = f.push(request()).await;
    assert_eq!(row(&report, "m1").outcome, Outcome::Ok, "{}", report.to_table());
    assert_eq!(sub.runs(), ["debian all 2026112501"]);
    running.stop().await;
}

/// A trigger as JSON, with every field given (another archive's, say).
fn trigger_json(archive: &str, serial: &str, sent_ms: u64, nonce: &str) -> Vec<u8> {
    let sent_at = pushmirror::vocab::model::Timestamp(std::time::UNIX_EPOCH + Duration::from_millis(sent_ms));
    let message = serde_json::json!({
        "archive": archive, "stage": "all", "serial": serial, "sent_at": sent_at, "sender": "up", "nonce": nonce,
    });
    serde_json::to_vec(&message).unwrap()
}

/// Triggers signed by the upstream's key and refused for what they say are acknowledged
/// `refused` with a machine-readable reason (and how far their date was off) on the ack topic of
/// the archive they name, where their sender waits; a repeat of an accepted trigger (what the
/// retained copy is) and an unsigned one are not acknowledged at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_triggers_are_acknowledged_with_their_reason() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (sub, key, _dir) = m1_trusting_a_new_key(&broker);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let acks = crate::broker::subscribe_many(&broker, "sender", &password("sender"), "pushmirror/+/ack/m1", 5);
    let publish = |payload: &[u8]| publish_bytes_signed(&broker, &key, payload);
    let nonce = |n: u8| format!("{n:032x}");
    publish(&trigger_json("debian", "F", ms_from_now(600), &nonce(1)));
    publish(&trigger_json("ubuntu", "U", ms_from_now(0), &nonce(2)));
    let good = trigger_json("debian", "2", ms_from_now(0), &nonce(3));
    publish(&good);
    eventually("the good trigger ran", || sub.runs().len() == 1).await;
    publish(&good);
    publish_raw(&broker, &trigger_json("debian", "X", ms_from_now(1), &nonce(4)), None);
    publish(&trigger_json("debian", "S", ms_from_now(-600), &nonce(5)));
    let mut got: Vec<(String, String, String, String)> = acks
        .recv_all()
        .iter()
        .map(|(payload, _)| {
            let ack: serde_json::Value = serde_json::from_str(payload).unwrap();
            let field = |k: &str| ack[k].as_str().unwrap_or("").to_string();
            let off = ack["off_by_ms"].as_u64().map_or("".into(), |ms| ((ms + 30_000) / 60_000).to_string());
            (field("serial"), field("state"), field("reason"), off)
        })
        .collect();
    got.sort();
    let want = [
        ("2", "ok", "", ""),
        ("2", "started", "", ""),
        ("F", "refused", "future", "10"),
        ("S", "refused", "stale", "10"),
        ("U", "refused", "archive", ""),
    ];
    let want: Vec<(String, String, String, String)> =
        want.iter().map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string())).collect();
    assert_eq!(got, want);
    assert_eq!(sub.runs(), ["debian all 2"]);
    running.stop().await;
}

/// With `identity:`, a subscriber signs each ack as the upstream signs a trigger: an SSHSIG over
/// exactly its bytes, namespace `pushmirror-ack`, in the `pushmirror-sshsig` property. Its key
/// verifies it, and so does OpenSSH's `ssh-keygen -Y verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_signed_with_the_subscribers_identity() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (sub, key, dir) = m1_trusting_a_new_key(&broker);
    let ack_key = sub.sign_acks();
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let acks = crate::broker::subscribe_many(&broker, "sender", &password("sender"), "pushmirror/debian/ack/m1", 2);
    publish_signed(&broker, &key, "2", ms_from_now(0));
    let acks = acks.recv_all();
    for (payload, properties) in &acks {
        let signatures: Vec<&str> = properties
            .iter()
            .filter(|(k, _)| k == pushmirror::wire::mqtt::SIGNATURE_PROPERTY)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(signatures.len(), 1, "{payload} {properties:?}");
        let verified = pushmirror::wire::mqtt::verify(
            pushmirror::wire::mqtt::Signed::Ack,
            payload.as_bytes(),
            Some(signatures[0]),
            std::slice::from_ref(&ack_key),
        );
        assert_eq!(verified, Ok(()), "{payload}");
    }
    running.stop().await;

    let Some(keygen) = ssh_keygen() else { return };
    let (payload, properties) = &acks[0];
    let (sig, signers) = (dir.path().join("ack.sig"), dir.path().join("allowed_signers"));
    std::fs::write(&sig, pushmirror::wire::mqtt::armor(&properties[0].1)).unwrap();
    std::fs::write(&signers, format!("m1 namespaces=\"pushmirror-ack\" {}\n", ack_key.to_openssh().unwrap())).unwrap();
    let mut child = std::process::Command::new(&keygen)
        .args(["-Y", "verify", "-I", "m1", "-n", "pushmirror-ack", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(&sig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), payload.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("Good \"pushmirror-ack\" signature for m1"), "{said}");
}

/// `mqtt.require_signed_acks: true`, each mirror file naming its subscriber's `ack_key`: acks
/// published on a mirror's ack topic by anyone who may write there (its own login, a bridge)
/// count only when signed with that mirror's key. An unsigned `ok` (it used to make the row
/// `ok`), one signed with the other mirror's key and one signed with the right key as a trigger
/// (another namespace) leave the row pending; the real subscriber's signed acks make it `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_acks_signed_with_the_mirrors_ack_key_count_when_required() {
    use pushmirror::wire::mqtt::{Signed, sign};
    let Some(broker) = network(&["m1"], false) else { return };
    let url = broker.url();
    let keys = tempfile::tempdir().unwrap();
    let m2 = pushmirror::wire::keys::generate(&keys.path().join("m2"), "m2-acks").unwrap();
    let other = pushmirror::wire::keys::load_identity(&m2.private).unwrap();
    let (f, key) = upstream(&url, None, &[]);
    let main = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        main.replace("  ack_timeout: 30s\n", "  ack_timeout: 30s\n  require_signed_acks: true\n"),
    )
    .unwrap();
    let sub = Subscriber::new(&url, "m1", &key, None);
    let ack_key = sub.sign_acks();
    let right = pushmirror::wire::keys::load_identity(&sub.dir.path().join("keys/ack")).unwrap();
    let mirror = |key: &russh::keys::PublicKey| {
        format!("mqtt: {{ ack_timeout: 3s, ack_key: '{}' }}\n", key.to_openssh().unwrap())
    };
    f.mirror("m1", &mirror(&ack_key));
    // Another registered mirror: its subscriber's key is trusted for its acks, not for m1's.
    f.mirror("m2", &mirror(&m2.public));
    let request = || PushRequest { archive: Some("debian".into()), ..PushRequest::default() };

    // While the push waits for m1's ack, acks that m1's login (or anyone who may write its ack
    // topic) publishes: each names the trigger's `sent_at`, as the real subscriber's would.
    let forge = || {
        let (trigger, _) = crate::broker::sub_one(&broker, "m1", &password("m1"), "pushmirror/debian/trigger");
        let trigger: pushmirror::wire::mqtt::TriggerMessage = serde_json::from_str(&trigger).unwrap();
        let ack = serde_json::to_vec(&serde_json::json!({
            "mirror": "m1", "serial": trigger.serial, "state": "ok", "exit_code": 0, "duration_ms": 1,
            "stage": trigger.stage, "sent_at": trigger.sent_at,
        }))
        .unwrap();
        let topic = "pushmirror/debian/ack/m1";
        publish_as(&broker, "m1", topic, &ack, None);
        publish_as(&broker, "m1", topic, &ack, Some(&sign(&other, Signed::Ack, &ack).unwrap()));
        publish_as(&broker, "m1", topic, &ack, Some(&sign(&right, Signed::Trigger, &ack).unwrap()));
    };
    let report = std::thread::scope(|s| {
        let forger = s.spawn(forge);
        let report = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f.push(request())));
        forger.join().unwrap();
        report
    });
    let r = row(&report, "m1");
    assert_eq!(r.outcome, Outcome::Pending, "{}", report.to_table());

    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let report = f.push(request()).await;
    assert_eq!(row(&report, "m1").outcome, Outcome::Ok, "{}", report.to_table());
    assert_eq!(sub.runs().last().map(String::as_str), Some("debian all 2026112501"));
    running.stop().await;
}

/// Whether `user` may publish on `topic`: mosquitto answers a publish its ACL refuses with a
/// PUBACK "not authorised" (QoS 1, MQTT 5), which `mosquitto_pub` reports.
fn may_publish(broker: &Broker, user: &str, topic: &str) -> bool {
    let out = broker.client("mosquitto_pub", user, &password(user)).args(["-q", "1", "-t", topic, "-m", "{}"]).output();
    let out = out.unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    match (said.contains("Not authorized"), said.is_empty()) {
        (true, _) => false,
        (false, true) => true,
        (false, false) => panic!("mosquitto_pub said: {said}"),
    }
}

/// The README's mosquitto ACL, as written, against a real mosquitto: least privilege. The
/// upstream publishes triggers and no ack; a mirror only its own ack; the bridge of a region
/// (the ACL on the upstream's broker) only the acks of that region's mirrors, and no trigger.
#[test]
fn the_readme_acl_lets_each_login_publish_only_what_it_must() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = |start: &str| {
        let from = readme.find(start).unwrap_or_else(|| panic!("no `{start}` in the README"));
        readme[from..].split("```").next().unwrap().to_string()
    };
    let acl = block("# /etc/mosquitto/pushmirror.acl\n") + "\n" + &block("# /etc/mosquitto/pushmirror.acl on A");
    let Some(broker) = Broker::start(Spec {
        users: users(&["upstream", "mirror-nat", "mirror-eu1", "bridge-eu"]),
        acl: Some(acl.clone()),
        ..Spec::default()
    }) else {
        return;
    };
    let checks = [
        ("upstream", "pushmirror/debian/trigger", true),
        ("upstream", "pushmirror/debian/ack/mirror-nat", false),
        ("mirror-nat", "pushmirror/debian/ack/mirror-nat", true),
        ("mirror-nat", "pushmirror/debian/ack/mirror-eu1", false),
        ("mirror-nat", "pushmirror/debian/trigger", false),
        ("bridge-eu", "pushmirror/debian/ack/mirror-eu1", true),
        ("bridge-eu", "pushmirror/debian/ack/mirror-nat", false),
        ("bridge-eu", "pushmirror/debian/trigger", false),
    ];
    let wrong: Vec<String> = checks
        .iter()
        .filter(|(user, topic, allowed)| may_publish(&broker, user, topic) != *allowed)
        .map(|(user, topic, allowed)| format!("{user} on {topic}: {}", if *allowed { "refused" } else { "allowed" }))
        .collect();
    assert!(wrong.is_empty(), "the README's ACL:\n{acl}\ngets wrong:\n{}", wrong.join("\n"));
}

/// A trigger the CLI published, read back through the broker with `mosquitto_sub`, verifies with
/// OpenSSH's `ssh-keygen -Y verify -n pushmirror-trigger` once the property is folded back into
/// the armor; the same signature over a changed payload does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_trigger_verifies_with_ssh_keygen() {
    let Some(broker) = network(&["m1"], false) else { return };
    let (f, key) = upstream(&broker.url(), None, &[("m1", "mqtt: { ack_timeout: 1s }\n")]);
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    assert_eq!(row(&report, "m1").outcome, Outcome::Pending, "{}", report.to_table());

    let (payload, properties) = crate::broker::sub_one(&broker, "m1", &password("m1"), "pushmirror/debian/trigger");
    let signatures: Vec<&String> =
        properties.iter().filter(|(k, _)| k == pushmirror::wire::mqtt::SIGNATURE_PROPERTY).map(|(_, v)| v).collect();
    assert_eq!(signatures.len(), 1, "{properties:?}");
    let message: pushmirror::wire::mqtt::TriggerMessage = serde_json::from_str(&payload).unwrap();
    assert_eq!((message.archive.as_str(), message.serial.as_deref()), ("debian", Some("2026112501")));

    let Some(keygen) = ssh_keygen() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (sig, signers) = (dir.path().join("trigger.sig"), dir.path().join("allowed_signers"));
    std::fs::write(&sig, pushmirror::wire::mqtt::armor(signatures[0])).unwrap();
    std::fs::write(&signers, format!("up namespaces=\"pushmirror-trigger\" {key}\n")).unwrap();
    let verify = |data: &[u8]| {
        let mut child = std::process::Command::new(&keygen)
            .args(["-Y", "verify", "-I", "up", "-n", "pushmirror-trigger", "-f"])
            .arg(&signers)
            .arg("-s")
            .arg(&sig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (ok, said) = verify(payload.as_bytes());
    assert!(ok && said.contains("Good \"pushmirror-trigger\" signature for up"), "{said}");
    assert!(!verify(payload.replace("debian", "debiaN").as_bytes()).0);

    // The README's recipe, as written, with Debian's mosquitto_sub (it used to miss `-N`, and
    // its fold step could glue the footer to the last line).
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = readme.split("To verify one with").nth(1).expect("the recipe in the README");
    let recipe = after.split("```sh\n").nth(1).and_then(|r| r.split("```").next()).unwrap();
    let (host, port) = broker
        .url()
        .trim_start_matches("mqtt://")
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let run = |script: &str| {
        std::process::Command::new("bash")
            .args(["-eu", "-c", script])
            .current_dir(dir.path())
            .env("BROKER", &host)
            .env("PORT", &port)
            .env("MQTT_USER", "m1")
            .env("MQTT_PASSWORD", password("m1"))
            .env("UPSTREAM_KEY", &key)
            .output()
            .unwrap()
    };
    let out = run(recipe);
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.contains("Good \"pushmirror-trigger\" signature for upstream"), "{said}");
    let tampered = recipe.replace("< payload", "< <(sed s/debian/debiaN/ payload)");
    assert!(!run(&tampered).status.success(), "a changed payload verifies");
}

/// OpenSSH's ssh-keygen; `None` outside CI when it is not installed.
fn ssh_keygen() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/ssh-keygen");
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "ssh-keygen is required in CI: apt-get install openssh-client");
    eprintln!("ssh-keygen not installed: skipping outside CI");
    None
}

/// The broker goes away before the daemon's push and comes back during its retries (with its
/// persisted sessions): every registered mirror is still triggered once and acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_during_a_daemon_push_loses_nothing() {
    let Some(mut broker) = network(&["m1", "m2"], true) else { return };
    let url = broker.url();
    let quick = "mqtt: {}\ntimeout: 1s\nretries: 100\nbackoff: { initial: 100ms, max: 300ms }\n";
    let (f, key) = upstream(&url, None, &[("m1", quick), ("m2", quick)]);
    let subscribers: Vec<Subscriber> = ["m1", "m2"].iter().map(|m| Subscriber::new(&url, m, &key, None)).collect();
    let mut running = Vec::new();
    for (s, name) in subscribers.iter().zip(["m1", "m2"]) {
        running.push(s.start().await);
        subscribed(&broker, name).await;
    }
    let (d, shutdown) = daemon(&f).await;
    until(&d, "first version recorded", |s| s.archives[0].pushed_version.is_some()).await;
    eventually("the daemon connected", || broker.log().contains("as up (")).await;

    broker.stop();
    f.set_serial("2");
    until(&d, "the push is under way", |s| s.archives[0].push.is_some()).await;
    broker.restart();
    let s = until(&d, "push of 2 finished", |s| last_report(s).is_some()).await;
    let report = last_report(&s).unwrap();
    for m in ["m1", "m2"] {
        assert_eq!(row(report, m).outcome, Outcome::Ok, "{}", report.to_table());
    }
    for s in &subscribers {
        assert_eq!(s.runs(), ["debian all 2"]);
    }
    shutdown.cancel();
    d.wait().await.unwrap();
    for r in running {
        r.stop().await;
    }
}

/// TLS with a test CA, and a broker that requires client certificates (mTLS) of both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_acks_travel_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let tls = crate::broker::test_tls(certs.path());
    let spec = Spec {
        users: users(&["sender", "m1"]),
        acl: Some(crate::broker::pushmirror_acl("sender", &["m1"], None)),
        tls: Some(tls.clone()),
        require_client_cert: true,
        ..Spec::default()
    };
    let Some(broker) = Broker::start(spec) else { return };
    let url = broker.url();
    assert!(url.starts_with("mqtts://localhost:"), "{url}");
    let (f, key) = upstream(&url, Some(&tls), &[("m1", "mqtt: {}\n")]);
    let sub = Subscriber::new(&url, "m1", &key, Some(&tls));
    pushed_to_one(&broker, &f, &sub).await;
}

/// Beyond one broker: the sender on A, the subscribers on B, bridged as the README says —
/// triggers in, acks out, the bridge's login on A allowed to write only the acks of B's mirrors:
/// triggers cross to B, acks back to A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_and_acks_cross_a_bridge() {
    let spec = Spec {
        users: users(&["sender", "bridge"]),
        acl: Some(crate::broker::pushmirror_acl("sender", &[], Some(("bridge", &["m1", "m2"])))),
        ..Spec::default()
    };
    let Some(a) = Broker::start(spec) else { return };
    let bridge = Bridge {
        remote_port: a.port(),
        username: "bridge".into(),
        password: password("bridge"),
        topics: vec!["pushmirror/+/trigger in 1".into(), "pushmirror/+/ack/+ out 1".into()],
    };
    let b_spec = Spec {
        users: users(&["m1", "m2"]),
        acl: Some(crate::broker::pushmirror_acl("nobody", &["m1", "m2"], None)),
        bridge: Some(bridge),
        ..Spec::default()
    };
    let Some(b) = Broker::start(b_spec) else { return };
    b.wait_bridge();
    let (f, key) = upstream(&a.url(), None, &[("m1", "mqtt: {}\n"), ("m2", "mqtt: {}\n")]);
    let subscribers: Vec<Subscriber> = ["m1", "m2"].iter().map(|m| Subscriber::new(&b.url(), m, &key, None)).collect();
    let mut running = Vec::new();
    for (s, name) in subscribers.iter().zip(["m1", "m2"]) {
        running.push(s.start().await);
        subscribed(&b, name).await;
    }
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    for m in ["m1", "m2"] {
        assert_eq!(row(&report, m).outcome, Outcome::Ok, "{}", report.to_table());
    }
    for s in &subscribers {
        assert_eq!(s.runs(), ["debian all 2026112501"]);
    }
    for r in running {
        r.stop().await;
    }
}

/// A staged push over MQTT: stage 2 is published only after every staged mirror acknowledged
/// stage 1 — here m2's stage 1 takes longer, and no stage 2 starts before it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_two_is_published_after_every_stage_one_ack() {
    let Some(broker) = network(&["m1", "m2"], false) else { return };
    let url = broker.url();
    let staged = "mqtt: {}\ntype: staged\n";
    let (f, key) = upstream(&url, None, &[("m1", staged), ("m2", staged)]);
    let shared = tempfile::tempdir().unwrap();
    let log = shared.path().join("stages.log");
    let subscribers: Vec<Subscriber> = ["m1", "m2"]
        .iter()
        .map(|m| {
            let script = "echo \"$1 $PUSHMIRROR_STAGE start\" >> \"$0\"; \
                          if [ \"$1 $PUSHMIRROR_STAGE\" = \"m2 stage1\" ]; then sleep 0.3; fi; \
                          echo \"$1 $PUSHMIRROR_STAGE end\" >> \"$0\"";
            let command = format!("['/bin/sh', '-c', '{script}', '{}', '{m}']", log.display());
            Subscriber::with_command(tempfile::tempdir().unwrap(), &url, m, &key, None, &command)
        })
        .collect();
    let mut running = Vec::new();
    for (s, name) in subscribers.iter().zip(["m1", "m2"]) {
        running.push(s.start().await);
        subscribed(&broker, name).await;
    }
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    let rows: Vec<(String, String)> =
        report.triggers.iter().map(|t| (format!("{} {}", t.mirror, t.stage), t.outcome.to_string())).collect();
    for want in ["m1 stage1", "m1 stage2", "m2 stage1", "m2 stage2"] {
        assert!(rows.contains(&(want.to_string(), "ok".to_string())), "{}", report.to_table());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    let first_stage2 = lines.iter().position(|l| l.contains("stage2")).unwrap();
    let last_stage1 = lines.iter().rposition(|l| l.contains("stage1 end")).unwrap();
    assert!(last_stage1 < first_stage2, "a stage 2 ran before every stage 1 ended: {lines:?}");
    assert_eq!(lines.len(), 8, "{lines:?}");
    for r in running {
        r.stop().await;
    }
}

/// A broker that is down at push time: every MQTT mirror fails `connect`, naming the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_fails_every_mqtt_mirror_as_connect() {
    let Some(mut broker) = network(&["m1", "m2"], false) else { return };
    let quick = "mqtt: {}\ntimeout: 1s\nretries: 0\n";
    let (f, _) = upstream(&broker.url(), None, &[("m1", quick), ("m2", quick)]);
    broker.stop();
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    for m in ["m1", "m2"] {
        let r = row(&report, m);
        assert_eq!((r.outcome, r.error_class), (Outcome::Failed, Some(ErrorClass::Connect)), "{}", report.to_table());
        assert!(r.error.as_deref().unwrap().contains(&broker.url()), "{r:?}");
    }
}

/// Mistakes in `mqtt:` (main file, mirror files, receive's file) are reported with file, line and
/// field, all at once, and never print the broker password.
#[test]
fn mqtt_config_mistakes_name_file_line_and_field() {
    let f = Fixture::new();
    pushmirror::wire::keys::generate(&f.path("id_up"), "up").unwrap();
    f.secret("secrets/mqtt", "s3cret-pw");
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\nidentity: id_up\nmqtt:\n  broker: mqtt://u:s3cret-pw@b.example\n  \
         password_file: secrets/mqtt\n  ca_file: missing.pem\n  topic_prefix: 'a/#'\n  ack_timout: 1m\n\
         archives:\n  debian:\n    root: archive\n",
    );
    f.mirror("m1", "mqtt: { topic: 'x/+/trigger', ack_timeout: 0s }\n");
    f.mirror("m2", "mqtt: {}\nhttp: { url: 'http://127.0.0.1:9/' }\n");
    f.mirror("m3", "mqtt: {}\ntype: mhop\n");
    f.mirror("m4", "mqtt: {}\n");
    f.mirror("m5", "mqtt: {}\ntype: staged\n");
    let errors = pushmirror::config::load(&f.config_path()).unwrap_err().to_string();
    for want in [
        "pushmirror.yaml:5:3: mqtt.broker: no credentials in the URL: use `username:` and `password_file:`",
        "pushmirror.yaml:6:3: mqtt.password_file: a password needs a `username:`",
        "pushmirror.yaml:7:3: mqtt.ca_file: cannot read",
        "pushmirror.yaml:8:3: mqtt.topic_prefix: invalid topic prefix `a/#`",
        "pushmirror.yaml:9:3: mqtt.ack_timout: unknown field; did you mean `ack_timeout`?",
        "m1.yaml:1:9: mqtt.topic: invalid topic `x/+/trigger`",
        "m1.yaml:1:31: mqtt.ack_timeout: duration `0s` must be greater than zero",
        "m2.yaml:1:1: mqtt: a mirror has one of `ssh:`, `http:` or `mqtt:`, not two",
        "m3.yaml:2:1: type: `sync:mhop` has no place in an MQTT trigger: use `staged`",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
    assert!(!errors.contains("s3cret-pw"), "the password was printed:\n{errors}");
    assert!(!errors.contains("needs the broadcast tier's broker"), "reported twice:\n{errors}");

    let r = tempfile::tempdir().unwrap();
    std::fs::write(
        r.path().join("receive.yaml"),
        "mqtt:\n  broker: mqtt://b.example\n  trusted_keys: ['ssh-ed25519 nonsense']\n  archives: [ubuntu]\n\
         archives:\n  debian:\n    command: ['/bin/true']\n",
    )
    .unwrap();
    let errors = pushmirror::receive::load(&r.path().join("receive.yaml")).unwrap_err().to_string();
    for want in [
        "receive.yaml:1:1: mqtt.mirror: missing: this mirror's name",
        "receive.yaml:3:3: mqtt.trusted_keys:",
        "receive.yaml:4:3: mqtt.archives: `ubuntu` is not one of the archives configured under `archives:`",
        "receive.yaml:4:3: mqtt.archives: archive `debian` has no HTTP credentials and is not listed here",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
}

/// With `mqtt.require_signed_acks`, every MQTT mirror file must name its subscriber's `ack_key`;
/// a key that does not parse is named at its field, with or without the requirement.
#[test]
fn required_signed_acks_need_each_mirrors_ack_key() {
    let (f, key) = upstream("mqtt://127.0.0.1:1", None, &[("m1", "mqtt: {}\n"), ("m2", "mqtt:\n")]);
    f.mirror("m3", &format!("mqtt: {{ ack_key: '{key}' }}\n"));
    f.mirror("m4", "mqtt: { ack_key: 'ssh-ed25519 nonsense' }\n");
    let errors = pushmirror::config::load(&f.config_path()).unwrap_err().to_string();
    assert!(errors.contains("m4.yaml:1:9: mqtt.ack_key: not an OpenSSH public key"), "{errors}");
    assert!(!errors.contains("m1.yaml") && !errors.contains("m3.yaml"), "not required: {errors}");
    let main = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        main.replace("  ack_timeout: 30s\n", "  ack_timeout: 30s\n  require_signed_acks: true\n"),
    )
    .unwrap();
    let errors = pushmirror::config::load(&f.config_path()).unwrap_err().to_string();
    for want in [
        "m1.yaml:1:1: mqtt.ack_key: missing `ack_key`: the main file sets `mqtt.require_signed_acks`",
        "m2.yaml:1:1: mqtt: missing `ack_key`",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
    assert!(!errors.contains("m3.yaml"), "{errors}");
}

/// MQTT mirrors on one trigger topic must share their type and rate limit (each gets every
/// trigger on it: a deferred send for one is a new trigger for all, which the soak caught as
/// duplicates).
#[test]
fn mqtt_mirrors_on_one_topic_must_share_their_type_and_rate_limit() {
    let (f, _) = upstream("mqtt://127.0.0.1:1", None, &[("a", "mqtt: {}\n"), ("b", "mqtt: {}\ntype: staged\n")]);
    f.mirror("c", "mqtt: { topic: pushmirror/debian-staged/trigger }\ntype: staged\nrate_limit: 1/30s\n");
    f.mirror("d", "mqtt: {}\nrate_limit: 1/30s\n");
    let errors = pushmirror::config::load(&f.config_path()).unwrap_err().to_string();
    assert!(
        errors.contains("b.yaml:1:1: type: MQTT mirrors on one trigger topic (pushmirror/debian/trigger) get every trigger on it: this one needs `type: all` of a"),
        "{errors}"
    );
    assert!(
        errors.contains("d.yaml:1:1: rate_limit: MQTT mirrors on one trigger topic (pushmirror/debian/trigger) get every trigger on it: this one needs no `rate_limit` of a"),
        "{errors}"
    );
    assert!(!errors.contains("c.yaml"), "its own topic: {errors}");
}

/// A mirror with a trigger topic of its own (`mqtt: { topic }` upstream, `topics:` in receive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_on_its_own_topic_gets_its_trigger_there() {
    let Some(broker) = network(&["m1"], false) else { return };
    let url = broker.url();
    let (f, key) = upstream(&url, None, &[("m1", "mqtt: { topic: pushmirror/debian-eu/trigger }\n")]);
    let sub = Subscriber::new(&url, "m1", &key, None);
    let path = sub.dir.path().join("receive.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("  trusted_keys:", "  topics: { debian: pushmirror/debian-eu/trigger }\n  trusted_keys:");
    std::fs::write(&path, text).unwrap();
    pushed_to_one(&broker, &f, &sub).await;
}

/// `receive` stopping while a sync runs: it takes no new trigger but lets the sync finish within
/// the grace period and still sends its `ok` ack before disconnecting — the push sees `ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_running_at_shutdown_is_still_acknowledged() {
    let Some(broker) = network(&["m1"], false) else { return };
    let url = broker.url();
    let (f, key) = upstream(&url, None, &[("m1", "mqtt: {}\n")]);
    let dir = tempfile::tempdir().unwrap();
    let (log, release) = (dir.path().join("sync.log"), dir.path().join("release"));
    let script = "echo start >> \"$0\"; while [ ! -e \"$1\" ]; do sleep 0.02; done; echo end >> \"$0\"";
    let command = format!("['/bin/sh', '-c', '{script}', '{}', '{}']", log.display(), release.display());
    let sub = Subscriber::with_command(tempfile::tempdir().unwrap(), &url, "m1", &key, None, &command);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let push =
        tokio::spawn(
            async move { f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await },
        );
    eventually("the sync started", || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("start"))).await;
    running.shutdown.cancel();
    let stopped = tokio::spawn(running.receiving.wait(Duration::from_secs(60)));
    std::fs::write(&release, "").unwrap();
    stopped.await.unwrap().expect("receive stopped cleanly");
    let report = push.await.unwrap();
    assert_eq!(row(&report, "m1").outcome, Outcome::Ok, "{}", report.to_table());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "start\nend\n");
}

/// `check` counts mirrors per transport, check-only ones too (it used to call MQTT mirrors
/// HTTP: "0 ssh, 3 http" for 2 MQTT + 1 HTTP, and leave check-only ones out).
#[test]
fn check_counts_each_transport_and_the_check_only_mirrors() {
    let (f, _) = upstream(
        "mqtt://127.0.0.1:1",
        None,
        &[
            ("m1", "mqtt: {}\n"),
            ("m2", "mqtt: {}\n"),
            ("h", "http:\n  url: http://127.0.0.1:9/\n"),
            ("w", "check: https://mirror.example.net/debian/\n"),
        ],
    );
    std::fs::create_dir_all(f.path("archive")).unwrap();
    let table = f.cli(&["check"]);
    assert_eq!(table.status.code(), Some(0), "{}", crate::common::stderr(&table));
    assert!(stdout(&table).contains("4 mirror(s) (0 ssh, 1 http, 2 mqtt, 1 check-only)"), "{}", stdout(&table));
    let json: serde_json::Value = serde_json::from_str(&stdout(&f.cli(&["--format", "json", "check"]))).unwrap();
    assert_eq!(json["mirrors"], 4);
    assert_eq!(json["by_kind"], serde_json::json!({ "ssh": 0, "http": 1, "mqtt": 2, "check_only": 1 }));
}

/// A broker that refuses the sender's password: every MQTT mirror fails `auth` after one
/// attempt, at once — a refused login is permanent (it used to be retried until the mirror's
/// whole `timeout` had passed, 1 h here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_broker_login_fails_auth_at_once_without_retries() {
    let Some(broker) = network(&["m1"], false) else { return };
    let patient = "mqtt: {}\ntimeout: 1h\nretries: 3\n";
    let (f, _) = upstream(&broker.url(), None, &[("m1", patient)]);
    f.secret("secrets/mqtt", "not-the-password");
    let report = f.push(PushRequest { archive: Some("debian".into()), ..PushRequest::default() }).await;
    let r = row(&report, "m1");
    assert_eq!((r.outcome, r.error_class, r.attempts), (Outcome::Failed, Some(ErrorClass::Auth), 1), "{r:?}");
    assert!(r.duration_ms < 3_600_000, "waited for the mirror's timeout: {r:?}");
}

/// One scenario through every view of a mirror's state: five mirrors — one ok, one failing, one
/// rate-limited and then sent late, one MQTT mirror whose ack never comes (pending), one
/// check-only mirror serving an old version (behind). `status --check`, `status --format json`,
/// `list --format json`, the daemon's `/status` and `/metrics` must say the same of each, before
/// and after a restart of the daemon. `promtool check metrics` accepts `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_of_every_mirror_agrees_before_and_after_a_restart() {
    use pushmirror::demo::{HttpReceiver, Reply};
    let Some(broker) = network(&["pend"], false) else { return };
    let ok = HttpReceiver::start().await.unwrap();
    let failing = HttpReceiver::builder().reply(Reply::Status(500)).start().await.unwrap();
    let limited = HttpReceiver::start().await.unwrap();
    let copy = HttpReceiver::start().await.unwrap();
    copy.publish(
        "/debian/project/trace/master",
        "Sun Nov  1 08:52:03 UTC 2026\nArchive serial: 2026110101\nDate: Sun, 01 Nov 2026 08:52:03 +0000\n",
    );
    let http = |url: String, extra: &str| format!("http:\n  url: {url}\nretries: 0\n{extra}");
    let (f, _) = upstream(
        &broker.url(),
        None,
        &[
            ("ok", &http(ok.url("/"), "")),
            ("failing", &http(failing.url("/"), "")),
            ("limited", &http(limited.url("/"), "rate_limit: 1/3s\n")),
            ("pend", "mqtt: { ack_timeout: 1s }\n"),
            ("behind", &format!("check: {}\n", copy.url("/debian"))),
        ],
    );
    f.set_serial("1");
    let expected: Vec<(String, String)> =
        [("behind", "behind"), ("failing", "failing"), ("limited", "ok"), ("ok", "ok"), ("pend", "pending")]
            .iter()
            .map(|(m, h)| (m.to_string(), h.to_string()))
            .collect();

    let (d, shutdown) = daemon(&f).await;
    until(&d, "first version recorded", |s| s.archives[0].pushed_version.is_some()).await;
    f.set_serial("2");
    until(&d, "2 pushed", |s| s.archives[0].pushed_version.as_deref() == Some("2")).await;
    f.set_serial("3");
    until(&d, "3 pushed", |s| s.archives[0].pushed_version.as_deref() == Some("3")).await;
    limited.log().wait_for(2).await;
    until(&d, "the deferred trigger sent, the sweep done", |s| s.deferred.is_empty() && !s.freshness.is_empty()).await;
    let check = agree(&f, &d, &expected).await;
    assert_eq!(check.status.code(), Some(2), "one failing mirror is critical");
    shutdown.cancel();
    d.wait().await.unwrap();

    let (d, shutdown) = daemon(&f).await;
    until(&d, "swept again", |s| !s.freshness.is_empty()).await;
    agree(&f, &d, &expected).await;
    shutdown.cancel();
    d.wait().await.unwrap();
}

/// Asserts that every view gives each mirror the `expected` state; returns `status --check`'s
/// output.
async fn agree(f: &Fixture, d: &Daemon, expected: &[(String, String)]) -> std::process::Output {
    let cli = |args: &'static [&'static str]| {
        let config = f.config_path();
        tokio::task::spawn_blocking(move || crate::common::run_bin(&config, args))
    };
    let json = |o: &std::process::Output| serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let pairs = |list: &serde_json::Value, name: &str, state: &str| -> Vec<(String, String)> {
        sorted(
            list.as_array()
                .unwrap()
                .iter()
                .map(|m| (m[name].as_str().unwrap().to_string(), m[state].as_str().unwrap().to_string()))
                .collect(),
        )
    };

    let status = json(&cli(&["--format", "json", "status"]).await.unwrap());
    assert_eq!(pairs(&status["archives"]["debian"]["mirrors"], "mirror", "health"), expected, "status --format json");

    let listed = json(&cli(&["--format", "json", "list"]).await.unwrap());
    let states: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m["states"][0]["health"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(sorted(states), expected, "list --format json");

    let body = reqwest::get(format!("http://{}/status", d.addr)).await.unwrap().bytes().await.unwrap();
    crate::common::assert_valid("docs/status.schema.json", &body);
    let served: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(pairs(&served["archives"][0]["mirrors"], "mirror", "health"), expected, "/status");

    // The page's grid: each row's standing.
    let page = reqwest::get(format!("http://{}/", d.addr)).await.unwrap().text().await.unwrap();
    let from_page: Vec<(String, String)> = page
        .split("<tr data-mirror=\"")
        .skip(1)
        .map(|r| {
            let (name, rest) = r.split_once('"').unwrap();
            let health = rest.trim_start().strip_prefix("data-health=").unwrap().split('>').next().unwrap();
            (name.to_string(), health.to_string())
        })
        .collect();
    assert_eq!(sorted(from_page), expected, "the page");

    let metrics = reqwest::get(format!("http://{}/metrics", d.addr)).await.unwrap();
    let kind = metrics.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let metrics = metrics.text().await.unwrap();
    let mut from_metrics: Vec<(String, String)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("pushmirror_mirror_state{"))
        .filter(|l| l.ends_with("} 1"))
        .map(|l| {
            let label =
                |k: &str| l.split(&format!("{k}=\"")).nth(1).and_then(|v| v.split('"').next()).unwrap().to_string();
            (label("mirror"), label("state"))
        })
        .collect();
    from_metrics.sort();
    assert_eq!(from_metrics, expected, "/metrics:\n{metrics}");
    crate::common::promtool_accepts(&metrics);

    let check = cli(&["status", "--check"]).await.unwrap();
    let text = stdout(&check);
    let (line, perf) = text.lines().next().unwrap().split_once(" | ").expect("perfdata");
    crate::common::assert_perfdata(perf);
    assert_eq!(line, "PUSHMIRROR CRITICAL - 1 failing (failing), 1 pending (pend), 1 behind (behind)", "{text}");
    assert!(perf.starts_with("ok=2;;;0;5 failed=1;;0;0;5 pending=1;;;0;5 deferred=0;;;0;5 behind=1;;;0;5 "), "{perf}");
    let long: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (who, rest) = l.split_once(": ").unwrap();
            (who.trim_start_matches("debian/").to_string(), rest.split(' ').next().unwrap().to_string())
        })
        .collect();
    let not_ok: Vec<(String, String)> = expected.iter().filter(|(_, h)| h != "ok").cloned().collect();
    assert_eq!(sorted(long), not_ok, "the long output");
    let judged = json(&cli(&["--format", "json", "status", "--check"]).await.unwrap());
    assert_eq!((judged["state"].as_str(), judged["counts"]["failed"].as_u64()), (Some("CRITICAL"), Some(1)));

    // A monitoring user with neither the configuration nor a secret: the daemon's answer.
    let url = format!("http://{}", d.addr);
    let remote = tokio::task::spawn_blocking(move || {
        crate::common::run_bin(
            std::path::Path::new("/nonexistent/pushmirror.yaml"),
            &["status", "--check", "--url", &url],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (remote.status.code(), stdout(&remote)),
        (check.status.code(), text.clone()),
        "{}",
        crate::common::stderr(&remote)
    );
    check
}

/// The upstream's OS clock ten minutes fast, through libfaketime (the real binary, its real
/// clock): the subscriber refuses the trigger — nothing runs — and acks why, so the CLI's row is
/// `failed (refused)`; with the clock right, the same push runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_from_an_upstream_whose_clock_runs_fast_is_refused_under_faketime() {
    let Some(broker) = network(&["m1"], false) else { return };
    let url = broker.url();
    let (f, key) = upstream(&url, None, &[("m1", "mqtt: { ack_timeout: 5s }\n")]);
    let sub = Subscriber::new(&url, "m1", &key, None);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let config = f.config_path();
    let push = move |offset: &'static str| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            crate::hardening::at_clock(offset, &config, &["push", "--format", "json", "--no-progress"])
        })
    };
    let Some(fast) = push("+10m").await.unwrap() else { return };
    let fast = crate::hardening::report_of(&fast);
    let r = row(&fast, "m1");
    assert_eq!((r.outcome, r.error_class), (Outcome::Failed, Some(ErrorClass::Refused)), "{}", fast.to_table());
    assert!(r.error.as_deref().unwrap_or("").contains("ahead of the subscriber's clock"), "{r:?}");
    assert!(sub.runs().is_empty(), "{:?}", sub.runs());
    let right = crate::hardening::report_of(&push("+0").await.unwrap().unwrap());
    assert_eq!(row(&right, "m1").outcome, Outcome::Ok, "{}", right.to_table());
    assert_eq!(sub.runs(), ["debian all 2026112501"]);
    running.stop().await;
}

/// SIGTERM while an MQTT trigger cannot be published (the broker is down): the trigger is cut
/// short after the grace period, the push stays due, and the next start publishes it — the
/// subscriber syncs that version exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_trigger_cut_short_by_sigterm_is_published_at_the_next_start() {
    let Some(mut broker) = network(&["m1"], true) else { return };
    let url = broker.url();
    let quick = "mqtt: {}\ntimeout: 1s\nretries: 100\nbackoff: { initial: 100ms, max: 300ms }\n";
    let (f, key) = upstream(&url, None, &[("m1", quick)]);
    let sub = Subscriber::new(&url, "m1", &key, None);
    let running = sub.start().await;
    subscribed(&broker, "m1").await;
    let (d, shutdown) = daemon(&f).await;
    until(&d, "first version recorded", |s| s.archives[0].pushed_version.is_some()).await;
    eventually("the daemon connected", || broker.log().contains("as up (")).await;

    broker.stop();
    f.set_serial("2");
    until(&d, "the push is under way", |s| s.archives[0].push.is_some()).await;
    shutdown.cancel();
    d.wait().await.expect("a clean stop after the grace period");
    assert!(f.path("state/daemon/debian.due").exists(), "the cut-short push must stay due");
    let last = pushmirror::push::report::History::new(&f.path("state"), 10).all().unwrap().pop();
    if let Some(r) = last.filter(|r| r.serial.as_deref() == Some("2")) {
        let m1 = row(&r, "m1");
        assert_eq!((m1.outcome, m1.error_class), (Outcome::Failed, Some(ErrorClass::Interrupted)), "{}", r.to_table());
    }
    assert!(sub.runs().is_empty(), "{:?}", sub.runs());

    broker.restart();
    let (d, shutdown) = daemon(&f).await;
    // (The first report shown is the interrupted one, from the history.)
    until(&d, "the resumed push of 2 delivered to m1", |s| outcome_of(s, "m1") == Some(Outcome::Ok)).await;
    eventually("m1 synced 2", || sub.runs() == ["debian all 2"]).await;
    eventually("nothing due", || !f.path("state/daemon/debian.due").exists()).await;
    shutdown.cancel();
    d.wait().await.unwrap();
    running.stop().await;
    assert_eq!(sub.runs(), ["debian all 2"], "synced exactly once");
}
