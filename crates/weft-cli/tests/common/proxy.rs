//! A TCP proxy on loopback that a test puts between one weft node and
//! its database, to make network faults for real: it can freeze (every
//! byte held both ways, on every connection, new ones too: to the node
//! the database simply stops answering, as behind a partition) and delay
//! (every byte towards the database held for a while: a slow link or a
//! slow server), and pass again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does with the bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Passes them on at once.
    None,
    /// Holds them all, both ways, until the fault ends.
    Freeze,
    /// Holds each byte towards the database this long.
    Delay(Duration),
}

/// A proxy from a free port on 127.0.0.1 to `upstream`.
pub struct FaultProxy {
    pub port: u16,
    fault: Arc<watch::Sender<Fault>>,
    /// Runs the proxy; dropped with it.
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(watch::Sender::new(Fault::None));
        let f = fault.clone();
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let fault = f.subscribe();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, fault).await;
                });
            }
        });
        Self {
            port,
            fault,
            _runtime: runtime,
        }
    }

    /// From now on, this fault.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// A PostgreSQL URL through the proxy, for `url` (its host and port
    /// replaced).
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (auth, path) = rest.split_once('/').unwrap();
        let user = auth
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}127.0.0.1:{}/{path}", self.port)
    }
}

/// Waits while the proxy is frozen.
async fn thawed(fault: &mut watch::Receiver<Fault>) {
    let _ = fault.wait_for(|f| *f != Fault::Freeze).await;
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut fault: watch::Receiver<Fault>,
) -> std::io::Result<()> {
    // A new connection hangs too while frozen.
    thawed(&mut fault).await;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(client_r, server_w, fault.clone(), true);
    let down = pump(server_r, client_w, fault, false);
    let _ = tokio::join!(up, down);
    Ok(())
}

/// Copies one direction: whatever is read is stamped, and written once no
/// freeze holds it and its delay (towards the database only) is over. The
/// reading never stops, so the kernel's buffers never push back: as
/// behind a real partition, the other side sees silence, not a full pipe.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
    towards_database: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut fault = fault;
    while let Some((read_at, bytes)) = rx.recv().await {
        loop {
            thawed(&mut fault).await;
            let current = *fault.borrow();
            if let (true, Fault::Delay(delay)) = (towards_database, current) {
                let due = read_at + delay;
                if Instant::now() < due {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = fault.changed() => continue,
                    }
                }
            }
            // A freeze that began meanwhile holds it still.
            if *fault.borrow() == Fault::Freeze {
                continue;
            }
            break;
        }
        if to.write_all(&bytes).await.is_err() {
            break;
        }
    }
    reader.abort();
    let _ = to.shutdown().await;
}
