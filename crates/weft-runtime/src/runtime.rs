//! [`Runtime`]: a running runtime, its coordinator and its REST API wired
//! together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weft_store::Store;

use crate::coordinator::Coordinator;
use crate::{RuntimeConfig, RuntimeError};

/// A running runtime: the coordinator and the REST API.
pub struct Runtime {
    coordinator: Arc<Coordinator>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Opens the runtime over a store: recovers runs a previous runtime left
    /// unfinished, registers the app's tasks, starts scheduling and serves
    /// the API.
    pub async fn start(config: RuntimeConfig, store: Arc<dyn Store>) -> Result<Self, RuntimeError> {
        config.check_lease().map_err(RuntimeError::Config)?;
        if !config.listen.ip().is_loopback() && config.api_key.is_none() {
            return Err(RuntimeError::Config(format!(
                "refusing to listen on {} without a bearer token: set RENDER_API_KEY (or --api-key), or listen on 127.0.0.1",
                config.listen
            )));
        }
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                RuntimeError::Config(format!("cannot listen on {}: {e}", config.listen))
            })?;
        let addr = listener.local_addr().map_err(RuntimeError::Io)?;
        let coordinator = Coordinator::open(config, store, shutdown.clone()).await?;
        coordinator.register_tasks().await?;
        coordinator.clone().start_scheduler();
        // On a shared store: the node's lease, the rescue of silent nodes,
        // what it hears of the others.
        if coordinator.store().events().is_some() {
            crate::cluster::start(&coordinator);
        }
        if let Some(keep) = coordinator.config().retention {
            crate::cluster::start_retention(&coordinator, keep);
        }

        let app = crate::http::router(coordinator.clone(), addr);
        let header_timeout = coordinator.config().header_read_timeout;
        let server = tokio::spawn(crate::http::listener::serve(
            listener,
            app,
            header_timeout,
            shutdown.clone(),
        ));
        Ok(Self {
            coordinator,
            addr,
            shutdown,
            server,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8120`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The coordinator, to start and watch runs in-process.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// Stops at once: kills running task processes and hands their runs
    /// back, to run again (uncounted) when a runtime opens the same store
    /// again, or at once on another node of a shared store.
    pub async fn shutdown(self) {
        self.coordinator.stop().await;
        self.shutdown.cancel();
        let _ = self.server.await;
    }

    /// Stops gracefully: claims nothing more, lets running attempts finish
    /// for up to `grace` (the API keeps serving meanwhile), then hands back
    /// what still runs and stops.
    pub async fn drain(self, grace: Duration) {
        self.coordinator.drain(grace).await;
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}
