//! Resource bounds of the HTTP transport: after load, and
//! after clients that leave cleanly or vanish mid-call, file descriptors,
//! memory, sessions and tasks return to where they were; a client opening
//! sessions without end meets the cap and a clear 503; oversized bodies get
//! 413; clients trickling a request byte by byte cannot hold the server.
//!
//! `BIGID_MCP_SOAK=N` runs N times more rounds and connections.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use bigid_auth_mcp::{
    bigid,
    config::{Defaults, HttpConfig},
    demo::{FakeBigId, Fault},
    secret::Secret,
    server::BigIdServer,
    transport::http::{self, Limits},
};
use common::{
    http::{HttpServer, Legacy, MCP_TOKEN, QUICK, http_client, streamable, tool_call},
    *,
};
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::timeout,
};

/// Polls `condition` every 50 ms for at most `limit`.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn initialize(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "resources", "version": "0"}}})
}

/// POSTs one message to `/mcp` (with the session id, if any).
async fn post_mcp(
    http: &reqwest::Client,
    base: &str,
    session: Option<&str>,
    message: &Value,
) -> anyhow::Result<reqwest::Response> {
    let mut request = http
        .post(format!("{base}/mcp"))
        .bearer_auth(MCP_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    Ok(request.send().await?)
}

/// Opens a Streamable HTTP session by hand; returns its id.
async fn open_session(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = post_mcp(http, base, None, &initialize(0)).await?;
    ensure!(
        response.status() == 200,
        "initialize: {}",
        response.status()
    );
    let id = response
        .headers()
        .get("mcp-session-id")
        .context("no session id")?
        .to_str()?
        .to_owned();
    response.text().await?;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let ack = post_mcp(http, base, Some(&id), &initialized).await?;
    ensure!(ack.status().is_success(), "initialized: {}", ack.status());
    Ok(id)
}

/// Waits (bounded) until BigID has received the login of `user`: the call
/// is then surely in flight on the server.
async fn reached_bigid(fake: &FakeBigId, user: &str) -> anyhow::Result<()> {
    let needle = format!("\"{user}\"");
    let arrived = eventually(QUICK, || {
        fake.requests()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&needle))
    })
    .await;
    ensure!(arrived, "the call of {user} never reached BigID");
    Ok(())
}

/// A session that starts a slow call and vanishes while it runs: the HTTP
/// connection is dropped after the response head, before the answer.
/// Returns the session id: the session itself lives on until it idles out.
async fn vanish_mid_call_streamable(
    fake: &FakeBigId,
    base: &str,
    user: String,
) -> anyhow::Result<Option<String>> {
    // Its own client: dropping it closes its connections.
    let http = http_client();
    let session = open_session(&http, base).await?;
    let call = tool_call(
        1,
        "create_session",
        json!({"username": user, "password": format!("{user}-password")}),
    );
    let response = timeout(QUICK, post_mcp(&http, base, Some(&session), &call)).await??;
    ensure!(response.status() == 200, "{}", response.status());
    reached_bigid(fake, &user).await?;
    drop(response);
    drop(http);
    Ok(Some(session))
}

/// A legacy session that posts a slow call and drops its event stream
/// before the answer comes.
async fn vanish_mid_call_legacy(
    fake: &FakeBigId,
    base: &str,
    user: String,
) -> anyhow::Result<Option<String>> {
    let legacy = Legacy::connect(base).await?;
    legacy
        .post(&tool_call(
            1,
            "create_session",
            json!({"username": user, "password": format!("{user}-password")}),
        ))
        .await?;
    reached_bigid(fake, &user).await?;
    drop(legacy);
    Ok(None)
}

/// A session that does its calls and leaves properly.
async fn clean_session(base: String, legacy: bool, user: String) -> anyhow::Result<()> {
    let login = json!({"username": user, "password": format!("{user}-password")});
    if legacy {
        let mut legacy = Legacy::connect(&base).await?;
        legacy
            .post(&tool_call(1, "create_session", login.clone()))
            .await?;
        let answer = timeout(QUICK, legacy.answer(1)).await??;
        ensure!(answer["result"]["isError"] == json!(false), "{answer}");
    } else {
        let client = streamable(&base).await?;
        let params = CallToolRequestParams::new("create_session")
            .with_arguments(login.as_object().cloned().unwrap_or_default());
        let result = timeout(QUICK, client.call_tool(params)).await??;
        ensure!(result.is_error != Some(true), "{result:?}");
        // rmcp's client sends DELETE for its session on cancel.
        timeout(QUICK, client.cancel()).await??;
    }
    Ok(())
}

/// What becomes of the Streamable HTTP sessions whose client vanished.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vanished {
    /// Left to idle out.
    Abandoned,
    /// Their client comes back later, on a new connection, just to DELETE
    /// them (the binary's idle timeout is 30 min: too long to wait for).
    DeletedLater,
}

/// Runs one round of load: clean sessions of both kinds, then sessions that
/// vanish in the middle of a slow call.
async fn round(
    fake: &FakeBigId,
    base: &str,
    round: usize,
    vanished: Vanished,
) -> anyhow::Result<()> {
    // Up to 4× more sessions per round when soaking; more rounds beyond
    // that. Abandoned Streamable HTTP sessions stay open until they idle out
    // (30 min in the binary), so they must stay under the cap of 256.
    let scale = soak().min(4) as usize;
    fake.set_fault(Fault::None);
    let mut tasks = JoinSet::new();
    for i in 0..16 * scale {
        let user = format!("res{round}x{i}");
        tasks.spawn(clean_session(base.to_owned(), i % 4 == 0, user));
    }
    while let Some(task) = timeout(WAIT, tasks.join_next()).await? {
        task??;
    }
    fake.set_fault(Fault::Slow(Duration::from_millis(600)));
    // Each vanishes only once its call has reached BigID: surely mid-call.
    let vanishing = (0..12 * scale).map(|i| {
        let user = format!("gone{round}x{i}");
        async move {
            match i % 3 {
                0 => vanish_mid_call_legacy(fake, base, user).await,
                _ => vanish_mid_call_streamable(fake, base, user).await,
            }
        }
    });
    let mut sessions = Vec::new();
    for gone in timeout(WAIT, futures_util::future::join_all(vanishing)).await? {
        sessions.extend(gone?);
    }
    if vanished == Vanished::DeletedLater {
        let http = http_client();
        for session in sessions {
            let deleted = http
                .delete(format!("{base}/mcp"))
                .bearer_auth(MCP_TOKEN)
                .header("mcp-session-id", session)
                .send()
                .await?;
            ensure!(
                deleted.status().is_success(),
                "DELETE: {}",
                deleted.status()
            );
        }
    }
    // The abandoned calls finish at BigID on their own; what is measured
    // afterwards is polled until it settles.
    fake.set_fault(Fault::None);
    Ok(())
}

/// The binary under repeated rounds of load and disconnects: its open file
/// descriptors come back to the baseline after every round, and its memory
/// stops growing after the first (a leak per session or per connection
/// would show as growth round after round).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_and_memory_return_to_baseline_after_clean_and_abrupt_disconnects() -> anyhow::Result<()>
{
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[("RUST_LOG", "info")]).await?;
    // Warm up with one identical round: the first sessions and calls allocate
    // for good (the connection pool to BigID, which keeps idle connections
    // for 60 s, allocator arenas, caches). The baseline is taken after it.
    let bigid_port = fake.local_addr().port();
    let fds = || server.fds_by_kind(bigid_port);
    round(&fake, &server.base, 0, Vanished::DeletedLater).await?;
    let quiet = eventually(Duration::from_secs(10), || fds().inbound == 0).await;
    ensure!(quiet, "warm-up connections stayed open: {:?}", fds());
    let (fds0, threads0) = (fds(), server.threads());
    // The pool to BigID holds about as many connections as calls ever ran
    // at once (up to 28 per soak step here; a few more when a connection is
    // reused a moment late). A leak per call would add 28 per round.
    let pool_cap = 40 * soak().min(4) as usize;
    let mut rss = vec![server.rss_kb()];
    let rounds = 2 + soak() as usize;
    for n in 1..=rounds {
        round(&fake, &server.base, n, Vanished::DeletedLater).await?;
        // Every client connection closes; nothing else piles up.
        let settled = eventually(Duration::from_secs(10), || {
            let now = fds();
            now.inbound == 0
                && now.other <= fds0.other
                && now.other_tcp <= fds0.other_tcp
                && now.upstream <= pool_cap
        })
        .await;
        ensure!(
            settled,
            "round {n}: fds {:?}, before {fds0:?} (a connection or file leaked)",
            fds()
        );
        rss.push(server.rss_kb());
    }
    let health = timeout(QUICK, http_client().get(server.url("/healthz")).send()).await??;
    assert_eq!(health.status(), 200);
    eprintln!(
        "resources: fds {fds0:?} -> {:?}, threads {threads0} -> {}, RSS after warm-up and \
         each round (kB) {rss:?}",
        fds(),
        server.threads()
    );
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    assert!(
        last <= first + 8 * 1024,
        "RSS kept growing from round to round: {rss:?} kB"
    );
    // tokio's blocking pool may keep a few idle threads for a while.
    assert!(server.threads() <= threads0 + 8, "threads piled up");
    server.terminate()?;
    let (status, _) = server.wait().await?;
    assert!(status.success());
    Ok(())
}

/// The server on a runtime of its own, so its live tasks can be counted.
struct Isolated {
    runtime: Option<tokio::runtime::Runtime>,
    running: Option<http::Running>,
    base: String,
}

impl Isolated {
    fn start(bigid_url: &reqwest::Url, limits: Limits) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let _inside = runtime.enter();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let mut bigid = bigid_config(bigid_url);
        bigid.timeout = Duration::from_secs(5);
        let server = BigIdServer::new(
            bigid::Client::new(bigid_url, &bigid)?,
            Defaults::default(),
            true,
        );
        let config = HttpConfig {
            bind: listener.local_addr()?,
            auth_token: Some(Secret::new(MCP_TOKEN)),
            allowed_origins: Vec::new(),
            stateless: false,
            oauth: None,
        };
        let running = http::start(listener, server, &config, limits)?;
        let base = format!("http://{}", running.local_addr());
        drop(_inside);
        Ok(Self {
            runtime: Some(runtime),
            running: Some(running),
            base,
        })
    }

    fn tasks(&self) -> usize {
        self.runtime
            .as_ref()
            .map_or(0, |rt| rt.metrics().num_alive_tasks())
    }

    fn sessions(&self) -> usize {
        self.running
            .as_ref()
            .map_or(0, http::Running::active_sessions)
    }

    fn addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .map(http::Running::local_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        // Dropping `Running` stops the accept loop; the runtime (inside an
        // async test, where blocking is not allowed) is let go in the background.
        drop(self.running.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Every session ends one way or another (DELETE, stream dropped, idle
/// expiry, no initialize) and takes its tasks with it: the session count
/// returns to 0 and the server runtime's live tasks to the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_tasks_are_reclaimed_however_clients_leave() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = Isolated::start(
        fake.url(),
        Limits {
            // Short enough to wait for, long enough that a loaded machine
            // does not idle out a session between its own messages.
            session_idle: Duration::from_secs(3),
            init_timeout: Duration::from_secs(2),
            ..Limits::default()
        },
    )?;
    // An identical warm-up round first: the connection pool to BigID keeps
    // idle connections (each a task) for 60 s; the baseline includes them.
    round(&fake, &server.base, 0, Vanished::Abandoned).await?;
    ensure!(
        eventually(WAIT, || server.sessions() == 0).await,
        "warm-up sessions were never reclaimed"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = server.tasks();

    round(&fake, &server.base, 1, Vanished::Abandoned).await?;
    // Sessions that never initialize: a bare event stream, a bare POST.
    let http = http_client();
    let silent = http
        .get(format!("{}/sse", server.base))
        .bearer_auth(MCP_TOKEN)
        .send()
        .await?;
    let bare = post_mcp(&http, &server.base, None, &initialize(0)).await?;
    ensure!(bare.status() == 200);
    let busy = (server.sessions(), server.tasks());
    ensure!(busy.0 > 0, "sessions were open");

    // Abandoned Streamable HTTP sessions live until they idle out (1.5 s).
    let reclaimed = eventually(WAIT, || server.sessions() == 0).await;
    ensure!(reclaimed, "{} sessions never reclaimed", server.sessions());
    drop((silent, bare));
    // A few tasks of slack: the pool may hold a connection or two more than
    // after the warm-up. A leak per session would be dozens.
    let settled = eventually(WAIT, || server.tasks() <= baseline + 4).await;
    eprintln!(
        "reclaim: sessions {} -> {}, tasks {baseline} -> {} -> {}",
        busy.0,
        server.sessions(),
        busy.1,
        server.tasks()
    );
    ensure!(
        settled,
        "{} tasks still alive, {baseline} before the load",
        server.tasks()
    );
    Ok(())
}

/// A client that opens sessions without end (never closing one) meets the
/// cap: a 503 with a JSON reason and `Retry-After` on both transports, while
/// memory stays bounded, `/healthz` and open sessions keep working, and a
/// closed session's slot is usable again. Oversized bodies get 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_sessions_without_end_meets_the_cap_with_a_clear_503() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[("RUST_LOG", "info")]).await?;
    let http = http_client();
    let rss0 = server.rss_kb();
    let mut opened = Vec::new();
    let refusal = loop {
        ensure!(opened.len() < 1000, "no cap after 1000 sessions");
        let response = post_mcp(&http, &server.base, None, &initialize(0)).await?;
        if response.status() == 503 {
            break response;
        }
        ensure!(response.status() == 200, "{}", response.status());
        let id = response
            .headers()
            .get("mcp-session-id")
            .context("session id")?
            .to_str()?
            .to_owned();
        response.text().await?;
        opened.push(id);
    };
    assert_eq!(opened.len(), 256, "the default cap");
    assert_eq!(
        refusal.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"5"[..])
    );
    let body: Value = refusal.json().await?;
    assert_eq!(
        body["error"]["data"]["error"], "too_many_sessions",
        "{body}"
    );
    let sse = http
        .get(server.url("/sse"))
        .bearer_auth(MCP_TOKEN)
        .send()
        .await?;
    assert_eq!(sse.status(), 503);
    let grown_mb = server.rss_kb().saturating_sub(rss0) / 1024;
    assert!(grown_mb < 64, "256 idle sessions cost {grown_mb} MB");

    // Open sessions and /healthz still answer.
    let health = http.get(server.url("/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let listed = post_mcp(&http, &server.base, Some(&opened[0]), &list).await?;
    assert_eq!(listed.status(), 200);
    assert!(listed.text().await?.contains("create_session"));

    // Oversized bodies: 413, on both transports' POST routes.
    let big = json!({"jsonrpc": "2.0", "id": 2, "method": "ping",
                     "params": {"pad": "x".repeat(2 << 20)}});
    let too_big = post_mcp(&http, &server.base, Some(&opened[0]), &big).await;
    assert!(refused_as_too_large(too_big), "POST /mcp with 2 MiB");
    let too_big = http
        .post(server.url("/message?sessionId=whatever"))
        .bearer_auth(MCP_TOKEN)
        .body(big.to_string())
        .send()
        .await;
    assert!(
        refused_as_too_large(too_big.map_err(anyhow::Error::from)),
        "POST /message with 2 MiB"
    );

    // Closing one frees its slot.
    let closed = http
        .delete(server.url("/mcp"))
        .bearer_auth(MCP_TOKEN)
        .header("mcp-session-id", &opened[0])
        .send()
        .await?;
    assert!(closed.status().is_success(), "{}", closed.status());
    // The slot frees when the session's task ends, a moment after the DELETE.
    let again = timeout(QUICK, async {
        loop {
            let response = post_mcp(&http, &server.base, None, &initialize(0)).await?;
            if response.status() == 200 {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    again.context("the freed slot was never reusable")??;
    server.terminate()?;
    let (status, _) = server.wait().await?;
    assert!(status.success());
    Ok(())
}

/// A 413, or a connection the server closed on a body it would not read to
/// the end (it may answer 413 and close before the client has sent it all).
fn refused_as_too_large(response: anyhow::Result<reqwest::Response>) -> bool {
    match response {
        Ok(response) => response.status() == 413,
        Err(e) => e
            .downcast_ref::<reqwest::Error>()
            .is_some_and(|e| e.is_request() || e.is_body()),
    }
}

/// Sends `head` and then one more byte every `every`, never finishing the
/// request; returns when the server closes the connection (or `limit` passes).
async fn trickle(
    addr: SocketAddr,
    head: String,
    every: Duration,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // Closed, or answered (a 408/400) and then closed.
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(every) => {
                if stream.write_all(b"x").await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

/// Slowloris: clients that trickle request headers or a body byte by byte
/// hold a connection only until the header or body read timeout, and while
/// they trickle the server answers everyone else at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_cannot_hold_the_server() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = Isolated::start(
        fake.url(),
        Limits {
            header_read_timeout: Duration::from_millis(500),
            body_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
    )?;
    let addr = server.addr();
    let legacy = Legacy::connect(&server.base).await?;
    let message = format!("{}{}", server.base, legacy.endpoint);
    let path = message.trim_start_matches(&server.base).to_owned();
    let count = 100 * soak() as usize;
    let mut trickles = JoinSet::new();
    for i in 0..count {
        let head = if i % 2 == 0 {
            // Headers that never end.
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ")
        } else {
            // Headers done, a body that never completes.
            format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {MCP_TOKEN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
            )
        };
        trickles.spawn(trickle(
            addr,
            head,
            Duration::from_millis(100),
            Duration::from_secs(10),
        ));
    }
    // Meanwhile everyone else is served promptly.
    let http = http_client();
    let client = streamable(&server.base).await?;
    for _ in 0..5 {
        let started = Instant::now();
        let health = timeout(QUICK, http.get(format!("{}/healthz", server.base)).send()).await??;
        ensure!(health.status() == 200);
        timeout(QUICK, client.list_all_tools()).await??;
        ensure!(
            started.elapsed() < Duration::from_secs(1),
            "slow while trickled at: {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = Vec::new();
    while let Some(closed) = timeout(WAIT, trickles.join_next()).await? {
        match closed? {
            Some(after) => held.push(after),
            None => anyhow::bail!("a trickling connection was held open for 10 s"),
        }
    }
    held.sort();
    let longest = held.last().copied().unwrap_or_default();
    eprintln!("slowloris: {count} trickling connections, each closed after at most {longest:?}");
    assert!(longest < Duration::from_secs(3), "held for {longest:?}");
    timeout(QUICK, client.cancel()).await??;
    drop(legacy);
    Ok(())
}

/// A legacy client that posts requests but never reads its event stream
/// must not make the server buffer the answers without end: the server
/// stops taking its messages (POSTs wait, then 503 `session_busy`), and once
/// the client reads again, every accepted request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_legacy_stream_pushes_back_instead_of_buffering() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[("RUST_LOG", "info")]).await?;
    let mut legacy = Legacy::connect(&server.base).await?;
    let rss0 = server.rss_kb();
    let mut peak = rss0;
    // tools/list: ~60 bytes in, a few KB out. Unbounded, 10000 unread
    // answers cost some 20 MB beyond what the socket buffers hold.
    let total = 10_000 * soak() as u64;
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let url = server.url(&legacy.endpoint);
    let mut posters = JoinSet::new();
    for _ in 0..8 {
        let (next, stop, url) = (next.clone(), stop.clone(), url.clone());
        posters.spawn(async move {
            let http = http_client();
            let mut accepted = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id > total {
                    break;
                }
                let post = http
                    .post(&url)
                    .bearer_auth(MCP_TOKEN)
                    .body(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string())
                    .send();
                match timeout(Duration::from_secs(1), post).await {
                    Ok(Ok(response)) if response.status() == 202 => accepted.push(id),
                    // 503 session_busy, or a POST held: the server pushes back.
                    Ok(Ok(response)) if response.status() == 503 => {
                        stop.store(true, Ordering::Relaxed)
                    }
                    Err(_) => stop.store(true, Ordering::Relaxed),
                    Ok(Ok(response)) => anyhow::bail!("POST /message: {}", response.status()),
                    Ok(Err(e)) => return Err(e.into()),
                }
            }
            anyhow::Ok(accepted)
        });
    }
    let mut accepted = Vec::new();
    let watching = async {
        while !posters.is_empty() {
            tokio::select! {
                done = posters.join_next() => {
                    if let Some(done) = done {
                        accepted.extend(done??);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    peak = peak.max(server.rss_kb());
                }
            }
        }
        anyhow::Ok(())
    };
    timeout(Duration::from_secs(60), watching).await??;
    let pushed_back = stop.load(Ordering::Relaxed);
    peak = peak.max(server.rss_kb());
    let grown_mb = peak.saturating_sub(rss0) / 1024;
    eprintln!(
        "unread legacy stream: {} of {total} posts accepted, pushed back: {pushed_back}, \
         RSS {} MB -> peak {} MB",
        accepted.len(),
        rss0 / 1024,
        peak / 1024
    );
    // Reading again: every accepted request gets its answer.
    let answered = timeout(Duration::from_secs(60), legacy.answers(&accepted)).await??;
    assert_eq!(answered.len(), accepted.len());
    assert!(pushed_back, "all {total} posts were taken without reading");
    assert!(
        grown_mb < 16,
        "RSS grew by {grown_mb} MB for {} unread answers",
        accepted.len()
    );
    drop(legacy);
    server.terminate()?;
    let (status, _) = server.wait().await?;
    assert!(status.success());
    Ok(())
}
