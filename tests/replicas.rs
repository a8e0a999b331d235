//! Several `--stateless` instances of the real binary behind a real nginx,
//! configured with the file shipped in `deploy/nginx/`: clients of both
//! protocol generations through it while every instance is restarted in
//! turn, and legacy SSE sessions through its sticky upstream.
//!
//! nginx (Debian's package) is started by the tests on loopback ports, as
//! one process with its logs and temporary files in a directory of its own
//! under `target/tmp` (left there when a test fails, for reading). Without
//! nginx these tests say so and pass, except under CI, which installs it.
//! `BIGID_MCP_SOAK=N` multiplies the clients and the rolling restarts by N.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use bigid_auth_mcp::demo::{FakeBigId, Fault};
use common::{
    http::{HttpServer, Legacy, MCP_TOKEN, QUICK, http_client, token_and_user, tool_call},
    *,
};
use rmcp::{
    ServiceExt,
    model::{
        CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion,
    },
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::{process::Child, task::JoinSet, time::timeout};

/// The nginx configuration that docs/scale-out.md shows, byte for byte.
const SHIPPED_CONF: &str = include_str!("../deploy/nginx/bigid-auth-mcp.conf");
/// Where the shipped file has nginx listen; the tests put a free port there.
const LISTEN_PLACEHOLDER: &str = "127.0.0.1:8080;";
/// The instance addresses in the shipped file, replaced by the real ones.
const INSTANCE_PLACEHOLDERS: [&str; 3] = [
    "server 127.0.0.1:8001 ",
    "server 127.0.0.1:8002 ",
    "server 127.0.0.1:8003 ",
];
/// The line that makes the legacy SSE upstream sticky.
const STICKY_LINE: &str = "    hash $remote_addr consistent;\n";

// ------------------------------------------------------------------ nginx

/// The nginx binary: on `PATH`, or where Debian puts it (`/usr/sbin` is
/// not on every user's `PATH`). `None` means the test skips, and says so;
/// under CI, which installs nginx, a missing one fails instead.
fn nginx() -> Option<&'static str> {
    let runs = |binary: &str| {
        std::process::Command::new(binary)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let found = ["nginx", "/usr/sbin/nginx"].into_iter().find(|b| runs(b));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nginx is missing although CI is set: .ci/run should have installed it"
        );
        eprintln!("SKIPPED: no nginx found (Debian: apt-get install nginx; .ci/run installs it)");
    }
    found
}

/// The shipped configuration with the instances on `ports`. Every
/// placeholder must be there, so a renamed one fails here rather than
/// leaving the test on the wrong ports.
fn render(conf: &str, ports: &[u16; 3]) -> anyhow::Result<String> {
    let mut out = conf.to_owned();
    for (placeholder, port) in INSTANCE_PLACEHOLDERS.iter().zip(ports) {
        ensure!(
            out.matches(placeholder).count() == 2,
            "the shipped nginx config must name {placeholder} in both upstreams"
        );
        out = out.replace(placeholder, &format!("server 127.0.0.1:{port} "));
    }
    Ok(out)
}

/// A free loopback port (bound, read, released).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A directory of its own under the target's temporary directory.
fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// nginx running one process in the foreground, in its own directory.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    /// Starts nginx with `site` (an http-level file, like the shipped one)
    /// and waits until it accepts connections.
    async fn start(binary: &str, site: &str) -> anyhow::Result<Self> {
        let dir = scratch_dir("nginx")?;
        let port = free_port()?;
        ensure!(
            site.matches(LISTEN_PLACEHOLDER).count() == 1,
            "the shipped nginx config must listen on {LISTEN_PLACEHOLDER} exactly once"
        );
        let site = site.replace(LISTEN_PLACEHOLDER, &format!("127.0.0.1:{port};"));
        std::fs::write(dir.join("site.conf"), site)?;
        let d = dir.display();
        // Only what running outside /etc/nginx needs; everything about
        // proxying is in the shipped file.
        let main = format!(
            "error_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   log_format upstreams '$request_method $uri $status upstreams=[$upstream_addr] statuses=[$upstream_status]';\n\
             \x20   access_log {d}/access.log upstreams;\n\
             \x20   client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   include {d}/site.conf;\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main)?;
        // One process (no master): killing it on drop leaves nothing behind.
        let child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg(format!(
                "daemon off; master_process off; pid {}/nginx.pid;",
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start nginx")?;
        let mut nginx = Self { child, dir, port };
        let listening = timeout(WAIT, async {
            loop {
                if let Some(status) = nginx.child.try_wait()? {
                    bail!("nginx exited ({status}):\n{}", nginx.error_log());
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        listening.context("nginx did not start listening")??;
        Ok(nginx)
    }

    /// `http://127.0.0.1:PORT`, what clients connect to.
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// Stops nginx (fast shutdown) and removes its directory.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        timeout(WAIT, self.child.wait()).await??;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

// --------------------------------------------------------------- cluster

/// Three instances of the binary behind nginx, sharing one fake BigID.
struct Cluster {
    fake: FakeBigId,
    /// `--stateless` unless a test shows what happens without it.
    mode: &'static [&'static str],
    /// `None` while an instance is down.
    instances: Vec<Option<HttpServer>>,
    ports: [u16; 3],
    nginx: Nginx,
}

impl Cluster {
    /// Starts the instances on ephemeral ports, then nginx with `conf`
    /// (the shipped file, or a variant of it) pointing at them.
    async fn start(nginx: &str, conf: &str) -> anyhow::Result<Self> {
        Self::start_in_mode(nginx, conf, &["--stateless"]).await
    }

    /// [`Cluster::start`] with the instances started with `mode`.
    async fn start_in_mode(
        nginx: &str,
        conf: &str,
        mode: &'static [&'static str],
    ) -> anyhow::Result<Self> {
        let fake = FakeBigId::start().await?;
        let mut instances = Vec::new();
        let mut ports = [0; 3];
        for port in &mut ports {
            let instance = start_instance(&fake, "127.0.0.1:0", mode).await?;
            *port = instance
                .base
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .context("no port in the ready line")?;
            instances.push(Some(instance));
        }
        let nginx = Nginx::start(nginx, &render(conf, &ports)?).await?;
        Ok(Self {
            fake,
            mode,
            instances,
            ports,
            nginx,
        })
    }

    /// SIGTERM to instance `i`; waits until it has exited (0) and returns
    /// its stderr.
    async fn stop_instance(&mut self, i: usize) -> anyhow::Result<String> {
        let instance = self.instances[i].take().context("instance already down")?;
        instance.terminate()?;
        let (status, stderr) = instance.wait().await?;
        ensure!(status.success(), "instance {i} exited with {status}");
        ensure!(!stderr.contains("panicked"), "{stderr:.3000}");
        Ok(stderr)
    }

    /// Starts instance `i` again on its port and waits until it is ready.
    async fn restart_instance(&mut self, i: usize) -> anyhow::Result<()> {
        let bind = format!("127.0.0.1:{}", self.ports[i]);
        self.instances[i] = Some(start_instance(&self.fake, &bind, self.mode).await?);
        Ok(())
    }

    /// Stops everything; fails if an instance did not exit cleanly.
    async fn stop(self) -> anyhow::Result<()> {
        for instance in self.instances.into_iter().flatten() {
            instance.terminate()?;
            let (status, stderr) = instance.wait().await?;
            ensure!(status.success(), "exit status {status}");
            ensure!(!stderr.contains("panicked"), "{stderr:.3000}");
        }
        self.nginx.stop().await?;
        self.fake.stop().await;
        Ok(())
    }
}

/// One instance as the docs run it (`mode` is `--stateless`), with
/// MCP_AUTH_TOKEN (set by [`HttpServer`]), logging at info (access lines,
/// shutdown lines).
async fn start_instance(fake: &FakeBigId, bind: &str, mode: &[&str]) -> anyhow::Result<HttpServer> {
    HttpServer::start_at(bind, fake.url().as_str(), mode, &[("RUST_LOG", "info")]).await
}

// ----------------------------------------------------------------- calls

/// What became of the calls of a run.
#[derive(Default)]
struct Stats {
    ok: AtomicUsize,
    failed: AtomicUsize,
    lost: AtomicUsize,
    misrouted: AtomicUsize,
    problems: Mutex<Vec<String>>,
}

impl Stats {
    fn done(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.lost.load(Ordering::Relaxed)
            + self.misrouted.load(Ordering::Relaxed)
    }

    fn note(&self, counter: &AtomicUsize, problem: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        if problems.len() < 20 {
            problems.push(problem);
        }
    }

    /// Judges the `result` of a call made for `user`: a success carrying a
    /// token issued to that very user.
    fn judge(&self, who: &str, user: &str, result: &Value) {
        if result["isError"] == json!(true) {
            self.note(&self.failed, format!("{who}: isError: {result}"));
            return;
        }
        match token_and_user(&result["structuredContent"]) {
            Some((_, owner)) if owner == user => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some((_, owner)) => {
                self.note(
                    &self.misrouted,
                    format!("{who}: asked for {user}, got {owner}"),
                );
            }
            None => self.note(&self.failed, format!("{who}: no token in {result}")),
        }
    }
}

/// The arguments of call `n` for `user`: logins and token exchanges in turn.
fn call_for(user: &str, n: u64) -> (&'static str, Value) {
    if n.is_multiple_of(2) {
        (
            "create_session",
            json!({"username": user, "password": format!("{user}-password")}),
        )
    } else {
        (
            "refresh_access_token",
            json!({"user_token": format!("demo-user-token-{user}"), "force_refresh": true}),
        )
    }
}

/// One self-contained 2026-07-28 request (no handshake, no session): the
/// protocol version and client capabilities travel in `_meta` and headers.
async fn modern_call(
    http: &reqwest::Client,
    base: &str,
    id: u64,
    user: &str,
    stats: &Stats,
) -> anyhow::Result<()> {
    let (tool, arguments) = call_for(user, id);
    let mut message = tool_call(id, tool, arguments);
    message["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "replicas-test", "version": "0"},
    });
    let who = format!("2026-07-28 request {id}");
    let sent = http
        .post(format!("{base}/mcp"))
        .bearer_auth(MCP_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(message.to_string())
        .send();
    let response = match timeout(QUICK * 2, sent).await {
        Err(_) => {
            stats.note(&stats.lost, format!("{who}: no answer"));
            return Ok(());
        }
        Ok(Err(e)) => {
            stats.note(&stats.failed, format!("{who}: {e}"));
            return Ok(());
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let body = match timeout(QUICK * 2, response.text()).await {
        Ok(Ok(body)) => body,
        _ => {
            stats.note(&stats.lost, format!("{who}: body never ended"));
            return Ok(());
        }
    };
    if status != 200 {
        stats.note(&stats.failed, format!("{who}: HTTP {status}: {body:.300}"));
        return Ok(());
    }
    // Plain JSON under --stateless; an SSE body would carry it in `data:`.
    let json_text = body
        .lines()
        .find_map(|l| l.strip_prefix("data:"))
        .unwrap_or(&body);
    let reply: Value = serde_json::from_str(json_text.trim())
        .with_context(|| format!("{who}: not JSON: {body:.300}"))?;
    if reply["id"] != json!(id) {
        stats.note(
            &stats.misrouted,
            format!("{who}: answered as {}", reply["id"]),
        );
    } else if let Some(result) = reply.get("result") {
        stats.judge(&who, user, result);
    } else {
        stats.note(&stats.failed, format!("{who}: {reply}"));
    }
    Ok(())
}

/// A 2025-11-25 client through the balancer: rmcp's Streamable HTTP client
/// pinned to that version, which starts with `initialize`.
async fn handshake_client(base: &str) -> anyhow::Result<Client> {
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp")).auth_header(MCP_TOKEN);
    let transport = StreamableHttpClientTransport::with_client(http_client(), config);
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("replicas-test", "0"),
    )
    .with_protocol_version(ProtocolVersion::V_2025_11_25);
    Ok(client.serve(transport).await?)
}

/// Keeps sending self-contained 2026-07-28 requests until `stop`.
async fn modern_worker(
    base: String,
    next_id: Arc<AtomicU64>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let http = http_client();
    while !stop.load(Ordering::Relaxed) {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        modern_call(&http, &base, id, &format!("modern{id}"), &stats).await?;
    }
    Ok(())
}

/// Until `stop`: a 2025-11-25 client initializes, makes three calls (each
/// for a user of its own), and goes; the handshake counts as a call too.
async fn handshake_worker(
    base: String,
    worker: usize,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let who = format!("2025-11-25 client {worker}/{round}");
        let client = match timeout(QUICK * 2, handshake_client(&base)).await {
            Err(_) => {
                stats.note(&stats.lost, format!("{who}: initialize: no answer"));
                continue;
            }
            Ok(Err(e)) => {
                stats.note(&stats.failed, format!("{who}: initialize: {e:#}"));
                continue;
            }
            Ok(Ok(client)) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                client
            }
        };
        for n in 0..3 {
            let user = format!("classic{worker}x{round}x{n}");
            let (tool, arguments) = call_for(&user, n);
            let params = CallToolRequestParams::new(tool)
                .with_arguments(arguments.as_object().cloned().unwrap_or_default());
            match timeout(QUICK * 2, client.call_tool(params)).await {
                Err(_) => stats.note(&stats.lost, format!("{who}: {tool}: no answer")),
                Ok(Err(e)) => stats.note(&stats.failed, format!("{who}: {tool}: {e}")),
                Ok(Ok(result)) => stats.judge(&who, &user, &serde_json::to_value(&result)?),
            }
        }
        let _ = timeout(QUICK, client.cancel()).await;
        round += 1;
    }
    Ok(())
}

/// How many calls instance stderr says were in flight when it was told to stop.
fn in_flight_at_sigterm(stderr: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| l.split("waiting for ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}

/// Tool calls an instance has answered, from its access log lines.
fn served_calls(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("path=\"/mcp\"") && l.contains("status=200"))
        .count()
}

// ----------------------------------------------------------------- tests

/// Clients of both protocol generations call through nginx while each of
/// the three instances in turn gets SIGTERM, exits, and starts again on its
/// port: not one call fails or goes unanswered, and every answer carries
/// the token of the user its request named, under the id it was sent with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_nginx_loses_no_call() -> anyhow::Result<()> {
    let Some(nginx) = nginx() else {
        return Ok(());
    };
    let began = Instant::now();
    let scale = soak() as usize;
    let (modern_workers, handshake_workers, rolls) = (4 * scale, 4 * scale, scale);
    let mut cluster = Cluster::start(nginx, SHIPPED_CONF).await?;
    // Calls spend a while in BigID, so SIGTERM finds some in flight.
    cluster
        .fake
        .set_fault(Fault::Slow(Duration::from_millis(25)));

    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let mut workers = JoinSet::new();
    for _ in 0..modern_workers {
        workers.spawn(modern_worker(
            cluster.nginx.base(),
            next_id.clone(),
            stats.clone(),
            stop.clone(),
        ));
    }
    for w in 0..handshake_workers {
        workers.spawn(handshake_worker(
            cluster.nginx.base(),
            w,
            stats.clone(),
            stop.clone(),
        ));
    }
    // Under load before the first restart.
    timeout(WAIT, async {
        while stats.done() < 2 * (modern_workers + handshake_workers) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("no calls went through nginx")?;

    let restart_began = Instant::now();
    let done_before = stats.done();
    let mut in_flight = 0;
    let mut during_each = Vec::new();
    for _ in 0..rolls {
        for i in 0..3 {
            let before = stats.done();
            let stderr = cluster.stop_instance(i).await?;
            in_flight += in_flight_at_sigterm(&stderr);
            cluster.restart_instance(i).await?;
            during_each.push(stats.done() - before);
            // The load goes on between restarts, so each SIGTERM meets it.
            let resume = stats.done() + modern_workers + handshake_workers;
            timeout(WAIT, async {
                while stats.done() < resume {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .context("calls stopped going through nginx")?;
        }
    }
    let restart_took = restart_began.elapsed();
    let during_restart = stats.done() - done_before;

    // Each restarted instance is back in nginx's rotation and answering.
    timeout(WAIT, async {
        while cluster
            .instances
            .iter_mut()
            .flatten()
            .any(|i| served_calls(&i.stderr_so_far()) == 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("a restarted instance never got a call from nginx")?;

    stop.store(true, Ordering::Relaxed);
    timeout(WAIT, async {
        while let Some(worker) = workers.join_next().await {
            worker??;
        }
        anyhow::Ok(())
    })
    .await
    .context("the clients did not finish")??;

    let access = cluster.nginx.access_log();
    // `statuses=[502, 200]`: nginx met an error (502 stands for a broken or
    // refused connection) or a 503 and sent the request on.
    let mut retried = std::collections::BTreeMap::<String, usize>::new();
    for line in access.lines().filter(|l| l.contains(", ")) {
        let statuses = line.split("statuses=").nth(1).unwrap_or(line);
        *retried.entry(statuses.to_owned()).or_default() += 1;
    }
    let requests = access.lines().count();
    let error_log = cluster.nginx.error_log();
    let problems = stats
        .problems
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    eprintln!(
        "rolling restart: {rolls} round(s) over 3 instances in {restart_took:?}; \
         {during_restart} calls completed meanwhile ({during_each:?} per restart), \
         {in_flight} in flight at the SIGTERMs; {} calls in all: ok {}, failed {}, lost {}, \
         misrouted {}; nginx: {requests} requests, retried: {retried:?}; \
         test took {:?}",
        stats.done(),
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.lost.load(Ordering::Relaxed),
        stats.misrouted.load(Ordering::Relaxed),
        began.elapsed(),
    );
    assert!(
        problems.is_empty(),
        "calls went wrong: {problems:#?}\nnginx error log:\n{error_log:.4000}"
    );
    assert_eq!(stats.misrouted.load(Ordering::Relaxed), 0);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
    assert!(
        during_each.iter().sum::<usize>() >= during_each.len(),
        "the restarts happened without load: {during_each:?}"
    );
    assert!(!error_log.contains("[emerg]"), "{error_log:.3000}");
    cluster.stop().await
}

/// A legacy SSE session through the sticky upstream: the stream and every
/// POST of the session reach one instance, so the handshake and the calls
/// work; when that instance restarts, the open streams end (the sessions
/// lived there), and a client that reconnects gets a working session again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_through_the_sticky_upstream_works_until_its_instance_restarts()
-> anyhow::Result<()> {
    let Some(nginx) = nginx() else {
        return Ok(());
    };
    let mut cluster = Cluster::start(nginx, SHIPPED_CONF).await?;
    let base = cluster.nginx.base();
    let stats = Stats::default();
    let mut sessions = Vec::new();
    for s in 0..4 {
        sessions.push(Legacy::connect(&base).await.context("legacy handshake")?);
        let legacy = sessions.last_mut().context("just pushed")?;
        let ids = [1, 2, 3];
        for id in ids {
            let (tool, arguments) = call_for(&format!("legacy{s}x{id}"), id);
            legacy.post(&tool_call(id, tool, arguments)).await?;
        }
        for answer in timeout(WAIT, legacy.answers(&ids)).await?? {
            let id = answer["id"].as_u64().context("an answer without id")?;
            stats.judge("legacy", &format!("legacy{s}x{id}"), &answer["result"]);
        }
    }
    assert_eq!(stats.ok.load(Ordering::Relaxed), 12, "{:?}", stats.problems);

    // Every client here comes from 127.0.0.1: one instance holds them all.
    let holders: Vec<usize> = (0..3)
        .filter(|i| {
            cluster.instances[*i]
                .as_mut()
                .is_some_and(|i| i.stderr_so_far().contains("path=\"/sse\""))
        })
        .collect();
    assert_eq!(holders.len(), 1, "streams opened on {holders:?}");
    let home = holders[0];

    cluster.stop_instance(home).await?;
    for legacy in &mut sessions {
        let ended = timeout(WAIT, async {
            loop {
                match legacy.next_event().await {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => return,
                }
            }
        })
        .await;
        ended.context("an SSE stream outlived its instance")?;
    }
    // nginx sends the reconnecting client to another instance meanwhile.
    let mut again = Legacy::connect(&base).await.context("reconnect")?;
    again
        .post(&tool_call(
            7,
            "create_session",
            json!({"username": "back", "password": "back-password"}),
        ))
        .await?;
    let answer = timeout(WAIT, again.answer(7)).await??;
    stats.judge("reconnected", "back", &answer["result"]);
    assert_eq!(stats.ok.load(Ordering::Relaxed), 13, "{:?}", stats.problems);
    drop(again);

    cluster.restart_instance(home).await?;
    cluster.stop().await
}

/// The sticky line matters: with plain round-robin for `/sse` and
/// `/message`, the POSTs of a session land on instances that never saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_sse_without_sticky_routing_loses_its_session() -> anyhow::Result<()> {
    let Some(nginx) = nginx() else {
        return Ok(());
    };
    assert_eq!(SHIPPED_CONF.matches(STICKY_LINE).count(), 1);
    let round_robin = SHIPPED_CONF.replace(STICKY_LINE, "");
    let cluster = Cluster::start(nginx, &round_robin).await?;
    let base = cluster.nginx.base();
    let mut refused = 0;
    for attempt in 0..3 {
        match Legacy::connect(&base).await {
            Err(e) => {
                let message = format!("{e:#}");
                assert!(message.contains("404"), "attempt {attempt}: {message}");
                refused += 1;
            }
            Ok(legacy) => {
                let mut statuses = Vec::new();
                for id in 1..=3 {
                    let body = tool_call(id, "create_session", json!({})).to_string();
                    statuses.push(legacy.post_raw(body).await?.status().as_u16());
                }
                refused += usize::from(statuses.contains(&404));
            }
        }
    }
    assert_eq!(refused, 3, "round-robin kept a legacy session together");
    cluster.stop().await
}

/// Why the instances run `--stateless`: a stateful session lives in the
/// instance that issued its `Mcp-Session-Id`, and the balancer sends the
/// session's later requests to the others, which do not know it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sessions_break_behind_the_balancer() -> anyhow::Result<()> {
    let Some(nginx) = nginx() else {
        return Ok(());
    };
    let cluster = Cluster::start_in_mode(nginx, SHIPPED_CONF, &[]).await?;
    let http = http_client();
    let post = |session: Option<&str>, message: Value| {
        let mut request = http
            .post(format!("{}/mcp", cluster.nginx.base()))
            .bearer_auth(MCP_TOKEN)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(message.to_string());
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "replicas-test", "version": "0"}}});
    let opened = timeout(WAIT, post(None, initialize)).await??;
    ensure!(opened.status() == 200, "initialize: {}", opened.status());
    let session = opened
        .headers()
        .get("mcp-session-id")
        .context("a stateful instance issues a session id")?
        .to_str()?
        .to_owned();
    let mut statuses = Vec::new();
    for id in 2..=4 {
        let ping = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
        statuses.push(timeout(WAIT, post(Some(&session), ping)).await??.status());
    }
    assert!(
        statuses.contains(&reqwest::StatusCode::NOT_FOUND),
        "every request of the session reached its instance: {statuses:?}"
    );
    cluster.stop().await
}

/// A rolling restart may stop an instance the moment it says it is ready:
/// that stop is still graceful (exit status 0 after "signal received"),
/// never the signal's default action of killing the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_ready_line_still_stops_gracefully() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    for attempt in 0..10 {
        let instance = start_instance(&fake, "127.0.0.1:0", &["--stateless"]).await?;
        instance.terminate()?;
        let (status, stderr) = instance.wait().await?;
        assert!(
            status.success(),
            "attempt {attempt}: {status}\n{stderr:.2000}"
        );
        assert!(stderr.contains("signal received"), "{stderr:.2000}");
    }
    fake.stop().await;
    Ok(())
}

/// docs/scale-out.md shows the shipped nginx file verbatim, so the
/// configuration a reader copies is the one these tests run.
#[test]
fn scale_out_doc_embeds_the_shipped_nginx_config() {
    let doc = include_str!("../docs/scale-out.md");
    let block = format!("```nginx\n{SHIPPED_CONF}```\n");
    assert!(
        doc.contains(&block),
        "docs/scale-out.md must contain deploy/nginx/bigid-auth-mcp.conf verbatim in an nginx block"
    );
}
