//! A userspace TCP link with a one-way delay, for measuring a cluster as if its nodes were
//! apart (this kernel has no `netem`). Every byte read on one side is written on the other
//! `delay` later, in order, in both directions: a round trip through the link takes `2 × delay`
//! more than without it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A delayed link: connections to [`DelayLink::addr`] reach the target set with
/// [`DelayLink::connect_to`]. Dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct DelayLink {
    addr: SocketAddr,
    target: watch::Sender<Option<String>>,
    accepting: JoinHandle<()>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DelayLink {
    /// Listens on `listen` (e.g. `127.0.0.1:0`); connections wait for a target.
    pub async fn bind(listen: &str, delay: Duration) -> std::io::Result<DelayLink> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (target, targets) = watch::channel(None::<String>);
        let pumps = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn(accept(listener, targets, delay, pumps.clone()));
        Ok(DelayLink {
            addr,
            target,
            accepting,
            pumps,
        })
    }

    /// Where the link listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or moves) the far end.
    pub fn connect_to(&self, target: &str) {
        self.target.send_replace(Some(target.to_string()));
    }

    /// The far end, once set.
    pub fn target(&self) -> Option<String> {
        self.target.borrow().clone()
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.accepting.abort();
        if let Ok(pumps) = self.pumps.lock() {
            pumps.iter().for_each(JoinHandle::abort);
        }
    }
}

async fn accept(
    listener: TcpListener,
    targets: watch::Receiver<Option<String>>,
    delay: Duration,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let link = tokio::spawn(connect(inbound, targets.clone(), delay));
        if let Ok(mut pumps) = pumps.lock() {
            pumps.retain(|p| !p.is_finished());
            pumps.push(link);
        }
    }
}

/// Joins one inbound connection to the far end (once it is known) through two delayed pumps.
async fn connect(
    inbound: TcpStream,
    mut targets: watch::Receiver<Option<String>>,
    delay: Duration,
) {
    let target = match targets.wait_for(Option::is_some).await {
        Ok(target) => target.clone().unwrap_or_default(),
        Err(_) => return,
    };
    let Ok(outbound) = TcpStream::connect(&target).await else {
        tracing::debug!(%target, "delay link: the far end refused");
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, delay),
        pump(out_read, in_write, delay)
    );
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = tokio::time::Instant::now() + delay;
                if chunks.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(chunks);
    let _ = writer.await;
}
