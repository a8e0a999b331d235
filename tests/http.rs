//! End-to-end tests of `--transport http` over real loopback sockets: rmcp's
//! Streamable HTTP client, a hand-written legacy SSE client, the security
//! rules, limits, a load run, and the real binary's start-up and shutdown.
//!
//! Every wait is bounded by [`WAIT`] (or a shorter explicit timeout).

mod common;

use common::{
    WAIT, binary,
    http::{HttpServer, Legacy, http_client, streamable_with},
    snapshot_settings,
};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bigid_auth_mcp::{
    bigid,
    config::{AuthScheme, BigIdConfig, Defaults, HttpConfig, RefreshMethod},
    demo::{FakeBigId, Fault},
    secret::Secret,
    server::BigIdServer,
    transport::http::{self, Limits, Running},
};
use rmcp::{
    ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        ProtocolVersion,
    },
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::timeout,
};

/// The bearer token of the tests that turn auth on.
const TOKEN: &str = "mcp-test-token-5f1c0d9e";
/// An Origin the tests add to the allow-list.
const ALLOWED_ORIGIN: &str = "https://app.example.com";

// ---------------------------------------------------------------- harness

/// A fake BigID and an in-process HTTP server in front of it.
struct Harness {
    fake: FakeBigId,
    running: Running,
    base: String,
}

#[derive(Default)]
struct Options {
    token: bool,
    stateless: bool,
    limits: Option<Limits>,
}

impl Harness {
    async fn start(options: Options) -> anyhow::Result<Self> {
        let fake = FakeBigId::start().await?;
        let bigid = BigIdConfig {
            url: Some(fake.url().clone()),
            ca_cert: None,
            timeout: Duration::from_secs(10),
            refresh_method: RefreshMethod::Get,
            auth_scheme: AuthScheme::Raw,
            token_cache: true,
        };
        let client = bigid::Client::new(fake.url(), &bigid)?;
        let defaults = Defaults {
            username: Some("demo".into()),
            password: Some(Secret::new("demo")),
            user_token: Some(Secret::new("demo-user-token")),
        };
        let server = BigIdServer::new(client, defaults, true);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let config = HttpConfig {
            bind: listener.local_addr()?,
            auth_token: options.token.then(|| Secret::new(TOKEN)),
            allowed_origins: vec![ALLOWED_ORIGIN.into()],
            stateless: options.stateless,
            oauth: None,
        };
        let running = http::start(
            listener,
            server,
            &config,
            options.limits.unwrap_or_default(),
        )?;
        let base = format!("http://{}", running.local_addr());
        Ok(Self {
            fake,
            running,
            base,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits (bounded) until the server counts `n` open sessions.
    async fn wait_for_sessions(&self, n: usize) -> anyhow::Result<()> {
        wait_until(|| self.running.active_sessions() == n)
            .await
            .with_context(|| {
                format!(
                    "expected {n} open sessions, server has {}",
                    self.running.active_sessions()
                )
            })
    }
}

/// Polls a condition every 10 ms for at most [`WAIT`].
async fn wait_until(mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        ensure!(
            Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn call(tool: &'static str, arguments: Value) -> CallToolRequestParams {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    CallToolRequestParams::new(tool).with_arguments(arguments)
}

/// A successful result's structured content.
fn structured(result: &CallToolResult) -> anyhow::Result<&Value> {
    ensure!(
        result.is_error != Some(true),
        "tool failed: {:?}",
        result.content
    );
    result
        .structured_content
        .as_ref()
        .context("no structuredContent")
}

/// JSON-RPC over a raw POST to /mcp; returns the response and its body text.
async fn post_mcp(
    base: &str,
    session: Option<&str>,
    message: &Value,
) -> anyhow::Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String)> {
    let mut request = http_client()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await?;
    let status = response.status();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

fn initialize_message(version: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "raw-http-test", "version": "0"}
        }
    })
}

/// Status, the headers that matter and the JSON body, for snapshots.
async fn http_shape(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let mut shape = json!({ "status": status, "body": body });
    for name in ["content-type", "www-authenticate", "retry-after"] {
        if let Some(value) = headers.get(name) {
            shape[name] = Value::String(value.to_str()?.to_owned());
        }
    }
    Ok(shape)
}

// --------------------------------------------------- Streamable HTTP (/mcp)

#[tokio::test]
async fn streamable_http_client_initializes_lists_and_calls_both_tools_on_one_session()
-> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let client = streamable_with(&h.base, None).await?;
    let info = client.peer_info().context("no server info")?;
    let server = info.server_info.as_ref().context("no serverInfo")?;
    assert_eq!(server.name, "bigid-auth-mcp");
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_06_18);
    h.wait_for_sessions(1).await?;

    let tools = timeout(WAIT, client.list_all_tools()).await??;
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["create_session", "refresh_access_token"]);

    let session = timeout(WAIT, client.call_tool(call("create_session", json!({})))).await??;
    assert_eq!(structured(&session)?["username"], "demo");
    let alice = timeout(
        WAIT,
        client.call_tool(call(
            "create_session",
            json!({"username": "alice", "password": "alice-password"}),
        )),
    )
    .await??;
    assert_eq!(structured(&alice)?["username"], "alice");
    let token = timeout(
        WAIT,
        client.call_tool(call("refresh_access_token", json!({}))),
    )
    .await??;
    assert!(structured(&token)?["systemToken"].is_string());
    let again = timeout(
        WAIT,
        client.call_tool(call("refresh_access_token", json!({}))),
    )
    .await??;
    assert_eq!(structured(&again)?["cached"], true);

    // All of that went through the one session the handshake opened.
    assert_eq!(h.running.active_sessions(), 1);
    assert_eq!(h.fake.request_count(), 3);

    // rmcp's client ends its session with DELETE when cancelled.
    timeout(WAIT, client.cancel()).await??;
    h.wait_for_sessions(0).await?;
    Ok(())
}

#[tokio::test]
async fn streamable_http_client_on_the_newest_protocol_version_works() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let transport = StreamableHttpClientTransport::with_client(
        http_client(),
        StreamableHttpClientTransportConfig::with_uri(h.url("/mcp")),
    );
    // rmcp's default: the newest version it knows.
    let client = timeout(
        WAIT,
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("latest", "0"),
        )
        .serve(transport),
    )
    .await??;
    let result = timeout(WAIT, client.call_tool(call("create_session", json!({})))).await??;
    assert_eq!(structured(&result)?["username"], "demo");
    timeout(WAIT, client.cancel()).await??;
    Ok(())
}

#[tokio::test]
async fn delete_ends_a_streamable_http_session() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let (status, headers, body) =
        post_mcp(&h.base, None, &initialize_message("2025-06-18")).await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"protocolVersion\":\"2025-06-18\""),
        "{body}"
    );
    let session = headers
        .get("mcp-session-id")
        .context("no Mcp-Session-Id")?
        .to_str()?
        .to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = post_mcp(&h.base, Some(&session), &initialized).await?;
    assert_eq!(status, 202);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = post_mcp(&h.base, Some(&session), &list).await?;
    assert_eq!(status, 200);
    assert!(body.contains("refresh_access_token"), "{body}");
    assert_eq!(h.running.active_sessions(), 1);

    let deleted = http_client()
        .delete(h.url("/mcp"))
        .header("mcp-session-id", &session)
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    h.wait_for_sessions(0).await?;
    let (status, _, _) = post_mcp(&h.base, Some(&session), &list).await?;
    assert_eq!(status, 404, "a deleted session is gone");
    Ok(())
}

#[tokio::test]
async fn stateless_mode_answers_json_without_sessions() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        stateless: true,
        ..Options::default()
    })
    .await?;
    let (status, headers, body) =
        post_mcp(&h.base, None, &initialize_message("2025-06-18")).await?;
    assert_eq!(status, 200);
    assert!(headers.get("mcp-session-id").is_none());
    assert_eq!(headers["content-type"], "application/json");
    let reply: Value = serde_json::from_str(&body)?;
    assert_eq!(reply["result"]["serverInfo"]["name"], "bigid-auth-mcp");

    // Any request stands alone, as it would on another instance.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, body) = post_mcp(&h.base, None, &list).await?;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["result"]["tools"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let client = streamable_with(&h.base, None).await?;
    let result = timeout(
        WAIT,
        client.call_tool(call("refresh_access_token", json!({"force_refresh": true}))),
    )
    .await??;
    assert!(structured(&result)?["systemToken"].is_string());
    let stream = http_client()
        .get(h.url("/mcp"))
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(
        stream.status(),
        405,
        "no server-side streams without sessions"
    );
    assert_eq!(h.running.active_sessions(), 0);
    let _ = timeout(WAIT, client.cancel()).await?;
    Ok(())
}

// ------------------------------------------------------------- legacy SSE

#[tokio::test]
async fn legacy_sse_client_initializes_lists_and_calls_tools() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let mut client = Legacy::open(&h.base, None).await?;
    let init = client.initialize().await?;
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(init["result"]["serverInfo"]["name"], "bigid-auth-mcp");
    h.wait_for_sessions(1).await?;

    let list = client.request("tools/list", json!({})).await?;
    let tools = list["result"]["tools"].as_array().context("tools")?;
    assert_eq!(tools.len(), 2);

    let session = client
        .call_tool(
            "create_session",
            json!({"username": "bob", "password": "bob-password"}),
        )
        .await?;
    assert_eq!(session["structuredContent"]["username"], "bob");
    let system = client
        .call_tool(
            "refresh_access_token",
            json!({"user_token": "demo-user-token-bob"}),
        )
        .await?;
    assert!(system["structuredContent"]["systemToken"].is_string());

    // A tool error is a result, and the session carries on.
    let unknown = client
        .request(
            "tools/call",
            json!({"name": "no_such_tool", "arguments": {}}),
        )
        .await?;
    assert_eq!(unknown["error"]["code"], -32602);
    let ping = client.request("ping", json!({})).await?;
    assert_eq!(ping["result"], json!({}));
    Ok(())
}

#[tokio::test]
async fn legacy_sse_rejects_unknown_sessions_and_malformed_bodies() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let _guard = snapshot_settings().bind_to_scope();
    let http = http_client();

    let unknown = http
        .post(h.url("/message?sessionId=0123456789abcdef0123456789abcdef"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await?;
    insta::assert_json_snapshot!("http_404_unknown_sse_session", http_shape(unknown).await?);

    let missing = http
        .post(h.url("/message"))
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await?;
    assert_eq!(missing.status(), 400);

    let mut client = Legacy::open(&h.base, None).await?;
    client.initialize().await?;
    // A secret in a malformed body must not be echoed back.
    let malformed = client
        .post_raw(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"password":"hunter2"#.into(),
        )
        .await?;
    let shape = http_shape(malformed).await?;
    assert!(!shape.to_string().contains("hunter2"));
    insta::assert_json_snapshot!("http_400_malformed_sse_message", shape);
    let not_rpc = client.post_raw(r#"{"hello":"world"}"#.into()).await?;
    assert_eq!(not_rpc.status(), 400);
    let batch = client
        .post_raw(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.into())
        .await?;
    assert_eq!(batch.status(), 400);

    // The session is unharmed.
    let ping = client.request("ping", json!({})).await?;
    assert_eq!(ping["result"], json!({}));
    Ok(())
}

#[tokio::test]
async fn legacy_sse_session_is_dropped_when_the_client_disconnects() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let mut client = Legacy::open(&h.base, None).await?;
    client.initialize().await?;
    h.wait_for_sessions(1).await?;
    let url = client.message_url();
    let http = http_client();
    drop(client);

    h.wait_for_sessions(0).await?;
    let after = http
        .post(url)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
        .send()
        .await?;
    assert_eq!(after.status(), 404);
    Ok(())
}

#[tokio::test]
async fn legacy_sse_streams_send_keep_alive_comments() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        limits: Some(Limits {
            sse_keep_alive: Duration::from_millis(50),
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await?;
    let mut client = Legacy::open(&h.base, None).await?;
    client.initialize().await?;
    // Keep-alives arrive between events; a ping's answer follows them.
    let deadline = Instant::now() + WAIT;
    while client.comments() < 2 {
        ensure!(Instant::now() < deadline, "no keep-alive comments");
        client.request("ping", json!({})).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    Ok(())
}

#[tokio::test]
async fn sessions_that_never_initialize_or_go_idle_are_closed() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        limits: Some(Limits {
            init_timeout: Duration::from_millis(300),
            session_idle: Duration::from_millis(500),
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await?;
    // Legacy, no initialize: the server ends the stream.
    let mut silent = Legacy::open(&h.base, None).await?;
    assert!(silent.next_event().await?.is_none(), "stream should end");

    // Legacy, initialized then idle: ended too.
    let mut idle = Legacy::open(&h.base, None).await?;
    idle.initialize().await?;
    assert!(idle.next_event().await?.is_none(), "stream should end");

    // Streamable HTTP, initialized then idle: the session expires.
    let (_, headers, _) = post_mcp(&h.base, None, &initialize_message("2025-06-18")).await?;
    let session = headers["mcp-session-id"].to_str()?.to_owned();
    h.wait_for_sessions(0).await?;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, _) = post_mcp(&h.base, Some(&session), &list).await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn session_cap_answers_503_for_either_transport() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        limits: Some(Limits {
            max_sessions: 2,
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await?;
    let _guard = snapshot_settings().bind_to_scope();
    let legacy = Legacy::open(&h.base, None).await?;
    let mcp = streamable_with(&h.base, None).await?;
    h.wait_for_sessions(2).await?;

    let refused = http_client().get(h.url("/sse")).send().await?;
    insta::assert_json_snapshot!("http_503_too_many_sessions", http_shape(refused).await?);
    let (status, _, _) = post_mcp(&h.base, None, &initialize_message("2025-06-18")).await?;
    assert_eq!(status, 503);

    // Existing sessions keep working, and a freed slot is reusable.
    let result = timeout(WAIT, mcp.call_tool(call("create_session", json!({})))).await??;
    structured(&result)?;
    drop(legacy);
    h.wait_for_sessions(1).await?;
    let mut again = Legacy::open(&h.base, None).await?;
    again.initialize().await?;
    timeout(WAIT, mcp.cancel()).await??;
    Ok(())
}

// ---------------------------------------------------------------- security

#[tokio::test]
async fn bearer_token_is_required_on_every_mcp_route_but_not_healthz() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        token: true,
        ..Options::default()
    })
    .await?;
    let _guard = snapshot_settings().bind_to_scope();
    let http = http_client();
    let requests = |auth: Option<&str>| {
        let with = |r: reqwest::RequestBuilder| match auth {
            Some(value) => r.header("authorization", value),
            None => r,
        };
        [
            with(
                http.post(h.url("/mcp"))
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .body(initialize_message("2025-06-18").to_string()),
            ),
            with(http.get(h.url("/sse"))),
            with(http.post(h.url("/message?sessionId=x")).body("{}")),
        ]
    };

    for request in requests(None) {
        let response = request.send().await?;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"bigid-auth-mcp\""
        );
    }
    for wrong in [
        format!("Bearer {TOKEN}x"),
        "Bearer ".into(),
        format!("Basic {TOKEN}"),
        TOKEN.into(),
    ] {
        for request in requests(Some(&wrong)) {
            let response = request.send().await?;
            assert_eq!(response.status(), 401, "{wrong}");
        }
    }
    let missing = http.get(h.url("/sse")).send().await?;
    insta::assert_json_snapshot!("http_401_missing_token", http_shape(missing).await?);
    let wrong = http
        .get(h.url("/sse"))
        .bearer_auth("not-the-token")
        .send()
        .await?;
    let shape = http_shape(wrong).await?;
    assert!(!shape.to_string().contains(TOKEN));
    insta::assert_json_snapshot!("http_401_wrong_token", shape);

    // The right token opens both transports.
    let client = streamable_with(&h.base, Some(TOKEN)).await?;
    let result = timeout(WAIT, client.call_tool(call("create_session", json!({})))).await??;
    structured(&result)?;
    let mut legacy = Legacy::open(&h.base, Some(TOKEN)).await?;
    legacy.initialize().await?;
    legacy.call_tool("create_session", json!({})).await?;
    // The scheme is case-insensitive (RFC 7235).
    let lower = http
        .post(legacy.message_url())
        .header("authorization", format!("bearer {TOKEN}"))
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await?;
    assert_eq!(lower.status(), 202);

    let health = http.get(h.url("/healthz")).send().await?;
    let mut shape = http_shape(health).await?;
    assert_eq!(shape["body"]["version"], env!("CARGO_PKG_VERSION"));
    shape["body"]["version"] = json!("[version]");
    insta::assert_json_snapshot!("http_200_healthz", shape);
    timeout(WAIT, client.cancel()).await??;
    Ok(())
}

#[tokio::test]
async fn origin_must_be_loopback_or_allow_listed() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let _guard = snapshot_settings().bind_to_scope();
    let http = http_client();
    for origin in [
        "http://evil.example",
        "null",
        "http://app.example.com",
        "https://localhost.evil.example",
    ] {
        for request in [
            http.post(h.url("/mcp"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(initialize_message("2025-06-18").to_string()),
            http.get(h.url("/sse")),
            http.post(h.url("/message?sessionId=x")).body("{}"),
        ] {
            let response = request.header("origin", origin).send().await?;
            assert_eq!(response.status(), 403, "{origin}");
        }
    }
    let evil = http
        .get(h.url("/sse"))
        .header("origin", "http://evil.example")
        .send()
        .await?;
    insta::assert_json_snapshot!("http_403_foreign_origin", http_shape(evil).await?);

    for origin in [
        ALLOWED_ORIGIN,
        "http://localhost:6274",
        "http://127.0.0.1:3000",
    ] {
        let response = http
            .post(h.url("/mcp"))
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize_message("2025-06-18").to_string())
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{origin}");
    }
    Ok(())
}

#[tokio::test]
async fn host_must_be_loopback_when_bound_to_loopback() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let _guard = snapshot_settings().bind_to_scope();
    let http = http_client();
    for path in ["/mcp", "/sse", "/message?sessionId=x"] {
        let response = http
            .get(h.url(path))
            .header("host", "rebound.evil.example:8000")
            .send()
            .await?;
        assert_eq!(response.status(), 403, "{path}");
    }
    let evil = http
        .get(h.url("/sse"))
        .header("host", "rebound.evil.example")
        .send()
        .await?;
    insta::assert_json_snapshot!("http_403_foreign_host", http_shape(evil).await?);
    let port = h.running.local_addr().port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".into(),
    ] {
        let response = http
            .post(h.url("/mcp"))
            .header("host", &host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(initialize_message("2025-06-18").to_string())
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{host}");
    }
    Ok(())
}

#[tokio::test]
async fn bodies_over_one_mebibyte_get_413() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let _guard = snapshot_settings().bind_to_scope();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let response = http_client()
        .post(h.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(big.clone())
        .send()
        .await?;
    // The rest of the body is unread: the connection must not be pooled.
    assert_eq!(
        response
            .headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    insta::assert_json_snapshot!("http_413_body_too_large", http_shape(response).await?);

    // Without Content-Length (chunked), the limit holds while reading.
    let mut client = Legacy::open(&h.base, None).await?;
    client.initialize().await?;
    let status = raw_chunked_post(h.running.local_addr(), &client.endpoint, big.as_bytes()).await?;
    assert_eq!(status, 413);
    // Just under the limit is fine.
    let fits = format!(
        r#"{{"jsonrpc":"2.0","id":99,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat((1 << 20) - 100)
    );
    let ok = client.post_raw(fits).await?;
    assert_eq!(ok.status(), 202);
    assert_eq!(client.answer(99).await?["result"], json!({}));
    Ok(())
}

/// POSTs `body` with `Transfer-Encoding: chunked` over a raw socket; returns the status.
async fn raw_chunked_post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &[u8],
) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut status = None;
    for chunk in body.chunks(64 * 1024) {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer 413 and stop reading before the end.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    if let Some(code) = text.split_whitespace().nth(1) {
        status = code.parse().ok();
    }
    status.with_context(|| format!("no status line in {text:?}"))
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() -> anyhow::Result<()> {
    let h = Harness::start(Options {
        limits: Some(Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await?;
    let mut stream = TcpStream::connect(h.running.local_addr()).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await?;
    // Never finish the headers: the server must close the connection.
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
    Ok(())
}

#[tokio::test]
async fn shutdown_waits_for_legacy_sse_calls_then_closes_their_streams() -> anyhow::Result<()> {
    let h = Harness::start(Options::default()).await?;
    let mut legacy = Legacy::open(&h.base, None).await?;
    legacy.initialize().await?;
    // A second, idle stream: shutdown must close it without waiting for it.
    let mut idle = Legacy::open(&h.base, None).await?;
    idle.initialize().await?;
    h.fake.set_fault(Fault::Slow(Duration::from_millis(800)));
    let call = tokio::spawn(async move {
        let result = legacy.call_tool("create_session", json!({})).await?;
        let end = legacy.next_event().await?;
        ensure!(end.is_none(), "stream still open: {end:?}");
        Ok::<_, anyhow::Error>(result)
    });
    wait_until(|| h.fake.request_count() == 1).await?;
    assert_eq!(h.running.in_flight(), 1);

    let started = Instant::now();
    timeout(WAIT, h.running.shutdown()).await?;
    let result = timeout(WAIT, call).await???;
    assert_eq!(result["structuredContent"]["username"], "demo");
    assert!(idle.next_event().await?.is_none(), "idle stream closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

// -------------------------------------------------------------------- load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions_make_many_calls_without_a_failure() -> anyhow::Result<()> {
    // BIGID_MCP_LOAD_SCALE=4 makes it 200 sessions × 80 calls, and so on.
    let scale: usize = std::env::var("BIGID_MCP_LOAD_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (sessions, calls, legacy_sessions) = (50 * scale, 20 * scale, 10 * scale);
    let h = Harness::start(Options {
        token: true,
        limits: Some(Limits {
            max_sessions: sessions + legacy_sessions,
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await?;
    let started = Instant::now();
    let mut tasks: Vec<JoinHandle<anyhow::Result<usize>>> = Vec::new();
    for i in 0..sessions {
        let base = h.base.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("load{i}");
            let client = streamable_with(&base, Some(TOKEN)).await?;
            for n in 0..calls {
                let result = if n % 2 == 0 {
                    let password = format!("{user}-password");
                    client
                        .call_tool(call(
                            "create_session",
                            json!({"username": user, "password": password}),
                        ))
                        .await?
                } else {
                    let token = format!("demo-user-token-{user}");
                    client
                        .call_tool(call(
                            "refresh_access_token",
                            json!({"user_token": token, "force_refresh": n % 4 == 1}),
                        ))
                        .await?
                };
                let content = structured(&result)?;
                if n % 2 == 0 {
                    ensure!(content["username"] == json!(user), "wrong user: {content}");
                }
            }
            client.cancel().await?;
            Ok(calls)
        }));
    }
    for i in 0..legacy_sessions {
        let base = h.base.clone();
        tasks.push(tokio::spawn(async move {
            let user = format!("legacy{i}");
            let mut client = Legacy::open(&base, Some(TOKEN)).await?;
            client.initialize().await?;
            for _ in 0..calls {
                let result = client
                    .call_tool(
                        "create_session",
                        json!({"username": user, "password": format!("{user}-password")}),
                    )
                    .await?;
                ensure!(result["structuredContent"]["username"] == json!(user));
            }
            Ok(calls)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += timeout(Duration::from_secs(120), task).await???;
    }
    assert_eq!(done, (sessions + legacy_sessions) * calls);
    eprintln!(
        "{done} calls over {} sessions in {:?}",
        sessions + legacy_sessions,
        started.elapsed()
    );
    h.wait_for_sessions(0).await?;
    Ok(())
}

// ------------------------------------------------------- the real binary

#[tokio::test]
async fn binary_refuses_a_public_bind_without_a_token() -> anyhow::Result<()> {
    let output = timeout(
        WAIT,
        binary(
            &["--demo", "--transport", "http", "--bind", "0.0.0.0:0"],
            &[],
        )
        .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without MCP_AUTH_TOKEN"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_calls_in_flight_finish_then_exits_zero() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let password = "carol-password";
    let user_token = "demo-user-token-carol";
    let server = HttpServer::spawn(
        &[
            "--bigid-url",
            fake.url().as_str(),
            "--transport",
            "http",
            "--bind",
            "127.0.0.1:0",
        ],
        &[
            ("MCP_AUTH_TOKEN", TOKEN),
            ("BIGID_USERNAME", "carol"),
            ("BIGID_PASSWORD", password),
            ("BIGID_USER_TOKEN", user_token),
            ("RUST_LOG", "trace"),
        ],
    )
    .await?;
    let base = server.base.clone();
    let mcp = streamable_with(&base, Some(TOKEN)).await?;
    let mut legacy = Legacy::open(&base, Some(TOKEN)).await?;
    legacy.initialize().await?;

    // Every BigID call now takes a while, so these are in flight at SIGTERM.
    fake.set_fault(Fault::Slow(Duration::from_millis(1500)));
    let mcp = std::sync::Arc::new(mcp);
    let mut calls = Vec::new();
    // Secrets travel both ways: from the environment and in arguments.
    let in_flight = [
        ("create_session", json!({})),
        (
            "refresh_access_token",
            json!({"user_token": user_token, "force_refresh": true}),
        ),
        (
            "create_session",
            json!({"username": "carol", "password": password}),
        ),
    ];
    for (tool, arguments) in in_flight {
        let mcp = mcp.clone();
        calls.push(tokio::spawn(async move {
            let result = mcp.call_tool(call(tool, arguments)).await?;
            Ok::<_, anyhow::Error>(structured(&result)?.clone())
        }));
    }
    let legacy_call = tokio::spawn(async move {
        let result = legacy.call_tool("create_session", json!({})).await?;
        // After the answer, shutdown ends the stream.
        let end = legacy.next_event().await?;
        ensure!(end.is_none(), "stream still open: {end:?}");
        Ok::<_, anyhow::Error>(result["structuredContent"].clone())
    });
    wait_until(|| fake.request_count() >= 4).await?;

    server.terminate()?;

    let mut returned = Vec::new();
    for task in calls {
        returned.push(timeout(WAIT, task).await???);
    }
    returned.push(timeout(WAIT, legacy_call).await???);
    assert_eq!(returned.len(), 4);
    let (status, stderr) = server.wait().await?;
    assert!(status.success(), "exit status {status}");
    assert!(stderr.contains("signal received"), "{stderr}");
    assert!(
        stderr.contains("bigid_auth_mcp::access"),
        "no access log:\n{stderr}"
    );

    // No secret anywhere in the log, even at trace level.
    let mut secrets = vec![TOKEN.to_owned(), password.to_owned(), user_token.to_owned()];
    for value in &returned {
        for key in ["auth_token", "systemToken"] {
            if let Some(token) = value[key].as_str() {
                secrets.push(token.to_owned());
            }
        }
    }
    assert!(secrets.len() >= 7, "{returned:?}");
    for secret in &secrets {
        assert!(
            !stderr.contains(secret.as_str()),
            "secret in the log:\n{stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_password_sent_before_initialize_is_not_logged() -> anyhow::Result<()> {
    let secret = "pw-before-initialize-7c2e";
    let server = HttpServer::spawn(
        &["--demo", "--transport", "http", "--bind", "127.0.0.1:0"],
        &[("RUST_LOG", "trace")],
    )
    .await?;
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "create_session", "arguments": {"username": "demo", "password": secret}}
    });
    // Legacy SSE: a call before initialize gets an error that does not echo it;
    let mut legacy = Legacy::open(&server.base, None).await?;
    let posted = legacy.post_raw(call.to_string()).await?;
    assert_eq!(posted.status(), 202);
    let answer = legacy.answer(1).await?;
    assert!(answer["error"].is_object(), "{answer}");
    assert!(!answer.to_string().contains(secret), "{answer}");
    // a notification before initialize makes rmcp give up on the session,
    // with an error that quotes the whole message.
    let notification = json!({
        "jsonrpc": "2.0", "method": "notifications/credentials", "params": {"password": secret}
    });
    let posted = legacy.post_raw(notification.to_string()).await?;
    assert_eq!(posted.status(), 202);
    let next = legacy.next_event().await?;
    assert!(next.is_none(), "stream should end: {next:?}");
    // Streamable HTTP: a call without a session is refused.
    let (status, _, body) = post_mcp(&server.base, None, &call).await?;
    assert!(status.is_client_error(), "{status}");
    assert!(!body.contains(secret), "{body}");

    server.terminate()?;
    let (status, stderr) = server.wait().await?;
    assert!(status.success(), "exit status {status}");
    assert!(!stderr.contains(secret), "secret in the log:\n{stderr}");
    Ok(())
}
