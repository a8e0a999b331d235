//! Test harness for the fault matrix: MCP clients (in-process or through the
//! binary), a TLS front with a CA made on the spot, and a logging proxy.
//! Everything listens on 127.0.0.1 only, and every wait is bounded.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::common::bare_binary;
use bigid_auth_mcp::{
    bigid,
    config::{
        AuthScheme, BigIdConfig, DEMO_PASSWORD, DEMO_USER_TOKEN, DEMO_USERNAME, Defaults,
        RefreshMethod,
    },
    demo::FakeBigId,
    secret::Secret,
    server::BigIdServer,
};
use reqwest::Url;
use rmcp::{
    RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    },
    service::RunningService,
    transport::TokioChildProcess,
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Upper bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `future` for at most [`WAIT`], failing the test beyond that.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {WAIT:?}"),
    }
}

/// A tool result, reduced to what the tests look at.
#[derive(Debug)]
pub struct Outcome {
    /// `isError`.
    pub is_error: bool,
    /// The first text block.
    pub text: String,
    /// `structuredContent`.
    pub structured: Option<Value>,
}

impl Outcome {
    /// A field of the structured result.
    pub fn field(&self, name: &str) -> &Value {
        self.structured
            .as_ref()
            .and_then(|s| s.get(name))
            .unwrap_or(&Value::Null)
    }

    /// Panics unless the call succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(!self.is_error, "expected success, got: {}", self.text);
        assert!(
            self.structured.is_some(),
            "success carries structuredContent"
        );
        self
    }

    /// Panics unless the call failed; returns the error text.
    #[track_caller]
    pub fn err(self) -> String {
        assert!(self.is_error, "expected an error, got: {}", self.text);
        assert!(self.structured.is_none(), "errors carry text only");
        self.text
    }
}

/// An MCP client session with a server, in-process or a child process.
pub struct Mcp {
    client: RunningService<RoleClient, ClientConfig>,
    stderr: Arc<Mutex<String>>,
}

impl Mcp {
    /// Calls `tool` with `args` (a JSON object).
    pub async fn call(&self, tool: &'static str, args: Value) -> Outcome {
        let params = CallToolRequestParams::new(tool)
            .with_arguments(args.as_object().cloned().unwrap_or_default());
        let result = bounded(tool, self.client.call_tool(params))
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let json = serde_json::to_value(&result).unwrap_or_default();
        Outcome {
            is_error: result.is_error == Some(true),
            text: json["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            structured: result.structured_content,
        }
    }

    /// `create_session` with the server's default credentials.
    pub async fn login(&self) -> Outcome {
        self.call("create_session", serde_json::json!({})).await
    }

    /// `refresh_access_token` with the server's default user token.
    pub async fn refresh(&self) -> Outcome {
        self.call("refresh_access_token", serde_json::json!({}))
            .await
    }

    /// What the child process wrote on stderr so far (empty in-process).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until stderr contains `needle` (log lines arrive asynchronously).
    pub async fn stderr_contains(&self, needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Ends the session (the child process exits on stdin EOF).
    pub async fn close(self) {
        let _ = bounded("closing the session", self.client.cancel()).await;
    }
}

fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("upstream-tests", "0.0.0"),
    )
    // Pinned: replies to newer protocol versions add fields (`resultType`), which would change what these tests compare.
    .with_protocol_version(ProtocolVersion::V_2025_11_25)
}

/// The BigID settings the in-process server gets unless a test changes them.
pub fn bigid_config(url: &Url) -> BigIdConfig {
    BigIdConfig {
        url: Some(url.clone()),
        ca_cert: None,
        timeout: Duration::from_secs(5),
        refresh_method: RefreshMethod::Get,
        auth_scheme: AuthScheme::Raw,
        token_cache: true,
    }
}

/// The demo credentials, as the server's defaults.
pub fn demo_defaults() -> Defaults {
    Defaults {
        username: Some(DEMO_USERNAME.into()),
        password: Some(Secret::new(DEMO_PASSWORD)),
        user_token: Some(Secret::new(DEMO_USER_TOKEN)),
    }
}

/// The real tool layer in this process, over an in-memory pipe.
pub async fn in_process(url: &Url, tweak: impl FnOnce(&mut BigIdConfig)) -> Mcp {
    let mut config = bigid_config(url);
    tweak(&mut config);
    let client = bigid::Client::new(url, &config).expect("client");
    let server = BigIdServer::new(client, demo_defaults(), config.token_cache);
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    // Owned by the pipe: it ends when the client side is dropped or cancelled.
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let client = bounded("initialize", client_config().serve(client_io))
        .await
        .expect("initialize");
    Mcp {
        client,
        stderr: Arc::default(),
    }
}

/// The binary on stdio, with exactly these arguments and environment
/// (nothing inherited: no proxy or BIGID_* variable of the host leaks in).
pub async fn binary(args: &[&str], env: &[(&str, &str)]) -> Mcp {
    let mut all_env = vec![("RUST_LOG", "bigid_auth_mcp=debug,info")];
    all_env.extend_from_slice(env);
    let (transport, stderr) = TokioChildProcess::builder(bare_binary(args, &all_env))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the binary");
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = stderr {
        let log = log.clone();
        // Ends at EOF, when the child exits.
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut log) = log.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
    }
    let client = bounded("initialize", client_config().serve(transport))
        .await
        .expect("initialize");
    Mcp {
        client,
        stderr: log,
    }
}

/// Credentials the binary gets from its environment; the fake accepts them.
pub const ALICE: [(&str, &str); 3] = [
    ("BIGID_USERNAME", "alice"),
    ("BIGID_PASSWORD", "alice-password"),
    ("BIGID_USER_TOKEN", "demo-user-token-alice"),
];

/// A fake BigID on an ephemeral loopback port.
pub async fn fake() -> FakeBigId {
    bounded("start the fake", FakeBigId::start())
        .await
        .expect("fake BigID")
}

/// A fake BigID, and the tool layer in this process in front of it with
/// the default settings changed by `tweak`.
pub async fn fake_in_process(tweak: impl FnOnce(&mut BigIdConfig)) -> (FakeBigId, Mcp) {
    let fake = fake().await;
    let mcp = in_process(fake.url(), tweak).await;
    (fake, mcp)
}

/// A fake BigID, and the binary on stdio in front of it with `extra`
/// arguments and Alice's credentials in its environment.
pub async fn fake_binary(extra: &[&str]) -> (FakeBigId, Mcp) {
    let fake = fake().await;
    let url = fake.url().to_string();
    let mut args = vec!["--bigid-url", url.as_str()];
    args.extend_from_slice(extra);
    let mcp = binary(&args, &ALICE).await;
    (fake, mcp)
}

/// A fake BigID behind a TLS front whose certificate a test CA signed.
pub struct TlsBigId {
    /// The BigID behind the front.
    pub fake: FakeBigId,
    /// The CA that signed the front's certificate, and another one.
    pub pki: Pki,
    /// The TLS front (its log says how handshakes went).
    pub front: Relay,
    /// `https://URL_HOST:PORT/api/v1` of the front.
    pub base: String,
}

impl TlsBigId {
    /// Starts the fake and a front with a certificate for `cert_host`,
    /// addressed as `url_host` in `base`.
    pub async fn start(cert_host: &str, url_host: &str) -> Self {
        let fake = fake().await;
        let pki = Pki::new(&[cert_host]);
        let front = pki.front(fake.local_addr()).await;
        let base = format!("https://{url_host}:{}/api/v1", front.addr.port());
        Self {
            fake,
            pki,
            front,
            base,
        }
    }
}

/// A fake BigID behind a TLS front whose certificate, for `host`, a test CA
/// signed; the front reached through a logging HTTP proxy.
pub struct ProxiedTls {
    /// The BigID behind it all.
    pub fake: FakeBigId,
    /// The TLS front (its log says how handshakes went).
    pub front: Relay,
    /// The proxy (its log lists the tunnels it opened).
    pub proxy: Relay,
    /// `https://host:PORT/api/v1` of the front.
    pub base: String,
    /// The test CA's certificate, as a file for `--ca-cert`.
    pub ca: TempFile,
}

impl ProxiedTls {
    /// Starts the fake, the front for `host` and the proxy.
    pub async fn start(host: &str) -> Self {
        let TlsBigId {
            fake,
            pki,
            front,
            base,
        } = TlsBigId::start(host, host).await;
        let proxy = Relay::proxy(front.addr).await;
        let ca = temp_file("ca.pem", &pki.ca_pem);
        Self {
            fake,
            front,
            proxy,
            base,
            ca,
        }
    }
}

/// What `bigid-auth-mcp … check` printed and how it exited.
pub struct Checked {
    /// The exit code.
    pub code: i32,
    /// The ✓/✗ lines.
    pub stdout: String,
    /// Logs.
    pub stderr: String,
}

impl Checked {
    /// Asserts that the report contains `text`, showing the report if not.
    pub fn says(&self, text: &str) {
        assert!(
            self.stdout.contains(text),
            "{text:?} not in:\n{}",
            self.stdout
        );
    }
}

/// Runs the binary with `args` (ending in `check`) and exactly this environment.
pub async fn check(args: &[&str], env: &[(&str, &str)]) -> Checked {
    let output = bounded(
        "check",
        bare_binary(args, env).stdin(Stdio::null()).output(),
    )
    .await
    .expect("run check");
    Checked {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A CA made for one test, and a server certificate it signed.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// Another CA's certificate, PEM (to build bundles and wrong CA files).
    pub other_ca_pem: String,
    server_config: Arc<rustls::ServerConfig>,
}

impl Pki {
    /// A CA, and a server certificate for `names` signed by it.
    pub fn new(names: &[&str]) -> Self {
        let ca = Self::ca("bigid-auth-mcp test CA");
        let other = Self::ca("some other CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .expect("server config");
        Self {
            ca_pem: ca.pem(),
            other_ca_pem: other.pem(),
            server_config: Arc::new(server_config),
        }
    }

    fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        rcgen::CertifiedIssuer::self_signed(params, key).expect("CA")
    }

    /// Terminates TLS on a loopback port and passes the bytes to `upstream`.
    pub async fn front(&self, upstream: SocketAddr) -> Relay {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config.clone());
        Relay::start(move |tcp: TcpStream, log: Arc<Mutex<Vec<String>>>| {
            let acceptor = acceptor.clone();
            async move {
                let mut tls = match tokio::time::timeout(WAIT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return push(&log, format!("handshake failed: {e}")),
                    Err(_) => return push(&log, "handshake timed out".into()),
                };
                push(&log, "handshake ok".into());
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                }
            }
        })
        .await
    }
}

fn push(log: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut log) = log.lock() {
        log.push(line);
    }
}

/// A loopback listener that hands each connection to a handler and keeps a
/// log of what the handler saw; stops when dropped.
pub struct Relay {
    /// Where it listens.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Relay {
    async fn start<H, F>(handler: H) -> Self
    where
        H: Fn(TcpStream, Arc<Mutex<Vec<String>>>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    // Connection tasks end with their connection; the
                    // listener task is aborted when the relay is dropped.
                    tokio::spawn(handler(tcp, log.clone()));
                }
            }
        });
        Self { addr, log, task }
    }

    /// What the relay logged (request lines, handshakes), in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A forward proxy that logs each request's head line (`CONNECT host:port`
    /// or `POST http://host/…`) and sends everything to `upstream`, whatever
    /// host was asked for, so no test traffic ever leaves loopback.
    pub async fn proxy(upstream: SocketAddr) -> Self {
        Self::start(
            move |mut tcp: TcpStream, log: Arc<Mutex<Vec<String>>>| async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tokio::time::timeout(WAIT, tcp.read(&mut byte)).await {
                        Ok(Ok(1)) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let first = text.lines().next().unwrap_or_default().to_owned();
                let authorization = text
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("proxy-authorization:"))
                    .is_some();
                push(
                    &log,
                    if authorization {
                        format!("{first} (with Proxy-Authorization)")
                    } else {
                        first.clone()
                    },
                );
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                if first.starts_with("CONNECT ") {
                    if tcp
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                } else if up.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
            },
        )
        .await
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A host name other than `localhost` that `/etc/hosts` maps to a loopback
/// address, with `files` consulted before DNS. The proxy tests need a name
/// the server does not treat as loopback, yet one that can never cause
/// traffic beyond this machine, even if the proxy were bypassed.
pub fn loopback_alias() -> Option<String> {
    let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").ok()?;
    let files_first = nsswitch
        .lines()
        .find(|l| l.trim_start().starts_with("hosts:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("files");
    if !files_first {
        return None;
    }
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip: std::net::Ipv4Addr = fields.next()?.parse().ok()?;
        if !ip.is_loopback() {
            return None;
        }
        fields
            .find(|name| {
                !name.to_ascii_lowercase().contains("localhost")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            .map(str::to_owned)
    })
}

/// A loopback port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A loopback listener whose accept queue is full: connecting to it hangs
/// until the connect timeout, like a firewall that drops SYNs.
pub async fn full_backlog() -> (TcpListener, std::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    // Backlog 0: the kernel queues one connection, then drops SYNs.
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("the first connection fills the queue");
    (listener, filler)
}

/// A file in its own temporary directory, removed (with the directory) on drop.
pub struct TempFile {
    path: std::path::PathBuf,
}

impl TempFile {
    /// The path as a string, for command-line arguments.
    pub fn arg(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }

    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes `text` to a fresh file under the system temp directory.
pub fn temp_file(name: &str, text: &str) -> TempFile {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bigid-upstream-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write temp file");
    TempFile { path }
}
