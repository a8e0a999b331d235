//! The credential-helper CLI: `token` and `session` print a BigID token on
//! stdout (or, with `--json`, the same object the MCP tool returns), so a
//! shell command can pass it to BigID without anyone reading it:
//! `curl -H "Authorization: $(bigid-auth-mcp token)" "$BIGID_URL/…"`.
//! Both run the same [`Flows`] as the MCP tools.

use std::{io::Write, process::ExitCode};

use serde::Serialize;

use crate::{
    bigid,
    config::{Command, Config},
    demo::bigid_target,
    disk_cache::DiskCache,
    flows::Flows,
    tools::{CreateSessionArgs, RefreshArgs, ToolError},
};

/// Exit status: the token (or JSON) is on stdout.
pub const EXIT_OK: u8 = 0;
/// Exit status: BigID refused the credentials or could not be reached.
pub const EXIT_BIGID: u8 = 1;
/// Exit status: the configuration is incomplete or invalid.
pub const EXIT_CONFIG: u8 = 2;

/// Runs `token` or `session`; messages go to stderr, never a secret.
pub async fn run(config: Config) -> ExitCode {
    let (demo, url) = match bigid_target(config.demo, config.bigid.url.as_ref()).await {
        Ok(target) => target,
        Err(e) => return fail(EXIT_CONFIG, &format!("cannot start the demo BigID: {e}")),
    };
    let client = match bigid::Client::new(&url, &config.bigid) {
        Ok(client) => client,
        Err(e) => return fail(EXIT_CONFIG, &e.to_string()),
    };
    let mut flows = Flows::new(client, config.defaults);
    // The demo BigID lives for one command, on a new port each time: its
    // tokens could never be reused, so they are not written down either.
    if config.bigid.token_cache && !config.demo {
        match DiskCache::open(std::env::var_os("XDG_RUNTIME_DIR").as_deref(), &url) {
            Ok(disk) => flows = flows.with_disk_cache(disk),
            // Running without the cache only costs a request to BigID.
            Err(why) => tracing::debug!("no token cache: {why}"),
        }
    }

    let code = match config.command {
        Some(Command::Token {
            force_refresh,
            json,
        }) => {
            let args = RefreshArgs {
                force_refresh,
                ..RefreshArgs::default()
            };
            match flows.refresh_access_token(args).await {
                Ok(out) if json => print_json(&out),
                Ok(out) => print_line(out.system_token.expose()),
                Err(e) => report(e),
            }
        }
        Some(Command::Session {
            include_permissions,
            json,
        }) => {
            let args = CreateSessionArgs {
                include_permissions,
                ..CreateSessionArgs::default()
            };
            match flows.create_session(args).await {
                Ok(out) if json => print_json(&out),
                Ok(out) => print_line(out.auth_token.expose()),
                Err(e) => report(e),
            }
        }
        _ => fail(EXIT_CONFIG, "not a credential-helper command"),
    };
    if let Some(demo) = demo {
        demo.stop().await;
    }
    code
}

/// The tools' error text on stderr, with the exit status for its kind.
fn report(error: ToolError) -> ExitCode {
    match error {
        ToolError::Missing { env, .. } => fail(
            EXIT_CONFIG,
            &format!(
                "{env} is not set: set it in the environment (secrets are never taken as \
                 command-line flags)"
            ),
        ),
        ToolError::BigId(bigid::Error::Setup(ref why)) => fail(EXIT_CONFIG, why),
        other => fail(EXIT_BIGID, &other.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("bigid-auth-mcp: {message}");
    ExitCode::from(code)
}

fn print_json(value: &impl Serialize) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(text) => print_line(&text),
        Err(e) => fail(EXIT_BIGID, &format!("cannot encode the result: {e}")),
    }
}

/// Writes one line to stdout; a closed pipe is a failure, not a panic.
fn print_line(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => fail(EXIT_BIGID, &format!("cannot write to stdout: {e}")),
    }
}
