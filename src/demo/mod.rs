//! In-process receivers on 127.0.0.1 that stand in for downstream mirrors, and the `demo`
//! command that pushes to them with the real engine. Tests and benchmarks use the same receivers.

pub mod history;
pub mod http;
pub mod latency;
pub mod seeded;
pub mod ssh;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use russh::keys::PublicKey;

pub use http::{Hit, HttpReceiver, Log, Reply};
pub use latency::{LatencyProxy, Path as NetPath, Trip};
pub use seeded::Seeded;
pub use ssh::{Behaviour, Exec, ExecLog, SshReceiver};

use crate::push::engine::Options;
use crate::push::plan::PushRequest;
use crate::transport::known_hosts::{KnownHostsFile, host_entry_name};
use crate::vocab::output::{self, Ended, Format, Stop};

/// How a demo receiver picks its next answer: the scripted ones in order, then the default.
pub(crate) struct Script<T> {
    queue: std::sync::Mutex<std::collections::VecDeque<T>>,
    default: T,
}

impl<T: Clone> Script<T> {
    pub(crate) fn new(first: Vec<T>, default: T) -> Self {
        Script { queue: std::sync::Mutex::new(first.into()), default }
    }

    /// The next answer.
    pub(crate) fn next(&self) -> T {
        let scripted = self.queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        scripted.unwrap_or_else(|| self.default.clone())
    }
}

/// Writes a secret file readable by its owner only.
pub fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{value}\n"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A random token of 32 hex digits.
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The `demo` command: start `n` receivers, write a temporary config, push, print the report.
pub async fn run(n: usize, format: Format) -> Ended {
    demo(n.max(1), format).await.map_err(|e| Stop::Usage(format!("demo failed to set up: {e:#}")))?
}

async fn demo(n: usize, format: Format) -> anyhow::Result<Ended> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    std::fs::write(
        root.join("archive/project/trace/master"),
        "Archive serial: 2026112501\nCreator: pushmirror demo\n",
    )?;
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    let sender = crate::wire::keys::generate(&root.join("keys/id_ed25519"), "pushmirror@demo")?;
    let mut receivers = Receivers::default();
    for i in 0..n {
        // Every third mirror is an ftpsync-style SSH downstream, the others HTTP.
        let (name, mirror) = match i % 3 {
            0 => (format!("demo-http-{i:02}"), receivers.http_token(root, &format!("demo-http-{i:02}")).await?),
            1 => (format!("demo-http-{i:02}"), receivers.http_basic(root, &format!("demo-http-{i:02}")).await?),
            _ => (format!("demo-ssh-{i:02}"), receivers.ssh(root, &sender.public).await?),
        };
        std::fs::write(root.join(format!("mirrors.d/{name}.yaml")), mirror)?;
    }
    // A bad day, as a real network has one: these three are the last rows of the report.
    for (name, mirror) in receivers.bad_day(root).await? {
        std::fs::write(root.join(format!("mirrors.d/{name}.yaml")), mirror)?;
    }
    let main = "identity: keys/id_ed25519\nknown_hosts: known_hosts\nmirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: 16\ndefaults:\n  timeout: 10s\n  retries: 2\n  backoff: { initial: 100ms, max: 1s }\narchives:\n  debian:\n    root: archive\n";
    let config_path = root.join("pushmirror.yaml");
    std::fs::write(&config_path, main)?;
    let config = crate::config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config invalid:\n{e}"))?;
    // The rate-limited mirror was triggered earlier this hour: that send is recorded through the
    // same state a real push keeps, so this push defers it.
    let limits =
        crate::push::ratelimit::RateLimits::persistent(&config.state_dir, crate::vocab::clock::Clock::system());
    limits.admit(LIMITED, "1/1h".parse::<crate::vocab::units::RateLimit>().map_err(anyhow::Error::msg)?).await?;
    let plan = crate::push::plan_push(&config, &PushRequest::default())?;
    let report = crate::push::once(&config, &plan, &Options::default(), "demo").await?;
    output::print(&report, format);
    if format == Format::Table {
        eprintln!(
            "demo: {} receiver(s) on 127.0.0.1 recorded {} trigger(s)",
            receivers.http.len() + receivers.ssh.len(),
            receivers.http_log.count() + receivers.ssh_log.count()
        );
        eprint!("{}", bad_day_summary(&report));
    }
    Ok(Ok(report.verdict()))
}

/// The bad-day mirrors: one answers 503 once, one is rate-limited, one refuses.
const FLAKY: &str = "demo-zz-flaky";
const LIMITED: &str = "demo-zz-limited";
const REFUSING: &str = "demo-zz-refusing";

/// What happened to the bad-day mirrors and what the exit status means, in words, from the report.
fn bad_day_summary(report: &crate::push::report::Report) -> String {
    use crate::vocab::model::Outcome;
    let mut out = String::from("a bad day, as the engine handles it:\n");
    for row in report.triggers.iter().filter(|r| [FLAKY, LIMITED, REFUSING].contains(&r.mirror.as_str())) {
        let what = match row.outcome {
            Outcome::Ok if row.attempts > 1 => {
                format!("answered 503 (transient), was retried after backoff: ok after {} attempts", row.attempts)
            }
            Outcome::Deferred => format!(
                "deferred: its rate_limit 1/1h was used earlier this hour; allowed again at {} \
                 (the daemon sends it then; push --wait would wait)",
                row.deferred_until.map(|t| t.to_string()).unwrap_or_default()
            ),
            Outcome::Failed => format!(
                "failed ({}): {}; permanent, so not retried",
                row.error_class.map(|c| c.to_string()).unwrap_or_default(),
                row.error.as_deref().unwrap_or("")
            ),
            other => other.to_string(),
        };
        out.push_str(&format!("  {:<18} {what}\n", row.mirror));
    }
    let s = &report.summary;
    out.push_str(&format!(
        "summary: {} ok, {} failed, {} deferred; exit status {}",
        s.ok,
        s.failed,
        s.deferred,
        crate::vocab::output::exit_code(&Ok(report.verdict()))
    ));
    out.push_str(match s.failed {
        0 => " (deferred alone is not a failure)\n",
        _ => ": a mirror failed (a deferred one alone would exit 0)\n",
    });
    out
}

/// The demo's receivers; each method starts one and returns its mirror file.
#[derive(Default)]
struct Receivers {
    http: Vec<HttpReceiver>,
    http_log: Arc<Log>,
    ssh: Vec<SshReceiver>,
    ssh_log: Arc<ExecLog>,
}

impl Receivers {
    /// The bad-day mirrors ([`FLAKY`], [`LIMITED`], [`REFUSING`]) and their mirror files.
    async fn bad_day(&mut self, root: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
        let log = || Arc::clone(&self.http_log);
        let flaky = HttpReceiver::builder().log(log()).script([Reply::Status(503)]).start().await?;
        let limited = HttpReceiver::builder().log(log()).start().await?;
        let refusing = HttpReceiver::builder().log(log()).reply(Reply::Status(403)).start().await?;
        let mut files = Vec::new();
        for (name, receiver, extra) in
            [(FLAKY, &flaky, ""), (LIMITED, &limited, "rate_limit: 1/1h\n"), (REFUSING, &refusing, "")]
        {
            write_secret(
                &root.join(format!("secrets/{name}.url")),
                &receiver.url(&format!("/trigger/{}", random_token())),
            )?;
            files.push((name, format!("http:\n  url_file: ../secrets/{name}.url\n{extra}tags: [demo, bad-day]\n")));
        }
        self.http.extend([flaky, limited, refusing]);
        Ok(files)
    }

    /// Ubuntu-style secret URL: the token is the path.
    async fn http_token(&mut self, root: &Path, name: &str) -> anyhow::Result<String> {
        let receiver = HttpReceiver::builder().log(Arc::clone(&self.http_log)).start().await?;
        write_secret(
            &root.join(format!("secrets/{name}.url")),
            &receiver.url(&format!("/trigger/{}", random_token())),
        )?;
        self.http.push(receiver);
        Ok(format!("http:\n  url_file: ../secrets/{name}.url\ntags: [demo, token]\n"))
    }

    /// POST with basic auth and templated headers.
    async fn http_basic(&mut self, root: &Path, name: &str) -> anyhow::Result<String> {
        let password = random_token();
        let basic = base64_basic("demo", &password);
        let receiver = HttpReceiver::builder().log(Arc::clone(&self.http_log)).expect_auth(basic).start().await?;
        write_secret(&root.join(format!("secrets/{name}.pw")), &password)?;
        let url = receiver.url("/push");
        self.http.push(receiver);
        Ok(format!(
            "http:\n  url: {url}\n  method: POST\n  basic_auth: {{ user: demo, password_file: ../secrets/{name}.pw }}\n  headers: {{ X-Archive: \"{{archive}}\", X-Serial: \"{{serial}}\" }}\ntags: [demo, basic-auth]\n"
        ))
    }

    /// An ftpsync-style SSH downstream whose host key is recorded in the demo's known_hosts.
    async fn ssh(&mut self, root: &Path, sender: &PublicKey) -> anyhow::Result<String> {
        let receiver = SshReceiver::builder().authorize(sender).log(Arc::clone(&self.ssh_log)).start().await?;
        let port = receiver.port();
        let known_hosts = KnownHostsFile::new(root.join("known_hosts"));
        known_hosts.record_if_unknown(&host_entry_name("127.0.0.1", port), receiver.host_key())?;
        self.ssh.push(receiver);
        Ok(format!("ssh: {{ host: 127.0.0.1, port: {port}, user: archvsync }}\nbusy_exit: 1\ntags: [demo, ssh]\n"))
    }
}

/// The `Authorization` header value of HTTP basic auth.
pub fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}
