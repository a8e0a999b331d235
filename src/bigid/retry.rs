//! Retries with backoff and `Retry-After`, all within one deadline per call.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use tokio::time::Instant;

use super::{
    Client,
    error::{Error, error_message, gave_up},
};

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

impl Client {
    /// Sends a request, retrying transient failures with backoff, all before
    /// `deadline`. Returns any final answer, even an error status.
    pub(super) async fn send(
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
}

/// A third of the budget, so that a peer that swallows SYNs still leaves time
/// for the retries; never more than [`CONNECT_TIMEOUT_CAP`].
pub(super) fn connect_timeout(timeout: Duration) -> Duration {
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
pub(super) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
