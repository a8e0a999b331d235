//! The HTTP transports under load, upstream chaos and shutdown, always
//! through the real binary on loopback. Every run is at `RUST_LOG=trace` and
//! ends with a search of the whole log for every password and token that
//! went through it.
//!
//! Default sizes keep each test to a few seconds; `BIGID_MCP_SOAK=N`
//! multiplies sessions, rounds and durations by N for a soak run by hand.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use bigid_auth_mcp::demo::{Chaos, FakeBigId, Fault};
use common::{
    http::{
        HttpServer, Legacy, MCP_TOKEN, QUICK, http_client, streamable, token_and_user, tool_call,
    },
    *,
};
use futures_util::future::join_all;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::{sync::Barrier, task::JoinSet, time::timeout};

/// What happened to the calls of a run.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ok: usize,
    tool_errors: usize,
    misrouted: usize,
    failed: usize,
    lost: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Self) {
        self.ok += o.ok;
        self.tool_errors += o.tool_errors;
        self.misrouted += o.misrouted;
        self.failed += o.failed;
        self.lost += o.lost;
    }
}

/// Secrets seen in a run, to search the log for at the end.
#[derive(Default)]
struct Seen(std::sync::Mutex<Vec<String>>);

impl Seen {
    fn add(&self, secret: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(secret.into());
    }

    #[track_caller]
    fn assert_absent(&self, what: &str, text: &str) {
        let secrets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        assert!(secrets.len() > 1, "no secrets collected");
        for secret in secrets.iter() {
            if let Some(at) = text.find(secret.as_str()) {
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

/// The three calls a user makes per round: a login, an exchange of their
/// user token, another login. Each answer must carry that user's token.
fn round_calls(user: &str, round: usize) -> [(&'static str, Value); 3] {
    [
        (
            "create_session",
            json!({"username": user, "password": format!("{user}-password")}),
        ),
        (
            "refresh_access_token",
            json!({"user_token": format!("demo-user-token-{user}"), "force_refresh": round.is_multiple_of(2)}),
        ),
        (
            "create_session",
            json!({"username": user, "password": format!("{user}-password")}),
        ),
    ]
}

/// Judges one answer (a JSON-RPC `result`) given to `user`.
fn judge(user: &str, result: Option<&Value>, seen: &Seen, tally: &mut Tally) {
    let Some(result) = result else {
        tally.failed += 1;
        return;
    };
    if result["isError"] == json!(true) {
        eprintln!("{user}: isError: {}", result["content"][0]["text"]);
        tally.failed += 1;
        return;
    }
    match token_and_user(&result["structuredContent"]) {
        Some((token, owner)) if owner == user => {
            seen.add(token);
            tally.ok += 1;
        }
        Some((token, owner)) => {
            seen.add(token);
            eprintln!("MISROUTED: {user} got {owner}'s token");
            tally.misrouted += 1;
        }
        None => tally.failed += 1,
    }
}

fn params(tool: &'static str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool)
        .with_arguments(arguments.as_object().cloned().unwrap_or_default())
}

/// One Streamable HTTP session of `user`: `rounds` rounds of three calls
/// sent at once (so ids interleave in the session as well as across them).
async fn streamable_user(
    base: String,
    user: String,
    rounds: usize,
    start: Arc<Barrier>,
    seen: Arc<Seen>,
) -> anyhow::Result<Tally> {
    seen.add(format!("{user}-password"));
    seen.add(format!("demo-user-token-{user}"));
    let client = streamable(&base).await?;
    start.wait().await;
    let mut tally = Tally::default();
    for round in 0..rounds {
        let calls = round_calls(&user, round).map(|(tool, args)| {
            let client = &client;
            async move { timeout(QUICK * 2, client.call_tool(params(tool, args))).await }
        });
        for outcome in join_all(calls).await {
            match outcome {
                Err(_) => tally.lost += 1,
                Ok(Err(e)) => {
                    eprintln!("{user}: JSON-RPC error {e}");
                    tally.failed += 1;
                }
                Ok(Ok(result)) => {
                    let result = serde_json::to_value(&result)?;
                    judge(&user, Some(&result), &seen, &mut tally);
                }
            }
        }
    }
    timeout(QUICK, client.cancel()).await??;
    Ok(tally)
}

/// One legacy SSE session of `user`, its JSON-RPC ids 1, 2, 3, … like any
/// SDK client's; each round's three requests are posted before any answer
/// is read.
async fn legacy_user(
    base: String,
    user: String,
    rounds: usize,
    start: Arc<Barrier>,
    seen: Arc<Seen>,
) -> anyhow::Result<Tally> {
    seen.add(format!("{user}-password"));
    seen.add(format!("demo-user-token-{user}"));
    let mut legacy = Legacy::connect(&base).await?;
    start.wait().await;
    let mut tally = Tally::default();
    let mut next_id = 1;
    for round in 0..rounds {
        let mut ids = Vec::new();
        for (tool, args) in round_calls(&user, round) {
            legacy.post(&tool_call(next_id, tool, args)).await?;
            ids.push(next_id);
            next_id += 1;
        }
        match timeout(QUICK * 2, legacy.answers(&ids)).await {
            Err(_) => tally.lost += ids.len(),
            Ok(Err(e)) => {
                eprintln!("{user}: {e:#}");
                tally.failed += ids.len();
            }
            Ok(Ok(answers)) => {
                for answer in answers {
                    judge(&user, answer.get("result"), &seen, &mut tally);
                }
            }
        }
    }
    Ok(tally)
}

/// 64 Streamable HTTP and 16 legacy SSE sessions, each logged in as its
/// own user and reusing the same JSON-RPC ids, call at once; every answer
/// must come back on the session that asked, carrying that user's token
/// (the JWT's `sub`). Zero misrouted, zero lost, zero failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_reaches_the_session_that_asked_under_load() -> anyhow::Result<()> {
    let scale = soak() as usize;
    // Sessions grow with the soak factor up to 240, under the server's cap
    // of 256; beyond that only the rounds grow.
    let (streamables, legacies, rounds) = ((64 * scale).min(192), (16 * scale).min(48), 3 * scale);
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let seen = Arc::new(Seen::default());
    seen.add(MCP_TOKEN);
    let start = Arc::new(Barrier::new(streamables + legacies));
    let began = Instant::now();
    let mut sessions = JoinSet::new();
    for i in 0..streamables {
        let user = format!("stream{i}");
        sessions.spawn(streamable_user(
            server.base.clone(),
            user,
            rounds,
            start.clone(),
            seen.clone(),
        ));
    }
    for i in 0..legacies {
        let user = format!("legacy{i}");
        sessions.spawn(legacy_user(
            server.base.clone(),
            user,
            rounds,
            start.clone(),
            seen.clone(),
        ));
    }
    let mut tally = Tally::default();
    let all = timeout(Duration::from_secs(120) * soak(), async {
        while let Some(session) = sessions.join_next().await {
            tally += session??;
        }
        anyhow::Ok(())
    })
    .await;
    all.context("sessions did not finish in time")??;
    let calls = (streamables + legacies) * rounds * 3;
    eprintln!(
        "isolation: {calls} calls over {} sessions in {:?}: {tally:?}",
        streamables + legacies,
        began.elapsed()
    );
    assert_eq!(tally.misrouted, 0, "answers reached the wrong session");
    assert_eq!(tally.lost, 0, "answers never arrived");
    assert_eq!(tally.failed, 0, "calls failed");
    assert_eq!(tally.ok, calls);

    server.terminate()?;
    let (status, stderr) = server.wait().await?;
    assert!(status.success(), "{status}");
    assert!(!stderr.contains("panicked"), "{stderr:.3000}");
    seen.assert_absent("the server's trace log", &stderr);
    Ok(())
}

/// BigID fails a random share of requests in every way it can while
/// 32 sessions call in a loop. Each call ends within `--timeout` (retries
/// included) as a correct success or an `isError` result, never a
/// JSON-RPC error or a hang; `/healthz` and new sessions keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_chaos_under_load_ends_every_call_cleanly() -> anyhow::Result<()> {
    let seed = std::env::var("BIGID_MCP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_u64);
    let (streamables, legacies) = (24, 8);
    let duration = Duration::from_secs(4) * soak();
    let call_timeout = Duration::from_secs(2);
    // --timeout bounds the whole call, retries and the 405 fallback included.
    let budget = call_timeout + Duration::from_millis(1500);
    let fake = FakeBigId::start().await?;
    fake.set_chaos(Some(Chaos {
        seed,
        failure_percent: 35,
        max_delay: Duration::from_millis(2500),
    }));
    let url = fake.url().to_string();
    let server = HttpServer::start(&url, &["--timeout", "2"], &[]).await?;
    let seen = Arc::new(Seen::default());
    seen.add(MCP_TOKEN);
    let deadline = Instant::now() + duration;
    let slowest = Arc::new(AtomicUsize::new(0));

    let mut sessions: JoinSet<anyhow::Result<Tally>> = JoinSet::new();
    for i in 0..streamables + legacies {
        let (base, url, seen, slowest) = (
            server.base.clone(),
            url.clone(),
            seen.clone(),
            slowest.clone(),
        );
        sessions.spawn(async move {
            let user = format!("chaos{i}");
            seen.add(format!("{user}-password"));
            seen.add(format!("demo-user-token-{user}"));
            let mut tally = Tally::default();
            let mut legacy = match i < streamables {
                true => None,
                false => Some(Legacy::connect(&base).await?),
            };
            let client = match legacy {
                None => Some(streamable(&base).await?),
                Some(_) => None,
            };
            let mut round = 0;
            let mut id = 1;
            while Instant::now() < deadline {
                for (tool, args) in round_calls(&user, round) {
                    let started = Instant::now();
                    let result: Option<Value> = match (&client, &mut legacy) {
                        (Some(client), _) => {
                            match timeout(budget * 2, client.call_tool(params(tool, args))).await {
                                Err(_) => None,
                                Ok(Err(e)) => anyhow::bail!("{user}: JSON-RPC error: {e}"),
                                Ok(Ok(result)) => Some(serde_json::to_value(&result)?),
                            }
                        }
                        (None, Some(legacy)) => {
                            legacy.post(&tool_call(id, tool, args)).await?;
                            id += 1;
                            match timeout(budget * 2, legacy.answer(id - 1)).await {
                                Err(_) => None,
                                Ok(answer) => {
                                    let answer = answer?;
                                    ensure!(
                                        answer.get("error").is_none(),
                                        "{user}: JSON-RPC error: {answer}"
                                    );
                                    answer.get("result").cloned()
                                }
                            }
                        }
                        (None, None) => anyhow::bail!("no client"),
                    };
                    let took = started.elapsed();
                    slowest.fetch_max(took.as_millis() as usize, Ordering::Relaxed);
                    let Some(result) = result else {
                        tally.lost += 1;
                        continue;
                    };
                    ensure!(
                        took <= budget,
                        "{user}: {tool} took {took:?} (budget {budget:?})"
                    );
                    if result["isError"] == json!(true) {
                        let text = result["content"][0]["text"].as_str().unwrap_or_default();
                        ensure!(
                            result.get("structuredContent").is_none(),
                            "error with structuredContent: {result}"
                        );
                        ensure!(
                            text.contains(&url) || text.contains("rejected"),
                            "{user}: an error that names neither BigID nor a rejection: {text}"
                        );
                        tally.tool_errors += 1;
                    } else {
                        judge(&user, Some(&result), &seen, &mut tally);
                    }
                }
                round += 1;
            }
            if let Some(client) = client {
                timeout(QUICK, client.cancel()).await??;
            }
            Ok(tally)
        });
    }

    // Meanwhile: /healthz answers and new sessions open, throughout.
    let http = http_client();
    let mut probes = 0;
    // At least three probes, however slow a loaded CI box makes each one.
    while Instant::now() < deadline || probes < 3 {
        let health = timeout(QUICK, http.get(server.url("/healthz")).send()).await??;
        ensure!(health.status() == 200, "/healthz: {}", health.status());
        let fresh = timeout(QUICK, streamable(&server.base)).await??;
        timeout(QUICK, fresh.list_all_tools()).await??;
        timeout(QUICK, fresh.cancel()).await??;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut tally = Tally::default();
    let all = timeout(duration + budget * 4, async {
        while let Some(session) = sessions.join_next().await {
            tally += session??;
        }
        anyhow::Ok(())
    })
    .await;
    all.context("sessions did not finish: a call hung")??;
    eprintln!(
        "chaos (seed {seed:#x}): {tally:?}, {} faults injected, slowest call {} ms, {probes} probes",
        fake.chaos_injected(),
        slowest.load(Ordering::Relaxed)
    );
    assert_eq!(tally.misrouted, 0);
    assert_eq!(tally.lost, 0, "calls without an answer within the budget");
    assert_eq!(tally.failed, 0, "successes with a wrong or missing token");
    assert!(tally.ok > 0 && tally.tool_errors > 0, "{tally:?}");
    assert!(fake.chaos_injected() > 10);

    server.terminate()?;
    let (status, stderr) = server.wait().await?;
    assert!(status.success(), "{status}");
    assert!(!stderr.contains("panicked"), "{stderr:.3000}");
    seen.assert_absent("the server's trace log", &stderr);
    Ok(())
}

/// SIGTERM while 32 sessions each have a call in flight (BigID answers
/// slowly): every one of those calls still gets its answer, later calls end
/// at once (refused, not hung), the process exits 0 within the grace period,
/// and nothing reaches BigID or the log after it has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_calls_in_flight_and_exits_zero() -> anyhow::Result<()> {
    let (streamables, legacies) = (24, 8);
    let sessions = streamables + legacies;
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let seen = Arc::new(Seen::default());
    seen.add(MCP_TOKEN);

    enum Session {
        Streamable(common::Client),
        Legacy(Box<Legacy>),
    }
    let mut clients = Vec::new();
    for i in 0..sessions {
        clients.push(match i < streamables {
            true => Session::Streamable(streamable(&server.base).await?),
            false => Session::Legacy(Box::new(Legacy::connect(&server.base).await?)),
        });
    }
    fake.set_fault(Fault::Slow(Duration::from_millis(1500)));
    // Released once every first call has ended: the second calls come after.
    let (release, released) = tokio::sync::watch::channel(false);
    let first_done = Arc::new(AtomicUsize::new(0));
    let mut tasks: JoinSet<anyhow::Result<(Value, bool)>> = JoinSet::new();
    for (i, session) in clients.into_iter().enumerate() {
        let (seen, first_done, mut released) = (seen.clone(), first_done.clone(), released.clone());
        tasks.spawn(async move {
            let user = format!("term{i}");
            seen.add(format!("{user}-password"));
            let login = json!({"username": user, "password": format!("{user}-password")});
            // The call in flight at SIGTERM, then one after it.
            let (first, second) = match session {
                Session::Streamable(client) => {
                    let first = client.call_tool(params("create_session", login.clone()));
                    let first = serde_json::to_value(timeout(WAIT, first).await??)?;
                    first_done.fetch_add(1, Ordering::Relaxed);
                    timeout(WAIT, released.wait_for(|r| *r)).await??;
                    let second = client.call_tool(params("create_session", login));
                    let second = timeout(QUICK, second).await?;
                    (first, second.is_ok())
                }
                Session::Legacy(mut legacy) => {
                    legacy
                        .post(&tool_call(1, "create_session", login.clone()))
                        .await?;
                    let first = timeout(WAIT, legacy.answer(1)).await??;
                    let first = first.get("result").cloned().unwrap_or(first);
                    first_done.fetch_add(1, Ordering::Relaxed);
                    timeout(WAIT, released.wait_for(|r| *r)).await??;
                    let second = async {
                        legacy.post(&tool_call(2, "create_session", login)).await?;
                        legacy.answer(2).await
                    };
                    (first, timeout(QUICK, second).await?.is_ok())
                }
            };
            let mut tally = Tally::default();
            judge(&user, Some(&first), &seen, &mut tally);
            ensure!(
                tally.ok == 1,
                "{user}: the call in flight at SIGTERM failed: {first}"
            );
            Ok((first, second))
        });
    }
    // Every session's call has reached BigID: all 32 are in flight.
    timeout(WAIT, async {
        while fake.request_count() < sessions {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("the calls did not all reach BigID")?;
    let signalled_at = Instant::now();
    server.terminate()?;

    let mut finished = 0;
    let mut later_calls_answered = 0;
    let results = timeout(WAIT, async {
        while first_done.load(Ordering::Relaxed) < sessions && tasks.len() == sessions {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.send_replace(true);
        while let Some(task) = tasks.join_next().await {
            let (_, second) = task??;
            finished += 1;
            later_calls_answered += usize::from(second);
        }
        anyhow::Ok(())
    })
    .await;
    results.context("a call hung across shutdown")??;
    assert_eq!(finished, sessions);

    let (status, stderr) = server.wait().await?;
    let exited_after = signalled_at.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after < Duration::from_secs(10),
        "exit took {exited_after:?}"
    );
    let requests_at_exit = fake.request_count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.request_count(),
        requests_at_exit,
        "BigID was called after the server exited"
    );
    // After "stopped" only the sessions' own tasks wind down (rmcp says
    // "serve finished"): no warning, no error, nothing of ours. One rmcp line
    // is exempt: when the runtime drops a session's worker while another
    // thread is closing it, rmcp reports "fail to close sink … was cancelled";
    // the session was already answered and ended, so it is teardown noise.
    let after: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.contains("bigid_auth_mcp::transport::http: stopped"))
        .skip(1)
        .filter(|l| {
            !(l.contains("rmcp::service: fail to close sink") && l.contains("was cancelled"))
        })
        .filter(|l| {
            l.contains(" WARN ")
                || l.contains(" ERROR ")
                || (l.contains(" INFO ") && l.contains("bigid_auth_mcp"))
        })
        .collect();
    assert!(
        stderr.contains("bigid_auth_mcp::transport::http: stopped"),
        "no `stopped` line:\n{}",
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(after.is_empty(), "logged after `stopped`: {after:#?}");
    assert!(stderr.contains("signal received"), "{stderr:.2000}");
    assert!(!stderr.contains("panicked"), "{stderr:.3000}");
    seen.assert_absent("the server's trace log", &stderr);
    eprintln!(
        "shutdown: {sessions} calls in flight all answered; {later_calls_answered} later calls \
         answered, the rest refused; exit 0 after {exited_after:?}"
    );
    Ok(())
}
