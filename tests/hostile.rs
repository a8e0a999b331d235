//! Hostile input: property tests that throw arbitrary data at
//! every place the server parses something it did not write itself: tool
//! arguments, BigID's answers (as bytes, and as whole HTTP exchanges), and
//! the JWTs inside them. Each property is one a careless parser breaks:
//! no panic, no echo of a value that may be a secret, no control characters
//! smuggled into a message, an answer within the timeout.
//!
//! `BIGID_MCP_SOAK=N` multiplies the number of cases by N.

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bigid_auth_mcp::{
    bigid, config, jwt,
    tools::{CreateSessionArgs, RefreshArgs, parse_args},
};
use common::canned::{Canned, Reply};
use proptest::{prelude::*, test_runner::TestRunner};
use reqwest::{StatusCode, Url};
use rmcp::model::CallToolRequestParams;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Marks every string a test treats as secret: it must never come back.
const MARK: &str = "SECRET";
/// Marks the tokens in generated BigID answers.
const TOKEN_MARK: &str = "ZZTOKEN";
/// 9999-12-31T23:59:59Z as seconds since the epoch.
const LAST_RFC3339_SECOND: i64 = 253_402_300_799;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases.saturating_mul(common::soak()),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------- strategies

/// Names the server knows, so generated objects often hit real fields.
const KNOWN_KEYS: &[&str] = &[
    "username",
    "password",
    "include_permissions",
    "user_token",
    "force_refresh",
    "success",
    "message",
    "auth_token",
    "systemToken",
    "firstName",
    "permissions",
    "error",
    "errorMessage",
    "error_description",
    "exp",
    "type",
];

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(KNOWN_KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => any::<String>(),
    ]
}

fn finite_f64() -> impl Strategy<Value = Value> {
    any::<f64>().prop_filter_map("JSON has no NaN or infinity", |f| {
        serde_json::Number::from_f64(f).map(Value::Number)
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64(),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON whose every string carries [`MARK`] and whose every number has at
/// least ten digits, so an echo of any value is visible in an error text.
fn marked_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (1_000_000_007_i64..i64::MAX).prop_map(Value::from),
        (i64::MIN..-1_000_000_007_i64).prop_map(Value::from),
        (1.0e9_f64..1.0e15).prop_map(Value::from),
        // Quotes, backticks and serde's own ", expected " try to confuse
        // the code that cuts serde's message down to the expectation.
        "SECRET[A-Za-z0-9 ,`\"]{0,16}(, expected [a-z ]{0,10})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arg_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&KNOWN_KEYS[..5]).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ]
}

/// Something in the place of a JWT's `exp` claim.
fn exp_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64(),
        (LAST_RFC3339_SECOND - 5..LAST_RFC3339_SECOND + 5).prop_map(Value::from),
        (0_i64..4_000_000_000).prop_map(Value::from),
        any_json(),
    ]
}

/// A JWT-shaped token with arbitrary claims (or an arbitrary payload).
fn jwt_like() -> impl Strategy<Value = String> {
    let claims = prop_oneof![
        3 => (exp_value(), any_json(), prop::collection::btree_map(any_key(), any_json(), 0..4))
            .prop_map(|(exp, kind, mut extra)| {
                extra.insert("exp".into(), exp);
                extra.insert("type".into(), kind);
                Value::Object(extra.into_iter().collect()).to_string().into_bytes()
            }),
        1 => any::<Vec<u8>>(),
    ];
    (any::<Vec<u8>>(), claims, "[A-Za-z0-9_=-]{0,20}", 0_usize..3).prop_map(
        |(header, claims, signature, padding)| {
            format!(
                "{}.{}{}.{signature}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims),
                "=".repeat(padding)
            )
        },
    )
}

fn token_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[A-Za-z0-9._-]{0,24}".prop_map(|t| Value::String(format!("{TOKEN_MARK}{t}"))),
        1 => jwt_like().prop_map(|t| Value::String(format!("{TOKEN_MARK}{t}"))),
        1 => any_json(),
    ]
}

/// Objects shaped like BigID's answers, right and wrong.
fn bigid_like() -> impl Strategy<Value = Value> {
    let maybe = |s: BoxedStrategy<Value>| prop::option::weighted(0.7, s);
    (
        maybe(prop_oneof![3 => any::<bool>().prop_map(Value::Bool), 1 => any_json()].boxed()),
        maybe(prop_oneof![3 => any::<String>().prop_map(Value::String), 1 => any_json()].boxed()),
        maybe(token_value().boxed()),
        maybe(token_value().boxed()),
        maybe(
            prop_oneof![
                3 => prop::collection::vec(any::<String>(), 0..40)
                    .prop_map(Value::from),
                1 => any_json(),
            ]
            .boxed(),
        ),
        prop::collection::btree_map(any_key(), any_json(), 0..4),
    )
        .prop_map(|(success, message, auth, system, permissions, extra)| {
            let mut object: serde_json::Map<String, Value> = extra
                .into_iter()
                .filter(|(_, v)| !v.to_string().contains(TOKEN_MARK))
                .collect();
            for (key, value) in [
                ("success", success),
                ("message", message),
                ("auth_token", auth),
                ("systemToken", system),
                ("permissions", permissions),
            ] {
                if let Some(value) = value {
                    object.insert(key.into(), value);
                }
            }
            Value::Object(object)
        })
}

/// A response body: garbage, JSON, BigID-like JSON, or BigID-like JSON cut short.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => any::<Vec<u8>>(),
        1 => any_json().prop_map(|v| v.to_string().into_bytes()),
        3 => bigid_like().prop_map(|v| v.to_string().into_bytes()),
        1 => (bigid_like(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let bytes = v.to_string().into_bytes();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
        1 => Just(b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>".to_vec()),
    ]
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        3 => prop::sample::select(vec![200_u16, 201, 204, 400, 401, 403, 404, 405, 429, 500, 502, 503, 504]),
        1 => 100_u16..1000,
    ]
    .prop_map(|n| StatusCode::from_u16(n).unwrap_or(StatusCode::IM_A_TEAPOT))
}

// ---------------------------------------------------------------- checks

/// True when `text` holds ten digits in a row: a generated number echoed back.
fn has_long_digit_run(text: &str) -> bool {
    let mut run = 0;
    text.chars().any(|c| {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        run >= 10
    })
}

fn arg_error<T: DeserializeOwned + schemars::JsonSchema>(value: &Value) -> Option<String> {
    parse_args::<T>(value.clone()).err().map(|e| e.to_string())
}

/// What every BigID error message must be: bounded, one line, no token.
/// BigID's `success` verdict in a body, when the body is JSON that has one.
fn success_field(body: &[u8]) -> Option<bool> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("success")?
        .as_bool()
}

fn check_bigid_error(error: &bigid::Error, status: StatusCode) -> Result<(), TestCaseError> {
    let text = error.to_string();
    prop_assert!(!text.contains(TOKEN_MARK), "token echoed: {text}");
    prop_assert!(
        !text.chars().any(char::is_control),
        "control character (log injection) in {text:?}"
    );
    prop_assert!(text.chars().count() <= 700, "unbounded message: {text}");
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        prop_assert!(
            matches!(error, bigid::Error::Rejected { .. }),
            "{status} must be a rejection: {error:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(512))]

    /// An argument error names the argument, never its value: the value may
    /// be a password. And no argument object, however odd, panics the parser.
    #[test]
    fn tool_arguments_never_panic_and_never_echo_a_value(
        args in prop::collection::btree_map(arg_key(), marked_json(), 0..6)
    ) {
        let value = Value::Object(args.into_iter().collect());
        let errors = [arg_error::<CreateSessionArgs>(&value), arg_error::<RefreshArgs>(&value)];
        for text in errors.into_iter().flatten() {
            prop_assert!(!text.contains(MARK), "value echoed: {text}");
            prop_assert!(!has_long_digit_run(&text), "number echoed: {text}");
            prop_assert!(
                text.starts_with("invalid argument `") || text.starts_with("unknown argument `"),
                "names the argument: {text}"
            );
        }
        if let Ok(args) = parse_args::<CreateSessionArgs>(value.clone()) {
            prop_assert_eq!(args.username.as_deref(), value.get("username").and_then(Value::as_str));
            prop_assert_eq!(
                args.password.as_ref().map(|p| p.expose()),
                value.get("password").and_then(Value::as_str)
            );
        }
    }

    /// Any JSON at all (not only objects, keys of any text) is an error or
    /// arguments, never a panic.
    #[test]
    fn tool_arguments_of_any_shape_never_panic(value in any_json()) {
        let _ = parse_args::<CreateSessionArgs>(value.clone());
        let _ = parse_args::<RefreshArgs>(value);
    }

    /// Arbitrary text as a token: `None` or claims, never a panic.
    #[test]
    fn jwt_decoding_never_panics_on_arbitrary_text(token in any::<String>()) {
        if let Some(claims) = jwt::decode_unverified(&token) {
            let _ = claims.expires_at_rfc3339();
        }
    }

    /// Well-formed JWTs with any claims: the expiry, when reported, is valid
    /// RFC 3339 that means the same instant; an integer `exp` inside RFC 3339's
    /// range is always reported.
    #[test]
    fn jwt_expiry_is_reported_faithfully_or_not_at_all(token in jwt_like()) {
        let Some(claims) = jwt::decode_unverified(&token) else { return Ok(()) };
        match claims.expires_at_rfc3339() {
            Some(text) => {
                let parsed = humantime::parse_rfc3339(&text).map_err(|e| {
                    TestCaseError::fail(format!("{text:?} is not RFC 3339: {e}"))
                })?;
                prop_assert_eq!(Some(parsed), claims.expires());
            }
            None => prop_assert!(
                claims.exp.is_none_or(|exp| !(0..=LAST_RFC3339_SECOND).contains(&exp)),
                "exp {:?} has an RFC 3339 form", claims.exp
            ),
        }
    }

    /// Whatever BigID sends, parsing it never panics; an error is one bounded
    /// line without the token; success means a 2xx with a non-empty token.
    #[test]
    fn bigid_answers_never_panic_and_errors_stay_clean(status in status(), body in body()) {
        let url = Url::parse("https://tenant.bigid.example/api/v1/sessions").expect("url");
        match bigid::parse_session_answer(&url, status, &body) {
            Ok(session) => {
                prop_assert!(status.is_success());
                prop_assert!(!session.auth_token.is_empty());
                prop_assert_ne!(success_field(&body), Some(false));
            }
            Err(error) => check_bigid_error(&error, status)?,
        }
        match bigid::parse_token_answer(&url, status, &body) {
            Ok(token) => {
                prop_assert!(status.is_success());
                prop_assert!(!token.system_token.is_empty());
                prop_assert_ne!(success_field(&body), Some(false));
            }
            Err(error) => check_bigid_error(&error, status)?,
        }
    }

    /// A good answer is accepted whatever else rides along with it.
    #[test]
    fn good_bigid_answers_are_accepted(
        token in "[A-Za-z0-9._-]{1,64}",
        message in prop::option::of(any::<String>()),
        permissions in prop::collection::vec(any::<String>(), 0..50),
        extra in prop::collection::btree_map("x_[a-z]{1,8}", any_json(), 0..4),
    ) {
        let url = Url::parse("http://127.0.0.1:9/api/v1/sessions").expect("url");
        let mut answer: serde_json::Map<String, Value> = extra.into_iter().collect();
        answer.insert("success".into(), json!(true));
        answer.insert("auth_token".into(), json!(token));
        answer.insert("systemToken".into(), json!(token));
        answer.insert("permissions".into(), json!(permissions));
        if let Some(message) = &message {
            answer.insert("message".into(), json!(message));
        }
        let body = Value::Object(answer).to_string().into_bytes();
        let session = bigid::parse_session_answer(&url, StatusCode::OK, &body)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(session.auth_token.expose(), token.as_str());
        prop_assert_eq!(session.permissions.len(), permissions.len());
        let system = bigid::parse_token_answer(&url, StatusCode::OK, &body)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(system.system_token.expose(), token.as_str());
    }
}

// ---------------------------------------------------------------- whole HTTP exchanges

/// What a hostile or broken BigID can put on the wire.
fn wire_reply() -> impl Strategy<Value = Reply> {
    let content_type = prop::sample::select(vec![
        "application/json",
        "text/html; charset=utf-8",
        "text/plain",
    ]);
    prop_oneof![
        4 => (status(), content_type, body())
            .prop_map(|(s, ct, body)| Reply::http(s.as_u16(), ct, &body)),
        // A token from the far future, the past, or nowhere: the tool reports
        // `expires_at` or leaves it out, it does not crash.
        2 => exp_value().prop_map(|exp| {
            let claims = URL_SAFE_NO_PAD.encode(json!({"exp": exp, "type": "access-token"}).to_string());
            let token = format!("e30.{claims}.sig");
            let body = json!({"success": true, "auth_token": token, "systemToken": token});
            Reply::http(200, "application/json", body.to_string().as_bytes())
        }),
        // Not HTTP at all.
        1 => any::<Vec<u8>>().prop_map(Reply::Raw),
        // Headers promise more body than ever comes, then the line goes quiet.
        1 => body().prop_map(|body| {
            let mut bytes = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len() + 100
            ).into_bytes();
            bytes.extend_from_slice(&body);
            Reply::RawThenStall(bytes)
        }),
        // Headers promise more body, then the connection closes.
        1 => body().prop_map(|body| {
            let mut bytes = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                body.len() + 1
            ).into_bytes();
            bytes.extend_from_slice(&body);
            Reply::Raw(bytes)
        }),
        // Broken chunked encoding.
        1 => any::<Vec<u8>>().prop_map(|junk| {
            let mut bytes = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            bytes.extend_from_slice(&junk);
            Reply::Raw(bytes)
        }),
        1 => Just(Reply::Close),
    ]
}

/// Through the real client and MCP server: whatever BigID puts on the wire,
/// each tool call ends within the timeout as a success with a token or an
/// `isError` result that names BigID's URL (or says what was rejected),
/// without the password or token sent, and the session keeps serving.
#[test]
fn any_bigid_reply_ends_as_a_clean_result_within_the_timeout() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let timeout = Duration::from_millis(300);
    let (canned, client) = runtime.block_on(async {
        let canned = Canned::start().await?;
        let bigid = config::BigIdConfig {
            timeout,
            ..common::bigid_config(&canned.url())
        };
        let client =
            common::connect_in_process(&canned.url(), bigid, config::Defaults::default()).await?;
        anyhow::Ok((canned, client))
    })?;
    let url = canned.url().to_string();
    let password = "SECRET-pw-hostile";
    let user_token = "SECRET-user-token-hostile";

    // Each failing case can cost the whole budget: keep shrinking short.
    let mut runner = TestRunner::new(ProptestConfig {
        max_shrink_iters: 64,
        ..config(40)
    });
    let outcome = runner.run(&wire_reply(), |reply| {
        runtime.block_on(async {
            canned.set(reply);
            for (tool, args) in [
                (
                    "create_session",
                    json!({"username": "u", "password": password}),
                ),
                (
                    "refresh_access_token",
                    json!({"user_token": user_token, "force_refresh": true}),
                ),
            ] {
                // A 405 to the refresh method is retried once with the other.
                let budget = timeout * 2 + Duration::from_secs(1);
                let mut params = CallToolRequestParams::new(tool);
                if let Value::Object(args) = args {
                    params = params.with_arguments(args);
                }
                let result = tokio::time::timeout(budget, client.call_tool(params))
                    .await
                    .map_err(|_| {
                        TestCaseError::fail(format!("{tool}: no answer within {budget:?}"))
                    })?
                    .map_err(|e| TestCaseError::fail(format!("{tool}: JSON-RPC error {e}")))?;
                let text = common::text(&result);
                prop_assert!(!text.contains(MARK), "{tool} echoed a secret: {text}");
                if result.is_error == Some(true) {
                    prop_assert!(result.structured_content.is_none());
                    prop_assert!(
                        text.contains(&url) || text.contains("rejected"),
                        "{tool}: error names neither BigID nor a rejection: {text}"
                    );
                } else {
                    let value = result.structured_content.clone().unwrap_or_default();
                    let token = value
                        .get("auth_token")
                        .or_else(|| value.get("systemToken"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    prop_assert!(
                        !token.is_empty(),
                        "{tool}: success without a token: {value}"
                    );
                    if let Some(at) = value.get("expires_at").and_then(Value::as_str) {
                        prop_assert!(humantime::parse_rfc3339(at).is_ok(), "expires_at {at:?}");
                    }
                }
            }
            Ok(())
        })
    });
    // The session still serves after all of that.
    runtime.block_on(async {
        canned.set(Reply::http(
            200,
            "application/json",
            br#"{"success":true,"auth_token":"fine"}"#,
        ));
        let result = common::call(
            &client,
            "create_session",
            json!({"username": "u", "password": "p"}),
        )
        .await?;
        assert_eq!(common::structured(&result)["auth_token"], "fine");
        anyhow::Ok(())
    })?;
    outcome.map_err(|e| anyhow::anyhow!("{e}"))
}

/// A BigID token whose `exp` lies past year 9999 used to panic the tool call
/// (humantime cannot write such a date), so the client never got an answer.
#[tokio::test]
async fn far_future_token_expiry_is_left_out_not_a_crash() -> anyhow::Result<()> {
    let canned = Canned::start().await?;
    let claims = URL_SAFE_NO_PAD.encode(r#"{"exp":253402300800,"type":"access-token"}"#);
    let token = format!("e30.{claims}.sig");
    let body = json!({"success": true, "auth_token": token, "systemToken": token});
    canned.set(Reply::http(
        200,
        "application/json",
        body.to_string().as_bytes(),
    ));
    let bigid = config::BigIdConfig {
        timeout: Duration::from_secs(1),
        ..common::bigid_config(&canned.url())
    };
    let client =
        common::connect_in_process(&canned.url(), bigid, config::Defaults::default()).await?;
    for (tool, args) in [
        ("create_session", json!({"username": "u", "password": "p"})),
        ("refresh_access_token", json!({"user_token": "t"})),
    ] {
        let mut params = CallToolRequestParams::new(tool);
        if let Value::Object(args) = args {
            params = params.with_arguments(args);
        }
        let result = tokio::time::timeout(Duration::from_secs(5), client.call_tool(params))
            .await
            .map_err(|_| anyhow::anyhow!("{tool}: no answer: the handler died"))??;
        let value = common::structured(&result);
        assert!(value.get("expires_at").is_none(), "{tool}: {value}");
    }
    Ok(())
}
