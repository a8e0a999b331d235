//! BigID's answer parser on arbitrary bytes. Input: two bytes of HTTP
//! status (mapped into 100..=999), then the body.
#![no_main]

use bigid_auth_mcp::bigid::{parse_session_answer, parse_token_answer};
use http::StatusCode;
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, body @ ..] => (100 + u16::from_be_bytes([*a, *b]) % 900, body),
        _ => return,
    };
    let Ok(status) = StatusCode::from_u16(status) else {
        return;
    };
    let url = Url::parse("https://tenant.bigid.example/api/v1/sessions").expect("static URL");
    let session = parse_session_answer(&url, status, body).map(|s| s.auth_token);
    let token = parse_token_answer(&url, status, body).map(|t| t.system_token);
    for outcome in [session, token] {
        match outcome {
            Ok(token) => {
                assert!(status.is_success(), "accepted HTTP {status}");
                assert!(
                    !token.is_empty(),
                    "accepted without a token"
                );
            }
            Err(error) => {
                let text = error.to_string();
                assert!(
                    !text.chars().any(char::is_control),
                    "control character in {text:?}"
                );
                assert!(
                    text.chars().count() <= 700,
                    "unbounded message ({} chars)",
                    text.len()
                );
            }
        }
    }
});
