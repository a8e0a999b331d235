//! The credential-helper CLI through the real binary against the fake
//! BigID: what goes to stdout, exit codes, the tools' wording on stderr, no
//! secret at trace level, and the token cache across processes.

mod common;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bigid_auth_mcp::{
    config::Defaults,
    demo::{FakeBigId, Fault},
    secret::Secret,
};
use common::*;
use serde_json::{Value, json};

/// A user token and a password the fake accepts, distinctive enough to grep for.
const USER_TOKEN: &str = "demo-user-token-zed";
const USERNAME: &str = "zed";
const PASSWORD: &str = "zed-password";

/// What one run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Run> {
    let output = run_to_end(args, env).await?;
    Ok(Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

/// A fresh `XDG_RUNTIME_DIR` for one test.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bigid-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn cache_dir(&self) -> PathBuf {
        self.0.join("bigid-auth-mcp")
    }

    /// Every file in the cache directory.
    fn cache_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.cache_dir())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The environment of a `token` or `session` run against `fake`.
fn env<'a>(fake: &'a FakeBigId, runtime: &'a RuntimeDir) -> Vec<(&'a str, &'a str)> {
    vec![
        ("BIGID_URL", fake.url().as_str()),
        ("BIGID_USER_TOKEN", USER_TOKEN),
        ("BIGID_USERNAME", USERNAME),
        ("BIGID_PASSWORD", PASSWORD),
        ("XDG_RUNTIME_DIR", runtime.path()),
        ("RUST_LOG", "trace"),
    ]
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("JSON")
}

/// stdout is exactly one token and a newline; returns the token.
fn only_a_token(run: &Run) -> String {
    assert_eq!(run.code, Some(0), "{run:?}");
    let token = run
        .stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no trailing newline: {run:?}"));
    assert!(!token.contains(char::is_whitespace), "{run:?}");
    assert_eq!(token.split('.').count(), 3, "{run:?}");
    token.to_owned()
}

/// No secret of the run, the printed token included, on stderr.
fn assert_no_secret(run: &Run, extra: &[&str]) {
    for secret in [USER_TOKEN, PASSWORD].iter().chain(extra) {
        assert!(
            !run.stderr.contains(secret),
            "a secret reached stderr: {}",
            run.stderr
        );
    }
    let printed = run.stdout.trim();
    if !printed.is_empty() && !printed.starts_with('{') {
        assert!(!run.stderr.contains(printed), "the token reached stderr");
    }
}

/// The tools' outputSchemas and results for the same fake, in-process.
async fn tool_reference(fake: &FakeBigId) -> anyhow::Result<Client> {
    let defaults = Defaults {
        username: Some(USERNAME.into()),
        password: Some(Secret::new(PASSWORD)),
        user_token: Some(Secret::new(USER_TOKEN)),
    };
    connect_in_process(fake.url(), bigid_config(fake.url()), defaults).await
}

fn assert_valid(schema: &Value, value: &Value) {
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{value} violates the schema: {errors:?}");
}

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn token_prints_only_the_system_token_and_a_newline() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("token");
    let out = run(&["token"], &env(&fake, &runtime)).await?;
    let token = only_a_token(&out);
    assert_eq!(claims(&token)["type"], "system-token");
    assert_eq!(claims(&token)["sub"], USERNAME);
    assert_no_secret(&out, &[]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].authorization.as_deref(), Some(USER_TOKEN));
    Ok(())
}

#[tokio::test]
async fn json_output_is_the_tools_result_object() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("json");
    let reference = tool_reference(&fake).await?;
    let tools = reference.list_all_tools().await?;
    let schema = |name: &str| -> Value {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        Value::Object((*tool.output_schema.clone().unwrap()).clone())
    };

    let out = run(&["token", "--json"], &env(&fake, &runtime)).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    let cli: Value = serde_json::from_str(&out.stdout)?;
    assert_valid(&schema("refresh_access_token"), &cli);
    let tool = structured(&call(&reference, "refresh_access_token", json!({})).await?);
    assert_eq!(keys(&cli), keys(&tool));
    assert_eq!(cli["cached"], false);
    assert_no_secret(&out, &[cli["systemToken"].as_str().unwrap()]);

    let out = run(
        &["session", "--json", "--include-permissions"],
        &env(&fake, &runtime),
    )
    .await?;
    let cli: Value = serde_json::from_str(&out.stdout)?;
    assert_valid(&schema("create_session"), &cli);
    let tool = structured(
        &call(
            &reference,
            "create_session",
            json!({"include_permissions": true}),
        )
        .await?,
    );
    assert_eq!(keys(&cli), keys(&tool));
    assert_eq!(cli["permissions"].as_array().map(Vec::len), Some(30));
    assert_no_secret(&out, &[cli["auth_token"].as_str().unwrap()]);

    let out = run(&["session", "--json"], &env(&fake, &runtime)).await?;
    let cli: Value = serde_json::from_str(&out.stdout)?;
    assert!(cli.get("permissions").is_none(), "{cli}");
    assert_eq!(cli["permission_count"], 30);
    reference.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn session_prints_only_the_auth_token() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("session");
    let out = run(&["session"], &env(&fake, &runtime)).await?;
    let token = only_a_token(&out);
    assert_eq!(claims(&token)["type"], "access-token");
    assert_eq!(claims(&token)["sub"], USERNAME);
    assert_no_secret(&out, &[]);
    // Global flags work after the subcommand.
    let out = run(
        &["session", "--timeout", "5", "--auth-scheme", "bearer"],
        &env(&fake, &runtime),
    )
    .await?;
    only_a_token(&out);
    Ok(())
}

#[tokio::test]
async fn configuration_problems_exit_2_with_nothing_on_stdout() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("config");
    let url = fake.url().as_str();
    // (arguments, environment, what stderr must say)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["token"], vec![], "set BIGID_URL"),
        (
            vec!["token"],
            vec![("BIGID_URL", url)],
            "BIGID_USER_TOKEN is not set",
        ),
        (
            vec!["session"],
            vec![("BIGID_URL", url), ("BIGID_USERNAME", USERNAME)],
            "BIGID_PASSWORD is not set",
        ),
        (
            vec!["session"],
            vec![("BIGID_URL", url), ("BIGID_PASSWORD", PASSWORD)],
            "BIGID_USERNAME is not set",
        ),
        (
            vec!["token", "--timeout", "0"],
            vec![("BIGID_URL", url), ("BIGID_USER_TOKEN", USER_TOKEN)],
            "BIGID_TIMEOUT",
        ),
        (
            vec!["token"],
            vec![
                ("BIGID_URL", url),
                ("BIGID_USER_TOKEN", USER_TOKEN),
                ("BIGID_CA_CERT", "/nonexistent/ca.pem"),
            ],
            "BIGID_CA_CERT",
        ),
    ];
    for (args, mut vars, expected) in cases {
        vars.push(("RUST_LOG", "trace"));
        vars.push(("XDG_RUNTIME_DIR", runtime.path()));
        let out = run(&args, &vars).await?;
        assert_eq!(out.code, Some(2), "{args:?} {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.contains(expected), "{expected}: {out:?}");
        assert_no_secret(&out, &[]);
    }
    assert_eq!(fake.request_count(), 0);
    Ok(())
}

#[tokio::test]
async fn bigid_failures_exit_1_with_the_tools_wording() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("failures");
    let reference = tool_reference(&fake).await?;

    // A rejected user token.
    let wrong = "wrong-user-token-4711";
    let mut vars = env(&fake, &runtime);
    vars.retain(|(k, _)| *k != "BIGID_USER_TOKEN");
    vars.push(("BIGID_USER_TOKEN", wrong));
    let out = run(&["token"], &vars).await?;
    let tool = error_text(
        &call(
            &reference,
            "refresh_access_token",
            json!({"user_token": wrong}),
        )
        .await?,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(tool.contains("BigID rejected the user token"), "{tool}");
    assert!(out.stderr.contains(&tool), "{tool} / {out:?}");
    assert_no_secret(&out, &[wrong]);

    // A rejected password.
    let mut vars = env(&fake, &runtime);
    vars.retain(|(k, _)| *k != "BIGID_PASSWORD");
    vars.push(("BIGID_PASSWORD", "not-zeds-password"));
    let out = run(&["session"], &vars).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("BigID rejected the username or password"),
        "{out:?}"
    );
    assert_no_secret(&out, &["not-zeds-password"]);

    // BigID failing.
    fake.set_fault(Fault::Status(500));
    let out = run(&["token", "--json"], &env(&fake, &runtime)).await?;
    let tool = error_text(&call(&reference, "refresh_access_token", json!({})).await?);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(tool.contains("answered HTTP 500"), "{tool}");
    assert!(out.stderr.contains(&tool), "{tool} / {out:?}");
    assert_no_secret(&out, &[]);
    fake.set_fault(Fault::None);
    reference.cancel().await?;

    // BigID unreachable: a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let url = format!("http://{closed}/api/v1");
    let mut vars = env(&fake, &runtime);
    vars.retain(|(k, _)| *k != "BIGID_URL");
    vars.push(("BIGID_URL", &url));
    for command in ["token", "session"] {
        let out = run(&[command], &vars).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stdout.is_empty());
        assert!(out.stderr.contains("is unreachable"), "{out:?}");
        assert!(out.stderr.contains(&url), "names the URL: {out:?}");
        assert_no_secret(&out, &[]);
    }
    Ok(())
}

/// `(dir mode, file mode)` of the cache, and the file's name.
fn modes(runtime: &RuntimeDir) -> (u32, u32, String) {
    let files = runtime.cache_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let dir = std::fs::metadata(runtime.cache_dir()).unwrap().mode() & 0o777;
    let file = std::fs::metadata(&files[0]).unwrap().mode() & 0o777;
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    (dir, file, name)
}

#[tokio::test]
async fn a_valid_system_token_is_reused_across_processes() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("reuse");
    let vars = env(&fake, &runtime);

    let first = only_a_token(&run(&["token"], &vars).await?);
    let second = run(&["token", "--json"], &vars).await?;
    let second: Value = serde_json::from_str(&second.stdout)?;
    assert_eq!(second["systemToken"], first.as_str());
    assert_eq!(second["cached"], true);
    assert_eq!(fake.request_count(), 1, "the second process asked no one");

    let (dir_mode, file_mode, name) = modes(&runtime);
    assert_eq!((dir_mode, file_mode), (0o700, 0o600));
    assert!(
        name.ends_with(".json") && !name.contains(USER_TOKEN),
        "{name}"
    );
    let content = std::fs::read_to_string(&runtime.cache_files()[0])?;
    assert!(
        !content.contains(USER_TOKEN),
        "the user token is not stored"
    );

    let forced = only_a_token(&run(&["token", "--force-refresh"], &vars).await?);
    assert_ne!(forced, first);
    assert_eq!(fake.request_count(), 2);
    let after = only_a_token(&run(&["token"], &vars).await?);
    assert_eq!(after, forced, "the forced token replaced the cached one");

    only_a_token(&run(&["token", "--no-token-cache"], &vars).await?);
    let mut off = vars.clone();
    off.push(("BIGID_TOKEN_CACHE", "false"));
    only_a_token(&run(&["token"], &off).await?);
    assert_eq!(fake.request_count(), 4, "no reuse with the cache off");

    let mut no_runtime = vars.clone();
    no_runtime.retain(|(k, _)| *k != "XDG_RUNTIME_DIR");
    only_a_token(&run(&["token"], &no_runtime).await?);
    only_a_token(&run(&["token"], &no_runtime).await?);
    assert_eq!(fake.request_count(), 6, "no cache without XDG_RUNTIME_DIR");
    Ok(())
}

/// Writes a cache entry naming `token` over the cached file.
fn forge(path: &Path, token: &str, mode: u32) {
    let far = 4_000_000_000u64;
    std::fs::write(
        path,
        json!({"systemToken": token, "expires": far}).to_string(),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn a_tampered_cache_file_is_ignored_never_trusted() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("tampered");
    let vars = env(&fake, &runtime);
    only_a_token(&run(&["token"], &vars).await?);
    let path = runtime.cache_files().remove(0);

    // Readable by others: not trusted.
    forge(&path, "forged-token", 0o644);
    let out = run(&["token"], &vars).await?;
    assert_ne!(only_a_token(&out), "forged-token");
    assert!(out.stderr.contains("ignoring token cache file"), "{out:?}");
    assert_eq!(fake.request_count(), 2);

    // Corrupt: ignored, then replaced by a good entry.
    std::fs::write(&path, b"{\"systemToken\": \"half")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let fresh = only_a_token(&run(&["token"], &vars).await?);
    assert_eq!(fake.request_count(), 3);
    assert_eq!(only_a_token(&run(&["token"], &vars).await?), fresh);
    assert_eq!(fake.request_count(), 3, "the rewritten entry is reused");

    // A symlink in its place is not followed.
    std::fs::remove_file(&path)?;
    let elsewhere = runtime.0.join("elsewhere.json");
    forge(&elsewhere, "symlinked-token", 0o600);
    std::os::unix::fs::symlink(&elsewhere, &path)?;
    assert_ne!(
        only_a_token(&run(&["token"], &vars).await?),
        "symlinked-token"
    );

    // Owned by another user (needs root to arrange).
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::fs::remove_file(&path);
        forge(&path, "foreign-token", 0o600);
        std::os::unix::fs::chown(&path, Some(65534), Some(65534))?;
        assert_ne!(
            only_a_token(&run(&["token"], &vars).await?),
            "foreign-token"
        );
    } else {
        eprintln!("SKIPPED: the foreign-owner case needs root to chown a file");
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_invocations_never_corrupt_the_cache() -> anyhow::Result<()> {
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("concurrent");
    let vars = env(&fake, &runtime);
    let runs = futures_util::future::join_all((0..8).map(|_| run(&["token"], &vars))).await;
    for out in runs {
        only_a_token(&out?);
    }
    let files = runtime.cache_files();
    assert_eq!(
        files.len(),
        1,
        "one entry, no temporary files left: {files:?}"
    );
    let entry: Value = serde_json::from_slice(&std::fs::read(&files[0])?)?;
    let stored = entry["systemToken"].as_str().unwrap().to_owned();
    let before = fake.request_count();
    let out = run(&["token", "--json"], &vars).await?;
    let reused: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(reused["cached"], true);
    assert_eq!(reused["systemToken"], stored.as_str());
    assert_eq!(fake.request_count(), before);
    Ok(())
}

#[tokio::test]
async fn an_agent_shell_sends_a_fresh_token_to_bigid_without_printing_it() -> anyhow::Result<()> {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: curl is not installed; `.ci/run` installs it");
        return Ok(());
    }
    let fake = FakeBigId::start().await?;
    let runtime = RuntimeDir::new("agent");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bigid-auth-mcp"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // What an agent with a bash tool runs, and all it gets to read back.
    let command =
        r#"curl -sS -H "Authorization: $(bigid-auth-mcp token)" "$BIGID_URL/refresh-access-token""#;
    let mut shell = tokio::process::Command::new("sh");
    shell.arg("-c").arg(command).kill_on_drop(true);
    for name in CONTRACT_ENV {
        shell.env_remove(name);
    }
    shell
        .env("PATH", path)
        .env("BIGID_URL", fake.url().as_str())
        .env("BIGID_USER_TOKEN", USER_TOKEN)
        .env("XDG_RUNTIME_DIR", runtime.path());
    let output = tokio::time::timeout(WAIT, shell.output()).await??;
    let seen = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // BigID got the user token once (the exchange), then the fresh system token, as is.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "{seen}");
    assert_eq!(requests[0].authorization.as_deref(), Some(USER_TOKEN));
    let sent = requests[1].authorization.clone().unwrap_or_default();
    assert_eq!(claims(&sent)["type"], "system-token", "{seen}");
    assert!(!sent.starts_with("Bearer "));
    // BigID's answer reached the agent; the token did not.
    assert!(output.status.success(), "{seen}");
    assert!(seen.contains("\"message\""), "{seen}");
    assert!(
        !seen.contains(&sent),
        "the token appeared in the output: {seen}"
    );
    assert!(!seen.contains(USER_TOKEN), "{seen}");
    Ok(())
}
