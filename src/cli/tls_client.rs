//! The TLS client flags of `tcpkit connect` and `tcpkit bench`
//! (`--tls`, `--ca`, `--pin`, `--insecure`, `--sni`, `--alpn`,
//! `--cert/--key`, `--tls-min`) -> a checked [`TlsClientConfig`] before
//! any socket opens, and `-v`'s handshake lines (also `listen`'s).

use std::path::PathBuf;

use tcpkit::tls::TlsClientConfig;

use super::values;

/// TLS client options shared by `connect` and `bench`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsClientArgs {
    /// Speak TLS: the server's certificate is verified against the system's
    /// root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set) and the
    /// name connected to. Each flag below implies --tls.
    #[arg(long)]
    pub tls: bool,
    /// Trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Accept exactly the certificate with this SHA-256 fingerprint (as
    /// `serve --tls` prints it; colons and case optional), whatever its
    /// issuer, name or dates.
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pub pin: Option<String>,
    /// Accept any certificate (no protection against an active attacker; a
    /// warning says so).
    #[arg(long)]
    pub insecure: bool,
    /// The server name to send (SNI) and verify, instead of the host connected to.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Offer these ALPN protocols, comma-separated, most preferred first
    /// (e.g. `h2,http/1.1`).
    #[arg(long, value_name = "LIST")]
    pub alpn: Option<String>,
    /// Present this client certificate (PEM, leaf first) when the server
    /// asks for one (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The oldest TLS version to accept: 1.2 (default) or 1.3.
    #[arg(long, value_name = "VERSION", value_parser = tls_version)]
    pub tls_min: Option<tcpkit::tls::TlsVersion>,
}

fn tls_version(text: &str) -> Result<tcpkit::tls::TlsVersion, String> {
    tcpkit::tls::client::parse_version(text).map_err(|e| e.message().to_owned())
}

impl TlsClientArgs {
    /// Whether any flag asks for TLS.
    pub fn enabled(&self) -> bool {
        self.tls
            || self.ca.is_some()
            || self.pin.is_some()
            || self.insecure
            || self.sni.is_some()
            || self.alpn.is_some()
            || self.cert.is_some()
            || self.tls_min.is_some()
    }

    /// The client configuration these flags ask for (files read now, each
    /// error naming its flag and file), or `None` without TLS.
    pub fn config(&self) -> anyhow::Result<Option<TlsClientConfig>> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut config = TlsClientConfig::new();
        if let Some(path) = &self.ca {
            config = config.ca_file(path).map_err(|e| flag_error("--ca", e))?;
        }
        if let Some(pin) = &self.pin {
            config = config.pin(pin).map_err(|e| flag_error("--pin", e))?;
        }
        if self.insecure {
            config = config.insecure();
        }
        if let Some(name) = &self.sni {
            check_server_name("--sni", name)?;
            config = config.server_name(name.clone());
        }
        if let Some(list) = &self.alpn {
            config = config.alpn(parse_alpn(list)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let certs = tcpkit::tls::load_certs(cert).map_err(|e| flag_error("--cert", e))?;
            let key_der = tcpkit::tls::load_key(key).map_err(|e| flag_error("--key", e))?;
            let what = format!("--cert {} and --key {}", cert.display(), key.display());
            config = config.client_auth(certs, key_der, what);
        }
        if let Some(version) = self.tls_min {
            config = config.min_version(version);
        }
        Ok(Some(config))
    }
}

/// A library error about a flag's value as a usage error (exit 2) naming
/// the flag, keeping the error's code.
fn flag_error(flag: &str, e: tcpkit::Error) -> anyhow::Error {
    tcpkit::Error::new(
        tcpkit::ErrorKind::InvalidConfig,
        e.code(),
        format!("{flag}: {}", e.message()),
    )
    .into()
}

/// `--sni` (or `flag`): a DNS name (an IP address sends no SNI, so it is
/// refused here).
pub fn check_server_name(flag: &str, name: &str) -> anyhow::Result<()> {
    use rustls_pki_types::ServerName;
    match ServerName::try_from(name) {
        Ok(ServerName::DnsName(_)) => Ok(()),
        Ok(_) => Err(values::invalid(
            flag,
            format_args!("{name:?} is an IP address; SNI carries names only"),
        )),
        Err(e) => Err(values::invalid(
            flag,
            format_args!("{name:?} is not a DNS name ({e})"),
        )),
    }
}

/// `--alpn`: comma-separated protocol names, each 1..=255 bytes.
pub fn parse_alpn(list: &str) -> anyhow::Result<Vec<String>> {
    let protocols: Vec<String> = list.split(',').map(|p| p.trim().to_owned()).collect();
    for p in &protocols {
        if p.is_empty() || p.len() > 255 {
            return Err(values::invalid(
                "--alpn",
                format_args!("{list:?}: each protocol must be 1 to 255 bytes"),
            ));
        }
    }
    Ok(protocols)
}

/// `-v`'s handshake lines (connect and listen).
pub fn print_handshake(info: &tcpkit::tls::client::HandshakeInfo) {
    eprintln!(
        "TLS {} {}{}, ALPN {}",
        info.version,
        info.cipher_suite,
        if info.resumed { " (resumed)" } else { "" },
        info.alpn.as_deref().unwrap_or("none"),
    );
    match (&info.peer_subject, &info.peer_fingerprint) {
        (Some(subject), Some(fp)) => {
            eprintln!("peer certificate: {subject}");
            eprintln!("peer certificate SHA-256: {fp}");
        }
        _ => eprintln!("peer certificate: none"),
    }
}
