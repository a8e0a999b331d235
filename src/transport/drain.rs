//! Graceful shutdown bookkeeping: which MCP calls are still in flight, and
//! whether new ones are still welcome.
//!
//! Shutdown first refuses new work, then waits (bounded) until every call in
//! flight has sent its answer, and only then ends sessions and SSE streams,
//! so a call that was running when SIGTERM arrived still reaches its client.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use tokio::sync::Notify;

/// Shared between the HTTP layer, the legacy SSE sessions and the shutdown.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    in_flight: AtomicUsize,
    draining: AtomicBool,
    idle: Notify,
}

impl Drain {
    /// Marks one call as in flight until the returned guard is dropped.
    pub fn enter(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }

    /// From now on new requests are refused.
    pub fn start(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// How many calls are in flight.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no call is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a drop between check and await is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A call in flight; dropping it marks the call done.
#[derive(Debug)]
pub struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_call() {
        let drain = Drain::default();
        let call = drain.enter();
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(call);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("idle resolves after the last call")
            .expect("task");
        assert_eq!(drain.in_flight(), 0);
    }
}
