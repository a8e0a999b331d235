//! TLS: the roots the client trusts, and what a failed handshake means.

use std::time::Duration;

use super::Error;
use crate::error_chain::chain;

/// What was wrong with BigID's certificate, as far as the fix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// Signed by a CA that is neither a system root nor in `BIGID_CA_CERT`.
    UnknownCa,
    /// Valid, but not for the host name in `BIGID_URL`.
    WrongHost,
    /// Expired or not yet valid.
    Expired,
    /// Anything else (protocol versions, a broken handshake, …).
    Other,
}

impl TlsProblem {
    pub(super) fn of(error: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                Self::UnknownCa
            }
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => Self::WrongHost,
            rustls::Error::InvalidCertificate(
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. },
            ) => Self::Expired,
            _ => Self::Other,
        }
    }

    /// What the operator can do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Self::UnknownCa => {
                "Its certificate is not signed by a CA this server trusts: if the deployment \
                 uses a private CA, point BIGID_CA_CERT at that CA's PEM certificate"
            }
            Self::WrongHost => {
                "Its certificate is not issued for this host name: use the name the \
                 certificate names in BIGID_URL"
            }
            Self::Expired => {
                "Its certificate has expired or is not yet valid (or this machine's clock is off)"
            }
            Self::Other => {
                "If the deployment uses a private CA, point BIGID_CA_CERT at its PEM certificate"
            }
        }
    }
}

/// What the reqwest client is built from. The `--ca-cert` roots are read
/// and parsed in [`Client::new`](super::Client::new), so a bad file still stops start-up.
pub(super) struct HttpSettings {
    pub(super) connect_timeout: Duration,
    pub(super) no_proxy: bool,
    pub(super) extra_roots: Vec<reqwest::Certificate>,
}

impl HttpSettings {
    pub(super) fn build(&self) -> Result<reqwest::Client, Error> {
        // No client-wide timeout: `send` holds one deadline across all attempts.
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bigid-auth-mcp/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            // Below the 75 s keep-alive of nginx, which fronts most BigID
            // deployments, so an idle connection is dropped here first.
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if self.no_proxy {
            builder = builder.no_proxy();
        }
        if !self.extra_roots.is_empty() {
            builder = builder.tls_certs_merge(self.extra_roots.clone());
        }
        builder
            .build()
            .map_err(|e| Error::Setup(format!("cannot set up the HTTP client: {}", chain(&e))))
    }
}

/// The rustls error behind a failure, if any. `io::Error::source` skips the
/// error it wraps, and hyper-rustls wraps rustls' errors in an `io::Error`
/// (which hyper-util wraps in another), so wrapped errors are followed
/// explicitly.
pub fn tls_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(inner);
        let found = tls_cause(&outer).expect("found");
        assert_eq!(TlsProblem::of(found), TlsProblem::UnknownCa);
        assert!(tls_cause(&std::io::Error::other("plain")).is_none());
    }
}
