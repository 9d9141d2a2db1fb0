//! The client's certificate verifiers besides webpki's: a pin (exactly one
//! certificate, by SHA-256 fingerprint) and none at all (`--insecure`).
//! Both still verify the handshake signature, so the peer must hold the
//! key of the certificate it sent.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::client::invalid;
use crate::error::Result;

/// 64 hex digits, `:` separators and an optional `sha256:` prefix allowed.
pub(super) fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let bad = |why: &str| invalid(format_args!("pin {text:?}: {why}"));
    let trimmed = text.trim();
    let trimmed = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .or_else(|| trimmed.strip_prefix("sha256/"))
        .unwrap_or(trimmed);
    let hex: Vec<u8> = trimmed.bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 {
        return Err(bad(&format!(
            "expected a SHA-256 fingerprint, 64 hex digits (colons optional), got {}",
            hex.len()
        )));
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => out[i] = (hi * 16 + lo) as u8,
            _ => return Err(bad("not a hex digit in it")),
        }
    }
    Ok(out)
}

/// Accepts exactly one certificate by fingerprint (`pin`), or any
/// certificate (`pin: None`, `--insecure`); signatures verified either way
/// (the peer holds the key of whatever it sent), which costs one
/// verification per handshake.
#[derive(Debug)]
pub(super) struct Pinned {
    pub(super) pin: Option<[u8; 32]>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

/// The error a pin mismatch carries (as a certificate error).
struct PinMismatch {
    got: String,
}

/// As `Display`: rustls shows an `Other` certificate error with `{:?}`.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its SHA-256 fingerprint {} is not the pinned one",
            self.got
        )
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity);
        if digest.as_ref() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    got: super::fingerprint(end_entity),
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn fingerprints_parse_with_or_without_colons_in_any_case() {
        let fp = super::super::fingerprint(b"x");
        let a = parse_fingerprint(&fp).expect("with colons");
        let b = parse_fingerprint(&fp.replace(':', "").to_lowercase()).expect("bare lowercase");
        let c = parse_fingerprint(&format!("sha256:{fp}")).expect("prefixed");
        assert_eq!(a, b);
        assert_eq!(a, c);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"x");
        assert_eq!(&a[..], digest.as_ref());

        let err = parse_fingerprint("AB:CD").expect_err("short");
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("\"AB:CD\""), "{err}");
        let err = parse_fingerprint(&"zz".repeat(32)).expect_err("not hex");
        assert!(err.message().contains("hex digit"), "{err}");
    }
}
