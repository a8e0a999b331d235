//! How the binary reads values MCP hosts put in its environment: blank or
//! untouched template values mean unset, placeholders stop it at start-up.

mod common;

use common::{WAIT, binary, call, spawn_stdio, structured};
use serde_json::json;

#[tokio::test]
async fn blank_and_untouched_template_values_serve_as_unset() {
    let spawned = spawn_stdio(
        &["--demo"],
        &[
            ("BIGID_TIMEOUT", ""),
            ("BIGID_CA_CERT", ""),
            ("BIGID_USERNAME", "${user_config.bigid_username}"),
            ("BIGID_PASSWORD", " "),
            ("BIGID_USER_TOKEN", ""),
            ("BIGID_AUTH_SCHEME", "${user_config.auth_scheme}"),
        ],
    )
    .await
    .unwrap();
    // The demo's credentials apply: the blank ones were not taken as values.
    let session = structured(
        &call(&spawned.client, "create_session", json!({}))
            .await
            .unwrap(),
    );
    assert_eq!(session["success"], true);
    let refresh = call(&spawned.client, "refresh_access_token", json!({}))
        .await
        .unwrap();
    assert_eq!(structured(&refresh)["success"], true);
    spawned.finish().await.unwrap();
}

#[tokio::test]
async fn a_placeholder_left_in_the_configuration_stops_start_up_naming_the_variable() {
    let output = tokio::time::timeout(
        WAIT,
        binary(
            &[],
            &[
                ("BIGID_URL", "https://acme.bigid.com/api/v1"),
                ("BIGID_USER_TOKEN", "<BigID user token, or leave empty>"),
            ],
        )
        .stdin(std::process::Stdio::null())
        .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "stdout belongs to JSON-RPC");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("BIGID_USER_TOKEN holds an <…> placeholder"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("or leave empty>"),
        "the value is not echoed: {stderr}"
    );
}
