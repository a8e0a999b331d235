//! The fault matrix: every way a real BigID deployment misbehaves, reproduced
//! on loopback and driven through the real tool layer (in-process MCP over a
//! pipe, or the binary over stdio). Each test checks the tool result, what
//! the fake BigID received, and that the server keeps serving afterwards.

mod common;
#[path = "upstream/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use bigid_auth_mcp::demo::{FakeBigId, Fault, Recorded};
use harness::{
    ALICE, ProxiedTls, Relay, TlsBigId, binary, bounded, check, fake, fake_binary, fake_in_process,
    in_process,
};
use reqwest::Method;
use serde_json::{Value, json};

const SESSIONS: &str = "/api/v1/sessions";
const REFRESH: &str = "/api/v1/refresh-access-token";

fn url(fake: &FakeBigId) -> String {
    fake.url().to_string()
}

fn port(fake: &FakeBigId) -> u16 {
    fake.url().port().unwrap_or_default()
}

fn to(requests: &[Recorded], path: &str) -> usize {
    requests.iter().filter(|r| r.path == path).count()
}

fn methods(requests: &[Recorded]) -> Vec<Method> {
    requests.iter().map(|r| r.method.clone()).collect()
}

fn assert_no_secrets(text: &str) {
    for secret in ["alice-password", "demo-user-token-alice"] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

// ----- network ---------------------------------------------------------------

#[tokio::test]
async fn connection_refused_is_retried_reported_and_survived() {
    let addr = harness::closed_port().await;
    let base = format!("http://{addr}/api/v1");
    let mcp = binary(&["--bigid-url", &base, "--timeout", "5"], &ALICE).await;

    let error = mcp.login().await.err();
    assert!(error.contains("is unreachable"), "{error}");
    assert!(error.contains(&format!("{base}/sessions")), "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(mcp.stderr_contains("BigID call failed; retrying").await);

    // BigID comes up on that port: the same server now succeeds.
    let fake = bounded("restart", FakeBigId::start_on(addr))
        .await
        .expect("fake on the freed port");
    let session = mcp.login().await.ok();
    assert_eq!(session.field("username"), "alice");
    let received = fake.requests();
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_slice(&received[0].body).unwrap_or_default();
    assert_eq!(
        body,
        json!({"username": "alice", "password": "alice-password"})
    );
    assert_no_secrets(&mcp.stderr());
    mcp.close().await;
}

#[tokio::test]
async fn connect_timeout_is_shorter_than_the_budget_and_retried() {
    let (listener, _filler) = harness::full_backlog().await;
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}/api/v1").parse().expect("url");
    let mcp = in_process(&base, |c| c.timeout = Duration::from_millis(1500)).await;

    let started = Instant::now();
    let error = mcp.login().await.err();
    let took = started.elapsed();
    // Connect timeout 0.5 s (a third of 1.5 s): three tries fit, not three budgets.
    assert!(error.contains("connect timeout"), "{error}");
    assert!(error.contains("no connection within 0.5 s"), "{error}");
    assert!(error.contains("attempts"), "{error}");
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "one deadline for all attempts: {took:?}"
    );

    // The listener starts accepting: the next call goes through.
    let fake = FakeBigId::serve(listener).expect("serve");
    mcp.login().await.ok();
    assert_eq!(to(&fake.requests(), SESSIONS), 1);
    mcp.close().await;
}

#[tokio::test]
async fn slow_body_past_the_timeout_fails_within_the_budget_without_retry() {
    let (fake, mcp) = fake_in_process(|c| c.timeout = Duration::from_secs(1)).await;
    fake.set_fault(Fault::SlowBody(Duration::from_secs(4)));

    let started = Instant::now();
    let error = mcp.refresh().await.err();
    assert!(error.contains("did not answer within 1 s"), "{error}");
    assert!(
        error.contains(&format!("{}/refresh-access-token", url(&fake))),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_millis(1800));
    assert_eq!(fake.request_count(), 1, "a timeout used the whole budget");

    fake.set_fault(Fault::None);
    mcp.refresh().await.ok();
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn sequential_calls_reuse_one_keep_alive_connection() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    for _ in 0..5 {
        mcp.login().await.ok();
    }
    mcp.call("refresh_access_token", json!({"force_refresh": true}))
        .await
        .ok();
    assert_eq!(fake.request_count(), 6);
    assert_eq!(fake.connections(), 1, "one pooled connection for all calls");
    mcp.close().await;
}

// ----- retries -----------------------------------------------------------------

#[tokio::test]
async fn a_500_then_200_is_retried_and_succeeds() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.fail_times(1, 500);

    let session = mcp.login().await.ok();
    assert_eq!(session.field("success"), true);
    let received = fake.requests();
    assert_eq!(methods(&received), [Method::POST, Method::POST]);
    assert_eq!(
        received[0].body, received[1].body,
        "the same login, repeated"
    );
    mcp.close().await;
}

#[tokio::test]
async fn three_503s_give_up_and_say_how_many_attempts() {
    let (fake, mcp) = fake_binary(&[]).await;
    fake.fail_times(3, 503);

    let error = mcp.refresh().await.err();
    assert!(
        error.contains("answered HTTP 503: Service Unavailable"),
        "{error}"
    );
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(
        error.contains(&format!("{}/refresh-access-token", url(&fake))),
        "{error}"
    );
    let received = fake.requests();
    assert_eq!(to(&received, REFRESH), 3);
    assert!(
        received
            .iter()
            .all(|r| r.authorization.as_deref() == Some("demo-user-token-alice"))
    );

    // The fourth request gets a healthy BigID.
    let token = mcp.refresh().await.ok();
    assert_eq!(token.field("cached"), false);
    assert_eq!(fake.request_count(), 4);
    let log = mcp.stderr();
    assert_eq!(
        log.matches("BigID call failed; retrying").count(),
        2,
        "{log}"
    );
    assert!(log.contains("HTTP 503"), "{log}");
    assert_no_secrets(&log);
    mcp.close().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_for() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.queue_faults([Fault::RetryAfter(429, "1".into())]);

    mcp.login().await.ok();
    let received = fake.requests();
    assert_eq!(received.len(), 2);
    let gap = received[1].received - received[0].received;
    assert!(gap >= Duration::from_millis(950), "waited {gap:?}");
    mcp.close().await;
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_gives_up_at_once() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.queue_faults([Fault::RetryAfter(429, "120".into())]);

    let started = Instant::now();
    let error = mcp.login().await.err();
    assert!(error.contains("HTTP 429: Too Many Requests"), "{error}");
    assert!(
        error.contains("gave up after 1 attempt: BigID asked to retry after 120 s"),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(fake.request_count(), 1);

    mcp.login().await.ok();
    mcp.close().await;
}

#[tokio::test]
async fn retries_stop_at_the_overall_timeout() {
    let (fake, mcp) = fake_in_process(|c| c.timeout = Duration::from_secs(1)).await;
    // A 503 retried at once, then a slow answer that still fits the budget.
    fake.queue_faults([
        Fault::RetryAfter(503, "0".into()),
        Fault::Slow(Duration::from_millis(300)),
    ]);
    mcp.login().await.ok();

    // BigID asks for a wait longer than what is left: no second attempt.
    fake.set_fault(Fault::RetryAfter(503, "2".into()));
    let started = Instant::now();
    let error = mcp.login().await.err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(error.contains("HTTP 503"), "{error}");
    assert!(
        error.contains("gave up after 1 attempt: BIGID_TIMEOUT (1 s) leaves no time for another"),
        "{error}"
    );
    assert_eq!(fake.request_count(), 3, "no attempt past the deadline");
    mcp.close().await;
}

#[tokio::test]
async fn the_405_fallback_shares_the_calls_budget() {
    let (fake, mcp) = fake_in_process(|c| c.timeout = Duration::from_secs(1)).await;
    // 0.7 s for the 405, then 0.7 s for the other method: over the 1 s budget.
    fake.queue_faults([
        Fault::Slow(Duration::from_millis(700)),
        Fault::Slow(Duration::from_millis(700)),
    ]);
    fake.set_fault(Fault::RefreshOnly(Method::POST));
    let started = Instant::now();
    let error = mcp.refresh().await.err();
    assert!(error.contains("did not answer within 1 s"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(methods(&fake.requests()), [Method::GET, Method::POST]);
    mcp.close().await;
}

#[tokio::test]
async fn other_4xx_are_not_retried() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    for status in [400, 404, 422] {
        fake.set_fault(Fault::Status(status));
        let error = mcp.login().await.err();
        assert!(
            error.contains(&format!("answered HTTP {status}")),
            "{error}"
        );
        assert!(!error.contains("attempt"), "{error}");
    }
    assert_eq!(fake.request_count(), 3);
    fake.set_fault(Fault::None);
    mcp.login().await.ok();
    mcp.close().await;
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_retried() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.queue_faults([Fault::Truncated]);
    mcp.refresh().await.ok();
    assert_eq!(to(&fake.requests(), REFRESH), 2);

    fake.set_fault(Fault::Truncated);
    let error = mcp
        .call("refresh_access_token", json!({"force_refresh": true}))
        .await
        .err();
    assert!(error.contains("broke before a complete answer"), "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert_eq!(to(&fake.requests(), REFRESH), 5);
    mcp.close().await;
}

// ----- bodies BigID should not send ----------------------------------------------

/// Sets `fault`, checks the error names `expected` and the URL after exactly
/// one request (none of these is retried), then checks the server recovers.
async fn one_bad_answer(fault: Fault, expected: &str) {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.set_fault(fault.clone());
    let error = mcp.login().await.err();
    assert!(error.contains(expected), "{fault:?}: {error}");
    assert!(
        error.contains(&format!("{}/sessions", url(&fake))),
        "{error}"
    );
    assert_eq!(fake.request_count(), 1, "{fault:?} is not retried");
    fake.set_fault(Fault::None);
    mcp.login().await.ok();
    mcp.close().await;
}

#[tokio::test]
async fn an_html_page_with_status_200_is_an_upstream_error() {
    one_bad_answer(
        Fault::HtmlPage,
        "answered HTTP 200 with an HTML page instead of JSON",
    )
    .await;
}

#[tokio::test]
async fn invalid_json_is_an_upstream_error() {
    one_bad_answer(Fault::InvalidJson, "malformed or truncated JSON").await;
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused() {
    one_bad_answer(
        Fault::Oversized(2 << 20),
        "sent a response larger than 1048576 bytes",
    )
    .await;
}

// ----- BigID's own ways -------------------------------------------------------------

#[tokio::test]
async fn success_false_is_a_rejection_with_bigids_message() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.set_fault(Fault::LoginSuccessFalse);

    let error = mcp.login().await.err();
    assert_eq!(
        error,
        "BigID rejected the username or password (HTTP 200): Login failed: wrong username or password"
    );
    let received = fake.requests();
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_slice(&received[0].body).unwrap_or_default();
    assert_eq!(body, json!({"username": "demo", "password": "demo"}));
    fake.set_fault(Fault::None);
    mcp.login().await.ok();
    mcp.close().await;
}

#[tokio::test]
async fn rejected_credentials_carry_bigids_message_but_no_secret() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    let error = mcp
        .call(
            "create_session",
            json!({"username": "bob", "password": "not-bobs-password"}),
        )
        .await
        .err();
    assert_eq!(
        error,
        "BigID rejected the username or password (HTTP 401): Invalid username or password"
    );
    let error = mcp
        .call(
            "refresh_access_token",
            json!({"user_token": "forged-token-123"}),
        )
        .await
        .err();
    assert_eq!(
        error,
        "BigID rejected the user token (HTTP 401): Invalid user token"
    );
    assert_eq!(fake.request_count(), 2, "rejections are not retried");
    mcp.close().await;
}

#[tokio::test]
async fn refresh_405_on_get_falls_back_to_post_and_remembers() {
    let (fake, mcp) = fake_binary(&[]).await;
    fake.set_fault(Fault::RefreshOnly(Method::POST));

    mcp.refresh().await.ok();
    assert_eq!(methods(&fake.requests()), [Method::GET, Method::POST]);
    assert!(
        mcp.stderr_contains("BIGID_REFRESH_METHOD=post").await,
        "{}",
        mcp.stderr()
    );

    mcp.call("refresh_access_token", json!({"force_refresh": true}))
        .await
        .ok();
    assert_eq!(
        methods(&fake.requests()),
        [Method::GET, Method::POST, Method::POST],
        "the switch is remembered"
    );
    assert_eq!(mcp.stderr().matches("BIGID_REFRESH_METHOD").count(), 1);
    mcp.close().await;
}

#[tokio::test]
async fn refresh_405_on_post_falls_back_to_get() {
    let (fake, mcp) = fake_binary(&["--refresh-method", "post"]).await;
    fake.set_fault(Fault::RefreshOnly(Method::GET));

    mcp.refresh().await.ok();
    assert_eq!(methods(&fake.requests()), [Method::POST, Method::GET]);
    assert!(
        mcp.stderr_contains("BIGID_REFRESH_METHOD=get").await,
        "{}",
        mcp.stderr()
    );
    mcp.close().await;
}

#[tokio::test]
async fn extra_and_missing_optional_fields_are_accepted() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.set_fault(Fault::Minimal);

    let session = mcp.login().await.ok();
    assert_eq!(session.field("permission_count"), 0);
    assert_eq!(session.field("username"), "demo");
    assert!(session.field("firstName").is_null());
    assert!(session.field("auth_token").is_string());
    let token = mcp.refresh().await.ok();
    assert!(token.field("systemToken").is_string());
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn an_access_token_passed_as_user_token_gets_a_hint() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    let session = mcp.login().await.ok();
    let access = session
        .field("auth_token")
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let error = mcp
        .call("refresh_access_token", json!({"user_token": access}))
        .await
        .err();
    assert!(
        error.contains("BigID rejected the user token (HTTP 401): Invalid user token"),
        "{error}"
    );
    assert!(error.contains("already a BigID access token"), "{error}");
    assert!(!error.contains(&access));
    let received = fake.requests();
    assert_eq!(received[1].path, REFRESH);
    assert_eq!(received[1].authorization.as_deref(), Some(access.as_str()));
    mcp.close().await;
}

#[tokio::test]
async fn bearer_scheme_sends_bearer() {
    let fake = fake().await;
    let mcp = in_process(fake.url(), |c| {
        c.auth_scheme = bigid_auth_mcp::config::AuthScheme::Bearer
    })
    .await;
    mcp.refresh().await.ok();
    assert_eq!(
        fake.requests()[0].authorization.as_deref(),
        Some("Bearer demo-user-token")
    );
    mcp.close().await;
}

// ----- TLS ------------------------------------------------------------------------

#[tokio::test]
async fn private_ca_fails_without_ca_cert_and_works_with_it() {
    let TlsBigId {
        fake,
        pki,
        front,
        base,
    } = TlsBigId::start("127.0.0.1", "127.0.0.1").await;

    let mcp = binary(&["--bigid-url", &base], &ALICE).await;
    let error = mcp.login().await.err();
    assert!(
        error.contains(&format!("TLS with BigID at {base}/sessions failed")),
        "{error}"
    );
    assert!(
        error.contains("not signed by a CA this server trusts"),
        "{error}"
    );
    assert!(error.contains("BIGID_CA_CERT"), "{error}");
    assert_eq!(fake.request_count(), 0, "nothing got past the handshake");
    assert!(
        front
            .log()
            .iter()
            .all(|l| l.starts_with("handshake failed"))
    );
    mcp.close().await;

    let ca = harness::temp_file("ca.pem", &pki.ca_pem);
    let ca = ca.arg();
    let mcp = binary(&["--bigid-url", &base, "--ca-cert", ca], &ALICE).await;
    mcp.login().await.ok();
    mcp.refresh().await.ok();
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn a_ca_file_may_hold_several_certificates() {
    let TlsBigId {
        fake,
        pki,
        base,
        front: _front,
    } = TlsBigId::start("localhost", "localhost").await;

    let bundle = format!("{}\n{}", pki.other_ca_pem, pki.ca_pem);
    let bundle = harness::temp_file("bundle.pem", &bundle);
    let mcp = binary(&["--bigid-url", &base, "--ca-cert", bundle.arg()], &ALICE).await;
    mcp.login().await.ok();
    mcp.close().await;

    // The wrong CA alone is still refused.
    let wrong = harness::temp_file("wrong.pem", &pki.other_ca_pem);
    let mcp = binary(&["--bigid-url", &base, "--ca-cert", wrong.arg()], &ALICE).await;
    let error = mcp.login().await.err();
    assert!(
        error.contains("not signed by a CA this server trusts"),
        "{error}"
    );
    assert_eq!(fake.request_count(), 1);
    mcp.close().await;
}

#[tokio::test]
async fn a_certificate_for_another_host_is_named_as_such() {
    let TlsBigId {
        fake,
        pki,
        base,
        front: _front,
    } = TlsBigId::start("bigid.example.com", "127.0.0.1").await;
    let ca = harness::temp_file("ca.pem", &pki.ca_pem);
    let base = base.parse().expect("url");
    let mcp = in_process(&base, |c| c.ca_cert = Some(ca.path().to_owned())).await;
    let error = mcp.login().await.err();
    assert!(error.contains("not issued for this host name"), "{error}");
    assert_eq!(fake.request_count(), 0);
    mcp.close().await;
}

// ----- token cache ------------------------------------------------------------------

#[tokio::test]
async fn a_fresh_system_token_is_reused() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    let first = mcp.refresh().await.ok();
    let second = mcp.refresh().await.ok();
    assert_eq!(first.field("cached"), false);
    assert_eq!(second.field("cached"), true);
    assert_eq!(first.field("systemToken"), second.field("systemToken"));
    assert!(second.field("expires_at").is_string());
    assert_eq!(fake.request_count(), 1);
    mcp.close().await;
}

#[tokio::test]
async fn a_token_is_not_reused_within_a_minute_of_its_expiry() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    // 62 s: reusable for 1-2 s (exp has whole seconds), then inside the margin.
    fake.set_token_ttl(Some(Duration::from_secs(62)));
    let first = mcp.refresh().await.ok();
    let hit = mcp.refresh().await.ok();
    assert_eq!(hit.field("cached"), true);
    assert_eq!(first.field("systemToken"), hit.field("systemToken"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = mcp.refresh().await.ok();
    assert_eq!(expired.field("cached"), false);
    assert_ne!(first.field("systemToken"), expired.field("systemToken"));
    assert_eq!(fake.request_count(), 2);

    // Born inside the margin: never reused.
    fake.set_token_ttl(Some(Duration::from_secs(30)));
    let force = json!({"force_refresh": true});
    mcp.call("refresh_access_token", force).await.ok();
    let again = mcp.refresh().await.ok();
    assert_eq!(again.field("cached"), false);
    assert_eq!(fake.request_count(), 4);
    mcp.close().await;
}

#[tokio::test]
async fn tokens_without_exp_are_not_cached() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.set_token_ttl(None);
    let first = mcp.refresh().await.ok();
    let second = mcp.refresh().await.ok();
    assert_eq!(second.field("cached"), false);
    assert!(first.field("expires_at").is_null());
    assert_ne!(first.field("systemToken"), second.field("systemToken"));
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn force_refresh_bypasses_and_replaces_the_cached_token() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    let first = mcp.refresh().await.ok();
    let forced = mcp
        .call("refresh_access_token", json!({"force_refresh": true}))
        .await
        .ok();
    let after = mcp.refresh().await.ok();
    assert_eq!(forced.field("cached"), false);
    assert_ne!(first.field("systemToken"), forced.field("systemToken"));
    assert_eq!(after.field("cached"), true);
    assert_eq!(after.field("systemToken"), forced.field("systemToken"));
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn no_token_cache_asks_bigid_every_time() {
    let (fake, mcp) = fake_binary(&["--no-token-cache"]).await;
    let first = mcp.refresh().await.ok();
    let second = mcp.refresh().await.ok();
    assert_eq!(first.field("cached"), false);
    assert_eq!(second.field("cached"), false);
    assert_eq!(to(&fake.requests(), REFRESH), 2);
    mcp.close().await;
}

#[tokio::test]
async fn twenty_concurrent_refreshes_make_one_upstream_request() {
    let (fake, mcp) = fake_binary(&[]).await;
    // Slow enough that all twenty calls arrive while the first is in flight.
    fake.set_fault(Fault::Slow(Duration::from_millis(800)));
    let calls = (0..20).map(|_| mcp.refresh());
    let results = futures_util::future::join_all(calls).await;

    assert_eq!(fake.request_count(), 1, "single flight");
    let results: Vec<_> = results.into_iter().map(|r| r.ok()).collect();
    let token = results[0].field("systemToken").clone();
    assert!(results.iter().all(|r| r.field("systemToken") == &token));
    let fetched = results
        .iter()
        .filter(|r| r.field("cached") == false)
        .count();
    assert_eq!(fetched, 1, "exactly one call went upstream");
    mcp.close().await;
}

#[tokio::test]
async fn failures_are_not_cached() {
    let (fake, mcp) = fake_in_process(|_| {}).await;
    fake.fail_times(3, 503);
    mcp.refresh().await.err();
    let next = mcp.refresh().await.ok();
    assert_eq!(next.field("cached"), false);
    assert_eq!(fake.request_count(), 4);
    mcp.close().await;
}

// ----- proxies ----------------------------------------------------------------------

const PROXY_VARS: [&str; 3] = ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"];

fn with_proxy_env(proxy: &Relay, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = PROXY_VARS
        .iter()
        .map(|v| (*v, format!("http://127.0.0.1:{}", proxy.addr.port())))
        .collect();
    env.extend(ALICE.iter().map(|(k, v)| (*k, v.to_string())));
    env.extend(extra.iter().cloned());
    env
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn loopback_bigid_is_never_proxied() {
    let fake = fake().await;
    let proxy = Relay::proxy(fake.local_addr()).await;
    let env = with_proxy_env(&proxy, &[]);
    let mcp = binary(&["--bigid-url", &url(&fake)], &as_refs(&env)).await;
    mcp.login().await.ok();
    assert!(proxy.log().is_empty(), "{:?}", proxy.log());
    assert_eq!(fake.request_count(), 1);
    mcp.close().await;

    let demo = binary(&["--demo"], &as_refs(&env)).await;
    demo.login().await.ok();
    assert!(proxy.log().is_empty(), "{:?}", proxy.log());
    demo.close().await;
}

/// The proxy tests need a host name that is not loopback to the server, yet
/// resolves to loopback from /etc/hosts; without one they are skipped.
fn alias_or_skip(test: &str) -> Option<String> {
    let alias = harness::loopback_alias();
    if alias.is_none() {
        eprintln!("{test}: skipped, /etc/hosts maps no name besides localhost to 127.0.0.1");
    }
    alias
}

#[tokio::test]
async fn http_proxy_is_used_and_no_proxy_honoured() {
    let Some(alias) = alias_or_skip("http_proxy_is_used_and_no_proxy_honoured") else {
        return;
    };
    let fake = fake().await;
    let proxy = Relay::proxy(fake.local_addr()).await;
    let base = format!("http://{alias}:{}/api/v1", port(&fake));

    let env = with_proxy_env(&proxy, &[]);
    let mcp = binary(&["--bigid-url", &base], &as_refs(&env)).await;
    mcp.login().await.ok();
    assert_eq!(proxy.log(), [format!("POST {base}/sessions HTTP/1.1")]);
    assert_eq!(fake.request_count(), 1);
    mcp.close().await;

    // Credentials in the proxy URL are sent to the proxy, not shown anywhere.
    let authed = format!("http://bob:proxy-pass-456@127.0.0.1:{}", proxy.addr.port());
    // (A later variable of the same name wins.)
    let env = with_proxy_env(&proxy, &[("HTTP_PROXY", authed)]);
    let mcp = binary(&["--bigid-url", &base], &as_refs(&env)).await;
    mcp.login().await.ok();
    assert_eq!(
        proxy.log().last().map(String::as_str),
        Some(format!("POST {base}/sessions HTTP/1.1 (with Proxy-Authorization)").as_str())
    );
    assert!(!mcp.stderr().contains("proxy-pass-456"));
    mcp.close().await;
    assert_eq!(fake.request_count(), 2);

    let env = with_proxy_env(&proxy, &[("NO_PROXY", format!("other.example,{alias}"))]);
    let mcp = binary(&["--bigid-url", &base], &as_refs(&env)).await;
    mcp.login().await.ok();
    assert_eq!(proxy.log().len(), 2, "NO_PROXY bypassed the proxy");
    assert_eq!(fake.request_count(), 3);
    mcp.close().await;
}

#[tokio::test]
async fn https_proxy_tunnels_to_a_private_ca_bigid() {
    let Some(alias) = alias_or_skip("https_proxy_tunnels_to_a_private_ca_bigid") else {
        return;
    };
    let ProxiedTls {
        fake,
        front,
        proxy,
        base,
        ca,
    } = ProxiedTls::start(&alias).await;

    let env = with_proxy_env(&proxy, &[]);
    let mcp = binary(
        &["--bigid-url", &base, "--ca-cert", ca.arg()],
        &as_refs(&env),
    )
    .await;
    mcp.login().await.ok();
    mcp.refresh().await.ok();
    assert_eq!(
        proxy.log(),
        [format!("CONNECT {alias}:{} HTTP/1.1", front.addr.port())],
        "one tunnel, kept alive for both calls"
    );
    assert_eq!(front.log(), ["handshake ok"]);
    assert_eq!(fake.request_count(), 2);
    mcp.close().await;
}

#[tokio::test]
async fn check_goes_through_the_proxy_too() {
    let Some(alias) = alias_or_skip("check_goes_through_the_proxy_too") else {
        return;
    };
    let ProxiedTls {
        fake,
        front: _front,
        proxy,
        base,
        ca,
    } = ProxiedTls::start(&alias).await;
    let env = with_proxy_env(&proxy, &[]);
    let args = ["--bigid-url", &base, "--ca-cert", ca.arg(), "check"];
    let out = check(&args, &as_refs(&env)).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    let note = format!(
        "HTTPS_PROXY is set: BigID is reached through the proxy http://127.0.0.1:{}",
        proxy.addr.port()
    );
    assert!(out.stdout.contains(&note), "{}", out.stdout);
    assert!(out.stdout.contains("✓ TLS verifies"), "{}", out.stdout);
    assert!(!proxy.log().is_empty());
    // The probe's GET on the API base is a 404 the fake does not record.
    assert_eq!(
        fake.request_count(),
        2,
        "/sessions and /refresh-access-token"
    );
}

#[tokio::test]
async fn proxy_credentials_never_reach_an_error() {
    let Some(alias) = alias_or_skip("proxy_credentials_never_reach_an_error") else {
        return;
    };
    let closed = harness::closed_port().await;
    let base = format!("http://{alias}:1/api/v1");
    let proxy = format!("http://bob:proxy-pass-123@127.0.0.1:{}", closed.port());
    let mut env: Vec<(&str, &str)> = ALICE.to_vec();
    env.push(("HTTP_PROXY", &proxy));
    let mcp = binary(&["--bigid-url", &base, "--timeout", "3"], &env).await;
    let error = mcp.login().await.err();
    assert!(error.contains("is unreachable"), "{error}");
    let via = format!(
        "through the proxy http://127.0.0.1:{} from HTTP_PROXY",
        closed.port()
    );
    assert!(error.contains(&via), "the proxy is named: {error}");
    assert!(!error.contains("proxy-pass-123"), "{error}");
    assert!(!mcp.stderr().contains("proxy-pass-123"));
    mcp.close().await;
}

// ----- logs -----------------------------------------------------------------------

#[tokio::test]
async fn trace_logs_carry_no_secret() {
    let fake = fake().await;
    let mut env = ALICE.to_vec();
    env.push(("RUST_LOG", "trace"));
    let mcp = binary(&["--bigid-url", &url(&fake)], &env).await;
    fake.fail_times(1, 502);
    let session = mcp.login().await.ok();
    fake.fail_times(1, 503);
    let token = mcp.refresh().await.ok();
    assert_eq!(fake.request_count(), 4);
    assert!(mcp.stderr_contains("BigID call failed; retrying").await);
    let log = mcp.stderr();
    mcp.close().await;

    assert!(log.lines().count() > 20, "trace logging is on:\n{log}");
    assert_no_secrets(&log);
    for returned in [session.field("auth_token"), token.field("systemToken")] {
        let returned = returned.as_str().unwrap_or_default();
        assert!(
            returned.len() > 20 && !log.contains(returned),
            "a token leaked"
        );
    }
}

// ----- check ----------------------------------------------------------------------

#[tokio::test]
async fn check_passes_against_the_demo() {
    let out = check(&["--demo", "check"], &[]).await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for line in [
        "✓ configuration valid",
        "✓ connects to 127.0.0.1:",
        "– TLS: not used",
        "✓ /sessions accepts BIGID_USERNAME `demo` and BIGID_PASSWORD: session token expires",
        "✓ /refresh-access-token accepts BIGID_USER_TOKEN",
        "system token expires",
        "✓ all configured checks passed",
    ] {
        assert!(
            out.stdout.contains(line),
            "missing {line:?} in:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains('✗'), "{}", out.stdout);
}

#[tokio::test]
async fn check_reports_an_unreachable_bigid() {
    let addr = harness::closed_port().await;
    let base = format!("http://{addr}/api/v1");
    let out = check(&["--bigid-url", &base, "check"], &ALICE).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "✗ cannot connect to 127.0.0.1 port {}",
            addr.port()
        )),
        "{}",
        out.stdout
    );
    out.says("– TLS and credentials: skipped");
    assert!(out.stdout.contains("✗ 1 check failed"), "{}", out.stdout);
    assert_no_secrets(&out.stdout);
}

#[tokio::test]
async fn check_reports_a_connect_timeout() {
    let (listener, _filler) = harness::full_backlog().await;
    let addr = listener.local_addr().expect("addr");
    let base = format!("http://{addr}/api/v1");
    let out = check(&["--bigid-url", &base, "--timeout", "1.5", "check"], &[]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    let line = format!(
        "✗ cannot connect to 127.0.0.1 port {} ({addr}: no connection within 0.5 s)",
        addr.port()
    );
    assert!(out.stdout.contains(&line), "{}", out.stdout);
}

#[tokio::test]
async fn check_names_the_ca_problem_and_passes_with_the_ca() {
    let TlsBigId {
        fake: _fake,
        pki,
        base,
        front: _front,
    } = TlsBigId::start("localhost", "localhost").await;

    let out = check(&["--bigid-url", &base, "check"], &ALICE).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    out.says("✓ localhost resolves to");
    out.says("✗ TLS does not verify");
    out.says("not signed by a CA this server trusts");
    out.says("– credentials: skipped");

    let ca = harness::temp_file("ca.pem", &pki.ca_pem);
    let ca = ca.arg();
    let out = check(&["--bigid-url", &base, "--ca-cert", ca, "check"], &ALICE).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("trusted CAs: system roots plus 1 certificate from"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("✓ TLS verifies"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("✓ /sessions accepts BIGID_USERNAME `alice`"),
        "{}",
        out.stdout
    );
    assert_no_secrets(&out.stdout);
    assert_no_secrets(&out.stderr);
}

#[tokio::test]
async fn check_reports_rejected_credentials_without_printing_them() {
    let fake = fake().await;
    let env = [
        ("BIGID_USERNAME", "alice"),
        ("BIGID_PASSWORD", "wrong-password-1"),
        ("BIGID_USER_TOKEN", "forged-user-token-2"),
    ];
    let out = check(&["--bigid-url", &url(&fake), "check"], &env).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("✗ /sessions: BigID rejected the username or password (HTTP 401): Invalid username or password"), "{}", out.stdout);
    assert!(out.stdout.contains("✗ /refresh-access-token: BigID rejected the user token (HTTP 401): Invalid user token\n"), "{}", out.stdout);
    assert!(out.stdout.contains("✗ 2 checks failed"), "{}", out.stdout);
    for secret in ["wrong-password-1", "forged-user-token-2"] {
        assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    }
    assert_eq!(to(&fake.requests(), SESSIONS), 1);
    assert_eq!(to(&fake.requests(), REFRESH), 1);
}

#[tokio::test]
async fn check_explains_a_rejected_jwt_user_token() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let fake = fake().await;
    // An access token that expired in 2001, passed where a user token belongs.
    let claims = URL_SAFE_NO_PAD.encode(r#"{"type":"access-token","exp":1000000000}"#);
    let token = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2ln");
    let env = [("BIGID_USER_TOKEN", token.as_str())];
    let out = check(&["--bigid-url", &url(&fake), "check"], &env).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    out.says("already a BigID access token");
    assert!(
        out.stdout
            .contains("(the user token expired 2001-09-09T01:46:40Z ("),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    assert_eq!(
        fake.requests()[0].authorization.as_deref(),
        Some(token.as_str())
    );
}

#[tokio::test]
async fn check_with_no_credentials_checks_the_connection_only() {
    let fake = fake().await;
    let out = check(&["--bigid-url", &url(&fake), "check"], &[]).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    out.says("– /sessions: skipped");
    out.says("– /refresh-access-token: skipped");
    assert_eq!(to(&fake.requests(), SESSIONS), 0);
}

#[tokio::test]
async fn check_notes_the_refresh_method_that_works() {
    let fake = fake().await;
    fake.set_fault(Fault::RefreshOnly(Method::POST));
    let out = check(&["--bigid-url", &url(&fake), "check"], &ALICE).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    out.says("set BIGID_REFRESH_METHOD=post");
}

#[tokio::test]
async fn bad_ca_files_stop_start_up() {
    let missing = std::env::temp_dir().join("bigid-upstream-no-such-ca.pem");
    let missing = missing.to_str().expect("path");
    let out = check(&["--demo", "--ca-cert", missing, "check"], &[]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stdout
            .contains("✗ configuration: cannot read BIGID_CA_CERT file"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains(missing), "{}", out.stderr);

    let not_pem = harness::temp_file(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let not_pem = not_pem.arg();
    let out = check(&["--demo", "--ca-cert", not_pem, "check"], &[]).await;
    assert_eq!(out.code, 2);
    out.says("holds no PEM certificate");

    // The server itself refuses to start the same way.
    let served = check(&["--demo", "--ca-cert", not_pem], &[]).await;
    assert_eq!(served.code, 2);
    assert!(
        served.stderr.contains("holds no PEM certificate"),
        "{}",
        served.stderr
    );

    // A blank BIGID_CA_CERT (a placeholder left empty) is no CA file at all.
    let blank = check(&["--demo", "check"], &[("BIGID_CA_CERT", "")]).await;
    assert_eq!(blank.code, 0, "{}{}", blank.stdout, blank.stderr);
}
