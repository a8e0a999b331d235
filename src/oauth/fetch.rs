//! Bounded GETs of small JSON documents (authorization server metadata,
//! JWKS): a timeout on every request and a cap on every body, so a slow or
//! hostile issuer can neither hang a request nor fill memory.

use std::time::Duration;

use reqwest::Url;
use serde::de::DeserializeOwned;

/// Largest metadata or key set document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;
/// Whole-request timeout of each fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a document could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection refused, DNS, TLS, or the timeout.
    #[error("unreachable ({0})")]
    Unreachable(String),
    /// A status other than 200.
    #[error("HTTP {0}")]
    Status(u16),
    /// More than [`MAX_DOCUMENT_BYTES`].
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// Not the JSON expected.
    #[error("not a valid JSON document of the expected shape ({0})")]
    BadJson(String),
}

/// The HTTP client for metadata and keys: rustls, no redirects followed
/// (an issuer's documents live where its metadata says), bounded.
pub fn client() -> Result<reqwest::Client, FetchError> {
    // reqwest is built without a default crypto provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("bigid-auth-mcp/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| FetchError::Unreachable(error_chain(&e)))
}

/// GETs `url` and parses it as `T`.
pub async fn json<T: DeserializeOwned>(http: &reqwest::Client, url: &Url) -> Result<T, FetchError> {
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| FetchError::Unreachable(error_chain(&e)))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Unreachable(error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::BadJson(e.to_string()))
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
