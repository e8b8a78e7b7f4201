//! `weft dev`: the local server, like `render workflows dev`, with runs kept
//! in SQLite so they survive a restart (or in PostgreSQL with
//! `--database-url`, as one node of a cluster).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use weft_store::{Durability, NodeId, PgStore, SqliteStore, Store};

use crate::server::{self, OnSignal, ServerOptions};

#[derive(Args)]
pub struct DevArgs {
    /// SQLite database holding every run (unless --database-url is given).
    #[arg(long, default_value = ".weft/weft.db")]
    db: PathBuf,
    /// Keep runs in PostgreSQL instead (`postgres://user@host/db`), as one
    /// node of a cluster that `weft serve` nodes share.
    #[arg(long, env = "WEFT_DATABASE_URL")]
    database_url: Option<String>,
    /// Fsync every commit (SQLite `synchronous = FULL`): accepted runs then
    /// survive power loss too, not only a crash of weft. Slower.
    #[arg(long)]
    power_loss_safe: bool,
    #[command(flatten)]
    server: ServerOptions,
}

pub fn run(args: DevArgs) -> anyhow::Result<std::process::ExitCode> {
    server::init_logging();
    let config = args.server.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (store, kept_in): (Arc<dyn Store>, String) = match &args.database_url {
            Some(url) => {
                let store =
                    PgStore::connect(url, NodeId::new(weft_store::local_host_name())).await?;
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
