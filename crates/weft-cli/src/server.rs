//! What `weft dev` and `weft serve` share: the runtime's options, the
//! environment file, the store, and the life of the server until a signal.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use weft_runtime::{Runtime, RuntimeConfig};
use weft_store::Store;

/// The options of a server, `weft dev` and `weft serve` alike.
#[derive(Args)]
pub struct ServerOptions {
    /// Address (or host name) to serve the API on. Beyond loopback a bearer
    /// token is required.
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_host)]
    pub host: IpAddr,
    /// Port to serve the API on.
    #[arg(long, default_value_t = 8120)]
    pub port: u16,
    /// Task processes running at once on this node (default: one per
    /// CPU). Parents waiting on subtasks do not count.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// The memory this node gives task runs (`16GiB`): it starts no more
    /// at once than their plans' memory fits in, as Render's instances
    /// would not share one machine (a plan larger than this runs alone).
    /// Parents waiting on subtasks do not count. Default: no bound.
    #[arg(long, value_parser = parse_bytes)]
    pub memory: Option<u64>,
    /// The runtime's own log lines on standard error: `text`, or `json`
    /// (one object per line; lines about a run carry its trace and span ids).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The dashboard links each run to its trace at this URL, `{trace_id}`
    /// replaced (`http://localhost:16686/trace/{trace_id}` for Jaeger).
    #[arg(long, value_name = "URL", value_parser = parse_trace_url)]
    pub trace_url: Option<String>,
    /// Put each run's input and results in its trace span, cut to this
    /// many bytes (`1KiB`). Off by default: payloads may be large or private.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub trace_payloads: Option<u64>,
    /// Environment file for task processes (default: `.env` when present).
    /// Repeatable: later files override earlier ones, and what they set
    /// overrides the variables inherited from the shell, as Render does.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Bearer token clients must send (on loopback too). Visible to other
    /// users in `ps`: prefer --api-key-file, or, beyond loopback,
    /// RENDER_API_KEY.
    #[arg(long)]
    pub api_key: Option<String>,
    /// A file whose first line is the bearer token clients must send.
    #[arg(long, conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// Largest task input or result, in bytes (`4MiB`, `500kB` and the like
    /// are understood).
    #[arg(long, default_value = "4MiB", value_parser = parse_bytes)]
    pub max_payload_bytes: u64,
    /// Task output stored per run at most; past it, lines are still shown
    /// here but only counted, and one stored line says how many were not
    /// kept.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub max_log_bytes: u64,
    /// Prune root runs that ended longer ago than this (`30d`, `12h`),
    /// with their subtasks and logs. Off by default.
    #[arg(long, value_parser = parse_duration)]
    pub retention: Option<Duration>,
    /// Do not echo task output on this terminal (it is still stored).
    #[arg(long, short)]
    pub quiet: bool,
    /// Accepted for `render workflows dev`'s sake: task output is echoed
    /// anyway (see --quiet).
    #[arg(long, hide = true)]
    pub debug: bool,
    /// How deep subtasks may nest (a root run is depth 1); deeper ones fail
    /// with the chain of task names.
    #[arg(long, default_value_t = 64)]
    pub max_depth: usize,
    /// Python apps: import the SDK once and fork each task process from
    /// that interpreter instead of starting a new one (several times
    /// faster to start; each attempt still its own process, socket and
    /// environment). For `python app.py` or `python -m pkg` start commands;
    /// see the README's "Pre-forked Python" for what forking changes.
    #[arg(long)]
    pub prefork: bool,
    /// With --prefork: a module to import before forking (repeatable;
    /// default: the Render SDK). Name your heavy imports (pandas, say).
    #[arg(long, value_name = "MODULE", requires = "prefork")]
    pub preload: Vec<String>,
    /// Start no task process ahead of its attempt. By default, while runs
    /// wait for a slot, up to one process per slot is started ahead and
    /// waits for its attempt (stopped after a second unused); see the
    /// README's "Standbys".
    #[arg(long)]
    pub no_standby: bool,
    /// What a task's Render plan (its `plan` option, `standard` by
    /// default) does here: `enforce` holds each attempt to the plan's
    /// memory and CPUs, as Render does (an attempt over the memory fails,
    /// naming the plan); `warn` limits nothing and says which attempts
    /// Render would have killed; `off` ignores plans.
    #[arg(long, value_enum, default_value_t = PlansArg::Enforce)]
    pub plans: PlansArg,
    /// How long a client may take to send a request's headers.
    #[arg(long, default_value = "30s", value_parser = parse_duration, hide = true)]
    pub header_read_timeout: Duration,
    /// The app's start command and its arguments, as separate words or as
    /// one quoted string (`-- "python main.py"`), as Render's docs write it.
    #[arg(last = true, required = true, value_name = "START COMMAND")]
    pub command: Vec<String>,
}

/// `--plans`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum PlansArg {
    Enforce,
    Warn,
    Off,
}

/// Below this many characters an API key is said to be short.
const MIN_KEY_CHARS: usize = 16;

/// How the server stops on SIGTERM or Ctrl-C.
#[derive(Clone, Copy)]
pub enum OnSignal {
    /// At once: running attempts are handed back and run again.
    Stop,
    /// Claim nothing more, let running attempts finish for this long,
    /// then hand back the rest. A second signal stops at once.
    Drain(Duration),
}

/// A size in bytes: `1048576`, `64MiB`, `500kB`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size::parse_size(text)
        .map_err(|e| format!("{text:?} is not a size in bytes ({e}); for example 4194304 or 4MiB"))
}

/// `--trace-url`: an http(s) URL with `{trace_id}` in it.
fn parse_trace_url(text: &str) -> Result<String, String> {
    let web = text.starts_with("http://") || text.starts_with("https://");
    if !web || !text.contains("{trace_id}") {
        return Err(format!(
            "{text:?} is not an http(s) URL with {{trace_id}} in it; for example http://localhost:16686/trace/{{trace_id}}"
        ));
    }
    Ok(text.to_string())
}

/// A duration: `30s`, `10m`, `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); for example 30s, 10m or 30d"))
}

/// Variables from the env files, in order, later ones overriding earlier
/// ones (with none given, `.env` when present). They are given to task
/// processes over what they inherit, as `render workflows dev` does.
fn load_env_files(explicit: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let paths: Vec<PathBuf> = if explicit.is_empty() {
        Some(PathBuf::from(".env"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect()
    } else {
        explicit.to_vec()
    };
    let mut vars: Vec<(String, String)> = Vec::new();
    for path in &paths {
        let iter = dotenvy::from_path_iter(path)
            .with_context(|| format!("cannot read env file {}", path.display()))?;
        for item in iter {
            let (k, v) =
                item.with_context(|| format!("bad line in env file {}", path.display()))?;
            vars.retain(|(key, _)| *key != k);
            vars.push((k, v));
        }
    }
    Ok(vars)
}

/// The start command: its words, or one string split as a shell would.
fn start_command(words: &[String]) -> anyhow::Result<Vec<String>> {
    match words {
        [one] if one.contains(char::is_whitespace) && !Path::new(one).exists() => {
            let split = shell_words::split(one).with_context(|| {
                format!("cannot read the start command {one:?} as a shell would")
            })?;
            if split.is_empty() {
                bail!("the start command is empty");
            }
            Ok(split)
        }
        _ => Ok(words.to_vec()),
    }
}

/// The token in the first line of a file.
fn read_key_file(path: &Path) -> anyhow::Result<String> {
    read_secret_file(path, "API key")
}

/// The first line of a file that holds a secret (`what` names it). A
/// file other users of the machine can read is used, with a warning.
fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "the {what} file {} can be read by other users of this machine (mode {:o}); `chmod 600 {}` keeps it yours",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    Ok(secret)
}

/// The database URL: from `--database-url-file` when given (its first
/// line), else from `--database-url` or `WEFT_DATABASE_URL`. A password
/// typed on the command line is visible to every user of the machine in
/// `ps`: said, with the two ways around it.
pub fn database_url(given: Option<String>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let on_command_line = std::env::args_os()
        .any(|a| a == "--database-url" || a.to_string_lossy().starts_with("--database-url="));
    if let Some(file) = file {
        if on_command_line {
            bail!("give the database URL once: --database-url or --database-url-file, not both");
        }
        return read_secret_file(file, "database URL").map(Some);
    }
    if let Some(url) = &given
        && on_command_line
        && weft_store::redacted_url(url) != *url
    {
        tracing::warn!(
            "the password in --database-url is visible to every user of this machine (`ps`); set WEFT_DATABASE_URL or use --database-url-file instead"
        );
    }
    Ok(given)
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

impl ServerOptions {
    /// The runtime's configuration.
    pub fn config(&self) -> anyhow::Result<RuntimeConfig> {
        if let Some(0) = self.max_concurrent {
            bail!("--max-concurrent must be at least 1");
        }
        let mut config = RuntimeConfig::new(start_command(&self.command)?);
        config.listen = SocketAddr::new(self.host, self.port);
        config.env = load_env_files(&self.env_file)?;
        config.api_key = match &self.api_key_file {
            Some(path) => Some(read_key_file(path)?),
            None => self.api_key.clone().filter(|k| !k.is_empty()),
        };
        // Many Render users keep RENDER_API_KEY in their shell for the
        // cloud: on loopback it does not lock their own clients out (ask
        // with --api-key); beyond loopback it is the token.
        if config.api_key.is_none()
            && let Ok(key) = std::env::var("RENDER_API_KEY").map(|k| k.trim().to_string())
            && !key.is_empty()
        {
            if self.host.is_loopback() {
                tracing::debug!(
                    "RENDER_API_KEY is set; on loopback no token is required unless --api-key is given"
                );
            } else {
                config.api_key = Some(key);
            }
        }
        if let Some(key) = &config.api_key
            && key.chars().count() < MIN_KEY_CHARS
        {
            tracing::warn!(
                "the API key has {} characters: a short key can be guessed; use {MIN_KEY_CHARS} random characters or more (`openssl rand -hex 16` makes 32)",
                key.chars().count()
            );
        }
        config.max_payload_bytes = usize::try_from(self.max_payload_bytes)
            .context("--max-payload-bytes is larger than this machine can address")?;
        config.max_log_bytes = self.max_log_bytes;
        config.echo_logs = !self.quiet;
        config.retention = self.retention;
        config.trace_url = self.trace_url.clone();
        config.trace_payload_bytes = self.trace_payloads.map_or(0, |b| b as usize);
        config.header_read_timeout = self.header_read_timeout;
        if self.max_depth == 0 {
            bail!("--max-depth must be at least 1");
        }
        config.max_depth = self.max_depth;
        config.prefork = self.prefork.then(|| self.preload.clone());
        config.standby = !self.no_standby;
        config.plans = match self.plans {
            PlansArg::Enforce => weft_runtime::Plans::Enforce,
            PlansArg::Warn => weft_runtime::Plans::Warn,
            PlansArg::Off => weft_runtime::Plans::Off,
        };
        // Sweep often enough that nothing outlives its retention by much.
        if let Some(keep) = self.retention {
            config.retention_sweep =
                (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        }
        if let Some(n) = self.max_concurrent {
            config.max_concurrent = n;
        }
        config.memory = self.memory;
        Ok(config)
    }
}

/// Logs on standard error: colours for a terminal, plain text for a file.
pub fn init_logging(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| "weft=info,weft_runtime=info,weft_store=info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line, the event's fields at the top level
        // (`message`, and on lines about a run `run`, `trace_id`, `span_id`).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// How the runtime's own log lines (on standard error) are written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline; lines about a run
    /// carry its `trace_id` and `span_id`.
    Json,
}

/// Serves until a signal: `name` is the command (`weft dev`), `kept_in`
/// where the runs are, for the banner.
pub async fn serve(
    name: &str,
    config: RuntimeConfig,
    store: Arc<dyn Store>,
    kept_in: &str,
    on_signal: OnSignal,
) -> anyhow::Result<std::process::ExitCode> {
    weft_runtime::raise_open_files_limit();
    let max = config.max_concurrent;
    let node = store.node().id.clone();
    let rt = Runtime::start(config, store).await?;
    let tasks: Vec<_> = rt
        .coordinator()
        .tasks()
        .into_iter()
        // Escaped wherever the banner goes (a log file is read on a
        // terminal too), as the log lines are.
        .map(|t| weft_runtime::escape_controls(&t.name).into_owned())
        .collect();
    eprintln!(
        "{name}: serving the Render Workflows API on {} ({} tasks: {}; up to {max} task processes; node {node}; runs kept in {kept_in})",
        rt.url(),
        tasks.len(),
        tasks.join(", "),
    );
    eprintln!(
        "{name}: point clients at it with RENDER_USE_LOCAL_DEV=true (or RENDER_LOCAL_DEV_URL={})",
        rt.url()
    );
    eprintln!("{name}: dashboard at {}/", rt.url());
    let mut signals = Signals::new();
    signals.next().await;
    match on_signal {
        OnSignal::Stop => {
            eprintln!("{name}: stopping; unfinished runs resume at the next start");
            rt.shutdown().await;
        }
        OnSignal::Drain(grace) => {
            eprintln!(
                "{name}: draining: claiming nothing more, letting running attempts finish for up to {grace:?} (signal again to stop at once)"
            );
            let coordinator = rt.coordinator().clone();
            let drain = rt.drain(grace);
            tokio::pin!(drain);
            tokio::select! {
                _ = &mut drain => {}
                _ = signals.next() => {
                    eprintln!("{name}: stopping at once; unfinished runs are handed back");
                    coordinator.stop().await;
                    drain.await;
                }
            }
            eprintln!("{name}: stopped");
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// SIGTERM and Ctrl-C, each time they come.
struct Signals {
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Self {
        Self {
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("signal handler"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.term.recv() => {}
        }
    }
}
