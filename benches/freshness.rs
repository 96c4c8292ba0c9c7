//! A freshness sweep: N check-only mirrors on in-process HTTP receivers, each publishing its
//! `master`, `_hierarchy` and own trace; one `freshness::survey` through the real prober (3 GETs
//! per mirror, 64 in flight), with what the daemon does around it each sweep (report history read,
//! rows annotated, `freshness.json` written atomically).
//!
//! ```text
//! cargo bench --bench freshness -- --mirrors 1000
//! ```
//! Prints the sweep's wall time (client side: the receivers are in this process, on loopback)
//! and the process's peak RSS (receivers included).

use std::time::Instant;

use clap::Parser;
use pushmirror::demo::HttpReceiver;
use pushmirror::observe::freshness::{Prober, survey};
use pushmirror::vocab::model::Standing;

#[path = "common/procfs.rs"]
mod procfs;

#[derive(Debug, Parser)]
struct Args {
    /// Mirrors to survey.
    #[arg(long, default_value_t = 1000)]
    mirrors: usize,
    /// Receivers the mirrors are spread over.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    /// Accepted for `cargo bench`'s harness flag.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("archive/project/trace"))?;
    std::fs::write(root.join("archive/project/trace/master"), "x\nArchive serial: 2026112902\n")?;
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    let mut receivers = Vec::new();
    for _ in 0..args.receivers.max(1) {
        receivers.push(HttpReceiver::start().await?);
    }
    for i in 0..args.mirrors {
        let rx = &receivers[i % receivers.len()];
        let (name, base) = (format!("m{i:05}"), format!("/m{i:05}/debian"));
        let serial = if i % 10 == 0 { "2026112901" } else { "2026112902" };
        rx.publish(
            &format!("{base}/project/trace/master"),
            &format!("x\nArchive serial: {serial}\nDate: Sun, 29 Nov 2026 08:52:03 +0000\n"),
        );
        rx.publish(
            &format!("{base}/project/trace/_hierarchy"),
            &format!("hub hub hub primary\n{name} {name} {name} hub\n"),
        );
        rx.publish(
            &format!("{base}/project/trace/{name}"),
            &format!(
                "x\nDate: Sun, 29 Nov 2026 09:00:04 +0000\nDate-Started: Sun, 29 Nov 2026 09:00:00 +0000\n\
                 Archive serial: {serial}\nUpstream-mirror: hub\n"
            ),
        );
        std::fs::write(root.join(format!("mirrors.d/{name}.yaml")), format!("check: {}\n", rx.url(&base)))?;
    }
    std::fs::write(
        root.join("pushmirror.yaml"),
        "mirrors_dir: mirrors.d\nstate_dir: state\narchives:\n  debian:\n    root: archive\n",
    )?;
    let config = pushmirror::config::load(&root.join("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let prober = Prober::new()?;
    // What the daemon does each sweep: read the report history, survey, annotate, remember.
    let t0 = Instant::now();
    let history = pushmirror::push::report::History::new(&config.state_dir, 200).all()?;
    let mut rows = survey(&config, None, &prober, &history).await;
    pushmirror::observe::freshness::annotate(&mut rows, &[], &history);
    pushmirror::observe::freshness::remember(&config.state_dir, &rows)?;
    let took = t0.elapsed();
    let up = rows.iter().filter(|r| r.standing == Standing::UpToDate).count();
    let read_own = rows.iter().filter(|r| r.last_sync_ms == Some(4000)).count();
    anyhow::ensure!(rows.len() == args.mirrors, "surveyed {} of {} mirrors", rows.len(), args.mirrors);
    anyhow::ensure!(read_own == args.mirrors, "read the own trace of only {read_own} mirrors");
    println!(
        "freshness sweep of {} mirrors on {} receivers ({} up to date, {} older; 3 GETs each, in-process, \
         loopback), history read, memory written: {:.3} s",
        rows.len(),
        receivers.len(),
        up,
        rows.len() - up,
        took.as_secs_f64()
    );
    println!("peak RSS: {:.1} MB", peak_rss_kb()? as f64 / 1024.0);
    Ok(())
}

fn peak_rss_kb() -> anyhow::Result<u64> {
    procfs::peak_rss_kb("self")
}
