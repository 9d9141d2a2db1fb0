//! TLS interop against real programs (issue 11, item 5): `openssl s_client`
//! and `ncat --ssl` against `tcpkit serve --tls` (echo and chat), `tcpkit
//! connect --tls` against `openssl s_server` and `ncat --ssl -l`, `tcpkit
//! listen --tls` against `openssl s_client`; mutual TLS both ways; expired
//! and wrong-name certificates refused with `connect`'s certificate exit
//! code; SNI choosing the certificate; 16 MiB checksummed through each pair;
//! stunnel (client and server) in front of and behind tcpkit.
//!
//! Certificates are made at test time (`tests/tls_util`). Where tcpkit
//! listens it binds port 0 and the test reads the port from its `listening
//! on` line. Where the other program listens the test picks a free port (bind
//! port 0, read it, close), waits until the program listens on it per
//! `/proc/net/tcp`, and retries with another port if the program exits
//! (lost the race for the port): `openssl s_server -accept 0` does not print
//! the port it got in every version, `ncat -l` cannot be told port 0. Every
//! child is killed by PID and reaped on drop; every wait has a deadline. A
//! missing program fails under `TCPKIT_REQUIRE_INTEROP=1` (`.ci/run`).
#![cfg(all(feature = "cli", feature = "tls"))]

mod common;
mod tls_util;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tls_util::{Lines, Pki, Proc, Server, assert_same, random_bytes};

const DEADLINE: Duration = Duration::from_secs(30);
/// 16 MiB goes through a debug build of tcpkit on a shared machine.
const BULK_DEADLINE: Duration = Duration::from_secs(240);
const BULK: usize = 16 * 1024 * 1024;

/// `tcpkit connect`'s exit status for a certificate that was refused
/// (README's exit code table).
const EXIT_CERTIFICATE: i32 = 9;

fn tcpkit() -> Command {
    Command::new(tls_util::binary())
}

/// A 16 MiB file of deterministic bytes in `dir`; returns its path and bytes.
fn bulk_file(dir: &Path, name: &str, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let data = random_bytes(BULK, seed);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write bulk input");
    (path, data)
}

/// Waits until `path` holds at least `len` bytes or `proc` exits; then
/// compares it with `want`. A client that does not end its own session
/// (`s_client -quiet` never sends close_notify at stdin EOF) is killed
/// once everything came back.
fn wait_file_len(proc: &mut Proc, path: &Path, len: usize, deadline: Duration) {
    let start = Instant::now();
    loop {
        let have = std::fs::metadata(path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        if have >= len {
            return;
        }
        if let Some(status) = proc.try_status() {
            // One more look: the last bytes may have landed as it exited.
            let have = std::fs::metadata(path)
                .map(|m| m.len() as usize)
                .unwrap_or(0);
            assert!(
                have >= len,
                "{} exited ({status}) with {have} of {len} bytes written",
                proc.name
            );
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "{}: {have} of {len} bytes after {deadline:?}",
            proc.name
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------ the PKI

/// The certificates made at test time are what OpenSSL expects of them:
/// good ones verify, the expired and wrong-name ones do not. (Without this,
/// a refusal further down could be a broken fixture, not tcpkit.)
#[test]
fn fixtures_verify_with_openssl_as_intended() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let verify = |ca: &str, cert: &Path, extra: &[&str]| {
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", ca])
            .args(extra)
            .arg(cert)
            .output()
            .expect("run openssl verify");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let host = ["-verify_hostname", "localhost"];
    let (ok, text) = verify(pki.ca_arg(), &pki.server.cert, &host);
    assert!(ok, "server certificate: {text}");
    let (ok, text) = verify(pki.ca_arg(), &pki.server.cert, &["-verify_ip", "127.0.0.1"]);
    assert!(ok, "server certificate for 127.0.0.1: {text}");
    let (ok, text) = verify(pki.ca_arg(), &pki.expired.cert, &host);
    assert!(!ok && text.contains("expired"), "expired: {text}");
    let (ok, text) = verify(pki.ca_arg(), &pki.wrong_name.cert, &host);
    assert!(!ok && text.contains("mismatch"), "wrong name: {text}");
    let (ok, text) = verify(pki.client_ca_arg(), &pki.client.cert, &[]);
    assert!(ok, "client certificate: {text}");
    let (ok, _) = verify(pki.client_ca_arg(), &pki.rogue_client.cert, &[]);
    assert!(!ok, "the rogue client certificate verified");
    let (ok, _) = verify(pki.ca_arg(), &pki.client.cert, &[]);
    assert!(!ok, "a client certificate verified against the server CA");
}

// --------------------------------------- real clients -> tcpkit serve --tls

fn serve_tls(pki: &Pki, mode: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--mode",
        mode,
        "--tls-cert",
        pki.server.cert_arg(),
        "--tls-key",
        pki.server.key_arg(),
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `openssl s_client` verifying the server (`-verify_return_error`) for
/// `name`; `extra` adds flags. stdin and stdout as given.
fn s_client(server: &Server, ca: &str, extra: &[&str], stdin: Stdio, stdout: Stdio) -> Proc {
    Proc::spawn(
        "openssl s_client",
        Command::new("openssl")
            .args(["s_client", "-connect", &server.target(), "-CAfile", ca])
            .args(["-verify_return_error", "-quiet"])
            .args(extra)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped()),
    )
}

#[test]
fn openssl_s_client_echoes_16_mib_through_tcpkit_serve_tls() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let server = serve_tls(&pki, "echo", &[]);
    let (input, data) = bulk_file(pki.dir(), "in", 1);
    let out = pki.dir().join("out");
    let mut client = s_client(
        &server,
        pki.ca_arg(),
        &["-verify_ip", "127.0.0.1"],
        File::open(&input).expect("input").into(),
        File::create(&out).expect("output").into(),
    );
    let err = Lines::gather(client.child.stderr.take().expect("stderr"));
    wait_file_len(&mut client, &out, BULK, BULK_DEADLINE);
    drop(client);
    let got = std::fs::read(&out).expect("read echo");
    assert_same(
        &format!("s_client echo (stderr {})", err.text()),
        &got,
        &data,
    );
    server.stop();
}

#[test]
fn ncat_ssl_echoes_16_mib_through_tcpkit_serve_tls() {
    if !common::have_program("ncat") {
        return;
    }
    let pki = Pki::new();
    let server = serve_tls(&pki, "echo", &[]);
    let (input, data) = bulk_file(pki.dir(), "in", 2);
    let out = pki.dir().join("out");
    let mut ncat = Proc::spawn(
        "ncat --ssl",
        Command::new("ncat")
            .args(["--ssl", "--ssl-verify", "--ssl-trustfile", pki.ca_arg()])
            .args(["-4", "localhost", &server.addr.port().to_string()])
            .stdin(File::open(&input).expect("input"))
            .stdout(File::create(&out).expect("output"))
            .stderr(Stdio::piped()),
    );
    let err = Lines::gather(ncat.child.stderr.take().expect("stderr"));
    wait_file_len(&mut ncat, &out, BULK, BULK_DEADLINE);
    drop(ncat);
    let got = std::fs::read(&out).expect("read echo");
    assert_same(
        &format!("ncat --ssl echo (stderr {})", err.text()),
        &got,
        &data,
    );
    server.stop();
}

/// Chat over TLS between two different TLS stacks: an `ncat --ssl` member
/// and an `openssl s_client` member hear each other.
#[test]
fn ncat_and_openssl_chat_through_tcpkit_serve_tls() {
    if !common::have_program("ncat") || !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let server = serve_tls(&pki, "chat", &[]);
    let mut ncat = Proc::spawn(
        "ncat --ssl",
        Command::new("ncat")
            .args(["--ssl", "--ssl-verify", "--ssl-trustfile", pki.ca_arg()])
            .args(["-4", "localhost", &server.addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut ncat_in = ncat.child.stdin.take().expect("stdin");
    let ncat_out = Lines::gather(ncat.child.stdout.take().expect("stdout"));
    ncat_in.write_all(b"/nick nc\n").expect("ncat stdin");
    assert!(
        ncat_out
            .wait_for(DEADLINE, |l| l.contains("you are now nc"))
            .is_some(),
        "ncat member not renamed: {:?}",
        ncat_out.text()
    );

    let mut ossl = s_client(
        &server,
        pki.ca_arg(),
        &["-verify_ip", "127.0.0.1"],
        Stdio::piped(),
        Stdio::piped(),
    );
    let mut ossl_in = ossl.child.stdin.take().expect("stdin");
    let ossl_out = Lines::gather(ossl.child.stdout.take().expect("stdout"));
    ossl_in.write_all(b"/nick ossl\n").expect("s_client stdin");
    assert!(
        ossl_out
            .wait_for(DEADLINE, |l| l.contains("you are now ossl"))
            .is_some(),
        "s_client member not renamed: {:?}",
        ossl_out.text()
    );
    ossl_in
        .write_all(b"hello from openssl\n")
        .expect("s_client stdin");
    assert!(
        ncat_out
            .wait_for(DEADLINE, |l| l.contains("ossl: hello from openssl"))
            .is_some(),
        "ncat did not hear openssl: {:?}",
        ncat_out.text()
    );
    ncat_in.write_all(b"hello from ncat\n").expect("ncat stdin");
    assert!(
        ossl_out
            .wait_for(DEADLINE, |l| l.contains("nc: hello from ncat"))
            .is_some(),
        "openssl did not hear ncat: {:?}",
        ossl_out.text()
    );
    drop((ncat, ossl));
    server.stop();
}

/// Several certificate pairs: the one for the name the client asks for,
/// the first one when it asks for none (or an unknown name).
#[test]
fn sni_chooses_the_certificate_openssl_asks_for() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let server = Server::start(&[
        "--mode",
        "echo",
        "--tls-cert",
        pki.server.cert_arg(),
        "--tls-key",
        pki.server.key_arg(),
        "--tls-cert",
        pki.sni_one.cert_arg(),
        "--tls-key",
        pki.sni_one.key_arg(),
        "--tls-cert",
        pki.sni_two.cert_arg(),
        "--tls-key",
        pki.sni_two.key_arg(),
    ]);
    // openssl, verifying the name it asked for, through an echo.
    for name in [tls_util::SNI_ONE, tls_util::SNI_TWO] {
        let mut client = s_client(
            &server,
            pki.ca_arg(),
            &["-servername", name, "-verify_hostname", name],
            Stdio::piped(),
            Stdio::piped(),
        );
        let err = Lines::gather(client.child.stderr.take().expect("stderr"));
        let out = Lines::gather(client.child.stdout.take().expect("stdout"));
        let mut stdin = client.child.stdin.take().expect("stdin");
        stdin.write_all(b"sni echo\n").expect("stdin");
        let echoed = out.wait_for(DEADLINE, |l| l == "sni echo");
        drop(client);
        assert!(
            echoed.is_some(),
            "-servername {name}: no echo; stderr {}",
            err.text()
        );
        // s_client -quiet still prints the verified chain's depth-0 subject.
        assert!(
            err.text().contains(&format!("CN = {name}")),
            "-servername {name}: not its certificate: {}",
            err.text()
        );
    }
    // rustls, byte for byte: the certificate for each name, the default
    // for none (a client that connects by IP address sends no SNI).
    let server_der = |name: &str| {
        let tls = tls_util::tls_connect(server.addr, name, pki.client_config());
        tls.conn.peer_certificates().expect("peer certificates")[0].clone()
    };
    assert_eq!(server_der(tls_util::SNI_ONE), pki.sni_one.der);
    assert_eq!(server_der(tls_util::SNI_TWO), pki.sni_two.der);
    assert_eq!(
        server_der("127.0.0.1"),
        pki.server.der,
        "no SNI: the default"
    );
    assert_eq!(
        server_der("localhost"),
        pki.server.der,
        "unknown: the default"
    );
    server.stop();
}

/// `--tls-client-ca`: openssl and ncat with a client certificate from that
/// CA are served; without one, or with one from another CA, they are not.
/// The server logs the client's subject.
#[test]
fn mutual_tls_tcpkit_serve_with_openssl_and_ncat_clients() {
    if !common::have_program("openssl") || !common::have_program("ncat") {
        return;
    }
    let pki = Pki::new();
    // -v: the client's subject is logged at info.
    let server = serve_tls(
        &pki,
        "echo",
        &["-v", "--tls-client-ca", pki.client_ca_arg()],
    );

    let attempt = |cert: Option<&tls_util::Pair>| -> (bool, String) {
        let mut extra = vec!["-verify_ip", "127.0.0.1"];
        if let Some(pair) = cert {
            extra.extend_from_slice(&["-cert", pair.cert_arg(), "-key", pair.key_arg()]);
        }
        let mut client = s_client(
            &server,
            pki.ca_arg(),
            &extra,
            Stdio::piped(),
            Stdio::piped(),
        );
        let err = Lines::gather(client.child.stderr.take().expect("stderr"));
        let out = Lines::gather(client.child.stdout.take().expect("stdout"));
        let mut stdin = client.child.stdin.take().expect("stdin");
        // A refused client may already be gone: its stdin is then closed.
        let _ = stdin.write_all(b"mtls echo\n");
        // Served: the echo comes back. Refused: TLS 1.3 lets the client
        // finish its side first, then the server's alert ends it.
        let start = Instant::now();
        let echoed = loop {
            if out
                .wait_for(Duration::from_millis(50), |l| l == "mtls echo")
                .is_some()
            {
                break true;
            }
            if client.try_status().is_some() || start.elapsed() > DEADLINE {
                break false;
            }
        };
        drop(client);
        (echoed, err.text())
    };
    let (ok, err) = attempt(Some(&pki.client));
    assert!(ok, "client certificate from the client CA refused: {err}");
    let (ok, err) = attempt(None);
    assert!(!ok, "served without a client certificate: {err}");
    let (ok, err) = attempt(Some(&pki.rogue_client));
    assert!(
        !ok,
        "served with a client certificate from another CA: {err}"
    );

    // ncat --ssl-cert/--ssl-key through the same server.
    let mut ncat = Proc::spawn(
        "ncat --ssl",
        Command::new("ncat")
            .args(["--ssl", "--ssl-verify", "--ssl-trustfile", pki.ca_arg()])
            .args(["--ssl-cert", pki.client.cert_arg()])
            .args(["--ssl-key", pki.client.key_arg()])
            .args(["-4", "localhost", &server.addr.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut ncat_in = ncat.child.stdin.take().expect("stdin");
    let ncat_out = Lines::gather(ncat.child.stdout.take().expect("stdout"));
    ncat_in.write_all(b"ncat mtls\n").expect("ncat stdin");
    assert!(
        ncat_out.wait_for(DEADLINE, |l| l == "ncat mtls").is_some(),
        "ncat with a client certificate not echoed"
    );
    drop(ncat);

    assert!(
        server
            .stderr
            .wait_for(DEADLINE, |l| l.contains("tcpkit test client"))
            .is_some(),
        "the client's subject is not logged: {}",
        server.stderr.text()
    );
    server.stop();
}

// ------------------------------ tcpkit connect --tls -> real TLS servers

/// `openssl s_server` on a free port with `cert`; `extra` adds flags. It
/// serves one connection (`-naccept 1`), writes what it receives to
/// `out`, and sends its stdin.
fn s_server(cert: &tls_util::Pair, extra: &[&str], stdin: Stdio, out: &Path) -> (Proc, u16) {
    let out = out.to_owned();
    let (cert, key) = (cert.cert_arg().to_owned(), cert.key_arg().to_owned());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let stdin = std::cell::RefCell::new(Some(stdin));
    tls_util::peer_listening("openssl s_server", |port| {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .args(["-cert", &cert, "-key", &key, "-naccept", "1", "-quiet"])
            .args(&extra)
            // A retry (port taken) gets a closed stdin: only the first
            // attempt's stdin is real. The retry is rare; its test then
            // fails loudly rather than wrongly.
            .stdin(stdin.borrow_mut().take().unwrap_or(Stdio::null()))
            .stdout(File::create(&out).expect("s_server output"))
            .stderr(Stdio::null());
        cmd
    })
}

/// `tcpkit connect --tls ARGS 127.0.0.1:PORT` with stdin and stdout as given;
/// returns its exit status and stderr.
fn connect_tls(
    port: u16,
    args: &[&str],
    stdin: Stdio,
    stdout: Stdio,
    deadline: Duration,
) -> (std::process::ExitStatus, String) {
    let mut proc = Proc::spawn(
        "tcpkit connect --tls",
        tcpkit()
            .args(["connect", "--tls"])
            .args(args)
            .arg(format!("127.0.0.1:{port}"))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped()),
    );
    let err = Lines::gather(proc.child.stderr.take().expect("stderr"));
    let status = proc.wait(deadline);
    thread::sleep(Duration::from_millis(50)); // let the gatherer see EOF
    (status, err.text())
}

#[test]
fn tcpkit_connect_tls_sends_16_mib_to_openssl_s_server() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let (input, data) = bulk_file(pki.dir(), "in", 3);
    let got = pki.dir().join("got");
    // s_server's stdin stays open: at its EOF it would close the session.
    let (mut server, port) = s_server(&pki.server, &[], Stdio::piped(), &got);
    let (status, err) = connect_tls(
        port,
        &["--ca", pki.ca_arg()],
        File::open(&input).expect("input").into(),
        Stdio::null(),
        BULK_DEADLINE,
    );
    assert!(status.success(), "tcpkit connect --tls: {status} {err}");
    wait_file_len(&mut server, &got, BULK, DEADLINE);
    assert_same(
        "s_server received",
        &std::fs::read(&got).expect("read"),
        &data,
    );
}

#[test]
fn tcpkit_connect_tls_receives_16_mib_from_openssl_s_server() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let (input, data) = bulk_file(pki.dir(), "in", 4);
    let out = pki.dir().join("out");
    let (_server, port) = s_server(
        &pki.server,
        &[],
        File::open(&input).expect("input").into(),
        &pki.dir().join("s_server.out"),
    );
    // --no-shutdown: tcpkit's stdin ends at once but it sends no
    // close_notify (s_server would take it for the end of the session);
    // it reads until s_server closes, at s_server's stdin EOF.
    let (status, err) = connect_tls(
        port,
        &["--ca", pki.ca_arg(), "--no-shutdown"],
        Stdio::null(),
        File::create(&out).expect("output").into(),
        BULK_DEADLINE,
    );
    assert!(status.success(), "tcpkit connect --tls: {status} {err}");
    assert_same(
        "received from s_server",
        &std::fs::read(&out).expect("read"),
        &data,
    );
}

/// `ncat --ssl -l` with the server certificate, verified against the CA:
/// 16 MiB each way, one way at a time. (Both at once does not work with
/// ncat: it takes tcpkit's close_notify at the end of its upload for the
/// end of the session and stops sending, as TLS 1.2 peers may.)
#[test]
fn tcpkit_connect_tls_exchanges_16_mib_with_ncat_ssl_listener() {
    if !common::have_program("ncat") {
        return;
    }
    let pki = Pki::new();
    let ncat_listening = |way: &str, stdin: Stdio, stdout: Stdio| {
        let cell = std::cell::RefCell::new(Some((stdin, stdout)));
        tls_util::peer_listening("ncat --ssl -l", |port| {
            let (stdin, stdout) = cell
                .borrow_mut()
                .take()
                .unwrap_or((Stdio::null(), Stdio::null()));
            let mut cmd = Command::new("ncat");
            cmd.args(["--ssl", "--ssl-cert", pki.server.cert_arg()])
                .args(["--ssl-key", pki.server.key_arg(), way])
                .args(["-l", "127.0.0.1", &port.to_string()])
                .stdin(stdin)
                .stdout(stdout)
                .stderr(Stdio::null());
            cmd
        })
    };
    // Up: ncat only receives; tcpkit's close_notify at its stdin EOF ends it.
    let (up_path, up) = bulk_file(pki.dir(), "up", 5);
    let got_up = pki.dir().join("got-up");
    let (mut ncat, port) = ncat_listening(
        "--recv-only",
        Stdio::null(),
        File::create(&got_up).expect("got-up").into(),
    );
    let (status, err) = connect_tls(
        port,
        &["--ca", pki.ca_arg()],
        File::open(&up_path).expect("up").into(),
        Stdio::null(),
        BULK_DEADLINE,
    );
    assert!(
        status.success(),
        "tcpkit connect --tls (up): {status} {err}"
    );
    let status = ncat.wait(DEADLINE);
    assert!(status.success(), "ncat --ssl -l --recv-only: {status}");
    assert_same("ncat received", &std::fs::read(&got_up).expect("read"), &up);

    // Down: ncat only sends, then closes; tcpkit sends nothing and no
    // close_notify (--no-shutdown) and reads to ncat's close.
    let (down_path, down) = bulk_file(pki.dir(), "down", 6);
    let got_down = pki.dir().join("got-down");
    let (mut ncat, port) = ncat_listening(
        "--send-only",
        File::open(&down_path).expect("down").into(),
        Stdio::null(),
    );
    let (status, err) = connect_tls(
        port,
        &["--ca", pki.ca_arg(), "--no-shutdown"],
        Stdio::null(),
        File::create(&got_down).expect("got-down").into(),
        BULK_DEADLINE,
    );
    assert!(
        status.success(),
        "tcpkit connect --tls (down): {status} {err}"
    );
    let status = ncat.wait(DEADLINE);
    assert!(status.success(), "ncat --ssl -l --send-only: {status}");
    assert_same(
        "tcpkit received",
        &std::fs::read(&got_down).expect("read"),
        &down,
    );
}

/// `s_server -Verify 1`: a client certificate is required. tcpkit connect
/// with `--cert/--key` is served (s_server gets the line), without is not.
#[test]
fn mutual_tls_tcpkit_connect_to_openssl_s_server() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let run = |with_cert: bool| -> (std::process::ExitStatus, String, Vec<u8>) {
        let got = pki.dir().join(format!("got-{with_cert}"));
        let (_server, port) = s_server(
            &pki.server,
            &["-Verify", "1", "-CAfile", pki.client_ca_arg()],
            Stdio::piped(),
            &got,
        );
        let mut args = vec!["--ca", pki.ca_arg(), "--send", "client line"];
        if with_cert {
            args.extend_from_slice(&["--cert", pki.client.cert_arg()]);
            args.extend_from_slice(&["--key", pki.client.key_arg()]);
        }
        let (status, err) = connect_tls(port, &args, Stdio::null(), Stdio::null(), DEADLINE);
        (status, err, std::fs::read(&got).unwrap_or_default())
    };
    let (status, err, got) = run(true);
    assert!(
        status.success(),
        "with a client certificate: {status} {err}"
    );
    assert_eq!(
        got, b"client line\n",
        "s_server did not get the line: {err}"
    );
    let (status, err, got) = run(false);
    assert!(
        !status.success(),
        "without a client certificate s_server -Verify 1 served it: {err}"
    );
    assert!(
        got.is_empty(),
        "s_server got data from an unauthenticated client"
    );
}

/// Expired and wrong-name certificates served by `openssl s_server` are
/// refused by `tcpkit connect --tls` with the certificate exit code, and
/// the message says why; the good one is accepted (same CA, same flags).
#[test]
fn tcpkit_connect_refuses_expired_and_wrong_name_with_its_exit_code() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let cases: [(&str, &tls_util::Pair, Option<&str>); 3] = [
        ("good", &pki.server, None),
        ("expired", &pki.expired, Some("expired")),
        ("wrong name", &pki.wrong_name, Some("name")),
    ];
    for (what, pair, refusal) in cases {
        let got = pki.dir().join(format!("got-{what}"));
        let (_server, port) = s_server(pair, &[], Stdio::piped(), &got);
        let (status, err) = connect_tls(
            port,
            &["--ca", pki.ca_arg(), "--send", "x"],
            Stdio::null(),
            Stdio::null(),
            DEADLINE,
        );
        match refusal {
            None => assert!(status.success(), "{what}: {status} {err}"),
            Some(word) => {
                assert_eq!(
                    status.code(),
                    Some(EXIT_CERTIFICATE),
                    "{what}: want exit {EXIT_CERTIFICATE}, got {status}: {err}"
                );
                assert!(
                    err.to_lowercase().contains(word),
                    "{what}: the message does not say {word:?}: {err}"
                );
                assert_eq!(
                    std::fs::read(&got).unwrap_or_default(),
                    b"",
                    "{what}: data was sent over a refused connection"
                );
            }
        }
    }
}

/// The same refusals against tcpkit's own server, and openssl agreeing.
#[test]
fn expired_and_wrong_name_tcpkit_serve_refused_by_openssl_and_tcpkit() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    for (what, pair) in [("expired", &pki.expired), ("wrong name", &pki.wrong_name)] {
        let server = Server::start(&[
            "--mode",
            "echo",
            "--tls-cert",
            pair.cert_arg(),
            "--tls-key",
            pair.key_arg(),
        ]);
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &server.target(), "-CAfile"])
            .args([pki.ca_arg(), "-verify_return_error", "-verify_hostname"])
            .arg("localhost")
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client");
        assert!(!out.status.success(), "{what}: openssl accepted it");
        let (status, err) = connect_tls(
            server.addr.port(),
            &["--ca", pki.ca_arg(), "--sni", "localhost", "--send", "x"],
            Stdio::null(),
            Stdio::null(),
            DEADLINE,
        );
        assert_eq!(
            status.code(),
            Some(EXIT_CERTIFICATE),
            "{what}: tcpkit connect: {status} {err}"
        );
        server.stop();
    }
}

/// `--pin` of the server certificate's SHA-256 (as `openssl x509
/// -fingerprint -sha256` prints it) accepts a server no CA vouches for; a
/// wrong pin is a certificate refusal.
#[test]
fn tcpkit_connect_pins_openssl_s_server_certificate() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pki.server.cert)
        .output()
        .expect("openssl x509");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .to_owned();
    assert_eq!(fp, pki.server.fingerprint(), "openssl and tcpkit disagree");
    let wrong = pki.wrong_name.fingerprint();
    for (pin, ok) in [(fp.as_str(), true), (wrong.as_str(), false)] {
        let got = pki.dir().join(format!("got-{ok}"));
        let (_server, port) = s_server(&pki.server, &[], Stdio::piped(), &got);
        let (status, err) = connect_tls(
            port,
            &["--pin", pin, "--send", "pinned"],
            Stdio::null(),
            Stdio::null(),
            DEADLINE,
        );
        if ok {
            assert!(status.success(), "right pin: {status} {err}");
        } else {
            assert_eq!(status.code(), Some(EXIT_CERTIFICATE), "wrong pin: {err}");
        }
    }
}

// ---------------------------------- openssl s_client -> tcpkit listen --tls

#[test]
fn openssl_s_client_talks_to_tcpkit_listen_tls() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    let (input, data) = bulk_file(pki.dir(), "in", 7);
    let got = pki.dir().join("got");
    let mut listen = Proc::spawn(
        "tcpkit listen --tls",
        tcpkit()
            .args(["listen", "--tls-cert", pki.server.cert_arg()])
            .args(["--tls-key", pki.server.key_arg(), "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(File::create(&got).expect("got"))
            .stderr(Stdio::piped()),
    );
    let err = Lines::gather(listen.child.stderr.take().expect("stderr"));
    let line = err
        .wait_for(DEADLINE, |l| l.starts_with("listening on "))
        .unwrap_or_else(|| panic!("tcpkit listen --tls: no listening line: {}", err.text()));
    let port: u16 = line["listening on ".len()..]
        .split_whitespace()
        .next()
        .and_then(|ep| ep.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port in {line:?}"));
    let mut client = Proc::spawn(
        "openssl s_client",
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", pki.ca_arg(), "-verify_return_error", "-quiet"])
            .args(["-verify_ip", "127.0.0.1"])
            .stdin(File::open(&input).expect("input"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_file_len(&mut listen, &got, BULK, BULK_DEADLINE);
    drop(client.child.kill());
    assert_same(
        "tcpkit listen got",
        &std::fs::read(&got).expect("read"),
        &data,
    );
}

// ------------------------------------------------------------------ stunnel

/// stunnel with one service, from a config file in `dir`, on a free port.
fn stunnel(dir: &Path, service: &str) -> (Proc, u16) {
    let conf = dir.join("stunnel.conf");
    tls_util::peer_listening("stunnel", |port| {
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 4\n[svc]\naccept = 127.0.0.1:{port}\n{service}\n"
            ),
        )
        .expect("write stunnel.conf");
        let mut cmd = Command::new("stunnel");
        cmd.arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    })
}

/// Sends `data` over plain TCP to `port` and reads the echo back to the
/// end; both directions at once (a thread writes) so nothing deadlocks.
fn plain_echo(port: u16, data: &[u8]) -> Vec<u8> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(BULK_DEADLINE)).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let data = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&data).expect("write");
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut &s, &mut got).expect("read echo");
    writer.join().expect("writer");
    got
}

/// stunnel as a TLS client (verifying the chain and the name `localhost`)
/// in front of `tcpkit serve --tls`: 16 MiB echoed through it, checksummed.
#[test]
fn stunnel_client_echoes_16_mib_through_tcpkit_serve_tls() {
    if !common::have_program("stunnel") {
        return;
    }
    let pki = Pki::new();
    let server = serve_tls(&pki, "echo", &[]);
    let (_stunnel, port) = stunnel(
        pki.dir(),
        &format!(
            "client = yes\nconnect = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost",
            server.target(),
            pki.ca_arg()
        ),
    );
    let data = random_bytes(BULK, 8);
    let got = plain_echo(port, &data);
    assert_same("echo through stunnel -> tcpkit serve --tls", &got, &data);
    server.stop();
}

/// `tcpkit connect --tls` to stunnel terminating TLS in front of a plain
/// `tcpkit serve` echo: 16 MiB there and back, checksummed. tcpkit keeps
/// its write side open (`--no-shutdown`) and ends the session on
/// `--idle-timeout` (exit 5, as documented) once the echo is complete:
/// with a half-close, stunnel 5.68 sometimes drops the last of the echo
/// (it takes POLLHUP on the backend socket for "nothing left to read"; its
/// log then says `Read socket closed (HUP)` with fewer bytes "sent to TLS"
/// than the backend returned, and tcpkit received exactly what stunnel
/// says it sent).
#[test]
fn tcpkit_connect_tls_echoes_16_mib_through_stunnel_server() {
    if !common::have_program("stunnel") {
        return;
    }
    let pki = Pki::new();
    let backend = Server::start(&["--mode", "echo"]);
    let (_stunnel, port) = stunnel(
        pki.dir(),
        &format!(
            "connect = {}\ncert = {}\nkey = {}",
            backend.target(),
            pki.server.cert_arg(),
            pki.server.key_arg()
        ),
    );
    let (input, data) = bulk_file(pki.dir(), "in", 9);
    let out = pki.dir().join("out");
    let (status, err) = connect_tls(
        port,
        &[
            "--ca",
            pki.ca_arg(),
            "--no-shutdown",
            // The end is 'quiet for this long': generous, so a loaded
            // machine's stall mid-stream is not taken for the end (seen
            // once at 3 s with five builds running).
            "--idle-timeout",
            "6s",
        ],
        File::open(&input).expect("input").into(),
        File::create(&out).expect("output").into(),
        BULK_DEADLINE,
    );
    assert_eq!(
        status.code(),
        Some(5),
        "tcpkit connect --tls via stunnel: want the idle end (5): {status} {err}"
    );
    assert_same(
        "echo through stunnel",
        &std::fs::read(&out).expect("read"),
        &data,
    );
    backend.stop();
}

// ------------------------------------------- more pairs: listen, ephemeral

/// Starts `tcpkit listen ARGS 127.0.0.1:0` writing what it receives to
/// `got`; returns it, its stderr and the port from its `listening on` line.
fn tcpkit_listen(args: &[&str], got: &Path) -> (Proc, Lines, u16) {
    let mut listen = Proc::spawn(
        "tcpkit listen --tls",
        tcpkit()
            .arg("listen")
            .args(args)
            .arg("127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(File::create(got).expect("got"))
            .stderr(Stdio::piped()),
    );
    let err = Lines::gather(listen.child.stderr.take().expect("stderr"));
    let line = err
        .wait_for(DEADLINE, |l| l.starts_with("listening on "))
        .unwrap_or_else(|| panic!("tcpkit listen: no listening line: {}", err.text()));
    let port: u16 = line["listening on ".len()..]
        .split_whitespace()
        .next()
        .and_then(|ep| ep.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("port in {line:?}"));
    (listen, err, port)
}

/// `ncat --ssl` (verifying the name) sends 16 MiB to `tcpkit listen
/// --tls-cert`; at its stdin EOF ncat sends close_notify and tcpkit listen,
/// its peer gone, exits.
#[test]
fn ncat_ssl_sends_16_mib_to_tcpkit_listen_tls() {
    if !common::have_program("ncat") {
        return;
    }
    let pki = Pki::new();
    let (input, data) = bulk_file(pki.dir(), "in", 10);
    let got = pki.dir().join("got");
    let (mut listen, err, port) = tcpkit_listen(
        &[
            "--tls-cert",
            pki.server.cert_arg(),
            "--tls-key",
            pki.server.key_arg(),
        ],
        &got,
    );
    let mut ncat = Proc::spawn(
        "ncat --ssl",
        Command::new("ncat")
            .args(["--ssl", "--ssl-verify", "--ssl-trustfile", pki.ca_arg()])
            .args(["-4", "localhost", &port.to_string()])
            .stdin(File::open(&input).expect("input"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_file_len(&mut listen, &got, BULK, BULK_DEADLINE);
    drop(ncat.child.kill());
    assert_same(
        &format!("tcpkit listen got (stderr {})", err.text()),
        &std::fs::read(&got).expect("read"),
        &data,
    );
}

/// `tcpkit listen --tls-client-ca`: openssl with a client certificate from
/// that CA gets its line through; without one it gets nothing through.
#[test]
fn mutual_tls_tcpkit_listen_with_openssl_client() {
    if !common::have_program("openssl") {
        return;
    }
    let pki = Pki::new();
    for with_cert in [true, false] {
        let got = pki.dir().join(format!("got-{with_cert}"));
        let (mut listen, err, port) = tcpkit_listen(
            &[
                "--tls-cert",
                pki.server.cert_arg(),
                "--tls-key",
                pki.server.key_arg(),
                "--tls-client-ca",
                pki.client_ca_arg(),
            ],
            &got,
        );
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-CAfile", pki.ca_arg(), "-verify_return_error", "-quiet"])
            .args(["-verify_ip", "127.0.0.1"]);
        if with_cert {
            cmd.args(["-cert", pki.client.cert_arg(), "-key", pki.client.key_arg()]);
        }
        let mut client = Proc::spawn(
            "openssl s_client",
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut stdin = client.child.stdin.take().expect("stdin");
        let _ = stdin.write_all(b"mutual line\n");
        if with_cert {
            wait_file_len(&mut listen, &got, 12, DEADLINE);
            assert_eq!(std::fs::read(&got).expect("read"), b"mutual line\n");
        } else {
            // Refused: tcpkit listen ends (a certificate failure, exit 9)
            // having written nothing.
            let status = listen.wait(DEADLINE);
            assert!(
                !status.success(),
                "listen accepted a client without a certificate"
            );
            assert_eq!(
                status.code(),
                Some(EXIT_CERTIFICATE),
                "listen without a client certificate: {status}: {}",
                err.text()
            );
            assert_eq!(std::fs::read(&got).expect("read"), b"");
        }
        drop(client);
    }
}

/// `serve --tls` makes a certificate at start and prints its SHA-256
/// fingerprint: the certificate openssl receives has that fingerprint, and
/// `tcpkit connect --pin` with it is served.
#[test]
fn ephemeral_certificate_fingerprint_matches_what_openssl_receives() {
    if !common::have_program("openssl") {
        return;
    }
    let server = Server::start(&["--mode", "echo", "--tls"]);
    let line = server
        .stderr
        .wait_for(DEADLINE, |l| l.contains("SHA-256 fingerprint"))
        .unwrap_or_else(|| panic!("no fingerprint on stderr: {}", server.stderr.text()));
    let printed = line.rsplit(' ').next().expect("fingerprint").to_owned();
    let shown = Command::new("openssl")
        .args(["s_client", "-connect", &server.target(), "-showcerts"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client");
    let pem = String::from_utf8_lossy(&shown.stdout).into_owned();
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = pem.find("-----END CERTIFICATE-----").expect("its end") + 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("served.pem");
    std::fs::write(&cert, &pem[start..end]).expect("write");
    let fp = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let fp = String::from_utf8_lossy(&fp.stdout);
    let fp = fp.trim().rsplit('=').next().expect("fingerprint");
    assert_eq!(
        fp, printed,
        "printed fingerprint differs from the served certificate's"
    );
    let (status, err) = connect_tls(
        server.addr.port(),
        &["--pin", &printed, "--send", "pinned"],
        Stdio::null(),
        Stdio::null(),
        DEADLINE,
    );
    assert!(status.success(), "connect --pin <printed>: {status} {err}");
    server.stop();
}

/// `socat OPENSSL:` (verifying the chain and the name `localhost`) echoes
/// 16 MiB through `tcpkit serve --tls`. `-t 60`: after its stdin's EOF
/// socat waits for the rest of the echo instead of its default 0.5 s.
#[test]
fn socat_openssl_echoes_16_mib_through_tcpkit_serve_tls() {
    if !common::have_program("socat") {
        return;
    }
    let pki = Pki::new();
    let server = serve_tls(&pki, "echo", &[]);
    let (input, data) = bulk_file(pki.dir(), "in", 11);
    let out = pki.dir().join("out");
    let mut socat = Proc::spawn(
        "socat OPENSSL:",
        Command::new("socat")
            .args(["-t", "60", "-"])
            .arg(format!(
                "OPENSSL:localhost:{},pf=ip4,cafile={},verify=1",
                server.addr.port(),
                pki.ca_arg()
            ))
            .stdin(File::open(&input).expect("input"))
            .stdout(File::create(&out).expect("output"))
            .stderr(Stdio::piped()),
    );
    let err = Lines::gather(socat.child.stderr.take().expect("stderr"));
    let status = socat.wait(BULK_DEADLINE);
    assert!(status.success(), "socat: {status} {}", err.text());
    assert_same(
        &format!("socat echo (stderr {})", err.text()),
        &std::fs::read(&out).expect("read echo"),
        &data,
    );
    server.stop();
}

/// `tcpkit connect --tls` to `socat OPENSSL-LISTEN:` echoing through a
/// `PIPE`: 16 MiB there and back, verified against the CA. `-b 4096`:
/// with its default 8 KiB blocks socat can block for good writing into
/// its own full pipe (poll says writable with one free 4 KiB page), which
/// only it drains; seen here as socat in `anon_pipe_write` and tcpkit
/// correctly waiting with 2.8 MB unsent.
#[test]
fn tcpkit_connect_tls_echoes_16_mib_through_socat_openssl_listen() {
    if !common::have_program("socat") {
        return;
    }
    let pki = Pki::new();
    let (_socat, port) = tls_util::peer_listening("socat OPENSSL-LISTEN:", |port| {
        let mut cmd = Command::new("socat");
        cmd.args(["-t", "60", "-b", "4096"])
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={},key={},verify=0",
                pki.server.cert_arg(),
                pki.server.key_arg()
            ))
            .arg("PIPE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    });
    let (input, data) = bulk_file(pki.dir(), "in", 12);
    let out = pki.dir().join("out");
    let (status, err) = connect_tls(
        port,
        &["--ca", pki.ca_arg()],
        File::open(&input).expect("input").into(),
        File::create(&out).expect("output").into(),
        BULK_DEADLINE,
    );
    assert!(
        status.success(),
        "tcpkit connect --tls to socat: {status} {err}"
    );
    assert_same(
        "echo through socat",
        &std::fs::read(&out).expect("read"),
        &data,
    );
}
