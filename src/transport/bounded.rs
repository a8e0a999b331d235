//! A cap on how many requests of one MCP session may be unanswered at once.
//!
//! rmcp reads a session's messages as fast as they come and spawns a task
//! per request; each answer then waits in memory until the transport has
//! written it. A client that floods requests and never reads the answers
//! (stdout not drained, an SSE stream not read) would make that memory grow
//! without end. [`Bounded`] stops reading the session's input while
//! [`MAX_UNANSWERED`] requests are being handled or waiting to be written,
//! so the flood stays in the client's pipe or socket and the client is the
//! one that waits.

use std::{collections::HashMap, future::Future, sync::Arc};

use rmcp::{
    RoleServer,
    model::{ClientNotification, JsonRpcMessage, RequestId},
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Requests of one session that may be in flight (being handled, or answered
/// but not yet written) before its input is no longer read. Far above what
/// an agent sends concurrently; small enough that their answers (a few KB
/// each) stay within a few MB.
pub const MAX_UNANSWERED: usize = 128;

/// A server transport that reads no further input while [`MAX_UNANSWERED`]
/// requests are unanswered.
pub struct Bounded<T> {
    inner: T,
    slots: Arc<Semaphore>,
    unanswered: HashMap<RequestId, OwnedSemaphorePermit>,
}

impl<T> Bounded<T> {
    /// Wraps a transport with the default cap.
    pub fn new(inner: T) -> Self {
        Self::with_cap(inner, MAX_UNANSWERED)
    }

    /// Wraps a transport with a cap of `max_unanswered` (at least 1).
    pub fn with_cap(inner: T, max_unanswered: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max_unanswered.max(1))),
            unanswered: HashMap::new(),
        }
    }
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Bounded<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let answered = match &item {
            JsonRpcMessage::Response(response) => Some(&response.id),
            JsonRpcMessage::Error(error) => error.id.as_ref(),
            _ => None,
        };
        let slot = answered.and_then(|id| self.unanswered.remove(id));
        let send = self.inner.send(item);
        async move {
            let result = send.await;
            // The slot frees only once the answer has left the process.
            drop(slot);
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        // Cancel-safe: dropping this future while it waits gives the slot
        // back, and the inner receive is cancel-safe itself.
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let message = self.inner.receive().await?;
        match &message {
            JsonRpcMessage::Request(request) => {
                // A reused id replaces the older slot: the count can only err low.
                self.unanswered.insert(request.id.clone(), slot);
            }
            JsonRpcMessage::Notification(notification) => {
                // rmcp drops the answer of a cancelled request: free its slot now.
                if let ClientNotification::CancelledNotification(cancelled) =
                    &notification.notification
                    && let Some(id) = &cancelled.params.request_id
                {
                    self.unanswered.remove(id);
                }
            }
            _ => {}
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
