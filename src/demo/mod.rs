//! In-process receivers on 127.0.0.1 that stand in for downstream mirrors, and the `demo`
//! command that pushes to them with the real engine. Tests and benchmarks use the same receivers.

pub mod http;
pub mod ssh;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

pub use http::{Hit, HttpReceiver, Log, Reply};
pub use ssh::{Behaviour, Exec, ExecLog, SshReceiver};

use crate::cli::Format;
use crate::clock::Clock;
use crate::dispatch::Options;
use crate::plan::PushRequest;
use crate::transport::Transports;

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
pub async fn run(n: usize, format: Format) -> u8 {
    match demo(n.max(1), format).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed to set up: {e:#}");
            crate::commands::EXIT_USAGE
        }
    }
}

async fn demo(n: usize, format: Format) -> anyhow::Result<u8> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let log = Arc::new(Log::default());
    let mut receivers = Vec::new();
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    std::fs::write(
        root.join("archive/project/trace/master"),
        "Archive serial: 2026112501\nCreator: pushmirror demo\n",
    )?;
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    for i in 0..n {
        let name = format!("demo-http-{i:02}");
        let mirror = if i % 2 == 0 {
            // Ubuntu-style secret URL: the token is the path.
            let receiver = HttpReceiver::builder().log(Arc::clone(&log)).start().await?;
            write_secret(
                &root.join(format!("secrets/{name}.url")),
                &receiver.url(&format!("/trigger/{}", random_token())),
            )?;
            receivers.push(receiver);
            format!("http:\n  url_file: ../secrets/{name}.url\ntags: [demo, token]\n")
        } else {
            let password = random_token();
            let basic = base64_basic("demo", &password);
            let receiver = HttpReceiver::builder().log(Arc::clone(&log)).expect_auth(basic).start().await?;
            write_secret(&root.join(format!("secrets/{name}.pw")), &password)?;
            let url = receiver.url("/push");
            receivers.push(receiver);
            format!(
                "http:\n  url: {url}\n  method: POST\n  basic_auth: {{ user: demo, password_file: ../secrets/{name}.pw }}\n  headers: {{ X-Archive: \"{{archive}}\", X-Serial: \"{{serial}}\" }}\ntags: [demo, basic-auth]\n"
            )
        };
        std::fs::write(root.join(format!("mirrors.d/{name}.yaml")), mirror)?;
    }
    let main = "mirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: 16\ndefaults:\n  timeout: 10s\n  retries: 2\n  backoff: { initial: 100ms, max: 1s }\narchives:\n  debian:\n    root: archive\n";
    let config_path = root.join("pushmirror.yaml");
    std::fs::write(&config_path, main)?;
    let config = crate::config::load(&config_path).map_err(|e| anyhow::anyhow!("demo config invalid:\n{e}"))?;
    let plan = crate::push::plan_push(&config, &PushRequest::default())?;
    let engine = crate::push::engine(&config, Arc::new(Transports::new(&config)?), Clock::system());
    let report = crate::push::execute(&config, &engine, &plan, &Options::default(), "demo").await;
    crate::commands::print_report(&report, format);
    if format == Format::Table {
        eprintln!("demo: {} receiver(s) on 127.0.0.1 recorded {} trigger(s)", receivers.len(), log.count());
    }
    Ok(report.exit_code())
}

/// The `Authorization` header value of HTTP basic auth.
pub fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}
