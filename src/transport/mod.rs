//! The ways an MCP client reaches the server.

use rmcp::service::ServerInitializeError;

pub mod auth;
pub mod bounded;
pub mod drain;
pub mod http;
pub mod legacy_sse;
pub mod middleware;
pub mod owners;
pub mod resource_metadata;
pub mod sessions;
pub mod stdio;

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What went wrong in a handshake, without rmcp's message: that one quotes
/// the client's whole first message, which may carry a password.
pub(crate) fn handshake_failure(error: &ServerInitializeError) -> &'static str {
    match error {
        ServerInitializeError::ExpectedInitializeRequest(_) => {
            "the first message was not `initialize`"
        }
        ServerInitializeError::ConnectionClosed(_) => "the client went away",
        ServerInitializeError::Cancelled => "cancelled",
        _ => "the handshake failed",
    }
}
