//! The stdio transport decodes `tools/call` requests on a fast path; these
//! properties pin that it hands rmcp exactly what rmcp's own decoding would
//! have given, for generated requests, mutated ones, and every malformed line
//! the other stdio tests send.
//!
//! `BIGID_MCP_SOAK=N` multiplies the number of cases by N.

mod common;

use bigid_auth_mcp::transport::lines::{Decoded, decode_fast, decode_line, decode_with_rmcp};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases.saturating_mul(common::soak()),
        ..ProptestConfig::default()
    }
}

/// A comparable rendering of a decoded line: its kind, the message as JSON
/// (which includes `_meta`, kept in the request's extensions) and its Debug
/// text (which names the request type rmcp chose).
fn render(decoded: &Decoded) -> String {
    match decoded {
        Decoded::Message(m) => format!(
            "message {} {m:?}",
            serde_json::to_string(m).unwrap_or_else(|e| format!("unserialisable: {e}"))
        ),
        Decoded::Skip => "skip".into(),
        Decoded::Invalid => "invalid".into(),
    }
}

/// The property: the transport's decoding equals rmcp's, and where the fast
/// path takes a line, rmcp takes it as the same message.
fn assert_same(line: &[u8]) -> Result<(), TestCaseError> {
    let ours = render(&decode_line(line));
    let rmcp = render(&decode_with_rmcp(line));
    prop_assert_eq!(&ours, &rmcp, "line: {:?}", String::from_utf8_lossy(line));
    let bare = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(fast) = decode_fast(bare) {
        prop_assert_eq!(
            render(&Decoded::Message(fast)),
            rmcp,
            "fast path differs on {:?}",
            String::from_utf8_lossy(line)
        );
    }
    Ok(())
}

/// The line the benchmark sends, and what clients send.
const CAPTURED: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_session","arguments":{"username":"demo","password":"demo"}}}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"refresh_access_token","arguments":{"user_token":"demo-user-token"}}}"#,
    r#"{"method":"tools/call","params":{"name":"refresh_access_token","arguments":{},"_meta":{"progressToken":1}},"jsonrpc":"2.0","id":"abc"}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
    r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"0"}}}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#,
    r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#,
    r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#,
    // Malformed lines the other stdio tests send.
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\u{fffd}(\"}",
    r#"{"password": "Raw-Line-Password-Secret""#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"Raw-Line-Password-Secret"}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"create_session","arguments":{"password":{"Raw-Line-Password-Secret":1}}}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_session","arguments":"Raw-Line-Password-Secret"}}"#,
    r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"create_session","arguments":{"username":"\ud800","password":"x\u0000y"}}}"#,
    r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"create_session","arguments":{"username":"demo","password":"x\u0000y\u001b[2J"}}}"#,
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"refresh_access_token","arguments":{}}}"#,
    // Shapes rmcp refuses or reads differently.
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"result":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"\u0065rror":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":-1,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":null}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","extra":1,"_meta":null}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"progressToken":"t"},"task":{"ttl":5}}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/cal","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"}}"#,
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}} trailing"#,
    r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}]"#,
    " {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\"}}",
    "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}",
    "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"a\"}}",
    "",
    "\r",
    "\r\r",
    "null",
    "{}",
];

#[test]
fn captured_and_malformed_lines_decode_as_rmcp_decodes_them() {
    let raw: &[&[u8]] = &[
        b"\xff\xfe\xfd",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\xc3\x28\"}",
        b"{\"jsonrpc\":\"2.0\",\"\xff\":1}",
        b"\0\0\0",
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"\xc3\x28\"}}",
    ];
    let mut lines: Vec<Vec<u8>> = raw.iter().map(|l| l.to_vec()).collect();
    for line in CAPTURED {
        lines.push(line.as_bytes().to_vec());
        lines.push(format!("{line}\r").into_bytes());
    }
    // Nested deep: within serde_json's recursion limit, and past it.
    for depth in [100, 200, 100_000] {
        let username = format!("{}\"x\"{}", "[".repeat(depth), "]".repeat(depth));
        lines.push(format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools/call\",\"params\":{{\"name\":\"create_session\",\"arguments\":{{\"username\":{username}}}}}}}"
        ).into_bytes());
    }
    for line in &lines {
        if let Err(e) = assert_same(line) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_common_tool_calls_take_the_fast_path() {
    for line in &CAPTURED[..4] {
        assert!(decode_fast(line.as_bytes()).is_some(), "{line}");
    }
    let ping = br#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
    assert!(decode_fast(ping).is_none());
}

// ---------------------------------------------------------------- strategies

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "jsonrpc", "id", "method", "params", "name", "arguments", "_meta", "result", "error",
            "username", "password", "user_token", "progressToken", "task", "inputResponses",
            "requestState",
        ][..]).prop_map(str::to_owned),
        1 => "[a-z_/]{1,10}",
        1 => any::<String>(),
    ]
}

/// A top-level field of a generated request: usually the right one.
fn field(name: &'static str, usual: Value) -> impl Strategy<Value = Option<(String, Value)>> {
    prop_oneof![
        8 => Just(Some((name.to_owned(), usual))),
        1 => any_json().prop_map(move |v| Some((name.to_owned(), v))),
        1 => Just(None),
    ]
}

fn params() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        Just(json!("create_session")),
        Just(json!("refresh_access_token")),
        any_json()
    ];
    let arguments = prop_oneof![
        4 => prop::collection::btree_map(key(), any_json(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => any_json(),
    ];
    let meta = prop_oneof![
        Just(json!({"progressToken": 1})),
        Just(
            json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}})
        ),
        any_json(),
    ];
    (
        prop::option::of(name),
        prop::option::of(arguments),
        prop::option::weighted(0.3, meta),
        prop::collection::btree_map(key(), any_json(), 0..2),
    )
        .prop_map(|(name, arguments, meta, extra)| {
            let mut params = serde_json::Map::new();
            for (k, v) in extra {
                params.insert(k, v);
            }
            if let Some(name) = name {
                params.insert("name".into(), name);
            }
            if let Some(arguments) = arguments {
                params.insert("arguments".into(), arguments);
            }
            if let Some(meta) = meta {
                params.insert("_meta".into(), meta);
            }
            Value::Object(params)
        })
}

/// A `tools/call` request, usually well-formed, written out by hand so that
/// key order, duplicates and stray keys vary.
fn request_line() -> impl Strategy<Value = String> {
    let id = prop_oneof![
        Just(json!(1)),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9-]{0,8}".prop_map(Value::String),
        any_json()
    ];
    let method = prop_oneof![
        8 => Just(json!("tools/call")),
        1 => Just(json!("tools/list")),
        1 => any_json(),
    ];
    (
        field("jsonrpc", json!("2.0")),
        id.prop_flat_map(|id| field("id", id)),
        method.prop_flat_map(|m| field("method", m)),
        params().prop_flat_map(|p| field("params", p)),
        prop::collection::vec((key(), any_json()), 0..2),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, c, d, extra, rotate, spaced)| {
            let mut fields: Vec<(String, Value)> = [a, b, c, d].into_iter().flatten().collect();
            fields.extend(extra);
            if !fields.is_empty() {
                let by = rotate.index(fields.len());
                fields.rotate_left(by);
            }
            let sep = if spaced { ", " } else { "," };
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), v))
                .collect();
            format!("{{{}}}", body.join(sep))
        })
}

/// A request with a few bytes changed, cut or added.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    (
        request_line(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    )
        .prop_map(|(line, edits)| {
            let mut bytes = line.into_bytes();
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            // A line never holds its own terminator.
            bytes.retain(|b| *b != b'\n');
            bytes
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn generated_requests_decode_as_rmcp_decodes_them(line in request_line()) {
        assert_same(line.as_bytes())?;
    }

    #[test]
    fn mutated_requests_decode_as_rmcp_decodes_them(line in mutated_line()) {
        assert_same(&line)?;
    }
}
