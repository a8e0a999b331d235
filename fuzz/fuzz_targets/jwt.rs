//! Unverified JWT decoding on arbitrary text: never a panic, and a reported
//! expiry is always RFC 3339 text.
#![no_main]

use bigid_auth_mcp::jwt::decode_unverified;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(claims) = decode_unverified(&text)
        && let Some(at) = claims.expires_at_rfc3339()
    {
        assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    }
});
