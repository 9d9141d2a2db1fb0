//! The binary as a user meets it: a closed stdout, Ctrl-C with clients
//! connected, one endpoint syntax in every command, `--help`'s exit codes,
//! shell completions and the man page. Loopback only, port 0 only, no name
//! but `localhost` resolved; every child is killed by PID when a test ends.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);

fn tcpkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcpkit"))
}

/// A child killed (by PID) and reaped when the test ends, however it ends.
struct Proc(Child);

impl Proc {
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tcpkit {} did not exit within {DEADLINE:?}",
                self.0.id()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid");
        // SAFETY: a signal to the child this test spawned and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Lines of a child's pipe, on a thread.
fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A stdout whose reader is already gone: every write fails with EPIPE.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

#[test]
fn demo_and_others_exit_quietly_on_a_closed_stdout() {
    for args in [
        &["demo"][..],
        &["completions", "bash"],
        &["man"],
        &["serve", "--listen", "127.0.0.1:0"],
        &["--help"],
        &["bench", "--help"],
    ] {
        let child = tcpkit()
            .args(args)
            .stdin(Stdio::null())
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut proc = Proc(child);
        let status = proc.wait();
        let stderr = stderr_of(&mut proc.0);
        assert_eq!(status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said something: {stderr}");
    }
}

/// Starts `serve` on 127.0.0.1:0 and returns it, its endpoint and its
/// stderr lines.
fn serve(extra: &[&str]) -> (Proc, String, Receiver<String>, Option<Receiver<String>>) {
    let mut child = tcpkit()
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let errors = lines(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    out.read_line(&mut first).expect("listening line");
    let addr = first
        .split_whitespace()
        .nth(2)
        .expect("endpoint")
        .to_owned();
    (Proc(child), addr, errors, Some(lines(out)))
}

/// A client the server has accepted and served: its echo came back.
fn echoed_client(addr: &str) -> TcpStream {
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(DEADLINE)).expect("timeout");
    client.write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).expect("echo");
    client
}

#[test]
fn ctrl_c_with_live_clients_says_draining_and_a_second_stops_at_once() {
    let (proc, addr, errors, _out) = serve(&["--shutdown-grace", "60s"]);
    let _a = echoed_client(&addr);
    let _b = echoed_client(&addr);
    proc.signal(libc::SIGINT);
    let said = errors.recv_timeout(DEADLINE).expect("a line on stderr");
    assert_eq!(
        said,
        "draining 2 connections (up to 1m); Ctrl-C again to stop now"
    );
    // The idle clients would hold the drain for the whole minute.
    let mut proc = proc;
    assert!(
        proc.0.try_wait().expect("try_wait").is_none(),
        "exited before the drain"
    );
    let second = Instant::now();
    proc.signal(libc::SIGINT);
    let status = proc.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        second.elapsed() < Duration::from_secs(10),
        "the second Ctrl-C took {:?}",
        second.elapsed()
    );
}

#[test]
fn serve_under_head_exits_0_when_head_is_gone() {
    // `tcpkit serve | head -1`: head reads the listening line and leaves; the
    // summary written at Ctrl-C finds no reader.
    let mut child = tcpkit()
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("listening line");
    assert!(first.starts_with("listening on "), "{first}");
    drop(out);
    let mut proc = Proc(child);
    proc.signal(libc::SIGINT);
    let status = proc.wait();
    let stderr = stderr_of(&mut proc.0);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs tcpkit to the end with empty stdin: status and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let child = tcpkit()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut proc = Proc(child);
    let status = proc.wait();
    (status.code(), stderr_of(&mut proc.0))
}

#[test]
fn one_endpoint_syntax_everywhere() {
    // Input errors found before any lookup: exit 2, naming what is wrong.
    let (code, err) = run(&["connect", ":3333"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing host"), "{err}");
    let (code, err) = run(&["connect", "localhost:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("port 0"), "{err}");
    let target = format!("[::1]:{}", common::closed_port());
    let (code, err) = run(&["connect", "--source", "127.0.0.1", &target]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("IPv4") && err.contains("IPv6"), "{err}");
    for args in [
        &["serve", "--listen", "bad host:80"][..],
        &["listen", "bad host:80"],
        &["connect", "bad host:80"],
        &["bench", "--target", "bad host:80"],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("\"bad host\""), "{args:?}: {err}");
    }
    let (code, err) = run(&["bench", "--size", "1048577"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("above the maximum"), "{err}");
    let (code, err) = run(&["bench", "--server-cpu", "1023"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CPU 1023"), "{err}");
    // Every error carries its code.
    for args in [
        &["connect", ":1"][..],
        &["bench", "--plot", "/nonexistent/x.svg"],
    ] {
        let (_, err) = run(args);
        assert!(err.starts_with("tcpkit: error [code "), "{args:?}: {err}");
    }
}

#[test]
fn connect_takes_host_and_port_as_two_words() {
    let (proc, addr, _errors, _out) = serve(&[]);
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let out = tcpkit()
        .args(["connect", host, port, "--send", "hello"])
        .args(["--idle-timeout", "0", "--lines", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("run connect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello\n");
    drop(proc);
}

#[test]
fn serve_and_listen_take_a_port_alone_and_a_name() {
    // A port alone: every interface; port 0 so the kernel picks a free one.
    let mut child = tcpkit()
        .args(["serve", "--listen", "0", "--workers", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let proc = Proc(child);
    let mut first = String::new();
    out.read_line(&mut first).expect("listening line");
    assert!(
        first.starts_with("listening on [::]:") || first.starts_with("listening on 0.0.0.0:"),
        "{first}"
    );
    drop(proc);
    // `listen localhost:0` resolves the name (the one lookup tests may make).
    let mut child = tcpkit()
        .args(["listen", "localhost:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listen");
    let errors = lines(child.stderr.take().expect("stderr"));
    let _proc = Proc(child);
    let said = errors.recv_timeout(DEADLINE).expect("listening line");
    assert!(
        said.starts_with("listening on 127.0.0.1:") || said.starts_with("listening on [::1]:"),
        "{said}"
    );
}

/// The exit codes each subcommand's `--help` must list, and must not.
#[test]
fn each_help_lists_its_own_exit_codes() {
    let cases: [(&str, &[u8], &[u8]); 7] = [
        ("demo", &[0, 1, 2, 6, 7, 8], &[3, 4, 5]),
        ("serve", &[0, 1, 2, 3, 6, 7], &[4, 5, 8]),
        ("connect", &[0, 1, 2, 3, 4, 5, 6, 9, 10], &[7, 8]),
        ("listen", &[0, 1, 2, 3, 5, 6, 7, 9, 10], &[4, 8]),
        ("bench", &[0, 1, 2, 3, 4, 5, 6, 7, 8], &[]),
        ("completions", &[0, 1, 2], &[3, 8]),
        ("man", &[0, 1, 2], &[3, 8]),
    ];
    for (command, listed, absent) in cases {
        let out = tcpkit().args([command, "--help"]).output().expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        let block = text
            .split("Exit codes:")
            .nth(1)
            .unwrap_or_else(|| panic!("{command} --help has no exit codes:\n{text}"));
        let codes: Vec<u8> = block
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        for c in listed {
            assert!(
                codes.contains(c),
                "{command} --help lacks exit code {c}: {codes:?}"
            );
        }
        for c in absent {
            assert!(
                !codes.contains(c),
                "{command} --help lists exit code {c}: {codes:?}"
            );
        }
    }
}

fn subcommands() -> [&'static str; 7] {
    [
        "demo",
        "serve",
        "connect",
        "listen",
        "bench",
        "completions",
        "man",
    ]
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = tcpkit()
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands() {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            script.contains("--idle-timeout"),
            "{shell} completion lacks flags"
        );
    }
    let out = tcpkit()
        .args(["completions", "bash"])
        .output()
        .expect("bash");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
}

#[test]
fn man_page_is_roff_with_every_subcommand() {
    let out = tcpkit().arg("man").output().expect("man");
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        page.starts_with(".ie") || page.contains("\n.TH "),
        "no .TH:\n{page}"
    );
    assert!(page.contains(".TH tcpkit"), "{page}");
    for sub in subcommands() {
        assert!(
            page.contains(&format!("TCPKIT {}", sub.to_uppercase())),
            "man lacks {sub}"
        );
    }
    assert!(page.contains("shutdown\\-grace"), "man lacks serve's flags");
}

#[test]
fn usage_errors_carry_a_code_like_every_other_error() {
    for args in [
        &["--bogus"][..],
        &["serve", "--idle-timeout", "300000000000y"],
        &["connect"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("tcpkit: error [code 1010]: "),
            "{args:?}: {stderr}"
        );
    }
    // Help is not an error.
    let (code, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
}

#[test]
fn an_ip_literal_of_the_other_family_than_4_or_6_is_a_usage_error() {
    // Nothing could ever be tried: exit 2 naming the flag and the address
    // (before: 3, as if a lookup had found nothing), before any socket.
    let port = common::closed_port().to_string();
    let v4 = format!("127.0.0.1:{port}");
    let v6 = format!("[::1]:{port}");
    for (args, flag, addr) in [
        (vec!["connect", "-6", &v4], "-6", v4.as_str()),
        (vec!["connect", "-4", &v6], "-4", v6.as_str()),
        (vec!["connect", "-6", "127.0.0.1", &port], "-6", v4.as_str()),
        (
            vec!["connect", "-6", "--source", "127.0.0.1", &v6],
            "-6",
            "127.0.0.1",
        ),
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("tcpkit: error [code 1010]: ")
                && err.contains(&format!("{flag}:"))
                && err.contains(addr),
            "{args:?}: {err}"
        );
    }
    // The matching family still dials (and is refused: exit 4).
    let (code, err) = run(&["connect", "-4", &v4]);
    assert_eq!(code, Some(4), "{err}");
}

/// Starts `tcpkit ARGS` (a server printing `listening on ENDPOINT ...`
/// first) and returns it, its endpoint and its stderr lines.
fn started(args: &[&str]) -> (Proc, String, Receiver<String>) {
    let mut child = tcpkit()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = lines(child.stdout.take().expect("stdout"));
    let errors = lines(child.stderr.take().expect("stderr"));
    let proc = Proc(child);
    let first = out.recv_timeout(DEADLINE).expect("listening line");
    let addr = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no endpoint in {first:?}"))
        .to_owned();
    (proc, addr, errors)
}

/// Waits for a stderr line containing `what`.
fn said(errors: &Receiver<String>, what: &str) {
    let start = Instant::now();
    while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
        match errors.recv_timeout(left) {
            Ok(line) if line.contains(what) => return,
            Ok(_) => {}
            Err(e) => panic!("no stderr line with {what:?}: {e}"),
        }
    }
    panic!("no stderr line with {what:?} within {DEADLINE:?}");
}

#[test]
fn sighup_with_nothing_to_reload_is_logged_and_serving_goes_on() {
    // No TLS, no access-list files: SIGHUP's default action (terminate)
    // would kill a daemon at a `systemctl reload` or a closed terminal.
    let (server, addr, server_err) = started(&["serve", "--listen", "127.0.0.1:0", "-v"]);
    // relay shares serve's server code and signal handling.
    let (relay, relay_addr, relay_err) =
        started(&["relay", "--listen", "127.0.0.1:0", "--to", &addr, "-v"]);
    for (proc, errors) in [(&server, &server_err), (&relay, &relay_err)] {
        proc.signal(libc::SIGHUP);
        said(errors, "SIGHUP: nothing to reload");
    }
    // Both still serve: an echo through the relay.
    let mut client = echoed_client(&relay_addr);
    client.write_all(b"after SIGHUP").expect("write");
    let mut back = [0u8; 12];
    client
        .read_exact(&mut back)
        .expect("echo through the relay");
    assert_eq!(&back, b"after SIGHUP");
    drop(client);
    for mut proc in [relay, server] {
        proc.signal(libc::SIGTERM);
        let status = proc.wait();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}
