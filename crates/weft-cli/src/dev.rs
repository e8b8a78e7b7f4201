//! `weft dev`: the local server, like `render workflows dev`, with runs kept
//! in SQLite so they survive a restart (or in PostgreSQL with
//! `--database-url`, as one node of a cluster).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use weft_store::{Durability, NodeId, PgStore, SqliteStore, Store};

use crate::serve::LeaseArgs;
use crate::server::{self, OnSignal, ServerOptions};

#[derive(Args)]
pub struct DevArgs {
    /// SQLite database holding every run (unless --database-url is given).
    #[arg(long, default_value = ".weft/weft.db")]
    db: PathBuf,
    /// Keep runs in PostgreSQL instead (`postgres://user@host/db`), as one
    /// node of a cluster that `weft serve` nodes share.
    /// A password here is visible in `ps`: prefer the variable or
    /// --database-url-file.
    #[arg(long, env = "WEFT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// A file whose first line is the PostgreSQL URL (keeps its password
    /// out of `ps` and the environment).
    #[arg(long, value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// Fsync every commit (SQLite `synchronous = FULL`): accepted runs then
    /// survive power loss too, not only a crash of weft. Slower.
    #[arg(long)]
    power_loss_safe: bool,
    /// With --database-url: the node's lease, as `weft serve` has it.
    #[command(flatten)]
    lease: LeaseArgs,
    #[command(flatten)]
    server: ServerOptions,
}

pub fn run(args: DevArgs) -> anyhow::Result<std::process::ExitCode> {
    server::init_logging(args.server.log_format);
    let mut config = args.server.config()?;
    args.lease.apply(&mut config);
    config.check_lease().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let url =
            server::database_url(args.database_url.clone(), args.database_url_file.as_deref())?;
        let (store, kept_in): (Arc<dyn Store>, String) = match &url {
            Some(url) => {
                let node = NodeId::new(weft_store::local_host_name())
                    .with_timeout(args.lease.node_timeout);
                let store = PgStore::connect(url, node).await?;
                (Arc::new(store), "PostgreSQL".to_string())
            }
            None => {
                let durability = if args.power_loss_safe {
                    Durability::PowerLoss
                } else {
                    Durability::Process
                };
                // The error names the file.
                let store = SqliteStore::open_with(&args.db, durability)?;
                (Arc::new(store), args.db.display().to_string())
            }
        };
        server::serve("weft dev", config, store, &kept_in, OnSignal::Stop).await
    })
}
