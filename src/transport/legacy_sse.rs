//! The HTTP+SSE transport of MCP 2024-11-05, for clients that predate
//! Streamable HTTP. rmcp no longer ships it, so it is built here on rmcp's
//! generic transport: each session is a pair of channels that rmcp serves
//! like any other `(Sink, Stream)`.
//!
//! `GET /sse` opens a session: the first event is `endpoint` with the URL to
//! post to, then every server message follows as a `message` event.
//! `POST /message?sessionId=…` hands one JSON-RPC message to the session and
//! answers `202 Accepted`; the reply arrives on the event stream.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures_util::{StreamExt, future, stream};
use rmcp::{
    ServerHandler, ServiceExt,
    model::{
        ClientJsonRpcMessage, ClientNotification, GetExtensions, RequestId, ServerJsonRpcMessage,
    },
    transport::sink_stream::SinkStreamTransport,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::principal::Principal;

use super::{
    bounded::Bounded,
    drain::{Drain, InFlight},
    middleware::error_response,
    request_ids::{MAX_ID_BYTES, id_too_long},
    sessions::{SessionSlot, SessionSlots},
};

/// Messages buffered per direction before a sender waits.
const CHANNEL_CAPACITY: usize = 64;
/// How long a POST waits for room in a busy session's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// Timings of legacy sessions.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Interval of keep-alive comments on the event stream.
    pub keep_alive: Duration,
    /// A session that has not sent `initialize` by then is closed.
    pub init_timeout: Duration,
    /// A session that has posted nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// One open session, as the POST handler sees it.
struct Session {
    to_server: mpsc::Sender<ClientJsonRpcMessage>,
    /// Who opened it; nobody else may post to it.
    owner: Principal,
    /// Requests whose answer has not yet been written to the event stream;
    /// each holds an [`InFlight`] so shutdown waits for it.
    pending: Mutex<HashMap<RequestId, InFlight>>,
}

/// What the session's server reads: the client's messages, until idle.
type ClientStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = ClientJsonRpcMessage> + Send>>;

type Sessions = Arc<Mutex<HashMap<String, Arc<Session>>>>;

/// What rmcp serves a session on: the two channels, with the cap on
/// unanswered requests.
type SessionTransport =
    Bounded<SinkStreamTransport<PollSender<ServerJsonRpcMessage>, ClientStream>>;

struct App<S> {
    sessions: Sessions,
    new_server: Arc<dyn Fn() -> S + Send + Sync>,
    slots: SessionSlots,
    drain: Drain,
    shutdown: CancellationToken,
    timings: Timings,
}

impl<S> Clone for App<S> {
    fn clone(&self) -> Self {
        Self {
            sessions: self.sessions.clone(),
            new_server: self.new_server.clone(),
            slots: self.slots.clone(),
            drain: self.drain.clone(),
            shutdown: self.shutdown.clone(),
            timings: self.timings,
        }
    }
}

/// The `/sse` and `/message` routes. `new_server` makes one handler per
/// session; cancelling `shutdown` ends every session and stream.
pub fn router<S: ServerHandler>(
    new_server: impl Fn() -> S + Send + Sync + 'static,
    slots: SessionSlots,
    drain: Drain,
    shutdown: CancellationToken,
    timings: Timings,
) -> Router {
    let app = App {
        sessions: Sessions::default(),
        new_server: Arc::new(new_server),
        slots,
        drain,
        shutdown,
        timings,
    };
    Router::new()
        .route("/sse", get(open_stream::<S>))
        .route("/message", post(post_message::<S>))
        .with_state(app)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain maps behind, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `GET /sse`: opens a session and streams its messages.
async fn open_stream<S: ServerHandler>(
    State(app): State<App<S>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let Some(slot) = app.slots.try_acquire() else {
        return app.slots.refusal();
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (to_server, from_client) = mpsc::channel::<ClientJsonRpcMessage>(CHANNEL_CAPACITY);
    let (to_client, from_server) = mpsc::channel::<ServerJsonRpcMessage>(CHANNEL_CAPACITY);
    let session = Arc::new(Session {
        to_server,
        owner: principal.map_or_else(Principal::local, |Extension(p)| p),
        pending: Mutex::default(),
    });
    lock(&app.sessions).insert(id.clone(), session.clone());

    // The input ends after `idle_timeout` without a message, which ends the
    // session: an abandoned client cannot keep it alive by keeping the socket.
    let input = tokio_stream::StreamExt::timeout(
        ReceiverStream::new(from_client),
        app.timings.idle_timeout,
    )
    .take_while(|item| future::ready(item.is_ok()))
    .filter_map(|item| future::ready(item.ok()));
    let input: ClientStream = Box::pin(input);
    // Bounded: a client that posts without reading its stream makes the
    // session stop taking messages (POSTs wait, then 503) rather than pile
    // up answers in memory.
    let transport = Bounded::new(SinkStreamTransport::new(PollSender::new(to_client), input));
    let session_ct = app.shutdown.child_token();
    tokio::spawn(run_session(
        (app.new_server)(),
        transport,
        session_ct.clone(),
        app.sessions.clone(),
        id.clone(),
        slot,
        app.timings,
    ));

    // Dropping the body (client gone) cancels the session.
    let on_disconnect = session_ct.drop_guard();
    let endpoint = Event::default()
        .event("endpoint")
        .data(format!("/message?sessionId={id}"));
    let messages = ReceiverStream::new(from_server).filter_map(move |message| {
        let _cancel_on_drop = &on_disconnect;
        if let Some(request) = answered_request(&message) {
            lock(&session.pending).remove(request);
        }
        future::ready(
            match Event::default().event("message").json_data(&message) {
                Ok(event) => Some(Ok::<_, Infallible>(event)),
                Err(e) => {
                    tracing::error!(error = %e, "dropped a server message that did not serialize");
                    None
                }
            },
        )
    });
    let events = stream::once(future::ready(Ok(endpoint)))
        .chain(messages)
        .take_until(app.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(app.timings.keep_alive))
        .into_response();
    // Tell nginx-style proxies not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Serves one session until it ends, then forgets it and frees its slot.
async fn run_session<S: ServerHandler>(
    server: S,
    transport: SessionTransport,
    ct: CancellationToken,
    sessions: Sessions,
    id: String,
    _slot: SessionSlot,
    timings: Timings,
) {
    let handshake = tokio::time::timeout(
        timings.init_timeout,
        server.serve_with_ct(transport, ct.clone()),
    );
    tokio::select! {
        served = handshake => match served {
            Ok(Ok(running)) => {
                let _ = running.waiting().await;
            }
            Ok(Err(e)) => tracing::info!(
                "legacy SSE session ended before initialize: {}",
                super::handshake_failure(&e)
            ),
            Err(_) => tracing::info!(
                "legacy SSE session closed: no initialize within {} s",
                timings.init_timeout.as_secs()
            ),
        },
        _ = ct.cancelled() => {}
    }
    // Ends the event stream too, if the client is still connected.
    ct.cancel();
    lock(&sessions).remove(&id);
}

/// The id of the request a response or error answers.
fn answered_request(message: &ServerJsonRpcMessage) -> Option<&RequestId> {
    match message {
        ServerJsonRpcMessage::Response(r) => Some(&r.id),
        ServerJsonRpcMessage::Error(e) => e.id.as_ref(),
        _ => None,
    }
}

/// `POST /message?sessionId=…`: hands one message to its session.
async fn post_message<S: ServerHandler>(
    State(app): State<App<S>>,
    RawQuery(query): RawQuery,
    principal: Option<Extension<Principal>>,
    body: Bytes,
) -> Response {
    let principal = principal.map_or_else(Principal::local, |Extension(p)| p);
    let session_id = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "sessionId")
            .map(|(_, v)| v.into_owned())
    });
    let Some(session_id) = session_id else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing the sessionId query parameter (use the URL of the `endpoint` event)",
        );
    };
    let Some(session) = lock(&app.sessions).get(&session_id).cloned() else {
        return unknown_session();
    };
    if session.owner != principal {
        tracing::warn!(%principal, "refused a legacy SSE session id opened by another principal");
        return unknown_session();
    }
    let mut message = match serde_json::from_slice::<ClientJsonRpcMessage>(&body) {
        Ok(message) => message,
        // serde's message can quote the offending value, which may be a
        // password: report only where the problem is.
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "parse_error",
                format!(
                    "the body is not a single JSON-RPC message (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    let request = match &mut message {
        ClientJsonRpcMessage::Request(r) => {
            // The handler names the caller in its log line.
            r.request.extensions_mut().insert(principal);
            Some(r.id.clone())
        }
        _ => None,
    };
    if let Some(id) = &request
        && id_too_long(id)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_id",
            format!("request ids are limited to {MAX_ID_BYTES} bytes"),
        );
    }
    // rmcp sends no answer to a cancelled request: stop waiting for one, or
    // the entry (and shutdown's wait for it) would outlive the session's use.
    if let ClientJsonRpcMessage::Notification(n) = &message
        && let ClientNotification::CancelledNotification(cancelled) = &n.notification
        && let Some(id) = &cancelled.params.request_id
    {
        lock(&session.pending).remove(id);
    }
    if let Some(id) = &request {
        lock(&session.pending).insert(id.clone(), app.drain.enter());
    }
    let sent = session.to_server.send_timeout(message, QUEUE_TIMEOUT).await;
    if sent.is_err()
        && let Some(id) = &request
    {
        lock(&session.pending).remove(id);
    }
    match sent {
        Ok(()) => (StatusCode::ACCEPTED, "Accepted").into_response(),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => unknown_session(),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "session_busy",
            "the session is not taking messages; retry later",
        ),
    }
}

fn unknown_session() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "unknown_session",
        "no open session has this sessionId; it may have ended. Open a new one with GET /sse",
    )
}
