//! Verifying one JWT access token: algorithm allow-list, signature with the
//! issuer's published key, `iss`, `aud`, `exp`, `nbf`, then who it names and
//! which scopes it carries.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use jsonwebtoken::{Validation, errors::ErrorKind};
use serde_json::Value;

use super::{
    OAuthSettings, StartError, discovery,
    fetch::{self, FetchError},
    keys::{KeyError, KeyStore, REFETCH_INTERVAL},
};
use crate::principal::Principal;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Verifies access tokens for this server.
pub struct Verifier {
    settings: Arc<OAuthSettings>,
    keys: KeyStore,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Who it was issued to.
    pub principal: Principal,
    /// The scopes it grants.
    pub scopes: BTreeSet<String>,
}

/// Why a token was refused. Messages say what to fix and never quote the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a JWS compact serialization, or its parts do not decode.
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    /// An algorithm off the allow-list (`none` and `HS*` always are).
    #[error("the access token is signed with an algorithm this server does not accept ({0})")]
    Algorithm(String),
    /// No published key matches.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature does not verify.
    #[error("the access token's signature does not verify")]
    Signature,
    /// Past `exp` (plus leeway).
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the access token was issued by another authorization server")]
    Issuer,
    /// `aud` names none of the accepted audiences.
    #[error("the access token is for another resource (its audience is not this server)")]
    Audience,
    /// A claim this server needs is absent or of the wrong type.
    #[error("the access token lacks a valid `{0}` claim")]
    Claim(String),
}

impl TokenError {
    /// True when the fault is the authorization server's availability, not
    /// the token: answered 503, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::Key(KeyError::Unavailable(_)))
    }
}

impl Verifier {
    /// Discovers the issuer's metadata and loads its keys; fails at start-up
    /// rather than on the first request.
    pub async fn start(settings: OAuthSettings) -> Result<Self, StartError> {
        Self::start_with(settings, REFETCH_INTERVAL).await
    }

    /// [`Verifier::start`] with another minimum interval between key refetches.
    pub async fn start_with(
        settings: OAuthSettings,
        refetch_interval: Duration,
    ) -> Result<Self, StartError> {
        let http = fetch::client().map_err(|cause| StartError::Keys {
            issuer: settings.issuer.clone(),
            jwks_uri: String::new(),
            cause,
        })?;
        let jwks_uri = discovery::discover(&http, &settings.issuer).await?;
        let keys = KeyStore::load(http, jwks_uri.clone(), refetch_interval)
            .await
            .map_err(|cause: FetchError| StartError::Keys {
                issuer: settings.issuer.clone(),
                jwks_uri: jwks_uri.to_string(),
                cause,
            })?;
        Ok(Self {
            settings: Arc::new(settings),
            keys,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// Where the keys come from.
    pub fn jwks_uri(&self) -> &str {
        self.keys.jwks_uri().as_str()
    }

    /// Checks `token` completely.
    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // Includes `none`, which jsonwebtoken does not even parse.
            ErrorKind::InvalidAlgorithmName | ErrorKind::Json(_) => {
                TokenError::Algorithm(header_alg(token).unwrap_or_else(|| "unknown".into()))
            }
            _ => TokenError::Malformed,
        })?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY.as_secs();

        let candidates = self.keys.find(header.kid.as_deref()).await?;
        let mut outcome = Err(TokenError::Signature);
        for key in candidates {
            if key.algorithm.is_some_and(|alg| alg != header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<Value>(token, &key.decoding, &validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    outcome = Err(refusal(e.kind()));
                    // A checked signature with a bad claim: no other key changes that.
                    if !matches!(outcome, Err(TokenError::Signature)) {
                        break;
                    }
                }
            }
        }
        let claims = outcome?;
        Ok(Verified {
            principal: principal(&claims)?,
            scopes: scopes(&claims),
        })
    }
}

fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::Claim(claim.clone())
        }
        ErrorKind::InvalidAlgorithm => TokenError::Algorithm("mismatched key".into()),
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => TokenError::Malformed,
        _ => TokenError::Signature,
    }
}

/// The `alg` of a header jsonwebtoken would not parse (`none`, say), for
/// the message; only short alphanumeric values are echoed.
fn header_alg(token: &str) -> Option<String> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let alg = value.get("alg")?.as_str()?;
    (alg.len() <= 16 && alg.chars().all(|c| c.is_ascii_alphanumeric())).then(|| alg.to_owned())
}

/// `sub`, with `client_id` or `azp`; a client-credentials token without
/// `sub` runs as its client.
fn principal(claims: &Value) -> Result<Principal, TokenError> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let client = text("client_id").or_else(|| text("azp"));
    match (text("sub"), client) {
        (Some(sub), client) => Ok(Principal::oauth(sub, client)),
        (None, Some(client)) => Ok(Principal::oauth(client, None)),
        (None, None) => Err(TokenError::Claim("sub".into())),
    }
}

/// Scopes from `scope` (space-separated, RFC 9068), `scp` (Entra, Okta:
/// string or array) and `roles` (Entra app roles).
fn scopes(claims: &Value) -> BTreeSet<String> {
    let mut scopes = BTreeSet::new();
    for name in ["scope", "scp", "roles"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => {
                scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_come_from_scope_scp_and_roles() {
        let claims = json!({"scope": "a b", "scp": ["c"], "roles": ["d"]});
        assert_eq!(
            scopes(&claims).into_iter().collect::<Vec<_>>(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(
            scopes(&json!({"scp": "x y"}))
                .into_iter()
                .collect::<Vec<_>>(),
            ["x", "y"]
        );
    }

    #[test]
    fn principal_is_subject_with_client() {
        let p = principal(&json!({"sub": "alice", "azp": "app"})).unwrap();
        assert_eq!(p.as_str(), "alice (client app)");
        let p = principal(&json!({"client_id": "svc"})).unwrap();
        assert_eq!(p.as_str(), "svc");
        assert!(principal(&json!({})).is_err());
    }

    #[test]
    fn header_alg_is_echoed_only_when_harmless() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let token = |h: &str| format!("{}.e30.", URL_SAFE_NO_PAD.encode(h));
        assert_eq!(
            header_alg(&token(r#"{"alg":"none"}"#)).as_deref(),
            Some("none")
        );
        assert_eq!(header_alg(&token(r#"{"alg":"a\nb"}"#)), None);
    }
}
