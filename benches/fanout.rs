//! Fan-out throughput: N mirrors on loopback receivers, one push through the real engine.
//!
//! ```text
//! cargo bench --bench fanout -- --transport http --mirrors 10000
//! cargo bench --bench fanout -- --transport ssh --mirrors 1000 --concurrency 256
//! ```
//! Prints triggers/s of the push and the peak RSS of the process (receivers included, they run
//! in-process). With `--transport ssh` it then sends the same triggers with OpenSSH's `ssh`
//! client the way runmirrors-style scripts do (`xargs -P 64`, one `ssh` per trigger) to the same
//! receivers, and prints how much faster pushmirror was (`--no-openssh` skips that).

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use pushmirror::clock::Clock;
use pushmirror::demo::{ExecLog, HttpReceiver, Log, SshReceiver};
use pushmirror::dispatch::Options;
use pushmirror::model::Outcome;
use pushmirror::plan::PushRequest;
use pushmirror::transport::Transports;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Http,
    Ssh,
}

#[derive(Debug, Parser)]
struct Args {
    /// Transport to measure.
    #[arg(long, value_enum, default_value = "http")]
    transport: Transport,
    /// Mirrors (one trigger each).
    #[arg(long, default_value_t = 10_000)]
    mirrors: usize,
    /// Triggers in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Receivers the mirrors are spread over.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    /// With `--transport ssh`: do not compare with OpenSSH's client.
    #[arg(long)]
    no_openssh: bool,
    /// Parallel `ssh` processes in the OpenSSH comparison.
    #[arg(long, default_value_t = 64)]
    openssh_parallel: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    std::fs::create_dir_all(root.join("archive"))?;
    let receivers = match args.transport {
        Transport::Http => Receivers::Http(http_receivers(args.receivers).await?),
        Transport::Ssh => Receivers::Ssh(ssh_receivers(args.receivers, &root.join("id_ed25519")).await?),
    };
    for i in 0..args.mirrors {
        let body = match &receivers {
            Receivers::Http(rxs) => {
                let rx = &rxs[i % rxs.len()];
                format!("http:\n  url: {}\nretries: 0\ntimeout: 30s\n", rx.url(&format!("/m{i}")))
            }
            Receivers::Ssh(rxs) => {
                let rx = &rxs[i % rxs.len()];
                format!(
                    "ssh: {{ host: 127.0.0.1, port: {}, user: bench }}\nhost_key: \"{}\"\nretries: 0\ntimeout: 30s\n",
                    rx.port(),
                    rx.host_key_line()
                )
            }
        };
        std::fs::write(root.join(format!("mirrors.d/m{i:05}.yaml")), body)?;
    }
    std::fs::write(
        root.join("pushmirror.yaml"),
        format!(
            "identity: id_ed25519\nmirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: {}\nstatus: {{ history: 5 }}\narchives:\n  debian:\n    root: archive\n",
            args.concurrency
        ),
    )?;
    let t = Instant::now();
    let config = pushmirror::config::load(&root.join("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = t.elapsed();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default())?;
    let engine = pushmirror::push::engine(
        &config,
        Arc::new(Transports::new(&config, pushmirror::broadcast::connect::Session::Once)?),
        Clock::system(),
    );
    let t = Instant::now();
    let report = pushmirror::push::execute(&config, &engine, &plan, &Options::default(), "bench").await;
    let push = t.elapsed();
    let ok = report.triggers.iter().filter(|r| r.outcome == Outcome::Ok).count();
    println!(
        "transport={:?} mirrors={} concurrency={} receivers={}",
        args.transport,
        args.mirrors,
        args.concurrency,
        receivers.len()
    );
    println!("config load: {:.3} s", load.as_secs_f64());
    println!("push: {:.3} s, {} ok, {} received", push.as_secs_f64(), ok, receivers.received());
    println!("triggers/s: {:.0}", args.mirrors as f64 / push.as_secs_f64());
    println!("peak RSS: {:.1} MB", peak_rss_kb()? as f64 / 1024.0);
    anyhow::ensure!(ok == args.mirrors, "only {ok} of {} triggers were ok", args.mirrors);
    if let (Receivers::Ssh(rxs), false) = (&receivers, args.no_openssh) {
        let before = receivers.received();
        let openssh = openssh_client(rxs, root, args.mirrors, args.openssh_parallel).await?;
        let got = receivers.received() - before;
        println!(
            "openssh ssh client (xargs -P {}): {:.3} s, {:.0} triggers/s, {got} received",
            args.openssh_parallel,
            openssh.as_secs_f64(),
            args.mirrors as f64 / openssh.as_secs_f64()
        );
        println!("pushmirror is {:.1}x faster than ssh via xargs", openssh.as_secs_f64() / push.as_secs_f64());
        anyhow::ensure!(got == args.mirrors, "OpenSSH delivered only {got} of {} triggers", args.mirrors);
    }
    Ok(())
}

/// Sends `n` triggers with OpenSSH's client, `parallel` at a time, round-robin over `rxs`, with
/// runmirrors' options, and returns the wall time.
async fn openssh_client(
    rxs: &[SshReceiver],
    root: &std::path::Path,
    n: usize,
    parallel: usize,
) -> anyhow::Result<std::time::Duration> {
    let known_hosts: String =
        rxs.iter().map(|rx| format!("[127.0.0.1]:{} {}\n", rx.port(), rx.host_key_line())).collect();
    std::fs::write(root.join("known_hosts.openssh"), known_hosts)?;
    let ports: String = (0..n).map(|i| format!("{}\n", rxs[i % rxs.len()].port())).collect();
    let script = format!(
        "xargs -P {parallel} -I PORT ssh -n -p PORT -l bench -i {key} -o BatchMode=yes -o ConnectTimeout=45 \
         -o ServerAliveInterval=45 -o PasswordAuthentication=no -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile={kh} -o LogLevel=ERROR 127.0.0.1 ' sync:archive:debian sync:all'",
        key = root.join("id_ed25519").display(),
        kh = root.join("known_hosts.openssh").display(),
    );
    let t = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ssh via xargs: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, ports.as_bytes()).await?;
    drop(stdin);
    let status = child.wait().await?;
    let took = t.elapsed();
    anyhow::ensure!(status.success(), "ssh via xargs failed: {status}");
    Ok(took)
}

/// The receivers of one run, all of one transport.
enum Receivers {
    Http(Vec<HttpReceiver>),
    Ssh(Vec<SshReceiver>),
}

impl Receivers {
    fn len(&self) -> usize {
        match self {
            Receivers::Http(r) => r.len(),
            Receivers::Ssh(r) => r.len(),
        }
    }

    /// Triggers received by all of them (they share one log).
    fn received(&self) -> usize {
        match self {
            Receivers::Http(r) => r.first().map_or(0, |rx| rx.log().count()),
            Receivers::Ssh(r) => r.first().map_or(0, |rx| rx.log().count()),
        }
    }
}

async fn http_receivers(n: usize) -> anyhow::Result<Vec<HttpReceiver>> {
    let log = Arc::new(Log::default());
    let mut receivers = Vec::new();
    for _ in 0..n.max(1) {
        receivers.push(HttpReceiver::builder().log(Arc::clone(&log)).start().await?);
    }
    Ok(receivers)
}

/// SSH receivers that accept a fresh sender key written to `identity`.
async fn ssh_receivers(n: usize, identity: &std::path::Path) -> anyhow::Result<Vec<SshReceiver>> {
    let key = pushmirror::keys::generate(identity, "pushmirror@bench")?;
    let log = Arc::new(ExecLog::default());
    let mut receivers = Vec::new();
    for _ in 0..n.max(1) {
        receivers.push(SshReceiver::builder().authorize(&key.public).log(Arc::clone(&log)).start().await?);
    }
    Ok(receivers)
}

/// VmHWM of this process, in KiB.
fn peak_rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
