//! The OAuth 2.1 resource server: which tokens this server accepts, and the
//! checks that decide it. Knows nothing of HTTP routing or of MCP; the HTTP
//! transport asks [`Verifier::verify`] about each bearer token.

pub mod discovery;
pub mod fetch;
pub mod keys;
pub mod settings;
pub mod verifier;

pub use settings::OAuthSettings;
pub use verifier::{TokenError, Verified, Verifier};

/// Why OAuth could not be set up at start-up: the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No metadata document could be read from the issuer.
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    /// The issuer's keys could not be read.
    #[error("cannot read the signing keys of {issuer} from {jwks_uri}: {cause}")]
    Keys {
        /// The configured issuer.
        issuer: String,
        /// Where the keys were looked for.
        jwks_uri: String,
        /// What went wrong.
        cause: fetch::FetchError,
    },
}
