//! The validated OAuth settings: issuer, canonical resource, accepted
//! audiences, required scopes and algorithms.

use jsonwebtoken::Algorithm;
use reqwest::Url;

/// Algorithms accepted when none are configured.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256];

/// What `--oauth-*` and `--public-url` configure, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthSettings {
    /// The authorization server's issuer, exactly as configured: tokens'
    /// `iss` and the metadata's `issuer` must equal it byte for byte.
    pub issuer: String,
    /// The canonical URL of `/mcp`: `<public-url>/mcp`.
    pub resource: String,
    /// `aud` values accepted (any one suffices).
    pub audiences: Vec<String>,
    /// Scopes every token must carry.
    pub scopes: Vec<String>,
    /// JWS algorithms accepted.
    pub algorithms: Vec<Algorithm>,
}

/// A problem with the OAuth settings.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// `--oauth-issuer` without `--public-url`.
    #[error(
        "--oauth-issuer (MCP_OAUTH_ISSUER) needs --public-url (MCP_PUBLIC_URL): the URL clients \
         reach this server at, e.g. https://mcp.example.com, from which the resource \
         `<public-url>/mcp` and the metadata URLs are built"
    )]
    MissingPublicUrl,
    /// A URL that is not absolute http(s), or that has a query or fragment.
    #[error("{what} `{url}` is not usable: {reason}")]
    BadUrl {
        /// Which setting.
        what: &'static str,
        /// The value, without any query (a credential could hide there).
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An algorithm that is unknown, or one that must never be accepted.
    #[error(
        "--oauth-algorithm `{0}` is not accepted: use asymmetric JWS algorithms such as RS256, \
         PS256, ES256, ES384, RS384, RS512, PS384, PS512 or EdDSA (never `none` or HS*)"
    )]
    BadAlgorithm(String),
    /// A scope with characters RFC 6749 does not allow.
    #[error(
        "--oauth-scope `{0}` is not a valid scope token (printable ASCII, no spaces, quotes or backslashes)"
    )]
    BadScope(String),
}

impl OAuthSettings {
    /// Checks and assembles the settings. `public_url` is already checked by
    /// [`public_url`].
    pub fn new(
        issuer: &str,
        public_url: Option<&str>,
        audiences: &[String],
        scopes: &[String],
        algorithms: &[String],
    ) -> Result<Self, SettingsError> {
        let public_url = public_url.ok_or(SettingsError::MissingPublicUrl)?;
        let issuer = issuer.trim().to_owned();
        check_url("--oauth-issuer", &issuer)?;
        let resource = format!("{public_url}/mcp");
        let nonempty = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let mut audiences = nonempty(audiences);
        if audiences.is_empty() {
            audiences.push(resource.clone());
        }
        let scopes = nonempty(scopes);
        if let Some(bad) = scopes.iter().find(|s| !valid_scope(s)) {
            return Err(SettingsError::BadScope(bad.clone()));
        }
        let algorithms = match nonempty(algorithms).as_slice() {
            [] => DEFAULT_ALGORITHMS.to_vec(),
            names => names
                .iter()
                .map(|n| parse_algorithm(n))
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            issuer,
            resource,
            audiences,
            scopes,
            algorithms,
        })
    }

    /// The absolute URL of the path-inserted metadata document (RFC 9728 §3.1).
    pub fn metadata_url(&self) -> String {
        metadata_url(&self.resource)
    }
}

/// Checks `--public-url` and returns it without a trailing slash: the
/// resource is `<public-url>/mcp`, and `https://h/` must not become `https://h//mcp`.
pub fn public_url(raw: &str) -> Result<String, SettingsError> {
    let trimmed = raw.trim().trim_end_matches('/').to_owned();
    check_url("--public-url", &trimmed)?;
    Ok(trimmed)
}

/// `https://h/p/mcp` → `https://h/.well-known/oauth-protected-resource/p/mcp`.
pub fn metadata_url(resource: &str) -> String {
    let (origin, path) = split_origin(resource);
    format!("{origin}/.well-known/oauth-protected-resource{path}")
}

/// `https://h:1/p/q` → (`https://h:1`, `/p/q`), on the string as given.
pub fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => url.split_at(after_scheme + slash),
        None => (url, ""),
    }
}

fn check_url(what: &'static str, raw: &str) -> Result<(), SettingsError> {
    let bad = |reason| SettingsError::BadUrl {
        what,
        url: raw.split(['?', '#']).next().unwrap_or("").to_owned(),
        reason,
    };
    let url = Url::parse(raw).map_err(|_| bad("it is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be https (http only for loopback)"));
    }
    if url.scheme() == "http" && !url.host().is_some_and(is_loopback) {
        return Err(bad("OAuth needs https, except on loopback addresses"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    Ok(())
}

/// Whether `host` names this machine.
pub fn is_loopback(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// RFC 6749 §3.3 scope-token, minus what would break a quoted challenge.
fn valid_scope(scope: &str) -> bool {
    scope
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn parse_algorithm(name: &str) -> Result<Algorithm, SettingsError> {
    let bad = || SettingsError::BadAlgorithm(name.to_owned());
    let alg: Algorithm = name
        .to_ascii_uppercase()
        .replace("EDDSA", "EdDSA")
        .parse()
        .map_err(|_| bad())?;
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(bad()),
        alg => Ok(alg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_and_metadata_url_keep_the_public_url_as_given() {
        let base = public_url("https://MCP.example.com/").unwrap();
        let s = OAuthSettings::new("https://idp.example.com", Some(&base), &[], &[], &[]).unwrap();
        assert_eq!(s.resource, "https://MCP.example.com/mcp");
        assert_eq!(s.audiences, ["https://MCP.example.com/mcp"]);
        assert_eq!(
            s.metadata_url(),
            "https://MCP.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://h:8443/bigid/mcp"),
            "https://h:8443/.well-known/oauth-protected-resource/bigid/mcp"
        );
        assert_eq!(s.algorithms, DEFAULT_ALGORITHMS);
    }

    #[test]
    fn issuer_needs_public_url_and_https() {
        assert_eq!(
            OAuthSettings::new("https://idp", None, &[], &[], &[]),
            Err(SettingsError::MissingPublicUrl)
        );
        assert!(
            OAuthSettings::new("http://idp.example.com", Some("https://x"), &[], &[], &[]).is_err()
        );
        assert!(
            OAuthSettings::new("http://127.0.0.1:9/", Some("https://x"), &[], &[], &[]).is_ok()
        );
        let err = public_url("https://x/?token=s3cret")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn never_accepts_none_or_hmac_algorithms() {
        for bad in ["none", "HS256", "hs512", "RS1", ""] {
            assert!(parse_algorithm(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_algorithm("es256"), Ok(Algorithm::ES256));
        assert_eq!(parse_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
    }

    #[test]
    fn scopes_with_quotes_or_spaces_are_refused() {
        assert!(valid_scope("mcp:tools"));
        assert!(!valid_scope("a b"));
        assert!(!valid_scope("a\"b"));
    }
}
