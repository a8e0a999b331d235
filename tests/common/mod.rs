//! Helpers shared by the end-to-end tests: MCP clients in-process and
//! through the real binary, and snapshot settings.
#![allow(dead_code)] // each test crate uses a different subset

pub mod canned;
pub mod http;

use std::{process::Stdio, time::Duration};

use bigid_auth_mcp::{bigid, config, server::BigIdServer};
use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
        ProtocolVersion,
    },
    service::RunningService,
    transport::TokioChildProcess,
};
use serde_json::Value;
use tokio::{io::AsyncReadExt, task::JoinHandle};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// How much bigger the load, chaos and property tests run: `BIGID_MCP_SOAK=10`
/// multiplies their sizes and durations by 10 for a soak run by hand. CI uses 1.
pub fn soak() -> u32 {
    std::env::var("BIGID_MCP_SOAK")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// An MCP client session.
pub type Client = RunningService<RoleClient, ClientConfig>;

/// Environment variables that steer the binary, cleared so the host's never leak in.
pub use bigid_auth_mcp::config::ENVIRONMENT as CONTRACT_ENV;

/// A client that speaks a pinned protocol version (rmcp's default is a draft).
pub fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("bigid-auth-mcp-tests", "0.0.0"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_06_18)
}

/// The BigID settings the binary would use by default, pointed at `url`.
pub fn bigid_config(url: &reqwest::Url) -> config::BigIdConfig {
    config::BigIdConfig {
        url: Some(url.clone()),
        ca_cert: None,
        timeout: Duration::from_secs(5),
        refresh_method: config::RefreshMethod::Get,
        auth_scheme: config::AuthScheme::Raw,
        token_cache: true,
    }
}

/// Connects an in-process client to a server over an in-memory pipe.
pub async fn connect_in_process(
    url: &reqwest::Url,
    bigid: config::BigIdConfig,
    defaults: config::Defaults,
) -> anyhow::Result<Client> {
    let client = bigid::Client::new(url, &bigid)?;
    let server = BigIdServer::new(client, defaults, bigid.token_cache);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    Ok(tokio::time::timeout(WAIT, client_config().serve(client_io)).await??)
}

/// Runs the binary with stdin closed to its end, within [`WAIT`]; its
/// stdout and stderr are captured.
pub async fn run_to_end(
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<std::process::Output> {
    Ok(tokio::time::timeout(
        WAIT,
        binary(args, env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output(),
    )
    .await??)
}

/// The real binary, spawned with a clean contract environment plus `env`:
/// the contract's variables, and any other `BIGID_*`, `MCP_*` or proxy
/// variable of the host (`NO_PROXY` too), never leak in.
pub fn binary(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bigid-auth-mcp"));
    command.args(args).kill_on_drop(true);
    for name in CONTRACT_ENV {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("BIGID_")
            || text.starts_with("MCP_")
            || text.to_ascii_lowercase().contains("proxy")
        {
            command.env_remove(&name);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// The real binary with exactly `env` and nothing inherited from the host
/// (not even `PATH`), for tests that pin the whole environment.
pub fn bare_binary(args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = binary(args, &[]);
    command.env_clear().envs(env.iter().copied());
    command
}

/// A client talking to the real binary over stdio, and its stderr as it
/// will read once the process ends.
pub struct Spawned {
    /// The MCP session.
    pub client: Client,
    /// Everything the process wrote to stderr, available after it exits.
    pub stderr: JoinHandle<String>,
}

impl Spawned {
    /// Closes stdin (the server exits on EOF) and returns all of stderr.
    pub async fn finish(self) -> anyhow::Result<String> {
        tokio::time::timeout(WAIT, self.client.cancel()).await??;
        Ok(tokio::time::timeout(WAIT, self.stderr).await??)
    }
}

/// Spawns the binary on stdio and completes the MCP handshake.
pub async fn spawn_stdio(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Spawned> {
    let (transport, stderr) = TokioChildProcess::builder(binary(args, env))
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = stderr.ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
    let stderr = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    });
    let client = tokio::time::timeout(WAIT, client_config().serve(transport)).await??;
    Ok(Spawned { client, stderr })
}

/// Calls a tool with JSON arguments, bounded by [`WAIT`].
pub async fn call(client: &Client, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    Ok(tokio::time::timeout(WAIT, client.call_tool(params)).await??)
}

/// All text content of a result, joined.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts an error result (text only) and returns its text.
pub fn error_text(result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "expected an error result: {result:?}"
    );
    assert!(
        result.structured_content.is_none(),
        "error results carry no structuredContent: {result:?}"
    );
    text(result)
}

/// Asserts a success and returns its structured content.
pub fn structured(result: &CallToolResult) -> Value {
    assert_ne!(
        result.is_error,
        Some(true),
        "expected success: {}",
        text(result)
    );
    let value = result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("success without structuredContent: {result:?}"));
    let copy: Value = serde_json::from_str(&text(result)).expect("text content is the same JSON");
    assert_eq!(copy, value, "text content repeats structuredContent");
    value
}

/// A `kB` field of `/proc/PID/status`, e.g. `VmRSS` or `VmHWM` (Linux only).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// How many file descriptors the process has open (Linux only).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A process's open file descriptors, sorted by what they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fds {
    /// TCP connections accepted on `port` (clients of the server).
    pub inbound: usize,
    /// TCP connections to `upstream` (BigID, pooled).
    pub upstream: usize,
    /// Other TCP sockets (the listener).
    pub other_tcp: usize,
    /// Everything else: files, pipes, epoll, eventfd, ….
    pub other: usize,
}

/// Sorts the open descriptors of `pid`, telling apart connections accepted
/// on `port` and connections to port `upstream` (Linux only: /proc/PID/fd
/// and /proc/PID/net/tcp{,6}).
pub fn classify_fds(pid: u32, port: u16, upstream: u16) -> Fds {
    let mut sockets = std::collections::HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port_of = |address: &str| {
                address
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            // 0A is LISTEN: the listener itself is not a client.
            let kind = if port_of(cols[1]) == Some(port) && cols[3] != "0A" {
                0
            } else if port_of(cols[2]) == Some(upstream) {
                1
            } else {
                2
            };
            sockets.insert(cols[9].to_owned(), kind);
        }
    }
    let mut fds = Fds::default();
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return fds;
    };
    for entry in entries.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'));
        match inode.and_then(|inode| sockets.get(inode)) {
            Some(0) => fds.inbound += 1,
            Some(1) => fds.upstream += 1,
            Some(_) => fds.other_tcp += 1,
            None => fds.other += 1,
        }
    }
    fds
}

/// Snapshots live in the top-level `snapshots/` folder under plain names.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// The next line the binary writes on stdout, which must be a JSON-RPC message.
pub async fn next_message(
    stdout: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("stdout closed"))?;
    let message: Value = serde_json::from_str(&line)
        .map_err(|e| anyhow::anyhow!("stdout carried a non-JSON line {line:.200}: {e}"))?;
    assert_eq!(message["jsonrpc"], "2.0", "{line:.200}");
    Ok(message)
}
