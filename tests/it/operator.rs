//! What an operator meets first (issue 13): errors that say what to do, in file order, with a
//! suggestion for a typo; archive roots checked; the ownership rule; `status --check` always one
//! line; the demo's bad day.

use std::path::PathBuf;
use std::process::Output;

use pushmirror::demo::{HttpReceiver, Reply};

use crate::common::{Fixture, run_bin, stderr, stdout};

async fn cli(config: PathBuf, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || run_bin(&config, &args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

#[test]
fn an_unknown_field_suggests_the_nearest_known_one() {
    let f = Fixture::with_main("concurency: 4\n");
    f.mirror("m", "http:\n  url: http://127.0.0.1:9/\nretires: 3\nbogus_thing: 1\nhttp_:\n");
    let err = stderr(&f.cli(&["check"]));
    let main = f.config_path();
    let mirror = f.path("mirrors.d/m.yaml");
    for want in [
        format!("{}:3:1: retires: unknown field; did you mean `retries`?", mirror.display()),
        format!("{}:4:1: concurency: unknown field; did you mean `concurrency`?", main.display()),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    let bogus = err.lines().find(|l| l.contains("bogus_thing")).expect("bogus_thing reported");
    assert!(bogus.contains("unknown field, expected one of:") && !bogus.contains("did you mean"), "{bogus}");
}

#[test]
fn errors_print_in_file_line_column_order() {
    // Mistakes found in a different order than they are written: a missing root is noticed
    // after the unknown fields below it, a bad duration in `defaults` before `archives`.
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    settle: 5 parsecs\n    rooot: archive\n\
         defaults:\n  timeout: never\nstatus:\n  listen: nowhere\nconcurrency: 0\n",
    );
    f.mirror("b", "http:\n  url: http://127.0.0.1:9/\ntimeout: never\nretires: 1\n");
    f.mirror("a", "retires: 1\nhttp:\n  url: ftp://x/\n");
    let err = stderr(&f.cli(&["check"]));
    let located: Vec<(String, usize, usize)> = err
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ':');
            let (file, line, col) = (parts.next()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
            Some((file.to_string(), line, col))
        })
        .collect();
    assert!(located.len() >= 9, "{err}");
    let mut sorted = located.clone();
    sorted.sort();
    assert_eq!(located, sorted, "errors out of order:\n{err}");
}

#[test]
fn check_names_an_archive_root_that_does_not_exist_or_is_a_file() {
    let f = Fixture::new();
    f.set_main(
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n  ubuntu:\n    root: /srv/no-such-root\n  \
         file:\n    root: pushmirror.yaml\n",
    );
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    let main = f.config_path();
    for want in [
        format!("{}:7:5: archives.ubuntu.root: /srv/no-such-root does not exist", main.display()),
        format!("{}:9:5: archives.file.root: {} exists but is not a directory", main.display(), main.display()),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
    assert!(!err.contains("archives.debian.root"), "{err}");
}

#[test]
fn a_missing_config_says_how_to_name_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .args(["-c", "/nonexistent/pushmirror.yaml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("/nonexistent/pushmirror.yaml:1:1: cannot read config file: does not exist"), "{err}");
}

/// `status --check` as a monitoring plugin: the status line (with perfdata) first, then one
/// line per mirror that is not ok; every exit code.
#[tokio::test]
async fn status_check_answers_as_a_monitoring_plugin_for_every_exit_code() {
    let ok = HttpReceiver::builder().reply(Reply::Status(204)).start().await.unwrap();
    let refusing = HttpReceiver::builder().reply(Reply::Status(404)).start().await.unwrap();
    let lines = |o: &Output| -> (Option<i32>, Vec<String>) {
        (o.status.code(), stdout(o).lines().map(|l| l.split(" | ").next().unwrap().to_string()).collect())
    };

    let fresh = Fixture::new();
    let (code, text) = lines(&cli(fresh.config_path(), &["status", "--check"]).await);
    assert_eq!((code, text), (Some(3), vec!["PUSHMIRROR UNKNOWN - no mirrors configured".to_string()]));

    // (receiver, mirror file extra, pushes) → (exit code, status line, long output)
    let cases = [
        (&ok, "", 1, 0, "PUSHMIRROR OK - 1 of 1 mirror(s) ok", None),
        (&ok, "rate_limit: 1/1h\n", 2, 1, "PUSHMIRROR WARNING - 1 deferred (m)", Some("debian/m: deferred since ")),
        (&refusing, "", 1, 2, "PUSHMIRROR CRITICAL - 1 failing (m)", Some("debian/m: failing since ")),
    ];
    for (receiver, extra, pushes, want_code, want_line, long) in cases {
        let f = Fixture::new();
        f.http_mirror("m", &receiver.url("/"), extra);
        for _ in 0..pushes {
            cli(f.config_path(), &["push"]).await;
        }
        let (code, text) = lines(&cli(f.config_path(), &["status", "--check"]).await);
        assert_eq!((code, text[0].as_str()), (Some(want_code), want_line), "{text:?}");
        assert_eq!(text.get(1).is_some_and(|l| long.is_some_and(|w| l.starts_with(w))), long.is_some(), "{text:?}");
    }

    let broken = Fixture::with_main("concurrency: many\n");
    let (code, text) = lines(&cli(broken.config_path(), &["status", "--check"]).await);
    assert_eq!(code, Some(3));
    assert!(text[0].starts_with("PUSHMIRROR UNKNOWN - 1 configuration error(s), first: "), "{text:?}");
    assert!(text[0].contains("concurrency:"), "{text:?}");

    let unreadable = Fixture::new();
    unreadable.http_mirror("m", &ok.url("/"), "");
    std::fs::write(unreadable.path("state"), "a file where state_dir should be").unwrap();
    let (code, text) = lines(&cli(unreadable.config_path(), &["status", "--check"]).await);
    assert_eq!(code, Some(3));
    assert!(text[0].starts_with("PUSHMIRROR UNKNOWN - cannot read ") && text[0].contains("mirrors.json"), "{text:?}");
}

/// The ownership rule: a command that writes, run by anyone but the owner of `state_dir`, does
/// nothing and prints the command to run instead.
#[test]
fn a_command_that_writes_run_by_another_user_refuses_with_the_command_to_run() {
    use std::os::unix::fs::MetadataExt as _;
    let f = Fixture::new();
    f.http_mirror("m", "http://127.0.0.1:9/", "");
    std::fs::create_dir(f.path("state")).unwrap();
    let as_root = nix_uid() == 0;
    if as_root {
        std::os::unix::fs::chown(f.path("state"), Some(65534), Some(65534)).unwrap();
    } else {
        // Not root: state_dir is a directory root owns, which this user can never write to.
        f.set_main("mirrors_dir: mirrors.d\nstate_dir: /\narchives:\n  debian:\n    root: archive\n");
    }
    let owner_uid = std::fs::metadata(if as_root { f.path("state") } else { PathBuf::from("/") }).unwrap().uid();
    for args in [&["push"][..], &["hostkeys", "scan"], &["runmirrors", "-a", "debian"], &["keygen"], &["daemon"]] {
        if args == ["keygen"] {
            // keygen follows the rule for the key the configuration names.
            let main = std::fs::read_to_string(f.config_path()).unwrap();
            std::fs::write(f.config_path(), format!("identity: keys/id\n{main}")).unwrap();
        }
        let out = f.cli(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let instead = format!(
            "sudo -u {} {} -c {} {}",
            user_name(owner_uid),
            env!("CARGO_BIN_EXE_pushmirror"),
            f.config_path().display(),
            args.join(" ")
        );
        assert!(err.contains(&instead), "{args:?}: no `{instead}` in:\n{err}");
        assert!(err.contains(&format!("belongs to user {}", user_name(owner_uid))), "{err}");
        if args[0] == "runmirrors" {
            assert!(err.contains("~/.config/pushmirror/pushmirror.yaml, with a state_dir it owns"), "{err}");
        }
    }
    // As a `runmirrors` symlink, which has no -c: the config travels in the environment.
    let link = f.path("runmirrors");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pushmirror"), &link).unwrap();
    let out = std::process::Command::new(&link)
        .args(["-a", "debian"])
        .env("PUSHMIRROR_CONFIG", f.config_path())
        .output()
        .unwrap();
    let instead = format!(
        "sudo -u {} env PUSHMIRROR_CONFIG={} {} -a debian",
        user_name(owner_uid),
        f.config_path().display(),
        link.display()
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(&instead), "no `{instead}` in:\n{}", stderr(&out));
    if as_root {
        // Root writes no key into another user's directory, whatever --out says.
        let out = f.cli(&["keygen", "--out", f.path("state/k").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("sudo -u {}", user_name(owner_uid))), "{}", stderr(&out));
    }
    assert!(!f.path("keys/id").exists(), "keygen wrote a key it was refused");
    let state: Vec<_> = std::fs::read_dir(f.path("state")).unwrap().collect();
    assert!(!as_root || state.is_empty(), "a refused command wrote state: {state:?}");
    // Reading is not refused: status runs for anyone who can read the files.
    assert_eq!(f.cli(&["status"]).status.code(), Some(0), "{}", stderr(&f.cli(&["status"])));
}

/// State root left behind in the service user's `state_dir` (a root-owned `ratelimit/` fails
/// every rate-limited mirror in the daemon): `check`, run by root, names it and the `chown`.
#[test]
fn check_names_files_the_service_user_cannot_read() {
    if nix_uid() != 0 {
        // Needs files of two users, which only root can make (CI's package step covers the
        // same ground as root: dist/ci-deb.sh).
        eprintln!("not root: skipping");
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir_all(f.path("state/ratelimit")).unwrap();
    std::fs::write(f.path("state/ratelimit/m.json"), r#"{"sent_ms":[]}"#).unwrap();
    std::os::unix::fs::chown(f.path("state"), Some(65534), Some(65534)).unwrap();
    // A root-owned 0600 secret: readable by root's `check`, not by the daemon (it used to pass).
    let token = f.secret("secrets/token", "s3cret-token");
    f.mirror("m", &format!("http:\n  url: http://127.0.0.1:9/\n  token_file: {}\n", token.display()));
    let out = f.cli(&["check"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let nobody = user_name(65534);
    assert!(err.contains(&format!("2 entries are in {} not owned by {nobody}", f.path("state").display())), "{err}");
    assert!(err.contains(&format!("chown -R {nobody}:")), "{err}");
    let secret = format!(
        "http.token_file: {} is owned by root, but the service user {nobody} (the owner of state_dir) must read it: chown {nobody}:",
        token.display()
    );
    assert!(err.contains(&secret), "{err}");
    assert!(!err.contains("s3cret-token"), "a secret printed:\n{err}");
}

fn nix_uid() -> u32 {
    pushmirror::sys::owner::current_uid()
}

fn user_name(uid: u32) -> String {
    pushmirror::sys::owner::user_name(uid)
}

#[tokio::test]
async fn a_failed_trigger_on_the_rate_limit_path_is_logged_with_mirror_class_and_reason() {
    let rx = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("limited", &rx.url("/"), "rate_limit: 1/1h\n");
    std::fs::create_dir_all(f.path("state/ratelimit")).unwrap();
    std::fs::write(f.path("state/ratelimit/limited.json"), "not json").unwrap();
    let out = cli(f.config_path(), &["-v", "push"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let logged: Vec<&str> = err.lines().filter(|l| l.contains("trigger failed")).collect();
    assert_eq!(logged.len(), 1, "logged once:\n{err}");
    for want in ["mirror=limited", "class=state", "rate limit", "limited.json", "not a valid send log"] {
        assert!(logged[0].contains(want), "no `{want}` in {}", logged[0]);
    }
    assert!(rx.log().hits().is_empty(), "sent despite unreadable rate-limit state");
}

/// `man -l` of the generated page shows every section an operator looks for, and the page names
/// no other pushmirror page (none is shipped).
#[test]
fn the_man_page_renders_with_every_section() {
    let page = tempfile::NamedTempFile::new().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror")).arg("manpage").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    std::fs::write(page.path(), &out.stdout).unwrap();
    let man = std::process::Command::new("man")
        .arg("-l")
        .arg(page.path())
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output();
    let man = match man {
        Ok(man) => man,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "man is required in CI (apt-get install man-db): {e}");
            eprintln!("man not installed ({e}): skipping outside CI");
            return;
        }
    };
    assert!(man.status.success(), "{}", stderr(&man));
    // Without a terminal, groff may still overstrike bold text (`N\bN`): keep the last of each pair.
    let text: String = {
        let raw = stdout(&man);
        let mut out = String::new();
        for c in raw.chars() {
            if c == '\u{8}' {
                out.pop();
            } else {
                out.push(c);
            }
        }
        out
    };
    let headers: Vec<&str> =
        text.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_uppercase())).collect();
    for want in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "CONFIGURATION",
        "FILES",
        "ENVIRONMENT",
        "EXIT STATUS",
        "SIGNALS",
        "EXAMPLES",
    ] {
        assert!(headers.contains(&want), "no {want} section; sections: {headers:?}");
    }
    for command in ["pushmirror push", "pushmirror hostkeys scan", "pushmirror import-runmirrors", "pushmirror receive"]
    {
        assert!(text.contains(command), "COMMANDS lacks {command}");
    }
    assert!(!text.contains("pushmirror-"), "refers to a page that is not shipped:\n{text}");
}

/// The perfdata checker used by the `status --check` tests holds to the grammar: it accepts
/// what the monitoring-plugins guidelines allow and refuses what they do not.
#[test]
#[should_panic(expected = "not a number")]
fn the_perfdata_checker_refuses_a_value_that_is_not_a_number() {
    crate::common::assert_perfdata("ok=997;;;0 'a b'=3s;5;10:;0;100 failed=2;~:1;@0:3;0 bad=x;;;0");
}

#[test]
#[should_panic(expected = "more than value;warn;crit;min;max")]
fn the_perfdata_checker_refuses_extra_fields() {
    crate::common::assert_perfdata("ok=1;;;0;5;6");
}

/// A failing mirror stays failing in every view until a trigger is delivered to it: a later
/// push that leaves it out (`push --only` another mirror) used to turn `status --check` from
/// CRITICAL to OK while `list` still said failed.
#[tokio::test]
async fn a_push_that_leaves_a_failing_mirror_out_does_not_hide_it() {
    let ok = HttpReceiver::start().await.unwrap();
    let refusing = HttpReceiver::builder().reply(Reply::Status(404)).start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("good", &ok.url("/"), "");
    f.http_mirror("broken", &refusing.url("/"), "");
    cli(f.config_path(), &["push"]).await;
    cli(f.config_path(), &["push", "--only", "good"]).await;
    let check = cli(f.config_path(), &["status", "--check"]).await;
    assert_eq!(check.status.code(), Some(2), "{}", stdout(&check));
    assert!(stdout(&check).starts_with("PUSHMIRROR CRITICAL - 1 failing (broken) | "), "{}", stdout(&check));
    let listed: serde_json::Value =
        serde_json::from_slice(&cli(f.config_path(), &["--format", "json", "list"]).await.stdout).unwrap();
    let broken = listed.as_array().unwrap().iter().find(|m| m["name"] == "broken").unwrap();
    assert_eq!(
        (broken["states"][0]["health"].as_str(), broken["states"][0]["failures"].as_u64()),
        (Some("failing"), Some(1))
    );
    let status = stdout(&cli(f.config_path(), &["status"]).await);
    assert!(status.lines().any(|l| l.starts_with("broken") && l.contains("failing")), "{status}");
}

/// A corrupt newest report: `status` shows the one before it (it used to say "no reports yet",
/// and `status --check` "UNKNOWN - no push reports yet").
#[tokio::test]
async fn a_corrupt_newest_report_does_not_hide_the_ones_before_it() {
    let ok = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &ok.url("/"), "");
    cli(f.config_path(), &["push", "--serial", "1"]).await;
    cli(f.config_path(), &["push", "--serial", "2"]).await;
    let mut reports: Vec<_> = std::fs::read_dir(f.path("state/reports")).unwrap().map(|e| e.unwrap().path()).collect();
    reports.sort();
    std::fs::write(reports.last().unwrap(), "{ half a report").unwrap();
    // The mirrors' state is rebuilt from the history too, as after a lost state file.
    std::fs::remove_file(f.path("state/mirrors.json")).unwrap();
    let status = stdout(&cli(f.config_path(), &["status"]).await);
    assert!(status.starts_with("== debian: last push 1 at "), "{status}");
    let check = cli(f.config_path(), &["status", "--check"]).await;
    assert_eq!(check.status.code(), Some(0), "{}", stdout(&check));
    assert!(stdout(&check).starts_with("PUSHMIRROR OK - 1 of 1 mirror(s) ok | "), "{}", stdout(&check));
}

/// `check` warns about an archive no mirror carries (a typo in a mirror's `archives:`), and still
/// passes.
#[test]
fn check_warns_about_an_archive_no_mirror_carries() {
    let f = Fixture::with_main("");
    f.mirror("m", "http:\n  url: http://127.0.0.1:9/\narchives: [debain]\n");
    let out = f.cli(&["check"]);
    // The typo is an error of its own (unknown archive); without it, only the warning remains.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    f.mirror("m", "http:\n  url: http://127.0.0.1:9/\narchives: []\n");
    let out = f.cli(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: archives.debian: no mirror carries it"), "{}", stderr(&out));
}
