//! Fan-out throughput: N mirrors, one push through the real engine, against in-process receivers
//! (client-side cost) or a real OpenSSH sshd (end to end), optionally behind a round-trip time.
//!
//! ```text
//! cargo bench --bench fanout -- --transport http --mirrors 10000
//! cargo bench --bench fanout -- --transport ssh --mirrors 1000 --concurrency 256 --rtt 100
//! cargo bench --bench fanout -- --transport ssh --mirrors 1000 --receiver sshd
//! cargo bench --bench fanout -- --transport ssh --mirrors 1000 --probe
//! cargo bench --bench fanout -- --transport ssh --mirrors 10000 --concurrency 256 \
//!     --rtt-mix 20-300 --loss 1 --dead 2 --slow 2 --timeout 30s --no-compare
//! ```
//! `--probe` measures `pushmirror probe` of the same mirrors instead of a push: nothing may be
//! received.
//!
//! `--rtt-mix LO-HI` puts each mirror behind its own proxy with its own RTT (log-uniform), and
//! `--loss`, `--dead`, `--slow` make the network look like the internet (`demo::latency::Path`).
//! It then prints the optimum for that mix — each live mirror its RTT × the protocol's round
//! trips (the fewest any of pushmirror's connections took, measured by the proxies) plus its
//! slowness, each dead one its timeout, the longest dominating or all of them shared among the
//! concurrency slots — beside the measured time. With `--rtt` or `--rtt-mix`, the proxies count each connection's round
//! trips and flights (turns of the conversation), for pushmirror and for the tool compared.
//!
//! Prints wall time, triggers/s, this process's CPU time, peak RSS, p50/p99 of one attempt (from
//! its concurrency slot to its end), and for `--receiver sshd` the sshd's own CPU time. Then it
//! sends the same triggers the way scripts do — OpenSSH's `ssh` (SSH) or `curl` (HTTP), one
//! process per trigger via `xargs -P N`, N = `--peer-parallel`, by default pushmirror's
//! concurrency (equal concurrency) — to the same receivers through the same proxies, and
//! prints how much faster pushmirror was (`--no-compare` skips that). In-process receivers run in
//! this process: their CPU and memory are in its figures.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pushmirror::demo::{ExecLog, HttpReceiver, LatencyProxy, Log, NetPath, Seeded, SshReceiver, Trip};
use pushmirror::push::engine::Options;
use pushmirror::push::plan::PushRequest;
use pushmirror::transport::Transports;
use pushmirror::vocab::clock::Clock;
use pushmirror::vocab::model::Outcome;

#[path = "common/procfs.rs"]
mod procfs;
use procfs::{cpu_seconds, threads_cpu_seconds};

/// The name of the threads of the other end's runtime (receivers and proxies).
const NETWORK: &str = "network";

/// The allocator the `pushmirror` binary runs with (src/main.rs), so that the engine measured
/// here allocates as it does there.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Transport {
    Http,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Receiver {
    /// pushmirror's own receivers in this process (client-side cost).
    Inproc,
    /// One private OpenSSH sshd with a forced command that records the trigger (SSH only).
    Sshd,
}

#[derive(Debug, Parser)]
struct Args {
    /// Transport to measure.
    #[arg(long, value_enum, default_value = "http")]
    transport: Transport,
    /// What answers.
    #[arg(long, value_enum, default_value = "inproc")]
    receiver: Receiver,
    /// Mirrors (one trigger each).
    #[arg(long, default_value_t = 10_000)]
    mirrors: usize,
    /// Triggers in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `max_per_host`: triggers in flight to one receiver (default: the concurrency).
    #[arg(long)]
    max_per_host: Option<usize>,
    /// Round-trip time in ms put between client and every receiver (a proxy per receiver).
    #[arg(long, default_value_t = 0)]
    rtt: u64,
    /// A mixed network: each mirror's own RTT, log-uniform in `LO-HI` ms (a proxy per mirror).
    #[arg(long, value_parser = parse_range)]
    rtt_mix: Option<(u64, u64)>,
    /// Percent of segments lost once (each costs a retransmission timeout); with --rtt-mix.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Percent of mirrors that are black holes (nothing ever comes back); with --rtt-mix.
    #[arg(long, default_value_t = 0.0)]
    dead: f64,
    /// Percent of mirrors whose server answers `--slow-by` late; with --rtt-mix.
    #[arg(long, default_value_t = 0.0)]
    slow: f64,
    /// How late a slow mirror answers.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    slow_by: Duration,
    /// Each mirror's `timeout:` (what a dead one costs).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Seed of the mix: which mirror gets which RTT, dies, is slow, loses what.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// In-process receivers the mirrors are spread over.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    /// Do not compare with OpenSSH's `ssh` / `curl` via xargs.
    #[arg(long)]
    no_compare: bool,
    /// Only the peers whose name contains this (e.g. `--peers 'curl --parallel'`) [default: all].
    #[arg(long)]
    peers: Option<String>,
    /// Parallel processes in the comparison [default: --concurrency, equal concurrency].
    #[arg(long, alias = "parallel")]
    peer_parallel: Option<usize>,
    /// Probe the mirrors (`pushmirror probe`) instead of pushing: host key, keys, login, no
    /// command run (SSH); a connection, no request (HTTP).
    #[arg(long)]
    probe: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `20-300` → (20, 300).
fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("`{s}` is not LO-HI"))?;
    let (lo, hi): (u64, u64) =
        (lo.parse().map_err(|e| format!("{lo}: {e}"))?, hi.parse().map_err(|e| format!("{hi}: {e}"))?);
    if lo == 0 || hi < lo {
        return Err(format!("`{s}`: want 0 < LO <= HI"));
    }
    Ok((lo, hi))
}

/// Each mirror's path on the mixed network, drawn from the seed.
fn mixed_paths(args: &Args, (lo, hi): (u64, u64)) -> Vec<NetPath> {
    let mut seeded = Seeded::new(args.seed);
    let mut draw = move || seeded.unit();
    (0..args.mirrors)
        .map(|i| {
            let rtt_ms = (lo as f64) * ((hi as f64) / (lo as f64)).powf(draw());
            let (dead, slow) = (draw() * 100.0 < args.dead, draw() * 100.0 < args.slow);
            NetPath {
                rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
                loss: args.loss / 100.0,
                dead,
                slow: if slow && !dead { args.slow_by } else { Duration::ZERO },
                seed: args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            }
        })
        .collect()
}

/// The least time a push over `paths` can take: each live mirror its RTT × `round_trips` (the
/// protocol's, as pushmirror speaks it) plus its slowness, a dead one its timeout; the longest
/// dominates, or all of them shared among `concurrency` slots.
fn optimum(paths: &[NetPath], round_trips: f64, timeout: Duration, concurrency: usize) -> Duration {
    let each: Vec<f64> = paths
        .iter()
        .map(|p| if p.dead { timeout.as_secs_f64() } else { p.rtt.as_secs_f64() * round_trips + p.slow.as_secs_f64() })
        .collect();
    let longest = each.iter().copied().fold(0.0, f64::max);
    let shared = each.iter().sum::<f64>() / concurrency.max(1) as f64;
    Duration::from_secs_f64(longest.max(shared))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    pushmirror::sys::fdlimit::raise();
    let runtime = pushmirror::sys::runtime::build()?;
    // The receivers and proxies — the other end and the network — run on threads of their own, so
    // that pushmirror, in this process, shares no runtime with them, as a peer in its own process
    // shares none: each sender has its threads, the other end has its own, in every row.
    let network = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name(NETWORK).build()?;
    let result = runtime.block_on(run(args, network.handle().clone()));
    network.shutdown_background();
    result
}

/// Runs `setup` on the network's runtime: what it spawns (servers, proxies) lives there.
async fn on_network<T: Send + 'static, E: Into<anyhow::Error> + Send + 'static>(
    network: &tokio::runtime::Handle,
    setup: impl std::future::Future<Output = Result<T, E>> + Send + 'static,
) -> anyhow::Result<T> {
    network.spawn(setup).await?.map_err(Into::into)
}

async fn run(args: Args, network: tokio::runtime::Handle) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.receiver == Receiver::Inproc || matches!(args.transport, Transport::Ssh),
        "--receiver sshd is for --transport ssh"
    );
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("mirrors.d"))?;
    std::fs::create_dir_all(root.join("archive"))?;
    let key = pushmirror::wire::keys::generate(&root.join("id_ed25519"), "pushmirror@bench")?;
    let receivers = match (args.transport, args.receiver) {
        (Transport::Http, _) => Receivers::Http(on_network(&network, http_receivers(args.receivers)).await?),
        (Transport::Ssh, Receiver::Inproc) => {
            let public = key.public.clone();
            Receivers::Ssh(on_network(&network, async move { ssh_receivers(args.receivers, &public).await }).await?)
        }
        (Transport::Ssh, Receiver::Sshd) => Receivers::Sshd(Sshd::start(root, &key.public)?),
    };
    // One proxy per receiver endpoint — or, on a mixed network, per mirror; the mirrors (and the
    // comparison) connect through them. Mirror i is served by receiver i % receivers.
    let targets = receivers.addrs();
    let paths = args.rtt_mix.map(|mix| mixed_paths(&args, mix));
    let mut proxies = Vec::new();
    let mut endpoints = Vec::new();
    match &paths {
        Some(paths) => {
            for (i, path) in paths.iter().enumerate() {
                let proxy = on_network(&network, LatencyProxy::start_path(targets[i % targets.len()], *path)).await?;
                endpoints.push(proxy.addr());
                proxies.push(proxy);
            }
        }
        None if args.rtt > 0 => {
            for target in &targets {
                let proxy = on_network(&network, LatencyProxy::start(*target, Duration::from_millis(args.rtt))).await?;
                endpoints.push(proxy.addr());
                proxies.push(proxy);
            }
        }
        None => endpoints = targets.clone(),
    }
    let timeout = humantime::format_duration(args.timeout);
    for i in 0..args.mirrors {
        let (at, host_key) = (endpoints[i % endpoints.len()], receivers.host_key_line(i % targets.len()));
        let body = match args.transport {
            Transport::Http => format!("http:\n  url: http://{at}/m{i}\nretries: 0\ntimeout: {timeout}\n"),
            Transport::Ssh => format!(
                // Waiting for the command's exit, as `ssh` does: a trigger counts when it has run.
                "ssh: {{ host: 127.0.0.1, port: {}, user: {} }}\nhost_key: \"{host_key}\"\nretries: 0\ntimeout: {timeout}\nwait_for_sync: true\n",
                at.port(),
                receivers.user()
            ),
        };
        std::fs::write(root.join(format!("mirrors.d/m{i:05}.yaml")), body)?;
    }
    std::fs::write(
        root.join("pushmirror.yaml"),
        format!(
            "identity: id_ed25519\nmirrors_dir: mirrors.d\nstate_dir: state\nconcurrency: {}\nmax_per_host: {}\n\
             status: {{ history: 5 }}\narchives:\n  debian:\n    root: archive\n",
            args.concurrency,
            args.max_per_host.unwrap_or(args.concurrency)
        ),
    )?;
    // The mirrors' files just written would otherwise be written back to disk by the kernel's
    // threads during the first row measured: every row starts with nothing left to write.
    settle()?;
    let t = Instant::now();
    let config = pushmirror::config::load(&root.join("pushmirror.yaml")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = t.elapsed();
    if args.probe {
        return probe(&args, &config, &receivers, load).await;
    }
    let plan = pushmirror::push::plan_push(&config, &PushRequest::default())?;
    let engine = pushmirror::push::engine(
        &config,
        Arc::new(Transports::new(&config, pushmirror::transport::mqtt::connect::BrokerSession::Once)?),
        Clock::system(),
    );
    let attempts: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let record = Arc::clone(&attempts);
    let options = Options { on_attempt: Some(Arc::new(move |d| record.lock().unwrap().push(d))), ..Options::default() };
    let (cpu0, sshd0, net0) = (cpu_seconds("self")?, receivers.server_cpu()?, threads_cpu_seconds(NETWORK)?);
    let t = Instant::now();
    let report = pushmirror::push::dispatch(&engine, &plan, &options, "bench").await;
    let sent = t.elapsed();
    pushmirror::push::save(&config, &report);
    let push = t.elapsed();
    let (cpu, sshd_cpu) = (cpu_seconds("self")? - cpu0, receivers.server_cpu()? - sshd0);
    let own_cpu = cpu - (threads_cpu_seconds(NETWORK)? - net0);
    drop(engine); // pooled HTTP connections end here, and with them their count
    let trips = trips_of(&proxies, args.mirrors).await;
    let ok = report.triggers.iter().filter(|r| r.outcome == Outcome::Ok).count();
    let mut times = attempts.lock().unwrap().clone();
    times.sort();
    let pct = |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied();
    println!(
        "transport={:?} receiver={:?} mirrors={} concurrency={} max_per_host={} rtt={}ms endpoints={}",
        args.transport,
        args.receiver,
        args.mirrors,
        pushmirror::sys::fdlimit::concurrency(args.concurrency),
        args.max_per_host.unwrap_or(args.concurrency),
        args.rtt,
        endpoints.len()
    );
    println!("config load: {:.3} s", load.as_secs_f64());
    println!(
        "push: {:.3} s, {} ok, {} received, {:.0} triggers/s",
        push.as_secs_f64(),
        ok,
        receivers.received(),
        args.mirrors as f64 / push.as_secs_f64()
    );
    println!(
        "of which sending {:.3} s, recording the report and ledger {:.3} s",
        sent.as_secs_f64(),
        (push - sent).as_secs_f64()
    );
    println!(
        "attempt p50 {:.1} ms, p99 {:.1} ms",
        pct(0.5).unwrap_or_default().as_secs_f64() * 1e3,
        pct(0.99).unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("CPU of this process during the push: {cpu:.2} s; peak RSS: {:.1} MB", peak_rss_kb()? as f64 / 1024.0);
    if !proxies.is_empty() {
        println!("pushmirror, per connection through the proxies: {}", describe(&trips));
    }
    let live = paths.as_ref().map_or(args.mirrors, |p| p.iter().filter(|p| !p.dead).count());
    if let (Some(paths), Some(rts)) = (&paths, fewest_round_trips(&trips)) {
        let best = optimum(paths, rts, args.timeout, pushmirror::sys::fdlimit::concurrency(args.concurrency));
        let slow = paths.iter().filter(|p| !p.slow.is_zero()).count();
        println!(
            "mixed network: {} mirrors, RTT {}–{} ms log-uniform, {} % loss, {} dead, {slow} slow by {}; \
             optimum {:.2} s ({} round trips each, dead ones their {} timeout); measured {:.2} s = {:.2}x the optimum",
            paths.len(),
            args.rtt_mix.map_or(0, |m| m.0),
            args.rtt_mix.map_or(0, |m| m.1),
            args.loss,
            paths.len() - live,
            humantime::format_duration(args.slow_by),
            best.as_secs_f64(),
            rts,
            humantime::format_duration(args.timeout),
            push.as_secs_f64(),
            push.as_secs_f64() / best.as_secs_f64()
        );
    }
    if let Receivers::Sshd(_) = &receivers {
        println!(
            "sshd CPU during the push: {sshd_cpu:.2} s ({:.2} ms per connection)",
            sshd_cpu * 1e3 / args.mirrors as f64
        );
    }
    if let Some(failed) = report.triggers.iter().find(|r| r.outcome != Outcome::Ok) {
        println!(
            "first trigger not ok: {} {:?} {}",
            failed.mirror,
            failed.error_class,
            failed.error.as_deref().unwrap_or("")
        );
    }
    anyhow::ensure!(ok == live, "{ok} triggers were ok, of {live} live mirrors");
    anyhow::ensure!(receivers.received() == live, "{} received, of {live} live mirrors", receivers.received());
    if args.no_compare {
        return Ok(());
    }
    let parallel = args.peer_parallel.unwrap_or(pushmirror::sys::fdlimit::concurrency(args.concurrency));
    let peers = match args.transport {
        Transport::Ssh => ssh_peers(&endpoints, root, &receivers, &args, parallel)?,
        Transport::Http => http_peers(&endpoints, root, &args, parallel)?,
    };
    let mut rows = vec![Row {
        tool: format!("pushmirror (concurrency {})", pushmirror::sys::fdlimit::concurrency(args.concurrency)),
        wall: push,
        cpu,
        own_cpu,
        peak_rss_kb: peak_rss_kb()?,
        delivered: live,
    }];
    let mut missing = Vec::new();
    for peer in peers {
        if args.peers.as_deref().is_some_and(|only| !peer.tool.contains(only)) {
            continue;
        }
        if let Some(absent) = peer.needs.iter().find(|bin| !on_path(bin)) {
            println!("{}: not run, `{absent}` is not installed", peer.tool);
            missing.push(peer.tool);
            continue;
        }
        settle()?;
        let (before, sshd0, net0) = (receivers.received(), receivers.server_cpu()?, threads_cpu_seconds(NETWORK)?);
        let run = run_peer(&peer.script, peer.input).await?;
        let own_cpu = run.cpu - (threads_cpu_seconds(NETWORK)? - net0);
        let delivered = receivers.received() - before;
        if !proxies.is_empty() {
            println!(
                "{}, per connection through the proxies: {}",
                peer.tool,
                describe(&trips_of(&proxies, live).await)
            );
        }
        if let Receivers::Sshd(_) = &receivers {
            let cpu = receivers.server_cpu()? - sshd0;
            println!(
                "sshd CPU during {}: {cpu:.2} s ({:.2} ms per connection)",
                peer.tool,
                cpu * 1e3 / args.mirrors as f64
            );
        }
        rows.push(Row {
            tool: peer.tool,
            wall: run.wall,
            cpu: run.cpu,
            own_cpu,
            peak_rss_kb: run.peak_rss_kb,
            delivered,
        });
    }
    println!();
    println!("| tool | wall | triggers/s | CPU | sender's CPU per trigger | peak RSS | delivered |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} s | {:.0} | {:.2} s | {:.0} µs | {:.1} MB | {} of {live} |",
            r.tool,
            r.wall.as_secs_f64(),
            r.delivered as f64 / r.wall.as_secs_f64(),
            r.cpu,
            r.own_cpu * 1e6 / args.mirrors as f64,
            r.peak_rss_kb as f64 / 1024.0,
            r.delivered
        );
    }
    println!(
        "(CPU: this process's and its children's — the in-process receivers and proxies in every row; \
         the sender's: that less the CPU of the receivers' and proxies' threads (`{NETWORK}`); \
         peak RSS: pushmirror's is this process, receivers and proxies included; a peer's is the sum of \
         its own processes at their peak)"
    );
    let fastest = rows.iter().min_by_key(|r| r.wall).map(|r| r.tool.clone()).unwrap_or_default();
    println!("fastest: {fastest}");
    for r in &rows[1..] {
        anyhow::ensure!(r.delivered == live, "{} delivered {} triggers, of {live} live mirrors", r.tool, r.delivered);
    }
    anyhow::ensure!(
        std::env::var_os("CI").is_none() || missing.is_empty(),
        "peers missing under CI: {}",
        missing.join(", ")
    );
    Ok(())
}

/// Writes back every dirty page (`sync`), so that no writeback of earlier work runs on the cores
/// during a measurement.
fn settle() -> anyhow::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

/// One line of the comparison.
struct Row {
    tool: String,
    wall: Duration,
    cpu: f64,
    /// `cpu` less the other end's threads: the sender's own.
    own_cpu: f64,
    peak_rss_kb: u64,
    delivered: usize,
}

/// A way scripts send the same triggers: a shell pipeline and what it reads on stdin.
struct Peer {
    tool: String,
    needs: Vec<&'static str>,
    script: String,
    input: String,
}

/// Whether `bin` is an executable on `PATH`.
fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
}

/// The connections through `proxies` that ended, once `expected` of them did (or none more for
/// 3 s). Empty without proxies.
async fn trips_of(proxies: &[LatencyProxy], expected: usize) -> Vec<Trip> {
    let mut trips = Vec::new();
    let mut quiet_since = Instant::now();
    while !proxies.is_empty() && trips.len() < expected && quiet_since.elapsed() < Duration::from_secs(3) {
        let more: Vec<_> = proxies.iter().flat_map(|p| p.take_trips()).collect();
        if !more.is_empty() {
            quiet_since = Instant::now();
        }
        trips.extend(more);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trips
}

/// The fewest round trips any of `trips` took, to the nearest whole one: the protocol's cost as
/// the client speaks it, on a path that lost nothing and answered at once.
fn fewest_round_trips(trips: &[Trip]) -> Option<f64> {
    trips.iter().map(|t| t.round_trips).min_by(f64::total_cmp).map(f64::round)
}

/// Round trips and flights (turns of the conversation) of `trips`: median and range.
fn describe(trips: &[Trip]) -> String {
    if trips.is_empty() {
        return "no connection ended".into();
    }
    let mut rts: Vec<f64> = trips.iter().map(|t| t.round_trips).collect();
    let mut flights: Vec<u32> = trips.iter().map(|t| t.flights).collect();
    rts.sort_by(f64::total_cmp);
    flights.sort_unstable();
    let mid = trips.len() / 2;
    format!(
        "{} connections; round trips median {:.1} ({:.1}–{:.1}); flights median {} ({}–{})",
        trips.len(),
        rts[mid],
        rts[0],
        rts[rts.len() - 1],
        flights[mid],
        flights[0],
        flights[flights.len() - 1]
    )
}

/// `probe` of every mirror: its time, this process's CPU and peak RSS; every mirror must be
/// ready and no receiver may have received a trigger.
async fn probe(
    args: &Args,
    config: &pushmirror::config::Config,
    receivers: &Receivers,
    load: Duration,
) -> anyhow::Result<()> {
    let (cpu0, sshd0) = (cpu_seconds("self")?, receivers.server_cpu()?);
    let t = Instant::now();
    let probed = pushmirror::push::probe::probe(config, None, &[]).await?;
    let took = t.elapsed();
    let (cpu, sshd_cpu) = (cpu_seconds("self")? - cpu0, receivers.server_cpu()? - sshd0);
    let ready = probed.mirrors.iter().filter(|r| r.ready).count();
    println!(
        "probe: transport={:?} receiver={:?} mirrors={} concurrency={} rtt={}ms endpoints={}",
        args.transport,
        args.receiver,
        args.mirrors,
        pushmirror::sys::fdlimit::concurrency(args.concurrency),
        args.rtt,
        receivers.addrs().len()
    );
    println!("config load: {:.3} s", load.as_secs_f64());
    println!(
        "probe: {:.3} s, {ready} ready, {} triggers received, {:.0} mirrors/s",
        took.as_secs_f64(),
        receivers.received(),
        args.mirrors as f64 / took.as_secs_f64()
    );
    println!("CPU of this process during the probe: {cpu:.2} s; peak RSS: {:.1} MB", peak_rss_kb()? as f64 / 1024.0);
    if let Receivers::Sshd(_) = receivers {
        println!("sshd CPU during the probe: {sshd_cpu:.2} s");
    }
    if let Some(row) = probed.mirrors.iter().find(|r| !r.ready) {
        println!("first mirror not ready: {} {:?} {}", row.mirror, row.error_class, row.error.as_deref().unwrap_or(""));
    }
    anyhow::ensure!(ready == args.mirrors, "only {ready} of {} mirrors were ready", args.mirrors);
    anyhow::ensure!(receivers.received() == 0, "a probe delivered {} triggers", receivers.received());
    Ok(())
}

/// OpenSSH's client with runmirrors' options, `parallel` at a time, round-robin over
/// `endpoints`: through `xargs -P`, GNU `parallel -j` and `parallel-ssh -p` (Debian's `pssh`).
fn ssh_peers(
    endpoints: &[SocketAddr],
    root: &std::path::Path,
    receivers: &Receivers,
    args: &Args,
    parallel: usize,
) -> anyhow::Result<Vec<Peer>> {
    let n = args.mirrors;
    let served_by = receivers.addrs().len();
    let known_hosts: String = endpoints
        .iter()
        .enumerate()
        .map(|(i, at)| format!("[127.0.0.1]:{} {}\n", at.port(), receivers.host_key_line(i % served_by)))
        .collect();
    let kh = root.join("known_hosts.openssh");
    std::fs::write(&kh, known_hosts)?;
    let ports: String = (0..n).map(|i| format!("{}\n", endpoints[i % endpoints.len()].port())).collect();
    let secs = args.timeout.as_secs().max(1);
    let options = format!(
        "-l {user} -i {key} -o BatchMode=yes -o ConnectTimeout=45 -o ServerAliveInterval=45 \
         -o PasswordAuthentication=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile={kh} -o LogLevel=ERROR",
        user = receivers.user(),
        key = root.join("id_ed25519").display(),
        kh = kh.display(),
    );
    let command = "' sync:archive:debian sync:all'";
    let hosts: String = (0..n).map(|i| format!("127.0.0.1:{}\n", endpoints[i % endpoints.len()].port())).collect();
    let hosts_file = root.join("pssh.hosts");
    std::fs::write(&hosts_file, hosts)?;
    Ok(vec![
        Peer {
            tool: format!("OpenSSH ssh via xargs -P {parallel}"),
            needs: vec!["xargs", "ssh"],
            script: format!("xargs -P {parallel} -I PORT timeout {secs} ssh -n -p PORT {options} 127.0.0.1 {command}"),
            input: ports.clone(),
        },
        Peer {
            tool: format!("OpenSSH ssh via GNU parallel -j {parallel}"),
            needs: vec!["parallel", "ssh"],
            // GNU parallel runs each line through a shell: the command is quoted once more.
            script: format!(
                "parallel --will-cite -j {parallel} timeout {secs} ssh -n -p {{}} {options} 127.0.0.1 \"{command}\""
            ),
            input: ports,
        },
        Peer {
            tool: format!("parallel-ssh (pssh) -p {parallel}"),
            needs: vec!["parallel-ssh", "ssh"],
            script: format!(
                "parallel-ssh -h {hosts} -p {parallel} -t {secs} -x \"{options}\" {command} > /dev/null",
                hosts = hosts_file.display()
            ),
            input: String::new(),
        },
    ])
}

/// `curl`, `parallel` at a time, round-robin over `endpoints`: a process per trigger through
/// `xargs -P` and GNU `parallel -j`, and one process with `--parallel --parallel-max`.
fn http_peers(
    endpoints: &[SocketAddr],
    root: &std::path::Path,
    args: &Args,
    parallel: usize,
) -> anyhow::Result<Vec<Peer>> {
    let urls: String = (0..args.mirrors).map(|i| format!("http://{}/c{i}\n", endpoints[i % endpoints.len()])).collect();
    let secs = args.timeout.as_secs().max(1);
    let config: String = (0..args.mirrors)
        .map(|i| format!("url = \"http://{}/c{i}\"\noutput = \"/dev/null\"\n", endpoints[i % endpoints.len()]))
        .collect();
    let config_file = root.join("curl.parallel");
    std::fs::write(&config_file, config)?;
    Ok(vec![
        Peer {
            tool: format!("curl via xargs -P {parallel}"),
            needs: vec!["xargs", "curl"],
            script: format!("xargs -P {parallel} -n 1 curl -sf -o /dev/null --max-time {secs}"),
            input: urls.clone(),
        },
        Peer {
            tool: format!("curl via GNU parallel -j {parallel}"),
            needs: vec!["parallel", "curl"],
            script: format!("parallel --will-cite -j {parallel} curl -sf -o /dev/null --max-time {secs}"),
            input: urls,
        },
        Peer {
            tool: format!("curl --parallel --parallel-max {parallel} (one process)"),
            needs: vec!["curl"],
            script: format!(
                "curl -sf --no-progress-meter --parallel --parallel-immediate --parallel-max {parallel} --max-time {secs} -K {}",
                config_file.display()
            ),
            input: String::new(),
        },
    ])
}

/// What one peer's run cost.
struct PeerRun {
    wall: Duration,
    /// CPU seconds of this process and its reaped children over the run.
    cpu: f64,
    /// The largest sum of the RSS of the script's processes, sampled every 20 ms.
    peak_rss_kb: u64,
}

/// Runs `script` with `input` on its stdin: its wall time, CPU and peak memory.
async fn run_peer(script: &str, input: String) -> anyhow::Result<PeerRun> {
    let cpu0 = cpu_seconds("self")?;
    let t = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {script}: {e}"))?;
    let pid = child.id().unwrap_or_default();
    let mut stdin = child.stdin.take().expect("piped");
    let feed = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, input.as_bytes()).await;
    });
    let mut peak = 0u64;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(tree_rss_kb(pid)),
        }
    };
    let wall = t.elapsed();
    feed.abort();
    // 1–125 (xargs: 123): some invocation failed — a dead mirror; the caller counts what arrived.
    anyhow::ensure!(status.code().is_some_and(|c| c < 126), "{script} failed: {status}");
    Ok(PeerRun { wall, cpu: cpu_seconds("self")? - cpu0, peak_rss_kb: peak })
}

/// The summed RSS, in KiB, of `root` and every process below it.
fn tree_rss_kb(root: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut parent = std::collections::HashMap::new();
    let mut rss = std::collections::HashMap::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default().split_whitespace().collect();
        // ppid is field 4 of stat(5), rss (pages) field 24; `fields` starts at field 3.
        let (Some(ppid), Some(pages)) = (fields.get(1), fields.get(21)) else { continue };
        parent.insert(pid, ppid.parse::<u32>().unwrap_or(0));
        rss.insert(pid, pages.parse::<u64>().unwrap_or(0) * 4);
    }
    let below = |mut pid: u32| {
        while pid > 1 {
            if pid == root {
                return true;
            }
            pid = parent.get(&pid).copied().unwrap_or(0);
        }
        false
    };
    rss.iter().filter(|(pid, _)| below(**pid)).map(|(_, kb)| kb).sum()
}

/// The receivers of one run, all of one kind.
enum Receivers {
    Http(Vec<HttpReceiver>),
    Ssh(Vec<SshReceiver>),
    Sshd(Sshd),
}

impl Receivers {
    fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Receivers::Http(r) => r.iter().map(|rx| rx.addr).collect(),
            Receivers::Ssh(r) => r.iter().map(|rx| SocketAddr::from(([127, 0, 0, 1], rx.port()))).collect(),
            Receivers::Sshd(s) => vec![SocketAddr::from(([127, 0, 0, 1], s.port))],
        }
    }

    /// The host key of receiver `i` (the order of [`Receivers::addrs`]).
    fn host_key_line(&self, i: usize) -> String {
        match self {
            Receivers::Http(_) => String::new(),
            Receivers::Ssh(r) => r[i].host_key_line(),
            Receivers::Sshd(s) => s.host_key.clone(),
        }
    }

    fn user(&self) -> String {
        match self {
            Receivers::Sshd(s) => s.user.name.clone(),
            _ => "bench".into(),
        }
    }

    /// Triggers received by all of them.
    fn received(&self) -> usize {
        match self {
            Receivers::Http(r) => r.first().map_or(0, |rx| rx.log().count()),
            Receivers::Ssh(r) => r.first().map_or(0, |rx| rx.log().count()),
            Receivers::Sshd(s) => std::fs::read_to_string(&s.received).map_or(0, |t| t.lines().count()),
        }
    }

    /// CPU seconds the server processes used so far (sshd and its reaped children); 0 in-process.
    fn server_cpu(&self) -> anyhow::Result<f64> {
        match self {
            Receivers::Sshd(s) => cpu_seconds(&s.child.id().to_string()),
            _ => Ok(0.0),
        }
    }
}

/// A private OpenSSH sshd on a free port whose forced command appends the trigger to a file.
struct Sshd {
    child: std::process::Child,
    user: BenchUser,
    port: u16,
    host_key: String,
    received: std::path::PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user the forced command runs as. As root, a temporary system user with `/bin/sh` as its
/// shell (removed at the end), so that what is measured is sshd and the command, not the login
/// shell's startup files (bash reads `~/.bashrc` for commands run by sshd); otherwise the user
/// running the bench, whose shell then counts too.
struct BenchUser {
    name: String,
    created: bool,
}

impl BenchUser {
    fn new(home: &std::path::Path) -> anyhow::Result<BenchUser> {
        if rustix::process::getuid().is_root() {
            let name = format!("pmbench{}", std::process::id());
            let made = std::process::Command::new("useradd")
                // `*`: no password, and not locked (sshd refuses a locked account even for keys).
                .args(["--system", "--password", "*", "--shell", "/bin/sh", "--no-create-home", "--home-dir"])
                .arg(home)
                .arg(&name)
                .status()?;
            anyhow::ensure!(made.success(), "useradd failed");
            return Ok(BenchUser { name, created: true });
        }
        let name = std::env::var("USER").map_err(|_| anyhow::anyhow!("$USER is not set"))?;
        Ok(BenchUser { name, created: false })
    }
}

impl Drop for BenchUser {
    fn drop(&mut self) {
        if self.created {
            let removed = std::process::Command::new("userdel").arg(&self.name).status();
            if !removed.is_ok_and(|s| s.success()) {
                eprintln!("could not remove the bench user {}: userdel {0}", self.name);
            }
        }
    }
}

impl Sshd {
    fn start(root: &std::path::Path, key: &russh::keys::PublicKey) -> anyhow::Result<Sshd> {
        let dir = root.join("sshd");
        std::fs::create_dir_all(&dir)?;
        let user = BenchUser::new(&dir)?;
        let host = dir.join("host_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host)
            .status()?;
        anyhow::ensure!(made.success(), "ssh-keygen failed");
        let received = dir.join("received");
        std::fs::write(&received, "")?;
        // The command runs as the bench user: it appends to a file it may write.
        std::fs::set_permissions(&received, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let command = format!("echo \"$SSH_ORIGINAL_COMMAND\" >> {}", received.display());
        let line = pushmirror::wire::keys::authorized_keys_line(key, &command, None).map_err(|e| anyhow::anyhow!(e))?;
        std::fs::write(dir.join("authorized_keys"), format!("{line}\n"))?;
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // Room for every connection of the run: the bench measures throughput, not MaxStartups.
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nMaxStartups 10000:30:20000\nMaxSessions 1000\nPermitRootLogin forced-commands-only\n\
             LogLevel ERROR\n",
            host = host.display(),
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config)?;
        let child = std::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start /usr/sbin/sshd (apt-get install openssh-server): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "sshd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        let public = std::fs::read_to_string(dir.join("host_ed25519.pub"))?;
        let host_key = public.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Ok(Sshd { child, user, port, host_key, received })
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

/// SSH receivers that accept the sender key `key`.
async fn ssh_receivers(n: usize, key: &russh::keys::PublicKey) -> anyhow::Result<Vec<SshReceiver>> {
    let log = Arc::new(ExecLog::default());
    let mut receivers = Vec::new();
    for _ in 0..n.max(1) {
        receivers.push(SshReceiver::builder().authorize(key).log(Arc::clone(&log)).start().await?);
    }
    Ok(receivers)
}

/// VmHWM of this process, in KiB.
fn peak_rss_kb() -> anyhow::Result<u64> {
    procfs::peak_rss_kb("self")
}
