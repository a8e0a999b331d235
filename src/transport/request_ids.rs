//! One answer, one asker: the JSON-RPC ids in flight in each Streamable HTTP
//! session.
//!
//! rmcp routes an answer to the connection that most recently sent a request
//! with its id. A second POST reusing an id that is still in flight (anyone
//! holding the shared bearer token and the session id can send one) would
//! receive the first asker's answer. So a request id already in flight in its
//! session is refused, and an id whose request was cancelled stays reserved
//! until its handler can no longer answer: rmcp lets the handler run on and
//! would route a late answer to whoever reused the id, or to the session's
//! standalone GET stream once the cancel removed the route.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode},
    middleware::Next,
    response::Response,
};
use rmcp::{model::RequestId, transport::streamable_http_server::SessionId};

use super::middleware::error_response_for;

/// Requests in flight plus cancelled ones still held, per session. Above
/// what an agent sends at once, and small enough to bound memory.
pub const MAX_HELD_PER_SESSION: usize = 256;

/// Longest request id accepted, in bytes of its JSON form: ids are counters
/// or UUIDs; anything longer is memory and log space for an attacker.
pub const MAX_ID_BYTES: usize = 200;

/// How long a cancelled request's id stays reserved: past any BigID call's
/// timeout, after which its handler has ended.
const CANCELLED_HOLD: Duration = Duration::from_secs(5 * 60);

/// The ids of one session.
#[derive(Debug, Default)]
pub struct SessionRequests(Mutex<Held>);

#[derive(Debug, Default)]
struct Held {
    in_flight: HashMap<RequestId, ()>,
    cancelled: HashMap<RequestId, Instant>,
}

/// Why a request was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its id is in flight (or was cancelled and may still be answered).
    Duplicate,
    /// The session holds [`MAX_HELD_PER_SESSION`] ids already.
    Full,
}

impl SessionRequests {
    fn held(&self) -> MutexGuard<'_, Held> {
        // Plain maps: still consistent after a panic elsewhere.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `id` for a request about to be handed to the session.
    pub fn begin(&self, id: &RequestId) -> Result<(), Refused> {
        let mut held = self.held();
        held.cancelled.retain(|_, at| at.elapsed() < CANCELLED_HOLD);
        if held.in_flight.contains_key(id) || held.cancelled.contains_key(id) {
            return Err(Refused::Duplicate);
        }
        if held.in_flight.len() + held.cancelled.len() >= MAX_HELD_PER_SESSION {
            return Err(Refused::Full);
        }
        held.in_flight.insert(id.clone(), ());
        Ok(())
    }

    /// The request never reached the session (rmcp refused it).
    pub fn abandon(&self, id: &RequestId) {
        self.held().in_flight.remove(id);
    }

    /// The client cancelled `id`: no answer is due, but one may still come.
    pub fn cancel(&self, id: &RequestId) {
        let mut held = self.held();
        if held.in_flight.remove(id).is_some() {
            held.cancelled.insert(id.clone(), Instant::now());
        }
    }

    /// An answer to `id` is leaving the session: false when it answers a
    /// cancelled request and must be dropped, since its route is gone.
    pub fn answer(&self, id: &RequestId) -> bool {
        let mut held = self.held();
        if held.in_flight.remove(id).is_some() {
            return true;
        }
        held.cancelled.remove(id).is_none()
    }
}

/// The ids of every open session, shared by the HTTP layer and the sessions.
#[derive(Debug, Clone, Default)]
pub struct RequestIds(Arc<Mutex<HashMap<SessionId, Arc<SessionRequests>>>>);

impl RequestIds {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Arc<SessionRequests>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking a new session; it ends with the returned guard.
    pub fn open(&self, session: SessionId) -> OpenSession {
        let requests = Arc::new(SessionRequests::default());
        self.map().insert(session.clone(), requests.clone());
        OpenSession {
            ids: self.clone(),
            session,
            requests,
        }
    }

    fn get(&self, session: &str) -> Option<Arc<SessionRequests>> {
        self.map().get(session).cloned()
    }
}

/// A session's entry in [`RequestIds`], removed when dropped.
#[derive(Debug)]
pub struct OpenSession {
    ids: RequestIds,
    session: SessionId,
    requests: Arc<SessionRequests>,
}

impl OpenSession {
    /// The session's ids.
    pub fn requests(&self) -> &SessionRequests {
        &self.requests
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.ids.map().remove(&self.session);
    }
}

/// What a POST body to `/mcp` is, as far as ids go.
enum Posted {
    Request(RequestId),
    Cancel(RequestId),
    Other,
}

fn classify(body: &[u8]) -> Posted {
    #[derive(serde::Deserialize)]
    struct Message {
        id: Option<RequestId>,
        method: Option<String>,
        params: Option<CancelParams>,
    }
    #[derive(serde::Deserialize)]
    struct CancelParams {
        #[serde(rename = "requestId")]
        request_id: Option<RequestId>,
    }
    let Ok(message) = serde_json::from_slice::<Message>(body) else {
        return Posted::Other;
    };
    match (message.id, message.method.as_deref()) {
        (Some(id), Some(_)) => Posted::Request(id),
        (None, Some("notifications/cancelled")) => message
            .params
            .and_then(|p| p.request_id)
            .map_or(Posted::Other, Posted::Cancel),
        _ => Posted::Other,
    }
}

/// True when the JSON form of `id` is longer than [`MAX_ID_BYTES`].
pub fn id_too_long(id: &RequestId) -> bool {
    match id {
        rmcp::model::NumberOrString::String(s) => s.len() > MAX_ID_BYTES,
        rmcp::model::NumberOrString::Number(_) => false,
    }
}

/// For POSTs into a session: refuses a request whose id is in flight there
/// (or too long), and records cancellations, before rmcp routes anything.
pub async fn one_answer_per_id(
    State(ids): State<RequestIds>,
    request: Request,
    next: Next,
) -> Response {
    let session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| ids.get(s));
    let (Some(session), true) = (session, request.method() == Method::POST) else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    // Already buffered by the body limit layer: a copy, not a network read.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let posted = classify(&body);
    let request = Request::from_parts(parts, Body::from(body));
    match posted {
        Posted::Request(id) => {
            if id_too_long(&id) {
                return error_response_for(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_id",
                    format!("request ids are limited to {MAX_ID_BYTES} bytes"),
                    None,
                );
            }
            match session.begin(&id) {
                Ok(()) => {}
                Err(Refused::Duplicate) => {
                    return error_response_for(
                        StatusCode::BAD_REQUEST,
                        "duplicate_request_id",
                        "a request with this id is already in flight in this session; \
                         use a new id for each request",
                        Some(&id),
                    );
                }
                Err(Refused::Full) => {
                    return error_response_for(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too_many_requests",
                        format!(
                            "this session already has {MAX_HELD_PER_SESSION} requests in flight \
                             or recently cancelled; wait for answers or open a new session"
                        ),
                        Some(&id),
                    );
                }
            }
            let response = next.run(request).await;
            if !response.status().is_success() {
                session.abandon(&id);
            }
            response
        }
        Posted::Cancel(id) => {
            session.cancel(&id);
            next.run(request).await
        }
        Posted::Other => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> RequestId {
        rmcp::model::NumberOrString::Number(n)
    }

    #[test]
    fn an_id_in_flight_is_refused_until_answered() {
        let requests = SessionRequests::default();
        requests.begin(&id(1)).unwrap();
        assert_eq!(requests.begin(&id(1)), Err(Refused::Duplicate));
        assert!(requests.answer(&id(1)));
        requests.begin(&id(1)).unwrap();
    }

    #[test]
    fn a_cancelled_id_stays_reserved_and_its_late_answer_is_dropped() {
        let requests = SessionRequests::default();
        requests.begin(&id(1)).unwrap();
        requests.cancel(&id(1));
        assert_eq!(requests.begin(&id(1)), Err(Refused::Duplicate));
        assert!(!requests.answer(&id(1)), "a late answer is dropped");
        requests.begin(&id(1)).unwrap();
    }

    #[test]
    fn answers_to_ids_never_reserved_pass() {
        // initialize is answered without going through the reservation.
        assert!(SessionRequests::default().answer(&id(0)));
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_ids() {
        let requests = SessionRequests::default();
        for n in 0..MAX_HELD_PER_SESSION as i64 {
            requests.begin(&id(n)).unwrap();
        }
        assert_eq!(requests.begin(&id(-1)), Err(Refused::Full));
    }
}
