//! `tcpkit serve`'s TLS flags -> a checked [`TlsConfig`], before any socket
//! opens: files are read and parsed as clap parses the flag (a missing or
//! non-PEM file exits 2 naming the flag and the file), pairs are checked
//! (the key matches its certificate) when the config is built.

use std::path::PathBuf;
use std::time::Duration;

use tcpkit::endpoint::HostPort;
use tcpkit::server::Listen;
use tcpkit::tls::{TlsConfig, TlsVersion};

use super::values;

/// The TLS flags of `tcpkit serve`.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("tls_on").multiple(true).args(["tls", "tls_cert"]))]
pub struct TlsArgs {
    /// Serve TLS with an ephemeral self-signed certificate (ECDSA P-256) for
    /// localhost and the listen address; its SHA-256 fingerprint is printed
    /// on stderr for clients to pin.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    tls: bool,
    /// Serve TLS with this certificate chain (PEM, leaf first). Repeat with
    /// --tls-key for more certificates: the first is the default, the
    /// others are chosen by the name the client asks for (SNI) among their
    /// DNS names.
    #[arg(long, value_name = "FILE", action = clap::ArgAction::Append, value_parser = cert_file, requires = "tls_key")]
    tls_cert: Vec<PathBuf>,
    /// The private key (PEM) of the --tls-cert given in the same position.
    #[arg(long, value_name = "FILE", action = clap::ArgAction::Append, value_parser = key_file, requires = "tls_cert")]
    tls_key: Vec<PathBuf>,
    /// Mutual TLS: require a client certificate signed by a CA in this PEM
    /// file (the client's subject is logged with its endpoint, -v).
    #[arg(long, value_name = "FILE", value_parser = cert_file, requires = "tls_on")]
    tls_client_ca: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference (h2,http/1.1).
    #[arg(long, value_name = "LIST", value_parser = alpn_list, requires = "tls_on")]
    alpn: Option<AlpnList>,
    /// Lowest TLS version accepted: 1.2 or 1.3.
    #[arg(long, value_name = "VERSION", value_parser = tls_version, requires = "tls_on")]
    tls_min: Option<TlsVersion>,
    /// Close a client that has not finished its TLS handshake in this long
    /// (counted from accept).
    #[arg(long, value_name = "DURATION", value_parser = handshake_timeout, default_value = "10s", requires = "tls_on")]
    tls_handshake_timeout: Duration,
    /// Most TLS handshakes past their ClientHello at once; more wait within
    /// their deadline (half-open clients that never finish a ClientHello
    /// take none).
    #[arg(long, value_name = "N", value_parser = values::count(1, values::MAX_CONNECTIONS), default_value_t = tcpkit::tls::DEFAULT_MAX_HANDSHAKES, requires = "tls_on")]
    max_handshakes: usize,
}

/// The ALPN list as parsed (clap needs a `Clone + Send + Sync` type).
#[derive(Debug, Clone)]
pub struct AlpnList(pub Vec<String>);

fn cert_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    tcpkit::tls::load_certs(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

fn key_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    tcpkit::tls::load_key(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

pub fn alpn_list(text: &str) -> Result<AlpnList, String> {
    let protocols: Vec<String> = text.split(',').map(|p| p.trim().to_owned()).collect();
    if let Some(bad) = protocols.iter().find(|p| p.is_empty() || p.len() > 255) {
        return Err(format!(
            "each protocol must be 1 to 255 bytes, not {:?} (e.g. h2,http/1.1)",
            bad
        ));
    }
    Ok(AlpnList(protocols))
}

pub fn tls_version(text: &str) -> Result<TlsVersion, String> {
    match text.trim() {
        "1.2" => Ok(TlsVersion::Tls12),
        "1.3" => Ok(TlsVersion::Tls13),
        other => Err(format!("{other:?} is not 1.2 or 1.3")),
    }
}

fn handshake_timeout(text: &str) -> Result<Duration, String> {
    let d = values::duration(text)?;
    if d.is_zero() {
        return Err("must be more than 0 (a handshake takes a round trip or two)".to_owned());
    }
    Ok(d)
}

/// What TLS `serve` runs with, and what to say about it.
pub struct Tls {
    pub config: TlsConfig,
    /// Set for `--tls`: the ephemeral certificate's fingerprint.
    pub self_signed_fingerprint: Option<String>,
}

impl TlsArgs {
    /// Whether any TLS flag turns TLS on.
    pub fn enabled(&self) -> bool {
        self.tls || !self.tls_cert.is_empty()
    }

    /// The checked configuration (`None`: plain TCP). `listen` and
    /// `listen_text` name the certificate `--tls` makes.
    pub fn config(
        &self,
        listen: &Listen,
        listen_text: Option<&str>,
    ) -> anyhow::Result<Option<Tls>> {
        if !self.enabled() {
            return Ok(None);
        }
        let (mut config, fingerprint) = if self.tls {
            let names = self_signed_names(listen, listen_text);
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (config, fp) = TlsConfig::self_signed(&names)?;
            (config, Some(fp))
        } else {
            (self.certificates()?, None)
        };
        if let Some(ca) = &self.tls_client_ca {
            config = config
                .client_ca_file(ca)
                .map_err(|e| usage("--tls-client-ca", &e))?;
        }
        if let Some(AlpnList(protocols)) = &self.alpn {
            config = config.alpn(protocols);
        }
        if let Some(min) = self.tls_min {
            config = config.min_version(min);
        }
        config = config
            .handshake_timeout(self.tls_handshake_timeout)
            .max_handshakes(self.max_handshakes);
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        Ok(Some(Tls {
            config,
            self_signed_fingerprint: fingerprint,
        }))
    }

    /// The --tls-cert/--tls-key pairs, in order, the first the default.
    fn certificates(&self) -> anyhow::Result<TlsConfig> {
        if self.tls_cert.len() != self.tls_key.len() {
            return Err(values::invalid(
                "--tls-key",
                format_args!(
                    "each --tls-cert needs its --tls-key ({} certificates, {} keys)",
                    self.tls_cert.len(),
                    self.tls_key.len()
                ),
            ));
        }
        let mut pairs = self.tls_cert.iter().zip(&self.tls_key);
        let Some((cert, key)) = pairs.next() else {
            return Err(values::invalid("--tls-cert", "no certificate given"));
        };
        let mut config = TlsConfig::from_files(cert, key).map_err(|e| usage("--tls-key", &e))?;
        for (cert, key) in pairs {
            config = config
                .with_sni_files(cert, key)
                .map_err(|e| usage("--tls-key", &e))?;
        }
        Ok(config)
    }
}

/// A certificate file that cannot be used: a usage error (exit 2) naming
/// the flag and the file, keeping the library error's code (1013 for a
/// bad file, the errno for a missing one).
fn usage(flag: &str, e: &tcpkit::Error) -> anyhow::Error {
    tcpkit::Error::new(
        tcpkit::ErrorKind::InvalidConfig,
        e.code(),
        format!("{flag}: {}", e.message()),
    )
    .into()
}

/// `localhost`, and the address (or name) the server listens on; for a
/// wildcard, the loopback addresses.
fn self_signed_names(listen: &Listen, listen_text: Option<&str>) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Some(tcpkit::endpoint::Host::Name(name)) = listen_text
        .and_then(|t| HostPort::parse(t).ok())
        .map(|p| p.host().clone())
    {
        names.push(name);
    }
    match listen {
        Listen::At(ep) if !ep.is_unspecified() => names.push(ep.ip().to_string()),
        _ => names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]),
    }
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tcpkit::{Endpoint, ErrorKind};

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(argv: &[&str]) -> Result<TlsArgs, clap::Error> {
        T::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).map(|t| t.tls)
    }

    fn write_pair(dir: &std::path::Path, stem: &str) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![format!("{stem}.test")]).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&c, made.cert.pem()).unwrap();
        std::fs::write(&k, made.signing_key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    fn kind(err: &anyhow::Error) -> Option<ErrorKind> {
        err.downcast_ref::<tcpkit::Error>().map(tcpkit::Error::kind)
    }

    #[test]
    fn options_need_tls_and_values_are_checked_as_parsed() {
        let listen = Listen::At(Endpoint::loopback_v4(0));
        assert!(parse(&[]).unwrap().config(&listen, None).unwrap().is_none());
        for argv in [
            &["--alpn", "h2"][..],
            &["--tls-min", "1.3"],
            &["--max-handshakes", "5"],
            &["--tls-handshake-timeout", "1s"],
        ] {
            let err = parse(argv).expect_err("needs --tls or --tls-cert");
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{argv:?}"
            );
        }
        assert!(parse(&["--tls", "--tls-handshake-timeout", "0"]).is_err());
        assert!(parse(&["--tls", "--alpn", "h2,,x"]).is_err());
        assert!(parse(&["--tls", "--tls-min", "1.1"]).is_err());
        let err = parse(&["--tls-cert", "/nonexistent/cert.pem"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let args = parse(&["--tls", "--alpn", "h2,http/1.1", "--tls-min", "1.3"]).unwrap();
        let tls = args.config(&listen, None).unwrap().expect("TLS on");
        assert_eq!(
            tls.self_signed_fingerprint.as_deref(),
            Some(tls.config.fingerprint())
        );
    }

    #[test]
    fn pairs_are_counted_and_matched() {
        let dir = tempfile::tempdir().unwrap();
        let (a, ak) = write_pair(dir.path(), "a");
        let (b, bk) = write_pair(dir.path(), "b");
        let listen = Listen::Any(0);
        let args = parse(&[
            "--tls-cert",
            &a,
            "--tls-key",
            &ak,
            "--tls-cert",
            &b,
            "--tls-key",
            &bk,
        ])
        .unwrap();
        args.config(&listen, None).unwrap().expect("two pairs");

        let args = parse(&["--tls-cert", &a, "--tls-key", &ak, "--tls-cert", &b]).unwrap();
        let err = args
            .config(&listen, None)
            .err()
            .expect("a certificate without a key");
        assert_eq!(kind(&err), Some(ErrorKind::InvalidConfig));
        assert!(err.to_string().contains("--tls-key"), "{err}");

        // a's certificate with b's key: usage error naming both files.
        let args = parse(&["--tls-cert", &a, "--tls-key", &bk]).unwrap();
        let err = args.config(&listen, None).err().expect("mismatch");
        assert_eq!(kind(&err), Some(ErrorKind::InvalidConfig));
        let code = err.downcast_ref::<tcpkit::Error>().map(tcpkit::Error::code);
        assert_eq!(code, Some(tcpkit::error::code::BAD_CERTIFICATE_FILE));
        let text = err.to_string();
        assert!(text.contains("a.pem") && text.contains("b.key"), "{text}");
        assert!(parse(&["--tls", "--tls-cert", &a, "--tls-key", &ak]).is_err());
    }

    #[test]
    fn the_self_signed_certificate_names_localhost_and_the_listen_address() {
        let names = self_signed_names(&Listen::At(Endpoint::loopback_v6(0)), Some("[::1]:0"));
        assert_eq!(names, ["localhost", "::1"]);
        let names = self_signed_names(&Listen::Any(0), None);
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
        let names = self_signed_names(&Listen::At(Endpoint::loopback_v4(0)), Some("localhost:0"));
        assert_eq!(names, ["localhost", "127.0.0.1"]);
    }
}
