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

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy: connections to [`LatencyProxy::addr`] reach the target RTT later.
pub struct LatencyProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
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
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target, rtt));
            }
        });
        Ok(LatencyProxy { addr, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn relay(client: TcpStream, target: SocketAddr, rtt: Duration) {
    let _ = client.set_nodelay(true);
    let half = rtt / 2;
    let (client_read, client_write) = client.into_split();
    // The client's bytes are read (and timed) from the start; they wait for the server below.
    let (to_server, from_client) = mpsc::channel(256);
    let upstream = tokio::spawn(read_delayed(client_read, to_server, half));
    tokio::time::sleep(rtt + half).await;
    let Ok(server) = TcpStream::connect(target).await else { return upstream.abort() };
    let _ = server.set_nodelay(true);
    let (server_read, server_write) = server.into_split();
    let (to_client, from_server) = mpsc::channel(256);
    tokio::join!(
        write_delayed(from_client, server_write),
        read_delayed(server_read, to_client, half),
        write_delayed(from_server, client_write)
    );
    upstream.abort();
}

/// Reads `from` into `to`, each chunk stamped with when it is due (`delay` after it was read);
/// an empty chunk stands for the end.
async fn read_delayed(mut from: impl AsyncReadExt + Unpin, tx: mpsc::Sender<(Instant, Vec<u8>)>, delay: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() || n == 0 {
            break;
        }
    }
}

/// Writes each chunk of `rx` to `to` when it is due; shuts `to` down at the end.
async fn write_delayed(mut rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: impl AsyncWriteExt + Unpin) {
    while let Some((due, chunk)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
            break;
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
}
