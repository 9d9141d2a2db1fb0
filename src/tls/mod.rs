//! TLS on rustls, as a layer over a connected stream: nothing above it
//! (services, the bench's verification, the client's pipe) knows whether
//! its bytes are encrypted.
//!
//! This file holds what the server and client sides share: reading
//! certificates and keys from PEM files (errors name the file and say what
//! is wrong with it), certificate fingerprints for pinning, and the mapping
//! of rustls' errors onto the crate's [`Error`].
//!
//! rustls keeps configuration and connection apart, and so does this
//! module: a configuration is built once (and swapped whole on reload), a
//! connection is a stream wrapped with it.

mod accept;
pub mod client;
pub use accept::{ServerTlsStream, TlsAcceptor};
pub use client::{TlsClientConfig, TlsConnector};
mod verify;

use std::fmt::Write as _;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, ErrorKind, code};

mod identity;
mod live;
mod server;
pub(crate) use live::{Live, server_info};
pub use live::{TlsReloader, subject};
pub use server::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HANDSHAKES, DEFAULT_SESSION_CACHE, TlsConfig, TlsVersion,
};

/// Certificates from a PEM file, leaf first (as a server presents its
/// chain). A file that is missing is an I/O error naming it (with the OS
/// code); one with no `CERTIFICATE` block, or a damaged one, is
/// [`ErrorKind::BadCertificateFile`] naming it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = read_file(path, "certificate")?;
    certs_from_pem(&pem, &path.display().to_string())
}

/// A private key (PKCS#8, PKCS#1 or SEC1) from a PEM file; errors as
/// [`load_certs`].
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = read_file(path, "private key")?;
    key_from_pem(&pem, &path.display().to_string())
}

/// Certificates from PEM text; `what` names the input in errors.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(what, format_args!("not a valid PEM certificate ({e})")))?;
    if certs.is_empty() {
        return Err(bad_file(
            what,
            format_args!("no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)"),
        ));
    }
    Ok(certs)
}

/// A private key from PEM text; `what` names the input in errors.
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => bad_file(
            what,
            format_args!("no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)"),
        ),
        e => bad_file(what, format_args!("not a valid PEM private key ({e})")),
    })
}

/// The SHA-256 fingerprint of a certificate (of its DER bytes), as
/// uppercase hex pairs joined by `:` (the form `openssl x509 -fingerprint
/// -sha256` prints, and `connect --pin` takes).
///
/// ```
/// let fp = tcpkit::tls::fingerprint(b"not really a certificate");
/// assert_eq!(fp.len(), 32 * 3 - 1);
/// assert!(fp.split(':').all(|pair| pair.len() == 2));
/// ```
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// A rustls error during a handshake or on a record, as the crate's
/// error: certificate problems are [`ErrorKind::Certificate`] (their own
/// exit code in the CLI), the rest [`ErrorKind::Tls`]. `context` names
/// the peer or what was being done.
pub fn tls_error(err: &rustls::Error, context: impl std::fmt::Display) -> Error {
    use rustls::Error as E;
    let certificate = matches!(
        err,
        E::InvalidCertificate(_)
            | E::NoCertificatesPresented
            | E::InvalidCertRevocationList(_)
            | E::AlertReceived(
                rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnsupportedCertificate
                    | rustls::AlertDescription::CertificateRevoked
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateRequired
            )
    );
    if certificate {
        Error::new(
            ErrorKind::Certificate,
            code::CERTIFICATE,
            format!("{context}: certificate refused: {err}"),
        )
    } else {
        Error::new(
            ErrorKind::Tls,
            code::TLS,
            format!("{context}: TLS error: {err}"),
        )
    }
}

/// A handshake's `io::Error` (tokio-rustls wraps rustls' error in one) as
/// the crate's error: the rustls error inside keeps its certificate/TLS
/// kind, a plain I/O failure keeps its OS code.
pub fn handshake_error(err: std::io::Error, context: impl std::fmt::Display) -> Error {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls_error(tls, context),
        None => Error::io(err, format_args!("{context}: TLS handshake")),
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(e, format_args!("read {what} {}", path.display())))
}

fn bad_file(what: &str, why: std::fmt::Arguments<'_>) -> Error {
    Error::new(
        ErrorKind::BadCertificateFile,
        code::BAD_CERTIFICATE_FILE,
        format!("{what}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("rcgen makes a certificate");
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn pem_files_load_and_bad_ones_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, &cert).expect("write");
        std::fs::write(&key_path, &key).expect("write");
        assert_eq!(load_certs(&cert_path).expect("certs").len(), 1);
        load_key(&key_path).expect("key");

        // The key file given as the certificate, and the reverse.
        let err = load_certs(&key_path).expect_err("a key is not a certificate");
        assert_eq!(err.kind(), ErrorKind::BadCertificateFile);
        assert!(err.message().contains("key.pem"), "{err}");
        let err = load_key(&cert_path).expect_err("a certificate is not a key");
        assert_eq!(err.kind(), ErrorKind::BadCertificateFile);
        assert!(err.message().contains("cert.pem"), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = load_certs(&missing).expect_err("missing");
        assert_eq!(err.os_code(), Some(libc::ENOENT));
        assert!(err.message().contains("missing.pem"), "{err}");
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der() {
        // SHA-256 of the empty input.
        assert_eq!(
            fingerprint(b"").replace(':', ""),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        );
    }

    #[test]
    fn certificate_errors_are_their_own_kind() {
        let err = tls_error(
            &rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
            "connect 127.0.0.1:1",
        );
        assert_eq!(err.kind(), ErrorKind::Certificate);
        assert_eq!(err.code(), code::CERTIFICATE);
        let err = tls_error(&rustls::Error::General("x".into()), "connect 127.0.0.1:1");
        assert_eq!(err.kind(), ErrorKind::Tls);
        assert!(err.message().starts_with("connect 127.0.0.1:1: TLS error"));
    }
}
