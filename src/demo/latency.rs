//! A TCP proxy on loopback that puts a round-trip time between a client and a receiver, so that
//! benchmarks measure what a push across continents costs without root (no `tc netem`).
//!
//! A real path costs a TCP handshake before anything else: the client's `connect` returns after
//! one RTT and the server accepts half an RTT later. Here `connect` returns at once (loopback), so
//! the proxy connects to the target only 1.5 RTT after it accepted — when the server would accept
//! — and delivers every chunk, in each direction, in order, RTT/2 after it was read, but the
//! client's not before that connection exists: a server's first bytes (an SSH banner) reach the
//! client 2 RTT after its `connect`, the client's first bytes reach the server at 1.5 RTT, as on a
//! real path. Bandwidth is not limited.
//!
//! A [`Path`] adds what the internet adds: segments lost and retransmitted, black holes, slow
//! servers, each deterministic from a seed.
//!
//! It also counts, per connection, what a client's protocol costs in round trips ([`Trip`]): the
//! time from `connect` until the client was done, in RTTs, and the client's flights (bytes it sent
//! after the server's last reached it — a turn of the conversation).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Seeded;

/// A running proxy: connections to [`LatencyProxy::addr`] reach the target RTT later.
pub struct LatencyProxy {
    addr: SocketAddr,
    trips: Arc<Mutex<Vec<Trip>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What one connection through the proxy cost its client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    /// From `connect` until the client was done — its end of the stream closed, or the server's
    /// last bytes delivered to it if that came first (a connection kept for reuse) — in RTTs.
    /// With a server that answers at once this is the protocol's round trips, the handshake
    /// included.
    pub round_trips: f64,
    /// Runs of bytes the client sent with nothing from the server reaching it in between: its
    /// first, then one for each time it answered the server.
    pub flights: u32,
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The path to one receiver: its round-trip time and what goes wrong on it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Path {
    /// The round-trip time.
    pub rtt: Duration,
    /// The chance that a chunk (a segment) is lost once: it arrives a retransmission timeout
    /// late — `rtt` + 200 ms, Linux's minimum RTO over the path's smoothed RTT — and what follows
    /// it in that direction waits behind it, as TCP delivers in order. A lost SYN costs the
    /// initial RTO, 1 s.
    pub loss: f64,
    /// A black hole: nothing reaches the server and nothing comes back; the client waits until
    /// its own timeout.
    pub dead: bool,
    /// The server's first bytes are this much late: a loaded mirror.
    pub slow: Duration,
    /// Seeds the losses of this path (each connection draws from it in turn).
    pub seed: u64,
}

impl Path {
    /// A clean path of `rtt`.
    pub fn rtt(rtt: Duration) -> Path {
        Path { rtt, ..Path::default() }
    }
}

/// The retransmission timeout a lost segment costs on a path of `rtt`.
fn rto(rtt: Duration) -> Duration {
    rtt + Duration::from_millis(200)
}

/// Trips a proxy keeps until they are taken.
const KEPT_TRIPS: usize = 1_000_000;

/// The initial retransmission timeout: what a lost SYN costs (RFC 6298).
const SYN_RTO: Duration = Duration::from_secs(1);

/// Deterministic losses: the seed decides which chunks are lost.
struct Losses {
    draws: Seeded,
    chance: f64,
}

impl Losses {
    fn new(seed: u64, chance: f64) -> Losses {
        Losses { draws: Seeded::new(seed), chance }
    }

    /// Whether the next chunk is lost once.
    fn lost(&mut self) -> bool {
        self.chance > 0.0 && self.draws.unit() < self.chance
    }
}

impl LatencyProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target` with `rtt`.
    pub async fn start(target: SocketAddr, rtt: Duration) -> std::io::Result<LatencyProxy> {
        LatencyProxy::start_path(target, Path::rtt(rtt)).await
    }

    /// Listens on 127.0.0.1:0 and forwards every connection to `target` over `path`.
    pub async fn start_path(target: SocketAddr, path: Path) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let trips: Arc<Mutex<Vec<Trip>>> = Arc::default();
        let kept = Arc::clone(&trips);
        let task = tokio::spawn(async move {
            let mut connection = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                let path = Path { seed: path.seed.wrapping_add(connection), ..path };
                connection += 1;
                tokio::spawn(async move {
                    if let Some(trip) = relay(client, target, path).await {
                        let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                        // Bounded: a proxy nobody asks keeps its first million.
                        if kept.len() < KEPT_TRIPS {
                            kept.push(trip);
                        }
                    }
                });
            }
        });
        Ok(LatencyProxy { addr, trips, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connections carried and ended since the last call, in the order they ended.
    pub fn take_trips(&self) -> Vec<Trip> {
        std::mem::take(&mut *self.trips.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The client's side of one connection as the proxy sees it.
#[derive(Debug, Default)]
struct Seen {
    flights: u32,
    /// Server bytes reached the client since its last chunk.
    answered: bool,
    client_done: Option<Instant>,
    last_delivered: Option<Instant>,
}

/// Which way a chunk goes.
#[derive(Clone, Copy)]
enum Way {
    Up,
    Down,
}

/// Relays one connection over `path`; what it cost, `None` when the target could not be reached
/// or the path is a black hole.
async fn relay(client: TcpStream, target: SocketAddr, path: Path) -> Option<Trip> {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    if path.dead {
        // Nothing comes back, ever: the client gives up by itself.
        let mut client = client;
        let mut sink = [0u8; 4096];
        while matches!(client.read(&mut sink).await, Ok(1..)) {}
        return None;
    }
    let (rtt, half) = (path.rtt, path.rtt / 2);
    let losses = Arc::new(Mutex::new(Losses::new(path.seed, path.loss)));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (client_read, client_write) = client.into_split();
    // The client's bytes are read (and timed) from the start; they wait for the server below.
    let (to_server, from_client) = mpsc::channel(256);
    let syn_lost = losses.lock().unwrap_or_else(|e| e.into_inner()).lost();
    // When a real client's `connect` would have returned: what it writes leaves then.
    let established = accepted + rtt + if syn_lost { SYN_RTO } else { Duration::ZERO };
    let up = Leg {
        delay: half,
        not_before: established,
        way: Way::Up,
        seen: Arc::clone(&seen),
        losses: Arc::clone(&losses),
        rtt,
    };
    let upstream = tokio::spawn(read_delayed(client_read, to_server, up.clone()));
    tokio::time::sleep_until(established + half).await;
    let Ok(server) = TcpStream::connect(target).await else {
        upstream.abort();
        return None;
    };
    let _ = server.set_nodelay(true);
    let (server_read, server_write) = server.into_split();
    let (to_client, from_server) = mpsc::channel(256);
    let down =
        Leg { delay: half + path.slow, not_before: accepted, way: Way::Down, seen: Arc::clone(&seen), losses, rtt };
    tokio::join!(
        write_delayed(from_client, server_write, up),
        read_delayed(server_read, to_client, down.clone()),
        async { write_delayed(from_server, client_write, down).await }
    );
    upstream.abort();
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let done = match (seen.client_done, seen.last_delivered) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or_else(Instant::now),
    };
    let round_trips = if rtt.is_zero() { 0.0 } else { (done - accepted).as_secs_f64() / rtt.as_secs_f64() };
    Some(Trip { round_trips, flights: seen.flights })
}

/// One direction of a connection: how late its chunks arrive, and what is noted of them.
#[derive(Clone)]
struct Leg {
    /// Half the RTT (and, from the server, how slow it is to answer first).
    delay: Duration,
    /// Nothing leaves before this: the client's bytes wait for its connection.
    not_before: Instant,
    way: Way,
    seen: Arc<Mutex<Seen>>,
    losses: Arc<Mutex<Losses>>,
    rtt: Duration,
}

/// Reads `from` into `to`, each chunk stamped with when it is due (the leg's delay after it was
/// read or could leave, a retransmission timeout more when it is lost; the server's slowness
/// only on its first);
/// an empty chunk stands for the end. The client's chunks are counted into flights.
async fn read_delayed(mut from: impl AsyncReadExt + Unpin, tx: mpsc::Sender<(Instant, Vec<u8>)>, mut leg: Leg) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if let Way::Up = leg.way {
            let mut seen = leg.seen.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                seen.client_done.get_or_insert_with(Instant::now);
            } else if seen.flights == 0 || seen.answered {
                seen.flights += 1;
                seen.answered = false;
            }
        }
        let lost = n > 0 && leg.losses.lock().unwrap_or_else(|e| e.into_inner()).lost();
        let due = Instant::now().max(leg.not_before) + leg.delay + if lost { rto(leg.rtt) } else { Duration::ZERO };
        // Slowness delays the server's first answer; the rest follows at the path's pace.
        leg.delay = leg.rtt / 2;
        if tx.send((due, buf[..n].to_vec())).await.is_err() || n == 0 {
            break;
        }
    }
}

/// Writes each chunk of `rx` to `to` when it is due, in order; shuts `to` down at the end. What
/// reaches the client is noted.
async fn write_delayed(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: impl AsyncWriteExt + Unpin, leg: Leg) {
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
            break;
        }
        if let Way::Down = leg.way {
            let mut seen = leg.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.answered = true;
            seen.last_delivered = Some(Instant::now());
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on 127.0.0.1:0 that echoes what one connection sends until it closes.
    async fn echo() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        target
    }

    /// Under paused time: a request written at once reaches the server 1.5 RTT after `connect`
    /// (handshake, then its half trip), the reply is back half an RTT later; bytes intact.
    #[tokio::test(start_paused = true)]
    async fn a_round_trip_through_the_proxy_takes_the_handshake_and_one_rtt() {
        let target = echo().await;
        let rtt = Duration::from_millis(100);
        let proxy = LatencyProxy::start(target, rtt).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        let t0 = Instant::now();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let took = t0.elapsed();
        assert!(took >= rtt * 2, "{took:?}");
        assert!(took < rtt * 2 + Duration::from_millis(20), "paused time: {took:?}");
    }

    /// Three request/response exchanges on one connection, the client closing after the last
    /// answer: the handshake and three round trips (4 RTTs), three flights — counted by the proxy.
    #[tokio::test(start_paused = true)]
    async fn the_proxy_counts_a_connections_round_trips_and_flights() {
        let target = echo().await;
        let rtt = Duration::from_millis(100);
        let proxy = LatencyProxy::start(target, rtt).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        for word in [&b"one"[..], b"two", b"six"] {
            c.write_all(word).await.unwrap();
            let mut got = [0u8; 3];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, word);
        }
        drop(c);
        let trip = loop {
            if let Some(t) = proxy.take_trips().first().copied() {
                break t;
            }
            tokio::time::sleep(rtt).await;
        };
        assert_eq!(trip.flights, 3, "{trip:?}");
        assert!((trip.round_trips - 4.0).abs() < 0.05, "{trip:?}");
    }

    /// A request and its answer through `path` to an echo server: how long after `connect` the
    /// answer came, or `None` if it had not within a minute; and the proxy.
    async fn exchange(path: Path) -> (Option<Duration>, LatencyProxy) {
        let proxy = LatencyProxy::start_path(echo().await, path).await.unwrap();
        let t0 = Instant::now();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        let answered = tokio::time::timeout(Duration::from_secs(60), c.read_exact(&mut got)).await;
        (answered.is_ok().then(|| t0.elapsed()), proxy)
    }

    /// Under paused time, each fault of a path costs exactly what it models: a slow server its
    /// slowness, a lost SYN the initial RTO, a lost segment RTT + 200 ms; a black hole never answers.
    #[tokio::test(start_paused = true)]
    async fn slow_lossy_and_dead_paths_cost_what_they_model() {
        let rtt = Duration::from_millis(100);
        let near = |took: Option<Duration>, want: Duration| {
            took.is_some_and(|t| t >= want && t < want + Duration::from_millis(5))
        };
        let (took, _) = exchange(Path::rtt(rtt)).await;
        assert!(near(took, rtt * 2), "{took:?}");
        let (took, _) = exchange(Path { slow: Duration::from_secs(2), ..Path::rtt(rtt) }).await;
        assert!(near(took, rtt * 2 + Duration::from_secs(2)), "{took:?}");
        // Everything lost once: the SYN, the request and the answer.
        let (took, _) = exchange(Path { loss: 1.0, ..Path::rtt(rtt) }).await;
        assert!(near(took, rtt * 2 + SYN_RTO + rto(rtt) * 2), "{took:?}");
        let (took, proxy) = exchange(Path { dead: true, ..Path::rtt(rtt) }).await;
        assert_eq!(took, None);
        assert!(proxy.take_trips().is_empty(), "a black hole carries nothing");
    }

    /// A path's losses are drawn from its seed: about the chance asked, the same for one seed.
    #[test]
    fn losses_follow_the_chance_and_the_seed() {
        let draw = |seed| {
            let mut l = Losses::new(seed, 0.01);
            (0..100_000).filter(|_| l.lost()).count()
        };
        let lost = draw(7);
        assert!((800..1200).contains(&lost), "{lost} of 100,000 at 1 %");
        assert_eq!(draw(7), lost);
        assert_ne!(draw(8), lost);
        assert_eq!((0..1000).filter(|_| Losses::new(3, 0.0).lost()).count(), 0);
    }
}
