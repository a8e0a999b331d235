//! bigid-auth-mcp: parse the configuration, start logging on stderr, serve.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

use bigid_auth_mcp::{
    bigid,
    config::{Cli, Config, DEMO_PASSWORD, DEMO_USER_TOKEN, DEMO_USERNAME, LogFormat, Transport},
    demo::bigid_target,
    server::BigIdServer,
    transport,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let checking = cli.command == Some(bigid_auth_mcp::config::Command::Check);
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
    init_tracing(config.log_format);

    // stdio serves one client: a single-threaded runtime starts faster and is enough.
    let runtime = match config.transport {
        Transport::Stdio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Transport::Http(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let result = runtime
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(config)));
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
    if config.command == Some(bigid_auth_mcp::config::Command::Check) {
        return bigid_auth_mcp::check::run(config).await;
    }
    let (demo, url) = bigid_target(config.demo, config.bigid.url.as_ref()).await?;
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
            tracing::info!(
                "bigid-auth-mcp {} ready on stdio against BigID {url}; waiting for an MCP client \
                 on stdin (e.g. npx @modelcontextprotocol/inspector target/release/bigid-auth-mcp --demo)",
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
fn init_tracing(format: LogFormat) {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(e) => (
            // rmcp's per-session lifecycle lines are noise unless asked for.
            EnvFilter::new("info,rmcp=warn"),
            std::env::var("RUST_LOG").ok().map(|_| e),
        ),
    };
    // rmcp logs whole requests and results (passwords, tokens) at debug and
    // trace, so it never gets more verbose than info, whatever RUST_LOG says.
    let no_secrets = Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target("rmcp", tracing::Level::INFO);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
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
