//! Hostile clients against the HTTP transport, through the real binary:
//! refusals that echo nothing and all share one JSON-RPC error shape, session
//! ids that never reach the log, requests that cannot take over another
//! connection's answer, and legacy SSE bookkeeping that cancellation frees.
//!
//! `BIGID_MCP_SOAK=N` multiplies the sizes by N.

mod common;

use std::time::Duration;

use anyhow::Context;
use bigid_auth_mcp::demo::{FakeBigId, Fault};
use common::{
    WAIT,
    http::{HttpServer, MCP_TOKEN, QUICK, http_client, jwt_sub, tool_call},
};
use serde_json::{Value, json};
use tokio::time::timeout;

/// Marks client input that must never come back or reach the log.
const MARK: &str = "ECHO-MARK-7d1f";

/// The JSON-RPC error body of a refusal; asserts its shape.
async fn jsonrpc_refusal(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await?;
    assert!(
        !text.contains(MARK),
        "{status} echoed client input: {text:.300}"
    );
    assert!(
        content_type.starts_with("application/json"),
        "{status}: {content_type}: {text:.300}"
    );
    let body: Value = serde_json::from_str(&text)?;
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["data"]["error"].is_string(), "{body}");
    Ok((status, body))
}

fn initialize(id: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "0"}}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_refusals_on_mcp_are_jsonrpc_errors_that_echo_nothing() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let http = http_client();
    let post = || {
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("accept", "application/json, text/event-stream")
    };
    let ping = json!({"jsonrpc": "2.0", "id": "ping-1", "method": "ping"}).to_string();

    // Wrong Content-Type.
    let (status, body) = jsonrpc_refusal(
        post()
            .header("content-type", format!("text/{MARK}"))
            .body(initialize(json!(7)))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, &body["id"]), (415, &json!(7)), "{body}");
    assert_eq!(body["error"]["data"]["error"], "unsupported_media_type");

    // A session id nobody issued.
    let (status, body) = jsonrpc_refusal(
        post()
            .header("content-type", "application/json")
            .header("mcp-session-id", MARK)
            .body(ping.clone())
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, &body["id"]), (404, &json!("ping-1")), "{body}");

    // A real session, then an unsupported protocol version on it.
    let opened = post()
        .header("content-type", "application/json")
        .body(initialize(json!(1)))
        .send()
        .await?;
    assert_eq!(opened.status(), 200);
    let session = opened
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a session id");
    let (status, body) = jsonrpc_refusal(
        post()
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", MARK)
            .body(ping.clone())
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["data"]["error"],
        "unsupported_protocol_version"
    );

    // A body that is not JSON, with the mark inside.
    let (status, body) = jsonrpc_refusal(
        post()
            .header("content-type", "application/json")
            .header("mcp-session-id", &session)
            .body(format!("{{\"password\": \"{MARK}\""))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((status, &body["id"]), (400, &Value::Null), "{body}");

    // GET without accepting an event stream.
    let (status, _) = jsonrpc_refusal(
        http.get(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("mcp-session-id", &session)
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 406);

    server.terminate()?;
    let (exit, stderr) = server.wait().await?;
    assert!(exit.success(), "{stderr}");
    assert!(!stderr.contains(MARK), "client input in the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_and_host_are_cut_short_in_the_log_and_never_echoed() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let http = http_client();
    // Unauthenticated, like the attacker it stands for.
    let long = format!("http://{MARK}{}.example", "o".repeat(30_000));
    let host = format!("{MARK}{}.example", "h".repeat(30_000));
    for request in [
        http.get(server.url("/sse")).header("origin", &long),
        http.get(server.url("/sse")).header("host", &host),
    ] {
        let response = timeout(QUICK, request.send()).await??;
        let (status, _) = jsonrpc_refusal(response).await?;
        assert_eq!(status, 403);
    }
    server.terminate()?;
    let (exit, stderr) = server.wait().await?;
    assert!(exit.success(), "{stderr}");
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 1_000, "a log line of {longest} bytes");
    assert!(stderr.contains(MARK), "the refusal is logged, cut short");
    Ok(())
}

/// How long the slow BigID takes to answer: long enough that the attacker's
/// requests land while the victim's call is in flight.
const SLOW: Duration = Duration::from_secs(2);

/// A raw Streamable HTTP session, as an attacker or a victim drives it.
#[derive(Clone)]
struct RawSession {
    http: reqwest::Client,
    url: String,
    id: String,
}

impl RawSession {
    async fn open(server: &HttpServer) -> anyhow::Result<Self> {
        Self::open_at(server.url("/mcp"), true).await
    }

    /// Initializes; sends `notifications/initialized` only when `initialized`.
    async fn open_at(url: String, initialized: bool) -> anyhow::Result<Self> {
        let http = http_client();
        let opened = http
            .post(&url)
            .bearer_auth(MCP_TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(initialize(json!(0)))
            .send()
            .await?;
        anyhow::ensure!(opened.status() == 200, "initialize: {}", opened.status());
        let id = opened
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("no session id")?
            .to_owned();
        drop(opened);
        let session = Self { http, url, id };
        if !initialized {
            return Ok(session);
        }
        let initialized = session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        anyhow::ensure!(initialized.status() == 202, "{}", initialized.status());
        Ok(session)
    }

    async fn post(&self, message: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(&self.url)
            .bearer_auth(MCP_TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-06-18")
            .body(message.to_string())
            .send()
            .await?)
    }

    async fn delete(&self) -> anyhow::Result<u16> {
        let response = self
            .http
            .delete(&self.url)
            .bearer_auth(MCP_TOKEN)
            .header("mcp-session-id", &self.id)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

/// Every JSON-RPC message on an SSE response, until the stream ends.
async fn sse_messages(response: reqwest::Response) -> anyhow::Result<Vec<Value>> {
    let mut response = response;
    let mut text = String::new();
    while let Some(chunk) = timeout(WAIT, response.chunk()).await?? {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .collect())
}

/// Waits (bounded) until BigID has received `n` requests: the calls are in flight.
async fn bigid_received(fake: &FakeBigId, n: usize) -> anyhow::Result<()> {
    timeout(WAIT, async {
        while fake.request_count() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("BigID never saw the call")
}

fn victim_login(id: u64) -> Value {
    tool_call(
        id,
        "create_session",
        json!({"username": "victim", "password": "victim-password"}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_in_flight_is_refused_never_rerouted() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    fake.set_fault(Fault::Slow(SLOW));
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let victim = RawSession::open(&server).await?;
    // The attacker holds the shared token and has learned the session id.
    let attacker = RawSession {
        http: http_client(),
        url: victim.url.clone(),
        id: victim.id.clone(),
    };
    let asked = tokio::spawn({
        let victim = victim.clone();
        async move { sse_messages(victim.post(&victim_login(5)).await?).await }
    });
    bigid_received(&fake, 1).await?;
    let stolen = attacker
        .post(&tool_call(
            5,
            "create_session",
            json!({"username": "demo", "password": "demo"}),
        ))
        .await?;
    let (status, body) = jsonrpc_refusal(stolen).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["id"], 5);
    assert_eq!(body["error"]["data"]["error"], "duplicate_request_id");

    let answers = timeout(WAIT, asked).await???;
    let answer = answers
        .iter()
        .find(|m| m["id"] == 5)
        .with_context(|| format!("the victim got no answer: {answers:?}"))?;
    let token = answer["result"]["structuredContent"]["auth_token"]
        .as_str()
        .context("no token")?;
    assert_eq!(jwt_sub(token).as_deref(), Some("victim"));

    // Once answered, the id is free again, and a too-long id is refused.
    let again = sse_messages(
        victim
            .post(&tool_call(5, "refresh_access_token", json!({})))
            .await?,
    )
    .await?;
    assert!(again.iter().any(|m| m["id"] == 5), "{again:?}");
    let long_id = json!({"jsonrpc": "2.0", "id": "i".repeat(100_000), "method": "ping"});
    let (status, body) = jsonrpc_refusal(victim.post(&long_id).await?).await?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_id_cannot_be_reused_to_take_its_late_answer() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    fake.set_fault(Fault::Slow(SLOW));
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let victim = RawSession::open(&server).await?;
    let asked = tokio::spawn({
        let victim = victim.clone();
        async move { sse_messages(victim.post(&victim_login(9)).await?).await }
    });
    bigid_received(&fake, 1).await?;
    // The attacker cancels the victim's call and asks again under its id.
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": 9}});
    assert_eq!(victim.post(&cancel).await?.status(), 202);
    let (status, body) = jsonrpc_refusal(
        victim
            .post(&tool_call(9, "refresh_access_token", json!({})))
            .await?,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    let _ = timeout(WAIT, asked).await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_last_event_id_cannot_take_over_an_answer() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    fake.set_fault(Fault::Slow(SLOW));
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let victim = RawSession::open(&server).await?;
    let asked = tokio::spawn({
        let victim = victim.clone();
        async move { sse_messages(victim.post(&victim_login(3)).await?).await }
    });
    bigid_received(&fake, 1).await?;
    // Event ids are `<index>/<per-session stream number>`: try them all.
    let http = http_client();
    let mut taken = Vec::new();
    for stream in 0..4 {
        for index in 0..3 {
            let resumed = http
                .get(&victim.url)
                .bearer_auth(MCP_TOKEN)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &victim.id)
                .header("mcp-protocol-version", "2025-06-18")
                .header("last-event-id", format!("{index}/{stream}"))
                .send()
                .await?;
            taken.extend(sse_messages(resumed).await?);
        }
    }
    assert!(
        taken
            .iter()
            .all(|m| m.get("result").is_none() && m.get("error").is_none()),
        "an answer reached another connection: {taken:?}"
    );
    let answers = timeout(WAIT, asked).await???;
    let answer = answers.iter().find(|m| m["id"] == 3);
    assert!(answer.is_some(), "the victim lost its answer: {answers:?}");
    Ok(())
}

/// Session ids in every log format at the most verbose level, through a
/// session's whole life (open, call, cancel, delete, a stale reuse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_never_reach_the_log() -> anyhow::Result<()> {
    for format in ["text", "json"] {
        let fake = FakeBigId::start().await?;
        let server = HttpServer::start(fake.url().as_str(), &[], &[("LOG_FORMAT", format)]).await?;
        let session = RawSession::open(&server).await?;
        let answers = sse_messages(session.post(&victim_login(1)).await?).await?;
        assert!(answers.iter().any(|m| m["id"] == 1), "{answers:?}");
        let resumed = http_client()
            .get(&session.url)
            .bearer_auth(MCP_TOKEN)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.id)
            .header("last-event-id", "0/0")
            .send()
            .await?;
        let _ = sse_messages(resumed).await?;
        assert!([200, 204].contains(&session.delete().await?));
        // The deleted session, used again.
        let stale = session
            .post(&tool_call(2, "refresh_access_token", json!({})))
            .await?;
        assert_eq!(stale.status(), 404);
        let legacy = common::http::Legacy::connect(&server.base).await?;
        let legacy_id = legacy
            .endpoint
            .rsplit('=')
            .next()
            .unwrap_or_default()
            .to_owned();
        drop(legacy);
        server.terminate()?;
        let (exit, stderr) = server.wait().await?;
        assert!(exit.success(), "{stderr}");
        for id in [&session.id, &legacy_id] {
            assert!(!id.is_empty());
            if let Some(line) = stderr.lines().find(|l| l.contains(id.as_str())) {
                panic!("a session id in the {format} log: {line:.500}");
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_cancelled_calls_free_their_entries_and_shutdown_does_not_wait_for_them()
-> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    // Slower than the test: the calls are still running at shutdown.
    fake.set_fault(Fault::Slow(Duration::from_secs(30)));
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let legacy = common::http::Legacy::connect(&server.base).await?;
    let pairs = 50 * common::soak() as u64;
    for id in 1..=pairs {
        legacy
            .post(&tool_call(
                id,
                "refresh_access_token",
                json!({"force_refresh": true}),
            ))
            .await?;
        legacy
            .post(
                &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": id, "reason": "user gave up"}}),
            )
            .await?;
    }
    // An id as long as a body allows is refused, not remembered.
    let long = tool_call(0, "refresh_access_token", json!({}));
    let mut long = long;
    long["id"] = json!("i".repeat(300_000));
    let refused = legacy.post_raw(long.to_string()).await?;
    let (status, body) = jsonrpc_refusal(refused).await?;
    assert_eq!(status, 400, "{body}");

    server.terminate()?;
    // Shutdown waits up to its 10 s grace only for calls whose answer is due.
    let stopped = timeout(Duration::from_secs(5), server.wait())
        .await
        .context("shutdown waited for cancelled calls")??;
    let (exit, stderr) = stopped;
    assert!(exit.success(), "{stderr}");
    assert!(
        !stderr.contains("call(s) in flight"),
        "shutdown waited for cancelled calls: {stderr:.2000}"
    );
    drop(legacy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_never_sends_initialized_is_closed_after_the_init_timeout()
-> anyhow::Result<()> {
    use bigid_auth_mcp::{
        bigid,
        config::{Defaults, HttpConfig},
        secret::Secret,
        server::BigIdServer,
        transport::http::{self, Limits},
    };
    let fake = FakeBigId::start().await?;
    let client = bigid::Client::new(fake.url(), &common::bigid_config(fake.url()))?;
    let server = BigIdServer::new(client, Defaults::default(), true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = HttpConfig {
        bind: listener.local_addr()?,
        auth_token: Some(Secret::new(MCP_TOKEN)),
        allowed_origins: vec![],
        stateless: false,
        oauth: None,
    };
    let limits = Limits {
        init_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let running = http::start(listener, server, &config, limits)?;
    let url = format!("http://{}/mcp", running.local_addr());
    let complete = RawSession::open_at(url.clone(), true).await?;
    let half_open = RawSession::open_at(url, false).await?;
    assert_eq!(running.active_sessions(), 2);
    timeout(WAIT, async {
        while running.active_sessions() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the half-open session was never closed")?;
    let stale = half_open
        .post(&tool_call(1, "refresh_access_token", json!({})))
        .await?;
    assert_eq!(stale.status(), 404);
    let alive = sse_messages(
        complete
            .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            .await?,
    )
    .await?;
    assert!(alive.iter().any(|m| m["id"] == 1), "{alive:?}");
    running.shutdown().await;
    Ok(())
}
