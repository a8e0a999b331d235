//! Why a call to BigID failed, and the messages that say so.

use std::{fmt, time::Duration};

use super::tls::TlsProblem;

/// Longest BigID `message` passed on to the client.
const MAX_MESSAGE_CHARS: usize = 300;

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
    /// The body exceeded [`MAX_BODY_BYTES`](super::MAX_BODY_BYTES).
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
        /// Why no further attempt was made, when not because [`MAX_ATTEMPTS`](super::MAX_ATTEMPTS) was reached.
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
    pub(super) fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Body { .. })
    }

    /// A short cause for the debug log; BigID's `message` is left out because
    /// BigID may echo a credential in it.
    pub(super) fn brief(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::Unreachable { cause, .. } | Self::Body { cause, .. } => cause.clone(),
            other => other.to_string(),
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

pub(super) fn gave_up(attempts: u32, reason: Option<String>, last: Error) -> Error {
    Error::GaveUp {
        attempts,
        reason,
        last: Box::new(last),
    }
}

/// BigID puts its explanation in `message` (sometimes `error` or `errorMessage`).
pub(super) fn error_message(json: &serde_json::Value) -> Option<String> {
    ["message", "error", "errorMessage", "error_description"]
        .iter()
        .find_map(|k| json.get(k).and_then(serde_json::Value::as_str))
        .and_then(|m| clean_message(Some(m)))
}

pub(super) fn clean_message(message: Option<&str>) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
