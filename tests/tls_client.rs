//! The TLS client: `tcpkit connect --tls` (and the library's
//! `TlsClientConfig`) against a small tokio-rustls echo server in this
//! process, with a CA and certificates made here by rcgen: trust by CA file,
//! by the system roots (`SSL_CERT_FILE`), by pin and not at all; refusals
//! (unknown issuer, wrong name, expired, wrong pin) with exit code 9,
//! other handshake failures with 10; ALPN, mutual TLS, the minimum
//! version, and half-close over TLS.
#![cfg(all(feature = "cli", feature = "tls"))]

mod common;
mod tls_echo;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tls_echo::{EchoServer, Pki, ServerOpts, Validity::*, echo_server};

/// Runs `tcpkit ARGS` with `stdin` as its input, under a deadline.
fn tcpkit(args: &[&str], stdin: &[u8], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpkit"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The system roots of these runs are what the test says they are.
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", "/nonexistent/tcpkit-test-roots.pem");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn tcpkit");
    let pid = child.id();
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_vec();
    // Fed and drained on their own threads: an echo bigger than a pipe
    // buffer must not block on either side.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("tcpkit output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child, not yet reaped (its waiter
            // thread is still blocked in wait).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("tcpkit {args:?} did not finish in 60 s");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn target(server: &EchoServer) -> String {
    format!("localhost:{}", server.port)
}

#[test]
fn connect_with_a_ca_file_echoes_through_a_half_close() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost", "127.0.0.1"], Valid);
    let server = echo_server(&leaf, ServerOpts::default());
    let ca = pki.ca_path();
    // 1 MiB in: the whole of it must come back after our close_notify, as
    // the server only closes once it has read our EOF.
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let out = tcpkit(
        &[
            "-v",
            "connect",
            "--ca",
            ca.to_str().unwrap(),
            &target(&server),
        ],
        &data,
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        out.stdout == data,
        "echo differs: {} bytes back",
        out.stdout.len()
    );
    let err = stderr(&out);
    assert!(err.contains("TLS TLSv1_3"), "{err}");
    assert!(err.contains("peer certificate: CN=localhost"), "{err}");
    assert!(err.contains("ALPN none"), "{err}");

    // An IP address is verified against the certificate's IP addresses.
    let ip = format!("127.0.0.1:{}", server.port);
    let out = tcpkit(
        &["connect", "--ca", ca.to_str().unwrap(), &ip],
        b"ip\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"ip\n");
}

#[test]
fn system_roots_come_from_ssl_cert_file() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let server = echo_server(&leaf, ServerOpts::default());
    let ca = pki.ca_path();
    let out = tcpkit(
        &["connect", "--tls", &target(&server)],
        b"roots\n",
        &[("SSL_CERT_FILE", &ca)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"roots\n");

    // Another CA as the system's: the server's certificate is refused.
    let other = Pki::new();
    let other_ca = other.ca_path();
    let out = tcpkit(
        &["connect", "--tls", &target(&server)],
        b"x\n",
        &[("SSL_CERT_FILE", &other_ca)],
    );
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn wrong_name_expired_and_unknown_issuer_exit_9() {
    let pki = Pki::new();
    let ca = pki.ca_path();
    let good = pki.leaf("good", "localhost", &["localhost"], Valid);
    let server = echo_server(&good, ServerOpts::default());
    // Asked for another name than the certificate's.
    let out = tcpkit(
        &[
            "connect",
            "--ca",
            ca.to_str().unwrap(),
            "--sni",
            "other.test",
            &target(&server),
        ],
        b"x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(stderr(&out).contains("other.test"), "{}", stderr(&out));

    let expired = pki.leaf("expired", "localhost", &["localhost"], Expired);
    let server = echo_server(&expired, ServerOpts::default());
    let out = tcpkit(
        &["connect", "--ca", ca.to_str().unwrap(), &target(&server)],
        b"x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("expired"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pin_accepts_exactly_its_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "whatever.test", &["whatever.test"], Valid);
    let server = echo_server(&leaf, ServerOpts::default());
    let fp = tcpkit::tls::fingerprint(&leaf.chain[0]);
    // Name and issuer do not matter to a pin; colons and case do not either.
    for pin in [fp.clone(), fp.replace(':', "").to_lowercase()] {
        let out = tcpkit(
            &["connect", "--pin", &pin, &target(&server)],
            b"pinned\n",
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(out.stdout, b"pinned\n");
    }
    // The CA's fingerprint is not the server's.
    let wrong = tcpkit::tls::fingerprint(&pki.ca_cert);
    let out = tcpkit(&["connect", "--pin", &wrong, &target(&server)], b"x\n", &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&fp),
        "names what it got: {}",
        stderr(&out)
    );
}

#[test]
fn insecure_accepts_anything_and_says_so() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "x", &["x.test"], Expired);
    let server = echo_server(&leaf, ServerOpts::default());
    let out = tcpkit(&["connect", "--insecure", &target(&server)], b"any\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"any\n");
    assert!(
        stderr(&out).contains("verification is OFF"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn alpn_is_negotiated_or_the_handshake_fails_with_10() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let opts = ServerOpts {
        alpn: vec![b"h2".to_vec()],
        ..ServerOpts::default()
    };
    let server = echo_server(&leaf, opts);
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    let out = tcpkit(
        &[
            "-v",
            "connect",
            "--ca",
            ca,
            "--alpn",
            "http/1.1,h2",
            &target(&server),
        ],
        b"a\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("ALPN h2"), "{}", stderr(&out));
    let out = tcpkit(
        &["connect", "--ca", ca, "--alpn", "spdy/1", &target(&server)],
        b"a\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
}

#[test]
fn tls_min_1_3_refuses_a_tls_1_2_server() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let server = echo_server(
        &leaf,
        ServerOpts {
            tls12_only: true,
            ..ServerOpts::default()
        },
    );
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    let out = tcpkit(
        &["-v", "connect", "--ca", ca, &target(&server)],
        b"12\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS TLSv1_2"), "{}", stderr(&out));
    let out = tcpkit(
        &["connect", "--ca", ca, "--tls-min", "1.3", &target(&server)],
        b"12\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let client = pki.leaf("client", "tcpkit client", &["client.test"], Valid);
    let server = echo_server(
        &leaf,
        ServerOpts {
            client_ca: Some(pki.ca_cert.clone()),
            ..ServerOpts::default()
        },
    );
    let ca = pki.ca_path();
    let ca = ca.to_str().unwrap();
    let out = tcpkit(
        &[
            "connect",
            "--ca",
            ca,
            "--cert",
            client.cert_path.to_str().unwrap(),
            "--key",
            client.key_path.to_str().unwrap(),
            &target(&server),
        ],
        b"mutual\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"mutual\n");
    // Without one, the server's refusal arrives as an alert: exit 9.
    let out = tcpkit(&["connect", "--ca", ca, &target(&server)], b"x\n", &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
}

#[test]
fn bad_files_and_values_are_usage_errors_naming_the_flag() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let other = pki.leaf("other", "localhost", &["localhost"], Valid);
    let key = leaf.key_path.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--ca", key], "--ca"),
        (&["--ca", "/nonexistent/ca.pem"], "--ca"),
        (&["--pin", "AB:CD"], "--pin"),
        (&["--sni", "not a name"], "--sni"),
        (&["--alpn", "h2,,x"], "--alpn"),
        (
            &[
                "--insecure",
                "--cert",
                leaf.cert_path.to_str().unwrap(),
                "--key",
                other.key_path.to_str().unwrap(),
            ],
            "--cert",
        ),
    ];
    // Never dialed: the flags fail first.
    let target = format!("127.0.0.1:{}", common::closed_port());
    for (flags, named) in cases {
        let mut args = vec!["connect", target.as_str()];
        args.extend_from_slice(flags);
        let out = tcpkit(&args, b"", &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_plain_tcp_peer_is_a_tls_failure_not_a_hang() {
    // A plain echo server sends our ClientHello back: not a ServerHello.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let echo = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let out = tcpkit(
        &["connect", "--insecure", &format!("127.0.0.1:{port}")],
        b"x\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    echo.join().expect("echo thread");
}

/// A `tcpkit listen` child with its stderr read line by line.
struct Listener {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    port: u16,
    /// `--tls`: the fingerprint it printed.
    fingerprint: Option<String>,
}

impl Listener {
    fn start(args: &[&str], stdin: &[u8]) -> Listener {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(["-v", "listen"])
            .args(args)
            .arg("127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpkit listen");
        let mut input = child.stdin.take().expect("stdin");
        let stdin = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut fingerprint = None;
        let port = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .expect("listen prints `listening on`");
            if let Some(fp) = line.split("SHA-256 fingerprint ").nth(1) {
                fingerprint = Some(fp.trim().to_owned());
            }
            if let Some(ep) = line.strip_prefix("listening on ") {
                break ep.rsplit(':').next().unwrap().parse().expect("port");
            }
        };
        Listener {
            child,
            lines,
            port,
            fingerprint,
        }
    }

    /// Its exit status, stdout and the rest of its stderr (within 30 s).
    fn finish(mut self) -> (Option<i32>, Vec<u8>, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("tcpkit listen still running after 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = Vec::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        }
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status.code(), out, rest.join("\n"))
    }
}

#[test]
fn listen_tls_with_an_ephemeral_certificate_talks_to_a_pinning_connect() {
    let listener = Listener::start(&["--tls"], b"from the listener\n");
    let fp = listener.fingerprint.clone().expect("fingerprint printed");
    let target = format!("127.0.0.1:{}", listener.port);
    let out = tcpkit(
        &["connect", "--pin", &fp, &target],
        b"from the client\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"from the listener\n");
    let (code, got, err) = listener.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(got, b"from the client\n");
    assert!(err.contains("TLS TLSv1_3"), "{err}");
}

#[test]
fn listen_tls_requires_the_client_certificate_it_was_told_to() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost", "127.0.0.1"], Valid);
    let client = pki.leaf("client", "tcpkit client", &["client.test"], Valid);
    let ca = pki.ca_path();
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        leaf.cert_path.to_str().unwrap(),
        leaf.key_path.to_str().unwrap(),
    );
    let flags = ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca];
    let listener = Listener::start(&flags, b"");
    let target = format!("127.0.0.1:{}", listener.port);
    let out = tcpkit(
        &[
            "connect",
            "--ca",
            ca,
            "--cert",
            client.cert_path.to_str().unwrap(),
            "--key",
            client.key_path.to_str().unwrap(),
            &target,
        ],
        b"mutual\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, got, err) = listener.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(got, b"mutual\n");
    assert!(err.contains("peer certificate: CN=tcpkit client"), "{err}");

    // No client certificate: the listener refuses it, exit 9.
    let listener = Listener::start(&flags, b"");
    let target = format!("127.0.0.1:{}", listener.port);
    let out = tcpkit(&["connect", "--ca", ca, &target], b"x\n", &[]);
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    let (code, got, err) = listener.finish();
    assert_eq!(code, Some(9), "{err}");
    assert!(got.is_empty());
}

#[test]
fn listen_tls_file_errors_name_the_flag() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let out = tcpkit(
        &[
            "listen",
            "--tls-cert",
            leaf.key_path.to_str().unwrap(),
            "--tls-key",
            leaf.key_path.to_str().unwrap(),
            "127.0.0.1:0",
        ],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--tls-cert"), "{}", stderr(&out));
}

#[test]
fn a_close_without_close_notify_ends_the_session_with_a_warning() {
    let pki = Pki::new();
    let leaf = pki.leaf("server", "localhost", &["localhost"], Valid);
    let server = echo_server(
        &leaf,
        ServerOpts {
            no_close_notify: true,
            ..ServerOpts::default()
        },
    );
    let ca = pki.ca_path();
    let out = tcpkit(
        &["connect", "--ca", ca.to_str().unwrap(), &target(&server)],
        b"cut\n",
        &[],
    );
    // What arrived is printed, the session ends as a close, and the
    // possible truncation is said.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"cut\n");
    assert!(
        stderr(&out).contains("without a TLS close_notify"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn listen_tls_negotiates_alpn_and_refuses_below_its_minimum_version() {
    let listener = Listener::start(&["--tls", "--alpn", "h2"], b"");
    let fp = listener.fingerprint.clone().expect("fingerprint printed");
    let target = format!("127.0.0.1:{}", listener.port);
    let out = tcpkit(
        &[
            "-v",
            "connect",
            "--pin",
            &fp,
            "--alpn",
            "http/1.1,h2",
            &target,
        ],
        b"hi\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("ALPN h2"), "{}", stderr(&out));
    let (code, got, err) = listener.finish();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(got, b"hi\n");

    // A listener that accepts TLS 1.3 only, and a client that offers 1.2
    // only (openssl; tcpkit connect has no maximum): the listener's
    // handshake fails, with exit 10.
    if !common::have_program("openssl") {
        return;
    }
    let listener = Listener::start(&["--tls", "--tls-min", "1.3"], b"");
    let target = format!("127.0.0.1:{}", listener.port);
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &target, "-tls1_2"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let (code, _, err) = listener.finish();
    assert_ne!(
        out.status.code(),
        Some(0),
        "openssl s_client -tls1_2 was served"
    );
    assert_eq!(code, Some(10), "{err}");
    assert!(err.contains("TLS"), "{err}");
}
