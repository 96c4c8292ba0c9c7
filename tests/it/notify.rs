//! Notifications and hooks against real peers: a real SMTP server (Debian's python3-aiosmtpd)
//! reached over SMTP and through a real sendmail (msmtp-mta), webhook receivers, hooks that
//! hang, and the daemon's before_push / after_push hooks. Missing tools fail the tests under `CI`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pushmirror::demo::{HttpReceiver, Reply};

use crate::common::{Fixture, PYTHON, python_has, stderr, stdout};

/// Whether process `pid` is gone, a zombie, or has SIGKILL pending (killed; on a loaded machine
/// it may not have run to its end yet).
fn dead_or_killed(pid: &str) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return true };
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default();
    let pending = |name: &str| u64::from_str_radix(field(name), 16).unwrap_or(0) & (1 << 8) != 0;
    field("State:").starts_with(['Z', 'X']) || pending("SigPnd:") || pending("ShdPnd:")
}

/// A real SMTP server on a free loopback port: aiosmtpd, keeping each message it accepts as
/// `NNNN.eml` in a directory.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

const SMTP_SERVER: &str = r#"
import asyncio, os, sys
from aiosmtpd.smtp import SMTP
out = sys.argv[1]
class Keep:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(out) if f.endswith(".eml")])
        tmp = os.path.join(out, "%04d.tmp" % n)
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(out, "%04d.eml" % n))
        return "250 Message accepted"
async def main():
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(Keep()), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"#;

impl SmtpServer {
    /// Started on a port the kernel hands out, which it prints once it listens.
    fn start() -> Option<Self> {
        if !python_has("aiosmtpd", "python3-aiosmtpd") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(PYTHON)
            .args(["-c", SMTP_SERVER, dir.path().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the SMTP server did not start: {line:?}"));
        Some(SmtpServer { child, port, dir })
    }

    /// The messages received so far, in order.
    fn mails(&self) -> Vec<PathBuf> {
        let mut mails: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        mails.sort();
        mails
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `mail` with python's `email` parser in its strict policy (a defect is an error) and
/// returns `Subject`, then the body.
fn parse_mail(mail: &Path) -> (String, String) {
    let script = r#"
import sys, email
from email import policy
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=policy.strict)
for h in ("From", "To", "Date", "Message-ID", "Subject"):
    assert m[h], "no " + h
print(m["Subject"])
print(m.get_content())
"#;
    let out = Command::new(PYTHON).args(["-c", script, mail.to_str().unwrap()]).output().unwrap();
    assert!(
        out.status.success(),
        "not an RFC 5322 message: {}\n{}",
        stderr(&out),
        std::fs::read_to_string(mail).unwrap()
    );
    let text = stdout(&out);
    let (subject, body) = text.split_once('\n').unwrap();
    (subject.to_string(), body.to_string())
}

/// An installation whose mirror `flaky` answers each trigger as `script` says (one attempt per
/// push), its URL a secret (`s3cret-token` in its path), and whose main file ends with `extra`.
fn flaky(receiver: &HttpReceiver, extra: &str) -> Fixture {
    let f = Fixture::with_main(extra);
    let url = f.secret("mirrors.d/flaky.url", &format!("{}s3cret-token/trigger", receiver.url("/")));
    f.mirror("flaky", &format!("http:\n  url_file: {}\nretries: 0\n", url.display()));
    f
}

/// Polls `probe` (every 50 ms, at most a minute) until it yields something.
async fn until_some<T, F: std::future::Future<Output = Option<T>>>(what: &str, probe: impl Fn() -> F) -> T {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("never happened: {what}"))
}

async fn cli(f: &Fixture, args: &[&str]) -> Output {
    let (config, args) = (f.config_path(), args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::common::run_bin(&config, &args)
    })
    .await
    .unwrap()
}

/// A mirror failing twice makes exactly one mail, its recovery one more, failing again within
/// `min_interval` none — over SMTP to a real server, and through a real sendmail (msmtp)
/// pointed at it. Every mail parses as RFC 5322 and carries no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_sent_once_per_change_through_smtp_and_sendmail() {
    let Some(smtp) = SmtpServer::start() else { return };
    let script = [500, 500, 200, 500, 500].map(Reply::Status);
    // Over SMTP.
    let receiver = HttpReceiver::builder().script(script).start().await.unwrap();
    let via = format!("smtp://127.0.0.1:{}", smtp.port);
    let f = flaky(
        &receiver,
        &format!(
            "notify:\n  mail: {{ to: [ops@example.org], from: pushmirror@primary.example.org, via: \"{via}\" }}\nstatus: {{ public_url: \"https://primary.example.org/pushmirror/\" }}\n"
        ),
    );
    let mut seen = Vec::new();
    for push in 1..=5 {
        let out = cli(&f, &["push"]).await;
        assert!(stdout(&out).contains("debian serial 2026112501"), "push {push}: {}", stderr(&out));
        seen.push(smtp.mails().len());
    }
    assert_eq!(seen, [0, 1, 2, 2, 2], "mails after each push");
    let (subject, body) = parse_mail(&smtp.mails()[0]);
    assert_eq!(
        subject,
        format!("[pushmirror] debian 2026112501 on {}: 1 failing", pushmirror::notify::event::hostname())
    );
    assert!(body.contains("flaky failing since") && body.contains("(2 failures in a row): http-status"), "{body}");
    assert!(body.contains("Status: https://primary.example.org/pushmirror/"), "{body}");
    let (subject, _) = parse_mail(&smtp.mails()[1]);
    assert!(subject.ends_with(": 1 recovered"), "{subject}");
    for mail in smtp.mails() {
        assert!(!std::fs::read_to_string(&mail).unwrap().contains("s3cret-token"), "a secret in {}", mail.display());
    }

    // Through /usr/sbin/sendmail (msmtp-mta), configured for the same server.
    if !Path::new("/usr/sbin/sendmail").exists() {
        assert!(std::env::var_os("CI").is_none(), "msmtp-mta is required in CI: apt-get install msmtp-mta");
        return;
    }
    let receiver = HttpReceiver::builder().script([500, 500].map(Reply::Status)).start().await.unwrap();
    let msmtprc = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        msmtprc.path(),
        format!(
            "account default\nhost 127.0.0.1\nport {}\nauth off\ntls off\nfrom pushmirror@primary.example.org\n",
            smtp.port
        ),
    )
    .unwrap();
    let sendmail = format!("/usr/sbin/sendmail -C {} -t -oi", msmtprc.path().display());
    let f = flaky(
        &receiver,
        &format!(
            "notify:\n  mail: {{ to: [ops@example.org], from: pushmirror@primary.example.org, via: \"{sendmail}\" }}\n"
        ),
    );
    let before = smtp.mails().len();
    cli(&f, &["push"]).await;
    cli(&f, &["push"]).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), before + 1, "one mail through sendmail");
    let (subject, _) = parse_mail(mails.last().unwrap());
    assert!(subject.ends_with(": 1 failing"), "{subject}");
}

/// Webhooks get the same events: as JSON that validates against the documented schema
/// (`docs/notify-event.schema.json`, python3-jsonschema), signed ones verifiable with `openssl
/// dgst -sha256 -hmac`; and as Slack-compatible `{"text"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_events_as_json_that_validates_and_signed_ones_verify() {
    let receiver = HttpReceiver::builder().script([500, 500].map(Reply::Status)).start().await.unwrap();
    let json_hook = HttpReceiver::start().await.unwrap();
    let slack_hook = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    let secret = f.secret("secrets/hook-hmac", "hook-key-0123");
    let json_url = f.secret("secrets/json.url", &json_hook.url("/hooks/s3cret"));
    let slack_url = f.secret("secrets/slack.url", &slack_hook.url("/services/T000/s3cret"));
    let url = f.secret("mirrors.d/flaky.url", &receiver.url("/trigger"));
    f.mirror("flaky", &format!("http:\n  url_file: {}\nretries: 0\n", url.display()));
    f.set_main(&format!(
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\nnotify:\n  webhooks:\n    - {{ url_file: {}, hmac_secret_file: {} }}\n    - {{ url_file: {}, format: slack }}\n",
        json_url.display(),
        secret.display(),
        slack_url.display()
    ));
    cli(&f, &["push"]).await;
    cli(&f, &["push"]).await;
    let hits = json_hook.log().hits();
    assert_eq!(hits.len(), 1, "one event: the mirror started failing");
    let body = hits[0].body.clone();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((event["kind"].as_str(), event["changes"][0]["change"].as_str()), (Some("push"), Some("failing")));
    crate::common::assert_valid("docs/notify-event.schema.json", &body);
    let (timestamp, signature) =
        (hits[0].header("x-pushmirror-timestamp").unwrap(), hits[0].header("x-pushmirror-signature").unwrap());
    let mut signed = timestamp.as_bytes().to_vec();
    signed.push(b'.');
    signed.extend_from_slice(&body);
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", "hook-key-0123"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write as _;
    openssl.stdin.take().unwrap().write_all(&signed).unwrap();
    let digest = stdout(&openssl.wait_with_output().unwrap());
    let hex = digest.trim().rsplit(' ').next().unwrap();
    assert_eq!(signature, format!("sha256={hex}"));
    let slack: serde_json::Value = serde_json::from_slice(&slack_hook.log().hits()[0].body).unwrap();
    assert!(slack["text"].as_str().unwrap().contains("flaky failing"), "{slack}");
    for hit in [&hits[0], &slack_hook.log().hits()[0]] {
        assert!(!String::from_utf8_lossy(&hit.body).contains("s3cret"), "a secret in a webhook body");
    }

    // `notify test` sends a test event through every channel now and says how each went; the
    // URLs (secrets) are not in what it says.
    let out = cli(&f, &["notify", "test"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().filter(|l| l.ends_with(": sent")).count(), 2, "{}", stdout(&out));
    assert!(!stdout(&out).contains("s3cret") && !stderr(&out).contains("s3cret"), "{}", stdout(&out));
    let test: serde_json::Value = serde_json::from_slice(&json_hook.log().hits()[1].body).unwrap();
    assert_eq!(test["kind"], "test", "{test}");
    // A channel that fails makes it exit 1, naming it.
    drop(slack_hook);
    let out = cli(&f, &["notify", "test"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("FAILED"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("s3cret"), "{}", stdout(&out));
}

/// A hung MTA and a hung hook delay nothing: the daemon's push is stored and shown as soon as its
/// triggers end; the mail that could not be delivered stays queued, is retried later, and is
/// counted; the hook is killed at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_mta_and_a_hung_hook_delay_no_push() {
    use pushmirror::daemon::{Control, Daemon};
    // An "MTA" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let receiver = HttpReceiver::builder().reply(Reply::Status(500)).start().await.unwrap();
    let f = Fixture::new();
    let url = f.secret("mirrors.d/flaky.url", &receiver.url("/trigger"));
    f.mirror("flaky", &format!("http:\n  url_file: {}\nretries: 0\n", url.display()));
    let hung = f.path("hung.sh");
    let pids = f.path("hook-pids");
    std::fs::write(&hung, format!("#!/bin/sh\nsleep 3600 &\necho $! >> {}\nsleep 3600\n", pids.display())).unwrap();
    std::fs::set_permissions(&hung, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    f.set_main(&format!(
        "mirrors_dir: mirrors.d\nstate_dir: state\nstatus: {{ listen: 127.0.0.1:0 }}\narchives:\n  debian:\n    root: archive\n    settle: 100ms\n    poll: 1s\n\
         notify:\n  after_failures: 1\n  timeout: 1s\n  mail: {{ to: [ops@example.org], via: \"smtp://127.0.0.1:{port}\" }}\n\
         hooks:\n  after_push: [\"{0}\"]\n  on_event: [\"{0}\"]\n  timeout: 1s\n",
        hung.display()
    ));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon: Daemon = pushmirror::daemon::start(
        f.config_path(),
        f.config(),
        Control::new(shutdown.clone(), rx),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut status = daemon.status.clone();
    status.wait_for(|s| s.archives[0].pushed_version.is_some()).await.unwrap();
    f.set_serial("2026112502");
    // The push ends and is shown as soon as its trigger fails.
    let shown = tokio::time::timeout(
        Duration::from_secs(120),
        status.wait_for(|s| s.archives[0].pushed_version.as_deref() == Some("2026112502")),
    )
    .await
    .expect("the push was shown")
    .unwrap()
    .archives[0]
        .last_report
        .clone()
        .unwrap();
    assert_eq!(shown.summary.failed, 1);
    let stored = pushmirror::push::report::History::new(&f.path("state"), 10).latest_per_archive().unwrap();
    assert_eq!(stored["debian"].serial.as_deref(), Some("2026112502"), "stored on time");
    // The mail is attempted, fails at its timeout, stays queued for a later retry; counted.
    let metrics = format!("http://{}/metrics", daemon.addr);
    let failed = until_some("the failed mail counted", || {
        let metrics = metrics.clone();
        async move {
            let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
            let mail = text.contains(r#"pushmirror_notifications_total{channel="mail",result="failed"} 1"#);
            let hook = text.contains(r#"pushmirror_notifications_total{channel="hook",result="failed"} 1"#);
            (mail && hook).then_some(text)
        }
    })
    .await;
    assert!(!failed.contains(r#"result="sent""#), "nothing was delivered: {failed}");
    let queue: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("state/notify/queue.json")).unwrap()).unwrap();
    let mail = queue.as_array().unwrap().iter().find(|q| q["channel"] == "mail").expect("the mail stays queued");
    assert_eq!(mail["attempts"], 1);
    assert!(mail["error"].as_str().unwrap().contains("no answer within 1s"), "{mail}");
    shutdown.cancel();
    daemon.wait().await.unwrap();
    held.abort();
    // The hooks' whole process groups were killed: none of the `sleep 3600` they left in the
    // background lives on (a zombie waiting for its reaper is dead).
    let pids = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<&str> = pids.lines().collect();
    assert!(pids.len() >= 2, "both hooks ran: {pids:?}");
    for pid in pids {
        assert!(dead_or_killed(pid), "a hook's child {pid} outlived its timeout");
    }
}

/// Through the daemon: a `before_push` hook that exits non-zero vetoes the push (nothing sent,
/// every trigger skipped with reason `hook`); `after_push` gets the report as JSON on stdin and
/// PUSHMIRROR_ARCHIVE, PUSHMIRROR_SERIAL, PUSHMIRROR_REPORT — and none of the daemon's own
/// environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_push_vetoes_and_after_push_gets_the_report_through_the_daemon() {
    use pushmirror::daemon::Control;
    let receiver = HttpReceiver::start().await.unwrap();
    let f = Fixture::new();
    f.http_mirror("m", &receiver.url("/"), "");
    let gate = f.path("gate.sh");
    std::fs::write(&gate, format!("#!/bin/sh\n[ ! -e {} ]\n", f.path("veto").display())).unwrap();
    let after = f.path("after.sh");
    std::fs::write(&after, format!("#!/bin/sh\ncat > {0}/after.json\nenv > {0}/after.env\n", f.path("").display()))
        .unwrap();
    for script in [&gate, &after] {
        std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    f.set_main(&format!(
        "mirrors_dir: mirrors.d\nstate_dir: state\nstatus: {{ listen: 127.0.0.1:0 }}\narchives:\n  debian:\n    root: archive\n    settle: 100ms\n    poll: 1s\nhooks:\n  before_push: [\"{}\"]\n  after_push: [\"{}\"]\n",
        gate.display(),
        after.display()
    ));
    std::fs::write(f.path("veto"), "").unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon = pushmirror::daemon::start(
        f.config_path(),
        f.config(),
        Control::new(shutdown.clone(), rx),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut status = daemon.status.clone();
    status.wait_for(|s| s.archives[0].pushed_version.is_some()).await.unwrap();
    f.set_serial("2026112502");
    let vetoed = status
        .wait_for(|s| s.archives[0].last_report.as_ref().is_some_and(|r| r.serial.as_deref() == Some("2026112502")))
        .await
        .unwrap();
    let report = vetoed.archives[0].last_report.clone().unwrap();
    drop(vetoed);
    assert_eq!(report.triggers[0].skip_reason, Some(pushmirror::vocab::model::SkipReason::Hook), "{report:?}");
    assert_eq!(receiver.log().count(), 0, "a vetoed push sent something");
    assert!(!f.path("after.json").exists(), "after_push ran for a push that did not happen");

    std::fs::remove_file(f.path("veto")).unwrap();
    f.set_serial("2026112503");
    receiver.log().wait_for(1).await;
    let env = until_some("after_push ran", || {
        let path = f.path("after.env");
        async move { std::fs::read_to_string(&path).ok().filter(|e| e.contains("PUSHMIRROR_REPORT=")) }
    })
    .await;
    let json: pushmirror::push::report::Report =
        serde_json::from_str(&std::fs::read_to_string(f.path("after.json")).unwrap()).unwrap();
    assert_eq!((json.serial.as_deref(), json.summary.ok), (Some("2026112503"), 1));
    let vars: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(env.contains("PUSHMIRROR_ARCHIVE=debian\n") && env.contains("PUSHMIRROR_SERIAL=2026112503\n"), "{env}");
    let report_file = env.lines().find_map(|l| l.strip_prefix("PUSHMIRROR_REPORT=")).unwrap();
    assert!(Path::new(report_file).exists(), "{report_file}");
    let allowed =
        ["PATH", "HOME", "LANG", "PWD", "SHLVL", "_", "PUSHMIRROR_ARCHIVE", "PUSHMIRROR_SERIAL", "PUSHMIRROR_REPORT"];
    assert!(vars.iter().all(|v| allowed.contains(v)), "the hook's environment: {vars:?}");
    shutdown.cancel();
    daemon.wait().await.unwrap();
}
