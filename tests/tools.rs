//! The tool layer in-process (MCP over an in-memory pipe, against the fake
//! BigID on loopback): schemas, results and every error shape, snapshotted.

mod common;

use std::time::Duration;

use bigid_auth_mcp::{
    config::Defaults,
    demo::{FakeBigId, Fault},
    secret::Secret,
};
use common::*;
use rmcp::{ServiceError, model::Tool};
use serde_json::{Value, json};

fn demo_defaults() -> Defaults {
    Defaults {
        username: Some("demo".into()),
        password: Some(Secret::new("demo")),
        user_token: Some(Secret::new("demo-user-token")),
    }
}

async fn setup(defaults: Defaults) -> anyhow::Result<(FakeBigId, Client)> {
    let fake = FakeBigId::start().await?;
    let mut bigid = bigid_config(fake.url());
    bigid.timeout = Duration::from_millis(1500);
    let client = connect_in_process(fake.url(), bigid, defaults).await?;
    Ok((fake, client))
}

/// Validates a result's structured content against the tool's declared outputSchema.
fn assert_matches_output_schema(tools: &[Tool], name: &str, value: &Value) {
    let tool = tools.iter().find(|t| t.name == name).expect("tool listed");
    let schema = Value::Object((*tool.output_schema.clone().expect("outputSchema")).clone());
    let validator = jsonschema::validator_for(&schema).expect("outputSchema is a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{name} result violates its outputSchema: {errors:?}"
    );
}

/// Error texts name the fake's URL, whose port changes every run.
fn filtered() -> insta::Settings {
    let mut settings = snapshot_settings();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings
}

#[tokio::test]
async fn tools_list_and_server_info_snapshot() -> anyhow::Result<()> {
    let (_fake, client) = setup(demo_defaults()).await?;
    let tools = client.list_all_tools().await?;
    let _guard = snapshot_settings().bind_to_scope();
    insta::assert_json_snapshot!("tools_list", tools);
    insta::assert_json_snapshot!("server_info", client.peer_info().expect("initialized"), {
        ".serverInfo.version" => "[version]"
    });
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn create_session_returns_a_token_that_matches_the_output_schema() -> anyhow::Result<()> {
    let (fake, client) = setup(demo_defaults()).await?;
    let tools = client.list_all_tools().await?;

    let result = call(&client, "create_session", json!({})).await?;
    let value = structured(&result);
    assert_matches_output_schema(&tools, "create_session", &value);
    assert_eq!(value["permission_count"], 30);
    assert!(
        value.get("permissions").is_none(),
        "permissions only on request"
    );
    let _guard = snapshot_settings().bind_to_scope();
    insta::assert_json_snapshot!("create_session_ok", value, {
        ".auth_token" => "[token]", ".expires_at" => "[time]"
    });

    let sent: Value = serde_json::from_slice(&fake.requests()[0].body)?;
    assert_eq!(sent, json!({"username": "demo", "password": "demo"}));

    let full = call(
        &client,
        "create_session",
        json!({"include_permissions": true}),
    )
    .await?;
    let full = structured(&full);
    assert_matches_output_schema(&tools, "create_session", &full);
    assert_eq!(full["permissions"].as_array().map(Vec::len), Some(30));
    assert_ne!(
        full["auth_token"], value["auth_token"],
        "every login is a new session"
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn explicit_arguments_override_the_defaults() -> anyhow::Result<()> {
    let (fake, client) = setup(demo_defaults()).await?;
    let result = call(
        &client,
        "create_session",
        json!({"username": "alice", "password": "alice-password"}),
    )
    .await?;
    assert_eq!(structured(&result)["username"], "alice");
    let sent: Value = serde_json::from_slice(&fake.requests()[0].body)?;
    assert_eq!(sent["username"], "alice");

    let result = call(
        &client,
        "refresh_access_token",
        json!({"user_token": "demo-user-token-alice"}),
    )
    .await?;
    structured(&result);
    assert_eq!(
        fake.requests()[1].authorization.as_deref(),
        Some("demo-user-token-alice"),
        "raw Authorization header by default"
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn refresh_reuses_a_valid_system_token_until_forced() -> anyhow::Result<()> {
    let (fake, client) = setup(demo_defaults()).await?;
    let tools = client.list_all_tools().await?;

    let first = structured(&call(&client, "refresh_access_token", json!({})).await?);
    assert_matches_output_schema(&tools, "refresh_access_token", &first);
    assert_eq!(first["cached"], false);
    let _guard = snapshot_settings().bind_to_scope();
    insta::assert_json_snapshot!("refresh_access_token_ok", first, {
        ".systemToken" => "[token]", ".expires_at" => "[time]"
    });

    let second = structured(&call(&client, "refresh_access_token", json!({})).await?);
    assert_eq!(second["cached"], true);
    assert_eq!(second["systemToken"], first["systemToken"]);
    assert_eq!(
        fake.request_count(),
        1,
        "the cached call made no upstream request"
    );

    let forced = structured(
        &call(
            &client,
            "refresh_access_token",
            json!({"force_refresh": true}),
        )
        .await?,
    );
    assert_eq!(forced["cached"], false);
    assert_ne!(forced["systemToken"], first["systemToken"]);
    assert_eq!(fake.request_count(), 2);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn rejected_credentials_are_tool_errors_with_bigids_message() -> anyhow::Result<()> {
    let (_fake, client) = setup(demo_defaults()).await?;
    let bad_login = call(
        &client,
        "create_session",
        json!({"username": "demo", "password": "wrong-password"}),
    )
    .await?;
    let bad_token = call(
        &client,
        "refresh_access_token",
        json!({"user_token": "nope-nope"}),
    )
    .await?;
    let html_login = call(
        &client,
        "create_session",
        json!({"username": "html-bob", "password": "wrong-password"}),
    )
    .await?;
    let _guard = filtered().bind_to_scope();
    insta::assert_snapshot!("create_session_401", error_text(&bad_login));
    insta::assert_snapshot!("refresh_access_token_401", error_text(&bad_token));
    insta::assert_snapshot!(
        "create_session_200_success_false_html",
        error_text(&html_login)
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_access_token_passed_as_user_token_gets_a_hint() -> anyhow::Result<()> {
    let (_fake, client) = setup(demo_defaults()).await?;
    let session = structured(&call(&client, "create_session", json!({})).await?);
    let access_token = session["auth_token"].as_str().expect("token").to_owned();
    let result = call(
        &client,
        "refresh_access_token",
        json!({"user_token": access_token}),
    )
    .await?;
    let message = error_text(&result);
    assert!(
        message.contains("already a BigID access token"),
        "{message}"
    );
    assert!(
        !message.contains(&access_token),
        "the token is never echoed"
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn every_upstream_fault_is_a_tool_error_and_the_server_keeps_serving() -> anyhow::Result<()> {
    let (fake, client) = setup(demo_defaults()).await?;
    let faults = [
        ("status_500", Fault::Status(500)),
        ("html_page", Fault::HtmlPage),
        ("invalid_json", Fault::InvalidJson),
        ("slow", Fault::Slow(Duration::from_secs(5))),
        ("oversized", Fault::Oversized(2 << 20)),
        ("login_success_false", Fault::LoginSuccessFalse),
        ("truncated", Fault::Truncated),
    ];
    for (name, fault) in faults {
        fake.set_fault(fault);
        let result = call(&client, "create_session", json!({})).await?;
        let message = error_text(&result);
        {
            let _guard = filtered().bind_to_scope();
            insta::assert_snapshot!(format!("create_session_fault_{name}"), message);
        }
        fake.set_fault(Fault::None);
        let again = call(&client, "create_session", json!({})).await?;
        structured(&again);
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn bad_arguments_name_the_argument_and_never_its_value() -> anyhow::Result<()> {
    let (fake, client) = setup(Defaults::default()).await?;
    let cases = [
        (
            "wrong_type",
            "create_session",
            json!({"username": "demo", "password": 8675309}),
        ),
        (
            "wrong_type_bool",
            "refresh_access_token",
            json!({"user_token": "t", "force_refresh": "yes-please"}),
        ),
        (
            "unknown_argument",
            "create_session",
            json!({"user": "demo"}),
        ),
        (
            "missing_password",
            "create_session",
            json!({"username": "demo"}),
        ),
        ("missing_user_token", "refresh_access_token", json!({})),
    ];
    for (name, tool, args) in cases {
        let result = call(&client, tool, args).await?;
        let message = error_text(&result);
        assert!(
            !message.contains("8675309") && !message.contains("yes-please"),
            "{message}"
        );
        let _guard = snapshot_settings().bind_to_scope();
        insta::assert_snapshot!(format!("bad_args_{name}"), message);
    }
    assert_eq!(fake.request_count(), 0, "nothing reached BigID");

    let unknown = call(&client, "delete_everything", json!({})).await;
    match unknown {
        Err(e) => match e.downcast_ref::<ServiceError>() {
            Some(ServiceError::McpError(error)) => assert_eq!(error.code.0, -32602),
            other => panic!("expected a JSON-RPC error, got {other:?}"),
        },
        Ok(result) => panic!("unknown tool must be a JSON-RPC error, got {result:?}"),
    }
    client.cancel().await?;
    Ok(())
}
