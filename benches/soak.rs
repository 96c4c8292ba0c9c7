//! Months unattended, compressed: the release daemon under a seeded stream of archive updates and
//! faults, with invariants checked over the whole history and its resources sampled throughout.
//!
//! ```text
//! cargo bench --bench soak -- --quick                 # 5 minutes
//! cargo bench --bench soak -- --duration 1h --seed 7  # the documented run
//! cargo bench --bench soak -- --quick --break drop    # proves the checker catches a lost trigger
//! ```
//! The other end: in-process receivers in this process — HTTP servers whose mirrors answer ok,
//! slowly, flakily (503), by refusing (403) or flapping, russh SSH receivers, and (when Debian's
//! mosquitto is installed; required under `CI`) MQTT 5 subscribers of a private persistent
//! mosquitto that verify each trigger's signature, run each nonce once and ack — on loopback.
//! Injected at random (the seed decides): archive updates every `--interval` with the update lock
//! held for a random while (versions written under the lock and replaced before it is released
//! never complete), SIGHUP with alternately a valid change (a mirror added or removed) and a
//! broken file, `kill -9` and restart, a broker restart (down for up to 3 s), and, as root, the
//! state disk (a small tmpfs) filled and freed.
//!
//! Checked over the whole history, then printed; exit 1 on any violation:
//! - **complete only**: no mirror got a version that never completed (written, lock released);
//! - **no fake ok**: every `ok` row of every report is a trigger the mirror received;
//! - **nothing lost**: the last version reached every mirror that does not refuse (or its last
//!   report row says failed), and nothing is left deferred;
//! - **duplicates only at kills**: a mirror got a version twice only if that version's push was
//!   under way at a `kill -9`, or a reload interrupted that mirror's trigger (a failed row of class
//!   `interrupted`: delivered or not, nobody knows, so the next push sends it again);
//! - **every failure told**: each failed row's mirror has a `trigger failed` log line;
//! - **no panic**, no `internal` outcome.
//!
//! Resources (RSS, descriptors, threads and runtime tasks of the daemon — the last from its
//! `pushmirror_runtime_tasks` —; bytes and files in `state_dir`) are sampled
//! every `--sample`; a table of start, end and max is printed and an SVG chart written
//! (`--chart`, default `target/soak.svg`). The `kill -9`s stop after `--kills` (3: at 2, 4 and
//! 6 minutes), so the full run's last life is long (54 of its 60 minutes, ~1,400 pushes): in a
//! life past its first `--warmup` pushes (300) by 600 more, RSS may grow at most
//! `--max-rss-slope` MB per 1,000 pushes — the Theil–Sen trend of its medians per 100 pushes —
//! (a full run without such a life fails); in every life descriptors, threads and tasks may not
//! grow beyond noise; `state_dir` must stay under its bound. `--judge CSV` applies these rules to
//! the samples a run wrote.
//!
//! Each checker is shown to catch its failure by a deliberately broken run (`--break MODE`, each
//! must end in that invariant VIOLATED): `drop` — one receiver answers 200 without recording (a
//! trigger lost on the way): "no fake ok" and "nothing lost"; `locks` — the lock glob misses the
//! lock file, so the daemon pushes versions under way: "complete only"; `dup` — one receiver
//! records each trigger twice: "duplicates only at kills"; `mute` — the daemon's `trigger failed`
//! lines are dropped from the captured log: "every failure told"; `crash` — an unplanned
//! `kill -9` the run did not restart itself: "no panic" (the daemon exited by itself); `leak` —
//! 20 kB and ten descriptors per push added to the samples: "flat resources".

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use clap::Parser;
use pushmirror::demo::{Behaviour, ExecLog, Seeded, SshReceiver};
use pushmirror::wire::mqtt::{self as wire, AckMessage, AckState, TriggerMessage};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

#[path = "common/procfs.rs"]
mod procfs;

#[derive(Debug, Parser)]
struct Args {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long to run [default: 1h, 5m with --quick].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Faults more often (a kill every 100 s, a SIGHUP every 23 s), five minutes unless --duration.
    #[arg(long)]
    quick: bool,
    /// A `kill -9` and restart every this long [default: 2m, 100s with --quick]; longer than
    /// `--duration` for one daemon life throughout (to watch its memory over a long life).
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_every: Option<Duration>,
    /// Archive updates every this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Mirrors (70% HTTP, 30% SSH; of the HTTP share 10 points are MQTT when mosquitto is installed).
    #[arg(long, default_value_t = 500)]
    mirrors: usize,
    /// Resource samples every this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// RSS growth allowed after warm-up, MB per 1,000 pushes.
    #[arg(long, default_value_t = 1.0)]
    max_rss_slope: f64,
    /// Warm-up: RSS is judged after each daemon life's first this many pushes, in lives with
    /// 600 more (the full run's last life; --quick's lives are too short).
    #[arg(long, default_value_t = 300)]
    warmup: usize,
    /// Judge the resources of a recorded run (its samples CSV) by the rules above, and exit.
    #[arg(long)]
    judge: Option<PathBuf>,
    /// At most this many `kill -9`s, so that the last life is long enough to judge RSS.
    #[arg(long, default_value_t = 3)]
    kills: usize,
    /// Where the chart goes.
    #[arg(long, default_value = "target/soak.svg")]
    chart: PathBuf,
    /// Break something on purpose, to see a checker catch it (the modes: this file's header).
    #[arg(long = "break")]
    breakage: Option<String>,
    /// An environment variable for the daemon only, `KEY=VALUE` (repeatable), after the unit's:
    /// e.g. a heap profiler's `LD_PRELOAD` and output pipe, to see what a growth is made of.
    #[arg(long = "daemon-env", value_parser = parse_env)]
    daemon_env: Vec<(String, String)>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_env(kv: &str) -> Result<(String, String), String> {
    let (k, v) = kv.split_once('=').ok_or_else(|| format!("`{kv}` is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(csv) = &args.judge {
        return judge(csv, &args);
    }
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

/// `--judge`: the resource rules applied to the samples a run wrote (`--chart`'s CSV).
fn judge(csv: &Path, args: &Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<f64> = line
            .split(',')
            .map(|v| v.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", csv.display(), n + 1))?;
        anyhow::ensure!(f.len() == 9, "{}:{}: want 9 fields", csv.display(), n + 1);
        samples.push(Sample {
            at: f[0],
            pid: f[1] as u32,
            pushes: f[2] as usize,
            rss_kb: f[3] as u64,
            fds: f[4] as u64,
            threads: f[5] as u64,
            tasks: f[6] as u64,
            state_kb: f[7] as u64,
            state_files: f[8] as u64,
        });
    }
    println!("{}", resource_table(&samples));
    let mut judged = Vec::new();
    let growth = growth(&samples, args.max_rss_slope, args.warmup, &mut judged);
    judged.iter().for_each(|j| println!("RSS judged: {j}"));
    growth.iter().for_each(|g| println!("VIOLATED  flat resources: {g}"));
    anyhow::ensure!(!judged.is_empty(), "no daemon life reached {} pushes: RSS not judged", args.warmup + 600);
    anyhow::ensure!(growth.is_empty(), "flat resources violated");
    println!("ok        flat resources");
    Ok(())
}

/// The seed's draws (`demo::Seeded`) as ranges and chances: the seed decides every choice.
struct Rng(Seeded);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How an HTTP mirror answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    Ok,
    /// Answers after this many milliseconds (under the mirror's timeout).
    Slow(u64),
    /// 503 this percent of the time.
    Flaky(u64),
    /// 403, always.
    Refuse,
    /// 503 in every other minute.
    Flap,
    /// 200 without recording it (`--break drop`).
    Drop,
    /// 200, recorded twice (`--break dup`).
    Twice,
}

/// What a mirror received: (mirror, serial) of every trigger it accepted.
#[derive(Default)]
struct Received {
    got: Mutex<Vec<(String, String)>>,
}

impl Received {
    fn add(&self, mirror: &str, serial: &str) {
        self.got.lock().unwrap().push((mirror.to_string(), serial.to_string()));
    }
    fn counts(&self) -> BTreeMap<(String, String), usize> {
        let mut out = BTreeMap::new();
        for key in self.got.lock().unwrap().iter() {
            *out.entry(key.clone()).or_default() += 1;
        }
        out
    }
}

struct Farm {
    policies: BTreeMap<String, Policy>,
    received: Arc<Received>,
    started: Instant,
    rng: Mutex<Rng>,
}

async fn http_trigger(State(farm): State<Arc<Farm>>, UrlPath(name): UrlPath<String>, headers: HeaderMap) -> StatusCode {
    let serial = headers.get("x-serial").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let policy = farm.policies.get(&name).copied().unwrap_or(Policy::Refuse);
    let refused = match policy {
        Policy::Ok | Policy::Drop | Policy::Twice => false,
        Policy::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            false
        }
        Policy::Flaky(p) => farm.rng.lock().unwrap().chance(p),
        Policy::Flap => (farm.started.elapsed().as_secs() / 60) % 2 == 1,
        Policy::Refuse => return StatusCode::FORBIDDEN,
    };
    if refused {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if policy != Policy::Drop {
        farm.received.add(&name, &serial);
    }
    if policy == Policy::Twice {
        farm.received.add(&name, &serial);
    }
    StatusCode::OK
}

async fn http_farm(farm: Arc<Farm>) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route("/m/{name}", axum::routing::get(http_trigger)).with_state(farm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The daemon process, its stderr kept (and scanned) line by line.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path, lines: Arc<Mutex<Vec<String>>>, extra: &[(String, String)]) -> anyhow::Result<Daemon> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushmirror"))
            .arg("-c")
            .arg(config)
            .args(["daemon", "--grace", "5s"])
            .envs(unit_environment())
            .envs(extra.iter().cloned())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        Ok(Daemon { child, lines })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status();
    }

    fn kill9(mut self) -> anyhow::Result<()> {
        self.signal("KILL");
        self.child.wait()?;
        Ok(())
    }

    /// `pushmirror_runtime_tasks` from the daemon's `/metrics` (its address from its log);
    /// `None` while a restarted daemon is not listening yet.
    async fn runtime_tasks(&self) -> Option<u64> {
        let addr = {
            let lines = self.lines.lock().unwrap();
            let line = lines.iter().rev().find(|l| l.contains("status server listening"))?;
            line.split("addr=").nth(1)?.split_whitespace().next()?.to_string()
        };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
        let text = client.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix("pushmirror_runtime_tasks ")).and_then(|v| v.trim().parse().ok())
    }

    fn count(&self, needle: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }
}

/// The `Environment=` settings of the packaged unit (`dist/pushmirror.service`), which the daemon
/// runs with here too (none today): the soak measures the service as it is shipped.
fn unit_environment() -> Vec<(String, String)> {
    let unit = include_str!("../dist/pushmirror.service");
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// One resource sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    pid: u32,
    pushes: usize,
    rss_kb: u64,
    fds: u64,
    threads: u64,
    /// Tasks alive in the daemon's runtime (its `pushmirror_runtime_tasks`).
    tasks: u64,
    state_kb: u64,
    state_files: u64,
}

fn sample(pid: u32, state: &Path, at: f64, pushes: usize, tasks: u64) -> Option<Sample> {
    let field = |name: &str| procfs::status_field(&pid.to_string(), name).ok();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut dirs = vec![state.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_name() == "filler" {
                continue; // the run's own, filling the disk
            }
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(entry.path()),
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    Some(Sample {
        at,
        pid,
        pushes,
        rss_kb: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        tasks,
        state_kb: bytes / 1024,
        state_files: files,
    })
}

/// What the reports said, compactly: (serial, mirror) → outcome, and failed mirrors.
#[derive(Default)]
struct Reports {
    seen: BTreeSet<PathBuf>,
    ok: BTreeSet<(String, String)>,
    failed: Vec<(String, String)>,
    /// (mirror, serial) of triggers a reload interrupted: their outcome unknown, sent again.
    interrupted: BTreeSet<(String, String)>,
    internal: Vec<String>,
    last_row: BTreeMap<String, (String, String)>,
}

impl Reports {
    /// Reads the reports not read yet (the daemon keeps `status.history` of them).
    fn collect(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut new: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
        new.retain(|p| !self.seen.contains(p));
        new.sort();
        for path in new {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let Ok(report) = serde_json::from_slice::<pushmirror::push::report::Report>(&bytes) else { continue };
            self.seen.insert(path);
            let serial = report.serial.clone().unwrap_or_default();
            for t in &report.triggers {
                let outcome = t.outcome.to_string();
                match t.outcome {
                    pushmirror::vocab::model::Outcome::Ok => {
                        self.ok.insert((t.mirror.clone(), serial.clone()));
                    }
                    pushmirror::vocab::model::Outcome::Failed => {
                        self.failed.push((t.mirror.clone(), serial.clone()));
                        if t.error_class == Some(pushmirror::vocab::model::ErrorClass::Internal) {
                            self.internal.push(format!("{} {serial}", t.mirror));
                        }
                        if t.error_class == Some(pushmirror::vocab::model::ErrorClass::Interrupted) {
                            self.interrupted.insert((t.mirror.clone(), serial.clone()));
                        }
                    }
                    _ => {}
                }
                self.last_row.insert(t.mirror.clone(), (serial.clone(), outcome));
            }
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let duration = args.duration.unwrap_or(Duration::from_secs(if args.quick { 300 } else { 3600 }));
    let breakage = args.breakage.as_deref().unwrap_or("");
    anyhow::ensure!(
        ["", "drop", "locks", "dup", "mute", "crash", "leak"].contains(&breakage),
        "--break: drop, locks, dup, mute, crash or leak"
    );
    let mut rng = Rng(Seeded::new(args.seed));
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let state = root.join("state");
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    std::fs::create_dir_all(&state)?;
    let disk = Tmpfs::mount(&state, "64m");
    let trace = root.join("archive/project/trace/master");
    std::fs::write(&trace, "Archive serial: 1000\n")?;
    let key = pushmirror::wire::keys::generate(&root.join("id"), "soak")?.public;

    // The mirrors: 70% HTTP with a policy each (60% when mosquitto is there: 10% are MQTT
    // subscribers of a private broker), 30% SSH; one in twenty rate-limited.
    let mut broker = match Broker::start(&root.join("broker"))? {
        Some(b) => Some(b),
        None if std::env::var_os("CI").is_some() => anyhow::bail!("CI: /usr/sbin/mosquitto is missing"),
        None => {
            println!("(mosquitto not installed: no MQTT mirrors, no broker restarts)");
            None
        }
    };
    let received = Arc::new(Received::default());
    let mut policies = BTreeMap::new();
    let mut names = Vec::new();
    let n_mqtt = if broker.is_some() { args.mirrors / 10 } else { 0 };
    let n_http = args.mirrors * 7 / 10 - n_mqtt;
    for i in 0..n_http {
        let name = format!("h{i:04}");
        let policy = match rng.below(100) {
            0..=74 => Policy::Ok,
            75..=84 => Policy::Slow(500 + rng.below(2000)),
            85..=92 => Policy::Flaky(30),
            93..=95 => Policy::Flap,
            _ => Policy::Refuse,
        };
        let policy = match (i, breakage) {
            (0, "drop") => Policy::Drop,
            (0, "dup") => Policy::Twice,
            _ => policy,
        };
        policies.insert(name.clone(), policy);
        names.push(name);
    }
    let farm = Arc::new(Farm {
        policies: policies.clone(),
        received: Arc::clone(&received),
        started: Instant::now(),
        rng: Mutex::new(Rng(Seeded::from_state(args.seed))),
    });
    let mut farms = Vec::new();
    for _ in 0..4 {
        farms.push(http_farm(Arc::clone(&farm)).await?);
    }
    let ssh_log = Arc::new(ExecLog::default());
    let mut sshs = Vec::new();
    for _ in 0..4 {
        sshs.push(
            SshReceiver::builder()
                .authorize(&key)
                .behaviour(Behaviour::ExitAfter(Duration::from_millis(100), 0))
                .log(Arc::clone(&ssh_log))
                .start()
                .await?,
        );
    }
    let mut limited = BTreeSet::new();
    let mirror_yaml = |name: &str, i: usize, limited: bool| -> String {
        let limit = if limited { "rate_limit: 1/30s\n" } else { "" };
        let common = format!("retries: 2\nbackoff: {{ initial: 200ms, max: 1s }}\ntimeout: 5s\n{limit}");
        if name.starts_with('q') {
            "mqtt: {}\nretries: 2\nbackoff: { initial: 200ms, max: 1s }\n".to_string()
        } else if name.starts_with('h') {
            let farm = farms[i % farms.len()];
            format!("http:\n  url: http://{farm}/m/{name}\n  headers: {{ X-Serial: \"{{serial}}\" }}\n{common}")
        } else {
            let rx = &sshs[i % sshs.len()];
            format!(
                "ssh: {{ host: 127.0.0.1, port: {}, user: {name} }}\nhost_key: \"{}\"\ncommand: \"sync {{serial}}\"\n{common}",
                rx.port(),
                rx.host_key_line()
            )
        }
    };
    for i in 0..args.mirrors - n_http - n_mqtt {
        names.push(format!("s{i:04}"));
    }
    let mut subscribers = Vec::new();
    if let Some(broker) = &broker {
        for i in 0..n_mqtt {
            let name = format!("q{i:04}");
            // Most acknowledge at once, one in five after a sync of up to two seconds.
            let delay = if rng.chance(20) { Duration::from_millis(rng.below(2000)) } else { Duration::ZERO };
            subscribers.push(mqtt_subscriber(broker.port, name.clone(), key.clone(), Arc::clone(&received), delay));
            names.push(name);
        }
    }
    for (i, name) in names.iter().enumerate() {
        // Not MQTT mirrors: on one broadcast topic they share one limit or none (`check` says so).
        let is_limited = rng.chance(5) && !name.starts_with('q');
        if is_limited {
            limited.insert(name.clone());
        }
        std::fs::write(root.join(format!("mirrors.d/{name}.yaml")), mirror_yaml(name, i, is_limited))?;
    }
    let locks =
        if args.breakage.as_deref() == Some("locks") { "never-matches-*" } else { "Archive-Update-in-Progress-*" };
    let config = root.join("pushmirror.yaml");
    let mqtt = match &broker {
        Some(b) => {
            format!("mqtt: {{ broker: 'mqtt://127.0.0.1:{}', client_id: soak-sender, ack_timeout: 20s }}\n", b.port)
        }
        None => String::new(),
    };
    std::fs::write(
        &config,
        format!(
            "mirrors_dir: mirrors.d\nstate_dir: state\nidentity: id\nconcurrency: 256\nmax_per_host: 64\n\
             status: {{ listen: 127.0.0.1:0, history: 50 }}\n{mqtt}archives:\n  debian:\n    root: archive\n    settle: 500ms\n    poll: 1s\n    locks: [\"{locks}\"]\n"
        ),
    )?;

    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let env: Vec<String> = unit_environment().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = if env.is_empty() { "none".to_string() } else { env.join(" ") };
    println!("the daemon's environment, as dist/pushmirror.service sets it: {env}");
    if !args.daemon_env.is_empty() {
        let extra: Vec<String> = args.daemon_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("and, from --daemon-env: {}", extra.join(" "));
    }
    let mut daemon = Daemon::start(&config, Arc::clone(&lines), &args.daemon_env)?;
    let begun = Instant::now();
    let (kill_every, hup_every) = if args.quick { (100, 23) } else { (120, 97) };
    let kill_every = args.kill_every.unwrap_or(Duration::from_secs(kill_every));
    let mut completed: BTreeSet<String> = ["1000".to_string()].into();
    let mut due_at_kill: BTreeSet<String> = BTreeSet::new();
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut reports = Reports::default();
    let mut serial = 1000u64;
    let mut next_kill = kill_every;
    let mut next_hup = Duration::from_secs(hup_every);
    let broker_every = Duration::from_secs(if args.quick { 71 } else { 410 });
    let mut next_broker_restart = broker_every;
    let mut next_sample = Duration::ZERO;
    let mut hup_valid = true;
    let mut churn = 0u32;
    let mut filler: Option<PathBuf> = None;
    let mut died: Vec<String> = Vec::new();
    let mut crashed = false;
    let lock = root.join("archive/Archive-Update-in-Progress-soak");
    while begun.elapsed() < duration {
        let now = begun.elapsed();
        // An update: written under the lock, sometimes overwritten before the lock goes.
        std::fs::write(&lock, b"")?;
        serial += 1;
        std::fs::write(&trace, format!("Archive serial: {serial}\n"))?;
        let held = Duration::from_millis(rng.below(args.interval.as_millis() as u64 * 3 / 4));
        // With `--break locks` the daemon does not see the lock: a version replaced under it is
        // held past the settle time, so that the daemon takes it for complete.
        let first_half = if breakage == "locks" { held / 2 + Duration::from_millis(1200) } else { held / 2 };
        tokio::time::sleep(first_half).await;
        if rng.chance(20) || breakage == "locks" {
            serial += 1; // the first one never completes
            std::fs::write(&trace, format!("Archive serial: {serial}\n"))?;
            *faults.entry("update replaced under its lock").or_default() += 1;
        }
        tokio::time::sleep(held / 2).await;
        std::fs::remove_file(&lock)?;
        completed.insert(serial.to_string());
        *faults.entry("archive update").or_default() += 1;
        if now >= next_hup {
            next_hup += Duration::from_secs(hup_every);
            let broken = root.join("mirrors.d/zz-broken.yaml");
            if hup_valid {
                let _ = std::fs::remove_file(&broken);
                churn += 1;
                let name = format!("churn{}", churn % 3);
                let path = root.join(format!("mirrors.d/{name}.yaml"));
                if path.exists() {
                    std::fs::remove_file(&path)?;
                } else {
                    let header = "  headers: { X-Serial: \"{serial}\" }\n";
                    std::fs::write(&path, format!("http:\n  url: http://{}/m/{name}\n{header}retries: 0\n", farms[0]))?;
                }
                *faults.entry("SIGHUP, valid change").or_default() += 1;
                daemon.signal("HUP");
            } else {
                // Refused by the running daemon (it keeps its configuration); taken away again
                // before any restart, which would refuse to start on it (exit 2, as systemd wants).
                std::fs::write(&broken, "http: [ unclosed\n")?;
                daemon.signal("HUP");
                tokio::time::sleep(Duration::from_secs(1)).await;
                std::fs::remove_file(&broken)?;
                *faults.entry("SIGHUP, broken file").or_default() += 1;
            }
            hup_valid = !hup_valid;
        }
        if breakage == "crash" && now >= Duration::from_secs(30) && !crashed {
            crashed = true;
            daemon.signal("KILL"); // not one of the planned kills: the watchdog must see it
        }
        if let Some(status) = daemon.child.try_wait()? {
            died.push(format!("the daemon exited by itself at {:.0} s: {status}", now.as_secs_f64()));
            daemon = Daemon::start(&config, Arc::clone(&lines), &args.daemon_env)?;
        }
        if now >= next_kill && faults.get("kill -9 and restart").copied().unwrap_or(0) < args.kills {
            next_kill += kill_every;
            // The version whose push is under way (the journal's first line), if one is.
            let journal = std::fs::read_to_string(state.join("daemon/debian.due")).unwrap_or_default();
            let first = journal.lines().next().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            if let Some(s) = first.as_ref().and_then(|v| v.get("version")).and_then(|s| s.as_str()) {
                due_at_kill.insert(s.to_string());
            }
            daemon.kill9()?;
            daemon = Daemon::start(&config, Arc::clone(&lines), &args.daemon_env)?;
            *faults.entry("kill -9 and restart").or_default() += 1;
        }
        if now >= next_broker_restart {
            next_broker_restart += broker_every;
            if let Some(broker) = &mut broker {
                broker.restart(Duration::from_millis(rng.below(3000))).await?;
                *faults.entry("broker restart").or_default() += 1;
            }
        }
        if let Some(disk) = &disk {
            match filler.take() {
                Some(f) => {
                    std::fs::remove_file(&f)?;
                    *faults.entry("state disk full, then freed").or_default() += 1;
                }
                None if rng.chance(2) => filler = Some(disk.fill()),
                None => {}
            }
        }
        if now >= next_sample {
            next_sample += args.sample;
            reports.collect(&state.join("reports"));
            let pushes = daemon.count("push finished");
            let tasks = daemon.runtime_tasks().await;
            if let Some(s) = tasks.and_then(|t| sample(daemon.pid(), &state, now.as_secs_f64(), pushes, t)) {
                samples.push(s);
            }
        }
        tokio::time::sleep(args.interval.saturating_sub(held)).await;
    }
    if let Some(f) = filler.take() {
        std::fs::remove_file(f)?;
    }
    // Quiesce: the last version pushed, nothing due, nothing deferred (rate limits: 30 s).
    let last = serial.to_string();
    let quiet = Instant::now();
    loop {
        reports.collect(&state.join("reports"));
        let pushed = std::fs::read_to_string(state.join("daemon/debian.pushed")).unwrap_or_default();
        let deferred = std::fs::read_to_string(state.join("daemon/deferred.json")).unwrap_or_default();
        let nothing_deferred = matches!(deferred.trim(), "" | "[]");
        if pushed.contains(&format!("\"{last}\"")) && nothing_deferred || quiet.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reports.collect(&state.join("reports"));
    daemon.signal("TERM");
    let _ = daemon.child.wait();

    // The history, checked.
    let mut got = received.counts();
    for exec in ssh_log.execs() {
        if let Some(s) = exec.command.strip_prefix("sync ") {
            *got.entry((exec.user.clone(), s.to_string())).or_default() += 1;
        }
    }
    let mut log = lines.lock().unwrap().clone();
    if breakage == "mute" {
        log.retain(|l| !l.contains("trigger failed")); // as if failures were not logged
    }
    let log_file = args.chart.with_extension("log");
    std::fs::write(&log_file, log.join("\n"))?;
    println!("the daemon's log: {}", log_file.display());
    let mut violations: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((mirror, s), n) in &got {
        if !completed.contains(s) {
            violations.entry("complete only").or_default().push(format!("{mirror} got {s}, which never completed"));
        }
        let interrupted = reports.interrupted.contains(&(mirror.clone(), s.clone()));
        if *n > 1 && !due_at_kill.contains(s) && !interrupted {
            violations.entry("duplicates only at kills").or_default().push(format!("{mirror} got {s} {n} times"));
        }
    }
    for (mirror, s) in &reports.ok {
        if !got.contains_key(&(mirror.clone(), s.clone())) && !mirror.starts_with("churn") {
            violations.entry("no fake ok").or_default().push(format!("{mirror} reported ok for {s}, never received"));
        }
    }
    for name in &names {
        let refuses = policies.get(name) == Some(&Policy::Refuse);
        if refuses || got.contains_key(&(name.clone(), last.clone())) {
            continue;
        }
        let told = reports.last_row.get(name).is_some_and(|(s, o)| s == &last && o == "failed");
        if !told {
            let row = reports.last_row.get(name).cloned().unwrap_or_default();
            violations.entry("nothing lost").or_default().push(format!("{name} never got {last} (last row: {row:?})"));
        }
    }
    let told: BTreeSet<&str> = log
        .iter()
        .filter(|l| l.contains("trigger failed"))
        .filter_map(|l| l.split("mirror=").nth(1)?.split_whitespace().next())
        .collect();
    for (mirror, s) in &reports.failed {
        if !told.contains(mirror.as_str()) {
            violations.entry("every failure told").or_default().push(format!("{mirror} failed {s}, no log line"));
        }
    }
    for d in &died {
        violations.entry("no panic").or_default().push(d.clone());
    }
    for l in log.iter().filter(|l| l.contains("panicked")) {
        violations.entry("no panic").or_default().push(l.clone());
    }
    for i in &reports.internal {
        violations.entry("no panic").or_default().push(format!("internal outcome: {i}"));
    }

    // Resources.
    let pushes = log.iter().filter(|l| l.contains("push finished")).count();
    println!(
        "soak: seed {}, {} s, {} mirrors ({} HTTP, {} SSH, {} MQTT, {} rate-limited)",
        args.seed,
        duration.as_secs(),
        names.len(),
        n_http,
        names.len() - n_http - n_mqtt,
        n_mqtt,
        limited.len()
    );
    println!(
        "pushes: {pushes}; versions completed: {}; triggers received: {}",
        completed.len(),
        got.values().sum::<usize>()
    );
    println!("faults injected:");
    for (kind, n) in &faults {
        println!("  {n:>6}  {kind}");
    }
    println!("{}", resource_table(&samples));
    if breakage == "leak" {
        // As if the daemon kept 20 kB and ten descriptors per push: the checker must see it.
        for s in &mut samples {
            s.rss_kb += s.pushes as u64 * 20;
            s.fds += s.pushes as u64 * 10;
        }
    }
    let mut judged = Vec::new();
    let growth = growth(&samples, args.max_rss_slope, args.warmup, &mut judged);
    for g in &growth {
        violations.entry("flat resources").or_default().push(g.clone());
    }
    match judged.is_empty() {
        true if !args.quick => violations
            .entry("flat resources")
            .or_default()
            .push(format!("no daemon life reached {} pushes: RSS not judged", args.warmup + 600)),
        true => println!("RSS not judged: no daemon life reached {} pushes", args.warmup + 600),
        false => judged.iter().for_each(|j| println!("RSS judged: {j}")),
    }
    if let Some(parent) = args.chart.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.chart, chart(&samples))?;
    let csv: Vec<String> = std::iter::once("at_s,pid,pushes,rss_kb,fds,threads,tasks,state_kb,state_files".to_string())
        .chain(samples.iter().map(|s| {
            format!(
                "{:.0},{},{},{},{},{},{},{},{}",
                s.at, s.pid, s.pushes, s.rss_kb, s.fds, s.threads, s.tasks, s.state_kb, s.state_files
            )
        }))
        .collect();
    std::fs::write(args.chart.with_extension("csv"), csv.join("\n") + "\n")?;
    println!("chart: {} (samples: {})", args.chart.display(), args.chart.with_extension("csv").display());
    println!("invariants:");
    for name in [
        "complete only",
        "no fake ok",
        "nothing lost",
        "duplicates only at kills",
        "every failure told",
        "no panic",
        "flat resources",
    ] {
        match violations.get(name) {
            None => println!("  ok        {name}"),
            Some(v) => {
                println!("  VIOLATED  {name}: {} case(s), first: {}", v.len(), v[0]);
            }
        }
    }
    drop(disk);
    anyhow::ensure!(violations.is_empty(), "{} invariant(s) violated", violations.len());
    Ok(())
}

/// Start, end and max of each resource.
fn resource_table(samples: &[Sample]) -> String {
    let mut out = String::from("resource        start      end        max\n");
    let rows: [(&str, Get); 6] = [
        ("RSS (kB)", |s| s.rss_kb),
        ("descriptors", |s| s.fds),
        ("threads", |s| s.threads),
        ("tasks", |s| s.tasks),
        ("state_dir (kB)", |s| s.state_kb),
        ("state files", |s| s.state_files),
    ];
    for (name, get) in rows {
        let (first, last) = (samples.first().map(get).unwrap_or(0), samples.last().map(get).unwrap_or(0));
        let max = samples.iter().map(get).max().unwrap_or(0);
        out.push_str(&format!("{name:<15} {first:<10} {last:<10} {max}\n"));
    }
    out
}

/// Growth beyond the bounds, per daemon process (a kill restarts it): RSS by pushes after the
/// warm-up, descriptors and threads by their max after warm-up against the max before; the
/// state directory against a fixed bound.
/// One resource of a sample.
type Get = fn(&Sample) -> u64;

fn growth(samples: &[Sample], max_rss_slope: f64, warmup: usize, judged: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let pids: BTreeSet<u32> = samples.iter().map(|s| s.pid).collect();
    for pid in pids {
        let life: Vec<&Sample> = samples.iter().filter(|s| s.pid == pid).collect();
        if life.len() < 12 {
            continue; // too short a life to tell warm-up from growth
        }
        // RSS after the life's first `warmup` pushes (caches, pools and the allocator filling),
        // over at least 600 more. RSS swings by 10 MB within a push (its peak heap), so a
        // least-squares line through the samples is noise: over 400 pushes its standard error
        // was 3 MB per 1,000. What is judged is the trend of the medians of each 100 pushes
        // (Theil–Sen: the median of the slopes between every two of them), robust to the swings.
        let born = life[0].pushes;
        let lived = life[life.len() - 1].pushes - born;
        let medians = rss_medians(life.iter().filter(|s| s.pushes - born >= warmup).copied(), born, 100);
        if lived >= warmup + 600 && medians.len() >= 6 {
            let slope = theil_sen(&medians) * 1000.0;
            let mb: Vec<String> = medians.iter().map(|(_, y)| format!("{y:.1}")).collect();
            judged.push(format!(
                "daemon {pid}: {lived} pushes; RSS medians per 100 pushes after its first {warmup}: {} MB; \
                 trend {slope:.2} MB per 1,000 pushes",
                mb.join(" ")
            ));
            if slope > max_rss_slope {
                out.push(format!("daemon {pid}: RSS grows {slope:.2} MB per 1,000 pushes after its first {warmup}"));
            }
        }
        // Descriptors and threads come and go with the triggers in flight, the HTTP client's
        // idle pool (bounded) and tokio's blocking pool (idle threads end after 10 s): a leak is
        // growth beyond the working set, the lowest value of the last quarter above the highest
        // of the first half.
        let quarter = life.len() / 4;
        let (first_half, last) = (&life[..life.len() / 2], &life[life.len() - quarter..]);
        let watched: [(&str, Get, u64); 3] =
            [("descriptors", |s| s.fds, 16), ("threads", |s| s.threads, 8), ("tasks", |s| s.tasks, 64)];
        for (name, get, margin) in watched {
            let working_set = first_half.iter().map(|s| get(s)).max().unwrap_or(0);
            let floor = last.iter().map(|s| get(s)).min().unwrap_or(0);
            if floor > working_set + margin {
                out.push(format!(
                    "daemon {pid}: {name} never fewer than {floor} at the end, at most {working_set} in the first half"
                ));
            }
        }
    }
    // The state directory fills up to its bounds (the report history: `status.history` 50, the
    // ledger) and stays there: judged once twice the history's pushes are behind it.
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.pushes >= 100).collect();
    if settled.len() >= 8 {
        let first = settled[..settled.len() / 2].iter().map(|s| s.state_kb).max().unwrap_or(0);
        let end = settled[settled.len() * 3 / 4..].iter().map(|s| s.state_kb).max().unwrap_or(0);
        if end > first + first / 4 + 512 {
            out.push(format!("state_dir grew to {end} kB at the end from at most {first} kB once settled"));
        }
    }
    if let Some(max) = samples.iter().map(|s| s.state_kb).max().filter(|kb| *kb > 64 * 1024) {
        out.push(format!("state_dir reached {max} kB"));
    }
    out
}

/// Per `bin` pushes of a life born at push `born`, the median push count and the median RSS in
/// MB (bins with at least five samples).
fn rss_medians<'a>(life: impl Iterator<Item = &'a Sample>, born: usize, bin: usize) -> Vec<(f64, f64)> {
    let mut bins: BTreeMap<usize, Vec<&Sample>> = BTreeMap::new();
    for s in life {
        bins.entry((s.pushes - born) / bin).or_default().push(s);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    bins.values()
        .filter(|b| b.len() >= 5)
        .map(|b| {
            (
                median(b.iter().map(|s| s.pushes as f64).collect()),
                median(b.iter().map(|s| s.rss_kb as f64 / 1024.0).collect()),
            )
        })
        .collect()
}

/// The Theil–Sen slope of `points`: the median of the slopes between every two of them.
fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes: Vec<f64> = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    slopes.sort_by(f64::total_cmp);
    slopes.get(slopes.len() / 2).copied().unwrap_or(0.0)
}

/// RSS, descriptors, threads and state_dir over time, each scaled to its own max, as SVG.
fn chart(samples: &[Sample]) -> String {
    let (w, h) = (900.0, 300.0);
    let t_max = samples.last().map(|s| s.at).unwrap_or(1.0).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        h + 40.0
    );
    let series: [(&str, &str, Get); 5] = [
        ("RSS", "#c0392b", |s| s.rss_kb),
        ("descriptors", "#2980b9", |s| s.fds),
        ("threads", "#27ae60", |s| s.threads),
        ("tasks", "#d35400", |s| s.tasks),
        ("state_dir", "#8e44ad", |s| s.state_kb),
    ];
    for (i, (name, colour, get)) in series.iter().enumerate() {
        let max = samples.iter().map(get).max().unwrap_or(1).max(1) as f64;
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", s.at / t_max * w, h - get(s) as f64 / max * (h - 10.0)))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" fill=\"{colour}\">{name} (max {})</text>\n",
            points.join(" "),
            10.0 + 178.0 * i as f64,
            h + 25.0,
            max
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A small tmpfs over the state directory (root only), so that the disk can fill and free.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("(not root: the state disk is not filled)");
        }
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        if let Ok(mut file) = std::fs::File::create(&path) {
            let chunk = vec![0u8; 1 << 16];
            while file.write_all(&chunk).is_ok() {}
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A private mosquitto on a free loopback port, persistent (sessions and queued messages survive
/// a restart, as on a real broker), restartable on the same port.
struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// `None` when mosquitto is not installed.
    fn start(dir: &Path) -> anyhow::Result<Option<Broker>> {
        if !Path::new("/usr/sbin/mosquitto").exists() {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n\
                 persistence true\npersistence_location {}/\nlog_type error\n",
                dir.display()
            ),
        )?;
        let mut broker = Broker { port, dir: dir.to_path_buf(), child: None };
        broker.up()?;
        Ok(Some(broker))
    }

    fn up(&mut self) -> anyhow::Result<()> {
        self.child = Some(
            Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(self.dir.join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "mosquitto did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the broker (SIGTERM: it saves its sessions) and starts it again after `down`.
    async fn restart(&mut self, down: Duration) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status();
            child.wait()?;
        }
        tokio::time::sleep(down).await;
        self.up()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A simulated `pushmirror receive`: a persistent MQTT 5 session subscribed to the archive's
/// trigger topic; verifies each trigger's signature, runs each nonce once (recording the serial it
/// got), and acknowledges it `ok` after `delay` (its sync).
fn mqtt_subscriber(
    port: u16,
    name: String,
    trusted: russh::keys::PublicKey,
    received: Arc<Received>,
    delay: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut options = MqttOptions::new(name.clone(), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(86_400));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        let trusted = [trusted];
        let mut seen = BTreeSet::new();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    let _ = client.try_subscribe("pushmirror/debian/trigger", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let signature = p.properties.as_ref().and_then(|props| {
                        props.user_properties.iter().find(|(k, _)| k == wire::SIGNATURE_PROPERTY).map(|(_, v)| v)
                    });
                    if wire::verify(wire::Signed::Trigger, &p.payload, signature.map(String::as_str), &trusted).is_err()
                    {
                        continue;
                    }
                    let Ok(trigger) = serde_json::from_slice::<TriggerMessage>(&p.payload) else { continue };
                    if !seen.insert(trigger.nonce.clone().unwrap_or_default()) {
                        continue; // a redelivery or the retained copy: run once
                    }
                    let (client, name, received) = (client.clone(), name.clone(), Arc::clone(&received));
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        received.add(&name, trigger.serial.as_deref().unwrap_or(""));
                        let ack = AckMessage {
                            mirror: name.clone(),
                            serial: trigger.serial,
                            state: AckState::Ok,
                            exit_code: Some(0),
                            duration_ms: Some(delay.as_millis() as u64),
                            stage: Some(trigger.stage),
                            sent_at: Some(trigger.sent_at),
                            reason: None,
                            off_by_ms: None,
                        };
                        let topic = wire::ack_topic("pushmirror", &trigger.archive, &name);
                        let body = serde_json::to_vec(&ack).expect("an ack serialises");
                        let _ = client.publish(topic, QoS::AtLeastOnce, false, body).await;
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
}
