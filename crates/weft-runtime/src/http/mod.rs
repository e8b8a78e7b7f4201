//! Everything a node serves on its port, behind one guard (`guard`):
//! Render's API (`api`, its task-run metrics in `run_metrics`), what the dashboard reads and does (`dashboard`),
//! and the dashboard's pages (`weft_dashboard`); the listener that accepts
//! connections (`listener`, with `peer`, who is on the other end); and
//! the JSON errors and bodies the task socket shares (`json`).

pub(crate) mod api;
mod dashboard;
pub(crate) mod guard;
pub(crate) mod json;
pub(crate) mod listener;
mod log_routes;
mod params;
mod peer;
mod run_metrics;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

use crate::coordinator::Coordinator;
use guard::Guard;
use json::{method_not_allowed, not_found};

/// The router for a server listening on `addr`.
pub(crate) fn router(coordinator: Arc<Coordinator>, addr: std::net::SocketAddr) -> Router {
    let limit = coordinator.config().max_payload_bytes + 64 * 1024;
    let guard = Guard::new(addr, coordinator.config().api_key.as_deref())
        .with_sessions(coordinator.store().clone());
    Router::new()
        .merge(api::routes())
        .merge(run_metrics::routes())
        .merge(dashboard::routes(guard.clone()))
        .merge(weft_dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(guard, guard::check))
        .with_state(coordinator)
}
