//! `weft serve`: one node of a cluster that shares a PostgreSQL database.
//! Every node runs the same start command and answers the whole API; the
//! database is the only coordinator.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use weft_store::{NodeId, PgStore};

use crate::server::{self, OnSignal, ServerOptions, parse_duration};

#[derive(Args)]
pub struct ServeArgs {
    /// The PostgreSQL database the nodes share (`postgres://user@host/db`).
    /// A password here is visible in `ps`: prefer the variable or
    /// --database-url-file.
    #[arg(
        long,
        env = "WEFT_DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "database_url_file"
    )]
    database_url: Option<String>,
    /// A file whose first line is the database URL (keeps its password
    /// out of `ps` and the environment).
    #[arg(long, value_name = "FILE")]
    database_url_file: Option<std::path::PathBuf>,
    /// This node's name, unique in the cluster (default: the host name).
    #[arg(long)]
    node_id: Option<String>,
    /// On SIGTERM, how long running attempts may go on before the rest
    /// are handed back to other nodes.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    #[command(flatten)]
    lease: LeaseArgs,
    #[command(flatten)]
    server: ServerOptions,
}

/// A node's lease on its work, on a shared database (README, "Run on
/// several machines").
#[derive(Args)]
pub struct LeaseArgs {
    /// How long a node may be silent before the others take over its
    /// attempts (by the database's clock).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_timeout: Duration,
    /// How long before that a node that cannot reach the database fences
    /// itself: it kills its task processes and claims nothing until it
    /// has rejoined (default: a third of --node-timeout; at most half).
    #[arg(long, value_parser = parse_duration)]
    pub fence_margin: Option<Duration>,
}

impl LeaseArgs {
    /// Into the runtime's settings.
    pub fn apply(&self, config: &mut weft_runtime::RuntimeConfig) {
        config.node_timeout = self.node_timeout;
        config.fence_margin = self.fence_margin;
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    server::init_logging(args.server.log_format);
    let mut config = args.server.config()?;
    args.lease.apply(&mut config);
    config.check_lease().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let node = NodeId::new(
            args.node_id
                .clone()
                .unwrap_or_else(weft_store::local_host_name),
        )
        .with_timeout(args.lease.node_timeout);
        let url =
            server::database_url(args.database_url.clone(), args.database_url_file.as_deref())?
                .expect("clap requires one");
        let store = PgStore::connect(&url, node).await?;
        server::serve(
            "weft serve",
            config,
            Arc::new(store),
            "PostgreSQL",
            OnSignal::Drain(args.drain_timeout),
        )
        .await
    })
}
