//! A TCP proxy on loopback that puts a round-trip time between a client and a receiver, so that
//! benchmarks measure what a push across continents costs without root (no `tc netem`).
//!
//! Each connection waits one RTT before anything is relayed (the TCP handshake a real path would
//! cost before the first byte), then every chunk is delivered RTT/2 after it was read, in each
//! direction, in order. Bandwidth is not limited.

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
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    tokio::time::sleep(rtt).await;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let half = rtt / 2;
    tokio::join!(delayed(client_read, server_write, half), delayed(server_read, client_write, half));
}

/// Copies `from` to `to`, each chunk `delay` after it was read; the end of `from` too.
async fn delayed(mut from: impl AsyncReadExt + Unpin, mut to: impl AsyncWriteExt + Unpin, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            // An empty chunk stands for the end of the stream.
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() || n == 0 {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if chunk.is_empty() || to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under paused time: a reply through the proxy arrives one handshake RTT plus a full round
    /// trip after the request was written, and bytes arrive intact and in order.
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
