//! Server certificates: a chain and its key loaded and checked together
//! (the key matches; the dates are looked at), and the SNI resolver that
//! picks one per handshake by the name the client asked for.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{bad_file, certs_from_pem, fingerprint, key_from_pem, load_certs};
use crate::error::Result;

/// Where a certificate and its key came from: files are re-read on reload.
#[derive(Debug, Clone)]
pub(super) enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

/// One certificate chain with its key, and the DNS names it serves.
#[derive(Clone)]
pub(super) struct Identity {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) names: Vec<String>,
    pub(super) fingerprint: String,
    pub(super) source: Source,
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Identity {
    pub(super) fn from_files(cert: &Path, key: &Path) -> Result<(Identity, Vec<String>)> {
        let certs = load_certs(cert)?;
        let key_der = super::load_key(key)?;
        let what = format!("certificate {} with key {}", cert.display(), key.display());
        let mut made = Identity::new(certs, key_der, &what, &cert.display().to_string())?;
        made.0.source = Source::Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        Ok(made)
    }

    pub(super) fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<(Identity, Vec<String>)> {
        let certs = certs_from_pem(cert_pem, "certificate (PEM)")?;
        let key = key_from_pem(key_pem, "private key (PEM)")?;
        Identity::new(
            certs,
            key,
            "certificate (PEM) with its key",
            "certificate (PEM)",
        )
    }

    /// `pair` names the certificate and key together (for a mismatch),
    /// `cert_name` the certificate alone (for dates).
    fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        pair: &str,
        cert_name: &str,
    ) -> Result<(Identity, Vec<String>)> {
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad_file(pair, format_args!("unusable private key ({e})")))?;
        let certified = CertifiedKey::new(certs, signing);
        match certified.keys_match() {
            Ok(()) => {}
            // A key type whose public half rustls cannot derive: the
            // handshake will tell.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(bad_file(
                    pair,
                    format_args!("the private key does not match the certificate"),
                ));
            }
            Err(e) => return Err(bad_file(pair, format_args!("{e}"))),
        }
        let leaf = certified.cert[0].clone();
        let (names, warnings) = inspect(&leaf, cert_name)?;
        Ok((
            Identity {
                key: Arc::new(certified),
                names,
                fingerprint: fingerprint(&leaf),
                source: Source::Memory,
            },
            warnings,
        ))
    }
}

/// The leaf's DNS names (for SNI) and a warning if today is outside its
/// validity dates.
fn inspect(leaf: &[u8], what: &str) -> Result<(Vec<String>, Vec<String>)> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| bad_file(what, format_args!("not a valid X.509 certificate ({e})")))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    let mut warnings = Vec::new();
    if now > validity.not_after {
        warnings.push(format!(
            "{what}: certificate expired on {} (clients will refuse it)",
            validity.not_after
        ));
    } else if now < validity.not_before {
        warnings.push(format!(
            "{what}: certificate not valid before {} (clients will refuse it)",
            validity.not_before
        ));
    }
    Ok((names, warnings))
}

/// Picks a certificate by the name the client asked for (SNI), the first
/// one otherwise.
#[derive(Clone)]
pub(super) struct SniResolver {
    pub(super) identities: Vec<Identity>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl SniResolver {
    pub(super) fn choose(&self, server_name: Option<&str>) -> &Identity {
        let found = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.identities
                .iter()
                .find(|i| i.names.iter().any(|n| n == &name))
                .or_else(|| {
                    self.identities
                        .iter()
                        .find(|i| i.names.iter().any(|n| wildcard_matches(n, &name)))
                })
        });
        found.unwrap_or(&self.identities[0])
    }
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(suffix), Some((label, rest))) => !label.is_empty() && rest == suffix,
        _ => false,
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(client_hello.server_name()).key.clone())
    }
}
