//! The MCP handler: two tools over the BigID client. Thin on purpose: it
//! resolves defaults, calls [`bigid::Client`], and shapes the result.

use std::{sync::Arc, time::Instant};

use rmcp::{
    Json, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::schema_for_input},
    model::{Implementation, ServerCapabilities, ServerConfig},
    tool, tool_handler, tool_router,
};

use crate::{
    bigid,
    cache::{FetchAborted, Issued, TokenCache},
    config::Defaults,
    jwt,
    principal::Principal,
    secret::Secret,
    tools::{
        Args, Caller, CreateSessionArgs, RefreshArgs, RefreshOutput, SessionOutput, ToolError,
    },
};

/// What every session of the server shares.
struct Shared {
    client: bigid::Client,
    defaults: Defaults,
    cache: Option<TokenCache<bigid::Error>>,
    instructions: String,
}

/// The MCP server. Cheap to clone: one per MCP session, all sharing one
/// BigID connection pool and one token cache.
#[derive(Clone)]
pub struct BigIdServer {
    tool_router: ToolRouter<Self>,
    shared: Arc<Shared>,
}

#[tool_router]
impl BigIdServer {
    /// Builds the server around a BigID client.
    pub fn new(client: bigid::Client, defaults: Defaults, token_cache: bool) -> Self {
        let instructions = instructions(&defaults);
        Self {
            tool_router: Self::tool_router(),
            shared: Arc::new(Shared {
                client,
                defaults,
                cache: token_cache.then(TokenCache::default),
                instructions,
            }),
        }
    }

    /// Log in with a password.
    #[tool(
        description = "Log in to BigID with a username and password and get a session `auth_token` \
            for BigID's REST API (send it as the `Authorization` header of later BigID calls). \
            Use this for deployments with local BigID users; BigID cloud tenants, and anyone \
            holding a BigID user token, should use `refresh_access_token` instead. `username` and \
            `password` can be left out when the server is configured with BIGID_USERNAME and \
            BIGID_PASSWORD: try without them first. Permissions are summarised as a count unless \
            `include_permissions` is true. The returned token is a secret: pass it only to BigID; \
            never show it to the user or write it to files or logs.",
        input_schema = schema_for_input::<CreateSessionArgs>().unwrap_or_default(),
        annotations(
            title = "Create BigID session",
            // Opens a login session in BigID (visible in its audit log), but changes no data.
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn create_session(
        &self,
        Caller(caller): Caller,
        Args(args): Args<CreateSessionArgs>,
    ) -> Result<Json<SessionOutput>, ToolError> {
        let started = Instant::now();
        let result = self.open_session(args).await;
        log_outcome(&caller, "create_session", started, &result);
        result
    }

    async fn open_session(
        &self,
        args: Result<CreateSessionArgs, ToolError>,
    ) -> Result<Json<SessionOutput>, ToolError> {
        let args = args?;
        let defaults = &self.shared.defaults;
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
            .shared
            .client
            .create_session(&username, &password)
            .await
            .map_err(|e| ToolError::from(e).redact(&[&password]))?;
        let auth_token = session.auth_token;
        let permissions = session.permissions;
        Ok(Json(SessionOutput {
            success: true,
            message: session.message,
            expires_at: jwt::decode_unverified(auth_token.expose())
                .and_then(|c| c.expires_at_rfc3339()),
            auth_token,
            username: session.username.unwrap_or(username),
            first_name: session.first_name,
            permission_count: permissions.len(),
            permissions: args.include_permissions.then_some(permissions),
        }))
    }

    /// Exchange a user token.
    #[tool(
        description = "Exchange a long-lived BigID user token for a short-lived `systemToken` that \
            authorizes calls to BigID's REST API (send it as the `Authorization` header). This is \
            how BigID cloud tenants authenticate; user tokens are created in BigID's UI. \
            `user_token` can be left out when the server is configured with BIGID_USER_TOKEN: try \
            without it first. A still-valid system token for the same user token is reused \
            (`cached: true`) unless `force_refresh` is true. The returned token is a secret: pass \
            it only to BigID; never show it to the user or write it to files or logs.",
        input_schema = schema_for_input::<RefreshArgs>().unwrap_or_default(),
        annotations(
            title = "Get BigID system token",
            // Reads a credential; with the cache, repeating the call returns the same token.
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn refresh_access_token(
        &self,
        Caller(caller): Caller,
        Args(args): Args<RefreshArgs>,
    ) -> Result<Json<RefreshOutput>, ToolError> {
        let started = Instant::now();
        let result = self.system_token(args).await;
        log_outcome(&caller, "refresh_access_token", started, &result);
        result
    }

    async fn system_token(
        &self,
        args: Result<RefreshArgs, ToolError>,
    ) -> Result<Json<RefreshOutput>, ToolError> {
        let args = args?;
        let user_token = given(args.user_token, Secret::is_empty)
            .or_else(|| self.shared.defaults.user_token.clone())
            .ok_or(ToolError::Missing {
                argument: "user_token",
                env: "BIGID_USER_TOKEN",
            })?;

        let fetch = {
            let client = self.shared.client.clone();
            let user_token = user_token.clone();
            async move {
                let answer = client.refresh_access_token(&user_token).await?;
                let token = answer.system_token;
                let expires = jwt::decode_unverified(token.expose()).and_then(|c| c.expires());
                Ok(Issued { token, expires })
            }
        };
        let (result, cached) = match &self.shared.cache {
            Some(cache) => {
                let lookup = cache
                    .get_or_fetch(&user_token, args.force_refresh, fetch)
                    .await;
                (lookup.result, lookup.cached)
            }
            None => (fetch.await, false),
        };
        let issued = result.map_err(|e| rejection(e, &user_token).redact(&[&user_token]))?;
        Ok(Json(RefreshOutput {
            success: true,
            expires_at: issued
                .expires
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            system_token: issued.token,
            cached,
        }))
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

/// One info line per call: who called, the tool, how it ended and how long
/// it took; never an argument or a token. The caller's own credential (an
/// OAuth access token) never reaches BigID: the tools use the server's
/// configuration or the call's arguments only.
fn log_outcome<T>(caller: &Principal, tool: &str, started: Instant, result: &Result<T, ToolError>) {
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0;
    let principal = caller.as_str();
    match result {
        Ok(_) => tracing::info!(principal, tool, outcome = "ok", elapsed_ms, "tool call"),
        Err(error) => {
            tracing::info!(principal, tool, outcome = "error", elapsed_ms, %error, "tool call")
        }
    }
}

/// An argument counts as given unless it is empty.
fn given<T>(value: Option<T>, empty: impl Fn(&T) -> bool) -> Option<T> {
    value.filter(|v| !empty(v))
}

fn instructions(defaults: &Defaults) -> String {
    let configured = |yes: bool| if yes { "configured" } else { "not configured" };
    format!(
        "Authenticates against BigID. Two flows: (1) `create_session` logs in with a username and \
         password and returns a session `auth_token`; (2) `refresh_access_token` exchanges a \
         long-lived BigID user token for a short-lived `systemToken` (BigID cloud tenants only \
         allow this flow). Either token goes, as is, in the `Authorization` header of later BigID \
         REST API calls. Credentials in this server's environment: username and password {}, \
         user token {}; when configured, call the tool without those arguments. Tokens are \
         secrets: never display them or write them anywhere but the BigID request.",
        configured(defaults.username.is_some() && defaults.password.is_some()),
        configured(defaults.user_token.is_some()),
    )
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BigIdServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                    .with_title("BigID authentication"),
            )
            .with_instructions(self.shared.instructions.clone())
    }
}
