//! Shared by the integration tests: the one way a test that cannot run
//! says so.
//!
//! A test that needs something this host may lack (an outside program, IPv6
//! loopback, a kernel behaviour, a high open-file limit) calls
//! [`skip_or_fail`] and returns. Under `TCPKIT_REQUIRE_INTEROP=1` (set by
//! `.ci/run`) that is a failure, so CI never passes a test that did not run.
#![allow(dead_code)]

/// The environment variable that turns every skip into a failure.
pub const REQUIRE: &str = "TCPKIT_REQUIRE_INTEROP";

/// Whether skips are failures in this run (`TCPKIT_REQUIRE_INTEROP=1`).
pub fn skips_fail() -> bool {
    std::env::var(REQUIRE).as_deref() == Ok("1")
}

/// Says on stderr that the calling test is skipped and why; panics instead
/// when `TCPKIT_REQUIRE_INTEROP=1`. The caller returns right after:
/// `return common::skip_or_fail("ncat is not installed");`
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if skips_fail() {
        panic!("cannot run: {reason} (and {REQUIRE}=1 makes that a failure)");
    }
    eprintln!("skipped: {reason} (set {REQUIRE}=1 to make this a failure)");
}

/// Whether `program` is on PATH; if not, [`skip_or_fail`] naming the
/// Debian package to install, and `false`.
pub fn have_program(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        skip_or_fail(&format!(
            "{program} is not installed (apt-get install ncat socat netcat-openbsd openssl stunnel4 prometheus)"
        ));
    }
    found
}

/// A loopback port nothing listens on, and nothing else can take: a
/// socket bound to port 0 but never listening, kept open (leaked) for the
/// rest of the test process. A dial to it is refused at once. (Binding and
/// releasing was not enough: a test running in parallel could be given the
/// same port for its own listener, and a "refused" dial then reached it.)
pub fn closed_port() -> u16 {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local_addr")
        .port();
    // Held, never listened on: the port stays ours and refuses every SYN.
    std::mem::forget(socket);
    port
}

/// A loopback port free a moment ago (bound on port 0 and released), for
/// an outside server that must bind it itself (redis-server, a handover
/// successor). Not for a port to dial and be refused: that is
/// [`closed_port`], which keeps its port.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

#[cfg(feature = "cli")]
pub mod serve;
