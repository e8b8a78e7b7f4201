//! The Rust SDK for weft and Render Workflows.
//!
//! Write durable tasks in Rust, run them under `weft dev` (or Render), and
//! trigger and inspect runs from Rust code. The SDK speaks the same
//! protocol as Render's official SDKs, so a Rust app and a Python app can
//! call each other's tasks.
//!
//! # From an empty crate to a run
//!
//! **1. Depend on the SDK** (and tokio, if you use the client):
//!
//! ```toml
//! [dependencies]
//! weft-workflows = "0.1"   # the library is `weft`
//! futures = "0.3"
//! ```
//!
//! **2. Define tasks.** A task is an async function of a [`TaskContext`] and
//! one input value, returning a [`TaskResult`]. Register it on a
//! [`Workflows`] app under a name; the app gives back a typed [`Task`]
//! handle that other tasks use to run it as a child with
//! [`TaskContext::run`]:
//!
//! ```no_run
//! // src/main.rs
//! use weft::{TaskContext, TaskResult, Workflows};
//!
//! async fn square(_ctx: TaskContext, x: i64) -> TaskResult<i64> {
//!     Ok(x * x)
//! }
//!
//! fn main() {
//!     let mut app = Workflows::new();
//!     let square = app.task("square", square);
//!     app.task("add_squares", move |ctx: TaskContext, (a, b): (i64, i64)| async move {
//!         // Both children run at once, each in its own process.
//!         let (x, y) = futures::try_join!(ctx.run(&square, a), ctx.run(&square, b))?;
//!         Ok(x + y)
//!     });
//!     app.main();
//! }
//! ```
//!
//! The input type says how the task is called. A tuple takes positional
//! arguments (`[3, 4]`), a serde-derived struct takes named ones
//! (`{"a": 3, "b": 4}`) or positional ones in field order, and any other
//! type is a single argument (`[3]`, or `{"x": 3}`). See [`payload`] for
//! the exact rules, which match the official SDKs'.
//!
//! **3. Run it under the runtime.** [`Workflows::main`] reads
//! `RENDER_SDK_MODE` and `RENDER_SDK_SOCKET_PATH`, which the runtime sets
//! when it starts the program, once to list the tasks and then once per
//! attempt of each run:
//!
//! ```text
//! cargo build && weft dev -- target/debug/my-app
//! ```
//!
//! **4. Trigger a run**, with `weft run add_squares '[3, 4]'`, with any
//! official client, or with this crate's [`Client`](client::Client):
//!
//! ```no_run
//! use weft::client::{Client, TaskRunDetailsExt};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), weft::client::Error> {
//!     // `RENDER_USE_LOCAL_DEV=true` points it at http://localhost:8120.
//!     let client = Client::from_env()?;
//!     let run = client.run_task("add_squares", (3, 4)).await?;
//!     println!("{} → {}", run.run.id, run.result::<i64>().unwrap());
//!     Ok(())
//! }
//! ```
//!
//! # Failures and retries
//!
//! A task that returns an error, or panics, fails its attempt with the
//! error's message. With a [`Retry`] policy (per task in [`TaskOptions`], or
//! app-wide with [`Workflows::default_retry`]) the runtime tries again; a
//! parent awaiting the child sees only the final outcome, a failure being
//! [`SubtaskError::Failed`] with the child's message.
//!
//! # The examples
//!
//! `examples/hello.rs` (the app above), `examples/fan_out.rs` (hundreds of
//! children at once) and `examples/retries.rs` (a flaky task and a
//! panicking one). Each says how to run it in its first lines.

mod app;
pub mod client;
mod context;
pub mod payload;
mod socket;
mod task;
mod worker;

pub use app::{BoxError, DefinitionError, TaskResult, Workflows};
pub use context::{SubtaskError, TaskContext, TaskRunMetadata};
pub use socket::SocketError;
pub use task::{Retry, Task, TaskOptions};
/// The protocol's wire types, for code that needs them (the client returns
/// [`protocol::api`] types).
pub use weft_protocol as protocol;
/// The worker mode `RENDER_SDK_MODE` names; see [`Workflows::start_with`].
pub use weft_protocol::socket::Mode;
pub use worker::WorkerError;
