//! Keys lifecycle against real OpenSSH: `probe` tells which keys each downstream accepts without
//! running anything there; a push during a rotation offers the next key first and falls back;
//! `keys` prints both lines, each admitting exactly its key.

use std::collections::BTreeMap;

use pushmirror::push::plan::PushRequest;
use pushmirror::vocab::model::{ErrorClass, KeyRole, Outcome};
use pushmirror::wire::keys;

use crate::common::{Fixture, row, stderr, stdout};
use crate::sshd::{self, Sshd};

/// A forced command that appends `$SSH_ORIGINAL_COMMAND` to `file`.
fn recorder(file: &std::path::Path) -> String {
    format!("echo \"$SSH_ORIGINAL_COMMAND\" >> {}", file.display())
}

/// An installation in rotation (`identity:` and `next_identity:` in the main file) and four
/// downstreams, each a real sshd whose authorized_keys holds the current key only, the next
/// only, both, or neither (a stranger's key), each bound to a forced command that records.
struct Rotating {
    f: Fixture,
    sshds: BTreeMap<&'static str, Sshd>,
    logs: tempfile::TempDir,
    current: String,
    next: String,
}

impl Rotating {
    fn start() -> Option<Rotating> {
        if !sshd::available() {
            return None;
        }
        let f = Fixture::with_main(
            "identity: keys/current\nnext_identity: keys/next\nknown_hosts: known_hosts\nhost_key_policy: strict\n\
             status: { listen: 127.0.0.1:0 }\n",
        );
        let logs = tempfile::tempdir().unwrap();
        let current = keys::generate(&f.path("keys/current"), "current@test").unwrap().public;
        let next = keys::generate(&f.path("keys/next"), "next@test").unwrap().public;
        let stranger = keys::generate(&logs.path().join("stranger"), "stranger@test").unwrap().public;
        let mut sshds = BTreeMap::new();
        let mut known_hosts = String::new();
        for (name, installed) in [
            ("m-current", vec![&current]),
            ("m-next", vec![&next]),
            ("m-both", vec![&current, &next]),
            ("m-neither", vec![&stranger]),
        ] {
            let log = logs.path().join(name);
            let lines: String = installed
                .iter()
                .map(|k| keys::authorized_keys_line(k, &recorder(&log), None).unwrap() + "\n")
                .collect();
            let sshd = Sshd::start(&lines);
            known_hosts.push_str(&sshd.known_hosts_line());
            f.mirror(
                name,
                &format!(
                    "ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n",
                    sshd.port,
                    sshd::current_user()
                ),
            );
            sshds.insert(name, sshd);
        }
        std::fs::write(f.path("known_hosts"), known_hosts).unwrap();
        let (current, next) = (keys::fingerprint(&current), keys::fingerprint(&next));
        Some(Rotating { f, sshds, logs, current, next })
    }

    /// What each downstream's forced command ran, by mirror.
    fn ran(&self) -> BTreeMap<&'static str, String> {
        self.sshds
            .keys()
            .map(|name| (*name, std::fs::read_to_string(self.logs.path().join(name)).unwrap_or_default()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_which_keys_each_downstream_accepts_and_runs_nothing() {
    let Some(r) = Rotating::start() else { return };
    let f = &r.f;
    let out = tokio::task::spawn_blocking({
        let config = f.config_path();
        move || crate::common::run_bin(&config, &["probe", "--format", "json"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "m-neither is not ready: {}", stderr(&out));
    let probed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows: BTreeMap<String, &serde_json::Value> =
        probed["mirrors"].as_array().unwrap().iter().map(|m| (m["mirror"].as_str().unwrap().to_string(), m)).collect();
    let accepted = |name: &str| -> Vec<(String, bool)> {
        rows[name]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["role"].as_str().unwrap().to_string(), k["accepted"].as_bool().unwrap()))
            .collect()
    };
    let (n, c) = ("next".to_string(), "current".to_string());
    assert_eq!(accepted("m-current"), [(n.clone(), false), (c.clone(), true)]);
    assert_eq!(accepted("m-next"), [(n.clone(), true), (c.clone(), false)]);
    assert_eq!(accepted("m-both"), [(n.clone(), true), (c.clone(), true)]);
    assert_eq!(accepted("m-neither"), [(n.clone(), false), (c.clone(), false)]);
    for name in ["m-current", "m-next", "m-both"] {
        assert_eq!(rows[name]["ready"], true, "{name}: {}", rows[name]);
        assert_eq!(rows[name]["login"], "ok", "{name}");
        assert_eq!(rows[name]["host_key"], "ok", "{name}");
        assert!(rows[name]["rtt_ms"].as_f64().is_some(), "{name}");
    }
    assert_eq!(rows["m-neither"]["ready"], false);
    assert_eq!(rows["m-neither"]["error_class"], "auth");
    // The rotation as the probe left it in the ledger.
    let rotation = &probed["rotations"][0];
    assert_eq!(rotation["next"][0], r.next.as_str());
    assert_eq!(rotation["accept_next"], serde_json::json!(["m-both", "m-next"]));
    assert_eq!(rotation["only_current"], serde_json::json!(["m-current"]));
    assert_eq!(rotation["neither"], serde_json::json!(["m-neither"]));
    // Nothing ran on any downstream: no forced command was started.
    assert!(r.ran().values().all(String::is_empty), "a probe ran something: {:?}", r.ran());

    // The table says the same, with the rotation's progress.
    let out = f.cli(&["probe"]);
    let table = stdout(&out);
    assert!(
        table.contains("rotation debian: 2 of 4 SSH mirror(s) accept the next key")
            && table.contains("1 still only the current one: m-current"),
        "{table}"
    );
    assert!(r.ran().values().all(String::is_empty), "a probe ran something: {:?}", r.ran());

    // A push during the overlap: delivered with the next key where it is installed, with the
    // current one where only that is, and the fourth fails with `auth`.
    let report = f.push(PushRequest::default()).await;
    let key = |name: &str| (row(&report, name).outcome, row(&report, name).key_role, row(&report, name).key.clone());
    assert_eq!(key("m-current"), (Outcome::Ok, Some(KeyRole::Current), Some(r.current.clone())));
    assert_eq!(row(&report, "m-current").keys_refused, std::slice::from_ref(&r.next));
    assert_eq!(key("m-next"), (Outcome::Ok, Some(KeyRole::Next), Some(r.next.clone())));
    assert_eq!(key("m-both"), (Outcome::Ok, Some(KeyRole::Next), Some(r.next.clone())));
    assert_eq!(row(&report, "m-neither").outcome, Outcome::Failed);
    assert_eq!(row(&report, "m-neither").error_class, Some(ErrorClass::Auth));
    assert_eq!(row(&report, "m-neither").keys_refused, [r.next.clone(), r.current.clone()]);
    let table = report.to_table();
    assert!(table.lines().next().unwrap().contains("KEY"), "{table}");
    let ran = r.ran();
    for name in ["m-current", "m-next", "m-both"] {
        assert_eq!(ran[name].lines().count(), 1, "{name} was triggered once: {ran:?}");
    }
    assert!(ran["m-neither"].is_empty());

    // Every view shows the same rotation, from the one ledger: `status` (text and JSON), and the
    // daemon's /status, page and /metrics.
    let expected = serde_json::json!({
        "archive": "debian", "next": [r.next], "accept_next": ["m-both", "m-next"],
        "only_current": ["m-current"], "neither": ["m-neither"], "unknown": [],
    });
    let out = f.cli(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["archives"]["debian"]["rotation"], expected);
    let text = stdout(&f.cli(&["status"]));
    let line = "key rotation debian: 2 of 4 SSH mirror(s) accept the next key";
    assert!(text.contains(line), "{text}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon = pushmirror::daemon::start(
        f.config_path(),
        f.config(),
        pushmirror::daemon::Control::new(shutdown.clone(), rx),
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    let base = format!("http://{}", daemon.addr);
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let body = get("/status").await;
    crate::common::assert_valid("docs/status.schema.json", body.as_bytes());
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(served["archives"][0]["rotation"], expected);
    let page = get("/").await;
    assert!(page.contains(&format!("key rotation — {}", line.trim_start_matches("key rotation "))), "{page}");
    let metrics = get("/metrics").await;
    for (accepts, n) in [("next", 2), ("current-only", 1), ("neither", 1), ("unknown", 0)] {
        let sample = format!("pushmirror_key_rotation_mirrors{{archive=\"debian\",accepts=\"{accepts}\"}} {n}");
        assert!(metrics.contains(&sample), "{sample} in:\n{metrics}");
    }
    crate::common::promtool_accepts(&metrics);
    shutdown.cancel();
    daemon.wait().await.unwrap();

    // The rotation finished (identity: the new key): `check` names the mirror last seen
    // accepting only the old key.
    let main = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        main.replace("identity: keys/current\nnext_identity: keys/next\n", "identity: keys/next\n"),
    )
    .unwrap();
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: mirror ")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("warning: mirror m-current (archive debian) was last seen")
            && warnings[0].contains(&format!("accepting {} but not the configured key {}", r.current, r.next)),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_during_a_rotation_prints_both_lines_each_admitting_exactly_its_key() {
    let Some(r) = Rotating::start() else { return };
    let f = &r.f;
    let out = f.cli(&["keys"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    let lines: Vec<&str> = page.lines().filter(|l| l.starts_with("no-port-forwarding")).collect();
    assert_eq!(lines.len(), 2, "{page}");
    assert!(page.contains(&format!("Next key, replacing {}", r.current)), "{page}");
    // Each line, installed alone in a real sshd, admits its key and only that one.
    for (line, admitted) in [(lines[0], &r.current), (lines[1], &r.next)] {
        let sshd = Sshd::start(&format!("{line}\n"));
        std::fs::write(f.path("known_hosts"), sshd.known_hosts_line()).unwrap();
        for name in r.sshds.keys() {
            std::fs::remove_file(f.path(&format!("mirrors.d/{name}.yaml"))).unwrap();
        }
        f.mirror(
            "solo",
            &format!("ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n", sshd.port, sshd::current_user()),
        );
        let out = f.cli(&["probe", "--format", "json"]);
        let probed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let keys = probed["mirrors"][0]["keys"].as_array().unwrap().clone();
        let accepted: Vec<&str> =
            keys.iter().filter(|k| k["accepted"] == true).map(|k| k["fingerprint"].as_str().unwrap()).collect();
        assert_eq!(accepted, [admitted.as_str()], "the line {line} admits exactly its key: {keys:?}");
        // Recreate the others' files for the next round (they share the fixture).
        for (name, sshd) in &r.sshds {
            f.mirror(
                name,
                &format!(
                    "ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n",
                    sshd.port,
                    sshd::current_user()
                ),
            );
        }
        std::fs::remove_file(f.path("mirrors.d/solo.yaml")).unwrap();
    }
}

/// Onboarding against a real sshd: a wrong host-key fingerprint writes nothing; the right one
/// writes a file that passes `check`, pins the key, and — the key not installed yet — prints the
/// line to send; once the admin installed it, the mirror is ready and a push delivers. Then
/// disable, enable and remove edit that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_add_onboards_a_downstream_without_triggering_it() {
    if !sshd::available() {
        return;
    }
    let f = Fixture::new();
    let log = f.path("ran.log");
    let recorder_script = f.path("recorder.sh");
    std::fs::write(&recorder_script, format!("#!/bin/sh\necho \"$SSH_ORIGINAL_COMMAND\" >> {}\n", log.display()))
        .unwrap();
    std::fs::set_permissions(&recorder_script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.set_main(&format!(
        "identity: keys/id\nknown_hosts: known_hosts\nhost_key_policy: strict\nmirrors_dir: mirrors.d\nstate_dir: state\n\
         archives:\n  debian:\n    root: archive\n    forced_command: \"{}\"\n",
        recorder_script.display()
    ));
    keys::generate(&f.path("keys/id"), "pushmirror@test").unwrap();
    let sshd = Sshd::start("");
    let host_public = std::fs::read_to_string(sshd.path("host_ed25519.pub")).unwrap();
    let host_fp = keys::fingerprint(&keys::parse_public_key(&host_public).unwrap());
    let login = format!("{}@127.0.0.1:{}", sshd::current_user(), sshd.port);
    let add = |extra: &[&str]| {
        let mut args = vec!["mirror", "add", "eu1", "--ssh", login.as_str(), "--tag", "eu"];
        args.extend_from_slice(extra);
        f.cli(&args)
    };
    let file = f.path("mirrors.d/eu1.yaml");

    // A wrong fingerprint: nothing is written.
    let out = add(&["--host-key-fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("is {host_fp}, not the SHA256:AAAA")), "{}", stderr(&out));
    assert!(!file.exists(), "written despite a wrong fingerprint");

    // The right one: written and pinned; the key is not installed yet, so the line to send.
    let out = add(&["--host-key-fingerprint", &host_fp]);
    assert_eq!(out.status.code(), Some(1), "not ready yet: {}", stderr(&out));
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains(&format!("host_key: \"{}", host_public.split_whitespace().next().unwrap())), "{yaml}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    let printed = stdout(&out);
    let line = printed.lines().find(|l| l.starts_with("no-port-forwarding")).unwrap_or_else(|| panic!("{printed}"));
    assert!(line.contains(&recorder_script.display().to_string()), "{line}");
    assert_eq!(f.cli(&["check"]).status.code(), Some(0));
    assert!(!log.exists(), "nothing ran on the downstream");
    // Adding it again changes nothing.
    let again = add(&["--host-key-fingerprint", &host_fp]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("exists already"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), yaml);

    // The admin installs the line: ready, and a push delivers through the forced command.
    std::fs::write(sshd.path("authorized_keys"), format!("{line}\n")).unwrap();
    let out = f.cli(&["probe", "--only", "eu1"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(!log.exists(), "probe ran nothing");
    let report = f.push(PushRequest::default()).await;
    assert_eq!(row(&report, "eu1").outcome, Outcome::Ok, "{}", report.to_table());
    assert_eq!(std::fs::read_to_string(&log).unwrap().trim(), "sync:archive:debian sync:all");

    // disable / enable keep the rest of the file; remove removes it.
    assert_eq!(f.cli(&["mirror", "disable", "eu1"]).status.code(), Some(0));
    assert!(!f.config().mirrors.iter().find(|m| m.name == "eu1").unwrap().enabled);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{yaml}enabled: false\n"));
    assert_eq!(f.cli(&["mirror", "enable", "eu1"]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{yaml}enabled: true\n"));
    assert_eq!(f.cli(&["mirror", "remove", "eu1"]).status.code(), Some(0));
    assert!(!file.exists());
    let out = f.cli(&["mirror", "remove", "eu1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A host that accepts the key but also asks for keyboard-interactive, and shows a banner: the
/// probe reports both and answers neither; the forced command never runs; a push fails with
/// `auth`, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_wanting_more_than_a_key_is_reported_never_answered() {
    if !sshd::available() {
        return;
    }
    let f = Fixture::with_main("identity: keys/id\nknown_hosts: known_hosts\n");
    let key = keys::generate(&f.path("keys/id"), "pushmirror@test").unwrap().public;
    let log = f.path("ran.log");
    let banner = f.path("banner");
    std::fs::write(&banner, "Authorized use only. Type your OTP.\n").unwrap();
    let first = format!(
        "AuthenticationMethods publickey,keyboard-interactive\nKbdInteractiveAuthentication yes\nBanner {}\n",
        banner.display()
    );
    let line = keys::authorized_keys_line(&key, &recorder(&log), None).unwrap();
    let sshd = Sshd::start_configured(&format!("{line}\n"), "1000:30:2000", &first);
    std::fs::write(f.path("known_hosts"), sshd.known_hosts_line()).unwrap();
    f.mirror(
        "otp",
        &format!("ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nretries: 0\n", sshd.port, sshd::current_user()),
    );
    let out = f.cli(&["probe", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let probed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let row = &probed["mirrors"][0];
    assert_eq!(row["ready"], false);
    assert_eq!(row["login"], serde_json::json!({ "also-needs": ["keyboard-interactive"] }), "{row}");
    assert_eq!(row["banner"], "Authorized use only. Type your OTP.", "{row}");
    assert_eq!(row["error_class"], "auth");
    assert!(!log.exists(), "the probe ran something");
    let report = f.push(PushRequest::default()).await;
    let otp = crate::common::row(&report, "otp");
    assert_eq!((otp.outcome, otp.error_class), (Outcome::Failed, Some(ErrorClass::Auth)));
    assert!(otp.error.as_deref().unwrap().contains("also asks for keyboard-interactive"), "{:?}", otp.error);
    assert!(!log.exists(), "the push ran something");
}

/// HTTP and MQTT mirrors are checked as far as they can be without a trigger: an HTTP probe
/// connects and sends no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_probe_connects_and_sends_no_request() {
    let receiver = pushmirror::demo::HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("web", &receiver.url("/trigger?token=s3cret"), "");
    // A port nothing listens on any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    f.mirror("gone", &format!("http:\n  url: http://127.0.0.1:{closed}/trigger\n"));
    let out = f.cli(&["probe", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let probed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows: BTreeMap<&str, &serde_json::Value> =
        probed["mirrors"].as_array().unwrap().iter().map(|r| (r["mirror"].as_str().unwrap(), r)).collect();
    assert_eq!(rows["web"]["ready"], true, "{}", rows["web"]);
    assert_eq!(rows["web"]["checked"], "DNS, TCP (no request sent)");
    assert_eq!((rows["gone"]["ready"].clone(), rows["gone"]["error_class"].clone()), (false.into(), "connect".into()));
    assert_eq!(receiver.log().count(), 0, "a probe sent a request");
    assert!(!stdout(&out).contains("s3cret"), "a secret in the probe's output");
}
