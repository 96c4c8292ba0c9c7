//! Fan-out throughput: N mirrors on loopback receivers, one push through the real engine.
//!
//! ```text
//! cargo bench --bench fanout -- --transport http --mirrors 10000
//! ```
//! Prints triggers/s of the push and the peak RSS of the process (receivers included, they run
//! in-process).

use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use pushmirror::clock::Clock;
use pushmirror::demo::{HttpReceiver, Log};
use pushmirror::dispatch::Options;
use pushmirror::plan::PushRequest;
use pushmirror::report::Outcome;
use pushmirror::transport::Transports;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Http,
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
    let log = Arc::new(Log::default());
    let mut receivers = Vec::new();
    for _ in 0..args.receivers.max(1) {
        receivers.push(HttpReceiver::builder().log(Arc::clone(&log)).start().await?);
    }
    for i in 0..args.mirrors {
        let rx = &receivers[i % receivers.len()];
        let body = match args.transport {
            Transport::Http => format!("http:\n  url: {}\nretries: 0\ntimeout: 30s\n", rx.url(&format!("/m{i}"))),
        };
        std::fs::write(root.join(format!("mirrors.d/m{i:05}.yaml")), body)?;
    }
    std::fs::write(
        root.join("pushmirror.yaml"),
        format!(
            "mirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: {}\nstatus: {{ history: 5 }}\narchives:\n  debian:\n    root: archive\n",
            args.concurrency
        ),
    )?;
    let t = Instant::now();
    let config = pushmirror::config::load(&root.join("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = t.elapsed();
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default())?;
    let engine = pushmirror::push::engine(&config, Arc::new(Transports::new(&config)?), Clock::system());
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
    println!("push: {:.3} s, {} ok, {} received", push.as_secs_f64(), ok, log.count());
    println!("triggers/s: {:.0}", args.mirrors as f64 / push.as_secs_f64());
    println!("peak RSS: {:.1} MB", peak_rss_kb()? as f64 / 1024.0);
    anyhow::ensure!(ok == args.mirrors, "only {ok} of {} triggers were ok", args.mirrors);
    Ok(())
}

/// VmHWM of this process, in KiB.
fn peak_rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}
