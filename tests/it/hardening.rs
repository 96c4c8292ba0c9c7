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
