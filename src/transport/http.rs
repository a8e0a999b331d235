//! `--transport http`: one port serving Streamable HTTP at `/mcp`, the legacy
//! HTTP+SSE transport at `/sse` + `/message`, and `/healthz`.
//!
//! Request path: access log → Host check (loopback binds) → Origin check →
//! authentication (`MCP_AUTH_TOKEN` and/or OAuth; the metadata documents and
//! `/healthz` need none) → body limit → shutdown gate → route. The connection loop is
//! hyper's own rather than `axum::serve`, for two things axum does not
//! expose: a header read timeout (slowloris) and a bounded graceful shutdown.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::{local::LocalSessionManager, never::NeverSessionManager},
};
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    auth::{self, Auth},
    connections::{self, BusyMarker, Connections},
    drain::Drain,
    legacy_sse,
    middleware::{self, BearerToken, BodyLimit, OriginPolicy, error_response},
    owners::{self, SessionOwners},
    refusals,
    request_ids::{self, RequestIds},
    resource_metadata,
    sessions::{CappedSessionManager, SessionSlots},
};
use crate::{config::HttpConfig, oauth::Verifier, server::BigIdServer};

/// Resource limits and timings of the HTTP transport. The defaults suit a
/// real deployment; tests shrink them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open MCP sessions at once, Streamable HTTP and legacy SSE together.
    pub max_sessions: usize,
    /// A session with no request for this long is closed.
    pub session_idle: Duration,
    /// A session that has not completed its handshake (`initialize`, then
    /// `notifications/initialized`) by then is closed.
    pub init_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body.
    pub body_read_timeout: Duration,
    /// Time allowed to receive request headers; also closes idle keep-alive
    /// connections after this long.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) a connection may
    /// send; larger ones get 431 and the connection is closed.
    pub max_header_bytes: usize,
    /// Open client connections at once (capped further by the descriptor
    /// limit). At the cap, connections that have not sent a whole request
    /// are shed first. Tuning: `MCP_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// Interval of keep-alive comments on idle SSE streams.
    pub sse_keep_alive: Duration,
    /// How long shutdown waits for calls in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 256,
            // Long enough that a user pausing between prompts keeps the session.
            session_idle: Duration::from_secs(30 * 60),
            init_timeout: Duration::from_secs(60),
            max_body_bytes: 1 << 20,
            body_read_timeout: Duration::from_secs(30),
            // Ample for any client on any network; a slowloris gets no longer.
            header_read_timeout: Duration::from_secs(10),
            // Like common proxies (nginx allows 4 × 8 KiB): far above what
            // MCP clients send, and it bounds each connection's buffer.
            max_header_bytes: 32 * 1024,
            max_connections: 1024,
            sse_keep_alive: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Tuning: the cap on open client connections ([`Limits::max_connections`]).
pub const MAX_CONNECTIONS_ENV: &str = "MCP_MAX_CONNECTIONS";

/// After the grace period, how long connections get to close once sessions end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds `config.bind`, serves until SIGINT/SIGTERM, then shuts down gracefully.
/// With OAuth configured, the issuer's metadata and keys are read first: a
/// failure there is a [`crate::oauth::StartError`] and nothing is served.
pub async fn serve(server: BigIdServer, config: &HttpConfig) -> anyhow::Result<()> {
    let verifier = match &config.oauth {
        Some(settings) => {
            let verifier = Verifier::start(settings.clone()).await?;
            tracing::info!(
                issuer = %settings.issuer,
                jwks_uri = verifier.jwks_uri(),
                "OAuth: accepting access tokens for {}",
                settings.resource
            );
            Some(Arc::new(verifier))
        }
        None => None,
    };
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    let mut limits = Limits::default();
    if let Some(max) = std::env::var(MAX_CONNECTIONS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        limits.max_connections = max;
    }
    let fds = connections::raise_fd_limit();
    let fitting = connections::fitting(limits.max_connections, fds);
    if fitting < limits.max_connections {
        tracing::warn!(
            "the descriptor limit ({}) allows {fitting} client connections, not {}; \
             raise `ulimit -n` for more",
            fds.unwrap_or(0),
            limits.max_connections
        );
        limits.max_connections = fitting;
    }
    let grace = limits.shutdown_grace;
    let running = start_with(listener, server, config, limits, verifier)?;
    let addr = running.local_addr();
    let auth = running.auth.describe();
    let mode = if config.stateless { ", stateless" } else { "" };
    // Listening for signals before saying "ready": whoever reads that line
    // may send SIGTERM at once.
    let stop = super::shutdown_signal();
    tracing::info!(
        "bigid-auth-mcp {} ready on http://{addr}/mcp (legacy SSE at http://{addr}/sse{mode}); {auth}",
        env!("CARGO_PKG_VERSION")
    );

    stop.await;
    tracing::info!(
        "signal received; finishing calls in flight (up to {} s)",
        grace.as_secs()
    );
    tokio::select! {
        () = running.shutdown() => tracing::info!("stopped"),
        // A second signal means "now".
        () = super::shutdown_signal() => tracing::warn!("second signal; exiting without waiting"),
    }
    Ok(())
}

/// A server running on its own task.
pub struct Running {
    local_addr: SocketAddr,
    auth: Arc<Auth>,
    slots: SessionSlots,
    drain: Drain,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Open MCP sessions of both kinds.
    pub fn active_sessions(&self) -> usize {
        self.slots.active()
    }

    /// MCP calls in flight.
    pub fn in_flight(&self) -> usize {
        self.drain.in_flight()
    }

    /// Stops accepting, lets calls in flight finish (bounded by
    /// [`Limits::shutdown_grace`]), ends sessions and streams, and returns.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Err(e) = (&mut self.task).await {
            tracing::error!("the HTTP server task failed: {e}");
        }
    }
}

impl Drop for Running {
    /// A server dropped without [`Running::shutdown`] still stops accepting.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts serving on `listener` in the background, without OAuth.
pub fn start(
    listener: TcpListener,
    server: BigIdServer,
    config: &HttpConfig,
    limits: Limits,
) -> io::Result<Running> {
    start_with(listener, server, config, limits, None)
}

/// Starts serving on `listener` in the background; `verifier` checks OAuth
/// access tokens when `config.oauth` is set.
pub fn start_with(
    listener: TcpListener,
    server: BigIdServer,
    config: &HttpConfig,
    limits: Limits,
    verifier: Option<Arc<Verifier>>,
) -> io::Result<Running> {
    let local_addr = listener.local_addr()?;
    let slots = SessionSlots::new(limits.max_sessions);
    let drain = Drain::default();
    let sessions = CancellationToken::new();
    let auth = Arc::new(Auth::new(
        config.auth_token.as_ref().map(BearerToken::new),
        verifier.clone(),
    ));
    let router = app(
        server,
        config,
        &limits,
        &slots,
        &drain,
        &sessions,
        auth.clone(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(accept_loop(
        listener,
        router,
        stop.clone(),
        sessions,
        drain.clone(),
        limits,
    ));
    Ok(Running {
        local_addr,
        auth,
        slots,
        drain,
        stop,
        task,
    })
}

/// The whole HTTP application. Cancelling `sessions` ends every MCP session
/// and SSE stream.
pub fn app(
    server: BigIdServer,
    config: &HttpConfig,
    limits: &Limits,
    slots: &SessionSlots,
    drain: &Drain,
    sessions: &CancellationToken,
    auth: Arc<Auth>,
) -> Router {
    let legacy = legacy_sse::router(
        {
            let server = server.clone();
            move || server.clone()
        },
        slots.clone(),
        drain.clone(),
        sessions.clone(),
        legacy_sse::Timings {
            keep_alive: limits.sse_keep_alive,
            init_timeout: limits.init_timeout,
            idle_timeout: limits.session_idle,
        },
    );
    let body_limit = BodyLimit {
        max_bytes: limits.max_body_bytes,
        read_timeout: limits.body_read_timeout,
    };

    // `layer` wraps what is already there: the last one added runs first.
    let mut mcp = streamable(server, config, limits, slots, sessions)
        .merge(legacy)
        .layer(from_fn_with_state(drain.clone(), middleware::track_calls))
        .layer(from_fn_with_state(body_limit, middleware::limit_body));
    // Always installed: with no authentication configured it marks every
    // request as the `local` principal.
    mcp = mcp.layer(from_fn_with_state(auth, auth::authenticate));
    mcp = mcp.layer(from_fn_with_state(
        OriginPolicy::new(&config.allowed_origins),
        middleware::check_origin,
    ));
    if config.bind.ip().is_loopback() {
        mcp = mcp.layer(from_fn(middleware::check_host));
    }

    let mut open = Router::new().route("/healthz", get(healthz));
    if let Some(settings) = &config.oauth {
        open = open.merge(resource_metadata::router(settings));
    }
    open.merge(mcp)
        .fallback(not_found)
        .layer(from_fn(middleware::access_log))
}

/// `/mcp`: rmcp's Streamable HTTP service, stateful unless `--stateless`.
fn streamable(
    server: BigIdServer,
    config: &HttpConfig,
    limits: &Limits,
    slots: &SessionSlots,
    sessions: &CancellationToken,
) -> Router {
    let factory = move || Ok(server.clone());
    let rmcp_config = StreamableHttpServerConfig::default()
        .with_cancellation_token(sessions.child_token())
        .with_sse_keep_alive(Some(limits.sse_keep_alive))
        // Host and Origin are checked by our middleware, for all routes alike.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(limits.max_body_bytes);
    if config.stateless {
        // No session state: any instance can answer any request, and simple
        // calls come back as plain JSON, which load balancers handle best.
        let rmcp_config = rmcp_config
            .with_legacy_session_mode(false)
            .with_json_response(true);
        let service = StreamableHttpService::new(
            factory,
            Arc::new(NeverSessionManager::default()),
            rmcp_config,
        );
        return Router::new()
            .route_service("/mcp", service)
            .route_layer(from_fn(refusals::jsonrpc_refusals));
    }
    let mut local = LocalSessionManager::default();
    local.session_config.keep_alive = Some(limits.session_idle);
    local.session_config.init_timeout = Some(limits.init_timeout);
    // No priming events: they invite clients to resume, which is off.
    local.session_config.sse_retry = None;
    let ids = RequestIds::default();
    let owners = SessionOwners::default();
    let manager = CappedSessionManager::new(local, slots.clone(), ids.clone(), limits.init_timeout)
        .with_owners(owners.clone());
    let service =
        StreamableHttpService::new(factory, Arc::new(manager), rmcp_config.with_sse_retry(None));
    // The owner check runs first: another principal's session id is a 404
    // before anything about its requests is looked at.
    Router::new()
        .route_service("/mcp", service)
        .route_layer(from_fn_with_state(ids, request_ids::one_answer_per_id))
        .route_layer(from_fn_with_state(owners, owners::bind_to_owner))
        .route_layer(from_fn_with_state(
            slots.clone(),
            refuse_new_session_when_full,
        ))
        .route_layer(from_fn(deleted_is_no_content))
        .route_layer(from_fn(refusals::jsonrpc_refusals))
}

/// rmcp answers a successful DELETE with 202; the official Python SDK warns
/// "Session termination failed: 202" unless it gets 200 or 204. The session
/// is gone by the time rmcp answers, so 204 is the truthful status anyway.
async fn deleted_is_no_content(request: Request, next: Next) -> Response {
    let delete = request.method() == Method::DELETE;
    let mut response = next.run(request).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// 503 for a POST that would open a new Streamable HTTP session (it has no
/// `Mcp-Session-Id`) while the cap is reached; rmcp itself would answer 500.
async fn refuse_new_session_when_full(
    State(slots): State<SessionSlots>,
    request: Request,
    next: Next,
) -> Response {
    let opens_session =
        request.method() == Method::POST && !request.headers().contains_key("mcp-session-id");
    if opens_session && slots.is_full() {
        return slots.refusal();
    }
    next.run(request).await
}

/// `GET /healthz`: liveness, no auth.
async fn healthz() -> Response {
    Json(json!({
        "status": "ok",
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; MCP clients use /mcp (Streamable HTTP) or /sse (legacy SSE)",
    )
}

/// Accepts connections until `stop`, then shuts down in order: refuse new
/// work, wait for calls in flight (bounded), end sessions and streams, and
/// give connections a moment to close.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    sessions: CancellationToken,
    drain: Drain,
    limits: Limits,
) {
    let graceful = GracefulShutdown::new();
    let connections = Connections::new(limits.max_connections);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's floor for its read buffer is 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    () = stop.cancelled() => break,
                }
            }
        };
        let Some(admitted) = connections.admit() else {
            // Every open connection is a client's: this one waits its turn
            // on the client's side.
            tracing::debug!(%peer, "connection refused: at the cap of {}", connections.max());
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = MarkBusy {
            inner: TowerToHyperService::new(router.clone()),
            busy: admitted.busy_marker(),
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let shed = admitted.shed();
        tokio::spawn(async move {
            let _admitted = admitted;
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(%peer, "connection ended: {e}");
                },
                // Dropping the connection closes the socket.
                () = shed.cancelled() => tracing::debug!(%peer, "connection shed: no request yet"),
            }
        });
    }
    drop(listener);
    drop(connections);

    drain.start();
    let in_flight = drain.in_flight();
    if in_flight > 0 {
        tracing::info!("waiting for {in_flight} call(s) in flight");
    }
    // Polling `closed` tells each connection to finish its current response
    // and close; long-lived SSE streams stay open until `sessions` is cancelled.
    let closed = graceful.shutdown();
    tokio::pin!(closed);
    tokio::select! {
        () = &mut closed => {
            sessions.cancel();
            return;
        }
        drained = tokio::time::timeout(limits.shutdown_grace, drain.idle()) => {
            if drained.is_err() {
                tracing::warn!(
                    "{} call(s) still running after {} s; ending them",
                    drain.in_flight(),
                    limits.shutdown_grace.as_secs()
                );
            }
        }
    }
    sessions.cancel();
    if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
        tracing::warn!("some connections did not close in time; dropping them");
    }
}

/// The router, taking its connection off the shedding list once a whole
/// request head has arrived.
struct MarkBusy {
    inner: TowerToHyperService<Router>,
    busy: BusyMarker,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for MarkBusy {
    type Response = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Error;
    type Future = <TowerToHyperService<Router> as hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
    >>::Future;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        self.busy.mark();
        self.inner.call(request)
    }
}
