//! MCP over stdin/stdout: what Claude Desktop, Claude Code and agent
//! frameworks spawn. stdout carries JSON-RPC only; logs go to stderr.

use rmcp::ServiceExt;

use super::{bounded::Bounded, lines::LineTransport};
use crate::server::BigIdServer;

/// Serves one client on stdio until stdin closes or a signal arrives.
pub async fn serve(server: BigIdServer) -> anyhow::Result<()> {
    let session = async {
        // Non-blocking pipes when spawned by a client; blocking stdio otherwise.
        // rmcp caps a line at 16 MiB; Bounded caps the unanswered requests, so
        // a client that does not read stdout cannot grow our memory either.
        let (stdin, stdout) = rmcp::transport::stdio_pipes();
        let transport = Bounded::new(LineTransport::new(stdin, stdout));
        let running = match server.serve(transport).await {
            Ok(running) => running,
            Err(e) => {
                // stdin closed (or garbage) before `initialize`: nothing to serve.
                tracing::debug!("no MCP session on stdio: {}", super::handshake_failure(&e));
                return Ok(());
            }
        };
        running.waiting().await?;
        tracing::debug!("stdin closed; exiting");
        anyhow::Ok(())
    };
    tokio::select! {
        result = session => result,
        _ = super::shutdown_signal() => {
            tracing::info!("signal received; exiting");
            Ok(())
        }
    }
}
