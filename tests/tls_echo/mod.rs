//! For the TLS client and bench tests: a CA and certificates made at test
//! time (rcgen), and a tokio-rustls echo server on 127.0.0.1:0.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a leaf it signed, on disk as PEM.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: CertificateDer<'static>,
    ca: rcgen::Issuer<'static, KeyPair>,
}

/// A certificate with its key (DER) and PEM files.
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tcpkit test CA");
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("CA cert");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write CA");
        Pki {
            dir,
            ca_cert: cert.der().clone(),
            ca: rcgen::Issuer::new(params, key),
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `names` (DNS names or IP addresses), `cn` its subject,
    /// valid now (rcgen's default dates) or expired in 2001.
    pub fn leaf(&self, file: &str, cn: &str, names: &[&str], validity: Validity) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if validity == Expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Leaf {
            chain: vec![cert.der().clone(), self.ca_cert.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_path,
            key_path,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Expired,
}
use Validity::Expired;

/// How the test server behaves.
#[derive(Clone, Default)]
pub struct ServerOpts {
    pub alpn: Vec<Vec<u8>>,
    /// Require client certificates issued by this CA.
    pub client_ca: Option<CertificateDer<'static>>,
    pub tls12_only: bool,
    /// Close the TCP connection at the client's EOF without a close_notify.
    pub no_close_notify: bool,
}

/// A TLS echo server on 127.0.0.1:0, on its own thread and runtime: echoes
/// until the client's close_notify/EOF, then closes (close_notify + FIN).
/// Dropped: its runtime stops.
pub struct EchoServer {
    pub port: u16,
    _stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // The sender drops with self, which stops the accept loop.
        let _ = self.thread.take();
    }
}

pub fn echo_server(leaf: &Leaf, opts: ServerOpts) -> EchoServer {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::ALL_VERSIONS
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions");
    let builder = match &opts.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).expect("client CA");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("server config");
    config.alpn_protocols = opts.alpn.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local addr").port();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
                    _ = &mut stop_rx => return,
                };
                let acceptor = acceptor.clone();
                let no_close_notify = opts.no_close_notify;
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tls.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    if no_close_notify {
                        // Straight to the TCP FIN: what a truncation looks like.
                        let _ = tls.get_mut().0.shutdown().await;
                    } else {
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
    });
    EchoServer {
        port,
        _stop: stop_tx,
        thread: Some(thread),
    }
}
