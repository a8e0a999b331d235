//! Unauthenticated connection floods against the real binary: idle
//! connections and connections trickling oversized headers. The server
//! stays within its memory bound and an authenticated client still gets
//! in and calls a tool.
//!
//! Sizes are the full reproduction by default (a few seconds on loopback);
//! `BIGID_MCP_SOAK=N` multiplies the flood by N.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use bigid_auth_mcp::demo::FakeBigId;
use common::{
    WAIT, call,
    http::{HttpServer, streamable},
    proc_status_kb, soak, structured,
};
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet, time::timeout};

/// Connections that connect and send nothing.
const IDLE: usize = 1_100;
/// Connections that trickle a request head far larger than allowed.
const SLOW: usize = 1_000;
/// Header bytes each slow connection tries to send (hyper used to buffer
/// them all).
const SLOW_HEADER_BYTES: usize = 400 * 1024;
/// The memory bound the server must keep under the flood.
const MAX_RSS_KB: u64 = 64 * 1024;
/// What an authenticated client gets to initialize and call a tool.
const CLIENT_WAIT: Duration = Duration::from_secs(1);

fn nofile() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit
}

fn set_soft_nofile(soft: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: nofile().rlim_max,
    };
    // SAFETY: setrlimit reads only the struct we own.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
}

/// One slow-header attacker: a request head sent 8 KiB at a time, until the
/// server closes the connection or the head is all sent.
async fn trickle(mut stream: TcpStream) {
    let head = b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    if stream.write_all(head).await.is_err() {
        return;
    }
    let line = format!("X-Pad: {}\r\n", "p".repeat(8 * 1024 - 10));
    for _ in 0..SLOW_HEADER_BYTES / line.len() {
        if stream.write_all(line.as_bytes()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Never ends the head: the server has to time it out.
    let _ = tokio::time::timeout(WAIT, stream.writable()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_keeps_memory_bounded_and_lets_clients_in() -> anyhow::Result<()> {
    let scale = soak() as usize;
    let (idle, slow) = (IDLE * scale, SLOW * scale);
    // The test holds every connection itself.
    let hard = nofile().rlim_max;
    let needed = (idle + slow + 512) as u64;
    if hard < needed {
        println!("SKIP: the hard descriptor limit {hard} is below the {needed} this test needs");
        return Ok(());
    }
    let fake = FakeBigId::start().await?;
    // The server starts with the common default soft limit of 1,024 (what
    // the flood exhausted before); it must raise it itself.
    set_soft_nofile(1024);
    let started = HttpServer::start(fake.url().as_str(), &[], &[("RUST_LOG", "info")]).await;
    set_soft_nofile(hard);
    let mut server = started?;
    let baseline = proc_status_kb(server.pid, "VmRSS").unwrap_or(0);
    let addr = server.base.trim_start_matches("http://").to_owned();

    let mut idlers = Vec::with_capacity(idle);
    for _ in 0..idle {
        idlers.push(TcpStream::connect(&addr).await?);
    }
    let mut attackers = JoinSet::new();
    for _ in 0..slow {
        let stream = TcpStream::connect(&addr).await?;
        attackers.spawn(trickle(stream));
    }
    // Let the trickle run a while: the first ~32 KiB of each head arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let asked = Instant::now();
    let outcome = timeout(CLIENT_WAIT, async {
        let client = streamable(&server.base).await?;
        let result = call(
            &client,
            "create_session",
            json!({"username": "demo", "password": "demo"}),
        )
        .await?;
        anyhow::Ok((client, result))
    })
    .await;
    let took = asked.elapsed();
    let peak = proc_status_kb(server.pid, "VmHWM").unwrap_or(0);
    let during = proc_status_kb(server.pid, "VmRSS").unwrap_or(0);
    let fds = server.fds();
    println!(
        "flood of {idle} idle + {slow} slow-header connections: RSS {baseline} kB before, \
         {during} kB during, peak {peak} kB; {fds} descriptors open; an authenticated \
         initialize + tools/call took {took:?}"
    );
    let (client, result) = outcome.with_context(|| {
        format!("no initialize + call within {CLIENT_WAIT:?} under the flood")
    })??;
    assert!(structured(&result)["auth_token"].is_string());
    assert!(
        peak < MAX_RSS_KB,
        "peak RSS {peak} kB under the flood (bound {MAX_RSS_KB} kB)"
    );
    let _ = timeout(WAIT, client.cancel()).await;

    attackers.abort_all();
    drop(idlers);
    let stderr = server.stderr_so_far();
    assert!(
        !stderr.contains("cannot accept"),
        "ran out of descriptors: {stderr:.2000}"
    );
    server.terminate()?;
    let (exit, _) = server.wait().await?;
    assert!(exit.success());
    Ok(())
}
