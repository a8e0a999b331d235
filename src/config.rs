//! Command line and environment → one validated [`Config`] the rest of the
//! program reads. Secrets come from the environment only, never from flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum, builder::TypedValueParser as _};
use reqwest::Url;

use crate::{
    oauth::{self, OAuthSettings, settings::SettingsError},
    secret::Secret,
};

/// Demo credentials: public, printed on start-up, accepted only by the demo BigID.
pub const DEMO_USERNAME: &str = "demo";
/// The demo user's password.
pub const DEMO_PASSWORD: &str = "demo";
/// The demo user token.
pub const DEMO_USER_TOKEN: &str = "demo-user-token";

/// Every environment variable that changes what the binary does: the
/// contract's, `RUST_LOG`, and the proxy variables reqwest reads. Tests and
/// the benchmark clear them so a host's settings never leak into a run.
pub const ENVIRONMENT: &[&str] = &[
    "BIGID_URL",
    "BIGID_USERNAME",
    "BIGID_PASSWORD",
    "BIGID_USER_TOKEN",
    "BIGID_CA_CERT",
    "BIGID_TIMEOUT",
    "BIGID_REFRESH_METHOD",
    "BIGID_AUTH_SCHEME",
    "BIGID_TOKEN_CACHE",
    "MCP_TRANSPORT",
    "MCP_BIND",
    "MCP_AUTH_TOKEN",
    "MCP_ALLOWED_ORIGINS",
    "MCP_STATELESS",
    "MCP_MAX_CONNECTIONS",
    "MCP_PUBLIC_URL",
    "MCP_OAUTH_ISSUER",
    "MCP_OAUTH_AUDIENCES",
    "MCP_OAUTH_SCOPES",
    "MCP_OAUTH_ALGORITHMS",
    "LOG_FORMAT",
    "RUST_LOG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The command line, as clap parses it (flags with their `env` fallbacks).
#[derive(Debug, Parser)]
#[command(
    name = "bigid-auth-mcp",
    version,
    about = "MCP server that authenticates AI agents against BigID",
    long_about = "MCP server that authenticates AI agents against BigID.\n\n\
        Secrets are read from the environment only: BIGID_USERNAME, BIGID_PASSWORD, \
        BIGID_USER_TOKEN and MCP_AUTH_TOKEN."
)]
pub struct Cli {
    /// What to do: serve (default), check the configuration, or print a token.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// BigID API base, including /api/v1, e.g. https://tenant.bigid.com/api/v1
    #[arg(global = true, long, env = "BIGID_URL", value_name = "URL")]
    pub bigid_url: Option<String>,

    /// Extra PEM root certificate(s) for a BigID behind a private CA.
    // Parsed as an OsString so that a blank BIGID_CA_CERT (a placeholder left
    // empty in mcp.json) counts as unset instead of failing the parse.
    #[arg(global = true, long, env = "BIGID_CA_CERT", value_name = "PATH",
          value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub ca_cert: Option<PathBuf>,

    /// Whole-request timeout for each call to BigID, in seconds.
    #[arg(
        global = true,
        long,
        env = "BIGID_TIMEOUT",
        value_name = "SECS",
        default_value = "30"
    )]
    pub timeout: f64,

    /// HTTP method for /refresh-access-token (a 405 is retried once with the other).
    #[arg(global = true, long, env = "BIGID_REFRESH_METHOD", value_enum, default_value_t = RefreshMethod::Get)]
    pub refresh_method: RefreshMethod,

    /// How the token is put in the Authorization header sent to BigID.
    #[arg(global = true, long, env = "BIGID_AUTH_SCHEME", value_enum, default_value_t = AuthScheme::Raw)]
    pub auth_scheme: AuthScheme,

    /// MCP transport: stdio, or http (Streamable HTTP at /mcp plus legacy SSE at /sse).
    #[arg(global = true, long, env = "MCP_TRANSPORT", value_enum, default_value_t = TransportKind::Stdio)]
    pub transport: TransportKind,

    /// Listen address for --transport http.
    #[arg(
        global = true,
        long,
        env = "MCP_BIND",
        value_name = "ADDR",
        default_value = "127.0.0.1:8000"
    )]
    pub bind: SocketAddr,

    /// An Origin allowed to call the HTTP endpoints (repeatable); loopback origins always are.
    #[arg(
        global = true,
        long = "allowed-origin",
        env = "MCP_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve /mcp without server-side sessions (for several instances behind a load balancer).
    #[arg(global = true, long, env = "MCP_STATELESS")]
    pub stateless: bool,

    /// The server's base URL as clients reach it, e.g. https://mcp.example.com (the OAuth resource is this URL + /mcp).
    #[arg(global = true, long, env = "MCP_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Enable OAuth: the authorization server's issuer, exactly as in its metadata.
    #[arg(global = true, long, env = "MCP_OAUTH_ISSUER", value_name = "URL")]
    pub oauth_issuer: Option<String>,

    /// An `aud` value accepted in access tokens (repeatable); default: the public URL + /mcp.
    #[arg(
        global = true,
        long = "oauth-audience",
        env = "MCP_OAUTH_AUDIENCES",
        value_name = "AUD",
        value_delimiter = ','
    )]
    pub oauth_audiences: Vec<String>,

    /// A scope every access token must carry (repeatable).
    #[arg(
        global = true,
        long = "oauth-scope",
        env = "MCP_OAUTH_SCOPES",
        value_name = "SCOPE",
        value_delimiter = ','
    )]
    pub oauth_scopes: Vec<String>,

    /// An accepted JWS algorithm (repeatable); default RS256, PS256, ES256.
    #[arg(
        global = true,
        long = "oauth-algorithm",
        env = "MCP_OAUTH_ALGORITHMS",
        value_name = "ALG",
        value_delimiter = ','
    )]
    pub oauth_algorithms: Vec<String>,

    /// Do not reuse still-valid system tokens.
    #[arg(global = true, long)]
    pub no_token_cache: bool,

    /// BIGID_TOKEN_CACHE=false turns the cache off, like --no-token-cache.
    #[arg(
        global = true,
        long = "token-cache",
        env = "BIGID_TOKEN_CACHE",
        hide = true,
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub token_cache: bool,

    /// Log line format on stderr (level from RUST_LOG, default info).
    #[arg(global = true, long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Start an embedded fake BigID on loopback and use it (credentials demo/demo).
    #[arg(global = true, long)]
    pub demo: bool,
}

/// Subcommands besides serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Verify the configuration against BigID step by step; exit 0 only when all works.
    Check,
    /// Print a system token for BIGID_USER_TOKEN, for `curl -H "Authorization: $(bigid-auth-mcp token)"`.
    ///
    /// Exit 0 with the token on stdout, 1 when BigID refused or could not be
    /// reached, 2 on a configuration error. A still-valid token is reused from
    /// $XDG_RUNTIME_DIR/bigid-auth-mcp/ unless --no-token-cache.
    Token {
        /// Ask BigID for a new system token even when a cached one is still valid.
        #[arg(long)]
        force_refresh: bool,
        /// Print the `refresh_access_token` result object instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// Log in with BIGID_USERNAME and BIGID_PASSWORD and print the session auth_token.
    ///
    /// Exit 0 with the token on stdout, 1 when BigID refused or could not be
    /// reached, 2 on a configuration error.
    Session {
        /// With --json, also list the permission strings (otherwise only their count).
        #[arg(long)]
        include_permissions: bool,
        /// Print the `create_session` result object instead of the bare token.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// True for the credential-helper commands, which print a token and exit.
    pub fn is_credential_helper(self) -> bool {
        matches!(self, Self::Token { .. } | Self::Session { .. })
    }
}

/// HTTP method for `/refresh-access-token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefreshMethod {
    /// What BigID's own clients and documentation use.
    Get,
    /// What the OpenAPI document says.
    Post,
}

impl RefreshMethod {
    /// The other method, for the one retry after a 405.
    pub fn other(self) -> Self {
        match self {
            Self::Get => Self::Post,
            Self::Post => Self::Get,
        }
    }

    /// The value of `BIGID_REFRESH_METHOD` that selects this method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }
}

/// How a token goes into the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthScheme {
    /// `Authorization: <token>`, what BigID deployments accept.
    Raw,
    /// `Authorization: Bearer <token>`, what the OpenAPI document says.
    Bearer,
}

/// Which MCP transport to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// JSON-RPC lines on stdin/stdout.
    Stdio,
    /// Streamable HTTP and legacy HTTP+SSE on one port.
    Http,
}

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve, or check the configuration.
    pub command: Option<Command>,
    /// How to reach BigID.
    pub bigid: BigIdConfig,
    /// Credentials the tools fall back to when their arguments omit them.
    pub defaults: Defaults,
    /// Which transport to serve and how.
    pub transport: Transport,
    /// Log line format.
    pub log_format: LogFormat,
    /// Whether the embedded demo BigID is to be started and used.
    pub demo: bool,
}

/// Everything the BigID client needs.
#[derive(Debug, Clone)]
pub struct BigIdConfig {
    /// API base including `/api/v1`, without a trailing slash; `None` until the
    /// demo BigID has started.
    pub url: Option<Url>,
    /// Extra PEM roots.
    pub ca_cert: Option<PathBuf>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Method for `/refresh-access-token`.
    pub refresh_method: RefreshMethod,
    /// Authorization header scheme.
    pub auth_scheme: AuthScheme,
    /// Whether still-valid system tokens are reused.
    pub token_cache: bool,
}

/// Credentials from the environment (or the demo's), used when a tool call omits them.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// `BIGID_USERNAME`.
    pub username: Option<String>,
    /// `BIGID_PASSWORD`.
    pub password: Option<Secret>,
    /// `BIGID_USER_TOKEN`.
    pub user_token: Option<Secret>,
}

/// The selected transport with its settings.
#[derive(Debug, Clone)]
pub enum Transport {
    /// stdin/stdout.
    Stdio,
    /// HTTP on a socket.
    Http(HttpConfig),
}

/// Settings of the HTTP transport.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address.
    pub bind: SocketAddr,
    /// `MCP_AUTH_TOKEN`: the bearer token clients must present, if any.
    pub auth_token: Option<Secret>,
    /// Origins allowed besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Serve `/mcp` without server-side sessions.
    pub stateless: bool,
    /// OAuth resource-server settings, when `--oauth-issuer` is set.
    pub oauth: Option<OAuthSettings>,
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No BigID URL and no `--demo`.
    #[error(
        "no BigID URL: set BIGID_URL (or --bigid-url) to your API base, e.g. \
         https://tenant.bigid.com/api/v1, or run with --demo to try the embedded fake BigID"
    )]
    MissingUrl,
    /// The URL does not parse or is not http(s).
    #[error("BIGID_URL `{url}` is not a valid http(s) URL: {reason}")]
    BadUrl {
        /// The URL with any userinfo removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The timeout is not a positive number of seconds.
    #[error("BIGID_TIMEOUT must be a number of seconds between 0.1 and 3600, not {0}")]
    BadTimeout(String),
    /// A non-loopback bind without a bearer token or OAuth.
    #[error(
        "refusing to listen on {0} without MCP_AUTH_TOKEN or OAuth: anyone who can reach it \
         could obtain BigID tokens. Set MCP_AUTH_TOKEN, or --oauth-issuer with --public-url, \
         or bind a loopback address such as 127.0.0.1:8000"
    )]
    UnprotectedBind(SocketAddr),
    /// `MCP_AUTH_TOKEN` is too short to resist guessing.
    #[error(
        "MCP_AUTH_TOKEN is shorter than {MIN_AUTH_TOKEN_CHARS} characters, which can be guessed; \
         use a long random value, e.g. the output of `openssl rand -hex 32`"
    )]
    ShortAuthToken,
    /// The OAuth settings are incomplete or wrong.
    #[error(transparent)]
    OAuth(#[from] SettingsError),
    /// An allowed origin that is not `scheme://host[:port]`.
    #[error("allowed origin `{0}` is not of the form scheme://host[:port]")]
    BadOrigin(String),
    /// The `--ca-cert` file is missing, unreadable or holds no PEM certificate.
    #[error("{0}")]
    BadCaCert(String),
    /// A value that looks like a placeholder copied from an example configuration.
    #[error(
        "{name} holds {kind}, not a real value: replace it, or leave it empty if it is optional"
    )]
    Placeholder {
        /// The variable or flag holding it (never its value: it may be a secret).
        name: &'static str,
        /// What kind of placeholder it looks like.
        kind: &'static str,
    },
}

impl Config {
    /// Validates the parsed command line, reading secrets through `env`.
    pub fn from_cli(cli: Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if let Some((name, kind)) = crate::host_env::find_placeholder(&cli, &env) {
            return Err(ConfigError::Placeholder { name, kind });
        }
        // An empty variable (an optional field left blank in a host's
        // configuration) counts as unset.
        let var = |name: &str| env(name).filter(|v| !crate::host_env::means_unset(v));

        let url = match (&cli.bigid_url, cli.demo) {
            (_, true) => None,
            (Some(raw), false) => Some(parse_bigid_url(raw)?),
            (None, false) => return Err(ConfigError::MissingUrl),
        };
        if !(cli.timeout.is_finite() && (0.1..=3600.0).contains(&cli.timeout)) {
            return Err(ConfigError::BadTimeout(cli.timeout.to_string()));
        }
        // Read now, so that a wrong path stops the server at start-up rather
        // than surfacing as a TLS failure on the first tool call.
        let ca_cert = cli.ca_cert.filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &ca_cert {
            crate::ca::load_ca_certs(path).map_err(|e| ConfigError::BadCaCert(e.to_string()))?;
        }

        let mut defaults = Defaults {
            username: var("BIGID_USERNAME"),
            password: var("BIGID_PASSWORD").map(Secret::new),
            user_token: var("BIGID_USER_TOKEN").map(Secret::new),
        };
        if cli.demo {
            defaults
                .username
                .get_or_insert_with(|| DEMO_USERNAME.into());
            defaults
                .password
                .get_or_insert_with(|| Secret::new(DEMO_PASSWORD));
            defaults
                .user_token
                .get_or_insert_with(|| Secret::new(DEMO_USER_TOKEN));
        }

        let transport = match cli.transport {
            TransportKind::Stdio => Transport::Stdio,
            TransportKind::Http => {
                let auth_token = var("MCP_AUTH_TOKEN").map(Secret::new);
                if let Some(token) = &auth_token
                    && token.expose().chars().count() < MIN_AUTH_TOKEN_CHARS
                {
                    return Err(ConfigError::ShortAuthToken);
                }
                let public_url = cli
                    .public_url
                    .as_deref()
                    .filter(|u| !u.trim().is_empty())
                    .map(oauth::settings::public_url)
                    .transpose()?;
                let oauth = cli
                    .oauth_issuer
                    .as_deref()
                    .filter(|i| !i.trim().is_empty())
                    .map(|issuer| {
                        OAuthSettings::new(
                            issuer,
                            public_url.as_deref(),
                            &cli.oauth_audiences,
                            &cli.oauth_scopes,
                            &cli.oauth_algorithms,
                        )
                    })
                    .transpose()?;
                if auth_token.is_none() && oauth.is_none() && !cli.bind.ip().is_loopback() {
                    return Err(ConfigError::UnprotectedBind(cli.bind));
                }
                let allowed_origins = cli
                    .allowed_origins
                    .iter()
                    .map(|o| o.trim())
                    .filter(|o| !o.is_empty())
                    .map(normalize_origin)
                    .collect::<Result<_, _>>()?;
                Transport::Http(HttpConfig {
                    bind: cli.bind,
                    auth_token,
                    allowed_origins,
                    stateless: cli.stateless,
                    oauth,
                })
            }
        };

        Ok(Config {
            command: cli.command,
            bigid: BigIdConfig {
                url,
                ca_cert,
                timeout: Duration::from_secs_f64(cli.timeout),
                refresh_method: cli.refresh_method,
                auth_scheme: cli.auth_scheme,
                token_cache: cli.token_cache && !cli.no_token_cache,
            },
            defaults,
            transport,
            log_format: cli.log_format,
            demo: cli.demo,
        })
    }
}

/// The shortest `MCP_AUTH_TOKEN` accepted: the bearer check is the only
/// thing between the network and BigID tokens.
pub const MIN_AUTH_TOKEN_CHARS: usize = 16;

/// Parses and normalises the BigID API base. Userinfo is refused: it would
/// put a credential in every error message that names the URL.
pub fn parse_bigid_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: strip_userinfo(raw),
        reason: reason.into(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "it must not carry credentials; use BIGID_USERNAME and BIGID_PASSWORD",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// The URL as it may be shown: without userinfo, query and fragment
/// (places a credential could hide). When the URL parses, they are removed
/// from the parsed URL, whatever odd form the input took (`https:user:pw@h`,
/// `https:\\user:pw@h`); when it does not, everything up to the last `@`
/// and from the first `?` or `#` is replaced by markers.
fn strip_userinfo(raw: &str) -> String {
    let raw = raw.trim();
    if let Ok(mut url) = Url::parse(raw) {
        let credentials = !url.username().is_empty() || url.password().is_some();
        let query = url.query().is_some() || url.fragment().is_some();
        // Fails only for URLs that cannot have userinfo, which then have none.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        let mut shown = url.to_string();
        if credentials {
            shown = shown.replacen("://", "://[credentials]@", 1);
        }
        if query {
            shown.push_str("[query]");
        }
        return shown;
    }
    let (credentials, rest) = match raw.rfind('@') {
        Some(at) => ("[credentials]@", &raw[at + 1..]),
        None => ("", raw),
    };
    let (rest, query) = match rest.find(['?', '#']) {
        Some(cut) => (&rest[..cut], "[query]"),
        None => (rest, ""),
    };
    format!("{credentials}{rest}{query}")
}

/// `HTTPS://App.Example.com:443/` → `https://app.example.com:443`.
fn normalize_origin(origin: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::BadOrigin(origin.to_owned());
    let url = Url::parse(origin).map_err(|_| bad())?;
    if url.host_str().is_none() || url.path() != "/" && !url.path().is_empty() {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cli =
            Cli::try_parse_from(std::iter::once("bigid-auth-mcp").chain(args.iter().copied()))
                .expect("parses");
        Config::from_cli(cli, |k| env.get(k).cloned())
    }

    #[test]
    fn flags_may_follow_the_check_subcommand() {
        let cfg = config(&["check", "--demo", "--timeout", "5"], &[]).unwrap();
        assert_eq!(cfg.command, Some(Command::Check));
        assert!(cfg.demo);
        assert_eq!(cfg.bigid.timeout, Duration::from_secs(5));
    }

    #[test]
    fn requires_a_url_unless_demo() {
        assert_eq!(config(&[], &[]).unwrap_err(), ConfigError::MissingUrl);
        let demo = config(&["--demo"], &[]).unwrap();
        assert!(demo.bigid.url.is_none());
        assert_eq!(demo.defaults.username.as_deref(), Some(DEMO_USERNAME));
        assert_eq!(demo.defaults.user_token.unwrap().expose(), DEMO_USER_TOKEN);
    }

    #[test]
    fn demo_defaults_do_not_override_the_environment() {
        let cfg = config(&["--demo"], &[("BIGID_USERNAME", "alice")]).unwrap();
        assert_eq!(cfg.defaults.username.as_deref(), Some("alice"));
        assert_eq!(cfg.defaults.password.unwrap().expose(), DEMO_PASSWORD);
    }

    #[test]
    fn trailing_slash_is_trimmed_and_defaults_apply() {
        let cfg = config(&["--bigid-url", "https://t.bigid.com/api/v1/"], &[]).unwrap();
        assert_eq!(
            cfg.bigid.url.unwrap().as_str(),
            "https://t.bigid.com/api/v1"
        );
        assert_eq!(cfg.bigid.timeout, Duration::from_secs(30));
        assert_eq!(cfg.bigid.refresh_method, RefreshMethod::Get);
        assert_eq!(cfg.bigid.auth_scheme, AuthScheme::Raw);
        assert!(cfg.bigid.token_cache);
        assert!(matches!(cfg.transport, Transport::Stdio));
    }

    #[test]
    fn rejects_urls_with_credentials_without_echoing_them() {
        let err = config(
            &["--bigid-url", "https://bob:s3cret@t.bigid.com/api/v1"],
            &[],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("must not carry credentials"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn rejected_urls_are_shown_without_their_query() {
        let err = config(
            &["--bigid-url", "https://t.bigid.com/api/v1?token=s3cret"],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("https://t.bigid.com/api/v1[query]"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn rejects_non_http_urls_and_bad_timeouts() {
        assert!(matches!(
            config(&["--bigid-url", "ftp://x/api/v1"], &[]),
            Err(ConfigError::BadUrl { .. })
        ));
        assert!(matches!(
            config(&["--bigid-url", "not a url"], &[]),
            Err(ConfigError::BadUrl { .. })
        ));
        for t in ["0", "-1", "NaN", "100000"] {
            assert!(matches!(
                config(&[&format!("--timeout={t}"), "--demo"], &[]),
                Err(ConfigError::BadTimeout(_))
            ));
        }
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let cfg = config(&["--demo"], &[("BIGID_PASSWORD", " ")]).unwrap();
        assert_eq!(cfg.defaults.password.unwrap().expose(), DEMO_PASSWORD);
    }

    #[test]
    fn token_cache_can_be_turned_off_by_flag_or_env() {
        assert!(
            !config(&["--demo", "--no-token-cache"], &[])
                .unwrap()
                .bigid
                .token_cache
        );
        let cli = Cli::try_parse_from(["x", "--demo", "--token-cache", "false"]).unwrap();
        assert!(!Config::from_cli(cli, |_| None).unwrap().bigid.token_cache);
    }

    #[test]
    fn refuses_public_bind_without_auth_token() {
        let err = config(
            &["--demo", "--transport", "http", "--bind", "0.0.0.0:8000"],
            &[],
        );
        assert!(matches!(err, Err(ConfigError::UnprotectedBind(_))));
        let ok = config(
            &["--demo", "--transport", "http", "--bind", "0.0.0.0:8000"],
            &[("MCP_AUTH_TOKEN", "t0k-long-enough-16")],
        )
        .unwrap();
        let Transport::Http(http) = ok.transport else {
            panic!("http transport expected")
        };
        assert_eq!(http.auth_token.unwrap().expose(), "t0k-long-enough-16");
        assert!(!format!("{:?}", ok.defaults).contains("demo-user-token"));
    }

    #[test]
    fn oauth_needs_public_url_and_protects_a_public_bind() {
        let http = ["--demo", "--transport", "http", "--bind", "0.0.0.0:8000"];
        let err = config(
            &[&http[..], &["--oauth-issuer", "https://idp.example.com"]].concat(),
            &[],
        );
        assert_eq!(
            err.unwrap_err(),
            ConfigError::OAuth(SettingsError::MissingPublicUrl)
        );
        let cfg = config(&http, &[]);
        assert!(matches!(cfg, Err(ConfigError::UnprotectedBind(_))));
        let cli = Cli::try_parse_from(
            ["x"]
                .iter()
                .chain(http.iter())
                .copied()
                .chain(["--oauth-scope", "mcp:tools"]),
        )
        .unwrap();
        let env = |k: &str| match k {
            "MCP_PUBLIC_URL" => Some("https://mcp.example.com/".to_owned()),
            "MCP_OAUTH_ISSUER" => Some("https://idp.example.com".to_owned()),
            _ => None,
        };
        // clap reads env itself; this checks the flag path and the validation.
        let cli = Cli {
            public_url: env("MCP_PUBLIC_URL"),
            oauth_issuer: env("MCP_OAUTH_ISSUER"),
            ..cli
        };
        let Transport::Http(http) = Config::from_cli(cli, |_| None).unwrap().transport else {
            panic!("http transport expected")
        };
        let oauth = http.oauth.unwrap();
        assert_eq!(oauth.resource, "https://mcp.example.com/mcp");
        assert_eq!(oauth.scopes, ["mcp:tools"]);
    }

    #[test]
    fn normalizes_allowed_origins() {
        let cfg = config(
            &[
                "--demo",
                "--transport",
                "http",
                "--allowed-origin",
                "HTTPS://App.Example.com/",
            ],
            &[],
        )
        .unwrap();
        let Transport::Http(http) = cfg.transport else {
            panic!("http transport expected")
        };
        assert_eq!(http.allowed_origins, ["https://app.example.com"]);
        assert!(matches!(
            config(
                &[
                    "--demo",
                    "--transport",
                    "http",
                    "--allowed-origin",
                    "https://a.com/path"
                ],
                &[]
            ),
            Err(ConfigError::BadOrigin(_))
        ));
    }

    #[test]
    fn ca_cert_problems_stop_start_up_with_the_file_named() {
        let dir = std::env::temp_dir().join(format!("bigid-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let err = config(&["--demo", "--ca-cert", missing.to_str().unwrap()], &[]).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::BadCaCert(_)));
        assert!(
            message.contains("cannot read BIGID_CA_CERT file"),
            "{message}"
        );
        assert!(message.contains("missing.pem"), "{message}");

        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
        let message = config(&["--demo", "--ca-cert", not_pem.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(message.contains("holds no PEM certificate"), "{message}");

        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let message = config(&["--demo", "--ca-cert", broken.to_str().unwrap()], &[])
            .unwrap_err()
            .to_string();
        assert!(message.contains("broken.pem"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_blank_ca_cert_counts_as_unset() {
        let cfg = config(&["--demo", "--ca-cert="], &[]).unwrap();
        assert!(cfg.bigid.ca_cert.is_none());
    }
}
