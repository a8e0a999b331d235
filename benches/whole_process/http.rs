//! The server on `--transport http`, and a bare Streamable HTTP client: raw
//! JSON-RPC over reqwest, so the load generator costs as little as the
//! floor's client and what is measured is the server.

use std::{
    net::TcpListener,
    process::{Child, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use reqwest::{StatusCode, Url, header};

use crate::{
    floor::worker_token,
    load, process,
    stats::Samples,
    stdio::{PROTOCOL_VERSION, initialize_line_for, looks_successful},
};

/// A running server on `--transport http`; stopped (SIGTERM) when dropped.
pub struct HttpServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT/mcp`.
    pub mcp: Url,
}

impl HttpServer {
    /// Starts the server on a free loopback port against the fake at `bigid`
    /// and waits (bounded) until `/healthz` answers.
    pub async fn start(bigid: &Url, extra: &[&str]) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--transport",
            "http",
            "--bind",
            &bind,
            "--bigid-url",
            bigid.as_str(),
        ];
        args.extend_from_slice(extra);
        let child = process::command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the HTTP server")?;
        process::register(&child);
        let mut server = Self {
            child: Some(child),
            mcp: Url::parse(&format!("http://{bind}/mcp"))?,
        };
        let health = Url::parse(&format!("http://{bind}/healthz"))?;
        let probe = reqwest::Client::builder().no_proxy().build()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = probe.get(health.clone()).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                bail!("the HTTP server exited at start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("the HTTP server did not answer /healthz within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on our own unreaped child; asks for a graceful shutdown.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            process::reap(child, Duration::from_secs(5));
        }
    }
}

/// One MCP session over Streamable HTTP.
pub struct Session {
    http: reqwest::Client,
    mcp: Url,
    version: &'static str,
    id: Option<header::HeaderValue>,
    next_id: AtomicU64,
}

impl Session {
    /// `initialize` + `notifications/initialized`.
    pub async fn open(http: reqwest::Client, mcp: Url) -> anyhow::Result<Self> {
        Self::open_with(http, mcp, PROTOCOL_VERSION).await
    }

    /// The same, naming protocol `version`.
    pub async fn open_with(
        http: reqwest::Client,
        mcp: Url,
        version: &'static str,
    ) -> anyhow::Result<Self> {
        let mut session = Self {
            http,
            mcp,
            version,
            id: None,
            next_id: AtomicU64::new(1),
        };
        let response = session.post(initialize_line_for(version)).await?;
        session.id = response.headers().get("mcp-session-id").cloned();
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() || !body.contains("\"serverInfo\"") {
            bail!("initialize over HTTP failed: HTTP {status}: {body}");
        }
        let response = session
            .post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.into())
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            bail!(
                "notifications/initialized got HTTP {}",
                response.status().as_u16()
            );
        }
        Ok(session)
    }

    async fn post(&self, body: String) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(self.mcp.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", self.version)
            .body(body);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id.clone());
        }
        Ok(request.send().await?)
    }

    /// One `tools/call`; the answer (JSON or an SSE stream) is read to its end.
    pub async fn call(&self, tool: &str, arguments: &str) -> anyhow::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":\
             {{\"name\":\"{tool}\",\"arguments\":{arguments}}}}}"
        );
        let response = self.post(request).await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() || !looks_successful(&body) {
            bail!("{tool} over HTTP failed: HTTP {status}: {body}");
        }
        Ok(())
    }
}

/// `concurrency` sessions, each refreshing its own user token in a loop:
/// untimed for `warmup` (sessions open in it), then timed for `duration`.
/// Returns the samples and the server's CPU time over the timed window.
pub async fn load(
    server: &HttpServer,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(Samples, Duration)> {
    let http = crate::floor::http_client()?;
    let timed_from = Instant::now() + warmup;
    let deadline = timed_from + duration;
    let pid = server.pid();
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(timed_from.into()).await;
        process::cpu_time(pid)
    });
    let mut samples = load::run_workers(concurrency, |i| {
        let (http, mcp) = (http.clone(), server.mcp.clone());
        async move {
            let session = Session::open(http, mcp).await?;
            let arguments = format!("{{\"user_token\":\"{}\"}}", worker_token(i));
            load::until(timed_from, load::cap_for(warmup), || {
                session.call("refresh_access_token", &arguments)
            })
            .await?;
            load::until(deadline, load::cap_for(duration), || {
                session.call("refresh_access_token", &arguments)
            })
            .await
        }
    })
    .await?;
    samples.wall = timed_from.elapsed();
    let cpu = process::cpu_time(pid).saturating_sub(cpu_at_start.await?);
    Ok((samples, cpu))
}

/// The 2026-07-28 protocol version: no `initialize`, no session; every
/// request carries its own client context in `_meta`.
pub const STATELESS_VERSION: &str = "2026-07-28";

/// One 2026-07-28 `tools/call`, outside any session; the answer (JSON or an
/// SSE stream) is read to its end.
pub async fn stateless_call(
    http: &reqwest::Client,
    mcp: &Url,
    id: u64,
    tool: &str,
    arguments: &str,
) -> anyhow::Result<()> {
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":\
         {{\"name\":\"{tool}\",\"arguments\":{arguments},\"_meta\":{{\
         \"io.modelcontextprotocol/protocolVersion\":\"{STATELESS_VERSION}\",\
         \"io.modelcontextprotocol/clientCapabilities\":{{}},\
         \"io.modelcontextprotocol/clientInfo\":{{\"name\":\"bigid-auth-mcp-bench\",\"version\":\"0\"}}}}}}}}"
    );
    let response = http
        .post(mcp.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS_VERSION)
        // Routing headers the 2026-07-28 revision requires beside the body.
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(request)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() || !looks_successful(&body) {
        bail!("{tool} over stateless HTTP failed: HTTP {status}: {body}");
    }
    Ok(())
}
