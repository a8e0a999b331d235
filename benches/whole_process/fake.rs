//! The fake BigID on a thread of its own, standing in for "another machine":
//! neither the load generator nor the server under test shares its runtime.

use std::{sync::Arc, thread::JoinHandle};

use anyhow::Context;
use bigid_auth_mcp::demo::FakeBigId;
use reqwest::Url;
use tokio::sync::oneshot;

/// A running fake; stops when dropped.
pub struct Fake {
    fake: Arc<FakeBigId>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Starts the fake on 127.0.0.1 with `threads` runtime workers (1: a
    /// current-thread runtime, the cheapest per request).
    pub fn start(threads: usize) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-bigid".into())
            .spawn(move || {
                let runtime = match threads {
                    0 | 1 => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build(),
                    n => tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(n)
                        .enable_all()
                        .build(),
                };
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match FakeBigId::start().await {
                        Ok(fake) => {
                            let _ = ready_tx.send(Ok(Arc::new(fake)));
                            let _ = stop_rx.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("cannot start the fake BigID thread")?;
        let fake = ready_rx
            .recv()
            .context("the fake BigID thread ended early")?
            .context("cannot start the fake BigID")?;
        Ok(Self {
            fake,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The API base, `http://127.0.0.1:PORT/api/v1`.
    pub fn url(&self) -> &Url {
        self.fake.url()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.fake.connections()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
