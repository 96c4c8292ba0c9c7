//! The status page at 1,000 mirrors × 50 pushes (`pushmirror::demo::history`): the daemon
//! in-process over a state directory holding 50 stored reports of 1,000 mirrors each.
//!
//! ```text
//! cargo bench --bench page
//! ```
//! Prints, each over `--runs` runs (median and slowest):
//! - the grid of recent pushes built cold (50 report files parsed) and warm (files only stat'ed),
//! - the overview rendered in-process from the daemon's own `/status` and that grid: the
//!   server's render alone, and the page's size,
//! - `GET /`, `GET /?state=problems` and `GET /mirror/m0500` from the daemon over loopback:
//!   what a browser waits for, HTTP included (client and server in this process, no network).

use std::time::{Duration, Instant};

use clap::Parser;
use pushmirror::daemon::page::grid::GridCache;
use pushmirror::daemon::page::{Filters, Overview, overview};
use pushmirror::daemon::status::DaemonStatus;
use pushmirror::demo::history::{MIRRORS, PUSHES, name, serial, write_history, write_lag_history};
use pushmirror::push::report::History;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Runs of each measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Accepted for `cargo bench`'s harness flag.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// "median 12.3 ms, slowest 15.0 ms".
fn said(mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("median {:.1} ms, slowest {:.1} ms", ms(times[times.len() / 2]), ms(times[times.len() - 1]))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |rel: &str| dir.path().join(rel);
    std::fs::create_dir_all(path("mirrors.d"))?;
    std::fs::create_dir_all(path("archive/project/trace"))?;
    std::fs::write(path("archive/project/trace/master"), format!("Archive serial: {}\n", serial(PUSHES - 1)))?;
    std::fs::write(
        path("pushmirror.yaml"),
        "mirrors_dir: mirrors.d\nstate_dir: state\nstatus: { listen: 127.0.0.1:0, history: 200 }\n\
         archives:\n  debian:\n    root: archive\n    settle: 1s\n    poll: 1h\n",
    )?;
    for i in 0..MIRRORS {
        let tag = if i % 2 == 0 { "eu" } else { "us" };
        std::fs::write(
            path(&format!("mirrors.d/{}.yaml", name(i))),
            format!("http:\n  url: http://127.0.0.1:9/\ntags: [{tag}]\n"),
        )?;
    }
    write_history(&path("state"), "http://127.0.0.1:9/…")?;
    write_lag_history(&path("state"))?;
    let config = pushmirror::config::load(&path("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;

    // The grid, cold and warm.
    let history = History::new(&config.state_dir, config.status.history);
    let mut cold = Vec::new();
    for _ in 0..args.runs.min(5) {
        let cache = GridCache::default();
        let t = Instant::now();
        cache.grid(&history)?;
        cold.push(t.elapsed());
    }
    let cache = GridCache::default();
    let grid = cache.grid(&history)?;
    let mut warm = Vec::new();
    for _ in 0..args.runs {
        let t = Instant::now();
        cache.grid(&history)?;
        warm.push(t.elapsed());
    }
    println!("{MIRRORS} mirrors × {PUSHES} pushes");
    println!("grid of recent pushes, cold (50 reports parsed): {}", said(cold));
    println!("grid of recent pushes, warm (50 files stat'ed): {}", said(warm));

    let shutdown = CancellationToken::new();
    let (_reload, rx) = tokio::sync::mpsc::unbounded_channel();
    let control = pushmirror::daemon::Control::new(shutdown.clone(), rx);
    let daemon =
        pushmirror::daemon::start(path("pushmirror.yaml"), config.clone(), control, Duration::from_secs(5)).await?;
    let mut status = daemon.status.clone();
    status.wait_for(|s| s.archives.iter().all(|a| a.pushed_version.is_some())).await?;
    let base = format!("http://{}", daemon.addr);
    let client = reqwest::Client::new();

    // The overview rendered in-process from what the daemon serves.
    let served: DaemonStatus = client.get(format!("{base}/status")).send().await?.json().await?;
    let filters = Filters::default();
    let now = pushmirror::vocab::model::Timestamp(std::time::SystemTime::now());
    let view = Overview { status: &served, grid: &grid, config: Some(&config), filters: &filters, now };
    let mut render = Vec::new();
    let mut size = 0;
    for _ in 0..args.runs {
        let t = Instant::now();
        size = overview(&view).len();
        render.push(t.elapsed());
    }
    println!(
        "overview render, in-process (server side only): {}; page {} bytes ({:.0} KiB)",
        said(render),
        size,
        size as f64 / 1024.0
    );

    for url in ["/", "/?state=problems", "/mirror/m0500"] {
        let first = Instant::now();
        let body = client.get(format!("{base}{url}")).send().await?.error_for_status()?.bytes().await?;
        let first = first.elapsed();
        let mut times = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            client.get(format!("{base}{url}")).send().await?.error_for_status()?.bytes().await?;
            times.push(t.elapsed());
        }
        println!(
            "GET {url} from the in-process daemon over loopback: {} ({} bytes; the first after start {:.1} ms)",
            said(times),
            body.len(),
            first.as_secs_f64() * 1000.0
        );
    }
    shutdown.cancel();
    daemon.wait().await?;
    Ok(())
}
