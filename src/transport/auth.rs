//! Who may call `/mcp`, `/sse` and `/message`: the holder of
//! `MCP_AUTH_TOKEN`, a bearer of a valid OAuth access token, or anyone when
//! neither is configured (loopback only). Every request that passes carries
//! its [`Principal`] in its extensions; every refusal carries a
//! `WWW-Authenticate` challenge built from the configured public URL, never
//! from the request's `Host`.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};

use super::middleware::{BearerToken, bearer, closing, error_response};
use crate::{oauth::Verifier, principal::Principal};

/// The `realm` announced when only `MCP_AUTH_TOKEN` protects the server.
const REALM: &str = "bigid-auth-mcp";

/// How requests are authenticated.
pub struct Auth {
    static_token: Option<BearerToken>,
    oauth: Option<Arc<Verifier>>,
}

impl Auth {
    /// `MCP_AUTH_TOKEN`, OAuth, both, or neither.
    pub fn new(static_token: Option<BearerToken>, oauth: Option<Arc<Verifier>>) -> Self {
        Self {
            static_token,
            oauth,
        }
    }

    /// How a client should authenticate, for the start-up log line.
    pub fn describe(&self) -> String {
        match (&self.static_token, &self.oauth) {
            (None, None) => {
                "no authentication (MCP_AUTH_TOKEN and OAuth unset; loopback only)".into()
            }
            (Some(_), None) => "clients must send Authorization: Bearer <MCP_AUTH_TOKEN>".into(),
            (static_token, Some(oauth)) => format!(
                "OAuth access tokens from {} for {}{}",
                oauth.settings().issuer,
                oauth.settings().resource,
                if static_token.is_some() {
                    ", or MCP_AUTH_TOKEN"
                } else {
                    ""
                }
            ),
        }
    }

    /// The `WWW-Authenticate` value for a refusal; `error` is the RFC 6750
    /// error code and description, when a token was presented.
    fn challenge(&self, error: Option<(&str, &str)>) -> String {
        let mut params = Vec::new();
        match &self.oauth {
            Some(oauth) => {
                let settings = oauth.settings();
                params.push(format!("resource_metadata=\"{}\"", settings.metadata_url()));
                if !settings.scopes.is_empty() {
                    params.push(format!("scope=\"{}\"", settings.scopes.join(" ")));
                }
            }
            None => params.push(format!("realm=\"{REALM}\"")),
        }
        if let Some((code, description)) = error {
            params.push(format!("error=\"{code}\""));
            // Under OAuth, which check failed is worth telling the client;
            // a wrong static token has only one reason.
            if self.oauth.is_some() {
                params.push(format!("error_description=\"{}\"", quotable(description)));
            }
        }
        format!("Bearer {}", params.join(", "))
    }
}

/// Quoted-string content: no quotes, backslashes or control characters.
fn quotable(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect()
}

/// Lets the request through as its principal, or refuses it with 401, 403
/// or (authorization server unreachable) 503.
pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    // Only what is needed crosses the await: a `&Request` is not `Send`.
    let token = bearer(request.headers()).map(str::to_owned);
    let in_query = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token")
    });
    let principal = match identify(&auth, token.as_deref(), in_query).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    request.extensions_mut().insert(principal);
    next.run(request).await
}

async fn identify(auth: &Auth, token: Option<&str>, in_query: bool) -> Result<Principal, Response> {
    if auth.static_token.is_none() && auth.oauth.is_none() {
        return Ok(Principal::local());
    }
    let Some(token) = token else {
        let message = if in_query {
            "access tokens are accepted in the Authorization header only, never in the query string"
        } else if auth.oauth.is_some() {
            "this server requires an OAuth access token in an Authorization: Bearer header; \
             the WWW-Authenticate header says where to get one"
        } else {
            "this server requires an Authorization: Bearer header with the token set in MCP_AUTH_TOKEN"
        };
        return Err(refuse(auth, StatusCode::UNAUTHORIZED, None, message));
    };
    if auth.static_token.as_ref().is_some_and(|t| t.matches(token)) {
        return Ok(Principal::static_token());
    }
    let Some(oauth) = &auth.oauth else {
        return Err(refuse(
            auth,
            StatusCode::UNAUTHORIZED,
            Some("invalid_token"),
            "the bearer token is not valid for this server",
        ));
    };
    match oauth.verify(token).await {
        Ok(verified) => {
            let missing: Vec<&str> = oauth
                .settings()
                .scopes
                .iter()
                .filter(|s| !verified.scopes.contains(*s))
                .map(String::as_str)
                .collect();
            if missing.is_empty() {
                return Ok(verified.principal);
            }
            tracing::info!(principal = %verified.principal, missing = ?missing, "refused an access token without the required scopes");
            Err(refuse(
                auth,
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                &format!("the access token lacks the scope(s) {}", missing.join(" ")),
            ))
        }
        Err(error) if error.is_unavailable() => {
            tracing::warn!("cannot verify an access token: {error}");
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization_server_unavailable",
                error.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            Err(response)
        }
        Err(error) => {
            tracing::info!("refused an access token: {error}");
            Err(refuse(
                auth,
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                &error.to_string(),
            ))
        }
    }
}

fn refuse(auth: &Auth, status: StatusCode, error: Option<&str>, message: &str) -> Response {
    let code = match status {
        StatusCode::FORBIDDEN => "insufficient_scope",
        _ => "unauthorized",
    };
    let mut response = error_response(status, code, message);
    if status == StatusCode::UNAUTHORIZED {
        // Closing after a 401 keeps unauthenticated clients from holding idle
        // keep-alive connections, which the connection cap would have to spare.
        response = closing(response);
    }
    let challenge = auth.challenge(error.map(|e| (e, message)));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    // Browser-based clients (the Inspector) can read the challenge only
    // when it is exposed to scripts.
    headers.insert(
        HeaderName::from_static("access-control-expose-headers"),
        HeaderValue::from_static("WWW-Authenticate"),
    );
    response
}
