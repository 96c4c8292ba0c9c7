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
        self.push_with_clock(request, Clock::system()).await
    }

    /// [`Fixture::push`] from a host whose wall clock is `clock` (it stamps MQTT triggers).
    pub async fn push_with_clock(&self, request: PushRequest, clock: Clock) -> Report {
        let config = self.config();
        let plan = pushmirror::push::plan_push(&config, &request).unwrap();
        let session = pushmirror::transport::mqtt::connect::BrokerSession::Once;
        let engine = pushmirror::push::engine(
            &config,
            Arc::new(Transports::with_clock(&config, session, clock).unwrap()),
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

/// `promtool check metrics` accepts `text` (Prometheus' own linter, from Debian's `prometheus`);
/// required under `CI`, skipped elsewhere when missing.
pub fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "promtool is required in CI (apt-get install prometheus)");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");
}

/// `perf` is performance data as the monitoring-plugins guidelines define it: space-separated
/// `'label'=value[UOM];[warn];[crit];[min];[max]`, labels without `=` or `'`, values numbers,
/// thresholds ranges (`[@][start:]end`, `~` for minus infinity).
pub fn assert_perfdata(perf: &str) {
    let number = |s: &str| !s.is_empty() && s.parse::<f64>().is_ok();
    let range = |s: &str| {
        let s = s.strip_prefix('@').unwrap_or(s);
        match s.split_once(':') {
            Some((start, end)) => (start == "~" || number(start)) && (end.is_empty() || number(end)),
            None => number(s),
        }
    };
    assert!(!perf.is_empty(), "no perfdata");
    // Items are separated by spaces outside quoted labels.
    let mut items = vec![String::new()];
    let mut quoted = false;
    for c in perf.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                items.push(String::new());
                continue;
            }
            _ => {}
        }
        items.last_mut().unwrap().push(c);
    }
    for item in &items {
        let (label, rest) = item.rsplit_once('=').unwrap_or_else(|| panic!("`{item}`: no `=`"));
        let label = label.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')).unwrap_or(label);
        assert!(!label.is_empty() && !label.contains(['=', '\'']), "`{item}`: bad label");
        let fields: Vec<&str> = rest.split(';').collect();
        assert!(fields.len() <= 5, "`{item}`: more than value;warn;crit;min;max");
        let value = fields[0].trim_end_matches(|c: char| c.is_ascii_alphabetic() || c == '%');
        assert!(number(value), "`{item}`: value `{}` is not a number", fields[0]);
        for t in fields.iter().skip(1).take(2).filter(|t| !t.is_empty()) {
            assert!(range(t), "`{item}`: threshold `{t}` is not a range");
        }
        for m in fields.iter().skip(3).filter(|m| !m.is_empty()) {
            assert!(number(m), "`{item}`: min/max `{m}` is not a number");
        }
    }
}

/// Debian's chromium, if installed (CI installs it; without it the test fails under `CI`).
pub fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(std::path::PathBuf::from).find(|p| p.exists())
}

pub fn headless(browser: &std::path::Path, profile: &std::path::Path, args: &[String]) -> std::process::Output {
    std::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

/// Debian's python3 (its modules: `python3` on PATH may be another one).
pub const PYTHON: &str = "/usr/bin/python3";

/// Whether Debian's python3 has `module` (from Debian's `package`); required under `CI`.
pub fn python_has(module: &str, package: &str) -> bool {
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var_os("CI").is_none(), "{package} is required in CI: apt-get install {package}");
    if !ok {
        eprintln!("{package} not installed: skipping outside CI");
    }
    ok
}

/// Asserts that `json` validates against the JSON Schema in the repository file `schema`
/// (python3-jsonschema; the document goes through stdin, it can be megabytes).
pub fn assert_valid(schema: &str, json: &[u8]) {
    use std::io::Write as _;
    if !python_has("jsonschema", "python3-jsonschema") {
        return;
    }
    let script = "import json, sys, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.validators.validator_for(schema).check_schema(schema)\n\
        jsonschema.validate(json.load(sys.stdin), schema)";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(schema);
    let mut child = std::process::Command::new(PYTHON)
        .args(["-c", script])
        .arg(&path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(json).unwrap();
    let out = child.wait_with_output().unwrap();
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "not valid against {schema}: {}",
        why.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
}
