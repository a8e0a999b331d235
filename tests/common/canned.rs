//! A loopback "BigID" that answers every connection with whatever bytes the
//! test chose: a valid response, a broken one, garbage, or nothing at all.
//! The axum fake in `src/demo.rs` can only send well-formed HTTP; this one
//! exists to feed the client what no HTTP library would produce.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};

/// What the canned server does with the next connections.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Write these bytes, then close.
    Raw(Vec<u8>),
    /// Write these bytes, then keep the connection open without a word more
    /// (until the client gives up or the server stops).
    RawThenStall(Vec<u8>),
    /// Close as soon as the request has been read.
    Close,
}

impl Reply {
    /// A complete HTTP/1.1 response with this status and body.
    pub fn http(status: u16, content_type: &str, body: &[u8]) -> Self {
        let mut bytes = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        Reply::Raw(bytes)
    }
}

/// The server; stops when dropped.
pub struct Canned {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    task: JoinHandle<()>,
}

impl Canned {
    /// Listens on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let reply = Arc::new(Mutex::new(Reply::Close));
        let shared = reply.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let reply = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tokio::spawn(async move {
                    read_request(&mut stream).await;
                    match reply {
                        Reply::Raw(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        Reply::RawThenStall(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            // Bounded: the client's own timeout ends this first.
                            let mut sink = [0u8; 64];
                            let _ = tokio::time::timeout(
                                Duration::from_secs(30),
                                stream.read(&mut sink),
                            )
                            .await;
                        }
                        Reply::Close => {}
                    }
                });
            }
        });
        Ok(Self { addr, reply, task })
    }

    /// The API base to configure the client with.
    pub fn url(&self) -> reqwest::Url {
        reqwest::Url::parse(&format!("http://{}/api/v1", self.addr)).expect("loopback URL")
    }

    /// What the following connections get.
    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the request head and a `content-length` body, bounded in size and time.
async fn read_request(stream: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return;
                }
            }
            if seen.len() > 1 << 20 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
}
