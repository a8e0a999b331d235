//! Reuse of still-valid system tokens, keyed by a hash of the user token.
//! Concurrent refreshes for one user token share a single upstream request.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures_util::future::{FutureExt, Shared};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A system token is not reused this close to its expiry.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// At most this many user tokens are remembered; expired ones go first.
const MAX_ENTRIES: usize = 4096;

/// A system token with its expiry, as handed out.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The system token.
    pub token: Secret,
    /// Its `exp`, when the token is a JWT that has one.
    pub expires: Option<SystemTime>,
}

/// Where a token came from.
#[derive(Debug, Clone)]
pub struct Lookup<E> {
    /// The token, or the upstream error.
    pub result: Result<Issued, E>,
    /// True when no upstream request was made for this call.
    pub cached: bool,
}

type Pending<E> = Shared<Pin<Box<dyn Future<Output = Result<Issued, E>> + Send>>>;
type Key = [u8; 32];

/// The cache. Cloning shares it.
pub struct TokenCache<E> {
    entries: Arc<Mutex<HashMap<Key, Pending<E>>>>,
}

impl<E> Clone for TokenCache<E> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
        }
    }
}

impl<E> Default for TokenCache<E> {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
        }
    }
}

impl<E: Clone + Send + Sync + 'static> TokenCache<E> {
    /// Returns a fresh cached token for `user_token`, joins a refresh already
    /// under way, or starts one with `fetch`. `force` skips a cached token.
    pub async fn get_or_fetch<F>(&self, user_token: &Secret, force: bool, fetch: F) -> Lookup<E>
    where
        F: Future<Output = Result<Issued, E>> + Send + 'static,
    {
        let key: Key = Sha256::digest(user_token.expose().as_bytes()).into();
        let now = SystemTime::now();
        let (pending, cached) = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let reusable = entries.get(&key).and_then(|p| match p.peek() {
                None => Some((p.clone(), true)), // in flight: join it
                Some(Ok(issued)) if !force && is_fresh(issued, now) => Some((p.clone(), true)),
                Some(_) => None,
            });
            match reusable {
                Some(found) => found,
                None => {
                    if entries.len() >= MAX_ENTRIES {
                        prune(&mut entries, now);
                    }
                    let pending =
                        (Box::pin(fetch) as Pin<Box<dyn Future<Output = _> + Send>>).shared();
                    entries.insert(key, pending.clone());
                    (pending, false)
                }
            }
        };
        let result = pending.clone().await;
        if !result.as_ref().is_ok_and(|issued| is_fresh(issued, now)) {
            // Failures and tokens without a usable expiry are not kept.
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if entries.get(&key).is_some_and(|p| p.ptr_eq(&pending)) {
                entries.remove(&key);
            }
        }
        Lookup { result, cached }
    }

    /// How many user tokens are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_fresh(issued: &Issued, now: SystemTime) -> bool {
    issued
        .expires
        .and_then(|exp| exp.checked_sub(EXPIRY_MARGIN))
        .is_some_and(|reuse_until| now < reuse_until)
}

fn prune<E>(entries: &mut HashMap<Key, Pending<E>>, now: SystemTime) {
    entries.retain(|_, p| match p.peek() {
        None => true,
        Some(Ok(issued)) => is_fresh(issued, now),
        Some(Err(_)) => false,
    });
    if entries.len() >= MAX_ENTRIES {
        // Still full of live tokens: forget them all rather than grow without bound.
        entries.retain(|_, p| p.peek().is_none());
    }
}
