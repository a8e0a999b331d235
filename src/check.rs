//! `bigid-auth-mcp check`: what an operator runs first on a new deployment.
//! Walks the path a tool call takes (configuration, DNS, TCP, TLS, then each
//! configured credential) and prints one ✓/✗ line per step on stdout.
//! Secrets are never printed: tokens are described by their expiry only.

use std::{
    fmt::Display,
    io::Write,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant, SystemTime},
};

use reqwest::Url;

use crate::{
    bigid::{self, Client},
    config::{Config, ConfigError, DEMO_PASSWORD, DEMO_USER_TOKEN, Defaults, RefreshMethod},
    demo::bigid_target,
    jwt,
    secret::Secret,
    tools::ToolError,
};

/// The line `check` prints when the configuration itself is invalid.
pub fn config_failed(error: &ConfigError) -> String {
    format!("✗ configuration: {error}")
}

/// Runs every step against the configured (or demo) BigID; exit code 0 only
/// when every configured step passed.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let (demo, url) = bigid_target(config.demo, config.bigid.url.as_ref()).await?;
    let mut steps = Steps::new(std::io::stdout());
    let env = |name: &str| std::env::var(name).ok();
    check(&mut steps, &url, &config, demo.is_some(), env).await;
    steps.summary();
    if let Some(demo) = demo {
        demo.stop().await;
    }
    Ok(if steps.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The output: one line per step, written as soon as the step is done.
struct Steps<W: Write> {
    out: W,
    failed: usize,
    secrets: Vec<Secret>,
}

impl<W: Write> Steps<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            failed: 0,
            secrets: Vec::new(),
        }
    }

    fn line(&mut self, mark: &str, text: impl Display) {
        // BigID may echo a credential in its messages: cut any of ours out.
        let mut text = text.to_string();
        for secret in &self.secrets {
            if secret.expose().len() >= 4 {
                text = text.replace(secret.expose(), crate::secret::REDACTED);
            }
        }
        // A closed stdout (`check | head`) is no reason to fail the check.
        let _ = writeln!(self.out, "{mark} {text}");
        let _ = self.out.flush();
    }

    fn pass(&mut self, text: impl Display) {
        self.line("✓", text);
    }

    fn fail(&mut self, text: impl Display) {
        self.failed += 1;
        self.line("✗", text);
    }

    fn skip(&mut self, text: impl Display) {
        self.line("–", text);
    }

    fn note(&mut self, text: impl Display) {
        self.line(" ", format_args!("· {text}"));
    }

    fn summary(&mut self) {
        match self.failed {
            0 => self.line("✓", "all configured checks passed"),
            1 => self.line("✗", "1 check failed"),
            n => self.line("✗", format_args!("{n} checks failed")),
        }
    }
}

async fn check<W: Write>(
    steps: &mut Steps<W>,
    url: &Url,
    config: &Config,
    demo: bool,
    env: impl Fn(&str) -> Option<String>,
) {
    let defaults = &config.defaults;
    // The demo's credentials are public (and "demo" would redact ordinary words).
    let public = [DEMO_PASSWORD, DEMO_USER_TOKEN];
    steps.secrets = [&defaults.password, &defaults.user_token]
        .into_iter()
        .flatten()
        .filter(|s| !(demo && public.contains(&s.expose())))
        .cloned()
        .collect();
    let client = match Client::new(url, &config.bigid) {
        Ok(client) => client,
        Err(e) => return steps.fail(format_args!("configuration: {e}")),
    };
    describe_config(steps, url, config, demo, &client);

    let reachable = match bigid::proxy_for(url, &env) {
        Some(proxy) => {
            steps.note(format_args!(
                "{} is set: BigID is reached through the proxy {}, which resolves and connects",
                proxy.var, proxy.address
            ));
            true
        }
        None => resolve_and_connect(steps, url, client.connect_timeout()).await,
    };
    if !reachable {
        steps.skip("TLS and credentials: skipped (BigID is not reachable)");
        return;
    }
    if !tls_and_http(steps, url, &client, config).await {
        steps.skip("credentials: skipped (BigID does not answer HTTP)");
        return;
    }
    sessions(steps, &client, defaults).await;
    refresh(steps, &client, defaults).await;
}

fn describe_config<W: Write>(
    steps: &mut Steps<W>,
    url: &Url,
    config: &Config,
    demo: bool,
    client: &Client,
) {
    let bigid = &config.bigid;
    let ca = match &bigid.ca_cert {
        Some(path) => match crate::ca::load_ca_certs(path) {
            Ok(certs) => format!(
                "system roots plus {} certificate{} from {}",
                certs.len(),
                if certs.len() == 1 { "" } else { "s" },
                path.display()
            ),
            Err(e) => e.to_string(),
        },
        None => "system roots".into(),
    };
    steps.pass(format_args!(
        "configuration valid: BigID {url}{}",
        if demo { " (embedded demo BigID)" } else { "" }
    ));
    steps.note(format_args!(
        "timeout {} s per call (connect {} s), refresh method {}, Authorization {}, token cache {}",
        bigid.timeout.as_secs_f64(),
        client.connect_timeout().as_secs_f64(),
        method_name(bigid.refresh_method),
        match bigid.auth_scheme {
            crate::config::AuthScheme::Raw => "raw",
            crate::config::AuthScheme::Bearer => "Bearer",
        },
        if bigid.token_cache { "on" } else { "off" }
    ));
    if url.scheme() == "https" {
        steps.note(format_args!("trusted CAs: {ca}"));
    } else if !bigid::is_loopback(url) {
        steps.note("BIGID_URL is plain http: passwords and tokens cross the network unencrypted");
    }
    let defaults = &config.defaults;
    let set = |yes: bool| if yes { "set" } else { "not set" };
    steps.note(format_args!(
        "credentials: BIGID_USERNAME {}, BIGID_PASSWORD {}, BIGID_USER_TOKEN {}",
        match &defaults.username {
            Some(user) => format!("`{user}`"),
            None => "not set".into(),
        },
        set(defaults.password.is_some()),
        set(defaults.user_token.is_some()),
    ));
}

/// DNS, then a TCP connection to the first address that takes one.
async fn resolve_and_connect<W: Write>(
    steps: &mut Steps<W>,
    url: &Url,
    connect_timeout: Duration,
) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        steps.fail(format_args!("{url} names no host"));
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((bare, port)),
    )
    .await;
    let addresses: Vec<SocketAddr> = match lookup {
        Ok(Ok(found)) => found.collect(),
        Ok(Err(e)) => {
            steps.fail(format_args!("{host} does not resolve: {e}"));
            return false;
        }
        Err(_) => {
            steps.fail(format_args!(
                "{host} does not resolve: no answer within 10 s"
            ));
            return false;
        }
    };
    if addresses.is_empty() {
        steps.fail(format_args!("{host} resolves to no address"));
        return false;
    }
    if url
        .host()
        .is_some_and(|h| matches!(h, url::Host::Domain(_)))
    {
        let shown: Vec<String> = addresses
            .iter()
            .take(4)
            .map(|a| a.ip().to_string())
            .collect();
        let more = addresses.len().saturating_sub(4);
        steps.pass(format_args!(
            "{host} resolves to {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ));
    }
    let mut problems = Vec::new();
    for address in &addresses {
        let started = Instant::now();
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(address)).await {
            Ok(Ok(_)) => {
                steps.pass(format_args!(
                    "connects to {address} in {} ms",
                    started.elapsed().as_millis()
                ));
                return true;
            }
            Ok(Err(e)) => problems.push(format!("{address}: {e}")),
            Err(_) => problems.push(format!(
                "{address}: no connection within {} s",
                connect_timeout.as_secs_f64()
            )),
        }
    }
    steps.fail(format_args!(
        "cannot connect to {host} port {port} ({}); check the host, the port and any firewall",
        problems.join("; ")
    ));
    false
}

/// TLS (for https) and an HTTP answer, through the very client the tools use.
async fn tls_and_http<W: Write>(
    steps: &mut Steps<W>,
    url: &Url,
    client: &Client,
    config: &Config,
) -> bool {
    match client.probe().await {
        Ok(status) => {
            if url.scheme() == "https" {
                steps.pass(format_args!(
                    "TLS verifies: the certificate of {} is trusted{}",
                    url.host_str().unwrap_or_default(),
                    match &config.bigid.ca_cert {
                        Some(_) => " (system roots plus BIGID_CA_CERT)",
                        None => "",
                    }
                ));
            } else {
                steps.skip("TLS: not used (BIGID_URL is http)");
            }
            steps.pass(format_args!("BigID answers HTTP (GET {url} → {status})"));
            true
        }
        Err(e) => {
            match e.root() {
                bigid::Error::Tls { problem, .. } => steps.fail(format_args!(
                    "TLS does not verify: {}{}",
                    e,
                    match (problem, &config.bigid.ca_cert) {
                        (bigid::TlsProblem::UnknownCa, Some(path)) => format!(
                            " (BIGID_CA_CERT is {}: it does not hold the CA that signed \
                             BigID's certificate)",
                            path.display()
                        ),
                        _ => String::new(),
                    }
                )),
                _ => steps.fail(format_args!("BigID does not answer: {e}")),
            }
            false
        }
    }
}

async fn sessions<W: Write>(steps: &mut Steps<W>, client: &Client, defaults: &Defaults) {
    let (Some(username), Some(password)) = (&defaults.username, &defaults.password) else {
        steps.skip("/sessions: skipped (set BIGID_USERNAME and BIGID_PASSWORD to check a login)");
        return;
    };
    match client.create_session(username, password).await {
        Ok(session) => {
            steps.pass(format_args!(
                "/sessions accepts BIGID_USERNAME `{username}` and BIGID_PASSWORD: session token {}, {} permissions",
                expiry(&session.auth_token),
                session.permissions.len()
            ));
        }
        Err(e) => steps.fail(format_args!("/sessions: {e}")),
    }
}

async fn refresh<W: Write>(steps: &mut Steps<W>, client: &Client, defaults: &Defaults) {
    let Some(user_token) = &defaults.user_token else {
        steps.skip(
            "/refresh-access-token: skipped (set BIGID_USER_TOKEN to check a token exchange)",
        );
        return;
    };
    let configured = client.refresh_method();
    match client.refresh_access_token(user_token).await {
        Ok(answer) => {
            steps.pass(format_args!(
                "/refresh-access-token accepts BIGID_USER_TOKEN: system token {}; user token {}",
                expiry(&answer.system_token),
                expiry(user_token)
            ));
            let used = client.refresh_method();
            if used != configured {
                steps.note(format_args!(
                    "BigID answered 405 to {} and took {}: set BIGID_REFRESH_METHOD={} to save \
                     a round trip per refresh",
                    method_name(configured),
                    method_name(used),
                    used.as_str()
                ));
            }
        }
        Err(e) => {
            let is_access_token = jwt::decode_unverified(user_token.expose())
                .and_then(|c| c.token_type)
                .is_some_and(|t| t == "access-token");
            let error = match e {
                bigid::Error::Rejected { .. } if is_access_token => ToolError::AccessTokenGiven(e),
                other => ToolError::BigId(other),
            };
            // An expired user token explains a rejection; say so when readable.
            let expires = jwt::decode_unverified(user_token.expose()).and_then(|c| c.expires());
            let note = match expires {
                Some(_) => format!(" (the user token {})", expiry(user_token)),
                None => String::new(),
            };
            steps.fail(format_args!("/refresh-access-token: {error}{note}"));
        }
    }
}

fn method_name(method: RefreshMethod) -> &'static str {
    match method {
        RefreshMethod::Get => "GET",
        RefreshMethod::Post => "POST",
    }
}

/// "expires 2026-01-01T00:00:00Z (in 29 min)", from the unverified JWT `exp`.
fn expiry(token: &Secret) -> String {
    let Some(at) = jwt::decode_unverified(token.expose()).and_then(|c| c.expires()) else {
        return "has no readable expiry".into();
    };
    let shown = humantime::format_rfc3339_seconds(at);
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("expires {shown} (in {})", rough(left)),
        Err(past) => format!("expired {shown} ({} ago)", rough(past.duration())),
    }
}

/// A duration to the minute (or second, when short), for people.
fn rough(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_never_carry_a_configured_secret() {
        let mut out = Vec::new();
        let mut steps = Steps::new(&mut out);
        steps.secrets = vec![Secret::new("hunter2")];
        steps.fail("BigID said: password hunter2 is wrong");
        steps.summary();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "✗ BigID said: password [redacted] is wrong\n✗ 1 check failed\n"
        );
    }

    #[test]
    fn durations_are_rounded_for_people() {
        assert_eq!(rough(Duration::from_secs(59)), "59 s");
        assert_eq!(rough(Duration::from_secs(1799)), "29 min");
        assert_eq!(rough(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(rough(Duration::from_secs(3 * 86_400)), "3 days");
    }
}
