//! One cap on open MCP sessions, shared by Streamable HTTP (`/mcp`) and legacy
//! SSE (`/sse`), so abandoned or hostile clients cannot pile sessions up.
//!
//! A session holds a [`SessionSlot`] for exactly as long as it lives: legacy
//! sessions keep it in their task, Streamable HTTP sessions in their rmcp
//! transport (see [`CappedSessionManager`]), so the count is exact however a
//! session ends (DELETE, idle expiry, disconnect, shutdown).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use rmcp::{
    RoleServer,
    model::{ClientJsonRpcMessage, ClientNotification, ServerJsonRpcMessage},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::{
        Transport,
        streamable_http_server::{
            SessionId, SessionManager,
            session::{
                ServerSseMessage,
                local::{LocalSessionManager, LocalSessionManagerError},
            },
        },
    },
};

use super::{
    middleware::error_response,
    owners::{OwnerGuard, SessionOwners},
    request_ids::{OpenSession, RequestIds},
};

/// Counts open sessions against a maximum.
#[derive(Debug, Clone)]
pub struct SessionSlots(Arc<Slots>);

#[derive(Debug)]
struct Slots {
    active: AtomicUsize,
    max: usize,
}

impl SessionSlots {
    /// Allows at most `max` sessions at a time.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Slots {
            active: AtomicUsize::new(0),
            max,
        }))
    }

    /// Takes a slot, or `None` when all are in use.
    pub fn try_acquire(&self) -> Option<SessionSlot> {
        self.0
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.0.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.0.clone()))
    }

    /// How many sessions are open now.
    pub fn active(&self) -> usize {
        self.0.active.load(Ordering::Acquire)
    }

    /// The maximum.
    pub fn max(&self) -> usize {
        self.0.max
    }

    /// True when a new session would be refused.
    pub fn is_full(&self) -> bool {
        self.active() >= self.0.max
    }

    /// The answer to a client whose new session does not fit: 503, retry later.
    pub fn refusal(&self) -> Response {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            format!(
                "the server already has {} open MCP sessions, its limit; close unused ones or retry later",
                self.0.max
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        response
    }
}

/// One open session's place under the cap; released when dropped.
#[derive(Debug)]
pub struct SessionSlot(Arc<Slots>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why [`CappedSessionManager`] could not do something.
#[derive(Debug, thiserror::Error)]
pub enum CappedError {
    /// Every slot is taken.
    #[error("too many open MCP sessions")]
    Full,
    /// Stream resumption (`Last-Event-ID`) is off: with a shared bearer
    /// token, anyone who learned a session id could take over its answers.
    #[error("stream resumption is not supported")]
    NoResumption,
    /// rmcp's session manager failed. Its message names the session id,
    /// which is a credential, so only the kind of failure is shown.
    #[error("the session manager failed: {}", local_failure(.0))]
    Local(#[from] LocalSessionManagerError),
}

/// The kind of a [`LocalSessionManagerError`], without the session id that
/// its own message quotes (rmcp logs these at error level).
fn local_failure(error: &LocalSessionManagerError) -> &'static str {
    match error {
        LocalSessionManagerError::SessionNotFound(_) => "no such session",
        _ => "internal error",
    }
}

/// rmcp's in-memory session manager, with each session's transport holding a
/// [`SessionSlot`]. rmcp drops the transport when the session's worker ends,
/// which is the one place every way of ending a session passes through.
#[derive(Debug)]
pub struct CappedSessionManager {
    inner: LocalSessionManager,
    slots: SessionSlots,
    ids: RequestIds,
    init_timeout: Duration,
    owners: SessionOwners,
}

impl CappedSessionManager {
    /// Wraps `inner`, counting its sessions in `slots`,
    /// tracking their request ids in `ids`, and closing those that have not
    /// sent `notifications/initialized` within `init_timeout`.
    pub fn new(
        inner: LocalSessionManager,
        slots: SessionSlots,
        ids: RequestIds,
        init_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            slots,
            ids,
            init_timeout,
            owners: SessionOwners::default(),
        }
    }

    /// Records each new session's principal in `owners`.
    pub fn with_owners(mut self, owners: SessionOwners) -> Self {
        self.owners = owners;
        self
    }
}

/// A session transport that keeps its session's slot and owner record, and
/// drops answers to cancelled requests (see [`super::request_ids`]).
pub struct Slotted<T> {
    inner: T,
    _slot: SessionSlot,
    _owner: OwnerGuard,
    requests: OpenSession,
    /// Until `notifications/initialized` arrives: when the session ends.
    init_deadline: Option<(Instant, Duration)>,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Slotted<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            ServerJsonRpcMessage::Response(response) => Some(&response.id),
            ServerJsonRpcMessage::Error(error) => error.id.as_ref(),
            _ => None,
        };
        if answered.is_some_and(|id| !self.requests.requests().answer(id)) {
            // The cancel removed this answer's route: rmcp would hand it
            // to whatever stream is open on the session.
            return futures_util::future::Either::Left(std::future::ready(Ok(())));
        }
        futures_util::future::Either::Right(self.inner.send(item))
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        let Some((deadline, timeout)) = self.init_deadline else {
            return self.inner.receive().await;
        };
        // rmcp serves a session that never completes its handshake until it
        // has been idle for long; end the input (and so the session) instead.
        let Ok(message) = tokio::time::timeout_at(deadline, self.inner.receive()).await else {
            tracing::info!(
                "Streamable HTTP session closed: no `initialized` within {} s",
                timeout.as_secs()
            );
            return None;
        };
        if let Some(ClientJsonRpcMessage::Notification(n)) = &message
            && matches!(
                n.notification,
                ClientNotification::InitializedNotification(_)
            )
        {
            self.init_deadline = None;
        }
        message
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

impl SessionManager for CappedSessionManager {
    type Error = CappedError;
    type Transport = Slotted<<LocalSessionManager as SessionManager>::Transport>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        // The HTTP layer answers 503 before we get here when the cap is hit;
        // this catches the race of several initializes for the last slot.
        let slot = self.slots.try_acquire().ok_or(CappedError::Full)?;
        let (id, inner) = self.inner.create_session().await?;
        let requests = self.ids.open(id.clone());
        let owner = self.owners.claim(&id);
        Ok((
            id,
            Slotted {
                inner,
                _slot: slot,
                requests,
                init_deadline: Some((Instant::now() + self.init_timeout, self.init_timeout)),
                _owner: owner,
            },
        ))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        _id: &SessionId,
        _last_event_id: String,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        // rmcp hands a resumed stream's remaining answers to the new
        // connection and ends the old one: with a shared bearer token that
        // is a takeover of someone else's call. rmcp answers this refusal
        // with an empty stream, so a resuming client stops cleanly.
        Err::<futures_util::stream::Empty<ServerSseMessage>, _>(CappedError::NoResumption)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_released_when_dropped() {
        let slots = SessionSlots::new(2);
        let a = slots.try_acquire().expect("first slot");
        let _b = slots.try_acquire().expect("second slot");
        assert!(slots.is_full());
        assert!(slots.try_acquire().is_none());
        drop(a);
        assert_eq!(slots.active(), 1);
        assert!(slots.try_acquire().is_some());
    }
}
