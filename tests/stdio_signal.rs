//! SIGTERM and SIGINT end the stdio server promptly whatever its stdin is.
//! Node (and so most agent frameworks written in JavaScript) gives a child
//! a socketpair as stdin, not a pipe, and closes it by signal only.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::{fd::OwnedFd, unix::net::UnixStream},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use common::{WAIT, binary};
use serde_json::{Value, json};
use tokio::time::timeout;

async fn ends_promptly_on(signal: libc::c_int) -> anyhow::Result<()> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut child = binary(&["--demo"], &[])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id().context("no pid")?;
    let stdout = child.stdout.take().context("no stdout")?.into_owned_fd()?;
    // A real handshake first: the server is reading stdin when the signal comes.
    let mut writer = ours.try_clone()?;
    writeln!(
        writer,
        "{}",
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "node-like", "version": "0"}}})
    )?;
    let reply = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(std::fs::File::from(stdout)).read_line(&mut line)?;
        anyhow::Ok(line)
    });
    let reply: Value = serde_json::from_str(&timeout(WAIT, reply).await???)?;
    assert_eq!(reply["id"], 1, "{reply}");
    writeln!(
        writer,
        "{}",
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
    )?;

    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
    let status = timeout(Duration::from_secs(5), child.wait())
        .await
        .context("still running 5 s after the signal, with stdin open")??;
    assert!(status.success(), "{status}");
    drop(ours);
    Ok(())
}

#[tokio::test]
async fn sigterm_ends_the_stdio_server_when_stdin_is_an_open_socketpair() -> anyhow::Result<()> {
    ends_promptly_on(libc::SIGTERM).await
}

#[tokio::test]
async fn sigint_ends_the_stdio_server_when_stdin_is_an_open_socketpair() -> anyhow::Result<()> {
    ends_promptly_on(libc::SIGINT).await
}
