//! One cap on open MCP sessions, shared by Streamable HTTP (`/mcp`) and legacy
//! SSE (`/sse`), so abandoned or hostile clients cannot pile sessions up.
//!
//! A session holds a [`SessionSlot`] for exactly as long as it lives: legacy
//! sessions keep it in their task, Streamable HTTP sessions in their rmcp
//! transport (see [`CappedSessionManager`]), so the count is exact however a
//! session ends (DELETE, idle expiry, disconnect, shutdown).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use rmcp::{
    RoleServer,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
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
    /// rmcp's session manager failed.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// rmcp's in-memory session manager, with each session's transport holding a
/// [`SessionSlot`]. rmcp drops the transport when the session's worker ends,
/// which is the one place every way of ending a session passes through.
#[derive(Debug)]
pub struct CappedSessionManager {
    inner: LocalSessionManager,
    slots: SessionSlots,
    owners: SessionOwners,
}

impl CappedSessionManager {
    /// Wraps `inner`, counting its sessions in `slots`.
    pub fn new(inner: LocalSessionManager, slots: SessionSlots) -> Self {
        Self {
            inner,
            slots,
            owners: SessionOwners::default(),
        }
    }

    /// Records each new session's principal in `owners`.
    pub fn with_owners(mut self, owners: SessionOwners) -> Self {
        self.owners = owners;
        self
    }
}

/// A session transport that keeps its session's slot and owner record.
pub struct Slotted<T> {
    inner: T,
    _slot: SessionSlot,
    _owner: OwnerGuard,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Slotted<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.inner.receive()
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
        let owner = self.owners.claim(&id);
        Ok((
            id,
            Slotted {
                inner,
                _slot: slot,
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
        id: &SessionId,
        last_event_id: String,
    ) -> Result<
        impl futures_util::Stream<Item = ServerSseMessage> + Send + Sync + 'static,
        Self::Error,
    > {
        Ok(self.inner.resume(id, last_event_id).await?)
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
