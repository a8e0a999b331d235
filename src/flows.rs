//! The two BigID authentication flows, shared by the MCP tools and the
//! credential-helper CLI: one place resolves credentials, calls BigID, reuses
//! cached system tokens and shapes the result objects both surfaces print.

use crate::{
    bigid,
    cache::{FetchAborted, Issued, TokenCache},
    config::Defaults,
    disk_cache::DiskCache,
    jwt,
    secret::Secret,
    tools::{CreateSessionArgs, RefreshArgs, RefreshOutput, SessionOutput, ToolError},
};

/// The BigID client with the credentials and token caches the flows use.
pub struct Flows {
    client: bigid::Client,
    defaults: Defaults,
    /// Reuse within one process (the server), shared by concurrent callers.
    memory: Option<TokenCache<bigid::Error>>,
    /// Reuse across processes (the CLI).
    disk: Option<DiskCache>,
}

impl Flows {
    /// Flows over `client`, falling back to `defaults` for omitted credentials.
    pub fn new(client: bigid::Client, defaults: Defaults) -> Self {
        Self {
            client,
            defaults,
            memory: None,
            disk: None,
        }
    }

    /// Reuses still-valid system tokens within this process.
    pub fn with_memory_cache(mut self) -> Self {
        self.memory = Some(TokenCache::default());
        self
    }

    /// Reuses still-valid system tokens across processes through `disk`.
    pub fn with_disk_cache(mut self, disk: DiskCache) -> Self {
        self.disk = Some(disk);
        self
    }

    /// `create_session`: log in with a username and password.
    pub async fn create_session(
        &self,
        args: CreateSessionArgs,
    ) -> Result<SessionOutput, ToolError> {
        let defaults = &self.defaults;
        let username = given(args.username, |u| u.trim().is_empty())
            .or_else(|| defaults.username.clone())
            .ok_or(ToolError::Missing {
                argument: "username",
                env: "BIGID_USERNAME",
            })?;
        let password = given(args.password, Secret::is_empty)
            .or_else(|| defaults.password.clone())
            .ok_or(ToolError::Missing {
                argument: "password",
                env: "BIGID_PASSWORD",
            })?;

        let session = self
            .client
            .create_session(&username, &password)
            .await
            .map_err(|e| ToolError::from(e).redact(&[&password]))?;
        let auth_token = session.auth_token;
        let permissions = session.permissions;
        Ok(SessionOutput {
            success: true,
            message: session.message,
            expires_at: jwt::decode_unverified(auth_token.expose())
                .and_then(|c| c.expires_at_rfc3339()),
            auth_token,
            username: session.username.unwrap_or(username),
            first_name: session.first_name,
            permission_count: permissions.len(),
            permissions: args.include_permissions.then_some(permissions),
        })
    }

    /// `refresh_access_token`: exchange a user token for a system token,
    /// reusing a still-valid one unless `force_refresh`.
    pub async fn refresh_access_token(
        &self,
        args: RefreshArgs,
    ) -> Result<RefreshOutput, ToolError> {
        let user_token = given(args.user_token, Secret::is_empty)
            .or_else(|| self.defaults.user_token.clone())
            .ok_or(ToolError::Missing {
                argument: "user_token",
                env: "BIGID_USER_TOKEN",
            })?;

        let stored = match &self.disk {
            Some(disk) if !args.force_refresh => disk.load(&user_token),
            _ => None,
        };
        let (result, cached) = match stored {
            Some(issued) => (Ok(issued), true),
            None => self.fetch(&user_token, args.force_refresh).await,
        };
        let issued = result.map_err(|e| rejection(e, &user_token).redact(&[&user_token]))?;
        if let (Some(disk), false) = (&self.disk, cached) {
            disk.store(&user_token, &issued);
        }
        Ok(RefreshOutput {
            success: true,
            expires_at: issued
                .expires
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            system_token: issued.token,
            cached,
        })
    }

    /// Asks BigID, or joins/reuses the in-process cache when there is one.
    async fn fetch(
        &self,
        user_token: &Secret,
        force: bool,
    ) -> (Result<Issued, bigid::Error>, bool) {
        let fetch = {
            let client = self.client.clone();
            let user_token = user_token.clone();
            async move {
                let answer = client.refresh_access_token(&user_token).await?;
                let token = answer.system_token;
                let expires = jwt::decode_unverified(token.expose()).and_then(|c| c.expires());
                Ok(Issued { token, expires })
            }
        };
        match &self.memory {
            Some(cache) => {
                let lookup = cache.get_or_fetch(user_token, force, fetch).await;
                (lookup.result, lookup.cached)
            }
            None => (fetch.await, false),
        }
    }
}

impl From<FetchAborted> for bigid::Error {
    fn from(aborted: FetchAborted) -> Self {
        bigid::Error::Setup(aborted.to_string())
    }
}

/// A rejected token that is really an access token gets a hint instead of a bare 401.
fn rejection(error: bigid::Error, user_token: &Secret) -> ToolError {
    let is_access_token = || {
        jwt::decode_unverified(user_token.expose())
            .and_then(|c| c.token_type)
            .is_some_and(|t| t == "access-token")
    };
    match error {
        bigid::Error::Rejected { .. } if is_access_token() => ToolError::AccessTokenGiven(error),
        other => ToolError::BigId(other),
    }
}

/// An argument counts as given unless it is empty.
fn given<T>(value: Option<T>, empty: impl Fn(&T) -> bool) -> Option<T> {
    value.filter(|v| !empty(v))
}
