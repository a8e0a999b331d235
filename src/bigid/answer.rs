//! BigID's answers, read into typed results or the error BigID meant.

use reqwest::{StatusCode, Url};
use serde::{Deserialize, de::DeserializeOwned};

use super::error::{Credential, Error, clean_message, error_message};
use crate::secret::Secret;

/// A successful login: what `POST /sessions` answered, checked.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session token; never empty.
    pub auth_token: Secret,
    /// BigID's human-readable message.
    pub message: Option<String>,
    /// The user name BigID logged in, when it says.
    pub username: Option<String>,
    /// The user's first name.
    pub first_name: Option<String>,
    /// The user's permission strings; empty when BigID sent none.
    pub permissions: Vec<String>,
}

/// A successful exchange: what `/refresh-access-token` answered, checked.
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The short-lived system token; never empty.
    pub system_token: Secret,
}

/// `POST /sessions` response as sent. Every field is optional: deployments differ.
#[derive(Deserialize)]
struct SessionResponse {
    /// BigID's verdict; `false` means the login failed even on HTTP 200.
    success: Option<bool>,
    /// BigID's human-readable message.
    message: Option<String>,
    /// The session token.
    auth_token: Option<Secret>,
    /// The user name BigID logged in.
    username: Option<String>,
    /// The user's first name.
    #[serde(rename = "firstName")]
    first_name: Option<String>,
    /// The user's permission strings.
    permissions: Option<Vec<String>>,
}

/// `/refresh-access-token` response as sent.
#[derive(Deserialize)]
struct TokenResponse {
    /// BigID's verdict.
    success: Option<bool>,
    /// BigID's human-readable message, on failure.
    message: Option<String>,
    /// The short-lived system token.
    #[serde(rename = "systemToken")]
    system_token: Option<Secret>,
}

/// Turns a `/sessions` answer into a session, or the error BigID meant.
/// Pure (no I/O), so the property tests and the fuzz target can drive it.
pub fn parse_session_answer(url: &Url, status: StatusCode, body: &[u8]) -> Result<Session, Error> {
    let response: SessionResponse = parse_answer(url, status, body, Credential::Password)?;
    if response.success == Some(false) {
        return Err(Error::Rejected {
            credential: Credential::Password,
            status: status.as_u16(),
            message: clean_message(response.message.as_deref()),
        });
    }
    let Some(auth_token) = response.auth_token.filter(|t| !t.is_empty()) else {
        return Err(Error::BadShape {
            url: url.to_string(),
            cause: "no `auth_token` in a successful answer".into(),
        });
    };
    Ok(Session {
        auth_token,
        message: response.message,
        username: response.username,
        first_name: response.first_name,
        // Deployments that send no permissions grant none worth counting.
        permissions: response.permissions.unwrap_or_default(),
    })
}

/// Turns a `/refresh-access-token` answer into a system token, or the error
/// BigID meant. Pure, like [`parse_session_answer`].
pub fn parse_token_answer(url: &Url, status: StatusCode, body: &[u8]) -> Result<Refreshed, Error> {
    let response: TokenResponse = parse_answer(url, status, body, Credential::UserToken)?;
    if response.success == Some(false) {
        return Err(Error::Rejected {
            credential: Credential::UserToken,
            status: status.as_u16(),
            message: clean_message(response.message.as_deref()),
        });
    }
    let Some(system_token) = response.system_token.filter(|t| !t.is_empty()) else {
        return Err(Error::BadShape {
            url: url.to_string(),
            cause: "no `systemToken` in a successful answer".into(),
        });
    };
    Ok(Refreshed { system_token })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
