//! The legacy `POST /message` handler on arbitrary input. Input: a query
//! string, a newline, then the body; `{session}` in the query stands for a
//! live, initialized session's id. Every answer must be 202, 400, 404 or
//! 503 (a busy session), never a panic or another status.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
};
use bigid_auth_mcp::{
    bigid,
    config::{AuthScheme, BigIdConfig, Defaults, RefreshMethod},
    server::BigIdServer,
    transport::{drain::Drain, legacy_sse, sessions::SessionSlots},
};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    router: Router,
    session: String,
}

async fn post(router: &Router, query: &str, body: Vec<u8>) -> Option<StatusCode> {
    let request = Request::post(format!("/message?{query}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .ok()?;
    Some(router.clone().oneshot(request).await.ok()?.status())
}

/// One router with one open, initialized session, for the whole run.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (router, session) = runtime.block_on(async {
            // BigID on a closed port: tool calls fail fast as unreachable.
            let url = url::Url::parse("http://127.0.0.1:9/api/v1").expect("url");
            let config = BigIdConfig {
                url: Some(url.clone()),
                ca_cert: None,
                timeout: Duration::from_millis(200),
                refresh_method: RefreshMethod::Get,
                auth_scheme: AuthScheme::Raw,
                token_cache: true,
            };
            let client = bigid::Client::new(&url, &config).expect("client");
            let server = BigIdServer::new(client, Defaults::default(), true);
            let router = legacy_sse::router(
                move || server.clone(),
                SessionSlots::new(16),
                Drain::default(),
                CancellationToken::new(),
                legacy_sse::Timings {
                    keep_alive: Duration::from_secs(15),
                    init_timeout: Duration::from_secs(3600),
                    idle_timeout: Duration::from_secs(3600),
                },
            );
            let stream = router
                .clone()
                .oneshot(Request::get("/sse").body(Body::empty()).expect("request"))
                .await
                .expect("GET /sse");
            let mut events = stream.into_body();
            let first = events.frame().await.expect("a frame").expect("data");
            let first = first.into_data().expect("data frame");
            let text = String::from_utf8_lossy(&first).into_owned();
            let session = text
                .split("sessionId=")
                .nth(1)
                .expect("endpoint event")
                .trim()
                .to_owned();
            // Drain the answers, so the session never pushes back for them.
            tokio::spawn(async move { while let Some(Ok(_)) = events.frame().await {} });
            let query = format!("sessionId={session}");
            let initialize = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"fuzz","version":"0"}}}"#;
            post(&router, &query, initialize.to_vec()).await;
            let initialized = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
            post(&router, &query, initialized.to_vec()).await;
            (router, session)
        });
        Fixture {
            runtime,
            router,
            session,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let query = String::from_utf8_lossy(&data[..split]).replace("{session}", &fixture.session);
    let body = data.get(split + 1..).unwrap_or_default().to_vec();
    let status = fixture
        .runtime
        .block_on(post(&fixture.router, &query, body));
    if let Some(status) = status {
        assert!(
            [202, 400, 404, 503].contains(&status.as_u16()),
            "POST /message?{query}: {status}"
        );
    }
});
