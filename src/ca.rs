//! Reading the `--ca-cert` file: shared by configuration checks (so a bad
//! file stops start-up) and the BigID client (which trusts what it holds).

use std::path::Path;

use crate::error_chain::chain;

/// Why the CA file cannot be used. Messages name the file and the problem.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CaError {
    /// The file could not be read.
    #[error("cannot read BIGID_CA_CERT file {path}: {cause}")]
    Unreadable {
        /// The file, as shown to the operator.
        path: String,
        /// What the file system said.
        cause: String,
    },
    /// The file is not PEM.
    #[error("BIGID_CA_CERT file {path} is not valid PEM: {cause}")]
    NotPem {
        /// The file, as shown to the operator.
        path: String,
        /// What the PEM parser said.
        cause: String,
    },
    /// The file is PEM but holds no certificate.
    #[error(
        "BIGID_CA_CERT file {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    )]
    Empty {
        /// The file, as shown to the operator.
        path: String,
    },
}

/// Reads one or more PEM certificates; a clear error names the file and the problem.
pub fn load_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, CaError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| CaError::Unreadable {
        path: shown(),
        cause: e.to_string(),
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| CaError::NotPem {
        path: shown(),
        cause: chain(&e),
    })?;
    if certs.is_empty() {
        return Err(CaError::Empty { path: shown() });
    }
    Ok(certs)
}
