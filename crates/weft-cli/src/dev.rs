//! `weft dev`: the local server, like `render workflows dev`, with runs kept
//! in SQLite so they survive a restart.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use weft_runtime::{Runtime, RuntimeConfig};
use weft_store::{Durability, SqliteStore};

#[derive(Args)]
pub struct DevArgs {
    /// Address (or host name) to serve the API on. Beyond loopback a bearer
    /// token is required.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host)]
    host: IpAddr,
    /// Port to serve the API on.
    #[arg(long, default_value_t = 8120)]
    port: u16,
    /// SQLite database holding every run.
    #[arg(long, default_value = ".weft/weft.db")]
    db: PathBuf,
    /// Task processes running at once (default: one per CPU). Parents
    /// waiting on subtasks do not count.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// Environment file for task processes (default: `.env` when present).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Bearer token clients must send.
    #[arg(long, env = "RENDER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest task input or result, in bytes (`4MiB`, `500kB` and the like
    /// are understood).
    #[arg(long, default_value = "4MiB", value_parser = parse_bytes)]
    max_payload_bytes: u64,
    /// Task output stored per run at most; past it, lines are still shown
    /// here but only counted, and one stored line says how many were not
    /// kept.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    max_log_bytes: u64,
    /// Fsync every commit (SQLite `synchronous = FULL`): accepted runs then
    /// survive power loss too, not only a crash of weft. Slower.
    #[arg(long)]
    power_loss_safe: bool,
    /// Do not echo task output on this terminal (it is still stored).
    #[arg(long, short)]
    quiet: bool,
    /// The app's start command and its arguments.
    #[arg(last = true, required = true, value_name = "START COMMAND")]
    command: Vec<String>,
}

/// Variables from an env file, without those already set in our
/// environment (a set variable wins, as with dotenv everywhere).
fn load_env_file(explicit: Option<&Path>) -> anyhow::Result<Vec<(String, String)>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(".env").is_file() => PathBuf::from(".env"),
        None => return Ok(Vec::new()),
    };
    let iter = dotenvy::from_path_iter(&path)
        .with_context(|| format!("cannot read env file {}", path.display()))?;
    let mut vars = Vec::new();
    for item in iter {
        let (k, v) = item.with_context(|| format!("bad line in env file {}", path.display()))?;
        if std::env::var_os(&k).is_none() {
            vars.push((k, v));
        }
    }
    Ok(vars)
}

/// A size in bytes: `1048576`, `64MiB`, `500kB`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text)
        .map_err(|e| format!("{text:?} is not a size in bytes ({e}); for example 4194304 or 4MiB"))
}

/// An IP address, or a name resolved to one (IPv4 first, as most clients
/// try it first).
fn parse_host(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let addrs: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, 0))
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

pub fn run(args: DevArgs) -> anyhow::Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "weft_runtime=info,weft_store=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain text for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(0) = args.max_concurrent {
        bail!("--max-concurrent must be at least 1");
    }
    let mut config = RuntimeConfig::new(args.command.clone());
    config.listen = SocketAddr::new(args.host, args.port);
    config.env = load_env_file(args.env_file.as_deref())?;
    config.api_key = args.api_key.filter(|k| !k.is_empty());
    config.max_payload_bytes = usize::try_from(args.max_payload_bytes)
        .context("--max-payload-bytes is larger than this machine can address")?;
    config.max_log_bytes = args.max_log_bytes;
    config.echo_logs = !args.quiet;
    if let Some(n) = args.max_concurrent {
        config.max_concurrent = n;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let durability = if args.power_loss_safe { Durability::PowerLoss } else { Durability::Process };
        // The error names the file.
        let store = SqliteStore::open_with(&args.db, durability)?;
        let max = config.max_concurrent;
        let rt = Runtime::start(config, Arc::new(store)).await?;
        let tasks: Vec<_> = rt.coordinator().tasks().into_iter().map(|t| t.name).collect();
        eprintln!(
            "weft dev: serving the Render Workflows API on {} ({} tasks: {}; up to {max} task processes; runs kept in {})",
            rt.url(),
            tasks.len(),
            tasks.join(", "),
            args.db.display()
        );
        eprintln!("weft dev: point clients at it with RENDER_USE_LOCAL_DEV=true (or RENDER_LOCAL_DEV_URL={})", rt.url());
        wait_for_signal().await;
        eprintln!("weft dev: stopping; unfinished runs resume at the next start");
        rt.shutdown().await;
        anyhow::Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
