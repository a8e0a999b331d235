//! The floor: the fake BigID called directly with a keep-alive HTTP client,
//! the same requests the server makes upstream, at the same concurrency.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Url, header};

use crate::{load, stats::Samples};

/// The two BigID endpoints the tools call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /sessions` (what `create_session` calls).
    Sessions,
    /// `GET /refresh-access-token` (what `refresh_access_token` calls).
    Refresh,
}

/// A keep-alive client pointed at the fake.
#[derive(Clone)]
pub struct Floor {
    http: reqwest::Client,
    sessions: Url,
    refresh: Url,
}

/// A keep-alive loopback HTTP client like the one the server uses upstream.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")
}

impl Floor {
    /// A client for the fake at `base` (`…/api/v1`).
    pub fn new(base: &Url) -> anyhow::Result<Self> {
        Ok(Self {
            http: http_client()?,
            sessions: Url::parse(&format!("{base}/sessions"))?,
            refresh: Url::parse(&format!("{base}/refresh-access-token"))?,
        })
    }

    /// One request, its body read to the end.
    pub async fn call(&self, endpoint: Endpoint, user_token: &str) -> anyhow::Result<()> {
        let request = match endpoint {
            Endpoint::Sessions => self
                .http
                .post(self.sessions.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::CONTENT_TYPE, "application/json")
                .body(r#"{"username":"demo","password":"demo"}"#),
            Endpoint::Refresh => self
                .http
                .get(self.refresh.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::AUTHORIZATION, user_token),
        };
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() || body.is_empty() {
            bail!("the fake answered HTTP {status}");
        }
        Ok(())
    }

    /// `warmup` untimed calls, then `calls` timed ones, one at a time.
    pub async fn sequential(
        &self,
        endpoint: Endpoint,
        warmup: usize,
        calls: usize,
    ) -> anyhow::Result<Samples> {
        for _ in 0..warmup {
            self.call(endpoint, "demo-user-token").await?;
        }
        load::sequential(calls, || self.call(endpoint, "demo-user-token")).await
    }

    /// `concurrency` workers refreshing their own user token in a loop:
    /// untimed for `warmup`, then timed for `duration`.
    pub async fn concurrent(
        &self,
        concurrency: usize,
        warmup: Duration,
        duration: Duration,
    ) -> anyhow::Result<Samples> {
        let timed_from = Instant::now() + warmup;
        let deadline = timed_from + duration;
        let mut samples = load::run_workers(concurrency, |i| {
            let floor = self.clone();
            async move {
                let token = worker_token(i);
                load::until(timed_from, load::cap_for(warmup), || {
                    floor.call(Endpoint::Refresh, &token)
                })
                .await?;
                load::until(deadline, load::cap_for(duration), || {
                    floor.call(Endpoint::Refresh, &token)
                })
                .await
            }
        })
        .await?;
        samples.wall = timed_from.elapsed();
        Ok(samples)
    }
}

/// The user token of load worker `i` (the fake accepts `demo-user-token-NAME`).
pub fn worker_token(i: usize) -> String {
    format!("demo-user-token-w{i}")
}
