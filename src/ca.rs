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
    /// Not a regular file (a FIFO would block start-up, a device could
    /// feed it without end).
    #[error("BIGID_CA_CERT {path} is not a regular file; point it at a PEM file")]
    NotAFile {
        /// The file, as shown to the operator.
        path: String,
    },
    /// Larger than any CA bundle.
    #[error("BIGID_CA_CERT file {path} is larger than {max} bytes; it should hold PEM certificates only", max = MAX_CA_FILE_BYTES)]
    TooLarge {
        /// The file, as shown to the operator.
        path: String,
    },
    /// A PEM block that is not a valid X.509 certificate.
    #[error("BIGID_CA_CERT file {path}: certificate {index} is not a valid certificate: {cause}")]
    BadCertificate {
        /// The file, as shown to the operator.
        path: String,
        /// Which certificate in the file, from 1.
        index: usize,
        /// What the certificate parser said.
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

/// Largest CA file read: the system's whole root bundle is about 200 KB.
pub const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Reads one or more PEM certificates, each parsed in full as a trust anchor
/// (so a broken one stops start-up rather than failing every call later);
/// a clear error names the file and the problem.
pub fn load_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, CaError> {
    use std::io::Read;

    use rustls::pki_types::{CertificateDer, pem::PemObject};

    let shown = || path.display().to_string();
    let unreadable = |e: std::io::Error| CaError::Unreadable {
        path: shown(),
        cause: e.to_string(),
    };
    // Checked before opening: opening a FIFO blocks until someone writes.
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Err(CaError::NotAFile { path: shown() });
    }
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(unreadable)?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(CaError::TooLarge { path: shown() });
    }
    let mut certs = Vec::new();
    let mut anchors = rustls::RootCertStore::empty();
    for (i, der) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let der = der.map_err(|e| CaError::NotPem {
            path: shown(),
            cause: e.to_string(),
        })?;
        anchors
            .add(der.clone())
            .map_err(|e| CaError::BadCertificate {
                path: shown(),
                index: i + 1,
                cause: e.to_string(),
            })?;
        let cert = reqwest::Certificate::from_der(&der).map_err(|e| CaError::NotPem {
            path: shown(),
            cause: chain(&e),
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(CaError::Empty { path: shown() });
    }
    Ok(certs)
}
