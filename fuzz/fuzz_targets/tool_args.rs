//! Tool-argument parsing on arbitrary JSON: never a panic, and an error
//! names the argument without quoting a value that may be a password.
#![no_main]

use bigid_auth_mcp::tools::{CreateSessionArgs, RefreshArgs, parse_args};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for error in [
        parse_args::<CreateSessionArgs>(value.clone()).err(),
        parse_args::<RefreshArgs>(value.clone()).err(),
    ]
    .into_iter()
    .flatten()
    {
        let text = error.to_string();
        assert!(
            text.starts_with("invalid argument `") || text.starts_with("unknown argument `"),
            "{text}"
        );
        // Values of known arguments never come back. (A value with a digit
        // or capital letter cannot be part of the lowercase message template.)
        if let Some(object) = value.as_object() {
            for name in ["username", "password", "user_token"] {
                if let Some(Value::String(s)) = object.get(name)
                    && s.len() >= 8
                    && s.chars()
                        .any(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                    && !text.contains("unknown argument")
                {
                    assert!(!text.contains(s.as_str()), "echoed the value of `{name}`");
                }
            }
        }
    }
});
