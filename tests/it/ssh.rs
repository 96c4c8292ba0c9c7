//! The SSH transport, `keygen` and `hostkeys scan` against in-process russh receivers on
//! 127.0.0.1:0.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::Duration;

use pushmirror::config::Config;
use pushmirror::demo::{Behaviour, ExecLog, SshReceiver};
use pushmirror::operator::hostkeys::ScanStatus;
use pushmirror::push::engine::Options;
use pushmirror::push::plan::PushRequest;
use pushmirror::push::report::Report;
use pushmirror::transport::Transports;
use pushmirror::vocab::clock::Clock;
use pushmirror::vocab::model::{ErrorClass, Outcome};
use pushmirror::wire::keys;
use russh::keys::{PrivateKey, PublicKey};

use crate::common::{Fixture, row, run_bin, spawn_bin, stderr, stdout};

const IDENTITY: &str = "keys/id_ed25519";

/// An installation whose sender key is `keys/id_ed25519`; returns its public key.
fn installation(extra_main: &str) -> (Fixture, PublicKey) {
    let f = Fixture::with_main(&format!("identity: {IDENTITY}\nknown_hosts: known_hosts\n{extra_main}"));
    let key = keys::generate(&f.path(IDENTITY), "pushmirror@test").unwrap();
    (f, key.public)
}

/// A receiver that lets `client` in and behaves as `behaviour`.
async fn receiver(client: &PublicKey, behaviour: Behaviour) -> SshReceiver {
    SshReceiver::builder().authorize(client).behaviour(behaviour).start().await.unwrap()
}

/// An SSH mirror of `rx` with its host key pinned and quick retries.
fn pinned_mirror(f: &Fixture, name: &str, rx: &SshReceiver, extra: &str) {
    f.mirror(
        name,
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: archvsync }}\nhost_key: \"{}\"\nbackoff: {{ initial: 100ms, max: 1s }}\n{extra}",
            rx.port(),
            rx.host_key_line()
        ),
    );
}

/// An SSH mirror of `rx` checked against known_hosts.
fn unpinned_mirror(f: &Fixture, name: &str, rx: &SshReceiver, extra: &str) {
    f.mirror(
        name,
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: archvsync }}\nbackoff: {{ initial: 100ms, max: 1s }}\n{extra}",
            rx.port()
        ),
    );
}

/// Pushes `debian` with the real transports under `config` (which a test may have adjusted).
async fn push_config(config: &Config) -> Report {
    let plan = pushmirror::push::plan_push(config, &PushRequest::default()).unwrap();
    let transports =
        Arc::new(Transports::new(config, pushmirror::transport::mqtt::connect::BrokerSession::Once).unwrap());
    let engine = pushmirror::push::engine(config, transports, Clock::system());
    pushmirror::push::execute(config, &engine, &plan, &Options::default(), "test").await
}

/// `path:line:col` of the `identity:` line of the fixture's main file.
fn identity_at(f: &Fixture) -> String {
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    let line = text.lines().position(|l| l.starts_with("identity:")).unwrap() + 1;
    format!("{}:{line}:1", f.config_path().display())
}

fn random_key() -> PrivateKey {
    pushmirror::demo::ssh::random_host_key().unwrap()
}

#[tokio::test]
async fn a_push_execs_exactly_the_ftpsync_command_once() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Exit(0)).await;
    pinned_mirror(&f, "m", &rx, "");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.exit_code), (Outcome::Ok, 1, Some(0)), "{r:?}");
    assert_eq!(r.note, None);
    let execs = rx.log().execs();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].command, " sync:archive:debian sync:all");
    assert_eq!(execs[0].user, "archvsync");
    assert_eq!(execs[0].auth_algorithm, "ssh-ed25519");
}

#[tokio::test]
async fn a_nonzero_exit_is_a_permanent_remote_exit_with_its_stderr() {
    let (f, client) = installation("");
    let rx = SshReceiver::builder()
        .authorize(&client)
        .behaviour(Behaviour::Exit(3))
        .stderr("ftpsync: no config ftpsync-debian.conf\n")
        .start()
        .await
        .unwrap();
    pinned_mirror(&f, "m", &rx, "retries: 3\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!(
        (r.outcome, r.attempts, r.error_class, r.exit_code),
        (Outcome::Failed, 1, Some(ErrorClass::RemoteExit), Some(3)),
        "{r:?}"
    );
    let error = r.error.as_deref().unwrap();
    assert!(error.contains("3") && error.contains("ftpsync: no config ftpsync-debian.conf"), "{error}");
    assert!(!error.ends_with('\n'), "stderr is trimmed: {error:?}");
    assert_eq!(rx.log().count(), 1);
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_command_still_running_at_timeout_is_delivered() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Hang).await;
    pinned_mirror(&f, "m", &rx, "timeout: 20s\nretries: 3\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.note.as_deref()), (Outcome::Ok, 1, Some("still running")), "{r:?}");
    assert_eq!(r.exit_code, None);
    // The 20 s run from the exec request, so the trigger ends 20 s (of paused time) later.
    assert!((20_000..21_000).contains(&r.duration_ms), "{}", r.duration_ms);
    assert_eq!(rx.log().count(), 1);
}

#[tokio::test]
async fn the_busy_exit_is_delivered_and_not_retried() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Exit(1)).await;
    pinned_mirror(&f, "m", &rx, "busy_exit: 1\nretries: 3\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!(
        (r.outcome, r.attempts, r.note.as_deref(), r.exit_code),
        (Outcome::Ok, 1, Some("downstream busy, re-run queued"), Some(1)),
        "{r:?}"
    );
    assert_eq!(rx.log().count(), 1);
}

#[tokio::test]
async fn a_wrong_pin_fails_permanently_naming_both_fingerprints_and_sends_nothing() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Exit(0)).await;
    let pinned = random_key().public_key().clone();
    f.mirror(
        "m",
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {}, user: archvsync }}\nhost_key: \"{}\"\nretries: 3\n",
            rx.port(),
            pinned.to_openssh().unwrap()
        ),
    );
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.error_class), (Outcome::Failed, 1, Some(ErrorClass::HostKey)), "{r:?}");
    let error = r.error.as_deref().unwrap();
    assert!(error.contains(&keys::fingerprint(&pinned)), "names the expected key: {error}");
    assert!(error.contains(&keys::fingerprint(rx.host_key())), "names the offered key: {error}");
    assert_eq!(rx.log().count(), 0, "nothing may be sent to a host that failed verification");
}

#[tokio::test]
async fn strict_known_hosts_accepts_a_recorded_key_and_refuses_an_unknown_host() {
    let (f, client) = installation("");
    let known = receiver(&client, Behaviour::Exit(0)).await;
    let unknown = receiver(&client, Behaviour::Exit(0)).await;
    std::fs::write(f.path("known_hosts"), format!("# recorded by hand\n{}\n", known.known_hosts_line())).unwrap();
    unpinned_mirror(&f, "known", &known, "");
    unpinned_mirror(&f, "unknown", &unknown, "retries: 2\n");
    let report = f.push(PushRequest::default()).await;
    assert_eq!(row(&report, "known").outcome, Outcome::Ok);
    let r = row(&report, "unknown");
    assert_eq!((r.outcome, r.attempts, r.error_class), (Outcome::Failed, 1, Some(ErrorClass::HostKey)), "{r:?}");
    let error = r.error.as_deref().unwrap();
    assert!(error.contains(&keys::fingerprint(unknown.host_key())) && error.contains("hostkeys scan"), "{error}");
    assert_eq!((known.log().count(), unknown.log().count()), (1, 0));
    let text = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert_eq!(text.lines().count(), 2, "strict never writes known_hosts: {text}");
}

#[tokio::test]
async fn a_hashed_known_hosts_entry_matches_a_host_name_written_in_capitals() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Exit(0)).await;
    // What ssh records (the name in lower case, hashed by `HashKnownHosts yes` or `ssh-keygen -H`).
    let known_hosts = f.path("known_hosts");
    std::fs::write(&known_hosts, format!("[localhost]:{} {}\n", rx.port(), rx.host_key_line())).unwrap();
    let hashed = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&known_hosts).output().unwrap();
    assert!(hashed.status.success(), "{}", String::from_utf8_lossy(&hashed.stderr));
    assert!(std::fs::read_to_string(&known_hosts).unwrap().starts_with("|1|"));
    f.mirror("m", &format!("ssh: {{ host: LocalHost, port: {}, user: archvsync }}\nretries: 0\n", rx.port()));
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
    assert_eq!(rx.log().count(), 1);
}

#[tokio::test]
async fn accept_new_records_the_first_key_and_refuses_a_changed_one() {
    let (f, client) = installation("host_key_policy: accept-new\n");
    let first = receiver(&client, Behaviour::Exit(0)).await;
    let port = first.port();
    // Two mirrors on one host connect concurrently; the key is recorded once.
    for name in ["a", "b"] {
        unpinned_mirror(&f, name, &first, "retries: 2\n");
    }
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 2, "{report:?}");
    let text = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert_eq!(text, format!("{}\n", first.known_hosts_line()), "recorded once, as [host]:port");

    // The same host:port comes back with another key.
    first.stop().await;
    let changed = SshReceiver::builder().authorize(&client).port(port).start().await.unwrap();
    let report = f.push(PushRequest::default()).await;
    for name in ["a", "b"] {
        let r = row(&report, name);
        assert_eq!((r.outcome, r.attempts, r.error_class), (Outcome::Failed, 1, Some(ErrorClass::HostKey)), "{r:?}");
        let error = r.error.as_deref().unwrap();
        assert!(error.contains(&keys::fingerprint(changed.host_key())), "{error}");
    }
    assert_eq!(changed.log().count(), 0);
    assert_eq!(std::fs::read_to_string(f.path("known_hosts")).unwrap(), text, "a changed key is never recorded");
}

#[tokio::test(start_paused = true)]
async fn stage_one_waits_for_the_downstream_before_stage_two_is_sent() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::ExitAfter(Duration::from_secs(3), 0)).await;
    pinned_mirror(&f, "staged", &rx, "type: staged\n");
    let report = f.push(PushRequest::default()).await;
    let rows: Vec<_> = report.triggers.iter().map(|r| (r.stage.to_string(), r.outcome, r.sync_duration_ms)).collect();
    assert_eq!(rows.len(), 2, "{report:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1), ("stage1", Outcome::Ok));
    assert!(rows[0].2.is_some_and(|ms| (3000..3200).contains(&ms)), "stage 1 is waited for: {rows:?}");
    assert_eq!((rows[1].0.as_str(), rows[1].1, rows[1].2), ("stage2", Outcome::Ok, None));
    let execs = rx.log().execs();
    let commands: Vec<&str> = execs.iter().map(|e| e.command.as_str()).collect();
    assert_eq!(commands, [" sync:archive:debian sync:stage1", " sync:archive:debian sync:stage2"]);
    assert!(execs[1].at - execs[0].at >= Duration::from_secs(3), "stage 2 only after stage 1 ended");
}

#[tokio::test]
async fn a_key_the_downstream_does_not_know_is_an_auth_failure() {
    let (f, _client) = installation("");
    let stranger = random_key();
    let rx = receiver(stranger.public_key(), Behaviour::Exit(0)).await;
    pinned_mirror(&f, "m", &rx, "retries: 3\n");
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.error_class), (Outcome::Failed, 1, Some(ErrorClass::Auth)), "{r:?}");
    assert!(r.error.as_deref().unwrap().contains("archvsync"), "{r:?}");
    assert_eq!(rx.log().count(), 0);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connect_failure() {
    let (f, _client) = installation("");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let pin = random_key().public_key().to_openssh().unwrap();
    f.mirror(
        "m",
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {port}, user: u }}\nhost_key: \"{pin}\"\nretries: 1\nbackoff: {{ initial: 1ms, max: 1ms }}\n"
        ),
    );
    let report = f.push(PushRequest::default()).await;
    let r = row(&report, "m");
    assert_eq!((r.outcome, r.attempts, r.error_class), (Outcome::Failed, 2, Some(ErrorClass::Connect)), "{r:?}");
}

#[tokio::test]
async fn an_rsa_identity_signs_with_rsa_sha2() {
    use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
    let f = Fixture::with_main("identity: keys/id_rsa\nknown_hosts: known_hosts\n");
    let rsa = RsaKeypair::random(&mut rand::rng(), 2048).unwrap();
    let key = PrivateKey::new(KeypairData::from(rsa), "old archvsync key").unwrap();
    std::fs::create_dir_all(f.path("keys")).unwrap();
    pushmirror::demo::write_secret(
        &f.path("keys/id_rsa"),
        &key.to_openssh(russh::keys::ssh_key::LineEnding::LF).unwrap(),
    )
    .unwrap();
    let rx = receiver(key.public_key(), Behaviour::Exit(0)).await;
    pinned_mirror(&f, "m", &rx, "");
    let report = f.push(PushRequest::default()).await;
    assert_eq!(row(&report, "m").outcome, Outcome::Ok, "{:?}", row(&report, "m"));
    let algorithm = &rx.log().execs()[0].auth_algorithm;
    assert!(algorithm.starts_with("rsa-sha2-"), "never SHA-1 ssh-rsa: {algorithm}");
}

#[tokio::test(start_paused = true)]
async fn waiting_triggers_return_their_permit_and_report_the_sync_duration() {
    let (f, client) = installation("");
    let log = Arc::new(ExecLog::default());
    let rx = SshReceiver::builder()
        .authorize(&client)
        .log(Arc::clone(&log))
        .behaviour(Behaviour::ExitAfter(Duration::from_secs(3), 0))
        .start()
        .await
        .unwrap();
    for i in 0..40 {
        pinned_mirror(&f, &format!("m{i:02}"), &rx, "wait_for_sync: true\n");
    }
    let mut config = f.config();
    config.concurrency = 4;
    let t0 = tokio::time::Instant::now();
    let report = push_config(&config).await;
    let elapsed = t0.elapsed();
    assert_eq!(report.triggers.len(), 40);
    for r in &report.triggers {
        assert_eq!((r.outcome, r.exit_code), (Outcome::Ok, Some(0)), "{r:?}");
        let ms = r.sync_duration_ms.unwrap_or_else(|| panic!("no sync duration: {r:?}"));
        assert!((3000..3200).contains(&ms), "{}: sync took {ms} ms", r.mirror);
    }
    // Holding permits while waiting would take 40 × 3 s / 4 = 30 s.
    assert!(elapsed < Duration::from_secs(6), "push took {elapsed:?}");
    let execs = log.execs();
    let first = execs.iter().map(|e| e.at).min().unwrap();
    let last = execs.iter().map(|e| e.at).max().unwrap();
    assert!(last - first < Duration::from_secs(3), "every command started while the first still ran");
}

#[tokio::test]
async fn an_identity_others_can_read_is_refused_at_config_load() {
    let (f, client) = installation("");
    let rx = receiver(&client, Behaviour::Exit(0)).await;
    pinned_mirror(&f, "m", &rx, "");
    std::fs::set_permissions(f.path(IDENTITY), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let expected = format!("{}: identity: permissions 0644 of {}", identity_at(&f), f.path(IDENTITY).display());
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("too open"), "{err}");
    assert_eq!(rx.log().count(), 0);
}

#[test]
fn a_missing_identity_or_a_bad_pin_is_a_located_config_error() {
    let f = Fixture::with_main("identity: keys/nope\n");
    f.mirror("m", "ssh: { host: example.net, user: u }\nhost_key: \"ssh-ed25519 not-base64\"\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: identity: cannot read private key", identity_at(&f))), "{err}");
    assert!(err.contains("pushmirror keygen"), "{err}");
    assert!(
        err.contains(&format!("{}:2:1: host_key: not an OpenSSH public key", f.path("mirrors.d/m.yaml").display())),
        "{err}"
    );
}

/// One forced command by default, everywhere a line is printed: `keygen`, `keys` and the shipped
/// example say ftpsync's `~/bin/ftpsync` (they said three different things).
#[test]
fn keygen_keys_and_the_example_print_one_forced_command() {
    let f = Fixture::with_main("identity: keys/id_ed25519\n");
    let command = |text: &str| text.split("command=\"").nth(1).and_then(|c| c.split('"').next()).map(str::to_string);
    let generated = command(&stdout(&f.cli(&["keygen"])));
    let listed = command(&stdout(&f.cli(&["keys"])));
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mirrors.d/debian-ftpsync.yaml")).unwrap();
    let expected = Some(pushmirror::config::defaults::FORCED_COMMAND.to_string());
    assert_eq!((generated, listed, command(&example)), (expected.clone(), expected.clone(), expected));
}

#[test]
fn keygen_writes_a_private_key_and_prints_the_authorized_keys_line() {
    let f = Fixture::with_main("identity: keys/id_ed25519\n");
    let out = f.cli(&["keygen", "--from", "203.0.113.7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = f.path(IDENTITY);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let line = stdout(&out);
    let prefix = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,command=\"~/bin/ftpsync\",from=\"203.0.113.7\" ssh-ed25519 AAAA";
    assert!(line.starts_with(prefix), "{line}");
    assert_eq!(line.lines().count(), 1);
    assert!(line.trim_end().split(' ').next_back().unwrap().starts_with("pushmirror@"), "{line}");
    let public = std::fs::read_to_string(f.path("keys/id_ed25519.pub")).unwrap();
    let key_part: Vec<&str> = public.split_whitespace().take(2).collect();
    assert!(line.contains(&key_part.join(" ")), "the line carries the written key");
    assert!(keys::load_identity(&path).is_ok());

    let before = std::fs::read(&path).unwrap();
    let again = f.cli(&["keygen", "--command", "/usr/bin/ftpsync"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert!(stderr(&again).contains("`pushmirror keys` prints its authorized_keys line again"), "{}", stderr(&again));
    assert_eq!(std::fs::read(&path).unwrap(), before, "never overwritten");

    let other = f.path("elsewhere/key");
    let out = f.cli(&["keygen", "--out", other.to_str().unwrap(), "--command", "/usr/bin/ftpsync"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(
        "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty,command=\"/usr/bin/ftpsync\" ssh-ed25519 "
    ));
}

#[tokio::test]
async fn hostkeys_scan_records_new_keys_reports_known_ones_and_never_overwrites_a_change() {
    let (f, client) = installation("");
    let a = receiver(&client, Behaviour::Exit(0)).await;
    let b = receiver(&client, Behaviour::Exit(0)).await;
    unpinned_mirror(&f, "a", &a, "");
    unpinned_mirror(&f, "b", &b, "");
    let config = f.config();

    let rows = pushmirror::operator::hostkeys::scan(&config, &[]).await.unwrap();
    let statuses: Vec<_> = rows.iter().map(|r| (r.mirror.as_str(), r.status)).collect();
    assert_eq!(statuses, [("a", ScanStatus::New), ("b", ScanStatus::New)]);
    assert_eq!(rows[0].fingerprint.as_deref(), Some(keys::fingerprint(a.host_key()).as_str()));
    let recorded = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert_eq!(recorded, format!("{}\n{}\n", a.known_hosts_line(), b.known_hosts_line()));

    // A push now passes strict checking without any pin.
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 2, "{report:?}");

    // b's recorded key is not the one it offers any more.
    let stale = a.known_hosts_line();
    let other = random_key().public_key().to_openssh().unwrap();
    std::fs::write(f.path("known_hosts"), format!("{stale}\n[127.0.0.1]:{} {other}\n", b.port())).unwrap();
    let config_path = f.config_path();
    let out = tokio::task::spawn_blocking(move || run_bin(&config_path, &["hostkeys", "scan"])).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let a_line = format!("a [127.0.0.1]:{} {} known", a.port(), keys::fingerprint(a.host_key()));
    assert!(text.contains(&a_line), "{text}");
    let b_line = format!("b [127.0.0.1]:{} {} CHANGED", b.port(), keys::fingerprint(b.host_key()));
    assert!(text.contains(&b_line), "{text}");
    let unchanged = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert!(unchanged.contains(&other) && !unchanged.contains(&b.host_key_line()), "{unchanged}");

    let only = pushmirror::operator::hostkeys::scan(&config, &["a".to_string()]).await.unwrap();
    assert_eq!(only.len(), 1);
    assert!(pushmirror::operator::hostkeys::scan(&config, &["nope".to_string()]).await.is_err());

    // b's admin says its new key: --replace with a wrong fingerprint changes nothing, with the
    // right one replaces the recorded key (and a's stays), and a push to b works again.
    let replace = |fingerprint: String| {
        let config_path = f.config_path();
        tokio::task::spawn_blocking(move || {
            run_bin(&config_path, &["hostkeys", "scan", "--replace", "b", "--fingerprint", &fingerprint])
        })
    };
    let wrong = replace(keys::fingerprint(a.host_key())).await.unwrap();
    assert_eq!(wrong.status.code(), Some(1), "{}", stdout(&wrong));
    assert!(stdout(&wrong).contains("nothing replaced"), "{}", stdout(&wrong));
    assert_eq!(std::fs::read_to_string(f.path("known_hosts")).unwrap(), unchanged);
    let right = replace(keys::fingerprint(b.host_key())).await.unwrap();
    assert_eq!(right.status.code(), Some(0), "{}{}", stdout(&right), stderr(&right));
    assert!(stdout(&right).contains("replaced, recorded"), "{}", stdout(&right));
    let replaced = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert_eq!(replaced, format!("{stale}\n{}\n", b.known_hosts_line()));
    let report = f.push(PushRequest::default()).await;
    assert_eq!(report.summary.ok, 2, "{}", report.to_table());
}

/// Whether `child` came to wait for the lock on `file` (as `/proc/locks` lists a blocked
/// `flock`), rather than ending without ever asking for it.
fn waits_for_lock(child: &mut Child, file: &Path) -> bool {
    let pid = child.id().to_string();
    let inode = format!(":{}", std::fs::metadata(file).unwrap().ino());
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let blocked = locks.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).any(|f| {
            f.get(1) == Some(&"->") && f.get(5) == Some(&pid.as_str()) && f.get(6).is_some_and(|i| i.ends_with(&inode))
        });
        if blocked {
            return true;
        }
        std::thread::yield_now();
    }
}

/// Runs pushmirror with `args` while this process holds the lock on `known_hosts`, as every writer
/// of it must; once pushmirror waits for the lock, appends `line` and lets go. Returns whether it
/// waited, and its output.
async fn run_while_appending_under_lock(
    config: PathBuf,
    known_hosts: PathBuf,
    args: &'static [&'static str],
    line: String,
) -> (bool, Output) {
    tokio::task::spawn_blocking(move || {
        let mut held = std::fs::OpenOptions::new().append(true).create(true).open(&known_hosts).unwrap();
        held.lock().unwrap();
        let mut child = spawn_bin(&config, args);
        let waited = waits_for_lock(&mut child, &known_hosts);
        writeln!(held, "{line}").unwrap();
        held.sync_all().unwrap();
        drop(held);
        (waited, child.wait_with_output().unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn hostkeys_scan_waits_for_the_known_hosts_lock_and_does_not_repeat_a_key_recorded_meanwhile() {
    let (f, client) = installation("");
    let a = receiver(&client, Behaviour::Exit(0)).await;
    let b = receiver(&client, Behaviour::Exit(0)).await;
    unpinned_mirror(&f, "a", &a, "");
    unpinned_mirror(&f, "b", &b, "");
    let (waited, out) = run_while_appending_under_lock(
        f.config_path(),
        f.path("known_hosts"),
        &["hostkeys", "scan"],
        a.known_hosts_line(),
    )
    .await;
    let recorded = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert!(waited, "hostkeys scan wrote known_hosts without its lock:\n{}\n{recorded}", stdout(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("a [127.0.0.1]:{} {} known", a.port(), keys::fingerprint(a.host_key()))), "{text}");
    assert!(text.contains(&format!("b [127.0.0.1]:{} {} new", b.port(), keys::fingerprint(b.host_key()))), "{text}");
    assert_eq!(recorded, format!("{}\n{}\n", a.known_hosts_line(), b.known_hosts_line()), "each key once, whole lines");
}

#[tokio::test]
async fn accept_new_in_another_process_waits_for_the_known_hosts_lock_and_does_not_repeat_a_key() {
    let (f, client) = installation("host_key_policy: accept-new\n");
    let rx = receiver(&client, Behaviour::Exit(0)).await;
    unpinned_mirror(&f, "a", &rx, "");
    let (waited, out) = run_while_appending_under_lock(
        f.config_path(),
        f.path("known_hosts"),
        &["push", "--no-progress"],
        rx.known_hosts_line(),
    )
    .await;
    let recorded = std::fs::read_to_string(f.path("known_hosts")).unwrap();
    assert!(waited, "push recorded the host key without the known_hosts lock:\n{}\n{recorded}", stdout(&out));
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(rx.log().count(), 1);
    assert_eq!(recorded, format!("{}\n", rx.known_hosts_line()), "recorded once");
}

/// What sshd does past `MaxStartups`: it closes a new connection before its banner. That is a
/// transient `connect` failure, retried — not a protocol error given up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_the_banner_is_a_retried_connect_failure() {
    let (f, _) = installation("");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let pin = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYDnwxDZNf8DpOhDiGv5ufLM27o3EJ4nCrXmIjgzlz4";
    f.mirror(
        "dropped",
        &format!(
            "ssh: {{ host: 127.0.0.1, port: {port}, user: archvsync }}\nhost_key: \"{pin}\"\nretries: 2\nbackoff: {{ initial: 10ms, max: 20ms }}\n"
        ),
    );
    let report = push_config(&f.config()).await;
    let r = row(&report, "dropped");
    assert_eq!((r.outcome, r.error_class), (Outcome::Failed, Some(ErrorClass::Connect)), "{r:?}");
    assert_eq!(r.attempts, 3, "retried: {r:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}
