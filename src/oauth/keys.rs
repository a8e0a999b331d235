//! The issuer's signing keys (JWKS), cached. An unknown `kid` triggers a
//! refetch, at most once per [`REFETCH_INTERVAL`]; when a refetch fails the
//! keys already known stay in use, so an authorization server outage only
//! affects tokens signed with keys this server has never seen.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, KeyAlgorithm, PublicKeyUse},
};
use reqwest::Url;
use serde::Deserialize;

use super::fetch::{self, FetchError};

/// Least time between two fetches of the key set triggered by unknown keys,
/// so tokens with made-up `kid`s cannot make this server hammer the issuer.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// One verification key.
pub struct Key {
    /// The key itself.
    pub decoding: DecodingKey,
    /// The algorithm the JWK restricts it to, if any.
    pub algorithm: Option<Algorithm>,
}

/// Why no key could be found for a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The issuer publishes no key with this `kid`, even after a refetch.
    #[error("the token is signed with a key the authorization server does not publish")]
    Unknown,
    /// The key is unknown and the key set could not be refetched.
    #[error("the authorization server's keys cannot be fetched right now ({0}); retry shortly")]
    Unavailable(String),
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys published without a `kid`; tried for tokens without one.
    anonymous: Vec<Arc<Key>>,
}

/// The cached key set of one issuer.
pub struct KeyStore {
    http: reqwest::Client,
    jwks_uri: Url,
    keys: RwLock<Keys>,
    /// When the last fetch was attempted and, if it failed, why.
    last_fetch: tokio::sync::Mutex<(Instant, Option<String>)>,
    refetch_interval: Duration,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

impl KeyStore {
    /// Fetches the key set once; fails when it cannot be read.
    pub async fn load(
        http: reqwest::Client,
        jwks_uri: Url,
        refetch_interval: Duration,
    ) -> Result<Self, FetchError> {
        let keys = fetch_keys(&http, &jwks_uri).await?;
        Ok(Self {
            http,
            jwks_uri,
            keys: RwLock::new(keys),
            last_fetch: tokio::sync::Mutex::new((Instant::now(), None)),
            refetch_interval,
        })
    }

    /// Where the keys come from.
    pub fn jwks_uri(&self) -> &Url {
        &self.jwks_uri
    }

    /// The keys that may have signed a token with this `kid`.
    pub async fn find(&self, kid: Option<&str>) -> Result<Vec<Arc<Key>>, KeyError> {
        if let Some(found) = self.lookup(kid) {
            return Ok(found);
        }
        let failure = self.refetch().await;
        match (self.lookup(kid), failure) {
            (Some(found), _) => Ok(found),
            (None, Some(cause)) => Err(KeyError::Unavailable(cause)),
            (None, None) => Err(KeyError::Unknown),
        }
    }

    fn lookup(&self, kid: Option<&str>) -> Option<Vec<Arc<Key>>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let found: Vec<_> = match kid {
            Some(kid) => keys.by_kid.get(kid).cloned().into_iter().collect(),
            None if keys.anonymous.is_empty() => keys.by_kid.values().cloned().collect(),
            None => keys.anonymous.clone(),
        };
        (!found.is_empty()).then_some(found)
    }

    /// Refetches unless one was attempted within the interval; returns why
    /// the latest attempt failed, if it did.
    async fn refetch(&self) -> Option<String> {
        // One refetch at a time; concurrent callers wait for it and reuse it.
        let mut last = self.last_fetch.lock().await;
        if last.0.elapsed() < self.refetch_interval {
            return last.1.clone();
        }
        let outcome = fetch_keys(&self.http, &self.jwks_uri).await;
        *last = (Instant::now(), None);
        match outcome {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                tracing::info!(jwks_uri = %self.jwks_uri, "refetched the authorization server's keys");
                None
            }
            Err(e) => {
                tracing::warn!(jwks_uri = %self.jwks_uri, "cannot refetch the authorization server's keys: {e}; keeping the known ones");
                last.1 = Some(e.to_string());
                last.1.clone()
            }
        }
    }
}

async fn fetch_keys(http: &reqwest::Client, jwks_uri: &Url) -> Result<Keys, FetchError> {
    let raw: RawSet = fetch::json(http, jwks_uri).await?;
    let mut keys = Keys::default();
    // Keys of kinds this server cannot use (encryption keys, unknown types)
    // are skipped, not fatal: issuers publish them alongside signing keys.
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        // A symmetric key in a public key set can only be a mistake or an
        // attack; it is never used.
        if decoding.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            continue;
        }
        let algorithm = jwk.common.key_algorithm.and_then(signing_algorithm);
        let key = Arc::new(Key {
            decoding,
            algorithm,
        });
        match jwk.common.key_id {
            Some(kid) => {
                keys.by_kid.insert(kid, key);
            }
            None => keys.anonymous.push(key),
        }
    }
    Ok(keys)
}

fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}
