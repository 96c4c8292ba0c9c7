//! The daemon's resource use and reaction time, measured on the release binary.
//!
//! ```text
//! cargo bench --bench daemon -- --idle 60s --updates 20 --settle 1s
//! ```
//! Starts `pushmirror daemon` on a temporary archive with one HTTP mirror, measures CPU time and
//! RSS over an idle period (from /proc), then writes new trace serials and measures the time from
//! each write to the trigger arriving at the receiver (detection latency, which includes settle).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use pushmirror::demo::HttpReceiver;

#[path = "common/procfs.rs"]
mod procfs;

#[derive(Debug, Parser)]
struct Args {
    /// How long to measure the idle daemon.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// Archive updates to time.
    #[arg(long, default_value_t = 20)]
    updates: u32,
    /// The archive's settle time.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    let trace = root.join("archive/project/trace/master");
    std::fs::write(&trace, "Archive serial: 0\n")?;
    let rx = HttpReceiver::start().await?;
    std::fs::write(root.join("mirrors.d/m.yaml"), format!("http:\n  url: {}\n", rx.url("/")))?;
    std::fs::write(
        root.join("pushmirror.yaml"),
        format!(
            "mirrors_dir: mirrors.d\nstate_dir: state\nstatus: {{ listen: 127.0.0.1:0 }}\narchives:\n  debian:\n    root: archive\n    settle: {}\n",
            humantime::format_duration(args.settle)
        ),
    )?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_pushmirror"))
        .arg("-c")
        .arg(root.join("pushmirror.yaml"))
        .arg("daemon")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("first start") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(30))?;

    let cpu0 = cpu_ms(pid)?;
    tokio::time::sleep(args.idle).await;
    let idle_cpu = cpu_ms(pid)? - cpu0;
    let (rss, hwm) = rss_kb(pid)?;
    println!(
        "idle {}: CPU {idle_cpu} ms, RSS {:.1} MB (peak {:.1} MB)",
        humantime::format_duration(args.idle),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    let mut latencies = Vec::new();
    for serial in 1..=args.updates {
        let written = tokio::time::Instant::now();
        std::fs::write(&trace, format!("Archive serial: {serial}\n"))?;
        rx.log().wait_for(serial as usize).await;
        latencies.push(rx.log().hits()[serial as usize - 1].at - written);
    }
    let over: Vec<f64> = latencies.iter().map(|l| (l.saturating_sub(args.settle)).as_secs_f64() * 1000.0).collect();
    let max = over.iter().cloned().fold(0.0, f64::max);
    let mean = over.iter().sum::<f64>() / over.len().max(1) as f64;
    println!(
        "detection latency over {} updates: settle {} + mean {mean:.1} ms, max {max:.1} ms",
        args.updates,
        humantime::format_duration(args.settle)
    );
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let status = child.wait()?;
    println!("SIGTERM → exit {:?} in {} ms", status.code(), t.elapsed().as_millis());
    Ok(())
}

/// CPU milliseconds of `pid`.
fn cpu_ms(pid: u32) -> anyhow::Result<u64> {
    Ok((procfs::cpu_seconds(&pid.to_string())? * 1000.0).round() as u64)
}

/// VmRSS and VmHWM of `pid` in KiB.
fn rss_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let pid = pid.to_string();
    Ok((procfs::status_field(&pid, "VmRSS:")?, procfs::peak_rss_kb(&pid)?))
}
