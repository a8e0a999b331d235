//! Which principal opened each Streamable HTTP session, so that its id,
//! presented by anyone else, is answered as if the session did not exist.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
};

use super::middleware::error_response;
use crate::principal::Principal;

tokio::task_local! {
    /// The principal of the request being served; rmcp creates a session
    /// inside that request's future, where the session manager reads it.
    static OPENING: Principal;
}

/// Session id → the principal that opened it.
#[derive(Debug, Clone, Default)]
pub struct SessionOwners(Arc<Mutex<HashMap<String, Principal>>>);

impl SessionOwners {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Principal>> {
        // A plain map stays usable after a panic elsewhere.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the current request's principal as the owner of `id`; the
    /// record lasts as long as the returned guard (the session's transport).
    pub fn claim(&self, id: &str) -> OwnerGuard {
        let principal = OPENING
            .try_with(Principal::clone)
            .unwrap_or_else(|_| Principal::local());
        self.map().insert(id.to_owned(), principal);
        OwnerGuard {
            owners: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Who opened `id`, while it is open.
    pub fn owner(&self, id: &str) -> Option<Principal> {
        self.map().get(id).cloned()
    }
}

/// Keeps a session's owner on record; dropped with the session.
#[derive(Debug)]
pub struct OwnerGuard {
    owners: SessionOwners,
    id: String,
}

impl Drop for OwnerGuard {
    fn drop(&mut self) {
        self.owners.map().remove(&self.id);
    }
}

/// 404 for a `Mcp-Session-Id` that another principal opened; otherwise
/// serves the request with its principal available to the session manager.
pub async fn bind_to_owner(
    State(owners): State<SessionOwners>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::local);
    let foreign = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|id| owners.owner(id))
        .is_some_and(|owner| owner != principal);
    if foreign {
        tracing::warn!(%principal, "refused a session id opened by another principal");
        return unknown_session();
    }
    OPENING.scope(principal, next.run(request)).await
}

/// The answer for a session id that does not exist for this caller.
pub fn unknown_session() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "unknown_session",
        "no open session has this id for this caller; it may have ended. Start a new one",
    )
}
