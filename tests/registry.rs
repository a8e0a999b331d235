//! `server.json`, the entry for the official MCP registry, against the
//! registry's published schema committed in `packaging/registry/` (nothing is
//! fetched at test time), and against what the bundle and the server offer.

use std::path::Path;

use serde_json::Value;

fn read(path: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator() -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&read("packaging/registry/server.schema.json"))
        .expect("the registry's schema compiles")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn server_json_validates_against_the_registry_schema() {
    let server = read("server.json");
    let errors = errors(&validator(), &server);
    assert!(errors.is_empty(), "server.json: {errors:#?}");
    assert_eq!(
        server["$schema"],
        read("packaging/registry/server.schema.json")["$id"],
        "server.json names the schema version it is checked against"
    );
}

#[test]
fn the_schema_refuses_a_bundle_package_without_its_checksum() {
    let mut server = read("server.json");
    server["packages"][0]
        .as_object_mut()
        .unwrap()
        .remove("fileSha256");
    assert!(!errors(&validator(), &server).is_empty());
}

#[test]
fn server_json_describes_this_version_its_five_bundles_and_the_bundle_settings() {
    let server = read("server.json");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(server["version"], version);
    let repository = server["repository"]["url"].as_str().unwrap();

    let targets = [
        "x86_64-unknown-linux-gnu",
        "aarch64-unknown-linux-gnu",
        "x86_64-apple-darwin",
        "aarch64-apple-darwin",
        "x86_64-pc-windows-msvc",
    ];
    let packages = server["packages"].as_array().unwrap();
    let identifiers: Vec<&str> = packages
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = targets
        .iter()
        .map(|t| {
            format!("{repository}/releases/download/v{version}/bigid-auth-mcp-{version}-{t}.mcpb")
        })
        .collect();
    assert_eq!(identifiers, expected);

    // The same settings the bundle asks for, secret exactly where it keeps
    // them in the keychain.
    let manifest = read("packaging/mcpb/manifest.json");
    let bundle_env = manifest["server"]["mcp_config"]["env"].as_object().unwrap();
    for package in packages {
        assert_eq!(package["registryType"], "mcpb");
        assert_eq!(package["transport"]["type"], "stdio");
        let vars = package["environmentVariables"].as_array().unwrap();
        let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        let bundle_names: Vec<&str> = bundle_env.keys().map(String::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, bundle_names);
        for var in vars {
            let name = var["name"].as_str().unwrap();
            let field = bundle_env[name]
                .as_str()
                .unwrap()
                .trim_start_matches("${user_config.")
                .trim_end_matches('}');
            let option = &manifest["user_config"][field];
            assert_eq!(
                var["isSecret"] == true,
                option["sensitive"] == true,
                "{name}"
            );
            assert_eq!(
                var["isRequired"] == true,
                option["required"] == true,
                "{name}"
            );
        }
    }
}

#[test]
fn release_plan_builds_every_target_the_registry_entry_offers() {
    let plan =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist-workspace.toml"))
            .unwrap();
    let targets_line = plan
        .lines()
        .find(|line| line.starts_with("targets = ["))
        .expect("dist-workspace.toml lists its targets");
    let server = read("server.json");
    for package in server["packages"].as_array().unwrap() {
        let identifier = package["identifier"].as_str().unwrap();
        let target = identifier
            .rsplit_once(&format!("-{}-", env!("CARGO_PKG_VERSION")))
            .and_then(|(_, rest)| rest.strip_suffix(".mcpb"))
            .unwrap();
        assert!(
            targets_line.contains(&format!("\"{target}\"")),
            "dist does not build {target}: {targets_line}"
        );
    }
}
