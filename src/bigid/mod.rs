//! The BigID Authentication API client. Knows HTTP and BigID, nothing of MCP.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

mod answer;
mod error;
mod proxy;
mod retry;
mod tls;

use reqwest::{Method, StatusCode, Url, header};
use serde::Serialize;
use tokio::time::Instant;

pub use self::{
    answer::{Refreshed, Session, parse_session_answer, parse_token_answer},
    error::{Credential, Error},
    proxy::{Proxied, is_loopback, proxy_for},
    retry::{MAX_ATTEMPTS, RETRY_AFTER_CAP},
    tls::{TlsProblem, tls_cause},
};
use self::{
    retry::{connect_timeout, parse_retry_after},
    tls::HttpSettings,
};
use crate::{
    config::{AuthScheme, BigIdConfig, RefreshMethod},
    error_chain::chain,
    secret::Secret,
};

/// Largest response body accepted. Real `/sessions` answers reach ~16 KB
/// (hundreds of permission strings); anything near this cap is not BigID.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// `POST /sessions` request body.
#[derive(Serialize)]
struct SessionRequest<'a> {
    username: &'a str,
    password: &'a Secret,
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
            Some(path) => {
                crate::ca::load_ca_certs(path).map_err(|e| Error::Setup(e.to_string()))?
            }
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
    ) -> Result<Session, Error> {
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
    pub async fn refresh_access_token(&self, user_token: &Secret) -> Result<Refreshed, Error> {
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
}
