//! The BigID Authentication API client. Knows HTTP and BigID, nothing of MCP.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use reqwest::{Method, StatusCode, Url, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::time::Instant;

use crate::{
    config::{AuthScheme, BigIdConfig, RefreshMethod},
    secret::Secret,
};

/// Largest response body accepted. Real `/sessions` answers reach ~16 KB
/// (hundreds of permission strings); anything near this cap is not BigID.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest BigID `message` passed on to the client.
const MAX_MESSAGE_CHARS: usize = 300;

/// Tries per call: the first one and two retries. Enough to ride out a pod
/// restart or a load balancer hiccup, few enough to fail fast on a real outage.
pub const MAX_ATTEMPTS: u32 = 3;

/// First retry delay; it doubles per retry (with jitter) up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// Longest backoff delay between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Longest `Retry-After` honoured; BigID asking for more means "not now",
/// and the agent is better told so than kept waiting.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

/// Longest wait for a TCP connection, whatever `--timeout` says.
const CONNECT_TIMEOUT_CAP: Duration = Duration::from_secs(10);

/// Statuses that mean "try again": rate limiting, and the 5xx that load
/// balancers and restarting BigID pods send. 501/505 and the like are final.
const RETRY_STATUSES: [StatusCode; 5] = [
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

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
    #[error("TLS with BigID at {url} failed: {cause}. {}", problem.hint())]
    Tls {
        /// The endpoint called.
        url: String,
        /// What rustls said.
        cause: String,
        /// What that means for the operator.
        problem: TlsProblem,
    },
    /// No complete answer within `--timeout`.
    #[error("BigID at {url} did not answer within {} s (BIGID_TIMEOUT)", .timeout.as_secs_f64())]
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
    /// A transient failure that lasted through every attempt the budget allowed.
    #[error("{last}; gave up after {attempts} attempt{}{}", plural(*.attempts), detail(reason))]
    GaveUp {
        /// How many requests were sent.
        attempts: u32,
        /// Why no further attempt was made, when not because [`MAX_ATTEMPTS`] was reached.
        reason: Option<String>,
        /// The failure of the last attempt.
        last: Box<Error>,
    },
}

impl Error {
    /// The failure itself, without the retry bookkeeping around it.
    pub fn root(&self) -> &Error {
        match self {
            Self::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }

    /// How many requests were sent before this error was final.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::GaveUp { attempts, .. } => *attempts,
            _ => 1,
        }
    }

    /// Worth another attempt: the connection failed or broke before a full
    /// answer. Repeating is harmless for both endpoints: a login only opens
    /// one more session, a refresh only issues one more system token.
    fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Body { .. })
    }

    /// A short cause for the debug log; BigID's `message` is left out because
    /// BigID may echo a credential in it.
    fn brief(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::Unreachable { cause, .. } | Self::Body { cause, .. } => cause.clone(),
            other => other.to_string(),
        }
    }
}

/// What was wrong with BigID's certificate, as far as the fix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// Signed by a CA that is neither a system root nor in `BIGID_CA_CERT`.
    UnknownCa,
    /// Valid, but not for the host name in `BIGID_URL`.
    WrongHost,
    /// Expired or not yet valid.
    Expired,
    /// Anything else (protocol versions, a broken handshake, …).
    Other,
}

impl TlsProblem {
    fn of(error: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                Self::UnknownCa
            }
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Self::WrongHost,
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => Self::Expired,
            _ => Self::Other,
        }
    }

    /// What the operator can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::UnknownCa => {
                "Its certificate is not signed by a CA this server trusts: if the deployment \
                 uses a private CA, point BIGID_CA_CERT at that CA's PEM certificate"
            }
            Self::WrongHost => {
                "Its certificate is not issued for this host name: use the name the \
                 certificate names in BIGID_URL"
            }
            Self::Expired => {
                "Its certificate has expired or is not yet valid (or this machine's clock is off)"
            }
            Self::Other => {
                "If the deployment uses a private CA, point BIGID_CA_CERT at its PEM certificate"
            }
        }
    }
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A BigID deployment, reached through one shared keep-alive connection pool.
#[derive(Clone)]
pub struct Client {
    http: Arc<LazyHttp>,
    base: Url,
    sessions_url: Url,
    refresh_url: Url,
    timeout: Duration,
    connect_timeout: Duration,
    /// The proxy in use, named in connection errors.
    proxy: Option<Proxied>,
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

/// The reqwest client, built on the first call to BigID instead of at
/// start-up: building it loads and parses the system's TLS roots (every file
/// in /etc/ssl/certs), which was most of the time from spawn to the
/// `initialize` answer, and which a session that never calls BigID (or
/// calls a plain-HTTP one) should not pay.
struct LazyHttp {
    settings: HttpSettings,
    client: tokio::sync::OnceCell<reqwest::Client>,
}

/// What the reqwest client is built from. The `--ca-cert` roots are read
/// and parsed in [`Client::new`], so a bad file still stops start-up.
struct HttpSettings {
    connect_timeout: Duration,
    no_proxy: bool,
    extra_roots: Vec<reqwest::Certificate>,
}

impl HttpSettings {
    fn build(&self) -> Result<reqwest::Client, Error> {
        // No client-wide timeout: `send` holds one deadline across all attempts.
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bigid-auth-mcp/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            // Below the 75 s keep-alive of nginx, which fronts most BigID
            // deployments, so an idle connection is dropped here first.
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if self.no_proxy {
            builder = builder.no_proxy();
        }
        if !self.extra_roots.is_empty() {
            builder = builder.tls_certs_merge(self.extra_roots.clone());
        }
        builder
            .build()
            .map_err(|e| Error::Setup(format!("cannot set up the HTTP client: {}", chain(&e))))
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

/// One complete HTTP answer, read within the body cap.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    /// The `Retry-After` BigID sent, if any.
    retry_after: Option<Duration>,
}

impl Client {
    /// Builds the client for `base` (the API base including `/api/v1`). The
    /// `--ca-cert` file is read here; the reqwest client on first use.
    ///
    /// Proxies: reqwest reads `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY` (and their lower-case forms) from the environment when the
    /// client is built, with or without its `system-proxy` feature (which only
    /// adds the macOS and Windows system settings). Loopback bases bypass them.
    pub fn new(base: &Url, config: &BigIdConfig) -> Result<Self, Error> {
        // reqwest is built without a default crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let connect_timeout = connect_timeout(config.timeout);
        let extra_roots = match &config.ca_cert {
            Some(path) => load_ca_certs(path)?,
            None => Vec::new(),
        };
        let settings = HttpSettings {
            connect_timeout,
            // The demo BigID and local fakes must never be routed through HTTP(S)_PROXY.
            no_proxy: is_loopback(base),
            extra_roots,
        };
        Ok(Self {
            http: Arc::new(LazyHttp {
                settings,
                client: tokio::sync::OnceCell::new(),
            }),
            base: base.clone(),
            sessions_url: endpoint(base, "sessions"),
            refresh_url: endpoint(base, "refresh-access-token"),
            timeout: config.timeout,
            connect_timeout,
            proxy: proxy_for(base, |name| std::env::var(name).ok()),
            auth_scheme: config.auth_scheme,
            refresh: Arc::new(RefreshPreference {
                configured: config.refresh_method,
                flipped: AtomicBool::new(false),
            }),
        })
    }

    /// The shared reqwest client, built by the first caller. A failed build
    /// is not kept: the next call tries again.
    async fn http(&self) -> Result<&reqwest::Client, Error> {
        let lazy = &*self.http;
        lazy.client
            .get_or_try_init(|| async { lazy.settings.build() })
            .await
    }

    /// The `/sessions` endpoint, for messages.
    pub fn sessions_url(&self) -> &Url {
        &self.sessions_url
    }

    /// The `/refresh-access-token` endpoint, for messages.
    pub fn refresh_url(&self) -> &Url {
        &self.refresh_url
    }

    /// The refresh method in use: the configured one, or the other after a 405.
    pub fn refresh_method(&self) -> RefreshMethod {
        self.refresh.current()
    }

    /// How long one attempt may wait for a TCP connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `GET` on the API base, once: any HTTP answer proves that the name
    /// resolves, the connection (or proxy) works and TLS verifies.
    pub async fn probe(&self) -> Result<StatusCode, Error> {
        let request = self.http().await?.get(self.base.clone());
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, self.attempt(&self.base, request)).await {
            Ok(reply) => reply.map(|r| r.status),
            Err(_) => Err(Error::Timeout {
                url: self.base.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// `POST /sessions`: logs a user in with a password.
    pub async fn create_session(
        &self,
        username: &str,
        password: &Secret,
    ) -> Result<SessionResponse, Error> {
        let body = serde_json::to_vec(&SessionRequest { username, password })
            .map_err(|e| Error::Setup(format!("cannot encode the login request: {e}")))?;
        let http = self.http().await?;
        let request = || {
            http.post(self.sessions_url.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        };
        let deadline = Instant::now() + self.timeout;
        let (status, body) = self.send(&self.sessions_url, request, deadline).await?;
        parse_session_answer(&self.sessions_url, status, &body)
    }

    /// `/refresh-access-token`: exchanges a user token for a system token.
    pub async fn refresh_access_token(&self, user_token: &Secret) -> Result<TokenResponse, Error> {
        let method = self.refresh.current();
        // One budget for the call, the 405 fallback included.
        let deadline = Instant::now() + self.timeout;
        let (status, body) = match self.send_refresh(method, user_token, deadline).await? {
            (StatusCode::METHOD_NOT_ALLOWED, _) => {
                let other = method.other();
                let answer = self.send_refresh(other, user_token, deadline).await?;
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
        deadline: Instant,
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
        let http = self.http().await?;
        let request = || {
            http.request(http_method(method), self.refresh_url.clone())
                .header(header::ACCEPT, "application/json")
                .header(header::AUTHORIZATION, authorization.clone())
        };
        self.send(&self.refresh_url, request, deadline).await
    }

    /// Sends a request, retrying transient failures with backoff, all before
    /// `deadline`. Returns any final answer, even an error status.
    async fn send(
        &self,
        url: &Url,
        request: impl Fn() -> reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<(StatusCode, Vec<u8>), Error> {
        let mut attempts = 0;
        // The cause of the last retried failure, for when the deadline then
        // cuts the next attempt short: "timed out" alone would hide it.
        let mut earlier: Option<String> = None;
        loop {
            attempts += 1;
            let outcome = tokio::time::timeout_at(deadline, self.attempt(url, request()))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        url: url.to_string(),
                        timeout: self.timeout,
                    })
                });
            let (last, asked) = match outcome {
                Ok(reply) if RETRY_STATUSES.contains(&reply.status) => {
                    let message = serde_json::from_slice(&reply.body)
                        .ok()
                        .as_ref()
                        .and_then(error_message);
                    let error = Error::Status {
                        url: url.to_string(),
                        status: reply.status.as_u16(),
                        message,
                    };
                    (error, reply.retry_after)
                }
                Ok(reply) => return Ok((reply.status, reply.body)),
                Err(error) if error.is_transient() => (error, None),
                Err(error) if attempts > 1 => {
                    let reason =
                        earlier.map(|cause| format!("the attempt before failed with: {cause}"));
                    return Err(gave_up(attempts, reason, error));
                }
                Err(error) => return Err(error),
            };
            if attempts >= MAX_ATTEMPTS {
                return Err(gave_up(attempts, None, last));
            }
            let wait = match asked {
                Some(asked) if asked > RETRY_AFTER_CAP => {
                    let reason = format!(
                        "BigID asked to retry after {} s, longer than the {} s this server waits",
                        asked.as_secs(),
                        RETRY_AFTER_CAP.as_secs()
                    );
                    return Err(gave_up(attempts, Some(reason), last));
                }
                Some(asked) => asked,
                None => backoff(attempts),
            };
            if Instant::now() + wait >= deadline {
                let reason = format!(
                    "BIGID_TIMEOUT ({} s) leaves no time for another",
                    self.timeout.as_secs_f64()
                );
                return Err(gave_up(attempts, Some(reason), last));
            }
            tracing::debug!(
                url = %url,
                attempt = attempts,
                max_attempts = MAX_ATTEMPTS,
                retry_in_ms = wait.as_millis() as u64,
                cause = %last.brief(),
                "BigID call failed; retrying"
            );
            earlier = Some(last.brief());
            tokio::time::sleep(wait).await;
        }
    }

    /// One request, its body read up to [`MAX_BODY_BYTES`]. Unbounded in
    /// time: the caller puts the deadline around it.
    async fn attempt(&self, url: &Url, request: reqwest::RequestBuilder) -> Result<Reply, Error> {
        let mut response = request.send().await.map_err(|e| self.classify(url, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
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
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    fn classify(&self, url: &Url, error: reqwest::Error) -> Error {
        let url = url.to_string();
        // TLS failures happen while connecting, so they are checked first.
        if let Some(tls) = tls_cause(&error) {
            let problem = TlsProblem::of(tls);
            let cause = chain(&error);
            return Error::Tls {
                url,
                cause,
                problem,
            };
        }
        // "Unreachable" would send the operator after BigID when the proxy is down.
        let via = match &self.proxy {
            Some(p) => format!(" (through the proxy {} from {})", p.address, p.var),
            None => String::new(),
        };
        if error.is_connect() && error.is_timeout() {
            let cause = format!(
                "no connection within {} s (connect timeout){via}",
                self.connect_timeout.as_secs_f64()
            );
            return Error::Unreachable { url, cause };
        }
        if error.is_timeout() {
            return Error::Timeout {
                url,
                timeout: self.timeout,
            };
        }
        let cause = chain(&error);
        if error.is_connect() {
            let cause = format!("{cause}{via}");
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

fn gave_up(attempts: u32, reason: Option<String>, last: Error) -> Error {
    Error::GaveUp {
        attempts,
        reason,
        last: Box::new(last),
    }
}

/// A third of the budget, so that a peer that swallows SYNs still leaves time
/// for the retries; never more than [`CONNECT_TIMEOUT_CAP`].
fn connect_timeout(timeout: Duration) -> Duration {
    // Whole milliseconds, so that messages show "0.333 s", not nine digits.
    let third = Duration::from_millis((timeout / MAX_ATTEMPTS).as_millis() as u64);
    third.min(CONNECT_TIMEOUT_CAP)
}

/// Delay before retry number `attempt` (1-based): exponential, capped, with
/// "equal jitter" (half fixed, half random) so that many clients that failed
/// together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let half = exp / 2;
    half + half.mul_f64(random_fraction())
}

/// A number in `[0, 1)`. Jitter needs no cryptographic randomness, and the
/// standard library's per-instance random hash keys supply enough of it.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay-seconds, or an HTTP date (in the past means now).
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
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

/// The proxy a request to `url` goes through, as reqwest picks it from the
/// environment; for messages, so it never holds the proxy's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The variable that set it, e.g. `HTTPS_PROXY`.
    pub var: String,
    /// `scheme://host:port` of the proxy.
    pub address: String,
}

/// Which proxy, if any, reqwest uses for `url` given these environment
/// variables: `HTTPS_PROXY`/`HTTP_PROXY`, then `ALL_PROXY` (either case),
/// minus `NO_PROXY` and loopback hosts. `None` also when `NO_PROXY` has
/// CIDR ranges and the host is an address (reqwest may exempt it).
pub fn proxy_for(url: &Url, env: impl Fn(&str) -> Option<String>) -> Option<Proxied> {
    if is_loopback(url) {
        return None;
    }
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let host = host.to_ascii_lowercase();
    let no_proxy = env("NO_PROXY")
        .or_else(|| env("no_proxy"))
        .unwrap_or_default();
    let exempt = no_proxy
        .split(',')
        .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            entry == "*"
                || entry == host
                || host.ends_with(&format!(".{entry}"))
                || (entry.contains('/') && host.parse::<std::net::IpAddr>().is_ok())
        });
    if exempt {
        return None;
    }
    let names: &[&str] = match url.scheme() {
        "https" => &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        _ => &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
    };
    names.iter().find_map(|name| {
        let value = env(name)?;
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        // Like reqwest, read `host:port` as an http:// proxy.
        let full = match value.contains("://") {
            true => value.to_owned(),
            false => format!("http://{value}"),
        };
        let address = match Url::parse(&full) {
            Ok(proxy) => format!(
                "{}://{}{}",
                proxy.scheme(),
                proxy.host_str().unwrap_or("?"),
                proxy.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "(unparsable)".to_owned(),
        };
        Some(Proxied {
            var: (*name).to_owned(),
            address,
        })
    })
}

/// True for `localhost` and loopback addresses: never sent through a proxy.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
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

/// The error and its sources, most specific last, without the URL reqwest
/// adds (our messages name it separately) and without wrappers that only
/// repeat their cause.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = match e.downcast_ref::<reqwest::Error>() {
            Some(re) if re.url().is_some() => {
                let mut shown = re.to_string();
                if let Some(url) = re.url() {
                    shown = shown
                        .replace(&format!(" ({url})"), "")
                        .replace(url.as_str(), "");
                }
                shown
            }
            _ => e.to_string(),
        };
        // reqwest's and hyper-util's wrappers say nothing their causes do not.
        let wrapper = e.source().is_some()
            && (text.starts_with("error sending request")
                || text.starts_with("error decoding response body")
                || text.starts_with("client error ("));
        if !text.is_empty() && !wrapper && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// The rustls error behind a failure, if any. `io::Error::source` skips the
/// error it wraps, and hyper-rustls wraps rustls' errors in an `io::Error`
/// (which hyper-util wraps in another), so wrapped errors are followed
/// explicitly.
pub fn tls_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
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

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(
                first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
                "{first:?}"
            );
            let second = backoff(2);
            assert!(
                second >= BACKOFF_BASE && second <= BACKOFF_BASE * 2,
                "{second:?}"
            );
            let late = backoff(40);
            assert!(late >= BACKOFF_CAP / 2 && late <= BACKOFF_CAP, "{late:?}");
        }
        let spread: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn connect_timeout_leaves_room_for_retries() {
        assert_eq!(
            connect_timeout(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            connect_timeout(Duration::from_secs(300)),
            CONNECT_TIMEOUT_CAP
        );
    }

    #[test]
    fn gave_up_names_the_attempts_and_keeps_the_cause() {
        let last = Error::Status {
            url: "https://t/api/v1/sessions".into(),
            status: 503,
            message: Some("Service Unavailable".into()),
        };
        let error = gave_up(3, None, last.clone());
        assert_eq!(
            error.to_string(),
            "BigID at https://t/api/v1/sessions answered HTTP 503: Service Unavailable; \
             gave up after 3 attempts"
        );
        assert_eq!(error.attempts(), 3);
        assert!(matches!(error.root(), Error::Status { status: 503, .. }));
        let one = gave_up(1, Some("no time left".into()), last);
        assert!(
            one.to_string()
                .ends_with("gave up after 1 attempt: no time left")
        );
    }

    #[test]
    fn retry_log_cause_leaves_out_bigid_messages() {
        let echoed = Error::Status {
            url: "u".into(),
            status: 502,
            message: Some("token hunter2 unknown".into()),
        };
        assert_eq!(echoed.brief(), "HTTP 502");
    }

    #[test]
    fn mapped_ipv4_loopback_counts_as_loopback() {
        let mapped = Url::parse("http://[::ffff:127.0.0.1]:9/api/v1").unwrap();
        assert!(is_loopback(&mapped));
        let public = Url::parse("http://[::ffff:192.0.2.1]:9/api/v1").unwrap();
        assert!(!is_loopback(&public));
    }

    #[test]
    fn tls_errors_are_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        let found = tls_cause(&outer).expect("found");
        assert_eq!(TlsProblem::of(found), TlsProblem::UnknownCa);
        assert!(tls_cause(&std::io::Error::other("plain")).is_none());
    }

    #[test]
    fn proxy_for_follows_the_variables_without_showing_credentials() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let https = Url::parse("https://t.bigid.com/api/v1").unwrap();
        let http = Url::parse("http://t.bigid.com/api/v1").unwrap();
        let with_auth = env(&[("https_proxy", "http://bob:hunter2@proxy.corp:3128")]);
        assert_eq!(
            proxy_for(&https, with_auth),
            Some(Proxied {
                var: "https_proxy".into(),
                address: "http://proxy.corp:3128".into()
            })
        );
        let bare = env(&[("ALL_PROXY", "bob:hunter2@proxy:3128")]);
        assert_eq!(proxy_for(&http, bare).unwrap().address, "http://proxy:3128");
        assert_eq!(
            proxy_for(&http, env(&[("HTTPS_PROXY", "http://p:1")])),
            None
        );
        let loopback = Url::parse("http://127.0.0.1:9/api/v1").unwrap();
        assert_eq!(
            proxy_for(&loopback, env(&[("HTTP_PROXY", "http://p:1")])),
            None
        );
        for no_proxy in ["bigid.com", ".bigid.com", "x, t.bigid.com", "*"] {
            let vars: &'static [(&str, &str)] = Box::leak(Box::new([
                ("HTTPS_PROXY", "http://p:1"),
                ("NO_PROXY", no_proxy),
            ]));
            assert_eq!(proxy_for(&https, env(vars)), None, "{no_proxy}");
        }
        let other = env(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "notbigid.com")]);
        assert!(proxy_for(&https, other).is_some());
    }
}
