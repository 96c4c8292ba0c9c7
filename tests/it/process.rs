//! The daemon binary as systemd runs it: SIGKILL and restart, SIGHUP with a broken file, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushmirror::demo::{HttpReceiver, Reply};
use pushmirror::push::report::Report;
use pushmirror::vocab::model::Outcome;
use tokio::sync::Notify;

use crate::common::{Fixture, eventually};

/// A running `pushmirror daemon` (or another long-running command) whose stderr is collected
/// line by line.
pub(crate) struct DaemonProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
    /// The thread collecting `lines`; it ends when the process's stderr closes.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DaemonProcess {
    fn spawn(f: &Fixture) -> Self {
        Self::spawn_args(&["-c", f.config_path().to_str().unwrap(), "daemon", "--grace", "20s"])
    }

    /// `pushmirror ARGS…`.
    pub(crate) fn spawn_args(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushmirror"));
        command.args(args);
        Self::spawn_command(command)
    }

    /// `pushmirror ARGS…` allowed at most `files` open files, as `ulimit -n` in its shell would.
    pub(crate) fn spawn_with_open_files(files: u32, args: &[&str]) -> Self {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "ulimit -n \"$0\" && exec \"$@\""])
            .arg(files.to_string())
            .arg(env!("CARGO_BIN_EXE_pushmirror"))
            .args(args);
        Self::spawn_command(command)
    }

    fn spawn_command(mut command: Command) -> Self {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let stderr = child.stderr.take().unwrap();
        let (l, c) = (Arc::clone(&lines), Arc::clone(&changed));
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
                c.notify_waiters();
            }
            c.notify_waiters();
        });
        DaemonProcess { child, lines, changed, reader: Some(reader) }
    }

    /// Waits (up to a minute) for a log line containing `needle`.
    pub(crate) async fn line(&self, needle: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let changed = self.changed.notified();
                if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                    return l.clone();
                }
                changed.await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no log line with `{needle}`:\n{}", self.log()))
    }

    pub(crate) fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    pub(crate) async fn exit(mut self) -> (ExitStatus, String) {
        let (status, mut this) = tokio::task::spawn_blocking(move || {
            let s = self.child.wait().unwrap();
            (s, self)
        })
        .await
        .unwrap();
        // The process is gone, but its last lines may still be in the pipe: the log is complete
        // once the reader has seen the end of it.
        let reader = this.reader.take().unwrap();
        let drained = tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(move || reader.join()));
        assert!(matches!(drained.await, Ok(Ok(Ok(())))), "stderr was not read to its end:\n{}", this.log());
        (status, this.log())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon_yaml() -> &'static str {
    "mirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: 8\nstatus: { listen: 127.0.0.1:0 }\narchives:\n  debian:\n    root: archive\n    settle: 100ms\n    poll: 1s\n"
}

fn reports(f: &Fixture) -> Vec<Report> {
    pushmirror::push::report::History::new(&f.path("state"), 100).all().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_push_loses_nothing_and_resends_only_what_was_in_flight() {
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        fast.push(HttpReceiver::start().await.unwrap());
        slow.push(HttpReceiver::builder().script([Reply::Hang]).start().await.unwrap());
    }
    let f = Fixture::new();
    f.set_main(daemon_yaml());
    for (i, rx) in fast.iter().enumerate() {
        f.http_mirror(&format!("fast{i}"), &rx.url("/"), "");
    }
    for (i, rx) in slow.iter().enumerate() {
        f.http_mirror(&format!("slow{i}"), &rx.url("/"), "timeout: 10m\n");
    }
    let first = DaemonProcess::spawn(&f);
    first.line("first start").await;
    f.set_serial("2");
    for rx in fast.iter().chain(&slow) {
        rx.log().wait_for(1).await;
    }
    let due = f.path("state/daemon/debian.due");
    eventually("both fast mirrors journalled", || {
        let text = std::fs::read_to_string(&due).unwrap_or_default();
        text.contains("fast0") && text.contains("fast1")
    })
    .await;
    first.signal("KILL");
    let (status, _) = first.exit().await;
    assert!(!status.success());
    assert!(due.exists(), "the due push must survive kill -9");

    let second = DaemonProcess::spawn(&f);
    second.line("resuming a push that was due").await;
    second.line("push finished").await;
    for rx in &slow {
        assert_eq!(rx.log().count(), 2, "an interrupted trigger is sent again");
    }
    for rx in &fast {
        assert_eq!(rx.log().count(), 1, "a delivered trigger was sent twice");
    }
    assert!(!due.exists(), "the finished push is no longer due");
    let last = reports(&f).pop().unwrap();
    assert_eq!(last.serial.as_deref(), Some("2"));
    assert_eq!((last.summary.ok, last.summary.skipped), (2, 2));
    second.signal("TERM");
    let (status, log) = second.exit().await;
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_running_and_sigterm_drains() {
    let rx = HttpReceiver::builder().script([Reply::Delay(Duration::from_secs(2), 200)]).start().await.unwrap();
    let f = Fixture::new();
    f.set_main(daemon_yaml());
    f.http_mirror("m", &rx.url("/"), "");
    let d = DaemonProcess::spawn(&f);
    d.line("first start").await;

    f.mirror("broken", "http:\n  url: http://127.0.0.1:9/\ntimeout: forever\n");
    d.signal("HUP");
    let error = d.line("broken.yaml:").await;
    assert!(error.contains("broken.yaml:3:1: timeout: invalid duration"), "{error}");
    d.line("invalid configuration, keeping the old one").await;

    f.set_serial("2");
    rx.log().wait_for(1).await;
    // The push is in flight (the receiver takes 2 s): SIGTERM must let it finish.
    d.signal("TERM");
    let (status, log) = d.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    let last = reports(&f).pop().expect("a report was written");
    assert_eq!(last.triggers.len(), 1, "the broken mirror was never loaded");
    assert_eq!(last.triggers[0].outcome, Outcome::Ok, "{log}");
    assert!(log.contains("stopping"), "{log}");
}

/// A push whose `concurrency` (1000) is far above the process's open-file limit (64): the
/// triggers in flight are capped at half the limit, said once, and every one is delivered —
/// no `EMFILE` (too many open files) on the way. The receiver holds each request 50 ms, so
/// without the cap 1000 connections would be open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_above_the_open_file_limit_is_capped_not_emfile() {
    let rx = HttpReceiver::builder().reply(Reply::Delay(Duration::from_millis(50), 200)).start().await.unwrap();
    let f = Fixture::with_main("concurrency: 1000\nmax_per_host: 1000\n");
    for i in 0..300 {
        f.http_mirror(&format!("m{i:03}"), &rx.url(&format!("/m{i}")), "retries: 0\n");
    }
    let config = f.config_path();
    let p = DaemonProcess::spawn_with_open_files(64, &["-c", config.to_str().unwrap(), "push", "debian"]);
    let (status, log) = p.exit().await;
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("concurrency lowered from 1000 to 32"), "{log}");
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    assert_eq!(rx.log().count(), 300);
    assert!(rx.log().peak_in_flight() <= 32, "{}", rx.log().peak_in_flight());
}

/// SSH mirrors through a `kill -9` loop: five versions, each push killed mid-way and resumed by
/// the next start. Every version reaches every mirror; a mirror the journal had recorded as done
/// at the kill gets that version exactly once, any other at most twice (it was in flight); no
/// mirror ever gets the version that was only recorded at the first start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_mirrors_through_a_kill_9_loop_lose_nothing() {
    use pushmirror::demo::{Behaviour, SshReceiver};
    let f = Fixture::new();
    f.set_main(&format!("identity: keys/id\n{}", daemon_yaml()));
    let client = pushmirror::wire::keys::generate(&f.path("keys/id"), "pushmirror@test").unwrap().public;
    let mut receivers = Vec::new();
    for i in 0..12u64 {
        // In flight for 0 to 550 ms each: a kill after the tenth arrival (concurrency 8: two
        // have ended) finds some done, some running.
        let behaviour = Behaviour::ExitAfter(Duration::from_millis(50 * i), 0);
        let rx = SshReceiver::builder().authorize(&client).behaviour(behaviour).start().await.unwrap();
        f.mirror(
            &format!("m{i:02}"),
            &format!(
                "ssh: {{ host: 127.0.0.1, port: {}, user: archvsync }}\nhost_key: \"{}\"\ncommand: \"sync {{serial}}\"\n",
                rx.port(),
                rx.host_key_line()
            ),
        );
        receivers.push(rx);
    }
    let got =
        |rx: &SshReceiver, serial: u32| rx.log().commands().iter().filter(|c| **c == format!("sync {serial}")).count();
    let mut daemon = DaemonProcess::spawn(&f);
    daemon.line("first start").await;
    let due = f.path("state/daemon/debian.due");
    let mut done_at_kill: Vec<(u32, Vec<String>)> = Vec::new();
    for serial in 2..=6u32 {
        f.set_serial(&serial.to_string());
        eventually("a few triggers of the version arrived", || {
            receivers.iter().map(|rx| got(rx, serial)).sum::<usize>() >= 10
        })
        .await;
        daemon.signal("KILL");
        let (status, _) = daemon.exit().await;
        assert!(!status.success());
        let journal = std::fs::read_to_string(&due).unwrap_or_default();
        let done: Vec<String> =
            (0..12).map(|i| format!("m{i:02}")).filter(|m| journal.contains(&format!("\"{m}\""))).collect();
        done_at_kill.push((serial, done));
        daemon = DaemonProcess::spawn(&f);
        eventually("every mirror got the version", || receivers.iter().all(|rx| got(rx, serial) >= 1)).await;
        eventually("the push is no longer due", || !due.exists()).await;
    }
    daemon.signal("TERM");
    let (status, log) = daemon.exit().await;
    assert!(status.success(), "{log}");
    for (i, rx) in receivers.iter().enumerate() {
        let name = format!("m{i:02}");
        assert_eq!(got(rx, 2026112501), 0, "{name} got the version of the first start");
        for (serial, done) in &done_at_kill {
            let n = got(rx, *serial);
            let most = if done.contains(&name) { 1 } else { 2 };
            assert!(
                (1..=most).contains(&n),
                "{name} got {serial} {n} times (done at the kill: {})",
                done.contains(&name)
            );
        }
        assert_eq!(rx.log().count(), rx.log().commands().iter().filter(|c| c.starts_with("sync ")).count());
    }
    let journalled: usize = done_at_kill.iter().map(|(_, d)| d.len()).sum();
    eprintln!("killed 5 pushes; {journalled} mirror/version pairs were journalled done at the kills");
}
