//! The HTTP listener of the REST API, with the limits a server facing
//! slow or hostile clients needs, which `axum::serve` does not set:
//!
//! - a client has [`RuntimeConfig::header_read_timeout`] (30 s) to send a
//!   request's headers, and at most 32 KiB of them;
//! - at most [`max_connections`] connections at once: past it a new one is
//!   closed at once, so connections can never take the file descriptors
//!   that task processes need (their pipes and sockets).
//!
//! [`RuntimeConfig::header_read_timeout`]: crate::RuntimeConfig::header_read_timeout

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The user owning the client's socket of a loopback connection, as the
/// kernel says (`None`: not listed). Only on loopback, where the kernel
/// can tell.
#[derive(Clone, Copy, Debug)]
pub struct PeerUser(pub Option<u32>);

/// Largest request head (request line and headers), in bytes.
const MAX_HEAD: usize = 32 * 1024;

/// Connections at once: half of the file descriptors this process may
/// open (the other half for task processes), at most 10,000.
pub fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    (soft / 2).clamp(16, 10_000)
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does: the default soft limit (often 1,024) is far below what a server
/// with many clients and task processes needs.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Serves `app` on `listener` until `shutdown`; open requests then have a
/// few seconds to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections()));
    let mut refused = 0u64;
    // On loopback, who is on the other end (see `peer`): the guard lets
    // only the server's own user in without the key.
    let mut local = listener.local_addr().ok().filter(|a| a.ip().is_loopback());
    if local.is_some() && !crate::http::peer::can_tell_users() {
        tracing::warn!(
            "this system does not say which user owns a connection (no /proc/net/tcp): every local user can use this server; give it an API key to keep them out"
        );
        local = None;
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("could not accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Small requests and answers: Nagle's algorithm would only hold a
        // response's last segment back until the client's delayed ACK
        // (about 40 ms a run, measured by the dispatch bench).
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "refused {refused} connections so far: {} are open, the most this server takes",
                    max_connections()
                );
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // Who is on the other end: read on a thread of the blocking
            // pool, for this connection alone, so that accepting others
            // never waits on it.
            let user = match local {
                Some(local) => Some(PeerUser(
                    tokio::task::spawn_blocking(move || {
                        crate::http::peer::socket_owner(local, peer)
                    })
                    .await
                    .ok()
                    .flatten(),
                )),
                None => None,
            };
            let service = app.map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                if let Some(user) = user {
                    req.extensions_mut().insert(user);
                }
                req
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            drop(permit);
        });
    }
}
