//! The repository is one Claude Code plugin: the skill and the MCP server.
//! Its manifest is checked by Claude Code's own validator when installed.

use std::path::PathBuf;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(root().join(".claude-plugin/plugin.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_plugin_manifest_names_this_binary_and_version() {
    let manifest = manifest();
    assert_eq!(manifest["name"], env!("CARGO_PKG_NAME"));
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    let server = &manifest["mcpServers"]["bigid-auth"];
    assert_eq!(server["command"], env!("CARGO_PKG_NAME"));
    // Secrets reach the server through the environment only, never as arguments.
    assert_eq!(server["args"], serde_json::json!([]));
    assert!(root().join("skills/bigid-authentication/SKILL.md").exists());
}

#[test]
fn claude_codes_validator_accepts_the_plugin() {
    let claude = root().join("tests/node/node_modules/.bin/claude");
    if !claude.exists() {
        eprintln!(
            "SKIPPED: Claude Code is not installed; `.ci/run` installs it \
             (npm ci --prefix tests/node)"
        );
        return;
    }
    // A throwaway HOME: the validator must not read or write the user's settings.
    let home = std::env::temp_dir().join(format!("plugin-validate-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let output = std::process::Command::new(claude)
        .args(["plugin", "validate", "--strict", "--json"])
        .arg(root())
        .env("HOME", &home)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["success"], true, "{report}");
    assert_eq!(report["manifest"]["errors"], serde_json::json!([]));
    assert_eq!(report["manifest"]["warnings"], serde_json::json!([]));
    let provides = report["provides"].to_string();
    assert!(provides.contains("bigid-auth"), "{provides}");
    assert!(provides.contains("bigid-authentication"), "{provides}");
}
