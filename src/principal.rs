//! Who a request runs as: the identity named in the per-call log line and
//! the owner of an MCP session.

use std::{fmt, sync::Arc};

/// The identity of a caller. Two requests run as the same principal when
/// their principals are equal; nothing else about a caller is compared.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    // Kept apart from the name, so that a token whose `sub` is
    // "static-token" is still not the holder of MCP_AUTH_TOKEN.
    kind: Kind,
    name: Arc<str>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    StaticToken,
    Local,
    OAuth,
}

impl Principal {
    /// A caller that presented `MCP_AUTH_TOKEN`: everyone holding it is one identity.
    pub fn static_token() -> Self {
        Self {
            kind: Kind::StaticToken,
            name: "static-token".into(),
        }
    }

    /// A caller of a server with no authentication configured (loopback, or stdio).
    pub fn local() -> Self {
        Self {
            kind: Kind::Local,
            name: "local".into(),
        }
    }

    /// A caller with a verified OAuth access token: its subject, and the
    /// OAuth client it used when the token names one.
    pub fn oauth(subject: &str, client: Option<&str>) -> Self {
        // Control characters would let a crafted `sub` forge log lines.
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_control())
                .take(256)
                .collect::<String>()
        };
        let subject = clean(subject);
        let name = match client.map(clean).filter(|c| !c.is_empty() && *c != subject) {
            Some(client) => format!("{subject} (client {client})"),
            None => subject,
        };
        Self {
            kind: Kind::OAuth,
            name: name.into(),
        }
    }

    /// The principal as it appears in logs.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_principal_names_subject_and_client() {
        assert_eq!(Principal::oauth("alice", None).as_str(), "alice");
        assert_eq!(
            Principal::oauth("alice", Some("app-1")).as_str(),
            "alice (client app-1)"
        );
        // Client-credentials tokens often have sub == client_id.
        assert_eq!(Principal::oauth("app-1", Some("app-1")).as_str(), "app-1");
        assert_eq!(Principal::oauth("a\nb", None).as_str(), "ab");
        assert_ne!(
            Principal::oauth("static-token", Some("x")),
            Principal::static_token()
        );
    }
}
