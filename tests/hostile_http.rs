//! Hostile input over HTTP: the legacy `POST /message`
//! fed arbitrary bodies and query strings by proptest, and every refusal the
//! HTTP layer can give fed secrets in every place a request has. Nothing
//! panics, every answer is one of the documented statuses with a JSON reason
//! that never quotes a secret, and the server keeps serving.
//!
//! `BIGID_MCP_SOAK=N` multiplies the number of cases by N.

mod common;

use std::time::Duration;

use bigid_auth_mcp::{
    bigid,
    config::{Defaults, HttpConfig},
    demo::FakeBigId,
    secret::Secret,
    server::BigIdServer,
    transport::http::{self, Limits},
};
use common::{
    http::{HttpServer, Legacy, MCP_TOKEN, QUICK, http_client, streamable},
    *,
};
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::timeout};

/// Marks what the tests treat as secret.
const MARK: &str = "SECRET";

fn marked_string() -> impl Strategy<Value = String> {
    "SECRET[A-Za-z0-9 ,`\"%&=?]{0,16}"
}

/// JSON whose strings all carry [`MARK`] (keys never do: argument names
/// are echoed by design).
fn marked_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        marked_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Something shaped like a JSON-RPC message, right or wrong.
fn message() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        (0_i64..1000).prop_map(Value::from),
        "[a-z0-9-]{1,8}".prop_map(Value::String),
        Just(Value::Null),
    ];
    let method = prop_oneof![
        prop::sample::select(vec![
            "ping",
            "tools/list",
            "tools/call",
            "notifications/cancelled",
            "notifications/progress",
            "resources/list",
            "logging/setLevel",
            "completion/complete",
        ])
        .prop_map(str::to_owned),
        "[a-z/]{1,16}",
    ];
    let arguments = prop::collection::btree_map(
        prop::sample::select(vec![
            "username",
            "password",
            "user_token",
            "include_permissions",
            "force_refresh",
            "other",
        ]),
        marked_json(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let tool = prop::sample::select(vec!["create_session", "refresh_access_token", "nope"]);
    prop_oneof![
        3 => (id.clone(), tool, arguments).prop_map(|(id, tool, arguments)| json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}})),
        2 => (id.clone(), method.clone(), marked_json()).prop_map(|(id, method, params)| json!({
            "jsonrpc": "2.0", "id": id, "method": method, "params": params})),
        1 => (method, marked_json()).prop_map(|(method, params)| json!({
            "jsonrpc": "2.0", "method": method, "params": params})),
        // Answers and errors, as if to a server request; a batch.
        1 => (id.clone(), marked_json()).prop_map(|(id, result)| json!({
            "jsonrpc": "2.0", "id": id, "result": result})),
        1 => prop::collection::vec(marked_json(), 0..3).prop_map(Value::Array),
        1 => marked_json(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => message().prop_map(|m| m.to_string().into_bytes()),
        1 => any::<Vec<u8>>(),
        // Cut short.
        1 => (message(), any::<prop::sample::Index>()).prop_map(|(m, cut)| {
            let bytes = m.to_string().into_bytes();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
    ]
}

/// The query string: the session's, someone else's, garbage, or several.
fn query(session: String) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(format!("sessionId={session}")),
        1 => Just(String::new()),
        1 => "[a-zA-Z0-9%=&?._-]{0,40}",
        1 => marked_string().prop_map(|s| format!("sessionId={}", urlencode(&s))),
        1 => Just(format!("sessionId=nope&sessionId={session}")),
        1 => Just(format!("sessionId={session}&sessionId=nope")),
        1 => Just(format!("sessionId={session}%00")),
        1 => any::<String>().prop_map(|s| format!("sessionId={}", urlencode(&s))),
    ]
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The legacy `POST /message`, proptested: whatever the body and query,
/// the answer is 202, 400 or 404 (a JSON reason without any secret or
/// control character), the session's event stream never carries a secret
/// either, and the server keeps serving.
#[test]
fn legacy_message_bodies_and_queries_never_panic_echo_or_break_the_server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (fake, running, base, legacy) = runtime.block_on(async {
        let fake = FakeBigId::start().await?;
        let mut config = bigid_config(fake.url());
        config.timeout = Duration::from_secs(2);
        let server = BigIdServer::new(
            bigid::Client::new(fake.url(), &config)?,
            Defaults::default(),
            true,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_config = HttpConfig {
            bind: listener.local_addr()?,
            auth_token: Some(Secret::new(MCP_TOKEN)),
            allowed_origins: Vec::new(),
            stateless: false,
            oauth: None,
        };
        let running = http::start(listener, server, &http_config, Limits::default())?;
        let base = format!("http://{}", running.local_addr());
        let legacy = Legacy::connect(&base).await?;
        anyhow::Ok((fake, running, base, legacy))
    })?;
    let session = legacy
        .endpoint
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_owned();
    // Drain the session's event stream as it goes, keeping what it said.
    let (events_tx, mut events) = mpsc::unbounded_channel::<String>();
    let reader = runtime.spawn(async move {
        let mut legacy = legacy;
        while let Ok(Some((_, data))) = legacy.next_event().await {
            if events_tx.send(data).is_err() {
                break;
            }
        }
    });
    let http = runtime.block_on(async { http_client() });

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256 * soak(),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    });
    let cases = (query(session.clone()), body());
    let outcome = runner.run(&cases, |(query, body)| {
        runtime.block_on(async {
            let url = format!("{base}/message?{query}");
            let response = timeout(
                QUICK,
                http.post(&url)
                    .bearer_auth(MCP_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(),
            )
            .await
            .map_err(|_| TestCaseError::fail("no answer within 5 s"))?
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert!([202, 400, 404].contains(&status), "status {status}: {text}");
            prop_assert!(!text.contains(MARK), "echoed a secret: {text}");
            prop_assert!(!text.chars().any(char::is_control), "{text:?}");
            if status != 202 {
                let reason: Value = serde_json::from_str(&text)
                    .map_err(|_| TestCaseError::fail(format!("not JSON: {text}")))?;
                prop_assert!(reason["jsonrpc"] == "2.0", "{reason}");
                prop_assert!(
                    reason["error"]["code"].is_i64()
                        && reason["error"]["message"].is_string()
                        && reason["error"]["data"]["error"].is_string(),
                    "{reason}"
                );
            }
            Ok(())
        })
    });
    runtime.block_on(async {
        // Still serving: health, a new session, a call on it.
        let health = http.get(format!("{base}/healthz")).send().await?;
        assert_eq!(health.status(), 200);
        let client = streamable(&base).await?;
        timeout(QUICK, client.list_all_tools()).await??;
        timeout(QUICK, client.cancel()).await??;
        anyhow::Ok(())
    })?;
    outcome.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut said = 0;
    while let Ok(data) = events.try_recv() {
        assert!(
            !data.contains(MARK),
            "the event stream echoed a secret: {data:.500}"
        );
        said += 1;
    }
    assert!(said > 0, "the session answered something");
    reader.abort();
    drop((running, fake));
    runtime.shutdown_background();
    Ok(())
}

/// Every refusal of the HTTP layer, with secrets in the bearer token, the
/// query, the path, the headers and the body: no answer and no line of the
/// trace log quotes one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_and_the_log_never_echo_a_secret() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let http = http_client();
    let secret = "SECRET-in-a-request-3f9a";
    let big = format!(
        r#"{{"password":"{secret}","pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let legacy = Legacy::connect(&server.base).await?;
    let message = server.url(&legacy.endpoint);
    let requests = vec![
        // A wrong bearer token that is itself a secret, and a near miss of the real one.
        http.post(server.url("/mcp")).bearer_auth(secret),
        http.get(server.url("/sse"))
            .bearer_auth(format!("{MCP_TOKEN}x")),
        http.post(server.url("/mcp"))
            .header("authorization", format!("Basic {secret}")),
        // Foreign Origin and Host (named in the answer on purpose: they are
        // what the operator has to allow, and no place for a secret).
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("origin", "http://evil.example"),
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("host", "evil.example"),
        // Unknown paths and sessions, with the secret in the query (the
        // access log names paths, never queries).
        http.get(server.url(&format!("/unknown?token={secret}"))),
        http.get(server.url(&format!("/mcp?access_token={secret}"))),
        http.post(server.url(&format!("/message?sessionId={secret}")))
            .bearer_auth(MCP_TOKEN)
            .body("{}"),
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("mcp-session-id", secret)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string()),
        // Bodies that are not JSON-RPC, with the secret inside.
        http.post(&message)
            .bearer_auth(MCP_TOKEN)
            .body(format!("{{\"password\": \"{secret}\"")),
        http.post(&message)
            .bearer_auth(MCP_TOKEN)
            .body(json!({"jsonrpc": "2.0", "id": secret}).to_string()),
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "create_session", "arguments": {"password": secret}}})
                .to_string(),
            ),
        // The two oversized bodies come last (see below).
        http.post(&message).bearer_auth(MCP_TOKEN).body(big.clone()),
        http.post(server.url("/mcp"))
            .bearer_auth(MCP_TOKEN)
            .header("content-type", "application/json")
            .body(big),
    ];
    let mut statuses = Vec::new();
    let count = requests.len();
    for (i, request) in requests.into_iter().enumerate() {
        let response = match timeout(QUICK, request.send()).await? {
            Ok(response) => response,
            // The last two send 2 MiB: the server may answer 413 and close
            // before the client has sent it all, which the client sees as a
            // broken connection. Refused either way, and nothing echoed.
            Err(e) if i + 2 >= count && (e.is_request() || e.is_body()) => {
                statuses.push(413);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        statuses.push(response.status().as_u16());
        let text = response.text().await?;
        assert!(
            !text.contains(secret),
            "an answer echoed the secret: {text:.500}"
        );
    }
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "refusals: {statuses:?}"
    );
    drop(legacy);
    server.terminate()?;
    let (status, stderr) = server.wait().await?;
    assert!(status.success());
    for s in [secret, MCP_TOKEN] {
        if let Some(at) = stderr.find(s) {
            let line_start = stderr[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = stderr[at..].find('\n').map_or(stderr.len(), |i| at + i);
            panic!(
                "a secret in the log: {:.1000}",
                &stderr[line_start..line_end]
            );
        }
    }
    eprintln!("refusals: {statuses:?}");
    Ok(())
}
