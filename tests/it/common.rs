//! A temporary pushmirror installation: config, mirrors.d, archive, state dir.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pushmirror::config::{self, Config};
use pushmirror::push::engine::Options;
use pushmirror::push::plan::PushRequest;
use pushmirror::push::report::Report;
use pushmirror::transport::Transports;
use pushmirror::vocab::clock::Clock;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    main_extra: String,
}

impl Fixture {
    /// An installation with archive `debian` (serial 2026112501) and no mirrors.
    pub fn new() -> Self {
        Self::with_main("")
    }

    /// Like `new`, with extra top-level lines in pushmirror.yaml.
    pub fn with_main(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let f = Fixture { dir, main_extra: extra.to_string() };
        std::fs::create_dir_all(f.path("mirrors.d")).unwrap();
        std::fs::create_dir_all(f.path("archive/project/trace")).unwrap();
        std::fs::write(f.path("archive/project/trace/master"), "Archive serial: 2026112501\n").unwrap();
        f.write_main();
        f
    }

    fn write_main(&self) {
        let concurrency = if self.main_extra.contains("concurrency:") { "" } else { "concurrency: 8\n" };
        let text = format!(
            "mirrors_dir: mirrors.d\nstate_dir: state\n{concurrency}{}archives:\n  debian:\n    root: archive\n",
            self.main_extra
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Replaces pushmirror.yaml with `text` (which should set `mirrors_dir: mirrors.d`,
    /// `state_dir: state` and an archive rooted at `archive`).
    pub fn set_main(&self, text: &str) -> &Self {
        std::fs::write(self.config_path(), text).unwrap();
        self
    }

    /// Writes the archive's trace file with this serial.
    pub fn set_serial(&self, serial: &str) {
        std::fs::write(self.path("archive/project/trace/master"), format!("Archive serial: {serial}\n")).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("pushmirror.yaml")
    }

    /// Writes `mirrors.d/NAME.yaml`.
    pub fn mirror(&self, name: &str, yaml: &str) -> &Self {
        std::fs::write(self.path(&format!("mirrors.d/{name}.yaml")), yaml).unwrap();
        self
    }

    /// An HTTP mirror with its URL inline and quick retries.
    pub fn http_mirror(&self, name: &str, url: &str, extra: &str) -> &Self {
        self.mirror(name, &format!("http:\n  url: {url}\nbackoff: {{ initial: 100ms, max: 1s }}\n{extra}"))
    }

    /// Writes a 0600 secret file and returns its path.
    pub fn secret(&self, rel: &str, value: &str) -> PathBuf {
        let p = self.path(rel);
        pushmirror::demo::write_secret(&p, value).unwrap();
        p
    }

    pub fn config(&self) -> Config {
        config::load(&self.config_path()).unwrap_or_else(|e| panic!("fixture config invalid:\n{e}"))
    }

    /// Pushes archive `debian` in-process with the real transports.
    pub async fn push(&self, request: PushRequest) -> Report {
        let config = self.config();
        let plan = pushmirror::push::plan_push(&config, &request).unwrap();
        let engine = pushmirror::push::engine(
            &config,
            Arc::new(Transports::new(&config, pushmirror::transport::mqtt::connect::BrokerSession::Once).unwrap()),
            Clock::system(),
        );
        pushmirror::push::execute(&config, &engine, &plan, &Options::default(), "test").await
    }

    /// Runs the pushmirror binary with `-c` pointing at this installation.
    pub fn cli(&self, args: &[&str]) -> Output {
        run_bin(&self.config_path(), args)
    }
}

pub fn run_bin(config: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run pushmirror")
}

/// Starts pushmirror with `args`, its output piped.
pub fn spawn_bin(config: &Path, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pushmirror")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The report row of mirror `name`.
pub fn row<'a>(report: &'a Report, name: &str) -> &'a pushmirror::push::report::TriggerReport {
    report.triggers.iter().find(|t| t.mirror == name).unwrap_or_else(|| panic!("no row for {name}"))
}

/// A server on 127.0.0.1:0 that answers every request with `200` and a `Content-Length` of 1000,
/// then sends that body one byte a second. Returns its URL and how many requests it read.
pub async fn dribbling_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut tcp = BufReader::new(tcp);
                let mut line = String::new();
                // The request head ends with an empty line.
                while tcp.read_line(&mut line).await.unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n";
                if tcp.get_mut().write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..1000 {
                    if tcp.get_mut().write_all(b".").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    (url, requests)
}

/// Waits until `cond` holds, checking every 20 ms, for at most a minute (then fails with `what`).
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "never happened: {what}");
}
