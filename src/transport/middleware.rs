//! The HTTP rules every MCP route shares, one small layer each: the bearer
//! token's parsing (authentication itself is in `auth`), Origin and Host checks (DNS rebinding), a body limit, refusal of new work
//! during shutdown, and the access log.
//!
//! rmcp has its own Host/Origin checks for `/mcp`; they are switched off in
//! favour of these, so `/mcp`, `/sse` and `/message` follow one set of rules
//! and answer with the same JSON error bodies.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::{Body, HttpBody},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use reqwest::Url;
use rmcp::model::RequestId;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::drain::Drain;
use crate::secret::Secret;

/// Target of the access log lines, so they can be filtered on their own
/// (e.g. `RUST_LOG=info,bigid_auth_mcp::access=warn`).
pub const ACCESS_LOG_TARGET: &str = "bigid_auth_mcp::access";

/// A refusal whose body is a JSON-RPC error object, `{"jsonrpc":"2.0","id":null,
/// "error":{"code":…,"message":…,"data":{"error":code}}}`: SDK-based clients show
/// the message of a JSON-RPC error and only "an error response" for anything else.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    error_response_for(status, code, message, None)
}

/// [`error_response`] answering the JSON-RPC request `id`, when it is known.
pub fn error_response_for(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    id: Option<&RequestId>,
) -> Response {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": jsonrpc_code(status, code),
            "message": message.into(),
            "data": { "error": code },
        },
    });
    (status, Json(body)).into_response()
}

/// The JSON-RPC error code of a refusal: the standard ones where they fit,
/// otherwise the implementation-defined server-error range.
fn jsonrpc_code(status: StatusCode, code: &str) -> i32 {
    match (status, code) {
        (_, "parse_error") => -32700,
        (StatusCode::BAD_REQUEST, _) => -32600,
        (StatusCode::NOT_FOUND, _) => -32001,
        (StatusCode::UNAUTHORIZED, _) | (StatusCode::FORBIDDEN, _) => -32003,
        (StatusCode::CONFLICT, _) => -32600,
        (StatusCode::INTERNAL_SERVER_ERROR, _) => -32603,
        _ => -32000,
    }
}

/// The expected bearer token, kept only as a SHA-256 digest.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl BearerToken {
    /// Remembers the digest of `MCP_AUTH_TOKEN`.
    pub fn new(token: &Secret) -> Self {
        Self {
            digest: Sha256::digest(token.expose().as_bytes()).into(),
        }
    }

    /// Compares digests, so neither the token's length nor how much of a
    /// guess matches shows in the time taken; the fold has no early exit.
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let diff = self
            .digest
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// The token of an `Authorization: Bearer …` header (scheme case-insensitive).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Origins allowed besides loopback ones, normalised to `scheme://host[:port]`.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Arc<[String]>,
}

impl OriginPolicy {
    /// Allows loopback origins and these (already normalised by the config).
    pub fn new(allowed: &[String]) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }

    /// Whether a request with this `Origin` header may proceed.
    pub fn allows(&self, origin: &str) -> bool {
        // `Origin: null` (sandboxed frames, file: pages) is no one we can trust.
        let Ok(url) = Url::parse(origin.trim()) else {
            return false;
        };
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        if url.host_str().is_some_and(is_loopback_host) {
            return true;
        }
        let normalised = url.origin().ascii_serialization();
        self.allowed.contains(&normalised)
    }
}

/// 403 for a browser request from a page whose origin is not allowed. A
/// missing `Origin` passes: only browsers send it, and non-browser clients
/// are held off by the bearer token instead.
pub async fn check_origin(
    State(policy): State<OriginPolicy>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return next.run(request).await;
    };
    let origin = origin.to_str().unwrap_or("(not ASCII)");
    if policy.allows(origin) {
        return next.run(request).await;
    }
    // Client-supplied and unauthenticated: logged cut short, never echoed.
    let origin = loggable(origin);
    tracing::warn!(origin, "refused a request from a foreign Origin");
    error_response(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        "the request's Origin is not allowed; allow it with --allowed-origin or MCP_ALLOWED_ORIGINS",
    )
}

/// 403 unless `Host` names loopback; installed only when bound to loopback.
/// A web page that rebinds its own DNS name to 127.0.0.1 still sends that
/// name as `Host`, so this stops it reaching a local server.
pub async fn check_host(request: Request, next: Next) -> Response {
    // No Host at all is an HTTP/1.0 tool, not a browser: let it pass.
    let Some(host) = request.headers().get(header::HOST) else {
        return next.run(request).await;
    };
    let host = host.to_str().unwrap_or("");
    if host_is_loopback(host) {
        return next.run(request).await;
    }
    let host = loggable(host);
    tracing::warn!(
        host,
        "refused a request for a non-loopback Host (DNS rebinding?)"
    );
    error_response(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        "the Host header must name a loopback address (localhost, 127.0.0.1 or [::1]) \
         while the server listens on loopback",
    )
}

/// Longest part of a client-supplied header value that goes into a log line.
const MAX_LOGGED_HEADER: usize = 100;

/// A header value fit for a log line: at most [`MAX_LOGGED_HEADER`]
/// characters, control characters replaced, and marked when cut.
fn loggable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_LOGGED_HEADER)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if value.chars().nth(MAX_LOGGED_HEADER).is_some() {
        out.push('…');
    }
    out
}

/// `localhost:8000`, `127.0.0.1`, `[::1]:8000` → true.
fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split_once(']').map(|(v6, _)| v6).unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    is_loopback_host(name)
}

fn is_loopback_host(name: &str) -> bool {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Request body limits.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// Largest body accepted; larger ones get 413.
    pub max_bytes: usize,
    /// Time allowed to receive a whole body; slower ones get 408.
    pub read_timeout: Duration,
}

/// Reads the whole body (at most `max_bytes`, within `read_timeout`) before
/// the route sees it. Bodies here are single JSON-RPC messages, so buffering
/// costs nothing, and a client trickling bytes cannot hold a request open.
pub async fn limit_body(State(limit): State<BodyLimit>, request: Request, next: Next) -> Response {
    if request.body().size_hint().exact() == Some(0) {
        return next.run(request).await;
    }
    let too_large = || {
        closing(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {} bytes", limit.max_bytes),
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit.max_bytes as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buffer = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| ReadError::Broken)?;
            if buffer.len() + chunk.len() > limit.max_bytes {
                return Err(ReadError::TooLarge);
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer)
    };
    match tokio::time::timeout(limit.read_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(ReadError::TooLarge)) => too_large(),
        Ok(Err(ReadError::Broken)) => closing(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read",
        )),
        Err(_) => closing(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s",
                limit.read_timeout.as_secs()
            ),
        )),
    }
}

/// Marks a refusal sent before the body was read to its end: the rest of the
/// body is still on the wire, so the connection cannot carry another request,
/// and a client that pooled it would see its next request fail.
pub(crate) fn closing(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

enum ReadError {
    TooLarge,
    Broken,
}

/// During shutdown, 503 for new requests; otherwise counts each POST as a
/// call in flight until its response body has been sent in full.
pub async fn track_calls(State(drain): State<Drain>, request: Request, next: Next) -> Response {
    if drain.is_draining() {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; reconnect to another instance or retry shortly",
        );
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let call = drain.enter();
    let (parts, body) = next.run(request).await.into_parts();
    // A Streamable HTTP call answers on an SSE body that ends after the
    // result: the call counts as done when that body is finished or dropped.
    let body = body.into_data_stream().map(move |chunk| {
        let _in_flight = &call;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// One info line per request: method, path (no query: it carries session
/// ids), status and duration. Never headers or bodies.
pub async fn access_log(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path: String = request.uri().path().chars().take(200).collect();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // Load balancers poll /healthz every few seconds; keep that out of info.
    if path == "/healthz" {
        tracing::debug!(target: ACCESS_LOG_TARGET, %method, path, status, elapsed_ms, "request");
    } else {
        tracing::info!(target: ACCESS_LOG_TARGET, %method, path, status, elapsed_ms, "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_compares_whole_values() {
        let token = BearerToken::new(&Secret::new("s3cret-token"));
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token2"));
        assert!(!token.matches(""));
    }

    #[test]
    fn parses_bearer_header_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn loopback_origins_always_pass_others_only_when_listed() {
        let policy = OriginPolicy::new(&["https://app.example.com".into()]);
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8443",
            "https://app.example.com",
            "https://app.example.com:443",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for bad in [
            "null",
            "http://evil.example",
            "http://app.example.com",
            "https://app.example.com:8443",
            "http://localhost.evil.example",
            "file:///etc",
        ] {
            assert!(!policy.allows(bad), "{bad}");
        }
    }

    #[test]
    fn logged_header_values_are_cut_and_have_no_control_characters() {
        let long = "h".repeat(10_000);
        let logged = loggable(&long);
        assert_eq!(logged.chars().count(), MAX_LOGGED_HEADER + 1);
        assert!(logged.ends_with('…'));
        assert_eq!(loggable("a\u{1b}[31mb"), "a\u{fffd}[31mb");
        assert_eq!(loggable("evil.example"), "evil.example");
    }

    #[test]
    fn recognises_loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8000",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(host_is_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "10.0.0.1:80",
            "",
            "[::2]:80",
        ] {
            assert!(!host_is_loopback(bad), "{bad}");
        }
    }
}
