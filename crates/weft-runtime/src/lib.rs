//! The weft runtime: runs the tasks of a Render Workflows app, each
//! attempt in its own process, and serves the REST API that clients use.
//!
//! [`Runtime::start`] wires its rooms together; `weft dev`, `weft serve`
//! and the customer-ETL pipeline's embedded mode use it. The rooms, from
//! the top:
//!
//! - `coordinator`: runs and their attempts. Registers the app's tasks,
//!   creates, cancels and waits on runs, claims pending ones for free
//!   slots, and commits what each attempt's end means (with `lifecycle`,
//!   the state machine's decisions, and `ends`, who waits for which run).
//! - `cluster`: what a node does on a store several nodes share: renews
//!   its lease (`lease`), fences itself when it cannot, takes over silent
//!   nodes' attempts, hears other nodes' news; and the retention sweep.
//! - `attempt`: one attempt's life, its task socket (`attempt::task_socket`,
//!   the Unix-socket API a task process calls), the runner that runs
//!   its process, and the slots of `--max-concurrent`.
//! - `process`: starting task processes (the spawner, the pre-fork
//!   server, the launcher shim, cgroups, the lifeline), and killing them.
//! - `http`: the port: Render's REST API, the dashboard's routes, the
//!   guard in front of both, and the listener.
//! - `logs`, `terminal`, `metrics`: task output stored and echoed, what
//!   reaches the terminal, and `GET /metrics`.

mod attempt;
mod cluster;
mod config;
mod coordinator;
mod ends;
mod error;
mod http;
mod lease;
mod lifecycle;
mod logs;
mod metrics;
mod process;
mod runtime;
mod terminal;
mod traces;

pub use config::{Plans, RuntimeConfig, default_max_concurrent};
pub use coordinator::{Coordinator, EndedRun};
pub use error::{RunError, RuntimeError};
pub use http::listener::raise_open_files_limit;
pub use process::launcher::run_if_asked;
pub use runtime::Runtime;
pub use terminal::escape_controls;
