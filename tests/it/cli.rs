//! The binary as an operator uses it: exit codes, config errors, rate limits across processes,
//! secrets never printed, the demo.

use std::path::PathBuf;
use std::process::Output;

use pushmirror::demo::{HttpReceiver, Reply};
use pushmirror::push::report::Report;
use pushmirror::vocab::model::Outcome;

use crate::common::{Fixture, run_bin, stderr, stdout};

/// Runs the binary without blocking the runtime that serves the receivers.
async fn cli(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_bin(&config, &args)
    })
    .await
    .unwrap()
}

fn json_report(o: &Output) -> Report {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON report ({e}):\n{}", stdout(o)))
}

#[tokio::test]
async fn a_rate_limit_holds_across_two_processes() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("limited", &rx.url("/"), "rate_limit: 1/1h\n");
    f.http_mirror("free", &rx.url("/free"), "");

    let first = cli(f.config_path(), &["push", "--format", "json"]).await;
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let report = json_report(&first);
    assert_eq!(report.triggers.iter().map(|t| t.outcome).collect::<Vec<_>>(), [Outcome::Ok, Outcome::Ok]);

    let second = cli(f.config_path(), &["push", "--format", "json"]).await;
    assert_eq!(second.status.code(), Some(0), "deferred is not a failure: {}", stderr(&second));
    let report = json_report(&second);
    let free = report.triggers.iter().find(|t| t.mirror == "free").unwrap();
    let limited = report.triggers.iter().find(|t| t.mirror == "limited").unwrap();
    assert_eq!(free.outcome, Outcome::Ok);
    assert_eq!((limited.outcome, limited.attempts), (Outcome::Deferred, 0));
    let until = limited.deferred_until.expect("deferred until a time").0;
    let wait = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(wait > std::time::Duration::from_secs(3500), "deferred only {wait:?}");

    let table = cli(f.config_path(), &["push"]).await;
    assert!(stdout(&table).contains("deferred until 20"), "{}", stdout(&table));

    let to_limited = rx.log().hits().iter().filter(|h| h.uri == "/").count();
    assert_eq!(to_limited, 1, "the rate-limited mirror was triggered twice");
}

#[test]
fn check_reports_six_mistakes_at_once_with_their_positions() {
    let f = Fixture::new();
    f.mirror("a-bad-yaml", "http:\n  url: [unclosed\n");
    f.mirror("b-unknown-field", "http:\n  url: http://127.0.0.1:9/\nretires: 3\n");
    f.mirror("c-bad-duration", "http:\n  url: http://127.0.0.1:9/\ntimeout: 5 parsecs\n");
    f.mirror("d-bad-rate", "http:\n  url: http://127.0.0.1:9/\nrate_limit: often\n");
    f.mirror("e-missing-secret", "http:\n  url_file: secrets/nope.url\n");
    f.mirror("f-unknown-archive", "http:\n  url: http://127.0.0.1:9/\narchives: [debian, ubuntu]\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let dir = f.path("mirrors.d");
    let expected = [
        ("a-bad-yaml", 3, "invalid YAML"),
        ("b-unknown-field", 3, "retires: unknown field"),
        ("c-bad-duration", 3, "timeout: invalid duration `5 parsecs`"),
        ("d-bad-rate", 3, "rate_limit: invalid rate limit `often`"),
        ("e-missing-secret", 2, "http.url_file: cannot read"),
        ("f-unknown-archive", 3, "archives: unknown archive `ubuntu`"),
    ];
    let located: Vec<&str> = err.lines().filter(|l| l.starts_with(dir.to_str().unwrap())).collect();
    assert_eq!(located.len(), 6, "{err}");
    for ((file, line, what), got) in expected.iter().zip(&located) {
        let prefix = format!("{}/{file}.yaml:{line}:", dir.display());
        assert!(got.starts_with(&prefix), "expected {prefix}… got {got}");
        assert!(got.contains(what), "expected `{what}` in {got}");
    }
}

#[test]
fn config_mistakes_name_file_line_and_field() {
    let f = Fixture::new();
    f.mirror("one", "name: same\nhttp:\n  url: http://127.0.0.1:9/\n");
    f.mirror("two", "name: same\nhttp:\n  url: http://127.0.0.1:9/\n");
    f.mirror("neither", "timeout: 5s\n");
    f.mirror("both", "ssh: { host: a, user: b }\nhttp:\n  url: http://127.0.0.1:9/\n");
    let open = f.path("mirrors.d/open.pw");
    std::fs::write(&open, "pw\n").unwrap();
    f.mirror("too-open", "http:\n  url: http://127.0.0.1:9/\n  basic_auth: { user: u, password_file: open.pw }\n");
    let errors = pushmirror::config::load(&f.config_path()).unwrap_err().to_string();
    for want in [
        "mirrors.d/two.yaml:1:1: name: duplicate mirror name `same`, also defined in",
        "mirrors.d/neither.yaml:1:1: a mirror needs `ssh:`, `http:` or `mqtt:`",
        "mirrors.d/both.yaml:2:1: http: a mirror has one of `ssh:`, `http:` or `mqtt:`, not two",
        "mirrors.d/too-open.yaml:3:26: http.basic_auth.password_file: permissions 0644",
    ] {
        assert!(errors.contains(want), "missing `{want}` in:\n{errors}");
    }
}

#[tokio::test]
async fn a_valid_config_checks_ok_and_an_invalid_one_sends_nothing() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("good", &rx.url("/"), "");
    let ok = cli(f.config_path(), &["check"]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("ok: 1 archive(s), 1 mirror(s)"));

    f.mirror("broken", "http:\n  url: http://127.0.0.1:9/\ntimeout: never\n");
    let push = cli(f.config_path(), &["push"]).await;
    assert_eq!(push.status.code(), Some(2));
    assert!(stderr(&push).contains("broken.yaml:3:1: timeout: invalid duration"), "{}", stderr(&push));
    assert_eq!(rx.log().count(), 0, "an invalid config must send nothing");
    assert!(!f.path("state/reports").exists(), "no report for a push that never happened");
}

#[tokio::test]
async fn secrets_never_appear_in_any_output() {
    const TOKEN: &str = "tok3n5ecretpathpart";
    const QUERY: &str = "qu3rysecretvalue";
    const PASSWORD: &str = "pa55wordsecret";
    let ok = HttpReceiver::start().await.unwrap();
    let failing = HttpReceiver::builder().reply(Reply::Status(503)).start().await.unwrap();
    let f = Fixture::new();
    f.secret("secrets/ok.url", &ok.url(&format!("/trigger/{TOKEN}?key={QUERY}")));
    f.secret("secrets/bad.url", &failing.url(&format!("/trigger/{TOKEN}?key={QUERY}")));
    f.secret("secrets/gone.url", &format!("http://user:{PASSWORD}@127.0.0.1:9/{TOKEN}?key={QUERY}"));
    f.secret("secrets/pw", PASSWORD);
    let auth = "  basic_auth: { user: ubuntu, password_file: ../secrets/pw }\n  method: POST\n";
    f.mirror("ok", &format!("http:\n  url_file: ../secrets/ok.url\n{auth}"));
    f.mirror(
        "bad",
        &format!("http:\n  url_file: ../secrets/bad.url\n{auth}retries: 1\nbackoff: {{ initial: 10ms, max: 10ms }}\n"),
    );
    f.mirror("gone", "http:\n  url_file: ../secrets/gone.url\nretries: 0\n");

    let mut outputs = Vec::new();
    for args in [
        &["-vv", "push"][..],
        &["-vvv", "push", "--format", "json"],
        &["push", "--dry-run"],
        &["list"],
        &["list", "--format", "json"],
        &["status"],
        &["status", "--format", "json"],
        &["check", "-vv"],
        &["--help"],
        &["push", "--help"],
    ] {
        let o = cli(f.config_path(), args).await;
        outputs.push((args.join(" "), format!("{}{}", stdout(&o), stderr(&o))));
    }
    for entry in std::fs::read_dir(f.path("state/reports")).unwrap() {
        let p = entry.unwrap().path();
        outputs.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
    }
    // The pushes really happened, with the secrets, and failed where they should.
    assert!(ok.log().hits().iter().any(|h| h.uri.contains(TOKEN) && h.uri.contains(QUERY)));
    assert!(failing.log().count() >= 2);
    let basic = pushmirror::demo::base64_basic("ubuntu", PASSWORD);
    let basic_b64 = basic.trim_start_matches("Basic ");
    assert!(outputs[0].1.contains("503"), "the failure is reported: {}", outputs[0].1);
    assert!(outputs[0].1.contains("127.0.0.1"), "targets are shown redacted: {}", outputs[0].1);
    for (what, text) in &outputs {
        for secret in [TOKEN, QUERY, PASSWORD, basic_b64] {
            assert!(!text.contains(secret), "`{what}` printed a secret:\n{text}");
        }
    }
}

#[test]
fn the_demo_pushes_to_its_receivers_and_shows_a_bad_day() {
    let out = run_bin(std::path::Path::new("/nonexistent/pushmirror.yaml"), &["demo", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "a mirror refuses, so exit 1: {}", stderr(&out));
    let report = json_report(&out);
    let (good, bad): (Vec<_>, Vec<_>) = report.triggers.iter().partition(|t| !t.mirror.starts_with("demo-zz-"));
    assert_eq!(good.len(), 6);
    assert!(good.iter().all(|t| t.outcome == Outcome::Ok && t.attempts == 1), "{report:?}");
    assert_eq!(good.iter().filter(|t| t.transport == "ssh").count(), 2, "every third demo mirror is SSH");
    let seen: Vec<_> = bad.iter().map(|t| (t.mirror.as_str(), t.outcome, t.attempts, t.error_class)).collect();
    assert_eq!(
        seen,
        [
            ("demo-zz-flaky", Outcome::Ok, 2, None),
            ("demo-zz-limited", Outcome::Deferred, 0, None),
            ("demo-zz-refusing", Outcome::Failed, 1, Some(pushmirror::vocab::model::ErrorClass::HttpStatus)),
        ]
    );

    let table = run_bin(std::path::Path::new("/nonexistent/pushmirror.yaml"), &["demo"]);
    let said = stderr(&table);
    for want in [
        "demo-zz-flaky      answered 503 (transient), was retried after backoff: ok after 2 attempts",
        "demo-zz-limited    deferred: its rate_limit 1/1h was used earlier this hour",
        "demo-zz-refusing   failed (http-status): HTTP 403 Forbidden; permanent, so not retried",
        "summary: 7 ok, 1 failed, 1 deferred; exit status 1: a mirror failed",
    ] {
        assert!(said.contains(want), "no `{want}` in:\n{said}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definitions() {
    let none = std::path::Path::new("/nonexistent.yaml");
    let man = run_bin(none, &["manpage"]);
    assert_eq!(man.status.code(), Some(0));
    let man = stdout(&man);
    assert!(man.contains(".TH pushmirror 1") && man.contains("daemon") && man.contains("push"), "{man}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run_bin(none, &["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout(&out).contains("dry-run"), "{shell} completion lacks push's flags");
    }
}

#[test]
fn the_shipped_example_config_and_mirror_files_pass_check() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo.join("dist/pushmirror.yaml"), dir.path().join("pushmirror.yaml")).unwrap();
    std::fs::create_dir_all(dir.path().join("mirrors.d")).unwrap();
    let mut examples = 0;
    for entry in std::fs::read_dir(repo.join("mirrors.d")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join("mirrors.d").join(path.file_name().unwrap())).unwrap();
        examples += 1;
    }
    // What an operator creates next to the examples: the sender key and the secret files.
    pushmirror::wire::keys::generate(&dir.path().join("keys/id_ed25519"), "pushmirror@example").unwrap();
    pushmirror::demo::write_secret(&dir.path().join("mirrors.d/secrets/example.pw"), "s3cret").unwrap();
    pushmirror::demo::write_secret(
        &dir.path().join("mirrors.d/secrets/example-mirror.url"),
        "https://cdn.example.com/push/5f0c1f3e-8a54-4a2b-9d3e-0b6f3d9c2a71",
    )
    .unwrap();
    // The example's archive roots and state, moved under the temporary directory.
    let config = dir.path().join("pushmirror.yaml");
    let shipped = std::fs::read_to_string(&config).unwrap();
    let here = dir.path().display();
    let moved = shipped
        .replace("/srv/mirror/", &format!("{here}/srv/mirror/"))
        .replace("/var/lib/pushmirror", &format!("{here}/state"));
    std::fs::write(&config, moved).unwrap();
    let out = run_bin(&config, &["check"]);
    assert_eq!(out.status.code(), Some(2), "archive roots that do not exist yet pass check");
    for archive in ["debian", "ubuntu"] {
        let root = dir.path().join("srv/mirror").join(archive);
        assert!(stderr(&out).contains(&format!("archives.{archive}.root: {} does not exist", root.display())));
        std::fs::create_dir_all(root).unwrap();
    }
    let out = run_bin(&config, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("2 archive(s), {examples} mirror(s)")), "{}", stdout(&out));
    assert!(examples >= 4, "one example of each kind");
}

#[tokio::test]
async fn a_state_dir_that_is_a_file_fails_check_and_push_sends_nothing() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("good", &rx.url("/"), "");
    // The fixture's main file says `state_dir: state`; a regular file stands there instead.
    std::fs::write(f.path("state"), "not a directory").unwrap();
    let check = cli(f.config_path(), &["check"]).await;
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    assert!(stderr(&check).contains(": state_dir: "), "{}", stderr(&check));
    assert!(stderr(&check).contains("exists but is not a directory"), "{}", stderr(&check));
    let push = cli(f.config_path(), &["push"]).await;
    assert_eq!(push.status.code(), Some(2), "{}", stderr(&push));
    assert_eq!(rx.log().count(), 0, "a push that cannot be recorded sends nothing");
}

/// On a terminal, `push` shows a mirror that is down at its first failed attempt (it used to stay
/// silent through all its retries at the default verbosity): a line per retry and per failure
/// above a bar with the counts. Nothing of it with `-q`, nor when stderr is not a terminal. The
/// terminal is a pseudo-terminal from util-linux's `script`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_on_a_terminal_shows_each_retry_and_failure_as_it_happens() {
    let down = HttpReceiver::builder().reply(Reply::Status(503)).start().await.unwrap();
    let up = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("down", &down.url("/"), "retries: 2\n");
    f.http_mirror("up", &up.url("/"), "");
    let on_terminal = |quiet: bool| {
        let command = format!(
            "{} -c {}{} push",
            env!("CARGO_BIN_EXE_pushmirror"),
            f.config_path().display(),
            if quiet { " -q" } else { "" }
        );
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("script").args(["-qefc", &command, "/dev/null"]).output().expect("script")
        })
    };
    let shown = stdout(&on_terminal(false).await.unwrap());
    for want in [
        "retrying  down: attempt 1 failed (http-status",
        "retrying  down: attempt 2 failed",
        "failed    down (http-status)",
    ] {
        assert!(shown.contains(want), "missing `{want}` in:\n{shown}");
    }
    assert!(!shown.contains("retrying  up") && !shown.contains("failed    up"), "{shown}");
    let quiet = stdout(&on_terminal(true).await.unwrap());
    assert!(!quiet.contains("retrying") && quiet.contains("down"), "-q shows the report only:\n{quiet}");
    let piped = cli(f.config_path(), &["push"]).await;
    assert!(!stderr(&piped).contains("retrying"), "{}", stderr(&piped));
}

/// `-c pushmirror.yaml` (a bare file name): relative paths in it resolve against its directory,
/// as with any other path (its directory was "", and `state_dir: state` was probed in `/`).
#[tokio::test]
async fn a_bare_config_file_name_resolves_relative_paths_against_its_directory() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &rx.url("/"), "");
    let dir = f.path("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
            .args(["-c", "pushmirror.yaml", "push"])
            .current_dir(&dir)
            .env_remove("PUSHMIRROR_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(f.path("state/mirrors.json").exists() && f.path("state/reports").is_dir(), "state written elsewhere");
}

/// Under systemd (`JOURNAL_STREAM` set) every log line starts with its syslog priority, so that
/// `journalctl -p warning` finds warnings, and has no timestamp of its own (journald's is beside
/// it: they were doubled); elsewhere neither.
#[tokio::test]
async fn under_journald_log_lines_carry_their_priority_and_no_timestamp() {
    let refusing = HttpReceiver::builder().reply(Reply::Status(404)).start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &refusing.url("/"), "");
    let config = f.config_path();
    let run = move |journal: bool| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"));
            command.arg("-c").arg(&config).args(["push"]).env_remove("RUST_LOG");
            if journal {
                command.env("JOURNAL_STREAM", "8:12345");
            } else {
                command.env_remove("JOURNAL_STREAM");
            }
            command.output().unwrap()
        })
    };
    let journal = stderr(&run(true).await.unwrap());
    let failed = journal.lines().find(|l| l.contains("trigger failed")).unwrap_or_else(|| panic!("{journal}"));
    assert!(failed.starts_with("<4> WARN "), "{failed}");
    assert!(!journal.contains("2026-") && !journal.contains("\u{1b}["), "a timestamp or colour:\n{journal}");
    let plain = stderr(&run(false).await.unwrap());
    assert!(plain.lines().any(|l| l.contains("trigger failed")) && !plain.contains("<4>"), "{plain}");
}

/// Options a subcommand ignores are refused when given, saying why (they used to be accepted and
/// do nothing: `receive -c FILE` read /etc/pushmirror/receive.yaml anyway).
#[test]
fn an_option_a_subcommand_ignores_is_refused() {
    let none = std::path::Path::new("/nonexistent/pushmirror.yaml");
    for (args, want) in [
        (&["receive", "/tmp/r.yaml"][..], "-c/--config does not apply to `receive`"),
        (&["--format", "json", "manpage"], "--format does not apply to `manpage`"),
        (&["daemon", "--format", "json"], "--format does not apply to `daemon`"),
    ] {
        let out = run_bin(none, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
