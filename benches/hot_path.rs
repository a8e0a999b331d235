//! Micro-benchmarks of the in-process hot path of a tool call: argument
//! parsing, BigID answer parsing, JWT decoding, and a whole `tools/call`
//! over an in-memory pipe. Run: `cargo bench --bench hot_path`.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bigid_auth_mcp::{
    bigid, config,
    demo::FakeBigId,
    jwt,
    server::BigIdServer,
    tools::{CreateSessionArgs, RefreshArgs, parse_args},
};
use divan::{Bencher, black_box};
use reqwest::{StatusCode, Url};
use rmcp::ServiceExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

fn main() {
    divan::main();
}

/// A token shaped like the ones BigID (and the fake) issue.
fn system_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"sub": "demo", "type": "system-token", "iat": 1_764_000_000u64,
               "exp": 1_764_001_800u64, "jti": 42, "iss": "bigid"})
        .to_string(),
    );
    format!("{header}.{claims}.c2lnbmF0dXJl")
}

mod args {
    use super::*;

    #[divan::bench]
    fn create_session(bencher: Bencher) {
        bencher
            .with_inputs(|| json!({"username": "demo", "password": "demo"}))
            .bench_values(|v| parse_args::<CreateSessionArgs>(black_box(v)).is_ok());
    }

    #[divan::bench]
    fn refresh_access_token(bencher: Bencher) {
        bencher
            .with_inputs(|| json!({"user_token": "demo-user-token", "force_refresh": false}))
            .bench_values(|v| parse_args::<RefreshArgs>(black_box(v)).is_ok());
    }

    /// The error path builds the list of accepted names from the schema.
    #[divan::bench]
    fn unknown_argument(bencher: Bencher) {
        bencher
            .with_inputs(|| json!({"token": "x"}))
            .bench_values(|v| parse_args::<RefreshArgs>(black_box(v)).is_err());
    }
}

mod bigid_answer {
    use super::*;

    fn url() -> Url {
        Url::parse("http://127.0.0.1:1/api/v1/sessions").expect("static URL")
    }

    #[divan::bench]
    fn session(bencher: Bencher) {
        let permissions: Vec<String> = (0..30).map(|i| format!("permission.area.{i}")).collect();
        let body = json!({"success": true, "message": "Enjoy your token!",
            "auth_token": system_token(), "username": "demo", "firstName": "Demo",
            "permissions": permissions})
        .to_string()
        .into_bytes();
        let url = url();
        bencher.bench_local(|| {
            bigid::parse_session_answer(&url, StatusCode::OK, black_box(&body)).is_ok()
        });
    }

    #[divan::bench]
    fn token(bencher: Bencher) {
        let body = json!({"success": true, "systemToken": system_token()})
            .to_string()
            .into_bytes();
        let url = url();
        bencher.bench_local(|| {
            bigid::parse_token_answer(&url, StatusCode::OK, black_box(&body)).is_ok()
        });
    }
}

#[divan::bench]
fn jwt_decode(bencher: Bencher) {
    let token = system_token();
    bencher.bench_local(|| jwt::decode_unverified(black_box(&token)).is_some());
}

/// A raw JSON-RPC client on one end of an in-memory pipe, the server on the other.
struct Wire {
    write: WriteHalf<DuplexStream>,
    read: BufReader<ReadHalf<DuplexStream>>,
    line: String,
    id: u64,
}

impl Wire {
    async fn connect(url: &Url, token_cache: bool) -> Self {
        let bigid = config::BigIdConfig {
            url: Some(url.clone()),
            ca_cert: None,
            timeout: Duration::from_secs(5),
            refresh_method: config::RefreshMethod::Get,
            auth_scheme: config::AuthScheme::Raw,
            token_cache,
        };
        let client = bigid::Client::new(url, &bigid).expect("client builds");
        let server = BigIdServer::new(client, config::Defaults::default(), token_cache);
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let (read, write) = tokio::io::split(client_io);
        let mut wire = Self {
            write,
            read: BufReader::new(read),
            line: String::new(),
            id: 0,
        };
        wire.send(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#,
        )
        .await;
        wire.receive().await;
        wire.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        wire
    }

    async fn send(&mut self, line: &str) {
        self.write.write_all(line.as_bytes()).await.expect("pipe");
        self.write.write_all(b"\n").await.expect("pipe");
    }

    async fn receive(&mut self) -> &str {
        self.line.clear();
        self.read.read_line(&mut self.line).await.expect("pipe");
        &self.line
    }

    async fn call(&mut self, tool: &str, arguments: &str) -> bool {
        self.id += 1;
        let request = format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#,
            self.id
        );
        self.send(&request).await;
        let answer = self.receive().await;
        answer.contains("structuredContent") && !answer.contains("\"isError\":true")
    }
}

mod tools_call {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// No upstream request: the whole cost is MCP framing, the tool and the cache.
    #[divan::bench]
    fn refresh_cache_hit(bencher: Bencher) {
        let rt = runtime();
        let (_fake, mut wire) = rt.block_on(async {
            let fake = FakeBigId::start().await.expect("fake starts");
            let wire = Wire::connect(fake.url(), true).await;
            (fake, wire)
        });
        let args = r#"{"user_token":"demo-user-token"}"#;
        assert!(rt.block_on(wire.call("refresh_access_token", args)));
        bencher.bench_local(|| rt.block_on(wire.call("refresh_access_token", args)));
    }

    /// With a loopback round trip to the fake BigID on the same thread.
    #[divan::bench]
    fn create_session_upstream(bencher: Bencher) {
        let rt = runtime();
        let (_fake, mut wire) = rt.block_on(async {
            let fake = FakeBigId::start().await.expect("fake starts");
            let wire = Wire::connect(fake.url(), true).await;
            (fake, wire)
        });
        let args = r#"{"username":"demo","password":"demo"}"#;
        assert!(rt.block_on(wire.call("create_session", args)));
        bencher.bench_local(|| rt.block_on(wire.call("create_session", args)));
    }

    /// A bad argument: answered without leaving the process.
    #[divan::bench]
    fn invalid_argument(bencher: Bencher) {
        let rt = runtime();
        let (_fake, mut wire) = rt.block_on(async {
            let fake = FakeBigId::start().await.expect("fake starts");
            let wire = Wire::connect(fake.url(), true).await;
            (fake, wire)
        });
        let args = r#"{"user_token":5}"#;
        bencher.bench_local(|| !rt.block_on(wire.call("refresh_access_token", args)));
    }
}
