//! The Agent Skill: the repository's files validate, and every transport
//! serves them over the skills extension (SEP-2640) with digests that match
//! the files on disk, through rmcp's client and through raw JSON-RPC.

mod common;

use std::{collections::BTreeMap, path::PathBuf, process::Stdio};

use anyhow::{Context, ensure};
use bigid_auth_mcp::{demo::FakeBigId, skill};
use common::{
    http::{HttpServer, Legacy, MCP_TOKEN, http_client, streamable},
    *,
};
use rmcp::model::{GetSkillRequestParams, ReadResourceRequestParams, SkillResource, sha256_digest};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SKILL_URI: &str = "skill://bigid-authentication/SKILL.md";

fn skill_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("skills/bigid-authentication")
}

/// Every file of the skill on disk, by path inside the skill's directory.
fn files_on_disk() -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("skill directory") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}{name}");
            if entry.file_type().expect("type").is_dir() {
                walk(&entry.path(), &format!("{path}/"), out);
            } else {
                out.insert(path, std::fs::read(entry.path()).expect("readable"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&skill_dir(), "", &mut out);
    out
}

/// The file on disk that a `skill://bigid-authentication/…` URI names.
fn disk_bytes(uri: &str) -> Vec<u8> {
    let path = uri
        .strip_prefix("skill://bigid-authentication/")
        .unwrap_or_else(|| panic!("{uri} is outside the skill"));
    files_on_disk()
        .remove(path)
        .unwrap_or_else(|| panic!("{uri} is not a file on disk"))
}

/// A `skills/list` or `skills/get` skill entry describes exactly the files on
/// disk, with their SHA-256 digests and sizes.
fn assert_entry_matches_disk(skill: &Value) {
    assert_eq!(skill["uri"], SKILL_URI, "{skill}");
    assert_eq!(skill["frontmatter"]["name"], "bigid-authentication");
    let description = skill["frontmatter"]["description"].as_str().unwrap_or("");
    assert!(description.contains("BigID"), "{description}");
    let listed: BTreeMap<String, (String, u64)> = skill["resources"]
        .as_array()
        .expect("a manifest of files")
        .iter()
        .map(|r| {
            (
                r["uri"].as_str().unwrap().to_owned(),
                (
                    r["digest"].as_str().unwrap().to_owned(),
                    r["size"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    let expected: BTreeMap<String, (String, u64)> = files_on_disk()
        .into_iter()
        .map(|(path, bytes)| {
            (
                format!("skill://bigid-authentication/{path}"),
                (sha256_digest(&bytes), bytes.len() as u64),
            )
        })
        .collect();
    assert_eq!(listed, expected);
}

/// A `resources/read` result carries the bytes of the file on disk.
fn assert_read_matches_disk(result: &Value, uri: &str) {
    let contents = &result["contents"][0];
    assert_eq!(contents["uri"], uri, "{result}");
    assert_eq!(contents["mimeType"], "text/markdown");
    let text = contents["text"].as_str().expect("text contents");
    assert_eq!(text.as_bytes(), disk_bytes(uri), "{uri} differs from disk");
}

/// The three reads every transport must answer.
fn requests() -> Vec<(u64, &'static str, Value)> {
    vec![
        (11, "skills/list", json!({})),
        (12, "skills/get", json!({"uri": SKILL_URI})),
        (
            13,
            "resources/read",
            json!({"uri": "skill://bigid-authentication/references/errors.md"}),
        ),
        (14, "resources/read", json!({"uri": SKILL_URI})),
    ]
}

fn assert_answers(answers: &BTreeMap<u64, Value>) {
    let result = |id: u64| {
        let answer = &answers[&id];
        answer
            .get("result")
            .unwrap_or_else(|| panic!("request {id} failed: {answer}"))
            .clone()
    };
    let listing = result(11);
    assert_eq!(listing["skills"].as_array().map(Vec::len), Some(1));
    assert_entry_matches_disk(&listing["skills"][0]);
    assert_entry_matches_disk(&result(12)["skill"]);
    assert_read_matches_disk(
        &result(13),
        "skill://bigid-authentication/references/errors.md",
    );
    assert_read_matches_disk(&result(14), SKILL_URI);
}

#[test]
fn the_embedded_files_are_exactly_the_files_on_disk() {
    let embedded: BTreeMap<String, Vec<u8>> = skill::FILES
        .iter()
        .map(|f| (f.path.to_owned(), f.bytes.to_vec()))
        .collect();
    assert_eq!(
        embedded.keys().collect::<Vec<_>>(),
        files_on_disk().keys().collect::<Vec<_>>(),
        "add every file of skills/bigid-authentication to skill::FILES"
    );
    assert_eq!(embedded, files_on_disk());
    for (path, bytes) in &embedded {
        let uri = skill::uri_of(path);
        SkillResource::from_bytes(&uri, bytes)
            .verify(&disk_bytes(&uri))
            .unwrap();
    }
}

/// The Agent Skills reference validator: `agentskills` from PyPI's
/// `skills-ref` (`.ci/run` installs it into target/ci-venv), or the npm
/// package's `skills-ref`. Runs `validate DIR`; `None` when neither exists.
fn reference_validator(dir: &std::path::Path) -> Option<std::process::Output> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/agentskills");
    let candidates = [
        venv,
        PathBuf::from("agentskills"),
        PathBuf::from("skills-ref"),
    ];
    candidates.iter().find_map(|program| {
        std::process::Command::new(program)
            .arg("validate")
            .arg(dir)
            .output()
            .ok()
    })
}

#[test]
fn the_skill_passes_the_agent_skills_reference_validator() {
    let Some(output) = reference_validator(&skill_dir()) else {
        eprintln!(
            "SKIPPED: the Agent Skills validator (PyPI skills-ref) is not installed; \
             `.ci/run` installs it into target/ci-venv"
        );
        return;
    };
    assert!(
        output.status.success(),
        "the validator rejects the skill:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The same validator does fail a skill whose name does not match its folder.
    let bad = std::env::temp_dir().join(format!("skill-check-{}/wrong-name", std::process::id()));
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("SKILL.md"),
        "---\nname: bigid-authentication\ndescription: x\n---\nbody\n",
    )
    .unwrap();
    let rejected = reference_validator(&bad).expect("validator ran once already");
    let _ = std::fs::remove_dir_all(bad.parent().unwrap());
    assert!(!rejected.status.success(), "the validator accepts anything");
}

#[tokio::test]
async fn stdio_serves_the_skill_to_rmcp_client_and_the_listing_is_stable() -> anyhow::Result<()> {
    let spawned = spawn_stdio(&["--demo"], &[]).await?;
    let client = &spawned.client;
    let info = client.peer_info().context("initialized")?;
    assert!(info.capabilities.supports_skills());
    assert!(info.capabilities.resources.is_some());

    let listing = serde_json::to_value(client.list_skills(None).await?)?;
    let got = serde_json::to_value(
        client
            .get_skill(GetSkillRequestParams::new(SKILL_URI))
            .await?,
    )?;
    let mut answers = BTreeMap::from([
        (11, json!({"result": listing.clone()})),
        (12, json!({"result": got})),
    ]);
    for (id, uri) in [
        (13, "skill://bigid-authentication/references/errors.md"),
        (14, SKILL_URI),
    ] {
        let read = client
            .read_resource(ReadResourceRequestParams::new(uri))
            .await?;
        answers.insert(id, json!({"result": serde_json::to_value(read)?}));
    }
    assert_answers(&answers);
    // Older protocol versions get no cache hints: the fields are not theirs.
    assert!(listing.get("ttlMs").is_none() && listing.get("cacheScope").is_none());

    let resources = client.list_resources(None).await?;
    assert_eq!(resources.resources.len(), 1);
    assert_eq!(resources.resources[0].uri, SKILL_URI);

    let unknown = client
        .read_resource(ReadResourceRequestParams::new(
            "skill://bigid-authentication/nope.md",
        ))
        .await;
    assert!(unknown.is_err(), "{unknown:?}");

    let _guard = snapshot_settings().bind_to_scope();
    insta::assert_json_snapshot!("skills_list", listing, {
        ".skills[].resources[].digest" => "[sha256 of the file on disk]",
        ".skills[].resources[].size" => "[size]",
        ".skills[].frontmatter.description" => "[description]",
    });
    spawned.finish().await?;
    Ok(())
}

/// The `_meta` a 2026-07-28 request carries in place of a handshake.
fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-skills-test", "version": "0"}
    })
}

#[tokio::test]
async fn raw_json_rpc_on_stdio_with_2026_07_28_cache_hints() -> anyhow::Result<()> {
    let mut child = binary(&["--demo"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut answers = BTreeMap::new();
    for (id, method, mut params) in requests() {
        params["_meta"] = meta_2026();
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        stdin.write_all(format!("{request}\n").as_bytes()).await?;
        let answer = next_message(&mut stdout).await?;
        assert_eq!(answer["id"], id);
        answers.insert(id, answer);
    }
    assert_answers(&answers);
    for id in [11, 12, 13] {
        let result = &answers[&id]["result"];
        assert_eq!(result["resultType"], "complete", "{result}");
        assert_eq!(result["ttlMs"], skill::CACHE_TTL_MS, "{result}");
        assert_eq!(result["cacheScope"], "public", "{result}");
    }
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait()).await??;
    Ok(())
}

/// JSON-RPC answers from a POST to /mcp, which may come as JSON or as SSE.
fn parse_answer(body: &str) -> anyhow::Result<Value> {
    if let Ok(value) = serde_json::from_str(body) {
        return Ok(value);
    }
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| !data.is_empty())
        .find_map(|data| serde_json::from_str::<Value>(data).ok())
        .with_context(|| format!("no JSON-RPC message in {body:.300}"))
}

async fn post_mcp(base: &str, session: Option<&str>, message: &Value) -> anyhow::Result<Value> {
    let mut request = http_client()
        .post(format!("{base}/mcp"))
        .bearer_auth(MCP_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(message.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await?;
    ensure!(response.status().is_success(), "{}", response.status());
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut answer = parse_answer(&response.text().await?)?;
    if let Some(session) = session {
        answer["_session"] = Value::String(session);
    }
    Ok(answer)
}

#[tokio::test]
async fn streamable_http_serves_the_skill_to_rmcp_client_and_raw_json_rpc() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;

    let client = streamable(&server.base).await?;
    let listing = serde_json::to_value(client.list_skills(None).await?)?;
    assert_entry_matches_disk(&listing["skills"][0]);
    let read = client
        .read_resource(ReadResourceRequestParams::new(SKILL_URI))
        .await?;
    assert_read_matches_disk(&serde_json::to_value(read)?, SKILL_URI);
    client.cancel().await?;

    let init = post_mcp(
        &server.base,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-skills-test", "version": "0"}}}),
    )
    .await?;
    let session = init["_session"]
        .as_str()
        .context("no session id")?
        .to_owned();
    assert!(
        init["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/skills"].is_object(),
        "{init}"
    );
    let initialized = http_client()
        .post(format!("{}/mcp", server.base))
        .bearer_auth(MCP_TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await?;
    assert_eq!(initialized.status(), 202);
    let mut answers = BTreeMap::new();
    for (id, method, params) in requests() {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        answers.insert(id, post_mcp(&server.base, Some(&session), &request).await?);
    }
    assert_answers(&answers);
    server.terminate()?;
    server.wait().await?;
    Ok(())
}

#[tokio::test]
async fn legacy_sse_serves_the_skill_over_raw_json_rpc() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let server = HttpServer::start(fake.url().as_str(), &[], &[]).await?;
    let mut legacy = Legacy::connect(&server.base).await?;
    let mut answers = BTreeMap::new();
    for (id, method, params) in requests() {
        legacy
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        answers.insert(id, legacy.answer(id).await?);
    }
    assert_answers(&answers);
    drop(legacy);
    server.terminate()?;
    server.wait().await?;
    Ok(())
}
