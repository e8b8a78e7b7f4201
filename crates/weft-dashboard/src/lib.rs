//! The dashboard: a few pages of HTML, one stylesheet and one plain
//! script, compiled into the binary and served at `/` beside the API. The
//! pages are shells; the script draws them from the API (`/v1` and
//! `/weft/v1`) and follows `/weft/v1/changes` and the log WebSocket to stay
//! live. Hand-written on purpose: no framework, no bundler, no CDN, so it
//! works offline and builds with cargo alone.
//!
//! - `/`: root runs, newest first, filtered by task and status, paged;
//! - `/runs/{id}`: the tree `id` is in, with a time axis, and `id`'s
//!   input, result, error, attempts and logs; cancel and rerun;
//! - `/tasks`: the registered tasks and a form to start one;
//! - `/signin`: the API key, for a server beyond loopback.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const SHELL: &str = include_str!("../assets/shell.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");
const ICON: &str = include_str!("../assets/icon.svg");

/// The pages and their assets, for any router state.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page("runs", "Runs", "") }))
        .route("/runs/{id}", get(run_page))
        .route("/tasks", get(|| async { page("tasks", "Tasks", "") }))
        .route("/signin", get(|| async { page("signin", "Sign in", "") }))
        .route(
            "/assets/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/assets/icon.svg",
            get(|| async { asset(ICON, "image/svg+xml") }),
        )
}

async fn run_page(Path(id): Path<String>) -> Response {
    if is_run_id(&id) {
        page("run", "Run", &id)
    } else {
        not_found_page(&format!(
            "“{id}” is not a task run id (they look like trn-0123…)."
        ))
    }
}

/// Ids the store makes: letters, digits, `-` and `_`.
fn is_run_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a page answers to a URL that names nothing: a page saying so, with
/// a way back.
pub fn not_found_page(what: &str) -> Response {
    let mut answer = page("missing", "Not found", what);
    *answer.status_mut() = StatusCode::NOT_FOUND;
    answer
}

/// The shell of one page: `data-page` tells the script what to draw and
/// `data-arg` (escaped) what about.
fn page(name: &str, title: &str, arg: &str) -> Response {
    let html = SHELL
        .replace("{{page}}", name)
        .replace("{{title}}", &escape(title))
        .replace("{{arg}}", &escape(arg));
    let mut answer = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    protect(&mut answer);
    answer
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut answer = ([(header::CONTENT_TYPE, kind)], body).into_response();
    answer
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    protect(&mut answer);
    answer
}

/// Headers that keep the pages from being framed, sniffed or made to load
/// anything from elsewhere.
fn protect(answer: &mut Response) {
    let h = answer.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_url_carries_into_a_page_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
        assert!(is_run_id("trn-01a2_b"));
        assert!(!is_run_id("trn/../x"));
        assert!(!is_run_id("<b>"));
        assert!(!is_run_id(""));
    }
}
