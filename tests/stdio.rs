//! End to end through the real binary over stdio, the way Claude Desktop or
//! an agent framework runs it.

mod common;

use std::{process::Stdio, time::Duration};

use bigid_auth_mcp::demo::{FakeBigId, Fault};
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test]
async fn demo_mode_serves_both_tools_and_says_how_to_connect() -> anyhow::Result<()> {
    let spawned = spawn_stdio(&["--demo"], &[]).await?;
    let tools = spawned.client.list_all_tools().await?;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["create_session", "refresh_access_token"]);
    assert!(
        tools
            .iter()
            .all(|t| t.output_schema.is_some() && t.annotations.is_some())
    );
    let session = structured(&call(&spawned.client, "create_session", json!({})).await?);
    assert_eq!(session["username"], "demo");
    let token = structured(&call(&spawned.client, "refresh_access_token", json!({})).await?);
    assert!(
        token["systemToken"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    let stderr = spawned.finish().await?;
    assert!(
        stderr.contains("ready on stdio against BigID http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("user `demo` / password `demo`"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn credentials_come_from_the_environment() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();
    let spawned = spawn_stdio(
        &[],
        &[
            ("BIGID_URL", url.as_str()),
            ("BIGID_USERNAME", "alice"),
            ("BIGID_PASSWORD", "alice-password"),
            ("BIGID_USER_TOKEN", "demo-user-token-alice"),
            ("BIGID_AUTH_SCHEME", "bearer"),
            ("BIGID_REFRESH_METHOD", "post"),
        ],
    )
    .await?;
    let session = structured(&call(&spawned.client, "create_session", json!({})).await?);
    assert_eq!(session["username"], "alice");
    structured(&call(&spawned.client, "refresh_access_token", json!({})).await?);
    let requests = fake.requests();
    let login: Value = serde_json::from_slice(&requests[0].body)?;
    assert_eq!(
        login,
        json!({"username": "alice", "password": "alice-password"})
    );
    assert_eq!(requests[1].method, "POST");
    assert_eq!(
        requests[1].authorization.as_deref(),
        Some("Bearer demo-user-token-alice")
    );
    spawned.finish().await?;
    Ok(())
}

#[tokio::test]
async fn rejections_faults_and_bad_arguments_leave_the_server_serving() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();
    let spawned = spawn_stdio(&["--bigid-url", &url, "--timeout", "1"], &[]).await?;
    let client = &spawned.client;

    let rejected = call(
        client,
        "create_session",
        json!({"username": "demo", "password": "nope"}),
    )
    .await?;
    assert!(error_text(&rejected).contains("rejected the username or password (HTTP 401)"));

    for (fault, expected) in [
        (Fault::Status(500), "answered HTTP 500"),
        (Fault::HtmlPage, "an HTML page"),
        (Fault::InvalidJson, "malformed or truncated JSON"),
        (
            Fault::Slow(Duration::from_secs(3)),
            "did not answer within 1 s",
        ),
        (Fault::Oversized(2 << 20), "larger than 1048576 bytes"),
        (
            Fault::LoginSuccessFalse,
            "rejected the username or password (HTTP 200)",
        ),
        (Fault::Truncated, "broke before a complete answer"),
    ] {
        fake.set_fault(fault);
        let result = call(
            client,
            "create_session",
            json!({"username": "demo", "password": "demo"}),
        )
        .await?;
        let message = error_text(&result);
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
        assert!(
            message.contains(&url) || expected.contains("rejected"),
            "names the URL: {message}"
        );
    }
    fake.set_fault(Fault::None);

    let bad = call(client, "create_session", json!({"username": ["demo"]})).await?;
    assert_eq!(
        error_text(&bad),
        "invalid argument `username`: expected a string"
    );
    let missing = call(client, "refresh_access_token", json!({})).await?;
    assert!(error_text(&missing).contains("BIGID_USER_TOKEN"));
    let unknown = call(client, "no_such_tool", json!({})).await;
    assert!(unknown.is_err(), "unknown tool is a JSON-RPC error");

    let ok = call(
        client,
        "create_session",
        json!({"username": "demo", "password": "demo"}),
    )
    .await?;
    structured(&ok);
    spawned.finish().await?;
    Ok(())
}

/// Raw JSON-RPC lines, to feed the server what no SDK client would send.
struct RawSession {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl RawSession {
    async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = binary(args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("stdout"))?;
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stdin.write_all(bytes).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next line on stdout, which must be a JSON-RPC message.
    async fn next(&mut self) -> anyhow::Result<Value> {
        next_message(&mut self.stdout).await
    }
}

#[tokio::test]
async fn malformed_input_lines_do_not_stop_the_server() -> anyhow::Result<()> {
    let mut raw = RawSession::start(&["--demo"]).await?;
    raw.send(br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}
{"jsonrpc":"2.0","method":"notifications/initialized"}
"#)
    .await?;
    assert_eq!(raw.next().await?["id"], 1);

    // Not JSON, invalid UTF-8, and JSON that is not a message.
    raw.send(b"{this is not json\n\xff\xfe\xfd\n{\"hello\":\"world\"}\n")
        .await?;
    let invalid = raw.next().await?;
    assert_eq!(invalid["error"]["code"], -32600, "{invalid}");

    raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"refresh_access_token\",\"arguments\":{}}}\n")
        .await?;
    let reply = raw.next().await?;
    assert_eq!(reply["id"], 7);
    assert_eq!(
        reply["result"]["structuredContent"]["success"], true,
        "{reply}"
    );

    drop(raw.stdin);
    let status = tokio::time::timeout(WAIT, raw.child.wait()).await??;
    assert!(status.success(), "exits 0 on stdin EOF: {status}");
    Ok(())
}

#[tokio::test]
async fn secrets_never_reach_stderr_even_at_trace_level() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();
    let env_password = "carol-password";
    let env_token = "demo-user-token-carol";
    let spawned = spawn_stdio(
        &["--bigid-url", &url, "--timeout", "1"],
        &[
            ("RUST_LOG", "trace"),
            ("BIGID_USERNAME", "carol"),
            ("BIGID_PASSWORD", env_password),
            ("BIGID_USER_TOKEN", env_token),
        ],
    )
    .await?;
    let client = &spawned.client;
    let mut secrets = vec![env_password.to_owned(), env_token.to_owned()];

    let session = structured(&call(client, "create_session", json!({})).await?);
    let token = structured(&call(client, "refresh_access_token", json!({})).await?);
    secrets.push(
        session["auth_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    secrets.push(token["systemToken"].as_str().unwrap_or_default().to_owned());
    let dave = structured(
        &call(
            client,
            "create_session",
            json!({"username": "dave", "password": "dave-password"}),
        )
        .await?,
    );
    secrets.push("dave-password".into());
    secrets.push(dave["auth_token"].as_str().unwrap_or_default().to_owned());
    let wrong = call(
        client,
        "create_session",
        json!({"password": "Wr0ng-Passw0rd-Secret"}),
    )
    .await?;
    error_text(&wrong);
    secrets.push("Wr0ng-Passw0rd-Secret".into());
    let wrong_type = call(
        client,
        "create_session",
        json!({"password": 98765432123_u64}),
    )
    .await?;
    error_text(&wrong_type);
    secrets.push("98765432123".into());
    let bad_token = call(
        client,
        "refresh_access_token",
        json!({"user_token": "not-a-valid-user-token-xyz"}),
    )
    .await?;
    error_text(&bad_token);
    secrets.push("not-a-valid-user-token-xyz".into());
    for fault in [Fault::Status(503), Fault::InvalidJson, Fault::Truncated] {
        fake.set_fault(fault);
        let _ = call(
            client,
            "refresh_access_token",
            json!({"force_refresh": true}),
        )
        .await?;
        let _ = call(client, "create_session", json!({})).await?;
    }

    let stderr = spawned.finish().await?;
    assert!(
        stderr.contains("TRACE"),
        "trace logging was on: {stderr:.500}"
    );
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(
            !stderr.contains(secret.as_str()),
            "secret {secret:.12}… leaked to stderr"
        );
    }
    Ok(())
}

#[tokio::test]
async fn configuration_errors_exit_2_with_an_actionable_message() -> anyhow::Result<()> {
    let output = tokio::time::timeout(WAIT, binary(&[], &[]).output()).await??;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("set BIGID_URL"), "{stderr}");
    assert!(output.stdout.is_empty(), "stdout stays clean");
    Ok(())
}

#[tokio::test]
async fn a_password_sent_before_initialize_is_not_logged() -> anyhow::Result<()> {
    let secret = "pre-init-Secret-4711";
    let mut child = binary(&["--demo"], &[("RUST_LOG", "trace")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    let line =
        json!({"jsonrpc": "2.0", "method": "notifications/x", "params": {"password": secret}});
    stdin.write_all(format!("{line}\n").as_bytes()).await?;
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("no MCP session on stdio"), "{stderr}");
    assert!(
        !stderr.contains(secret),
        "the pre-initialize message leaked: {stderr}"
    );
    Ok(())
}
