//! Socket activation and restarts without losing a connection (issue 12
//! item 5), through the `tcpkit` binary:
//!
//! * `serve --upgrade-from` three times under a steady `bench --mode
//!   connect` load: no failed connect, no reset; the old server drains an
//!   open connection (its echo still completes) and exits.
//! * `serve --listen systemd` under Debian's `systemd-socket-activate`, and
//!   the README's `.socket` + `.service` pair run the same way (and checked
//!   by `systemd-analyze verify`).
//! * `serve --listen fd:3` with a listener, and with sockets that are not
//!   one: the error names the descriptor.
//!
//! Every process is killed by PID on the way out; every wait has a deadline.
#![cfg(all(feature = "cli", target_os = "linux"))]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);
const TCPKIT: &str = env!("CARGO_BIN_EXE_tcpkit");

/// A child process killed (by PID) when dropped, with its stdout lines
/// arriving on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<ChildStderr>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take();
        Proc {
            child,
            lines,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or the process's stderr in the panic.
    fn line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let mut err = String::new();
                if let Some(mut s) = self.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("no line from pid {} ({e}); stderr: {err}", self.pid());
            }
        }
    }

    /// The address of the `listening on ADDR (...)` line.
    fn listening(&mut self) -> String {
        let line = self.line();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
        addr.to_owned()
    }

    /// Waits for exit (bounded); the status and the rest of stdout.
    fn exit(&mut self) -> (std::process::ExitStatus, Vec<String>) {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader thread ends at EOF: every line is in by then.
                let mut rest = Vec::new();
                while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
                    rest.push(line);
                }
                return (status, rest);
            }
            assert!(Instant::now() < until, "pid {} did not exit", self.pid());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_text(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut s) = self.stderr.take() {
            let _ = s.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tcpkit(args: &[&str]) -> Command {
    let mut cmd = Command::new(TCPKIT);
    cmd.args(args);
    cmd
}

fn echo_once(stream: &mut TcpStream, text: &[u8]) {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(text).unwrap();
    let mut got = vec![0u8; text.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, text);
}

#[test]
fn three_handovers_under_connect_load_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("tcpkit.pid");
    let pidfile = pidfile.to_str().unwrap();
    // A long grace: an old server that exits promptly did so because its
    // connections finished, not because the deadline cut them.
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "-q",
            "--workers",
            "1",
            "--shutdown-grace",
            "60s",
            "--pidfile",
            pidfile,
        ];
        args.extend_from_slice(extra);
        Proc::spawn(tcpkit(&args))
    };
    let mut old = serve(&["--listen", "127.0.0.1:0"]);
    let addr = old.listening();
    let mut held = TcpStream::connect(&addr).unwrap();
    echo_once(&mut held, b"before\n");

    let bench_for = Duration::from_secs(12);
    let mut bench = Proc::spawn(tcpkit(&[
        "bench", "-q", "-t", &addr, "--mode", "connect", "--rate", "300", "-c", "8", "-d", "12s",
        "--warmup", "0s", "--json",
    ]));
    let started = Instant::now();
    // Load on the first server before it hands over.
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..3 {
        let mut new = serve(&["--upgrade-from", pidfile]);
        assert_eq!(new.listening(), addr, "round {round}: the same socket");
        if round == 0 {
            // The first old server still serves the connection it holds:
            // its echo completes after the successor took over.
            echo_once(&mut held, b"during\n");
            held.shutdown(std::net::Shutdown::Both).unwrap();
        }
        let (status, out) = old.exit();
        assert!(status.success(), "round {round}: old server {status:?}");
        let summary = out.join("\n");
        assert!(
            summary.contains("0 closed at the deadline"),
            "round {round}: the old server drained: {summary}"
        );
        let pid: u32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            pid,
            new.pid(),
            "round {round}: the pidfile names the successor"
        );
        old = new;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        started.elapsed() + Duration::from_millis(500) < bench_for,
        "the handovers took {:?}, longer than the load ({bench_for:?}): not measured under load",
        started.elapsed()
    );
    let (_, out) = bench.exit();
    let report: serde_json::Value = serde_json::from_str(&out.join("\n"))
        .unwrap_or_else(|e| panic!("bench JSON ({e}): {out:?} {}", bench.stderr_text()));
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert!(n("connections_established") > 500, "{report}");
    assert_eq!(n("connect_failures"), 0, "{report}");
    assert_eq!(n("connection_resets"), 0, "{report}");
    assert_eq!(n("errors"), 0, "{report}");
    // The last one serves on, and stops on SIGTERM like any other.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(old.pid() as i32, libc::SIGTERM) }, 0);
    assert!(old.exit().0.success());
    assert!(
        !Path::new(pidfile).exists(),
        "the last server removed its pidfile"
    );
}

#[test]
fn upgrade_from_a_stale_pidfile_fails_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("gone.pid");
    std::fs::write(&pidfile, "999999\n").unwrap();
    let mut p = Proc::spawn(tcpkit(&[
        "serve",
        "--upgrade-from",
        pidfile.to_str().unwrap(),
    ]));
    let (status, _) = p.exit();
    assert!(!status.success());
    let err = p.stderr_text();
    assert!(err.contains("gone.pid.sock"), "{err}");
}

/// Runs `cmd` with `fd` as its descriptor 3 (as systemd passes sockets).
fn with_fd3(mut cmd: Command, fd: std::os::fd::RawFd) -> Command {
    // SAFETY: dup2 is async-signal-safe; fd is open in the parent and
    // inherited over fork.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
            if fd == 3 && libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn listen_fd_serves_an_inherited_listener_and_names_a_wrong_one() {
    use std::os::fd::AsRawFd;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    for engine in ["shared", "per-core"] {
        let cmd = tcpkit(&["serve", "--listen", "fd:3", "--engine", engine]);
        let mut p = Proc::spawn(with_fd3(cmd, listener.as_raw_fd()));
        assert_eq!(p.listening(), addr, "{engine}");
        let mut c = TcpStream::connect(&addr).unwrap();
        echo_once(&mut c, b"inherited\n");
    }
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unbound = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    for (fd, want) in [
        (udp.as_raw_fd(), "SO_TYPE"),
        (unbound.as_raw_fd(), "SO_ACCEPTCONN"),
    ] {
        let cmd = tcpkit(&["serve", "--listen", "fd:3"]);
        let mut p = Proc::spawn(with_fd3(cmd, fd));
        let (status, _) = p.exit();
        let err = p.stderr_text();
        assert!(!status.success());
        assert!(err.contains("fd 3") && err.contains(want), "{err}");
    }
}

fn have_socket_activate() -> bool {
    common::have_program("systemd-socket-activate")
}

/// `systemd-socket-activate -l 127.0.0.1:PORT ARGV...`: waits for its
/// "Listening on" line, then the caller connects (it execs on the first one).
fn socket_activate(port: u16, argv: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &listen, "--fdname=tcpkit"]).args(argv);
    let mut p = Proc::spawn(cmd);
    let mut err = BufReader::new(p.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("Listening on"), "{line}");
    // Keep draining its stderr so neither process blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    p
}

#[test]
fn systemd_socket_activation_serves_the_inherited_socket() {
    if !have_socket_activate() {
        return;
    }
    let port = common::free_port();
    let mut p = socket_activate(port, &[TCPKIT, "serve", "--listen", "systemd"]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    echo_once(&mut c, b"activated\n");
    assert_eq!(p.listening(), format!("127.0.0.1:{port}"));
}

#[test]
fn listen_systemd_without_activation_fails_naming_the_variable() {
    let mut cmd = tcpkit(&["serve", "--listen", "systemd"]);
    cmd.env_remove("LISTEN_PID").env_remove("LISTEN_FDS");
    let mut p = Proc::spawn(cmd);
    let (status, _) = p.exit();
    assert_eq!(status.code(), Some(2));
    assert!(p.stderr_text().contains("LISTEN_PID"));
}

/// The README's unit files: (name, text) of each ```ini block that starts
/// with a `# tcpkit.socket` / `# tcpkit.service` comment.
fn readme_units() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut units = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```ini\n# tcpkit.") {
        let body = &rest[start + "```ini\n".len()..];
        let end = body.find("```").expect("closed block");
        let text = &body[..end];
        let name = text.lines().next().unwrap().trim_start_matches("# ").trim();
        units.push((name.to_owned(), text.to_owned()));
        rest = &body[end..];
    }
    units
}

fn key<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {unit}"))
        .trim()
}

#[test]
fn the_readme_socket_and_service_pair_runs_under_socket_activation() {
    let units = readme_units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["tcpkit.socket", "tcpkit.service"],
        "README unit blocks"
    );
    let (socket, service) = (&units[0].1, &units[1].1);
    let listen = key(socket, "ListenStream");
    let exec = key(service, "ExecStart");
    let mut argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(argv[0], "/usr/bin/tcpkit", "{exec}");
    argv[0] = TCPKIT;
    // The documented host; a free port instead of the documented one.
    let (host, _) = listen.rsplit_once(':').expect("ListenStream=HOST:PORT");
    assert_eq!(host, "127.0.0.1", "{listen}");

    if !have_socket_activate() {
        return;
    }
    let port = common::free_port();
    let mut p = socket_activate(port, &argv);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    echo_once(&mut c, b"from the README\n");
    assert_eq!(p.listening(), format!("127.0.0.1:{port}"));
    drop(p);

    // systemd-analyze verify works without a running systemd; ExecStart
    // must name an executable that exists, so the built one stands in.
    if !common::have_program("systemd-analyze") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tcpkit.socket"), socket).unwrap();
    std::fs::write(
        dir.path().join("tcpkit.service"),
        service.replace("/usr/bin/tcpkit", TCPKIT),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["60", "systemd-analyze", "verify"])
        .arg(dir.path().join("tcpkit.socket"))
        .arg(dir.path().join("tcpkit.service"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the restart table counts: `bench --mode connect` reports a
/// connection the server resets after accepting it as a reset, not as a
/// failed connect.
#[test]
fn bench_connect_mode_counts_resets_apart_from_failed_connects() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let resetter = std::thread::spawn({
        let stop = stop.clone();
        move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                // SO_LINGER 0: close(2) sends RST instead of FIN.
                if let Ok(conn) = conn {
                    let sock = socket2::Socket::from(conn);
                    let _ = sock.set_linger(Some(Duration::ZERO));
                }
            }
        }
    });
    let out = tcpkit(&[
        "bench",
        "-q",
        "-t",
        &addr.to_string(),
        "--mode",
        "connect",
        "--rate",
        "200",
        "-c",
        "4",
        "-d",
        "1s",
        "--warmup",
        "0s",
        "--json",
    ])
    .output()
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    // Wakes the accept loop so the thread sees the flag.
    let _ = TcpStream::connect(addr);
    resetter.join().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bench JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let n = |key: &str| {
        report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {report}"))
    };
    assert!(n("connection_resets") > 0, "{report}");
    assert_eq!(n("connect_failures"), 0, "{report}");
    assert!(n("connection_resets") <= n("errors"), "{report}");
}
