//! What hosts and their users see besides the tools' results: portable
//! schemas (no type arrays; the MCP Inspector's own checks when installed),
//! the skill verified by the Inspector, and a quiet stdio start.

mod common;

use std::{path::PathBuf, process::Stdio};

use bigid_auth_mcp::demo::FakeBigId;
use common::*;
use serde_json::Value;

/// Every `"type"` in `schema` that is an array, by JSON pointer.
fn type_arrays(schema: &Value, at: &str, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                let here = format!("{at}/{key}");
                if key == "type" && value.is_array() {
                    found.push(format!("{here}: {value}"));
                }
                type_arrays(value, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                type_arrays(item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn no_tool_schema_has_a_type_array() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let client = connect_in_process(
        fake.url(),
        bigid_config(fake.url()),
        bigid_auth_mcp::config::Defaults::default(),
    )
    .await?;
    let tools = client.list_all_tools().await?;
    assert_eq!(tools.len(), 2);
    let mut found = Vec::new();
    for tool in &tools {
        let input = Value::Object((*tool.input_schema).clone());
        type_arrays(&input, &format!("{}/inputSchema", tool.name), &mut found);
        let output = Value::Object((*tool.output_schema.clone().expect("outputSchema")).clone());
        type_arrays(&output, &format!("{}/outputSchema", tool.name), &mut found);
    }
    assert!(found.is_empty(), "type arrays: {found:#?}");

    // The checker itself finds the shape it is looking for.
    let mut probe = Vec::new();
    type_arrays(
        &serde_json::json!({"properties": {"a": {"type": ["string", "null"]}}}),
        "",
        &mut probe,
    );
    assert_eq!(probe.len(), 1);
    client.cancel().await?;
    Ok(())
}

/// The Inspector CLI that `.ci/run` installs with `npm ci` in tests/node.
fn inspector() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node/node_modules/.bin/mcp-inspector");
    path.exists().then_some(path)
}

async fn run_inspector(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let program = inspector().ok_or_else(|| anyhow::anyhow!("no inspector"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("--cli")
        .args(args)
        .arg("-e")
        .arg("RUST_LOG=error")
        .arg(env!("CARGO_BIN_EXE_bigid-auth-mcp"))
        .arg("--demo")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in CONTRACT_ENV {
        command.env_remove(name);
    }
    Ok(tokio::time::timeout(WAIT * 3, command.output()).await??)
}

#[tokio::test]
async fn the_inspector_finds_no_schema_portability_problem() -> anyhow::Result<()> {
    if inspector().is_none() {
        eprintln!(
            "SKIPPED: the MCP Inspector is not installed; `.ci/run` installs it \
             (npm ci --prefix tests/node)"
        );
        return Ok(());
    }
    let output = run_inspector(&["--strict", "--method", "tools/list"]).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // --strict reports every finding, warnings included, on stderr.
    assert!(stderr.trim().is_empty(), "portability findings: {stderr}");
    let listing: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(listing["tools"].as_array().map(Vec::len), Some(2));
    Ok(())
}

#[tokio::test]
async fn the_inspector_verifies_the_skill_digests() -> anyhow::Result<()> {
    if inspector().is_none() {
        eprintln!(
            "SKIPPED: the MCP Inspector is not installed; `.ci/run` installs it \
             (npm ci --prefix tests/node)"
        );
        return Ok(());
    }
    let output =
        run_inspector(&["--verify", "--require-digests", "--method", "skills/list"]).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["outcome"], "verified", "{report}");
    assert_eq!(
        report["files"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    Ok(())
}

/// Runs the binary on stdio with stdin already closed; returns stderr's lines.
async fn stdio_start(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Vec<String>> {
    let output = run_to_end(args, env).await?;
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    Ok(String::from_utf8(output.stderr)?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[tokio::test]
async fn a_stdio_start_logs_one_info_line() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let url = fake.url().to_string();

    // A host that starts a process, makes a call and closes stdin.
    let spawned = spawn_stdio(&[], &[("BIGID_URL", &url)]).await?;
    spawned.client.list_all_tools().await?;
    let stderr = spawned.finish().await?;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(" INFO "), "{stderr}");
    assert!(
        lines[0].contains(&format!("ready on stdio against BigID {url}")),
        "{stderr}"
    );

    // No client at all: still the one line.
    let lines = stdio_start(&[], &[("BIGID_URL", &url)]).await?;
    assert_eq!(lines.len(), 1, "{lines:#?}");

    // --demo adds the line with the demo credentials, and only --demo does.
    let lines = stdio_start(&["--demo"], &[]).await?;
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("user `demo` / password `demo`"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("ready on stdio against BigID"),
        "{lines:#?}"
    );
    Ok(())
}
