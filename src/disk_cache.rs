//! System tokens reused across CLI invocations: one small file per user token
//! in `$XDG_RUNTIME_DIR/bigid-auth-mcp/`.
//!
//! Each `bigid-auth-mcp token` is its own process, so the in-process cache
//! cannot help it. The runtime directory is per user, on tmpfs, and removed
//! at logout, which makes it the right home for a short-lived secret. The
//! directory is 0700 and each file 0600; the file name is a SHA-256 hash of
//! the BigID URL and the user token, so nothing in the cache lets a reader
//! recover the user token. The system token itself is stored as is: it is a
//! secret, protected by the file modes and by its own short lifetime.
//! A file that is not a regular file owned by this user with mode 0600, or
//! that does not parse, is ignored (never trusted, never deleted), and
//! writes go through a temporary file and a rename, so concurrent
//! invocations never see a half-written token.

use std::{
    ffi::OsStr,
    fs::{self, DirBuilder, File, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    cache::{Issued, is_fresh},
    secret::Secret,
};

/// The cache's directory under `$XDG_RUNTIME_DIR`.
pub const DIR_NAME: &str = "bigid-auth-mcp";

/// A cache file is a token and a timestamp; anything bigger is not ours.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What a cache file holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The system token.
    #[serde(rename = "systemToken")]
    system_token: Secret,
    /// Its `exp`, seconds since the Unix epoch.
    expires: u64,
}

/// Why the cache directory cannot be used; the CLI then runs without a cache.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    /// `XDG_RUNTIME_DIR` is unset, empty or relative.
    #[error("XDG_RUNTIME_DIR is not set to an absolute path")]
    NoRuntimeDir,
    /// The directory could not be created or inspected.
    #[error("cannot use the token cache directory {path}: {error}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The directory exists but is not a private directory of this user.
    #[error(
        "not using the token cache directory {path}: it must be a directory owned by this user \
         with mode 0700"
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
    },
}

/// The on-disk cache, bound to one BigID URL.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
    bigid_url: String,
}

impl DiskCache {
    /// The cache under `runtime_dir` (the value of `XDG_RUNTIME_DIR`),
    /// creating its directory (0700) when missing.
    pub fn open(runtime_dir: Option<&OsStr>, bigid_url: &Url) -> Result<Self, Unusable> {
        let runtime_dir = runtime_dir
            .map(Path::new)
            .filter(|p| p.is_absolute())
            .ok_or(Unusable::NoRuntimeDir)?;
        let dir = runtime_dir.join(DIR_NAME);
        let failed = |error| Unusable::Io {
            path: dir.clone(),
            error,
        };
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        // symlink_metadata: a symlink planted in place of the directory is refused.
        let meta = fs::symlink_metadata(&dir).map_err(failed)?;
        if !meta.is_dir() || meta.uid() != current_uid() || meta.mode() & 0o777 != 0o700 {
            return Err(Unusable::NotPrivate { path: dir });
        }
        Ok(Self {
            dir,
            bigid_url: bigid_url.as_str().to_owned(),
        })
    }

    /// The directory the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that caches the system token for `user_token`.
    pub fn path_for(&self, user_token: &Secret) -> PathBuf {
        let mut hash = Sha256::new();
        // Bound to the BigID URL too: the same user token means nothing to another BigID.
        hash.update(b"bigid-auth-mcp system token v1\0");
        hash.update(self.bigid_url.as_bytes());
        hash.update(b"\0");
        hash.update(user_token.expose().as_bytes());
        let name: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// A still-fresh system token cached for `user_token`, if any.
    pub fn load(&self, user_token: &Secret) -> Option<Issued> {
        let path = self.path_for(user_token);
        match read_private(&path) {
            Ok(Some(issued)) => Some(issued),
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!("ignoring token cache file {}: {reason}", path.display());
                None
            }
        }
    }

    /// Caches `issued` for `user_token` when it is worth reusing. Failures
    /// only cost a later refresh, so they are logged, not returned.
    pub fn store(&self, user_token: &Secret, issued: &Issued) {
        if !is_fresh(issued, SystemTime::now()) {
            return;
        }
        let Some(expires) = issued
            .expires
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        else {
            return;
        };
        let entry = Entry {
            system_token: issued.token.clone(),
            expires: expires.as_secs(),
        };
        let path = self.path_for(user_token);
        if let Err(e) = write_atomically(&path, &entry) {
            tracing::warn!("cannot write token cache file {}: {e}", path.display());
        }
    }
}

/// Reads a cache file: `Ok(None)` when there is none or it is stale,
/// `Err` (a reason without any content) when it must not be trusted.
fn read_private(path: &Path) -> Result<Option<Issued>, String> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // Checked on the open handle, so the file cannot be swapped after the check.
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != current_uid() {
        return Err("owned by another user".into());
    }
    if meta.permissions().mode() & 0o777 != 0o600 {
        return Err(format!(
            "mode {:o} instead of 600",
            meta.permissions().mode() & 0o777
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err("too large".into());
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    // serde's message could quote the content, which is a token: say only that it is bad.
    let entry: Entry =
        serde_json::from_slice(&bytes).map_err(|_| "not a valid cache entry".to_owned())?;
    let issued = Issued {
        token: entry.system_token,
        expires: UNIX_EPOCH.checked_add(Duration::from_secs(entry.expires)),
    };
    Ok((!issued.token.is_empty() && is_fresh(&issued, SystemTime::now())).then_some(issued))
}

/// Writes `entry` to a new 0600 file beside `path`, then renames it over
/// `path`: readers see the old file or the new one, never a mix.
fn write_atomically(path: &Path, entry: &Entry) -> io::Result<()> {
    let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let tmp = path.with_extension(format!("{}.{nanos}.tmp", std::process::id()));
    let written = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The effective user id, which owns every file this process creates.
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://tenant.example.com/api/v1").unwrap()
    }

    fn fresh(token: &str) -> Issued {
        Issued {
            token: Secret::new(token),
            expires: Some(SystemTime::now() + Duration::from_secs(3600)),
        }
    }

    fn temp_runtime_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bigid-disk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn stores_and_loads_a_fresh_token_in_private_files() {
        let runtime = temp_runtime_dir("roundtrip");
        let cache = DiskCache::open(Some(runtime.as_os_str()), &url()).unwrap();
        let user = Secret::new("user-token-1");
        assert!(cache.load(&user).is_none());
        cache.store(&user, &fresh("system-1"));
        let loaded = cache.load(&user).unwrap();
        assert_eq!(loaded.token.expose(), "system-1");
        let dir_mode = fs::metadata(cache.dir()).unwrap().permissions().mode() & 0o777;
        let file = cache.path_for(&user);
        let file_mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!((dir_mode, file_mode), (0o700, 0o600));
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(!name.contains("user-token-1"));
        assert!(cache.load(&Secret::new("user-token-2")).is_none());
        let _ = fs::remove_dir_all(&runtime);
    }

    #[test]
    fn tokens_near_expiry_are_neither_stored_nor_loaded() {
        let runtime = temp_runtime_dir("stale");
        let cache = DiskCache::open(Some(runtime.as_os_str()), &url()).unwrap();
        let user = Secret::new("user-token");
        let short = Issued {
            token: Secret::new("s"),
            expires: Some(SystemTime::now() + crate::cache::EXPIRY_MARGIN / 2),
        };
        cache.store(&user, &short);
        assert!(!cache.path_for(&user).exists());
        let entry = Entry {
            system_token: Secret::new("s"),
            expires: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 30,
        };
        write_atomically(&cache.path_for(&user), &entry).unwrap();
        assert!(cache.load(&user).is_none());
        let _ = fs::remove_dir_all(&runtime);
    }

    #[test]
    fn corrupt_or_loosely_permitted_files_are_ignored() {
        let runtime = temp_runtime_dir("tampered");
        let cache = DiskCache::open(Some(runtime.as_os_str()), &url()).unwrap();
        let user = Secret::new("user-token");
        cache.store(&user, &fresh("system"));
        let path = cache.path_for(&user);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(cache.load(&user).is_none(), "a 0644 file is not trusted");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cache.load(&user).is_some());
        fs::write(&path, b"{\"systemToken\": 5").unwrap();
        assert!(cache.load(&user).is_none(), "a corrupt file is ignored");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(cache.load(&user).is_none(), "a symlink is not followed");
        let _ = fs::remove_dir_all(&runtime);
    }

    #[test]
    fn a_directory_that_is_not_private_is_not_used() {
        let runtime = temp_runtime_dir("loose");
        let dir = runtime.join(DIR_NAME);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            DiskCache::open(Some(runtime.as_os_str()), &url()),
            Err(Unusable::NotPrivate { .. })
        ));
        assert!(matches!(
            DiskCache::open(Some(OsStr::new("relative/dir")), &url()),
            Err(Unusable::NoRuntimeDir)
        ));
        assert!(matches!(
            DiskCache::open(None, &url()),
            Err(Unusable::NoRuntimeDir)
        ));
        let _ = fs::remove_dir_all(&runtime);
    }
}
