//! The ways an MCP client reaches the server.

use rmcp::service::ServerInitializeError;

pub mod auth;
pub mod bounded;
pub mod connections;
pub mod drain;
pub mod http;
pub mod legacy_sse;
pub mod lines;
pub mod middleware;
pub mod owners;
pub mod refusals;
pub mod request_ids;
pub mod resource_metadata;
pub mod sessions;
pub mod stdio;

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere). The handlers are
/// installed when this is called, not when the future is first polled: a
/// signal that comes right after the server has said it is ready must still
/// mean a graceful stop, not the signal's default action (killing the process).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match signals {
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
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
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
