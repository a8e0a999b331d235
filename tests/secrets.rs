//! No secret anywhere: not in a log line at any level, not in
//! an error result, not in a panic message, not in the `Debug` or `Display`
//! of any configuration, argument, result or error type. Every scenario runs
//! the real binary at `RUST_LOG=trace` (text and JSON logs), and every byte
//! it writes to stderr, and every error text it returns, is searched for
//! every secret the scenario used or received.

mod common;

use std::time::Duration;

use bigid_auth_mcp::{
    bigid::{self, parse_session_answer, parse_token_answer},
    cache::TokenCache,
    config::{self, Cli, Config},
    demo::{FakeBigId, Fault},
    secret::Secret,
    tools::{CreateSessionArgs, RefreshArgs, RefreshOutput, SessionOutput, ToolError, parse_args},
};
use clap::Parser;
use common::{
    canned::{Canned, Reply},
    *,
};
use reqwest::{Method, StatusCode};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Everything secret that a scenario used or received.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn add(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        assert!(secret.len() >= 8, "too short to search for: {secret:?}");
        self.0.push(secret);
    }

    /// Adds the tokens a successful result carries.
    fn add_tokens(&mut self, result: &CallToolResult) {
        let value = result.structured_content.clone().unwrap_or_default();
        for key in ["auth_token", "systemToken"] {
            if let Some(token) = value.get(key).and_then(Value::as_str) {
                self.add(token);
            }
        }
    }

    #[track_caller]
    fn assert_absent(&self, what: &str, text: &str) {
        for secret in &self.0 {
            if let Some(at) = text.find(secret.as_str()) {
                // Show the line it is on, not the whole text.
                let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!(
                    "a secret ({:.10}…) appears in {what}: {:.1500}",
                    secret,
                    &text[start..end]
                );
            }
        }
    }
}

// ---------------------------------------------------------------- Debug and Display

const PASSWORD: &str = "pw-Debug-Secret-1";
const USER_TOKEN: &str = "demo-user-token-debugsecret";
const AUTH_TOKEN: &str = "mcp-auth-token-Debug-Secret";

fn debug_and_display(secrets: &Secrets, name: &str, value: &(impl std::fmt::Debug + ?Sized)) {
    secrets.assert_absent(&format!("Debug of {name}"), &format!("{value:?}"));
    secrets.assert_absent(&format!("pretty Debug of {name}"), &format!("{value:#?}"));
}

#[tokio::test]
async fn debug_and_display_of_every_config_argument_result_and_error_hide_secrets()
-> anyhow::Result<()> {
    let mut secrets = Secrets::default();
    for s in [PASSWORD, USER_TOKEN, AUTH_TOKEN] {
        secrets.add(s);
    }

    // Configuration, with every secret the environment can hold.
    let cli = Cli::try_parse_from([
        "bigid-auth-mcp",
        "--transport",
        "http",
        "--bind",
        "0.0.0.0:9000",
        "--bigid-url",
        "https://tenant.bigid.example/api/v1",
    ])?;
    let env = |name: &str| match name {
        "BIGID_USERNAME" => Some("alice".to_owned()),
        "BIGID_PASSWORD" => Some(PASSWORD.to_owned()),
        "BIGID_USER_TOKEN" => Some(USER_TOKEN.to_owned()),
        "MCP_AUTH_TOKEN" => Some(AUTH_TOKEN.to_owned()),
        _ => None,
    };
    let config = Config::from_cli(cli, env)?;
    debug_and_display(&secrets, "Config", &config);
    debug_and_display(&secrets, "Defaults", &config.defaults);
    debug_and_display(&secrets, "BigIdConfig", &config.bigid);
    debug_and_display(&secrets, "Transport (with HttpConfig)", &config.transport);
    let config::Transport::Http(http) = &config.transport else {
        anyhow::bail!("expected the HTTP transport");
    };
    assert!(http.auth_token.is_some(), "the token was read");
    debug_and_display(&secrets, "HttpConfig", http);

    // A URL carrying credentials is refused without repeating them.
    let refused = config::parse_bigid_url(&format!(
        "https://alice:{PASSWORD}@tenant.bigid.example/api/v1"
    ))
    .expect_err("credentials in the URL are refused");
    debug_and_display(&secrets, "ConfigError", &refused);
    secrets.assert_absent("ConfigError", &refused.to_string());

    let secret = Secret::new(PASSWORD);
    debug_and_display(&secrets, "Secret", &secret);
    secrets.assert_absent("Display of Secret", &secret.to_string());

    // Arguments and results.
    let args: CreateSessionArgs = parse_args(json!({"username": "alice", "password": PASSWORD}))?;
    debug_and_display(&secrets, "CreateSessionArgs", &args);
    let args: RefreshArgs = parse_args(json!({"user_token": USER_TOKEN}))?;
    debug_and_display(&secrets, "RefreshArgs", &args);
    let session = SessionOutput {
        success: true,
        message: None,
        auth_token: Secret::new(USER_TOKEN),
        username: "alice".into(),
        first_name: None,
        permission_count: 0,
        permissions: None,
        expires_at: None,
    };
    debug_and_display(&secrets, "SessionOutput", &session);
    let refreshed = RefreshOutput {
        success: true,
        system_token: Secret::new(USER_TOKEN),
        cached: false,
        expires_at: None,
    };
    debug_and_display(&secrets, "RefreshOutput", &refreshed);

    // BigID's answers, parsed.
    let url = reqwest::Url::parse("https://tenant.bigid.example/api/v1/sessions")?;
    let body = json!({"success": true, "auth_token": USER_TOKEN, "systemToken": USER_TOKEN});
    let body = body.to_string().into_bytes();
    debug_and_display(
        &secrets,
        "SessionResponse",
        &parse_session_answer(&url, StatusCode::OK, &body)?,
    );
    debug_and_display(
        &secrets,
        "TokenResponse",
        &parse_token_answer(&url, StatusCode::OK, &body)?,
    );

    // Argument errors carrying secret values.
    for value in [
        json!({"password": 12345678901_u64, "include_permissions": PASSWORD}),
        json!({"password": [PASSWORD]}),
        json!({"passwd": PASSWORD}),
    ] {
        let error = parse_args::<CreateSessionArgs>(value).expect_err("bad arguments");
        debug_and_display(&secrets, "ToolError", &error);
        secrets.assert_absent("Display of ToolError", &error.to_string());
    }

    // Every failure the client can meet, from the fake BigID, with secrets
    // in the request.
    let fake = FakeBigId::start().await?;
    let mut bigid_config = bigid_config(fake.url());
    bigid_config.timeout = Duration::from_millis(500);
    let client = bigid::Client::new(fake.url(), &bigid_config)?;
    debug_and_display(&secrets, "bigid::Client", &client);
    let mut errors: Vec<bigid::Error> = Vec::new();
    for fault in [
        Fault::None,
        Fault::Status(500),
        Fault::Status(401),
        Fault::HtmlPage,
        Fault::InvalidJson,
        Fault::Slow(Duration::from_secs(2)),
        Fault::Oversized(2 << 20),
        Fault::LoginSuccessFalse,
        Fault::Truncated,
        Fault::RefreshOnly(Method::PATCH),
    ] {
        fake.set_fault(fault);
        errors.extend(client.create_session("alice", &secret).await.err());
        errors.extend(
            client
                .refresh_access_token(&Secret::new(USER_TOKEN))
                .await
                .err(),
        );
    }
    fake.set_fault(Fault::None);
    // A token that cannot go into a header is refused before sending.
    let unsendable = format!("{USER_TOKEN}\nX-Injected: 1");
    secrets.add(unsendable.clone());
    errors.extend(
        client
            .refresh_access_token(&Secret::new(unsendable))
            .await
            .err(),
    );
    let unreachable = bigid::Client::new(
        &reqwest::Url::parse("http://127.0.0.1:9/api/v1")?,
        &bigid_config,
    )?;
    errors.extend(unreachable.create_session("alice", &secret).await.err());
    assert!(errors.len() >= 15, "faults produced errors: {errors:?}");
    for error in &errors {
        debug_and_display(&secrets, "bigid::Error", error);
        secrets.assert_absent("Display of bigid::Error", &error.to_string());
        let tool_error = ToolError::from(error.clone());
        debug_and_display(&secrets, "ToolError::BigId", &tool_error);
    }

    // The token cache's records.
    let cache = TokenCache::<bigid::Error>::default();
    let issued = bigid_auth_mcp::cache::Issued {
        token: Secret::new(AUTH_TOKEN),
        expires: None,
    };
    let lookup = cache
        .get_or_fetch(&Secret::new(USER_TOKEN), false, async move { Ok(issued) })
        .await;
    debug_and_display(&secrets, "cache::Lookup", &lookup);
    Ok(())
}

// ---------------------------------------------------------------- whole scenarios at trace level

/// Runs every scenario against one binary started with `log_env`, and
/// returns its stderr and the text of every error result.
async fn scenarios(log_env: &[(&str, &str)], secrets: &mut Secrets) -> anyhow::Result<String> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();
    let env_password = "erin-password";
    let env_token = "demo-user-token-erin";
    secrets.add(env_password);
    secrets.add(env_token);
    let mut env = vec![
        ("BIGID_USERNAME", "erin"),
        ("BIGID_PASSWORD", env_password),
        ("BIGID_USER_TOKEN", env_token),
        ("MCP_AUTH_TOKEN", "mcp-auth-token-scenario-secret"),
    ];
    secrets.add("mcp-auth-token-scenario-secret");
    // The header every token of the fake starts with: no JWT at all may show.
    secrets.add("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    env.extend_from_slice(log_env);
    let spawned = spawn_stdio(&["--bigid-url", &url, "--timeout", "1"], &env).await?;
    let client = &spawned.client;
    let mut errors = Vec::new();

    // Successes, with configured and with passed credentials.
    let ok = call(client, "create_session", json!({})).await?;
    secrets.add_tokens(&ok);
    let ok = call(client, "refresh_access_token", json!({})).await?;
    secrets.add_tokens(&ok);
    secrets.add("frank-password");
    let frank = call(
        client,
        "create_session",
        json!({"username": "frank", "password": "frank-password", "include_permissions": true}),
    )
    .await?;
    secrets.add_tokens(&frank);
    let frank_token = frank.structured_content.clone().unwrap_or_default()["auth_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    secrets.add("demo-user-token-frank");
    let refreshed = call(
        client,
        "refresh_access_token",
        json!({"user_token": "demo-user-token-frank", "force_refresh": true}),
    )
    .await?;
    secrets.add_tokens(&refreshed);

    // Failures: wrong password, wrong types, unknown arguments, a bad token,
    // an access token passed as a user token, a token unfit for a header.
    for (tool, args, secret) in [
        (
            "create_session",
            json!({"password": "Wrong-Password-Secret"}),
            "Wrong-Password-Secret",
        ),
        (
            "create_session",
            json!({"password": 24681357900_u64}),
            "24681357900",
        ),
        (
            "create_session",
            json!({"username": "erin", "pass": "Misnamed-Password-Secret"}),
            "Misnamed-Password-Secret",
        ),
        (
            "refresh_access_token",
            json!({"user_token": ["Listed-Token-Secret"]}),
            "Listed-Token-Secret",
        ),
        (
            "refresh_access_token",
            json!({"user_token": "Unknown-User-Token-Secret"}),
            "Unknown-User-Token-Secret",
        ),
        (
            "refresh_access_token",
            json!({"user_token": "Header\r\nInjection-Token-Secret"}),
            "Injection-Token-Secret",
        ),
    ] {
        secrets.add(secret);
        errors.push(error_text(&call(client, tool, args).await?));
    }
    errors.push(error_text(
        &call(
            client,
            "refresh_access_token",
            json!({"user_token": frank_token}),
        )
        .await?,
    ));

    // Every fault of the fake, on both tools.
    for fault in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Status(401),
        Fault::HtmlPage,
        Fault::InvalidJson,
        Fault::Slow(Duration::from_millis(1500)),
        Fault::Oversized(2 << 20),
        Fault::LoginSuccessFalse,
        Fault::Truncated,
        Fault::RefreshOnly(Method::POST),
        Fault::RefreshOnly(Method::PATCH),
    ] {
        fake.set_fault(fault);
        for (tool, args) in [
            ("create_session", json!({})),
            ("refresh_access_token", json!({"force_refresh": true})),
        ] {
            let result = call(client, tool, args).await?;
            match result.is_error {
                Some(true) => errors.push(error_text(&result)),
                _ => secrets.add_tokens(&result),
            }
        }
    }
    fake.set_fault(Fault::None);
    let stderr = spawned.finish().await?;

    // Raw lines no client would send, secrets inside: unparsable JSON, the
    // wrong shape, an oversized line.
    let mut child = binary(&["--bigid-url", &url], &env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?;
    secrets.add("Raw-Line-Password-Secret");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let mut raw = format!(
        "{init}\n{}\n",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    );
    raw.push_str("{\"password\": \"Raw-Line-Password-Secret\"\n");
    raw.push_str("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":\"Raw-Line-Password-Secret\"}\n");
    raw.push_str("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"create_session\",\"arguments\":{\"password\":{\"Raw-Line-Password-Secret\":1}}}}\n");
    // (A method name is not a secret's place: rmcp logs unknown ones at WARN.)
    raw.push_str("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"tools/call\",\"params\":{\"name\":\"create_session\",\"arguments\":\"Raw-Line-Password-Secret\"}}\n");
    raw.push_str(&format!(
        "{{\"password\":\"Raw-Line-Password-Secret{}\"}}\n",
        "x".repeat(17 << 20)
    ));
    tokio::time::timeout(WAIT, stdin.write_all(raw.as_bytes())).await??;
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    assert!(output.status.success(), "{:?}", output.status);
    let raw_stderr = String::from_utf8_lossy(&output.stderr).into_owned();

    for text in &errors {
        secrets.assert_absent("an error result", text);
    }
    Ok(format!("{stderr}\n{raw_stderr}"))
}

#[tokio::test]
async fn no_secret_reaches_stderr_or_an_error_result_at_trace_level() -> anyhow::Result<()> {
    for log_env in [
        &[("RUST_LOG", "trace")][..],
        &[("RUST_LOG", "trace,rmcp=trace"), ("LOG_FORMAT", "json")][..],
    ] {
        let mut secrets = Secrets::default();
        let stderr = scenarios(log_env, &mut secrets).await?;
        assert!(
            stderr.contains("TRACE") || stderr.contains("\"level\":\"TRACE\""),
            "trace logging was on ({log_env:?}): {stderr:.500}"
        );
        assert!(
            !stderr.contains("panicked"),
            "a panic (whose message would be unchecked text): {stderr:.2000}"
        );
        secrets.assert_absent(&format!("stderr with {log_env:?}"), &stderr);
    }
    Ok(())
}

/// BigID may quote the password or token back in its error message; the
/// server cuts it out before the message reaches the client or a log.
#[tokio::test]
async fn secrets_echoed_by_bigid_are_cut_out_of_error_results() -> anyhow::Result<()> {
    let canned = Canned::start().await?;
    let password = "Echoed-Password-Secret";
    let token = "Echoed-User-Token-Secret";
    let url = canned.url().to_string();
    let spawned = spawn_stdio(&["--bigid-url", &url], &[("RUST_LOG", "trace")]).await?;
    let mut secrets = Secrets::default();
    secrets.add(password);
    secrets.add(token);
    let login = json!({"username": "u", "password": password});
    let refresh = json!({"user_token": token});
    for (status, tool, args, echoed) in [
        (200, "create_session", &login, password),
        (401, "create_session", &login, password),
        (500, "refresh_access_token", &refresh, token),
        (403, "refresh_access_token", &refresh, token),
    ] {
        let body = json!({
            "success": false,
            "message": format!("no luck with {echoed}, sorry"),
        });
        canned.set(Reply::http(
            status,
            "text/html",
            body.to_string().as_bytes(),
        ));
        let text = error_text(&call(&spawned.client, tool, args.clone()).await?);
        assert!(text.contains("[redacted]"), "{text}");
        secrets.assert_absent("an error result", &text);
    }
    let stderr = spawned.finish().await?;
    secrets.assert_absent("stderr", &stderr);
    Ok(())
}

/// `check` prints what it verified; at trace level, passing or failing,
/// neither its report nor its log shows a credential or a token it obtained.
#[tokio::test]
async fn the_check_subcommand_never_prints_a_secret() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();
    let mut secrets = Secrets::default();
    let (password, token) = ("gina-password", "demo-user-token-gina");
    secrets.add(password);
    secrets.add(token);
    // Every token the fake issues starts with this JWT header: any of them
    // printed would show it.
    secrets.add("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    for fault in [Fault::None, Fault::Status(401), Fault::Status(503)] {
        fake.set_fault(fault.clone());
        let output = tokio::time::timeout(
            WAIT,
            binary(
                &["--bigid-url", &url, "--timeout", "2", "check"],
                &[
                    ("RUST_LOG", "trace"),
                    ("BIGID_USERNAME", "gina"),
                    ("BIGID_PASSWORD", password),
                    ("BIGID_USER_TOKEN", token),
                ],
            )
            .output(),
        )
        .await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.success(), fault == Fault::None, "{stdout}");
        secrets.assert_absent(&format!("check's report ({fault:?})"), &stdout);
        secrets.assert_absent(&format!("check's log ({fault:?})"), &stderr);
        assert!(!stderr.contains("panicked"), "{stderr:.2000}");
    }
    assert!(fake.request_count() >= 2, "check called BigID");
    Ok(())
}
