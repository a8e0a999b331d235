//! rmcp's own refusals on `/mcp` (406, 415, unknown session, unsupported
//! protocol version, unreadable body, internal errors) come as `text/plain`
//! and some quote the client's input back, serde's messages included (which
//! may hold a password). This layer turns each into the same JSON-RPC error
//! body as the server's other refusals, with a fixed message per cause.

use axum::{
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::Response,
};
use rmcp::model::RequestId;

use super::middleware::error_response_for;

/// Largest rmcp refusal text read to tell its cause; they are one line.
const MAX_REFUSAL_TEXT: usize = 4096;

/// Replaces a non-JSON refusal from the wrapped route with a JSON-RPC error
/// that answers the request's id when the body had one.
pub async fn jsonrpc_refusals(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // The body limit layer has already buffered the body: this is a copy
    // of bytes in memory, not a read from the network.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let id = request_id(&body);
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = response.status();
    if status.is_success() || status.is_redirection() || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REFUSAL_TEXT)
        .await
        .unwrap_or_default();
    let (status, code, message) = describe(status, &String::from_utf8_lossy(&text));
    let mut refusal = error_response_for(status, code, message, id.as_ref());
    for name in [header::ALLOW, header::RETRY_AFTER, header::CONNECTION] {
        if let Some(value) = parts.headers.get(&name) {
            refusal.headers_mut().insert(name, value.clone());
        }
    }
    refusal
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The `id` of a JSON-RPC request body, if it is one.
fn request_id(body: &[u8]) -> Option<RequestId> {
    #[derive(serde::Deserialize)]
    struct Request {
        id: RequestId,
        #[allow(dead_code)]
        method: serde::de::IgnoredAny,
    }
    serde_json::from_slice::<Request>(body).ok().map(|r| r.id)
}

/// The status, a short code and a fixed message for one of rmcp's refusals.
/// rmcp's text is read only to tell causes apart, never passed on.
fn describe(status: StatusCode, text: &str) -> (StatusCode, &'static str, &'static str) {
    // rmcp answers a body that is not JSON-RPC with 415; it is a malformed
    // request, which HTTP and the MCP SDKs know as 400.
    if text.contains("deserialize") {
        return (
            StatusCode::BAD_REQUEST,
            "parse_error",
            "the body is not a single JSON-RPC message",
        );
    }
    let (code, message) = match status {
        StatusCode::BAD_REQUEST if text.contains("Session ID is required") => (
            "missing_session",
            "this request needs the Mcp-Session-Id header that initialize returned",
        ),
        StatusCode::BAD_REQUEST if text.contains("Protocol-Version") => (
            "unsupported_protocol_version",
            "the MCP-Protocol-Version header names a version this server does not support",
        ),
        StatusCode::BAD_REQUEST => (
            "bad_request",
            "the request does not fit the Streamable HTTP transport (headers or JSON-RPC body)",
        ),
        StatusCode::NOT_FOUND => (
            "unknown_session",
            "no open session has this Mcp-Session-Id; it may have ended. Start a new one with initialize",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint takes POST (and GET and DELETE with a session)",
        ),
        StatusCode::NOT_ACCEPTABLE => (
            "not_acceptable",
            "the Accept header must list application/json and text/event-stream",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the Content-Type of a POST must be application/json",
        ),
        status if status.is_server_error() => (
            "internal_error",
            "the server could not handle this request; retry it, or start a new session",
        ),
        _ => ("refused", "the server refused this request"),
    };
    (status, code, message)
}
