//! Finding the authorization server's metadata (RFC 8414, then OpenID
//! Connect Discovery) and, in it, where its signing keys are.

use reqwest::Url;
use serde::Deserialize;

use super::{
    fetch::{self, FetchError},
    settings::{is_loopback, split_origin},
};

/// The parts of the authorization server's metadata this server uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the signing keys are published.
    pub jwks_uri: Option<String>,
}

/// Why the metadata could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No candidate URL gave a metadata document.
    #[error(
        "cannot read the metadata of the OAuth issuer {issuer} (tried {tried}); check \
         --oauth-issuer and that the authorization server is reachable from here"
    )]
    Unreachable {
        /// The configured issuer.
        issuer: String,
        /// Each URL tried and what it gave.
        tried: String,
    },
    /// The document names another issuer (a typo, or a trailing slash).
    #[error(
        "the metadata at {url} names the issuer `{found}`, not the configured `{issuer}`; set \
         --oauth-issuer to exactly `{found}` if that is the authorization server you mean"
    )]
    IssuerMismatch {
        /// The configured issuer.
        issuer: String,
        /// The document's `issuer`.
        found: String,
        /// The document's URL.
        url: String,
    },
    /// The document has no `jwks_uri`.
    #[error(
        "the metadata of {issuer} at {url} has no `jwks_uri`: this server verifies JWT access \
         tokens with the issuer's published keys, and this authorization server publishes none"
    )]
    NoJwksUri {
        /// The configured issuer.
        issuer: String,
        /// The document's URL.
        url: String,
    },
    /// `jwks_uri` is not an https URL (or http on loopback).
    #[error("the `jwks_uri` of {issuer} (`{jwks_uri}`) is not an https URL")]
    BadJwksUri {
        /// The configured issuer.
        issuer: String,
        /// The value found.
        jwks_uri: String,
    },
}

/// Where metadata is looked for, in order: RFC 8414 (path inserted after
/// the host), OpenID Connect (path appended), OpenID Connect path-inserted
/// (the variant the MCP specification also lists).
pub fn candidate_urls(issuer: &str) -> Vec<String> {
    let (origin, path) = split_origin(issuer);
    let path = path.trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}{path}/.well-known/openid-configuration"),
    ];
    if !path.is_empty() {
        urls.push(format!("{origin}/.well-known/openid-configuration{path}"));
    }
    urls
}

/// Fetches the metadata of `issuer` and returns its checked `jwks_uri`.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Url, DiscoveryError> {
    let mut tried = Vec::new();
    for candidate in candidate_urls(issuer) {
        let Ok(url) = Url::parse(&candidate) else {
            continue;
        };
        let metadata = match fetch::json::<Metadata>(http, &url).await {
            Ok(metadata) => metadata,
            Err(e) => {
                let stop = matches!(e, FetchError::Unreachable(_));
                tried.push(format!("{candidate}: {e}"));
                // The host itself is down: the other paths would fail alike.
                if stop {
                    break;
                }
                continue;
            }
        };
        if metadata.issuer != issuer {
            return Err(DiscoveryError::IssuerMismatch {
                issuer: issuer.to_owned(),
                found: metadata.issuer,
                url: candidate,
            });
        }
        let Some(jwks_uri) = metadata.jwks_uri else {
            return Err(DiscoveryError::NoJwksUri {
                issuer: issuer.to_owned(),
                url: candidate,
            });
        };
        let bad = || DiscoveryError::BadJwksUri {
            issuer: issuer.to_owned(),
            jwks_uri: jwks_uri.clone(),
        };
        let parsed = Url::parse(&jwks_uri).map_err(|_| bad())?;
        let secure = parsed.scheme() == "https"
            || parsed.scheme() == "http" && parsed.host().is_some_and(is_loopback);
        if !secure {
            return Err(bad());
        }
        return Ok(parsed);
    }
    Err(DiscoveryError::Unreachable {
        issuer: issuer.to_owned(),
        tried: tried.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_for_rfc8414_then_openid_metadata() {
        assert_eq!(
            candidate_urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            candidate_urls("https://login.example.com/tenant/v2.0"),
            [
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0",
                "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
                "https://login.example.com/.well-known/openid-configuration/tenant/v2.0",
            ]
        );
        assert_eq!(
            candidate_urls("https://sts.example.net/tenant/")[1],
            "https://sts.example.net/tenant/.well-known/openid-configuration"
        );
    }
}
