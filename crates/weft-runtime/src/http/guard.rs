//! What stands between the REST API and whoever can reach its port: a web
//! page in the user's browser, a page that rebinds its DNS name to
//! 127.0.0.1, a client without the token.
//!
//! - **Host**: on loopback, only the names the server is bound to are
//!   answered (`127.0.0.1`, `localhost`, `[::1]`, the `--host` given), so a
//!   rebinding page (`attacker.example` resolving to 127.0.0.1) reads
//!   nothing. Beyond loopback the token guards instead.
//! - **Origin**: a request a browser sends from another site (a form post,
//!   a `fetch`, a WebSocket) carries that site's `Origin`; anything that
//!   changes state, and every WebSocket, is refused unless the origin is
//!   this server's own.
//! - **Content-Type**: a body sent to a JSON route must say
//!   `application/json`; browsers send `text/plain` forms without asking
//!   first (no CORS preflight), so this closes that door too.
//! - **Token**: with an API key, every request carries it as a bearer
//!   token (the scheme in any case), compared in constant time; a refusal
//!   is logged with the peer's address and answered after a pause.
//! - **The dashboard's session**: a browser signs in once with the key
//!   (`POST /weft/v1/session`) and then carries a cookie (HttpOnly,
//!   SameSite=Strict) holding a random session id, kept in the store (as
//!   its digest) for a week, for that key: signing out ends it, a new key
//!   ends them all, and any node of a cluster knows it. A request
//!   that changes something on the strength of that cookie alone must also
//!   name this server as its `Origin` and carry `X-Weft-Csrf`, which no
//!   other site can make a browser send. A page asked for without a
//!   session is sent to the sign-in page.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use weft_store::{Store, StoreError};

use crate::http::json::ApiError;
use crate::http::listener::PeerUser;

/// How long a request with a wrong token waits for its refusal, so
/// guessing is slow.
pub(crate) const REFUSAL_PAUSE: Duration = Duration::from_millis(250);

/// Keys tried from one address without one right, before it is locked
/// out: a person mistypes a few times; a guesser tries thousands.
const TRIES: u32 = 10;

/// How long an address that tried `TRIES` wrong keys is refused.
const LOCKOUT: Duration = Duration::from_secs(60);

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "weft_session";

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The header a page's state-changing request carries with a session
/// cookie (any value): a cross-site page cannot add it without CORS.
pub const CSRF_HEADER: &str = "x-weft-csrf";

/// The rules for one server, shared by every request.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    /// Host names answered on loopback; `None` beyond loopback.
    hosts: Option<Vec<String>>,
    /// On loopback, the user this server runs as: other users of the
    /// machine need the key (see `peer`).
    owner: Option<u32>,
    port: u16,
    /// SHA-256 of the API key: compared digest to digest, so neither the
    /// key's bytes nor its length shape the comparison's time.
    key_digest: Option<[u8; 32]>,
    /// Where sessions are kept; none, no sessions.
    sessions: Option<Arc<dyn Store>>,
    /// Names the key sessions are made for (a digest of it): a server
    /// started with another key knows none of the old sessions.
    key_tag: Option<String>,
    /// Keys tried per address (see [`Guard::admit`]).
    tries: std::sync::Mutex<std::collections::HashMap<IpAddr, Tries>>,
}

/// The keys one address tried since its last right one.
#[derive(Default)]
struct Tries {
    /// Tried, right or wrong, since the last right one (counted as they
    /// arrive, so that many at once count as many).
    since_right: u32,
    locked_until: Option<std::time::Instant>,
}

/// Why a key was not even looked at.
pub struct LockedOut {
    pub retry_after: Duration,
}

impl IntoResponse for LockedOut {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs().max(1);
        let mut answer = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many wrong API keys from this address: try again in {secs} s"),
        )
        .into_response();
        answer.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&secs.to_string()).expect("digits"),
        );
        answer
    }
}

impl Guard {
    /// The rules for a server listening on `addr` (the port really bound).
    pub fn new(addr: SocketAddr, api_key: Option<&str>) -> Self {
        let hosts = addr.ip().is_loopback().then(|| {
            let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
                .into_iter()
                .map(String::from)
                .collect();
            hosts.push(match addr.ip() {
                IpAddr::V6(ip) => format!("[{ip}]"),
                IpAddr::V4(ip) => ip.to_string(),
            });
            hosts
        });
        // SAFETY: geteuid has no preconditions.
        let owner = addr.ip().is_loopback().then(|| unsafe { libc::geteuid() });
        Self {
            inner: Arc::new(Inner {
                hosts,
                owner,
                port: addr.port(),
                key_digest: api_key.map(digest),
                sessions: None,
                key_tag: api_key.map(key_tag),
                tries: Default::default(),
            }),
        }
    }

    /// Whether `host` (a `Host` header: name, optional port) is one this
    /// server answers to.
    fn host_allowed(&self, host: &str) -> bool {
        let Some(hosts) = &self.inner.hosts else {
            return true;
        };
        let (name, port) = split_host(host);
        let port_ok = port.is_none_or(|p| p == self.inner.port);
        port_ok && hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether `origin` (`scheme://host[:port]`) is this server's own.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let Some(rest) = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
        else {
            return false; // `null` (a sandboxed frame, a file) or garbage
        };
        match &self.inner.hosts {
            Some(_) => self.host_allowed(rest),
            // Beyond loopback, the site a browser loaded this server from
            // is the one it names in Host.
            None => host.is_some_and(|h| h.eq_ignore_ascii_case(rest)),
        }
    }

    /// Whether a key guards this server.
    pub fn has_key(&self) -> bool {
        self.inner.key_digest.is_some()
    }

    /// A key (a bearer token, a sign-in) from `peer` is about to be
    /// looked at: counted as it arrives. An address that tried `TRIES`
    /// keys without a right one is refused for `LOCKOUT` without its
    /// key being looked at, so guessing runs at `TRIES` a minute however
    /// many requests it sends at once. (Every address is its own: behind a
    /// proxy that all clients share, a guesser locks the others out too;
    /// `X-Forwarded-For` is not believed, anyone can send it.)
    /// Returns which try this is since the last right one.
    pub fn admit(&self, peer: IpAddr) -> Result<u32, LockedOut> {
        let mut all = self.inner.tries.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: addresses that stopped trying are forgotten.
        if all.len() > 10_000 {
            let now = std::time::Instant::now();
            all.retain(|_, t| t.locked_until.is_some_and(|u| u > now));
        }
        let tries = all.entry(peer).or_default();
        let now = std::time::Instant::now();
        if let Some(until) = tries.locked_until {
            if now < until {
                return Err(LockedOut {
                    retry_after: until - now,
                });
            }
            *tries = Tries::default();
        }
        tries.since_right += 1;
        if tries.since_right > TRIES {
            tries.locked_until = Some(now + LOCKOUT);
            tracing::warn!(
                "{peer} tried {TRIES} API keys without a right one: its keys are refused for {} s",
                LOCKOUT.as_secs()
            );
            return Err(LockedOut {
                retry_after: LOCKOUT,
            });
        }
        Ok(tries.since_right)
    }

    /// The key `peer` gave was right: its count starts again.
    pub fn right(&self, peer: IpAddr) {
        let mut all = self.inner.tries.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&peer);
    }

    /// The same rules, with dashboard sessions kept in `store`.
    pub fn with_sessions(self, store: Arc<dyn Store>) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|_| unreachable!("a new guard"));
        Self {
            inner: Arc::new(Inner {
                sessions: Some(store),
                ..inner
            }),
        }
    }

    /// Whether `token` is the key.
    pub fn key_ok(&self, token: &str) -> bool {
        self.inner
            .key_digest
            .as_ref()
            .is_some_and(|key| bool::from(digest(token).ct_eq(key)))
    }

    /// A new session (after a right key): the cookie's value, a random id
    /// only the browser keeps (the store keeps its digest).
    pub async fn start_session(&self) -> Result<String, StoreError> {
        let (Some(store), Some(tag)) = (&self.inner.sessions, &self.inner.key_tag) else {
            return Err(StoreError::Query {
                location: "the dashboard".into(),
                detail: "this server keeps no sessions".into(),
            });
        };
        // 244 random bits (two version-4 UUIDs, from the system's CSPRNG).
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires =
            chrono::Utc::now() + chrono::Duration::from_std(SESSION_TTL).expect("a week fits");
        store
            .create_session(&hex(&digest(&id)), tag, expires)
            .await?;
        Ok(id)
    }

    /// Ends the session the request's cookie names, if any.
    pub async fn end_session(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        if let (Some(store), Some(id)) = (&self.inner.sessions, session_cookie(headers)) {
            store.end_session(&hex(&digest(id))).await?;
        }
        Ok(())
    }

    /// Whether the request's cookie names a live session for this key.
    async fn session_ok(&self, headers: &HeaderMap) -> Result<bool, StoreError> {
        let (Some(store), Some(tag), Some(id)) = (
            &self.inner.sessions,
            &self.inner.key_tag,
            session_cookie(headers),
        ) else {
            return Ok(false);
        };
        store
            .session_alive(&hex(&digest(id)), tag, chrono::Utc::now())
            .await
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.inner.key_digest else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        given.is_some_and(|g| bool::from(digest(g).ct_eq(key)))
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The session id a request's cookie carries.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// What names a key among sessions: a digest of it, never the key.
fn key_tag(key: &str) -> String {
    hex(&Sha256::digest(format!("weft dashboard sessions\0{key}").as_bytes()).into())
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What anyone may fetch: the sign-in page, the assets it needs, and the
/// sign-in itself.
fn is_public(req: &Request) -> bool {
    let path = req.uri().path();
    match *req.method() {
        Method::GET | Method::HEAD => path == "/signin" || path.starts_with("/assets/"),
        Method::POST => path == "/weft/v1/session",
        _ => false,
    }
}

/// A browser asking for a page (not the API).
fn wants_page(req: &Request) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// `name[:port]`, with `[v6]` kept in its brackets.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => (
                &host[..=end],
                host[end + 1..]
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok()),
            ),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, port.parse().ok()),
        None => (host, None),
    }
}

/// Whether the request would change something (or open a stream a page
/// could read from): these must come from this server's own pages.
fn needs_same_origin(req: &Request) -> bool {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade || !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request has a body (a length above zero, or chunks).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        })
}

/// The middleware: every rule above, in order.
pub async fn check(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(host) = &host
        && !guard.host_allowed(host)
    {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to the host name {host:?} (it answers to 127.0.0.1, localhost and [::1] on port {}); a page that rebinds its name to this machine cannot read it",
                guard.inner.port
            ),
        )
        .into_response();
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // A bearer token is a key to look at: counted, and refused unseen
    // from an address locked out for guessing.
    let presented = guard.has_key() && req.headers().contains_key(header::AUTHORIZATION);
    let mut try_number = 0;
    if presented && let Some(peer) = peer {
        match guard.admit(peer.ip()) {
            Ok(n) => try_number = n,
            Err(locked) => return locked.into_response(),
        }
    }
    let bearer = guard.token_ok(req.headers());
    if presented
        && bearer
        && let Some(peer) = peer
    {
        guard.right(peer.ip());
    }
    // On loopback without a key everyone is let in: everyone, that is,
    // who is this server's own user. Another user of the machine (or one
    // the kernel does not name) must present the key, or is refused.
    if let (Some(owner), Some(PeerUser(user))) = (
        guard.inner.owner,
        req.extensions().get::<PeerUser>().copied(),
    ) && user != Some(owner)
        && user != Some(0)
        && !(presented && bearer)
    {
        let who = user.map_or("a user the kernel does not name".to_string(), |u| {
            format!("uid {u}")
        });
        tracing::warn!(
            "refused {} {} from {who} on this machine: this server belongs to uid {owner}",
            req.method(),
            req.uri().path()
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this weft belongs to another user of this machine (uid {owner}); {}",
                if guard.has_key() {
                    "present its API key (Authorization: Bearer) to use it"
                } else {
                    "it was started without an API key, so only that user may use it"
                }
            ),
        )
        .into_response();
    }
    let session = if bearer {
        false
    } else {
        match guard.session_ok(req.headers()).await {
            Ok(alive) => alive,
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    if !bearer && !session && wants_page(&req) && !is_public(&req) {
        let next = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let to = format!(
            "/signin?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        let mut answer = StatusCode::SEE_OTHER.into_response();
        answer.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&to).expect("an encoded path"),
        );
        return answer;
    }
    if !bearer && !session && !is_public(&req) {
        let peer = peer.map_or("an unknown peer".to_string(), |p| p.to_string());
        tracing::warn!(
            "refused {} {} from {peer}: {}",
            req.method(),
            req.uri().path(),
            if presented {
                format!("wrong bearer token (try {try_number} in a row from this address)")
            } else {
                "no bearer token".to_string()
            }
        );
        tokio::time::sleep(REFUSAL_PAUSE).await;
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer $RENDER_API_KEY)",
        )
        .into_response();
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weft\""),
        );
        return refused;
    }
    // Signed in by cookie only: a browser. It names its page's origin on
    // every such request, and the page adds the CSRF header.
    if session && needs_same_origin(&req) {
        let origin_ok = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|o| guard.origin_allowed(o, host.as_deref()));
        let upgrade = req.headers().contains_key(header::UPGRADE);
        if !origin_ok || (!upgrade && !req.headers().contains_key(CSRF_HEADER)) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "a signed-in browser may change runs only from this server's own pages (Origin and X-Weft-Csrf)",
            )
            .into_response();
        }
    }
    if needs_same_origin(&req)
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("");
        if !guard.origin_allowed(origin, host.as_deref()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "refused a {} from the web page at {origin:?}: only this server's own pages may change runs or open streams",
                    if req.headers().contains_key(header::UPGRADE) { "WebSocket" } else { "request" }
                ),
            )
            .into_response();
        }
    }
    if *req.method() != Method::GET && has_body(req.headers()) && !is_json(req.headers()) {
        let given = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the request body must be JSON, sent as Content-Type: application/json (this one says {given})"),
        )
        .into_response();
    }
    let mut answer = next.run(req).await;
    // Runs, inputs, results and logs are nobody else's: no browser or
    // proxy keeps a copy (the static assets say `no-cache` themselves).
    answer
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_answers_only_its_own_names_and_port() {
        let g = Guard::new("127.0.0.1:8120".parse().unwrap(), None);
        for ok in [
            "127.0.0.1:8120",
            "localhost:8120",
            "LOCALHOST",
            "[::1]:8120",
            "127.0.0.1",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "attacker-rebind.example",
            "attacker.example:8120",
            "localhost:9999",
            "127.0.0.2:8120",
            "",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let open = Guard::new("0.0.0.0:8120".parse().unwrap(), Some("k"));
        assert!(
            open.host_allowed("weft.internal:8120"),
            "beyond loopback the token guards"
        );
    }

    #[test]
    fn origins_must_be_the_servers_own() {
        let g = Guard::new("127.0.0.1:8120".parse().unwrap(), None);
        assert!(g.origin_allowed("http://127.0.0.1:8120", None));
        assert!(g.origin_allowed("http://localhost:8120", None));
        for bad in [
            "http://evil.example",
            "http://localhost:3000",
            "null",
            "file://",
            "",
        ] {
            assert!(!g.origin_allowed(bad, None), "{bad}");
        }
        let open = Guard::new("0.0.0.0:8120".parse().unwrap(), Some("k"));
        assert!(open.origin_allowed("https://weft.internal:8120", Some("weft.internal:8120")));
        assert!(!open.origin_allowed("https://evil.example", Some("weft.internal:8120")));
    }

    #[test]
    fn tokens_take_any_case_of_the_scheme_and_only_the_key() {
        let g = Guard::new("127.0.0.1:8120".parse().unwrap(), Some("s3cret"));
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert!(g.token_ok(&with("Bearer s3cret")));
        assert!(g.token_ok(&with("bearer s3cret")));
        assert!(g.token_ok(&with("BEARER  s3cret")));
        assert!(!g.token_ok(&with("Bearer s3cre")));
        assert!(!g.token_ok(&with("Basic s3cret")));
        assert!(!g.token_ok(&HeaderMap::new()));
        assert!(Guard::new("127.0.0.1:1".parse().unwrap(), None).token_ok(&HeaderMap::new()));
    }

    #[test]
    fn json_is_json_with_or_without_a_charset() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, value.parse().unwrap());
            h
        };
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/plain")));
        assert!(!is_json(&with("application/x-www-form-urlencoded")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
