//! RFC 9728 Protected Resource Metadata: where an OAuth client learns which
//! authorization server issues tokens for `/mcp`. No auth, CORS open:
//! browser-based clients read it before they have a token.

use axum::{
    Json, Router,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::oauth::{OAuthSettings, settings::split_origin};

/// Clients look under the path-inserted URL, then the root: serve both.
pub const ROOT_PATH: &str = "/.well-known/oauth-protected-resource";

/// The metadata routes for `settings`.
pub fn router(settings: &OAuthSettings) -> Router {
    let document = document(settings);
    let (_, resource_path) = split_origin(&settings.resource);
    let mut paths = vec![ROOT_PATH.to_owned(), format!("{ROOT_PATH}/mcp")];
    let inserted = format!("{ROOT_PATH}{resource_path}");
    if !paths.contains(&inserted) {
        // A public URL with a path prefix (behind a reverse proxy that keeps it).
        paths.push(inserted);
    }
    let mut router = Router::new();
    for path in paths {
        let document = document.clone();
        router = router.route(
            &path,
            get(move || {
                let document = document.clone();
                async move { cors(Json(document).into_response()) }
            })
            .options(preflight),
        );
    }
    router
}

/// The metadata document.
pub fn document(settings: &OAuthSettings) -> Value {
    let mut document = json!({
        "resource": settings.resource,
        "authorization_servers": [settings.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "BigID authentication (bigid-auth-mcp)",
    });
    // An empty list makes some clients (the Python SDK) register with an
    // empty `scope`, which authorization servers refuse; left out, they
    // fall back to the authorization server's own list.
    if !settings.scopes.is_empty() {
        document["scopes_supported"] = json!(settings.scopes);
    }
    document
}

async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        HeaderName::from_static("access-control-max-age"),
        HeaderValue::from_static("86400"),
    );
    cors(response)
}

fn cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}
