//! Reads the claims of a BigID JWT without verifying it: the server cannot
//! check BigID's signature, so what it decodes is reported, never trusted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;

/// 9999-12-31T23:59:59Z, the last instant RFC 3339 (four-digit years) can write.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// The claims this server cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub exp: Option<i64>,
    /// BigID's token kind, e.g. `access-token` or `refresh-token`.
    #[serde(default, rename = "type")]
    pub token_type: Option<String>,
}

impl Claims {
    /// The expiry as a point in time, when there is one that RFC 3339 can
    /// write (years 1970 to 9999).
    pub fn expires(&self) -> Option<SystemTime> {
        let exp = u64::try_from(self.exp?).ok()?;
        // humantime's formatter returns fmt::Error past year 9999, and
        // `to_string()` turns that into a panic: a far-future `exp` from BigID
        // would crash the tool call. Such an expiry is treated as unknown.
        if exp > LAST_RFC3339_SECOND {
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::from_secs(exp))
    }

    /// The expiry as RFC 3339 (`2026-11-28T20:22:25Z`), when there is one.
    pub fn expires_at_rfc3339(&self) -> Option<String> {
        self.expires()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    }
}

/// Decodes the payload of a compact JWT (`header.payload.signature`), or
/// `None` when the token is not one.
pub fn decode_unverified(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 64 * 1024 {
        return None;
    }
    // Some issuers pad; the unpadded engine rejects `=`.
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `exp` is a number of seconds; accept floats too, ignore anything else.
fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(match value {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn decodes_exp_and_type() {
        let claims = decode_unverified(&token(r#"{"exp":1764361345,"type":"access-token"}"#));
        let claims = claims.unwrap();
        assert_eq!(claims.exp, Some(1_764_361_345));
        assert_eq!(claims.token_type.as_deref(), Some("access-token"));
        assert_eq!(
            claims.expires_at_rfc3339().as_deref(),
            Some("2025-11-28T20:22:25Z")
        );
    }

    #[test]
    fn float_exp_is_truncated_and_junk_exp_is_ignored() {
        assert_eq!(
            decode_unverified(&token(r#"{"exp":12.9}"#)).unwrap().exp,
            Some(12)
        );
        let junk = decode_unverified(&token(r#"{"exp":"soon"}"#)).unwrap();
        assert_eq!(junk.exp, None);
        assert_eq!(junk.expires_at_rfc3339(), None);
    }

    #[test]
    fn negative_exp_has_no_rfc3339_form() {
        let claims = decode_unverified(&token(r#"{"exp":-5}"#)).unwrap();
        assert_eq!(claims.expires_at_rfc3339(), None);
    }

    #[test]
    fn exp_past_year_9999_has_no_rfc3339_form_and_does_not_panic() {
        let last = decode_unverified(&token(r#"{"exp":253402300799}"#)).unwrap();
        assert_eq!(
            last.expires_at_rfc3339().as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
        for exp in ["253402300800", "1e15", "9223372036854775807"] {
            let claims = decode_unverified(&token(&format!(r#"{{"exp":{exp}}}"#))).unwrap();
            assert_eq!(claims.expires(), None, "{exp}");
            assert_eq!(claims.expires_at_rfc3339(), None, "{exp}");
        }
    }

    #[test]
    fn malformed_tokens_decode_to_none() {
        for bad in [
            "",
            "opaque-user-token",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("a.{}.c", URL_SAFE_NO_PAD.encode("not json")),
            &format!("a.{}.c", URL_SAFE_NO_PAD.encode("[1,2]")),
        ] {
            assert_eq!(decode_unverified(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn padded_payload_is_accepted() {
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":1}"#)
        );
        assert_eq!(decode_unverified(&padded).unwrap().exp, Some(1));
    }
}
