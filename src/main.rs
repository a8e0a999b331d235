//! bigid-auth-mcp: parse the configuration, start logging on stderr, serve.

use std::process::ExitCode;

use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

use bigid_auth_mcp::{
    bigid,
    config::{
        Command, Config, DEMO_PASSWORD, DEMO_USER_TOKEN, DEMO_USERNAME, LogFormat, Transport,
    },
    demo::bigid_target,
    scrub::MaskSessionIds,
    server::BigIdServer,
    transport,
};

fn main() -> ExitCode {
    let cli = bigid_auth_mcp::host_env::parse_cli();
    let checking = cli.command == Some(Command::Check);
    let config = match Config::from_cli(cli, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            if checking {
                println!("{}", bigid_auth_mcp::check::config_failed(&e));
            }
            eprintln!("bigid-auth-mcp: {e}");
            return ExitCode::from(2);
        }
    };
    let helper = config.command.is_some_and(Command::is_credential_helper);
    // A credential helper's stderr is read by people and agents: quiet unless something is wrong.
    init_tracing(config.log_format, if helper { "warn" } else { "info" });

    // stdio serves one client: a single-threaded runtime starts faster and is enough.
    let runtime = match config.transport {
        _ if helper => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Transport::Stdio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Transport::Http(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        let result = rt.block_on(run(config));
        // When stdin is not a pipe (a socketpair from Node, a tty, a file),
        // rmcp reads it on a blocking thread that cannot be cancelled, and
        // dropping the runtime would wait for that read forever.
        rt.shutdown_timeout(std::time::Duration::from_millis(250));
        result
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("bigid-auth-mcp: {e:#}");
            // An issuer that cannot be used is a configuration problem, like
            // the ones Config::from_cli reports.
            if e.downcast_ref::<bigid_auth_mcp::oauth::StartError>()
                .is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    match config.command {
        Some(Command::Check) => return bigid_auth_mcp::check::run(config).await,
        Some(command) if command.is_credential_helper() => {
            return Ok(bigid_auth_mcp::cli::run(config).await);
        }
        _ => {}
    }
    let (demo, url) = bigid_target(config.demo, config.bigid.url.as_ref()).await?;
    if url.scheme() == "http" && !bigid::is_loopback(&url) {
        tracing::warn!(
            "BIGID_URL {url} is plain http to a remote host: passwords and tokens cross the \
             network unencrypted; use https"
        );
    }
    let client = bigid::Client::new(&url, &config.bigid)?;
    let server = BigIdServer::new(client, config.defaults, config.bigid.token_cache);
    if demo.is_some() {
        tracing::info!(
            "demo BigID at {url}: user `{DEMO_USERNAME}` / password `{DEMO_PASSWORD}`, user token \
             `{DEMO_USER_TOKEN}` (the tools use these when called without arguments)"
        );
    }
    match config.transport {
        Transport::Stdio => {
            // The one info line of a stdio start: hosts that start a process per
            // tool call would otherwise fill their logs.
            tracing::info!(
                "bigid-auth-mcp {} ready on stdio against BigID {url}",
                env!("CARGO_PKG_VERSION")
            );
            transport::stdio::serve(server).await?;
        }
        Transport::Http(http) => {
            tracing::info!("serving BigID {url} over HTTP");
            transport::http::serve(server, &http).await?;
        }
    }
    if let Some(demo) = demo {
        demo.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr only: in stdio mode stdout belongs to JSON-RPC.
fn init_tracing(format: LogFormat, default_level: &str) {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => (
            // rmcp's per-session lifecycle lines are noise unless asked for.
            EnvFilter::new(format!("{default_level},rmcp=warn")),
            std::env::var("RUST_LOG").ok().map(|_| e),
        ),
    };
    // rmcp logs whole requests and results (passwords, tokens) at debug and
    // trace, and at info the new session ids (with a span field carrying
    // them), client names and notifications as sent; so it never gets more
    // verbose than warn, whatever RUST_LOG says. Its warnings and errors
    // still quote session ids: MaskSessionIds masks them.
    let no_secrets = Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target("rmcp", tracing::Level::WARN);
    let layer = tracing_subscriber::fmt::layer().with_writer(MaskSessionIds(std::io::stderr));
    let layer = match format {
        LogFormat::Text => layer
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(no_secrets))
        .with(filter)
        .init();
    if let Some(e) = bad_filter {
        tracing::warn!("RUST_LOG is not a valid filter ({e}); logging at info");
    }
}
