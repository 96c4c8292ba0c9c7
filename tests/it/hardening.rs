//! The second hardening round: state the daemon cannot read, secrets that cannot be sent,
//! disk full, trace URLs that are not trace files.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::Fixture;

/// The daemon binary of `f`, run as a user that is not the owner of the file we make
/// unreadable: as root, user `nobody` owning `state_dir` (root-owned files then are what a
/// `sudo pushmirror …` leaves behind); otherwise ourselves, the file at mode 000.
fn daemon_as_service_user(f: &Fixture) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pushmirror"));
    command
        .arg("-c")
        .arg(f.config_path())
        .arg("daemon")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(f.path("state")).status().unwrap();
        assert!(chown.success());
        command.uid(65534).gid(65534);
    }
    command
}

/// Runs it; it must end by itself (with the fix it stops at once; without it, it ran on blind).
fn ends(mut command: Command) -> (Option<i32>, String) {
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the daemon kept running on unreadable state:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An unreadable `deferred.json` (its triggers would be dropped unseen) and an unreadable
/// `ARCHIVE.pushed` (exit 2, which systemd does not restart) stop the daemon at its start with
/// the file, its owner and mode, and the commands that fix it.
#[test]
fn unreadable_state_stops_the_daemon_naming_the_file_its_owner_and_the_fix() {
    for file in ["deferred.json", "debian.pushed"] {
        let f = Fixture::with_main("status: { listen: 127.0.0.1:0 }\n");
        f.http_mirror("m", "http://127.0.0.1:9/never", "");
        std::fs::create_dir_all(f.path("state/daemon")).unwrap();
        let path = f.path(&format!("state/daemon/{file}"));
        let body = if file == "deferred.json" { "[]" } else { r#"{"version":"2026112501"}"# };
        let command = daemon_as_service_user(&f);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let (code, stderr) = ends(command);
        assert_eq!(code, Some(2), "{file}: {stderr}");
        let shown = path.display().to_string();
        assert!(stderr.contains(&format!("cannot read {shown}: exists but is not readable")), "{file}: {stderr}");
        assert!(stderr.contains("mode 0000"), "{file}: {stderr}");
        assert!(stderr.contains(&format!("chmod u+rw {shown}")), "{file}: {stderr}");
        if nix::unistd::geteuid().is_root() {
            assert!(stderr.contains("(owner root, mode 0000)"), "{file}: {stderr}");
            assert!(stderr.contains(&format!("chown nobody:nogroup {shown}")), "{file}: {stderr}");
        }
    }
}

/// A secret file that is not one line of printable text — a control character in a token, a
/// second line in a URL file (the URL parser would silently drop the line break and glue the
/// lines together) — fails `check` (exit 2), naming the mirror file and field, the secret file
/// and the position in it, never the secret. (Before: `check` said ok, and every push failed
/// with "failed to parse header value", retried as if transient.)
#[test]
fn a_secret_file_that_is_not_one_clean_line_fails_check_where_it_is() {
    let f = Fixture::new();
    f.secret("token", "abc\u{7}def\n");
    f.secret("url", "https://mirror.example.net/trigger?key=s3cret\nhttps://other.example.net/\n");
    f.mirror("tok", "http:\n  url: https://mirror.example.net/t\n  token_file: ../token\n");
    f.mirror("two", "http:\n  url_file: ../url\n");
    let out = f.cli(&["check"]);
    let err = crate::common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let token = f.path("mirrors.d/../token").display().to_string();
    let url = f.path("mirrors.d/../url").display().to_string();
    assert!(
        err.contains(&format!(
            "{}:3:3: http.token_file: {token}: line 1, column 4: a control character (U+0007)",
            f.path("mirrors.d/tok.yaml").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:2:3: http.url_file: {url}: holds more than one line (a line break after line 1, column 46)",
            f.path("mirrors.d/two.yaml").display()
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret") && !err.contains("abc"), "a secret in the error: {err}");
}

/// A `check:` URL whose server answers every path with an HTML page and 200 (an index page, a
/// captive portal): "not a trace file", the URL named — never the version `<!DOCTYPE html>`.
#[tokio::test]
async fn an_html_page_at_a_check_url_is_not_a_trace_file() {
    let portal = pushmirror::demo::HttpReceiver::start().await.unwrap();
    portal.publish("/debian/project/trace/master", "<!DOCTYPE html>\n<html><body>Welcome to nginx!</body></html>\n");
    let f = Fixture::new();
    f.mirror("portal", &format!("check: {}\n", portal.url("/debian/")));
    let config = f.config_path();
    let out = tokio::task::spawn_blocking(move || crate::common::run_bin(&config, &["freshness", "--format", "json"]))
        .await
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["standing"], "unreachable", "{rows:?}");
    assert_eq!(rows[0]["version"], serde_json::Value::Null, "{rows:?}");
    let error = rows[0]["error"].as_str().unwrap();
    assert_eq!(
        error,
        format!(
            "{}: not a trace file: it begins with `<!DOCTYPE html>` (a web page?)",
            portal.url("/debian/project/trace/master")
        )
    );
    assert_eq!(out.status.code(), Some(1), "{}", crate::common::stderr(&out));
}

/// `pushmirror ARGS…` run with its OS clock stepped by `offset` (`+10m`, `-2h`) through
/// libfaketime (Debian's `faketime`; required under `CI`, skipped elsewhere when missing).
pub(crate) fn at_clock(offset: &str, config: &std::path::Path, args: &[&str]) -> Option<std::process::Output> {
    if Command::new("faketime").arg("-f").arg("+0").arg("true").status().is_err() {
        assert!(std::env::var_os("CI").is_none(), "faketime is missing under CI");
        eprintln!("skipped: faketime is not installed");
        return None;
    }
    let out = Command::new("faketime")
        .arg("-f")
        .arg(offset)
        .arg(env!("CARGO_BIN_EXE_pushmirror"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    Some(out)
}

pub(crate) fn report_of(out: &std::process::Output) -> pushmirror::push::report::Report {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", crate::common::stdout(out), crate::common::stderr(out)))
}

/// The OS clock steps back two hours after a send under `rate_limit: 1/1h` (it had run fast),
/// then forward: the limit is neither lifted (the send still counts) nor held longer than its
/// hour from the corrected now (the send counts as made now, not two hours ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_step_neither_lifts_a_rate_limit_nor_holds_it_longer() {
    let rx = pushmirror::demo::HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("limited", &rx.url("/"), "rate_limit: 1/1h\n");
    let config = f.config_path();
    let push = move |offset: &'static str| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || at_clock(offset, &config, &["push", "--format", "json"]))
    };
    let Some(first) = push("+0").await.unwrap() else { return };
    assert_eq!(report_of(&first).triggers[0].outcome, pushmirror::vocab::model::Outcome::Ok);
    let back = report_of(&push("-2h").await.unwrap().unwrap());
    let row = &back.triggers[0];
    assert_eq!(row.outcome, pushmirror::vocab::model::Outcome::Deferred, "the limit was lifted: {row:?}");
    let until = row.deferred_until.unwrap().0;
    let held = until.duration_since(back.started_at.0).unwrap();
    // One hour from the admission, which comes a moment after the push started; not three.
    assert!(
        held <= Duration::from_secs(3600 + 60),
        "held {held:?} past the stepped-back now: not one hour but the step too"
    );
    assert!(held > Duration::from_secs(3500), "held only {held:?}");
    let ahead = report_of(&push("+2h").await.unwrap().unwrap());
    assert_eq!(ahead.triggers[0].outcome, pushmirror::vocab::model::Outcome::Ok);
    assert_eq!(rx.log().count(), 2);
}

/// A signing sender whose clock runs ten minutes fast: `pushmirror receive` refuses the
/// signature (nothing runs) and the sender's row says why it may have been refused; with the
/// clock right again, the same trigger is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_trigger_from_a_fast_clock_is_refused_and_says_why() {
    let down = tempfile::tempdir().unwrap();
    let secret = down.path().join("hmac");
    pushmirror::demo::write_secret(&secret, "hmac-00112233445566778899").unwrap();
    let ran = down.path().join("ran.log");
    std::fs::write(
        down.path().join("receive.yaml"),
        format!(
            "listen: 127.0.0.1:0\nstate_dir: {}\narchives:\n  debian:\n    command: ['/bin/sh', '-c', 'echo run >> {}']\n    hmac_secret_file: {}\n",
            down.path().join("state").display(),
            ran.display(),
            secret.display()
        ),
    )
    .unwrap();
    let config = pushmirror::receive::load(&down.path().join("receive.yaml")).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let receiving = pushmirror::receive::start(config, shutdown.clone()).await.unwrap();
    let f = Fixture::new();
    f.secret("hmac", "hmac-00112233445566778899");
    f.mirror(
        "signed",
        &format!("http:\n  url: http://{}/trigger/debian\n  hmac_secret_file: ../hmac\nretries: 0\n", receiving.addr),
    );
    let config = f.config_path();
    let push = move |offset: &'static str| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || at_clock(offset, &config, &["push", "--format", "json"]))
    };
    let Some(fast) = push("+10m").await.unwrap() else { return };
    let row = report_of(&fast).triggers[0].clone();
    assert_eq!((row.outcome, row.http_status), (pushmirror::vocab::model::Outcome::Failed, Some(401)), "{row:?}");
    assert_eq!(row.attempts, 1, "a refused signature is not retried");
    assert!(row.error.as_deref().unwrap().contains("is either clock off?"), "{row:?}");
    assert!(!ran.exists(), "a trigger from a clock ten minutes off ran");
    let right = report_of(&push("+0").await.unwrap().unwrap());
    assert_eq!(right.triggers[0].http_status, Some(202), "{:?}", right.triggers[0]);
    let mut status = receiving.status.clone();
    // (The answer of `wait_for` holds the status's read lock: dropped at once, not kept.)
    let ran_once = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.archive("debian").is_some_and(|a| a.runs_started == 1 && a.idle())),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(ran_once, "{:#?}", *receiving.status.borrow());
    shutdown.cancel();
    receiving.wait(Duration::ZERO).await.unwrap();
}
