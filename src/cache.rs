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

/// The refresh task ended without an answer (it panicked, or the runtime is
/// shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system token request ended unexpectedly; try again")]
pub struct FetchAborted;

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

impl<E: Clone + Send + Sync + From<FetchAborted> + 'static> TokenCache<E> {
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
                    // The request runs as its own task: a caller that is
                    // cancelled (the MCP client gave up) must not stall the
                    // callers that joined it, nor leave a half-done request
                    // behind for the next caller to inherit.
                    let task = tokio::spawn(fetch);
                    let joined =
                        async move { task.await.unwrap_or_else(|_| Err(FetchAborted.into())) };
                    let pending =
                        (Box::pin(joined) as Pin<Box<dyn Future<Output = _> + Send>>).shared();
                    entries.insert(key, pending.clone());
                    (pending, false)
                }
            }
        };
        let result = pending.clone().await;
        if !result
            .as_ref()
            .is_ok_and(|issued| is_fresh(issued, SystemTime::now()))
        {
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

/// True while `issued` may be reused: it has an expiry, and `now` is more than
/// [`EXPIRY_MARGIN`] before it. The in-process and on-disk caches share this rule.
pub fn is_fresh(issued: &Issued, now: SystemTime) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone, PartialEq)]
    enum TestError {
        Upstream,
        Aborted,
    }

    impl From<FetchAborted> for TestError {
        fn from(_: FetchAborted) -> Self {
            Self::Aborted
        }
    }

    type Cache = TokenCache<TestError>;

    /// A fetch that counts its calls and issues `token-N` expiring in `ttl`.
    fn fetcher(
        calls: &Arc<AtomicUsize>,
        ttl: Option<Duration>,
        delay: Duration,
    ) -> impl Future<Output = Result<Issued, TestError>> + Send + 'static {
        let calls = calls.clone();
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Issued {
                token: Secret::new(format!("token-{n}")),
                expires: ttl.map(|ttl| SystemTime::now() + ttl),
            })
        }
    }

    const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

    async fn get(
        cache: &Cache,
        user: &str,
        force: bool,
        fetch: impl Future<Output = Result<Issued, TestError>> + Send + 'static,
    ) -> (String, bool) {
        let lookup = cache.get_or_fetch(&Secret::new(user), force, fetch).await;
        let issued = lookup.result.expect("token");
        (issued.token.expose().to_owned(), lookup.cached)
    }

    #[tokio::test]
    async fn reuses_a_fresh_token_for_the_same_user_token_only() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let first = get(&cache, "u1", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        let again = get(&cache, "u1", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        let other = get(&cache, "u2", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        assert_eq!(first, ("token-0".into(), false));
        assert_eq!(again, ("token-0".into(), true));
        assert_eq!(other, ("token-1".into(), false));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
    }

    #[tokio::test]
    async fn force_fetches_anew_and_replaces_the_cached_token() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        get(&cache, "u", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        let forced = get(&cache, "u", true, fetcher(&calls, HOUR, Duration::ZERO)).await;
        let after = get(&cache, "u", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        assert_eq!(forced, ("token-1".into(), false));
        assert_eq!(after, ("token-1".into(), true));
    }

    #[tokio::test]
    async fn tokens_near_expiry_or_without_exp_are_not_kept() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let short = Some(EXPIRY_MARGIN - Duration::from_secs(1));
        for ttl in [short, None] {
            let a = get(&cache, "u", false, fetcher(&calls, ttl, Duration::ZERO)).await;
            let b = get(&cache, "u", false, fetcher(&calls, ttl, Duration::ZERO)).await;
            assert!(!a.1 && !b.1, "{ttl:?}: {a:?} {b:?}");
            assert_ne!(a.0, b.0);
            assert!(cache.is_empty());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_token_stops_being_reused_at_the_margin_before_exp() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        // Fresh for 300 ms, then inside the margin.
        let ttl = Some(EXPIRY_MARGIN + Duration::from_millis(300));
        get(&cache, "u", false, fetcher(&calls, ttl, Duration::ZERO)).await;
        let hit = get(&cache, "u", false, fetcher(&calls, ttl, Duration::ZERO)).await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        let miss = get(&cache, "u", false, fetcher(&calls, ttl, Duration::ZERO)).await;
        assert_eq!(hit, ("token-0".into(), true));
        assert_eq!(miss, ("token-1".into(), false));
    }

    #[tokio::test]
    async fn failures_are_not_kept() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let failing = {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(TestError::Upstream)
            }
        };
        let lookup = cache.get_or_fetch(&Secret::new("u"), false, failing).await;
        assert_eq!(lookup.result.unwrap_err(), TestError::Upstream);
        assert!(!lookup.cached);
        assert!(cache.is_empty());
        let next = get(&cache, "u", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        assert_eq!(next, ("token-1".into(), false));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let user = Secret::new("u");
        let lookups = futures_util::future::join_all((0..20).map(|_| {
            cache.get_or_fetch(
                &user,
                false,
                fetcher(&calls, HOUR, Duration::from_millis(50)),
            )
        }))
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let fetched = lookups.iter().filter(|l| !l.cached).count();
        assert_eq!(fetched, 1, "exactly one caller made the request");
        for lookup in lookups {
            assert_eq!(lookup.result.unwrap().token.expose(), "token-0");
        }
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_strand_the_fetch() {
        let cache = Cache::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let slow = {
            let fetch = fetcher(&calls, HOUR, Duration::from_millis(100));
            async move {
                let result = fetch.await;
                let _ = done_tx.send(());
                result
            }
        };
        let cancelled = tokio::time::timeout(
            Duration::from_millis(10),
            cache.get_or_fetch(&Secret::new("u"), false, slow),
        )
        .await;
        assert!(cancelled.is_err(), "the first caller gave up");
        // The request finishes on its own, with nobody awaiting it...
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("the fetch ran to completion without a caller")
            .expect("sent");
        // ...and the next caller gets its token.
        let next = get(&cache, "u", false, fetcher(&calls, HOUR, Duration::ZERO)).await;
        assert_eq!(next, ("token-0".into(), true));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_panicking_fetch_is_an_error_not_a_hang() {
        let cache = Cache::default();
        let panicking = async { panic!("boom") };
        let lookup = cache
            .get_or_fetch(&Secret::new("u"), false, panicking)
            .await;
        assert_eq!(lookup.result.unwrap_err(), TestError::Aborted);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_forgets_expired_entries_first() {
        let now = SystemTime::now();
        let entry = |expires: SystemTime| -> Pending<TestError> {
            let issued = Issued {
                token: Secret::new("t"),
                expires: Some(expires),
            };
            let ready = Box::pin(async move { Ok(issued) })
                as Pin<Box<dyn Future<Output = Result<Issued, TestError>> + Send>>;
            let shared = ready.shared();
            // Resolve it so that `peek` sees the token.
            let _ = futures_util::FutureExt::now_or_never(shared.clone());
            shared
        };
        let mut entries = HashMap::new();
        entries.insert([0; 32], entry(now - Duration::from_secs(1)));
        entries.insert([1; 32], entry(now + Duration::from_secs(3600)));
        prune(&mut entries, now);
        assert_eq!(entries.len(), 1);
        assert!(entries.contains_key(&[1; 32]));
    }
}
