//! The BigID Authentication API client. Knows HTTP and BigID, nothing of MCP.

use std::{
    error::Error as _,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, StatusCode, Url, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    config::{AuthScheme, BigIdConfig, RefreshMethod},
    secret::Secret,
};

/// Largest response body accepted. Real `/sessions` answers reach ~16 KB
/// (hundreds of permission strings); anything near this cap is not BigID.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest BigID `message` passed on to the client.
const MAX_MESSAGE_CHARS: usize = 300;

/// `POST /sessions` request body.
#[derive(Serialize)]
struct SessionRequest<'a> {
    username: &'a str,
    password: &'a Secret,
}

/// `POST /sessions` response. Every field is optional: deployments differ.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SessionResponse {
    /// BigID's verdict; `false` means the login failed even on HTTP 200.
    pub success: Option<bool>,
    /// BigID's human-readable message.
    pub message: Option<String>,
    /// The session token.
    pub auth_token: Option<Secret>,
    /// The user name BigID logged in.
    pub username: Option<String>,
    /// The user's first name.
    #[serde(rename = "firstName")]
    pub first_name: Option<String>,
    /// The user's permission strings.
    pub permissions: Option<Vec<String>>,
}

/// `/refresh-access-token` response.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenResponse {
    /// BigID's verdict.
    pub success: Option<bool>,
    /// BigID's human-readable message, on failure.
    pub message: Option<String>,
    /// The short-lived system token.
    #[serde(rename = "systemToken")]
    pub system_token: Option<Secret>,
}

/// Which credential BigID turned down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Username and password.
    Password,
    /// A user token.
    UserToken,
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password => "username or password",
            Self::UserToken => "user token",
        })
    }
}

/// Why a call to BigID failed. Messages name the URL and the cause, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// HTTP 401/403, or `"success": false`.
    #[error("BigID rejected the {credential} (HTTP {status}){}", detail(message))]
    Rejected {
        /// What was rejected.
        credential: Credential,
        /// The HTTP status.
        status: u16,
        /// BigID's own message, if it sent one.
        message: Option<String>,
    },
    /// DNS, connection refused or reset before a response.
    #[error("BigID at {url} is unreachable: {cause}")]
    Unreachable {
        /// The endpoint called.
        url: String,
        /// What the network said.
        cause: String,
    },
    /// The TLS handshake failed, usually an unknown CA.
    #[error(
        "TLS with BigID at {url} failed: {cause}. If the deployment uses a private CA, \
         point BIGID_CA_CERT at its PEM certificate"
    )]
    Tls {
        /// The endpoint called.
        url: String,
        /// What rustls said.
        cause: String,
    },
    /// No complete answer within `--timeout`.
    #[error("BigID at {url} did not answer within {}s (BIGID_TIMEOUT)", .timeout.as_secs_f64())]
    Timeout {
        /// The endpoint called.
        url: String,
        /// The configured budget.
        timeout: Duration,
    },
    /// An unexpected HTTP status (5xx, or a 4xx other than 401/403).
    #[error("BigID at {url} answered HTTP {status}{}", detail(message))]
    Status {
        /// The endpoint called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// BigID's message, if the body had one.
        message: Option<String>,
    },
    /// The body is not JSON (often an HTML error page from a proxy).
    #[error(
        "BigID at {url} answered HTTP {status} with {what}; check that BIGID_URL is the \
         API base ending in /api/v1 and that BigID is healthy"
    )]
    NotJson {
        /// The endpoint called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// "an HTML page", "an empty body", ….
        what: String,
    },
    /// JSON, but not the shape BigID documents.
    #[error("BigID at {url} answered with unexpected JSON: {cause}")]
    BadShape {
        /// The endpoint called.
        url: String,
        /// What did not match (a field path, never a value).
        cause: String,
    },
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("BigID at {url} sent a response larger than {limit} bytes; refusing to read it")]
    TooLarge {
        /// The endpoint called.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The connection broke after the request was sent.
    #[error("the connection to BigID at {url} broke before a complete answer: {cause}")]
    Body {
        /// The endpoint called.
        url: String,
        /// What broke.
        cause: String,
    },
    /// The client could not be built (CA file, TLS setup).
    #[error("{0}")]
    Setup(String),
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

/// A BigID deployment, reached through one shared keep-alive connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    sessions_url: Url,
    refresh_url: Url,
    timeout: Duration,
    auth_scheme: AuthScheme,
    refresh: Arc<RefreshPreference>,
}

/// The refresh method in use; flips once if BigID answers 405 to the configured one.
struct RefreshPreference {
    configured: RefreshMethod,
    flipped: AtomicBool,
}

impl RefreshPreference {
    fn current(&self) -> RefreshMethod {
        if self.flipped.load(Ordering::Relaxed) {
            self.configured.other()
        } else {
            self.configured
        }
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("sessions_url", &self.sessions_url.as_str())
            .field("refresh_url", &self.refresh_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client for `base` (the API base including `/api/v1`).
    pub fn new(base: &Url, config: &BigIdConfig) -> Result<Self, Error> {
        // reqwest is built without a default crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bigid-auth-mcp/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if is_loopback(base) {
            // The demo BigID and local fakes must never be routed through HTTP(S)_PROXY.
            builder = builder.no_proxy();
        }
        if let Some(path) = &config.ca_cert {
            builder = builder.tls_certs_merge(load_ca_certs(path)?);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Setup(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(Self {
            http,
            sessions_url: endpoint(base, "sessions"),
            refresh_url: endpoint(base, "refresh-access-token"),
            timeout: config.timeout,
            auth_scheme: config.auth_scheme,
            refresh: Arc::new(RefreshPreference {
                configured: config.refresh_method,
                flipped: AtomicBool::new(false),
            }),
        })
    }

    /// The `/sessions` endpoint, for messages.
    pub fn sessions_url(&self) -> &Url {
        &self.sessions_url
    }

    /// The `/refresh-access-token` endpoint, for messages.
    pub fn refresh_url(&self) -> &Url {
        &self.refresh_url
    }

    /// `POST /sessions`: logs a user in with a password.
    pub async fn create_session(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<SessionResponse, Error> {
        let body = serde_json::to_vec(&SessionRequest { username, password })
            .map_err(|e| Error::Setup(format!("cannot encode the login request: {e}")))?;
        let request = self
            .http
            .post(self.sessions_url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, body) = self.send(&self.sessions_url, request).await?;
        parse_session_answer(&self.sessions_url, status, &body)
    }

    /// `/refresh-access-token`: exchanges a user token for a system token.
    pub async fn refresh_access_token(&self, user_token: &Secret) -> Result<TokenResponse, Error> {
        let method = self.refresh.current();
        let (status, body) = match self.send_refresh(method, user_token).await? {
            (StatusCode::METHOD_NOT_ALLOWED, _) => {
                let other = method.other();
                let answer = self.send_refresh(other, user_token).await?;
                if answer.0 != StatusCode::METHOD_NOT_ALLOWED {
                    let use_other = other != self.refresh.configured;
                    let changed =
                        self.refresh.flipped.swap(use_other, Ordering::Relaxed) != use_other;
                    if changed && use_other {
                        tracing::warn!(
                            "BigID answered 405 to {} {}; {} worked. Set BIGID_REFRESH_METHOD={} to save the extra round trip",
                            http_method(method),
                            self.refresh_url,
                            http_method(other),
                            other.as_str()
                        );
                    }
                }
                answer
            }
            answer => answer,
        };
        parse_token_answer(&self.refresh_url, status, &body)
    }

    async fn send_refresh(
        &self,
        method: RefreshMethod,
        user_token: &Secret,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let mut authorization = match self.auth_scheme {
            AuthScheme::Raw => header::HeaderValue::from_str(user_token.expose()),
            AuthScheme::Bearer => {
                header::HeaderValue::from_str(&format!("Bearer {}", user_token.expose()))
            }
        }
        .map_err(|_| Error::Rejected {
            credential: Credential::UserToken,
            status: 0,
            message: Some(
                "the token contains characters that cannot be sent in an HTTP header".into(),
            ),
        })?;
        authorization.set_sensitive(true);
        let request = self
            .http
            .request(http_method(method), self.refresh_url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, authorization);
        self.send(&self.refresh_url, request).await
    }

    /// Sends a request and reads at most [`MAX_BODY_BYTES`] of its body.
    async fn send(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let attempt = async {
            let mut response = request.send().await.map_err(|e| self.classify(url, e))?;
            let status = response.status();
            if response
                .content_length()
                .is_some_and(|n| n > MAX_BODY_BYTES as u64)
            {
                return Err(Error::TooLarge {
                    url: url.to_string(),
                    limit: MAX_BODY_BYTES,
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(url, e))? {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(Error::TooLarge {
                        url: url.to_string(),
                        limit: MAX_BODY_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        // reqwest's own timeout covers the same span; this one also bounds our body loop.
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    url: url.to_string(),
                    timeout: self.timeout,
                })
            })
    }

    fn classify(&self, url: &Url, error: reqwest::Error) -> Error {
        let url = url.to_string();
        if error.is_timeout() {
            return Error::Timeout {
                url,
                timeout: self.timeout,
            };
        }
        let cause = chain(&error);
        if has_tls_cause(&error) {
            Error::Tls { url, cause }
        } else if error.is_connect() {
            Error::Unreachable { url, cause }
        } else {
            Error::Body { url, cause }
        }
    }
}

/// Turns a `/sessions` answer into a session, or the error BigID meant.
/// Pure (no I/O), so the property tests and the fuzz target can drive it.
pub fn parse_session_answer(
    url: &Url,
    status: StatusCode,
    body: &[u8],
) -> Result<SessionResponse, Error> {
    let response: SessionResponse = parse_answer(url, status, body, Credential::Password)?;
    if response.success == Some(false) {
        return Err(Error::Rejected {
            credential: Credential::Password,
            status: status.as_u16(),
            message: clean_message(response.message.as_deref()),
        });
    }
    if response.auth_token.as_ref().is_none_or(Secret::is_empty) {
        return Err(Error::BadShape {
            url: url.to_string(),
            cause: "no `auth_token` in a successful answer".into(),
        });
    }
    Ok(response)
}

/// Turns a `/refresh-access-token` answer into a system token, or the error
/// BigID meant. Pure, like [`parse_session_answer`].
pub fn parse_token_answer(
    url: &Url,
    status: StatusCode,
    body: &[u8],
) -> Result<TokenResponse, Error> {
    let response: TokenResponse = parse_answer(url, status, body, Credential::UserToken)?;
    if response.success == Some(false) {
        return Err(Error::Rejected {
            credential: Credential::UserToken,
            status: status.as_u16(),
            message: clean_message(response.message.as_deref()),
        });
    }
    if response.system_token.as_ref().is_none_or(Secret::is_empty) {
        return Err(Error::BadShape {
            url: url.to_string(),
            cause: "no `systemToken` in a successful answer".into(),
        });
    }
    Ok(response)
}

/// Turns status + body into `T`, or the error BigID meant.
fn parse_answer<T: DeserializeOwned>(
    url: &Url,
    status: StatusCode,
    body: &[u8],
    credential: Credential,
) -> Result<T, Error> {
    // BigID sends JSON under any Content-Type (failed logins come as text/html).
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let message = json.as_ref().and_then(error_message);
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(Error::Rejected {
            credential,
            status: status.as_u16(),
            message,
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            url: url.to_string(),
            status: status.as_u16(),
            message,
        });
    }
    let Some(json) = json else {
        return Err(Error::NotJson {
            url: url.to_string(),
            status: status.as_u16(),
            what: describe_body(body),
        });
    };
    serde_path_to_error::deserialize(json).map_err(|e| Error::BadShape {
        url: url.to_string(),
        cause: format!("field `{}` has the wrong type", e.path()),
    })
}

fn http_method(method: RefreshMethod) -> Method {
    match method {
        RefreshMethod::Get => Method::GET,
        RefreshMethod::Post => Method::POST,
    }
}

fn endpoint(base: &Url, name: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{name}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Reads one or more PEM certificates; a clear error names the file and the problem.
pub fn load_ca_certs(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| Error::Setup(format!("cannot read BIGID_CA_CERT file {shown}: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        Error::Setup(format!(
            "BIGID_CA_CERT file {shown} is not valid PEM: {}",
            chain(&e)
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::Setup(format!(
            "BIGID_CA_CERT file {shown} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// BigID puts its explanation in `message` (sometimes `error` or `errorMessage`).
fn error_message(json: &serde_json::Value) -> Option<String> {
    ["message", "error", "errorMessage", "error_description"]
        .iter()
        .find_map(|k| json.get(k).and_then(serde_json::Value::as_str))
        .and_then(|m| clean_message(Some(m)))
}

fn clean_message(message: Option<&str>) -> Option<String> {
    let message = message?.trim();
    if message.is_empty() {
        return None;
    }
    let mut clean: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if message.chars().count() > MAX_MESSAGE_CHARS {
        clean.push('…');
    }
    Some(clean)
}

fn describe_body(body: &[u8]) -> String {
    let start = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    let start = start.trim_start();
    if body.is_empty() {
        "an empty body".into()
    } else if start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || start.contains("<body")
    {
        "an HTML page instead of JSON".into()
    } else if start.starts_with('{') || start.starts_with('[') {
        "malformed or truncated JSON".into()
    } else {
        format!("{} bytes of non-JSON text", body.len())
    }
}

/// The error's sources, most specific last. reqwest's own layer only repeats
/// the URL (named separately in our messages), so it is skipped when it has a cause.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let skip = e.is::<reqwest::Error>() && e.source().is_some();
        let text = e.to_string();
        if !skip && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

fn has_tls_cause(error: &reqwest::Error) -> bool {
    let mut current = error.source();
    while let Some(e) = current {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_append_to_the_base_path() {
        let base = Url::parse("https://t.bigid.com/api/v1").unwrap();
        assert_eq!(
            endpoint(&base, "sessions").as_str(),
            "https://t.bigid.com/api/v1/sessions"
        );
        let slash = Url::parse("http://127.0.0.1:9/api/v1/").unwrap();
        assert_eq!(
            endpoint(&slash, "refresh-access-token").as_str(),
            "http://127.0.0.1:9/api/v1/refresh-access-token"
        );
        assert!(is_loopback(&slash));
        assert!(!is_loopback(&base));
    }

    #[test]
    fn describes_bodies_that_are_not_json() {
        assert_eq!(describe_body(b""), "an empty body");
        assert_eq!(
            describe_body(b"  <!DOCTYPE html><html>"),
            "an HTML page instead of JSON"
        );
        assert_eq!(
            describe_body(b"{\"success\": tr"),
            "malformed or truncated JSON"
        );
        assert_eq!(describe_body(b"Bad Gateway"), "11 bytes of non-JSON text");
    }

    #[test]
    fn bigid_messages_are_trimmed_and_capped() {
        assert_eq!(clean_message(Some("  ")), None);
        assert_eq!(
            clean_message(Some("bad\nlogin")).as_deref(),
            Some("badlogin")
        );
        let long = "x".repeat(1000);
        assert_eq!(
            clean_message(Some(&long)).unwrap().chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
        let json = serde_json::json!({"error": "Invalid token"});
        assert_eq!(error_message(&json).as_deref(), Some("Invalid token"));
    }
}
