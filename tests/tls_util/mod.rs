//! Shared by `tests/tls_interop.rs` and `tests/tls_hostile.rs`: a test PKI
//! made at test time (no private key is ever committed), a blocking rustls
//! client for hostile and canary clients, outside programs run as guarded
//! child processes, and `tcpkit serve` with its stderr kept for assertions.
//!
//! Certificates are made with `rcgen`, which the crate's `tls` feature
//! already depends on; integration tests see a package's normal
//! dependencies, so no dev-dependency is needed (one would be built for the
//! macOS/FreeBSD lint too, where aws-lc-sys cannot cross-compile). Every key
//! is ECDSA P-256 (rcgen's default), which OpenSSL, ncat and rustls all take.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Every blocking socket operation in these tests has this deadline.
pub const IO_DEADLINE: Duration = Duration::from_secs(10);

/// The names the SNI certificates are for. They are never resolved: the
/// client connects to 127.0.0.1 and only *asks* for the name.
pub const SNI_ONE: &str = "one.tcpkit.test";
/// The second SNI name.
pub const SNI_TWO: &str = "two.tcpkit.test";

/// A certificate and its key, as PEM files and in memory.
pub struct Pair {
    /// The certificate (PEM, leaf only).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate's DER.
    pub der: CertificateDer<'static>,
    /// The key's PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl Pair {
    /// The certificate path as a `&str` (for command lines).
    pub fn cert_arg(&self) -> &str {
        self.cert.to_str().expect("utf-8 temp path")
    }
    /// The key path as a `&str`.
    pub fn key_arg(&self) -> &str {
        self.key.to_str().expect("utf-8 temp path")
    }
    /// The SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` and
    /// `connect --pin` write it.
    pub fn fingerprint(&self) -> String {
        tcpkit::tls::fingerprint(&self.der)
    }
}

/// A throwaway PKI in a temporary directory: a server CA and what it signed,
/// a separate client CA and what it signed, and certificates that must be
/// refused.
pub struct Pki {
    dir: tempfile::TempDir,
    /// The CA every good server certificate chains to (PEM).
    pub ca: PathBuf,
    /// The CA client certificates chain to (`--tls-client-ca`).
    pub client_ca: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server: Pair,
    /// Signed by `ca`, for `localhost`, but expired in 2021.
    pub expired: Pair,
    /// Signed by `ca`, valid now, but only for `wrong.tcpkit.test`.
    pub wrong_name: Pair,
    /// Signed by `ca` for [`SNI_ONE`].
    pub sni_one: Pair,
    /// Signed by `ca` for [`SNI_TWO`].
    pub sni_two: Pair,
    /// Client certificate signed by `client_ca` (CN `tcpkit test client`).
    pub client: Pair,
    /// A client certificate no trusted CA signed (self-signed).
    pub rogue_client: Pair,
}

fn leaf(
    names: &[&str],
    cn: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("certificate names");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert, key)
}

fn make_ca(cn: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert, Issuer::new(params, key))
}

fn write_pair(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> Pair {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    Pair {
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

impl Pki {
    /// Makes every certificate and key, written into a fresh temp dir.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (ca_cert, ca_issuer) = make_ca("tcpkit test CA");
        let ca = d.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("write CA");
        let (client_ca_cert, client_issuer) = ca_cert_for_clients();
        let client_ca = d.join("client-ca.pem");
        std::fs::write(&client_ca, client_ca_cert.pem()).expect("write client CA");

        let server_auth = ExtendedKeyUsagePurpose::ServerAuth;
        let (c, k) = leaf(
            &["localhost", "127.0.0.1"],
            "tcpkit test server",
            server_auth.clone(),
            &ca_issuer,
        );
        let server = write_pair(d, "server", &c, &k);

        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("expired params");
        params
            .distinguished_name
            .push(DnType::CommonName, "tcpkit expired server");
        params.extended_key_usages = vec![server_auth.clone()];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca_issuer).expect("sign expired");
        let expired = write_pair(d, "expired", &cert, &key);

        let (c, k) = leaf(
            &["wrong.tcpkit.test"],
            "tcpkit wrong-name server",
            server_auth.clone(),
            &ca_issuer,
        );
        let wrong_name = write_pair(d, "wrong-name", &c, &k);
        let (c, k) = leaf(&[SNI_ONE], SNI_ONE, server_auth.clone(), &ca_issuer);
        let sni_one = write_pair(d, "sni-one", &c, &k);
        let (c, k) = leaf(&[SNI_TWO], SNI_TWO, server_auth, &ca_issuer);
        let sni_two = write_pair(d, "sni-two", &c, &k);

        let (c, k) = leaf(
            &[],
            "tcpkit test client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &client_issuer,
        );
        let client = write_pair(d, "client", &c, &k);
        let (_, rogue_issuer) = make_ca("tcpkit rogue CA");
        let (c, k) = leaf(
            &[],
            "tcpkit rogue client",
            ExtendedKeyUsagePurpose::ClientAuth,
            &rogue_issuer,
        );
        let rogue_client = write_pair(d, "rogue-client", &c, &k);

        Pki {
            dir,
            ca,
            client_ca,
            server,
            expired,
            wrong_name,
            sni_one,
            sni_two,
            client,
            rogue_client,
        }
    }

    /// The directory everything is in (for files a test adds).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca` as a `&str`.
    pub fn ca_arg(&self) -> &str {
        self.ca.to_str().expect("utf-8 temp path")
    }

    /// `client_ca` as a `&str`.
    pub fn client_ca_arg(&self) -> &str {
        self.client_ca.to_str().expect("utf-8 temp path")
    }

    /// A rustls client configuration trusting `ca`, with no client
    /// certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::new(self.client_builder().with_no_client_auth())
    }

    /// As [`Pki::client_config`], presenting `pair` as the client
    /// certificate.
    pub fn client_config_with(&self, pair: &Pair) -> Arc<rustls::ClientConfig> {
        let key = PrivateKeyDer::Pkcs8(pair.key_der.clone().into());
        Arc::new(
            self.client_builder()
                .with_client_auth_cert(vec![pair.der.clone()], key)
                .expect("client auth cert"),
        )
    }

    fn client_builder(
        &self,
    ) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca).expect("read CA");
        for cert in tcpkit::tls::certs_from_pem(&pem, "test CA").expect("CA PEM") {
            roots.add(cert).expect("add CA");
        }
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
    }
}

fn ca_cert_for_clients() -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    make_ca("tcpkit test client CA")
}

/// The crypto provider the crate uses (aws-lc-rs), named explicitly so no
/// process-wide default is needed.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A blocking TLS client connection.
pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TCP connection to `addr` with deadlines on every read and write.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_DEADLINE).expect("connect");
    s.set_read_timeout(Some(IO_DEADLINE)).expect("read timeout");
    s.set_write_timeout(Some(IO_DEADLINE))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Connects and completes a TLS handshake asking for `name`; the error is
/// rustls' or the socket's.
pub fn try_tls_connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream, std::io::Error> {
    let sock = TcpStream::connect_timeout(&addr, IO_DEADLINE)?;
    sock.set_read_timeout(Some(IO_DEADLINE))?;
    sock.set_write_timeout(Some(IO_DEADLINE))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// [`try_tls_connect`] that panics on failure.
pub fn tls_connect(addr: SocketAddr, name: &str, config: Arc<rustls::ClientConfig>) -> TlsStream {
    try_tls_connect(addr, name, config).unwrap_or_else(|e| panic!("TLS to {addr} as {name}: {e}"))
}

/// One verified echo round trip of `msg` over `tls`.
pub fn echo_round_trip(tls: &mut TlsStream, msg: &[u8]) -> Result<(), String> {
    tls.write_all(msg).map_err(|e| format!("write: {e}"))?;
    tls.flush().map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; msg.len()];
    tls.read_exact(&mut back)
        .map_err(|e| format!("read: {e}"))?;
    if back != msg {
        return Err("echo differs".into());
    }
    Ok(())
}

/// The TLS records a fresh rustls client would send first: its ClientHello
/// (for `name`), as bytes on the wire.
pub fn client_hello(config: Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls to a Vec");
    }
    assert!(out.len() > 100, "a ClientHello is more than 100 bytes");
    assert_eq!(out[0], 0x16, "a handshake record");
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure reproduces.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fails with where two byte strings first differ.
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

// ------------------------------------------------------------ processes

/// Raises this process's soft open-file limit to the hard one; returns it.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    #[allow(clippy::useless_conversion)]
    u64::try_from(lim.rlim_cur).unwrap_or(1024)
}

/// The binary under test: `TCPKIT_BIN` if set, else the one Cargo built.
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("TCPKIT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tcpkit").into())
}

/// Lines a child wrote on one of its pipes, gathered by a thread.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    /// Starts gathering `r`'s lines.
    pub fn gather(r: impl Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let out = lines.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(r);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                out.0.lock().expect("lines").push(line);
                buf.clear();
            }
            out.1.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        lines
    }

    /// Waits (up to `deadline`) until the pipe reached EOF (the child and
    /// every holder of the pipe closed it); whether it did.
    pub fn wait_eof(&self, deadline: Duration) -> bool {
        let start = Instant::now();
        while !self.1.load(std::sync::atomic::Ordering::SeqCst) {
            if start.elapsed() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Everything so far, one line each.
    pub fn text(&self) -> String {
        self.0.lock().expect("lines").join("\n")
    }

    /// Waits (up to `deadline`) for a line for which `pred` holds.
    pub fn wait_for(&self, deadline: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let start = Instant::now();
        loop {
            if let Some(l) = self.0.lock().expect("lines").iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if start.elapsed() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A child process, killed by PID and reaped when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            child,
            name: name.to_owned(),
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for exit; kills the child and fails the test at the deadline.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} (pid {}) did not exit within {deadline:?}",
                    self.name,
                    self.child.id()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the child by PID.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's PID, which is not yet reaped
        // (the Proc owns it and reaps only in wait/drop).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then wait.
    pub fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(deadline)
    }

    /// The child's resident set size, KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open sockets in the child (from /proc/PID/fd).
    pub fn socket_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|t| t.to_string_lossy().starts_with("socket:"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `tcpkit serve` on 127.0.0.1:0 with its stdout and stderr gathered.
pub struct Server {
    /// The process.
    pub proc: Proc,
    /// Where it listens (from its `listening on` line).
    pub addr: SocketAddr,
    /// Its stdout lines (the `listening on` line, the exit summary).
    pub stdout: Lines,
    /// Its stderr lines (fingerprints, warnings, per-peer failures).
    pub stderr: Lines,
}

impl Server {
    /// `tcpkit serve --listen 127.0.0.1:0 ARGS...`; panics if no
    /// `listening on` line comes within 30 s.
    pub fn start(args: &[&str]) -> Server {
        Self::start_env(args, &[])
    }

    /// As [`Server::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(binary());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn("tcpkit serve", &mut cmd);
        let stdout = Lines::gather(proc.child.stdout.take().expect("stdout"));
        let stderr = Lines::gather(proc.child.stderr.take().expect("stderr"));
        let Some(line) =
            stdout.wait_for(Duration::from_secs(30), |l| l.starts_with("listening on "))
        else {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            thread::sleep(Duration::from_millis(100));
            panic!(
                "tcpkit serve {args:?}: no `listening on` line; stdout {:?}, stderr {:?}",
                stdout.text(),
                stderr.text()
            );
        };
        let ep = line["listening on ".len()..]
            .split_whitespace()
            .next()
            .expect("endpoint");
        let addr = ep
            .parse()
            .unwrap_or_else(|e| panic!("endpoint in {line:?}: {e}"));
        Server {
            proc,
            addr,
            stdout,
            stderr,
        }
    }

    /// `127.0.0.1:PORT` as a string.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// SIGTERM; the server must exit 0 within 15 s.
    pub fn stop(mut self) {
        let status = self.proc.terminate(Duration::from_secs(15));
        assert!(
            status.success(),
            "tcpkit serve exited {status}; stderr {}",
            self.stderr.text()
        );
    }

    /// [`Server::stop`] for a server started with `--json`: its exit
    /// summary (counters such as `tls_failed_timeout`).
    pub fn stop_json(self) -> serde_json::Value {
        let stdout = self.stdout.clone();
        self.stop();
        let line = stdout
            .wait_for(Duration::from_secs(5), |l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON summary on stdout: {}", stdout.text()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("summary {line:?}: {e}"))
    }
}

/// A free port on 127.0.0.1, found by binding port 0 and closing it. Used
/// where the *other* program listens and cannot be told to pick a port and
/// print it reliably (`openssl s_server -accept 0` prints `ACCEPT` with the
/// port only in some versions, `ncat -l 0` never): the test picks the port,
/// then waits until the program listens on it (per /proc/net/tcp), and picks
/// another if the program exits because someone took the port meanwhile.
pub fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind port 0");
    l.local_addr().expect("local").port()
}

/// Whether a process of ours listens on 127.0.0.1:`port`/any address
/// (per `/proc/net/tcp` and `tcp6`, state 0A = LISTEN).
pub fn listening_on(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|path| {
        std::fs::read_to_string(path)
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&hex) && f[3] == "0A"
                })
            })
            .unwrap_or(false)
    })
}

/// Starts a program listening on a free port: `make(port)` builds its
/// command. Retries with another port if the program exits (port taken).
pub fn peer_listening(name: &str, make: impl Fn(u16) -> Command) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut proc = Proc::spawn(name, &mut make(port));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if listening_on(port) {
                return (proc, port);
            }
            if proc.try_status().is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{name} never listened");
}

/// Reads from a TLS stream until the peer closes (clean or not) or the
/// deadline passes; returns the bytes and how it ended.
pub fn read_to_end_tls(tls: &mut TlsStream, deadline: Duration) -> (Vec<u8>, Result<(), String>) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (got, Err("deadline".into()));
        }
        let _ = tls.sock.set_read_timeout(Some(left));
        match tls.read(&mut buf) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return (got, Err(format!("{:?}: {e}", e.kind()))),
        }
    }
}
