//! Hostile clients against the HTTP transport, through the real binary:
//! refusals that echo nothing and all share one JSON-RPC error shape, session
//! ids that never reach the log, requests that cannot take over another
//! connection's answer, and legacy SSE bookkeeping that cancellation frees.
//!
//! `BIGID_MCP_SOAK=N` multiplies the sizes by N.

mod common;

use bigid_auth_mcp::demo::FakeBigId;
use common::http::{HttpServer, MCP_TOKEN, QUICK, http_client};
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
