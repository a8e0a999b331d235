//! The tools' argument and result types (their schemas are the API), the
//! argument extractor, and the error a tool call reports.

use rmcp::{
    ErrorData as McpError,
    handler::server::{
        common::{AsRequestContext, FromContextPart},
        tool::ToolCallContext,
    },
    model::{ContentBlock, IntoContents},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{bigid, principal::Principal, secret::Secret};

/// Arguments of `create_session`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = non_nullable)]
pub struct CreateSessionArgs {
    /// BigID user name. Leave out to use the server's BIGID_USERNAME.
    pub username: Option<String>,
    /// The user's BigID password. Leave out to use the server's BIGID_PASSWORD.
    pub password: Option<Secret>,
    /// Also return the full list of permission strings (often hundreds, ~16 KB).
    /// By default only their count is returned.
    #[serde(default)]
    pub include_permissions: bool,
}

/// Arguments of `refresh_access_token`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = non_nullable)]
pub struct RefreshArgs {
    /// A long-lived BigID user token. Leave out to use the server's BIGID_USER_TOKEN.
    pub user_token: Option<Secret>,
    /// Ask BigID for a new system token even when a still-valid one is cached.
    #[serde(default)]
    pub force_refresh: bool,
}

/// Result of `create_session`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = non_nullable)]
pub struct SessionOutput {
    /// True: BigID accepted the login.
    pub success: bool,
    /// BigID's message, if it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Session token for BigID's REST API, sent as the `Authorization` header. A secret.
    pub auth_token: Secret,
    /// The BigID user name of the session.
    pub username: String,
    /// The user's first name, if BigID sent it.
    #[serde(rename = "firstName", skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// How many permissions the user has.
    #[schemars(schema_with = "count_schema")]
    pub permission_count: usize,
    /// The permission strings; present only when `include_permissions` was true.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// When the token expires (RFC 3339), read from its unverified JWT `exp` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Result of `refresh_access_token`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(transform = non_nullable)]
pub struct RefreshOutput {
    /// True: BigID issued (or had issued) the system token.
    pub success: bool,
    /// Short-lived system token for BigID's REST API, sent as the `Authorization` header. A secret.
    #[serde(rename = "systemToken")]
    pub system_token: Secret,
    /// True when a still-valid system token for the same user token was reused.
    pub cached: bool,
    /// When the token expires (RFC 3339), read from its unverified JWT `exp` claim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A plain non-negative integer: schemars' `"format": "uint"` is not a JSON
/// Schema format, and some clients (Ajv) warn about it on every call.
fn count_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "integer", "minimum": 0})
}

/// Optional fields are left out when absent, never sent as `null`, so their
/// schema is the plain type: schemars writes `"type": ["string", "null"]` for
/// an `Option`, which MCP clients and the Inspector flag as unportable.
pub fn non_nullable(schema: &mut schemars::Schema) {
    let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for property in properties.values_mut() {
        let Some(types) = property.get_mut("type") else {
            continue;
        };
        if let Some(list) = types.as_array() {
            let mut kept: Vec<serde_json::Value> =
                list.iter().filter(|t| *t != "null").cloned().collect();
            *types = match kept.len() {
                1 => kept.remove(0),
                _ => serde_json::Value::Array(kept),
            };
        }
    }
}

/// Why a tool call failed; becomes a result with `isError: true` and this text.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// An argument has the wrong type or value.
    #[error("invalid argument `{argument}`: {problem}")]
    InvalidArgument {
        /// The argument's name (never its value).
        argument: String,
        /// What was expected.
        problem: String,
    },
    /// An argument the tool does not take.
    #[error("unknown argument `{argument}`; this tool takes {accepted}")]
    UnknownArgument {
        /// The name the client sent.
        argument: String,
        /// The names it takes.
        accepted: String,
    },
    /// A credential neither passed nor configured.
    #[error("missing argument `{argument}`: pass it, or set {env} in the server's environment")]
    Missing {
        /// The argument's name.
        argument: &'static str,
        /// The environment variable that would supply it.
        env: &'static str,
    },
    /// BigID failed or said no.
    #[error(transparent)]
    BigId(#[from] bigid::Error),
    /// A user token that is really an access token was rejected.
    #[error(
        "{0}. The token passed as `user_token` is already a BigID access token (its JWT \
         `type` is `access-token`), not a user token: use it directly as the `Authorization` \
         header of BigID API calls instead of exchanging it"
    )]
    AccessTokenGiven(bigid::Error),
    /// Any of the above with a secret of the call cut out of its text.
    #[error("{0}")]
    Redacted(String),
}

impl ToolError {
    /// Cuts any of `secrets` out of the message, in case BigID echoed one back.
    pub fn redact(self, secrets: &[&Secret]) -> Self {
        let text = self.to_string();
        let clean = crate::secret::redact_secrets(&text, secrets);
        if clean == text {
            self
        } else {
            Self::Redacted(clean)
        }
    }
}

impl IntoContents for ToolError {
    fn into_contents(self) -> Vec<ContentBlock> {
        vec![ContentBlock::text(self.to_string())]
    }
}

/// Tool arguments, deserialized with the failing argument's name at hand.
/// Unlike rmcp's `Parameters<T>`, a bad argument becomes a [`ToolError`] that
/// names the argument but never quotes its value (it may be a password).
pub struct Args<T>(pub Result<T, ToolError>);

impl<S, T: DeserializeOwned + JsonSchema> FromContextPart<ToolCallContext<'_, S>> for Args<T> {
    fn from_context_part(ctx: &mut ToolCallContext<'_, S>) -> Result<Self, McpError> {
        let object = ctx.arguments.take().unwrap_or_default();
        Ok(Args(parse_args(serde_json::Value::Object(object))))
    }
}

/// The principal a tool call runs as: set by the HTTP layer (on the request
/// itself for legacy SSE, on the HTTP request parts rmcp attaches for
/// Streamable HTTP); `local` for stdio.
pub struct Caller(pub Principal);

impl<S> FromContextPart<ToolCallContext<'_, S>> for Caller {
    fn from_context_part(ctx: &mut ToolCallContext<'_, S>) -> Result<Self, McpError> {
        let extensions = &ctx.as_request_context().extensions;
        let principal = extensions
            .get::<Principal>()
            .or_else(|| {
                extensions
                    .get::<axum::http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Principal>())
            })
            .cloned()
            .unwrap_or_else(Principal::local);
        Ok(Caller(principal))
    }
}

/// Deserializes tool arguments into `T`, describing a failure without values.
pub fn parse_args<T: DeserializeOwned + JsonSchema>(
    value: serde_json::Value,
) -> Result<T, ToolError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let argument = rest.split('`').next().unwrap_or_default().to_owned();
            return ToolError::UnknownArgument {
                argument,
                accepted: accepted_names::<T>(),
            };
        }
        // serde says "invalid type: string \"hunter2\", expected a boolean": keep
        // only the expectation, which is ours, never the unexpected value.
        let problem = match message.rsplit_once(", expected ") {
            Some((_, expected)) => format!("expected {expected}"),
            None => "not an accepted value".to_owned(),
        };
        ToolError::InvalidArgument {
            argument: path,
            problem,
        }
    })
}

/// "`a`, `b` and `c`", from the argument struct's schema.
fn accepted_names<T: JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let names: Vec<String> = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
        .unwrap_or_default();
    match names.split_last() {
        None => "no arguments".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_type_names_the_argument_but_not_the_value() {
        let err = parse_args::<CreateSessionArgs>(
            json!({"password": "hunter2", "include_permissions": "hunter3"}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "invalid argument `include_permissions`: expected a boolean"
        );
        let err = parse_args::<CreateSessionArgs>(json!({"password": 123456}))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid argument `password`: expected a string");
    }

    #[test]
    fn unknown_argument_is_named_with_the_accepted_ones() {
        let err = parse_args::<RefreshArgs>(json!({"token": "x"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "unknown argument `token`; this tool takes `force_refresh` and `user_token`"
        );
    }

    #[test]
    fn omitted_arguments_take_their_defaults() {
        let args = parse_args::<CreateSessionArgs>(json!({})).unwrap();
        assert!(args.username.is_none() && args.password.is_none() && !args.include_permissions);
    }

    #[test]
    fn redact_cuts_echoed_secrets_out() {
        let secret = Secret::new("tok-123456");
        let err = ToolError::BigId(bigid::Error::Rejected {
            credential: bigid::Credential::UserToken,
            status: 401,
            message: Some("token tok-123456 is unknown".into()),
        });
        let text = err.redact(&[&secret]).to_string();
        assert!(!text.contains("tok-123456"), "{text}");
        assert!(text.contains("token [redacted] is unknown"), "{text}");
    }
}
