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

impl LatencyProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target` with `rtt`.
    pub async fn start(target: SocketAddr, rtt: Duration) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let trips: Arc<Mutex<Vec<Trip>>> = Arc::default();
        let kept = Arc::clone(&trips);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    if let Some(trip) = relay(client, target, rtt).await {
                        kept.lock().unwrap_or_else(|e| e.into_inner()).push(trip);
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

/// Relays one connection; what it cost, `None` when the target could not be reached.
async fn relay(client: TcpStream, target: SocketAddr, rtt: Duration) -> Option<Trip> {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    let half = rtt / 2;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (client_read, client_write) = client.into_split();
    // The client's bytes are read (and timed) from the start; they wait for the server below.
    let (to_server, from_client) = mpsc::channel(256);
    let upstream = tokio::spawn(read_delayed(client_read, to_server, half, Way::Up, Arc::clone(&seen)));
    tokio::time::sleep(rtt + half).await;
    let Ok(server) = TcpStream::connect(target).await else {
        upstream.abort();
        return None;
    };
    let _ = server.set_nodelay(true);
    let (server_read, server_write) = server.into_split();
    let (to_client, from_server) = mpsc::channel(256);
    tokio::join!(
        write_delayed(from_client, server_write, Way::Up, Arc::clone(&seen)),
        read_delayed(server_read, to_client, half, Way::Down, Arc::clone(&seen)),
        write_delayed(from_server, client_write, Way::Down, Arc::clone(&seen))
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

/// Reads `from` into `to`, each chunk stamped with when it is due (`delay` after it was read);
/// an empty chunk stands for the end. The client's chunks are counted into flights.
async fn read_delayed(
    mut from: impl AsyncReadExt + Unpin,
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    delay: Duration,
    way: Way,
    seen: Arc<Mutex<Seen>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if let Way::Up = way {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if n == 0 {
                seen.client_done.get_or_insert_with(Instant::now);
            } else if seen.flights == 0 || seen.answered {
                seen.flights += 1;
                seen.answered = false;
            }
        }
        if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() || n == 0 {
            break;
        }
    }
}

/// Writes each chunk of `rx` to `to` when it is due; shuts `to` down at the end. What reaches
/// the client is noted.
async fn write_delayed(
    mut rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    mut to: impl AsyncWriteExt + Unpin,
    way: Way,
    seen: Arc<Mutex<Seen>>,
) {
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
            break;
        }
        if let Way::Down = way {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.answered = true;
            seen.last_delivered = Some(Instant::now());
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under paused time: a request written at once reaches the server 1.5 RTT after `connect`
    /// (handshake, then its half trip), the reply is back half an RTT later; bytes intact.
    #[tokio::test(start_paused = true)]
    async fn a_round_trip_through_the_proxy_takes_the_handshake_and_one_rtt() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n]).await.unwrap();
        });
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
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
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
}
