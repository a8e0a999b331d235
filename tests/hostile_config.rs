//! Configuration an attacker or a hurried operator might give, through the
//! real binary: credentials in `BIGID_URL` in every form the URL parser
//! accepts, a guessable `MCP_AUTH_TOKEN`, and plain http to a remote BigID.

mod common;

use std::process::Stdio;

use common::{WAIT, binary};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    time::timeout,
};

const PASSWORD: &str = "pw-SECRET-41c2";

async fn refused(env: &[(&str, &str)]) -> anyhow::Result<(i32, String)> {
    let output = timeout(
        WAIT,
        binary(&["--transport", "http", "--bind", "127.0.0.1:0"], env)
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_password_in_bigid_url_is_refused_and_never_printed_whatever_its_form()
-> anyhow::Result<()> {
    for url in [
        format!("https://user:{PASSWORD}@bigid.example/api/v1"),
        format!("https:\\\\user:{PASSWORD}@bigid.example/api/v1"),
        format!("https:/user:{PASSWORD}@bigid.example/api/v1"),
        format!("https:user:{PASSWORD}@bigid.example/api/v1"),
        format!("https://user:{PASSWORD}?x@bigid.example/api/v1"),
        format!("https://user:a?{PASSWORD}@bigid.example/api/v1"),
        format!("https://user:{PASSWORD}#x@bigid.example/api/v1"),
        format!("https://bigid.example/api/v1?token={PASSWORD}"),
    ] {
        let (code, stderr) = refused(&[("BIGID_URL", &url)]).await?;
        assert_eq!(code, 2, "{url}: {stderr}");
        assert!(!stderr.contains(PASSWORD), "{url} printed: {stderr}");
        // Not even a prefix of it (a cut at `?` used to show `pw-SEC…`).
        assert!(!stderr.contains(&PASSWORD[..6]), "{url} printed: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn a_short_mcp_auth_token_is_refused_with_a_clear_message() -> anyhow::Result<()> {
    let (code, stderr) = refused(&[
        ("MCP_AUTH_TOKEN", "x"),
        ("BIGID_URL", "https://b.example/api/v1"),
    ])
    .await?;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("MCP_AUTH_TOKEN is shorter than 16"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn plain_http_to_a_remote_bigid_warns_at_start_up() -> anyhow::Result<()> {
    let mut child = binary(
        &["--transport", "http", "--bind", "127.0.0.1:0"],
        &[("BIGID_URL", "http://bigid.example/api/v1")],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut warned = false;
    timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            warned |= line.contains("plain http") && line.contains("WARN");
            if line.contains("ready on") {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    child.start_kill()?;
    assert!(warned, "no start-up warning about plain http");
    Ok(())
}

#[tokio::test]
async fn a_ca_file_that_is_not_a_certificate_a_fifo_or_a_device_stops_start_up()
-> anyhow::Result<()> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let dir = std::env::temp_dir().join(format!("bigid-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // PEM armour around bytes that are not DER.
    let not_der = dir.join("not-der.pem");
    std::fs::write(
        &not_der,
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(b"this is not a certificate at all, just bytes")
        ),
    )?;
    let fifo = dir.join("ca.fifo");
    let _ = std::fs::remove_file(&fifo);
    let c_path = std::ffi::CString::new(fifo.to_string_lossy().as_bytes())?;
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for path in [
        not_der.as_path(),
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
    ] {
        let shown = path.display().to_string();
        let (code, stderr) = refused(&[
            ("BIGID_URL", "https://bigid.example/api/v1"),
            ("BIGID_CA_CERT", &shown),
        ])
        .await?;
        assert_eq!(code, 2, "{shown}: {stderr}");
        assert!(stderr.contains(&shown), "{shown} not named: {stderr}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
