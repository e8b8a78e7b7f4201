//! `weft`: run a Render Workflows app locally and talk to it.

mod dev;
mod init;
mod remote;
mod serve;
mod server;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "A durable Render Workflows runtime",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow app locally: `weft dev -- python app.py`.
    Dev(dev::DevArgs),
    /// Run one node of a cluster on a shared PostgreSQL:
    /// `weft serve --database-url postgres://... -- python app.py`.
    Serve(serve::ServeArgs),
    /// Start a task run, wait for it and print its result.
    Run(remote::RunArgs),
    /// List, inspect, read the logs of, or cancel task runs.
    #[command(subcommand)]
    Runs(remote::RunsCommand),
    /// List the registered tasks, or have the server register them again.
    #[command(subcommand)]
    Tasks(remote::TasksCommand),
    /// The nodes serving the API.
    #[command(subcommand)]
    Nodes(remote::NodesCommand),
    /// Scaffold a runnable project: `weft init --language python|typescript|rust`.
    Init(init::InitArgs),
    /// Render's CLI spellings (`render workflows ...`): `weft workflows dev`,
    /// `start`, `cancel`, `init`, `tasks list`, `tasks runs start|list|show|cancel`.
    #[command(subcommand)]
    Workflows(Workflows),
}

/// `render workflows ...`, as weft runs it: each is one of weft's commands.
#[derive(Subcommand)]
enum Workflows {
    /// `weft dev`.
    Dev(Box<dev::DevArgs>),
    /// Start a task run (`weft runs start`).
    Start(remote::StartArgs),
    /// Cancel a run and its subtasks (`weft runs cancel`).
    Cancel {
        id: String,
        #[command(flatten)]
        server: remote::ServerArgs,
    },
    /// `weft init`.
    Init(init::InitArgs),
    /// `weft tasks`.
    #[command(subcommand)]
    Tasks(remote::TasksCommand),
    /// `weft runs` (Render's CLI keeps it as an older spelling of `tasks runs`).
    #[command(subcommand)]
    Runs(remote::RunsCommand),
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`weft runs list |
/// head`) panics. The commands that print take the Unix default instead and
/// end quietly. `weft dev` keeps ignoring it: a client or task process that
/// goes away must not stop the server.
fn quit_quietly_on_a_closed_pipe() {
    // SAFETY: restores the default action of one signal, before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn main() -> std::process::ExitCode {
    // First: this binary also starts task processes for its runtime.
    weft_runtime::run_if_asked();
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Workflows(w) => Cli {
            command: match w {
                Workflows::Dev(args) => Command::Dev(*args),
                Workflows::Start(args) => Command::Runs(remote::RunsCommand::Start(args)),
                Workflows::Cancel { id, server } => {
                    Command::Runs(remote::RunsCommand::Cancel { id, server })
                }
                Workflows::Init(args) => Command::Init(args),
                Workflows::Tasks(cmd) => Command::Tasks(cmd),
                Workflows::Runs(cmd) => Command::Runs(cmd),
            },
        },
        command => Cli { command },
    };
    if !matches!(cli.command, Command::Dev(_) | Command::Serve(_)) {
        quit_quietly_on_a_closed_pipe();
    }
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Run(args) => remote::run(args),
        Command::Runs(cmd) => remote::runs(cmd),
        Command::Tasks(cmd) => remote::tasks(cmd),
        Command::Nodes(cmd) => remote::nodes(cmd),
        Command::Init(args) => init::run(args),
        Command::Workflows(_) => unreachable!("mapped to weft's commands above"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(weft::client::Error::Server { status: None, .. }) = e.downcast_ref() {
                eprintln!(
                    "hint: is `weft dev` running there? --url (or RENDER_LOCAL_DEV_URL) says where"
                );
            }
            std::process::ExitCode::FAILURE
        }
    }
}
