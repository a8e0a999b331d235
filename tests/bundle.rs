//! The MCP Bundle (`packaging/mcpb/manifest.json`): what it promises matches
//! what the server serves, the official MCPB CLI accepts it, and a bundle
//! packed from the test build serves both tools when started the way Claude
//! Desktop starts it, with the environment it derives from `user_config`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use bigid_auth_mcp::{config::ENVIRONMENT, demo::FakeBigId};
use serde_json::Value;

/// Packing a debug binary (~150 MB) and a first run of the Python SDK
/// client (which builds its virtualenv) take a while on a busy machine.
const SLOW: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn manifest() -> Value {
    let path = root().join("packaging/mcpb/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The official CLI as `npm ci --prefix tools/node` installs it, if it is there.
fn mcpb_cli() -> Option<PathBuf> {
    let bin = if cfg!(windows) { "mcpb.cmd" } else { "mcpb" };
    let path = root().join("tools/node/node_modules/.bin").join(bin);
    if path.exists() && which("node") {
        Some(path)
    } else {
        println!(
            "SKIP: the MCPB CLI is not installed (npm ci --prefix tools/node); .ci/run installs it"
        );
        None
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The Python SDK smoke client, kept in `shared/clients` beside the repository.
fn mcp_smoke() -> Option<PathBuf> {
    let found = root()
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("shared/clients/mcp-smoke"))
        .find(|path| path.is_file());
    if found.is_none() {
        println!("SKIP: ../shared/clients/mcp-smoke (the Python SDK smoke client) is absent");
    }
    found
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bigid-bundle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn run(command: &mut tokio::process::Command) -> std::process::Output {
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(SLOW, command.output())
        .await
        .expect("bounded")
        .expect("spawns");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn manifest_lists_exactly_the_tools_the_server_serves() {
    let manifest = manifest();
    assert_eq!(manifest["name"], env!("CARGO_PKG_NAME"));
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));

    let spawned = common::spawn_stdio(&["--demo"], &[]).await.unwrap();
    let served = tokio::time::timeout(common::WAIT, spawned.client.list_all_tools())
        .await
        .unwrap()
        .unwrap();
    let instructions = spawned
        .client
        .peer_info()
        .and_then(|info| info.instructions.clone())
        .unwrap_or_default();
    spawned.finish().await.unwrap();

    let served: BTreeMap<String, String> = served
        .iter()
        .map(|t| {
            let description = t.description.as_deref().unwrap_or_default();
            (t.name.to_string(), description.to_owned())
        })
        .collect();
    let promised: BTreeMap<String, String> = manifest["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_owned();
            (name, t["description"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(promised, served, "manifest.json tools vs tools/list");

    // Keywords are found in what the server says about itself, so a search
    // that finds the bundle by one finds a server that does that.
    let said = format!(
        "{instructions} {}",
        served.values().cloned().collect::<Vec<_>>().join(" ")
    )
    .to_lowercase();
    for keyword in manifest["keywords"].as_array().unwrap() {
        let keyword = keyword.as_str().unwrap().to_lowercase();
        assert!(
            said.contains(&keyword),
            "keyword `{keyword}` is not in what the server serves"
        );
    }
}

#[test]
fn user_config_maps_onto_the_contract_environment_and_keeps_secrets_out_of_args() {
    let manifest = manifest();
    let config = &manifest["server"]["mcp_config"];
    assert_eq!(manifest["server"]["type"], "binary");
    assert_eq!(config["command"], "${__dirname}/server/bigid-auth-mcp");
    assert_eq!(
        config["args"],
        serde_json::json!([]),
        "nothing in args: they show in `ps`"
    );

    let fields = manifest["user_config"].as_object().unwrap();
    let mut used = BTreeSet::new();
    for (var, value) in config["env"].as_object().unwrap() {
        assert!(
            ENVIRONMENT.contains(&var.as_str()),
            "{var} is not a variable the server reads"
        );
        let field = value
            .as_str()
            .and_then(|v| v.strip_prefix("${user_config."))
            .and_then(|v| v.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{var} is not taken from user_config: {value}"));
        let option = &fields[field];
        assert!(
            option.is_object(),
            "{var} names an undeclared field {field}"
        );
        used.insert(field.to_owned());

        let secret = matches!(var.as_str(), "BIGID_PASSWORD" | "BIGID_USER_TOKEN");
        assert_eq!(
            option["sensitive"] == true,
            secret,
            "{field}: sensitive iff a secret"
        );
        if option["required"] == true {
            assert_eq!(var, "BIGID_URL", "only the URL is required");
        } else {
            // Without a default, Claude Desktop passes an unfilled field as
            // the literal `${user_config.x}` rather than as an empty value.
            assert!(
                !option["default"].is_null(),
                "{field}: optional without a default"
            );
        }
    }
    let declared: BTreeSet<String> = fields.keys().cloned().collect();
    assert_eq!(used, declared, "every field reaches the server");
    for var in [
        "BIGID_URL",
        "BIGID_USER_TOKEN",
        "BIGID_USERNAME",
        "BIGID_PASSWORD",
    ] {
        assert!(config["env"][var].is_string(), "{var} is configurable");
    }
}

#[tokio::test]
async fn official_validator_accepts_the_manifest() {
    let Some(cli) = mcpb_cli() else { return };
    let output = run(tokio::process::Command::new(cli)
        .arg("validate")
        .arg(root().join("packaging/mcpb/manifest.json")))
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Manifest schema validation passes"),
        "{stdout}"
    );
    assert!(!stdout.contains("ERROR"), "{stdout}");
}

/// The environment Claude Desktop gives the server: each `${user_config.x}`
/// replaced by what the user entered, else the field's default.
fn host_environment(manifest: &Value, entered: &[(&str, &str)]) -> Vec<(String, String)> {
    let fields = &manifest["user_config"];
    manifest["server"]["mcp_config"]["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(var, template)| {
            let field = template
                .as_str()
                .unwrap()
                .trim_start_matches("${user_config.")
                .trim_end_matches('}');
            let value = match entered.iter().find(|(name, _)| *name == field) {
                Some((_, value)) => (*value).to_owned(),
                None => match &fields[field]["default"] {
                    Value::String(s) => s.clone(),
                    Value::Null => template.as_str().unwrap().to_owned(),
                    other => other.to_string(),
                },
            };
            (var.clone(), value)
        })
        .collect()
}

/// What a user typed into the bundle's settings, by field.
type Entered<'a> = &'a [(&'a str, &'a str)];

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_bundle_serves_both_tools_started_as_claude_desktop_starts_it() {
    let Some(cli) = mcpb_cli() else { return };
    let Some(smoke) = mcp_smoke() else { return };
    let dir = scratch("pack");

    let packed = run(
        tokio::process::Command::new(root().join("scripts/pack-mcpb.sh"))
            .arg("--out")
            .arg(&dir)
            .arg(env!("CARGO_BIN_EXE_bigid-auth-mcp")),
    )
    .await;
    let bundle = PathBuf::from(String::from_utf8_lossy(&packed.stdout).trim());
    let name = bundle.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("bigid-auth-mcp-{}-", env!("CARGO_PKG_VERSION")))
            && name.ends_with(".mcpb"),
        "{name}"
    );

    let unpacked = dir.join("unpacked");
    run(tokio::process::Command::new(&cli)
        .arg("unpack")
        .arg(&bundle)
        .arg(&unpacked))
    .await;
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(unpacked.join("manifest.json")).unwrap())
            .unwrap();
    let command = manifest["server"]["mcp_config"]["command"]
        .as_str()
        .unwrap()
        .replace("${__dirname}", unpacked.to_str().unwrap());

    let fake = FakeBigId::start().await.unwrap();
    let url = fake.url().to_string();
    // Two users: one with a user token only, one with a username and
    // password only; every other field left as the host leaves it.
    let users: [(Entered, [&str; 2]); 2] = [
        (
            &[("bigid_url", &url), ("bigid_user_token", "demo-user-token")],
            [
                "refresh_access_token={}",
                r#"create_session={"username":"demo","password":"demo"}"#,
            ],
        ),
        (
            &[
                ("bigid_url", &url),
                ("bigid_username", "demo"),
                ("bigid_password", "demo"),
            ],
            [
                "create_session={}",
                r#"refresh_access_token={"user_token":"demo-user-token"}"#,
            ],
        ),
    ];
    for (entered, calls) in users {
        let environment = host_environment(&manifest, entered);
        assert!(
            environment.iter().any(|(_, v)| v.is_empty()),
            "some optional field is passed empty"
        );
        // The SDK client hands its server only a safe subset of its own
        // environment, so `env` sets the host's variables for the server.
        let mut smoke = tokio::process::Command::new(&smoke);
        for call in calls {
            smoke.arg("--call").arg(call);
        }
        smoke.arg("stdio").arg("--").arg("env");
        for name in ENVIRONMENT {
            smoke.arg("-u").arg(name);
        }
        for (var, value) in &environment {
            smoke.arg(format!("{var}={value}"));
        }
        let output = run(smoke.arg(&command)).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("server: bigid-auth-mcp"), "{stdout}");
        assert!(
            stdout.contains("call create_session(")
                && stdout.contains("call refresh_access_token("),
            "{stdout}"
        );
        assert!(!stdout.contains("isError=True"), "{stdout}");
    }
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths.iter().filter(|p| p.ends_with("/sessions")).count(),
        2,
        "both users logged in through the bundled binary: {paths:?}"
    );
    fake.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
