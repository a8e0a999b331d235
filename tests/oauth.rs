//! The OAuth resource server end to end: the real binary, a real
//! authorization server (oidc-provider, run by Node from tests/oauth/), the
//! official Python SDK's OAuth client, and every refusal the MCP
//! authorization specification asks for.
//!
//! Needs `npm ci --prefix tests/oauth` (and, for the Python client, a venv at
//! target/oauth-venv with `mcp==2.3.0`); `.ci/run` sets both up. Without them
//! the tests say so and pass, except under CI, where they fail.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, ensure};
use bigid_auth_mcp::{
    config::{DEMO_PASSWORD, DEMO_USER_TOKEN, DEMO_USERNAME},
    demo::FakeBigId,
    oauth::{OAuthSettings, Verifier},
};
use common::{
    WAIT, binary,
    canned::{Canned, Reply},
    http::{HttpServer, Legacy, MCP_TOKEN, http_client, tool_call},
};
use rmcp::{
    ServiceExt,
    model::CallToolRequestParams,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
    time::timeout,
};

/// The scope the test server requires of every token.
const SCOPE: &str = "mcp:tools";
/// A resource the authorization server knows that is not this server.
const OTHER_RESOURCE: &str = "https://other.example/api";

fn oauth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth")
}

/// Whether a tool the test needs is here; under CI its absence is a failure.
fn available(what: &str, present: bool, how: &str) -> bool {
    if present {
        return true;
    }
    let message = format!("skipping: {what} is not installed ({how})");
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "{message}; CI must install it"
    );
    eprintln!("{message}");
    false
}

fn node_ready() -> bool {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    available(
        "Node.js with oidc-provider",
        node && oauth_dir().join("node_modules/oidc-provider").is_dir(),
        "install Node.js and run `npm ci --prefix tests/oauth`",
    )
}

/// The authorization server, stopped when dropped.
struct AuthorizationServer {
    child: Child,
    /// Keeps reading its stdout: a closed pipe would kill it on its next write.
    drain: tokio::task::JoinHandle<()>,
    issuer: String,
}

impl Drop for AuthorizationServer {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

impl AuthorizationServer {
    async fn start() -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new("node")
            .arg(oauth_dir().join("authorization-server.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout(WAIT, lines.next_line())
            .await
            .context("the authorization server did not start")??
            .context("the authorization server exited")?;
        let ready: Value = serde_json::from_str(&line)?;
        let issuer = ready["issuer"].as_str().context("no issuer")?.to_owned();
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            drain,
            issuer,
        })
    }

    /// Kills it and waits until it is gone: an outage.
    async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// A real access token from the client-credentials grant.
    async fn client_credentials(
        &self,
        resource: &str,
        scope: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = http_client()
            .post(format!("{}/token", self.issuer))
            .basic_auth("cc-client", Some("cc-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&form)
                    .finish(),
            )
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        ensure!(status == 200, "token endpoint: {status} {body}");
        Ok(body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned())
    }

    /// A token the provider itself would not issue (see authorization-server.mjs).
    async fn mint(&self, kind: &str, claims: Value) -> anyhow::Result<String> {
        let response = http_client()
            .post(format!("{}/test/mint", self.issuer))
            .json(&json!({"kind": kind, "claims": claims}))
            .send()
            .await?;
        ensure!(response.status() == 200, "mint: {}", response.text().await?);
        let body: Value = response.json().await?;
        Ok(body["token"].as_str().context("no token")?.to_owned())
    }
}

/// The binary with OAuth (and MCP_AUTH_TOKEN) on a port chosen up front, so
/// that its public URL is where it really listens.
struct Protected {
    server: HttpServer,
    fake: FakeBigId,
    resource: String,
}

async fn protected(issuer: &str) -> anyhow::Result<Protected> {
    let fake = FakeBigId::start().await?;
    // The port is picked, released, then bound by the binary: another
    // process may take it in between, so a failed start is retried.
    let mut last = None;
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bind = format!("127.0.0.1:{port}");
        let public = format!("http://127.0.0.1:{port}");
        let started = HttpServer::start(
            fake.url().as_str(),
            &[
                "--bind",
                &bind,
                "--public-url",
                &public,
                "--oauth-issuer",
                issuer,
                "--oauth-scope",
                SCOPE,
            ],
            &[
                ("BIGID_USERNAME", DEMO_USERNAME),
                ("BIGID_PASSWORD", DEMO_PASSWORD),
                ("BIGID_USER_TOKEN", DEMO_USER_TOKEN),
            ],
        )
        .await;
        match started {
            Ok(server) => {
                return Ok(Protected {
                    server,
                    fake,
                    resource: format!("{public}/mcp"),
                });
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("the server did not start")))
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "oauth-test", "version": "0"}}})
}

/// POST /mcp with a bearer token (if any) and an optional session id.
async fn post_mcp(
    base: &str,
    token: Option<&str>,
    session: Option<&str>,
    body: &Value,
) -> anyhow::Result<reqwest::Response> {
    let mut request = http_client()
        .post(format!("{base}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    Ok(request.send().await?)
}

/// The `WWW-Authenticate` parameters, checking each appears once.
fn challenge(response: &reqwest::Response) -> anyhow::Result<Vec<(String, String)>> {
    let values: Vec<_> = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .collect();
    ensure!(values.len() == 1, "expected one challenge, got {values:?}");
    let value = values[0].to_str()?;
    let rest = value
        .strip_prefix("Bearer ")
        .context("not a Bearer challenge")?;
    let mut params = Vec::new();
    for part in rest.split("\", ") {
        let (name, quoted) = part.split_once('=').context("bad parameter")?;
        params.push((name.to_owned(), quoted.trim_matches('"').to_owned()));
    }
    let mut names: Vec<_> = params.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    ensure!(names.len() == params.len(), "a parameter repeats: {value}");
    Ok(params)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Asserts a refusal's status, challenge and JSON body; returns the body.
async fn assert_refused(
    response: reqwest::Response,
    status: u16,
    error: Option<&str>,
    resource: &str,
) -> anyhow::Result<Value> {
    ensure!(response.status() == status, "status {}", response.status());
    let params = challenge(&response)?;
    let metadata = resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    ensure!(
        param(&params, "resource_metadata") == Some(metadata.as_str()),
        "{params:?}"
    );
    ensure!(param(&params, "scope") == Some(SCOPE), "{params:?}");
    ensure!(param(&params, "error") == error, "{params:?}");
    let exposed = response
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok());
    ensure!(exposed == Some("WWW-Authenticate"), "{exposed:?}");
    let body: Value = response.json().await?;
    ensure!(body.is_object(), "{body}");
    Ok(body)
}

/// An rmcp client authenticated with `token`.
async fn mcp_client(base: &str, token: &str) -> anyhow::Result<common::Client> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(token);
    let transport = StreamableHttpClientTransport::with_client(http_client(), config);
    Ok(timeout(WAIT, common::client_config().serve(transport)).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_token_for_this_resource_calls_a_tool() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mut mcp = protected(&issuer.issuer).await?;
    let token = issuer
        .client_credentials(&mcp.resource, Some(SCOPE))
        .await?;

    let client = mcp_client(&mcp.server.base, &token).await?;
    let result = timeout(
        WAIT,
        client.call_tool(CallToolRequestParams::new("refresh_access_token")),
    )
    .await??;
    ensure!(result.is_error != Some(true), "{result:?}");
    timeout(WAIT, client.cancel()).await??;

    // BigID saw the server's own credentials only, never the caller's token.
    for request in mcp.fake.requests() {
        let authorization = request.authorization.unwrap_or_default();
        ensure!(
            !authorization.contains(&token),
            "the OAuth token reached BigID"
        );
    }
    let log = mcp.server.stderr_so_far();
    ensure!(!log.contains(&token), "the OAuth token reached the log");
    let call_line = log
        .lines()
        .find(|l| l.contains("tool call") && l.contains("refresh_access_token"))
        .context("no tool call line")?;
    ensure!(call_line.contains("INFO"), "{call_line}");
    ensure!(call_line.contains("principal=\"cc-client\""), "{call_line}");
    ensure!(call_line.contains("outcome=\"ok\""), "{call_line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_discovers_the_server_from_its_401_and_calls_both_tools()
-> anyhow::Result<()> {
    let python = std::env::var_os("BIGID_MCP_OAUTH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oauth-venv/bin/python")
        });
    if !node_ready()
        || !available(
            "the Python MCP SDK",
            python.exists(),
            "python3 -m venv target/oauth-venv && target/oauth-venv/bin/pip install mcp==2.3.0",
        )
    {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mut mcp = protected(&issuer.issuer).await?;
    let output = timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&python)
            .arg(oauth_dir().join("client.py"))
            .arg(&mcp.resource)
            .arg("alice")
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    ensure!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout)?;
    ensure!(out["registered"] == json!(true), "{out}");
    ensure!(
        out["tools"] == json!(["create_session", "refresh_access_token"]),
        "{out}"
    );
    for tool in ["create_session", "refresh_access_token"] {
        ensure!(out[tool]["isError"] == json!(false), "{out}");
        ensure!(out[tool]["structured"]["success"] == json!(true), "{out}");
    }
    // It went through the login and consent pages of the real server.
    ensure!(
        out["visited"].as_array().is_some_and(|v| v.len() >= 2),
        "{out}"
    );
    let log = mcp.server.stderr_so_far();
    for tool in ["create_session", "refresh_access_token"] {
        ensure!(
            log.lines().any(|l| l.contains("tool call")
                && l.contains(tool)
                && l.contains("principal=\"alice (client ")),
            "no tool call line for {tool} naming alice:\n{log}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_served_at_both_well_known_paths_with_open_cors() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mcp = protected(&issuer.issuer).await?;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let response = http_client()
            .get(mcp.server.url(path))
            .header("origin", "https://inspector.example")
            .send()
            .await?;
        ensure!(response.status() == 200, "{path}: {}", response.status());
        ensure!(
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.as_bytes())
                == Some(b"*"),
            "{path}: no open CORS"
        );
        let document: Value = response.json().await?;
        ensure!(document["resource"] == json!(mcp.resource), "{document}");
        ensure!(
            document["authorization_servers"] == json!([issuer.issuer]),
            "{document}"
        );
        ensure!(document["scopes_supported"] == json!([SCOPE]), "{document}");
        ensure!(
            document["bearer_methods_supported"] == json!(["header"]),
            "{document}"
        );
        ensure!(document["resource_name"].is_string(), "{document}");
    }
    // Without a token: 401 pointing at the document, on every MCP route.
    let response = post_mcp(&mcp.server.base, None, None, &initialize()).await?;
    assert_refused(response, 401, None, &mcp.resource).await?;
    let response = http_client().get(mcp.server.url("/sse")).send().await?;
    assert_refused(response, 401, None, &mcp.resource).await?;
    let response = http_client()
        .post(mcp.server.url("/message?sessionId=x"))
        .json(&initialize())
        .send()
        .await?;
    assert_refused(response, 401, None, &mcp.resource).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_server_must_not_accept_get_401_invalid_token() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mut mcp = protected(&issuer.issuer).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let ours = json!({"sub": "mallory", "aud": mcp.resource});
    let with = |extra: Value| {
        let mut claims = ours.clone();
        for (k, v) in extra.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        claims
    };
    let cases = [
        (
            "another audience",
            issuer
                .client_credentials(OTHER_RESOURCE, Some(SCOPE))
                .await?,
        ),
        (
            "expired",
            issuer
                .mint(
                    "provider",
                    with(json!({"iat": now - 7200, "exp": now - 3600})),
                )
                .await?,
        ),
        (
            "not yet valid",
            issuer
                .mint("provider", with(json!({"nbf": now + 3600})))
                .await?,
        ),
        (
            "wrong issuer",
            issuer
                .mint("provider", with(json!({"iss": "https://evil.example"})))
                .await?,
        ),
        ("unknown key", issuer.mint("foreign", ours.clone()).await?),
        (
            "alg off the list",
            issuer.mint("rs384", ours.clone()).await?,
        ),
        ("alg none", issuer.mint("none", ours.clone()).await?),
        (
            "HS256 keyed with the public key",
            issuer.mint("hs256-public", ours.clone()).await?,
        ),
        ("not a JWT", "not-a-jwt".to_owned()),
    ];
    // The control: the same minting path with good claims passes.
    let good = issuer.mint("provider", ours.clone()).await?;
    let response = post_mcp(&mcp.server.base, Some(&good), None, &initialize()).await?;
    ensure!(
        response.status() == 200,
        "the control token was refused: {}",
        response.status()
    );

    for (case, token) in &cases {
        let response = post_mcp(&mcp.server.base, Some(token), None, &initialize()).await?;
        let body = assert_refused(response, 401, Some("invalid_token"), &mcp.resource)
            .await
            .with_context(|| format!("case: {case}"))?;
        ensure!(
            !body.to_string().contains(token.as_str()),
            "{case}: the token is echoed"
        );
        // Legacy SSE follows the same rules.
        let response = http_client()
            .get(mcp.server.url("/sse"))
            .bearer_auth(token)
            .send()
            .await?;
        assert_refused(response, 401, Some("invalid_token"), &mcp.resource)
            .await
            .with_context(|| format!("case on /sse: {case}"))?;
    }
    let log = mcp.server.stderr_so_far();
    for (case, token) in &cases {
        ensure!(
            !log.contains(token.as_str()),
            "{case}: the token reached the log"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_in_the_query_string_is_not_accepted() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mcp = protected(&issuer.issuer).await?;
    let token = issuer
        .client_credentials(&mcp.resource, Some(SCOPE))
        .await?;
    let response = http_client()
        .post(mcp.server.url(&format!("/mcp?access_token={token}")))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize())
        .send()
        .await?;
    let body = assert_refused(response, 401, None, &mcp.resource).await?;
    ensure!(
        body.to_string().contains("Authorization header only"),
        "{body}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_the_required_scope_gets_403_insufficient_scope() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mcp = protected(&issuer.issuer).await?;
    // A real token for this resource, asked for without the scope.
    let token = issuer.client_credentials(&mcp.resource, None).await?;
    let response = post_mcp(&mcp.server.base, Some(&token), None, &initialize()).await?;
    let body = assert_refused(response, 403, Some("insufficient_scope"), &mcp.resource).await?;
    ensure!(body.to_string().contains(SCOPE), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_id_presented_by_another_principal_is_unknown() -> anyhow::Result<()> {
    if !node_ready() {
        return Ok(());
    }
    let issuer = AuthorizationServer::start().await?;
    let mcp = protected(&issuer.issuer).await?;
    let base = &mcp.server.base;
    let alice = issuer
        .mint("provider", json!({"sub": "alice", "aud": mcp.resource}))
        .await?;
    let bob = issuer
        .mint("provider", json!({"sub": "bob", "aud": mcp.resource}))
        .await?;

    // Streamable HTTP: alice opens a session.
    let response = post_mcp(base, Some(&alice), None, &initialize()).await?;
    ensure!(
        response.status() == 200,
        "initialize: {}",
        response.status()
    );
    let session = response
        .headers()
        .get("mcp-session-id")
        .context("no session id")?
        .to_str()?
        .to_owned();
    drop(response);
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    // Bob, and the holder of MCP_AUTH_TOKEN, both get 404 for it.
    for other in [bob.as_str(), MCP_TOKEN] {
        let response = post_mcp(base, Some(other), Some(&session), &list).await?;
        ensure!(
            response.status() == 404,
            "another principal got {}",
            response.status()
        );
        let body: Value = response.json().await?;
        ensure!(body.is_object(), "{body}");
    }
    // Alice still can.
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let response = post_mcp(base, Some(&alice), Some(&session), &initialized).await?;
    ensure!(
        response.status().is_success(),
        "initialized: {}",
        response.status()
    );
    let response = post_mcp(base, Some(&alice), Some(&session), &list).await?;
    ensure!(
        response.status() == 200,
        "alice lost her session: {}",
        response.status()
    );

    // Legacy SSE: the holder of MCP_AUTH_TOKEN opens one; alice cannot post to it.
    let mut legacy = Legacy::connect(base).await?;
    let response = http_client()
        .post(format!("{base}{}", legacy.endpoint))
        .bearer_auth(&alice)
        .json(&tool_call(7, "refresh_access_token", json!({})))
        .send()
        .await?;
    ensure!(
        response.status() == 404,
        "alice posted to another's legacy session: {}",
        response.status()
    );
    let body: Value = response.json().await?;
    ensure!(body.is_object(), "{body}");
    legacy
        .post(&tool_call(8, "refresh_access_token", json!({})))
        .await?;
    let answer = legacy.answer(8).await?;
    ensure!(answer["result"]["isError"] != json!(true), "{answer}");
    Ok(())
}

/// Runs the binary to its exit (bounded) and returns the code and stderr.
async fn run_to_exit(args: &[&str]) -> anyhow::Result<(Option<i32>, String)> {
    let output = timeout(
        WAIT,
        binary(args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output(),
    )
    .await??;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_issuer_stops_start_up_with_a_clear_message() -> anyhow::Result<()> {
    let http = ["--demo", "--transport", "http", "--bind", "127.0.0.1:0"];

    let (code, stderr) =
        run_to_exit(&[&http[..], &["--oauth-issuer", "https://idp.example.com"]].concat()).await?;
    ensure!(code == Some(2), "{code:?} {stderr}");
    ensure!(stderr.contains("needs --public-url"), "{stderr}");

    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let issuer = format!("http://{closed}");
    let with_issuer = |issuer: &str| -> Vec<String> {
        http.iter()
            .map(|s| s.to_string())
            .chain([
                "--public-url".into(),
                "http://127.0.0.1:1".into(),
                "--oauth-issuer".into(),
                issuer.into(),
            ])
            .collect()
    };
    let args = with_issuer(&issuer);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = run_to_exit(&args).await?;
    ensure!(code == Some(2), "{code:?} {stderr}");
    ensure!(
        stderr.contains("cannot read the metadata of the OAuth issuer"),
        "{stderr}"
    );

    // Metadata without jwks_uri.
    let canned = Canned::start().await?;
    let origin = canned.url().origin().ascii_serialization();
    canned.set(Reply::http(
        200,
        "application/json",
        json!({"issuer": origin, "authorization_endpoint": format!("{origin}/auth")})
            .to_string()
            .as_bytes(),
    ));
    let args = with_issuer(&origin);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stderr) = run_to_exit(&args).await?;
    ensure!(code == Some(2), "{code:?} {stderr}");
    ensure!(stderr.contains("has no `jwks_uri`"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_outage_keeps_known_keys_working_and_fails_unknown_ones_fast() -> anyhow::Result<()>
{
    if !node_ready() {
        return Ok(());
    }
    let mut issuer = AuthorizationServer::start().await?;
    let settings = OAuthSettings::new(&issuer.issuer, Some("http://127.0.0.1:1"), &[], &[], &[])?;
    let resource = settings.resource.clone();
    // No minimum interval between refetches, so every unknown key tries one.
    let verifier = Verifier::start_with(settings, Duration::ZERO).await?;
    let known = issuer
        .mint("provider", json!({"sub": "alice", "aud": resource}))
        .await?;
    let unknown = issuer
        .mint("foreign", json!({"sub": "alice", "aud": resource}))
        .await?;
    verifier.verify(&known).await?;
    let refused = verifier
        .verify(&unknown)
        .await
        .err()
        .context("unknown key accepted")?;
    ensure!(!refused.is_unavailable(), "{refused}");

    issuer.kill().await?;
    let verified = timeout(WAIT, verifier.verify(&known)).await?;
    ensure!(
        verified.is_ok(),
        "a cached key stopped working: {verified:?}"
    );
    let outage = timeout(WAIT, verifier.verify(&unknown))
        .await?
        .err()
        .context("unknown key accepted during the outage")?;
    ensure!(outage.is_unavailable(), "{outage}");
    ensure!(outage.to_string().contains("retry"), "{outage}");
    Ok(())
}
