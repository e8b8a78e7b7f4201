//! Wire types of the Render Workflows protocol, as weft speaks it.
//!
//! Two sides, no I/O:
//! - [`socket`]: the HTTP/1.1-over-Unix-socket API a task process calls
//!   (`/register-tasks`, `/input`, `/callback`, `/run-subtask`,
//!   `/get-subtask-result`);
//! - [`api`]: the REST API under `/v1` that clients call.
//!
//! Field names and optionality follow what the official SDKs send and
//! parse (Python `render` 1.5.0, `render_sdk` 0.8.0, `@renderinc/sdk` 0.7.0).

pub mod api;
pub mod payload;
pub mod plan;
pub mod socket;
pub mod trace;

pub use payload::{PayloadError, TaskInput};
