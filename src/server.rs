//! The MCP handler: two tools over [`Flows`] (shared with the CLI), and the
//! Agent Skill served through the skills extension. Thin on purpose.

use std::{sync::Arc, time::Instant};

use rmcp::{
    ErrorData as McpError, Json, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::schema_for_input},
    model::{
        GetSkillRequestParams, GetSkillResult, Implementation, ListResourcesResult,
        ListSkillsResult, PaginatedRequestParams, ProtocolVersion, ReadResourceRequestParams,
        ReadResourceResponse, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
};

use crate::{
    bigid,
    config::Defaults,
    flows::Flows,
    principal::Principal,
    skill,
    tools::{
        Args, Caller, CreateSessionArgs, RefreshArgs, RefreshOutput, SessionOutput, ToolError,
    },
};

/// What every session of the server shares.
struct Shared {
    flows: Flows,
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
        let flows = Flows::new(client, defaults);
        let flows = if token_cache {
            flows.with_memory_cache()
        } else {
            flows
        };
        Self {
            tool_router: Self::tool_router(),
            shared: Arc::new(Shared {
                flows,
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
        self.shared.flows.create_session(args?).await.map(Json)
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
        self.shared
            .flows
            .refresh_access_token(args?)
            .await
            .map(Json)
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

/// 2026-07-28 peers expect cache hints on listings and reads; older ones
/// do not know the fields.
fn wants_cache_hints(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BigIdServer {
    fn get_info(&self) -> ServerConfig {
        // The skill rides on resources: the skills extension needs both declared.
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_skills()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(
                Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                    .with_title("BigID authentication"),
            )
            .with_instructions(self.shared.instructions.clone())
    }

    async fn list_skills(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListSkillsResult, McpError> {
        skill::list(wants_cache_hints(&context))
    }

    async fn get_skill(
        &self,
        request: GetSkillRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetSkillResult, McpError> {
        skill::get(&request.uri, wants_cache_hints(&context))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(skill::resources()?))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        skill::read(&request.uri, wants_cache_hints(&context))
            .map(Into::into)
            .ok_or_else(|| {
                McpError::resource_not_found(format!("no resource {}", request.uri), None)
            })
    }
}
