//! Everything a node serves on its port, behind one guard: Render's API
//! ([`crate::api`]), what the dashboard reads and does (`dashboard`), and
//! the dashboard's pages (`weft_dashboard`).

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

use crate::coordinator::Coordinator;
use crate::guard::Guard;
use crate::http::{method_not_allowed, not_found};

/// The router for a server listening on `addr`.
pub fn router(coordinator: Arc<Coordinator>, addr: std::net::SocketAddr) -> Router {
    let limit = coordinator.config().max_payload_bytes + 64 * 1024;
    let guard = Guard::new(addr, coordinator.config().api_key.as_deref())
        .with_sessions(coordinator.store().clone());
    Router::new()
        .merge(crate::api::routes())
        .merge(crate::dashboard::routes(guard.clone()))
        .merge(weft_dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(guard, crate::guard::check))
        .with_state(coordinator)
}
