//! The embedded fake BigID: serves `--demo` and the tests, with switchable
//! faults so every failure of a real deployment can be reproduced on loopback.
//!
//! Accounts: `demo` / `demo`, and any `NAME` with password `NAME-password`.
//! User tokens: `demo-user-token` (user `demo`) and `demo-user-token-NAME`.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, post},
    serve::ListenerExt,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::config::{DEMO_PASSWORD, DEMO_USER_TOKEN, DEMO_USERNAME};

/// Lifetime of the session and system tokens the fake issues, unless changed
/// with [`FakeBigId::set_token_ttl`].
pub const TOKEN_TTL: Duration = Duration::from_secs(30 * 60);

/// A misbehaviour of the fake: standing ([`FakeBigId::set_fault`]) or for
/// the next requests only ([`FakeBigId::queue_faults`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Behave like a healthy BigID.
    #[default]
    None,
    /// Answer with this status and a JSON `{"message": …}` body.
    Status(u16),
    /// Answer 200 with an HTML page (what BigID's proxies do for a 502).
    HtmlPage,
    /// Answer 200 with a body that is not valid JSON.
    InvalidJson,
    /// Wait this long before answering.
    Slow(Duration),
    /// Answer 200 with a body of this many bytes.
    Oversized(usize),
    /// Answer a login with 200, `"success": false` and `Content-Type: text/html`.
    LoginSuccessFalse,
    /// Send half a JSON body, then break the connection.
    Truncated,
    /// Answer `/refresh-access-token` with 405 unless the method is this one.
    RefreshOnly(Method),
    /// Answer with this status, a JSON `{"message": …}` body and this
    /// `Retry-After` value.
    RetryAfter(u16, String),
    /// Send the headers and the start of the body at once, the rest after
    /// this long (a BigID that stalls mid-answer).
    SlowBody(Duration),
    /// Answer successfully with only the token field, plus fields this server
    /// does not know (an older or newer BigID).
    Minimal,
    /// Break the connection without a byte of answer (a crashed BigID or a
    /// proxy resetting it).
    Reset,
}

/// Random faults for chaos tests: each request fails, with probability
/// `failure_percent`, in one of the ways real deployments fail (reset,
/// 500, 503 with and without `Retry-After`, a stalled or truncated body,
/// broken JSON, a slow answer). Seeded, so a failing run can be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    /// Seed of the random sequence.
    pub seed: u64,
    /// Share of requests that fail, 0 to 100.
    pub failure_percent: u8,
    /// Longest delay of the slow faults.
    pub max_delay: Duration,
}

/// The chaos settings and where their random sequence stands.
struct ChaosState {
    config: Chaos,
    rng: u64,
    injected: usize,
}

impl ChaosState {
    /// SplitMix64: tiny, seedable, good enough to pick faults.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The fault for the next request, if it is to fail.
    fn draw(&mut self) -> Option<Fault> {
        let roll = self.next();
        if roll % 100 >= u64::from(self.config.failure_percent) {
            return None;
        }
        self.injected += 1;
        let max_ms = u64::try_from(self.config.max_delay.as_millis()).unwrap_or(u64::MAX);
        let delay = Duration::from_millis(self.next() % max_ms.max(1));
        Some(match (roll / 100) % 8 {
            0 => Fault::Reset,
            1 => Fault::Status(500),
            2 => Fault::Status(503),
            3 => Fault::RetryAfter(503, "0".into()),
            4 => Fault::SlowBody(delay),
            5 => Fault::Truncated,
            6 => Fault::InvalidJson,
            _ => Fault::Slow(delay),
        })
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path, e.g. `/api/v1/sessions`.
    pub path: String,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    /// The request body as received.
    pub body: Bytes,
    /// When the request arrived.
    pub received: Instant,
}

struct FakeState {
    fault: Mutex<Fault>,
    queued: Mutex<VecDeque<Fault>>,
    chaos: Mutex<Option<ChaosState>>,
    token_ttl: Mutex<Option<Duration>>,
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    serial: AtomicU64,
}

impl Default for FakeState {
    fn default() -> Self {
        Self {
            fault: Mutex::default(),
            queued: Mutex::default(),
            chaos: Mutex::default(),
            token_ttl: Mutex::new(Some(TOKEN_TTL)),
            requests: Mutex::default(),
            connections: AtomicUsize::default(),
            serial: AtomicU64::default(),
        }
    }
}

/// A running fake BigID on a loopback port; stops when dropped.
pub struct FakeBigId {
    url: Url,
    addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The BigID to talk to: the demo one, started here, when `demo` is set;
/// otherwise the configured URL. The fake stops when the returned handle drops.
pub async fn bigid_target(
    demo: bool,
    configured: Option<&Url>,
) -> std::io::Result<(Option<FakeBigId>, Url)> {
    if demo {
        let fake = FakeBigId::start().await?;
        let url = fake.url().clone();
        return Ok((Some(fake), url));
    }
    let url = configured.ok_or_else(|| std::io::Error::other("no BigID URL configured"))?;
    Ok((None, url.clone()))
}

impl FakeBigId {
    /// Starts the fake on an ephemeral port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts the fake on `addr`.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind(addr).await?)
    }

    /// Starts the fake on a listener the caller set up (e.g. with a tiny
    /// backlog, to hold connections pending first).
    pub fn serve(listener: TcpListener) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/api/v1/sessions", post(sessions))
            .route("/api/v1/refresh-access-token", any(refresh))
            .with_state(state.clone());
        let counted = state.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            }
        });
        let url = Url::parse(&format!("http://{local}/api/v1"))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            url,
            addr: local,
            state,
            stop,
            task,
        })
    }

    /// The API base, e.g. `http://127.0.0.1:PORT/api/v1`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The socket address it listens on (for relays put in front of it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every following request misbehave this way.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = fault;
    }

    /// Makes the next requests misbehave, one fault each, in order; then the
    /// standing fault applies again. A queued [`Fault::Slow`] delays the
    /// answer the standing fault gives, so delays combine with other faults.
    pub fn queue_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state.queued).extend(faults);
    }

    /// Makes a random share of the following requests fail (see [`Chaos`]);
    /// `None` ends it. Queued faults still come first.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        *lock(&self.state.chaos) = chaos.map(|config| ChaosState {
            config,
            rng: config.seed,
            injected: 0,
        });
    }

    /// How many faults chaos has injected since it was set.
    pub fn chaos_injected(&self) -> usize {
        lock(&self.state.chaos).as_ref().map_or(0, |c| c.injected)
    }

    /// Makes the next `times` requests answer HTTP `status`.
    pub fn fail_times(&self, times: usize, status: u16) {
        self.queue_faults(std::iter::repeat_n(Fault::Status(status), times));
    }

    /// Lifetime of the tokens issued from now on; `None` issues tokens
    /// without an `exp` claim.
    pub fn set_token_ttl(&self, ttl: Option<Duration>) {
        *lock(&self.state.token_ttl) = ttl;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Stops serving and waits for the server task to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeBigId {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records the request and applies the fault shared by both endpoints, if
/// any; otherwise returns the fault the endpoint itself has to apply.
async fn intake(
    state: &FakeState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Fault, Response> {
    lock(&state.requests).push(Recorded {
        method: method.clone(),
        path: path.to_owned(),
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
        received: Instant::now(),
    });
    let queued = lock(&state.queued).pop_front();
    let queued = queued.or_else(|| lock(&state.chaos).as_mut().and_then(ChaosState::draw));
    let standing = lock(&state.fault).clone();
    let fault = match queued {
        // A queued delay slows down whatever the standing fault answers.
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            standing
        }
        Some(fault) => fault,
        None => standing,
    };
    match fault {
        Fault::None | Fault::LoginSuccessFalse | Fault::RefreshOnly(_) | Fault::Minimal => {
            Ok(fault)
        }
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Ok(Fault::None)
        }
        Fault::RetryAfter(code, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let reason = status.canonical_reason().unwrap_or("error");
            Err((
                status,
                [(header::RETRY_AFTER, retry_after)],
                axum::Json(json!({"status": "error", "message": reason})),
            )
                .into_response())
        }
        Fault::SlowBody(delay) => {
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"{\"success\": true, "))
            });
            let tail = futures_util::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok(Bytes::from_static(b"\"message\": \"late\"}"))
            });
            Err(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures_util::StreamExt::chain(
                    head, tail,
                )))
                .unwrap_or_default())
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = status.canonical_reason().unwrap_or("error");
            Err((
                status,
                axum::Json(json!({"status": "error", "message": reason})),
            )
                .into_response())
        }
        Fault::HtmlPage => Err((
            [(header::CONTENT_TYPE, "text/html")],
            "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response()),
        Fault::InvalidJson => Err((
            [(header::CONTENT_TYPE, "application/json")],
            "{\"success\": true, \"auth_token\": ",
        )
            .into_response()),
        Fault::Oversized(bytes) => Err((
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"pad\":\"{}\"}}", "x".repeat(bytes.saturating_sub(10))),
        )
            .into_response()),
        Fault::Reset => {
            // A body that fails before its first byte: hyper drops the
            // connection without sending the response head.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("connection reset by the fake"))
            });
            Err(Response::new(Body::from_stream(broken)))
        }
        Fault::Truncated => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from_static(b"{\"success\": true, \"systemTo")),
                Err(std::io::Error::other("connection cut by the fake")),
            ];
            Err(Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, "200")
                // The pause lets the headers and first chunk go out before the cut.
                .body(Body::from_stream(futures_util::StreamExt::then(
                    futures_util::stream::iter(chunks),
                    |chunk| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        chunk
                    },
                )))
                .unwrap_or_default())
        }
    }
}

async fn sessions(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match intake(&state, &Method::POST, "/api/v1/sessions", &headers, &body).await {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    let login: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (Some(user), Some(password)) = (
        login.get("username").and_then(Value::as_str),
        login.get("password").and_then(Value::as_str),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "username and password are required"})),
        )
            .into_response();
    };
    let valid = (user == DEMO_USERNAME && password == DEMO_PASSWORD)
        || password == format!("{user}-password");
    if fault == Fault::LoginSuccessFalse || (!valid && user.starts_with("html-")) {
        // What real BigID does for a failed login: 200, success false, labelled HTML.
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            json!({"success": false, "message": "Login failed: wrong username or password"})
                .to_string(),
        )
            .into_response();
    }
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"success": false, "message": "Invalid username or password"})),
        )
            .into_response();
    }
    let token = issue(&state, user, "access-token");
    if fault == Fault::Minimal {
        return axum::Json(json!({"auth_token": token, "tenantId": 7, "features": {"x": true}}))
            .into_response();
    }
    axum::Json(json!({
        "success": true,
        "message": "Enjoy your token!",
        "auth_token": token,
        "username": user,
        "firstName": capitalize(user),
        "permissions": demo_permissions(),
    }))
    .into_response()
}

async fn refresh(
    State(state): State<Arc<FakeState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = "/api/v1/refresh-access-token";
    let fault = match intake(&state, &method, path, &headers, &body).await {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    let only = match &fault {
        Fault::RefreshOnly(m) => Some(m.clone()),
        _ => None,
    };
    if !matches!(method, Method::GET | Method::POST) || only.is_some_and(|m| m != method) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(json!({"message": "Method Not Allowed"})),
        )
            .into_response();
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    let user = match token {
        Some(DEMO_USER_TOKEN) => Some(DEMO_USERNAME),
        Some(t) => t
            .strip_prefix(DEMO_USER_TOKEN)
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|name| !name.is_empty()),
        None => None,
    };
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"success": false, "message": "Invalid user token"})),
        )
            .into_response();
    };
    let token = issue(&state, user, "system-token");
    if fault == Fault::Minimal {
        return axum::Json(json!({"systemToken": token, "expiresIn": "1h"})).into_response();
    }
    axum::Json(json!({"success": true, "systemToken": token})).into_response()
}

/// A JWT-shaped token: real header and claims, a signature nobody checks.
fn issue(state: &FakeState, user: &str, kind: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let serial = state.serial.fetch_add(1, Ordering::Relaxed);
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut claims = json!({
        "sub": user,
        "type": kind,
        "iat": now,
        "jti": serial,
        "iss": "bigid-auth-mcp-demo",
    });
    if let Some(ttl) = *lock(&state.token_ttl) {
        claims["exp"] = json!(now + ttl.as_secs());
    }
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(format!("demo-signature-{serial}"));
    format!("{header}.{claims}.{signature}")
}

fn capitalize(user: &str) -> String {
    let mut chars = user.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Enough permission strings to show why the tool only counts them by default.
fn demo_permissions() -> Vec<String> {
    let areas = [
        "catalog",
        "data_sources",
        "policies",
        "reports",
        "scans",
        "users",
    ];
    let actions = ["read", "create", "edit", "delete", "manage"];
    areas
        .iter()
        .flat_map(|a| actions.iter().map(move |v| format!("permission.{a}.{v}")))
        .collect()
}

#[cfg(test)]
mod chaos_tests {
    use super::*;

    fn state(seed: u64, failure_percent: u8) -> ChaosState {
        ChaosState {
            config: Chaos {
                seed,
                failure_percent,
                max_delay: Duration::from_millis(50),
            },
            rng: seed,
            injected: 0,
        }
    }

    #[test]
    fn chaos_is_replayable_and_respects_its_share() {
        let draws = |seed| {
            let mut chaos = state(seed, 30);
            (0..1000).map(|_| chaos.draw()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "same seed, same faults");
        assert_ne!(draws(7), draws(8));
        let failed = draws(7).iter().filter(|f| f.is_some()).count();
        assert!((200..400).contains(&failed), "{failed} of 1000 at 30%");
        let mut kinds: Vec<String> = draws(7)
            .into_iter()
            .flatten()
            .map(|f| {
                format!("{f:?}")
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), 7, "every kind of fault shows up: {kinds:?}");
        assert!(state(1, 0).draw().is_none());
        assert!((0..100).all(|_| state(1, 100).draw().is_some()));
    }

    #[tokio::test]
    async fn reset_breaks_the_connection_before_any_answer() {
        let fake = FakeBigId::start().await.expect("fake starts");
        fake.set_fault(Fault::Reset);
        let url = format!("{}/sessions", fake.url());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let error = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(url)
            .body("{}")
            .send()
            .await
            .expect_err("no response");
        // hyper reports IncompleteMessage: the connection closed before a head.
        assert!(error.status().is_none() && error.is_request(), "{error:?}");
    }
}
