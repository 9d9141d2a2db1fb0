//! Helpers for `tests/hostile.rs`: the real `tcpkit serve` as a child process
//! (port 0, its `listening on` line parsed, RSS and descriptors read from
//! /proc, stopped by SIGTERM under a deadline, killed by PID on drop), and
//! well-behaved "canary" clients that keep checking the server's answers
//! while a hostile client does its worst.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every blocking socket operation in these tests has this deadline.
pub const IO_DEADLINE: Duration = Duration::from_secs(10);

/// The binary under test: `TCPKIT_BIN` if set (to try an installed build),
/// else the one Cargo built for this test run.
pub fn binary() -> std::ffi::OsString {
    std::env::var_os("TCPKIT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_tcpkit").into())
}

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
    lim.rlim_cur
}

/// `Some(reason)` when this build's `tcpkit serve` is the placeholder (no
/// `--listen`), asked once.
fn serve_unavailable() -> &'static Option<String> {
    static ANSWER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| {
        let out = Command::new(binary())
            .args(["serve", "--help"])
            .output()
            .expect("run tcpkit serve --help");
        let help = String::from_utf8_lossy(&out.stdout);
        (!help.contains("--listen"))
            .then(|| "this build's `tcpkit serve` has no --listen yet".to_owned())
    })
}

/// A `tcpkit serve` child process on 127.0.0.1:0.
pub struct Served {
    child: Option<Child>,
    /// Where it listens (from its `listening on` line).
    pub addr: SocketAddr,
    /// The `listening on` line.
    pub banner: String,
    stdout: BufReader<ChildStdout>,
}

/// Why a server could not be started: the binary in this build has no
/// `serve` yet (tests skip, saying so) or something is really wrong (panic).
pub enum Start {
    Up(Served),
    Unavailable(String),
}

impl Served {
    /// `tcpkit serve --listen 127.0.0.1:0 ARGS...`.
    pub fn start(args: &[&str]) -> Start {
        Self::start_with(args, None)
    }

    /// As [`Served::start`], with RLIMIT_NOFILE (soft and hard) set to
    /// `nofile` in the child before exec, so the server cannot raise it.
    pub fn start_with(args: &[&str], nofile: Option<u64>) -> Start {
        if let Some(why) = serve_unavailable() {
            return Start::Unavailable(why.clone());
        }
        let mut cmd = Command::new(binary());
        cmd.args(["-q", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec here.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn tcpkit serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut banner = String::new();
        // The line comes at once or never; a dead child gives EOF.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let n = stdout.read_line(&mut banner);
            let _ = tx.send(());
            (n, banner, stdout)
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tcpkit serve printed no line within 20s");
        }
        let (_, banner, stdout) = reader.join().expect("reader thread");
        let banner = banner.trim_end().to_owned();
        let Some(endpoint) = banner
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
        else {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait for tcpkit serve");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if stderr.contains("not available in this build") {
                return Start::Unavailable(stderr.trim().to_owned());
            }
            panic!("tcpkit serve {args:?}: no listening line; stdout {banner:?}, stderr {stderr}");
        };
        let addr = endpoint.parse().expect("listening endpoint");
        // Nobody reads stderr: it must not fill its pipe and block the server.
        let mut stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Start::Up(Served {
            child: Some(child),
            addr,
            banner,
            stdout,
        })
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The server's resident set size, KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open descriptors in the server (entries of /proc/PID/fd).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Open sockets in the server (descriptors inherited from the test
    /// harness, such as a jobserver pipe, are not sockets).
    pub fn socket_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count()
    }

    /// Waits until the server has at most `limit` descriptors open (its
    /// connections were cleaned up); panics after `deadline`.
    pub fn wait_fds_at_most(&self, limit: usize, deadline: Duration, what: &str) {
        let start = Instant::now();
        loop {
            let n = self.fd_count();
            if n <= limit {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{what}: server still has {n} descriptors open after {deadline:?} (want <= {limit})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM; the server must exit 0 within 15 s. Returns the rest of its
    /// stdout (the summary).
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server ignored SIGTERM for 15s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        assert!(
            status.success(),
            "server exited with {status}; stdout {rest}"
        );
        rest
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cases measure one server's memory and latency at a time: they run
/// one after another, not in parallel.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts a server, or returns from the test (with a message) when this
/// build's binary has no `serve`.
macro_rules! serve_or_skip {
    ($args:expr) => {
        serve_or_skip!($args, None)
    };
    ($args:expr, $nofile:expr) => {
        match hostile_util::Served::start_with($args, $nofile) {
            hostile_util::Start::Up(s) => s,
            hostile_util::Start::Unavailable(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// A TCP connection with read and write deadlines.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_DEADLINE).expect("connect");
    s.set_read_timeout(Some(IO_DEADLINE)).unwrap();
    s.set_write_timeout(Some(IO_DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until EOF or reset, up to `deadline`; returns what arrived and
/// whether the connection did end (false: still open at the deadline).
pub fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> (Vec<u8>, bool) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == IoKind::ConnectionReset => return (got, true),
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {
                return (got, false);
            }
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// What a canary saw.
#[derive(Debug)]
pub struct CanaryReport {
    /// Verified exchanges (echo round trips, or chat lines received in order).
    pub exchanges: u64,
    /// The slowest exchange.
    pub max_latency: Duration,
}

/// A well-behaved client running beside a hostile one, checking every
/// answer. `stop` panics if anything it saw was wrong or late.
pub struct Canary {
    stop: Arc<AtomicBool>,
    exchanges: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<Duration, String>>>,
    /// Threads that only end when their socket closes (after `threads`).
    drainers: Vec<JoinHandle<Result<Duration, String>>>,
    sockets: Vec<TcpStream>,
    /// What a canary thread that ended early reported.
    failures: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawns a canary thread whose error is also recorded in `failures` at
/// once, so a waiting test can say what went wrong.
fn spawn_checked(
    failures: &Arc<std::sync::Mutex<Vec<String>>>,
    body: impl FnOnce() -> Result<Duration, String> + Send + 'static,
) -> JoinHandle<Result<Duration, String>> {
    let failures = failures.clone();
    std::thread::spawn(move || {
        let result = body();
        if let Err(e) = &result {
            failures.lock().unwrap().push(e.clone());
        }
        result
    })
}

/// Longest a canary's exchange may take while the server is under attack.
pub const CANARY_MAX_LATENCY: Duration = Duration::from_secs(3);

impl Canary {
    /// An echo client doing a verified round trip every 10 ms, with message
    /// sizes from 1 byte to 8 KiB.
    pub fn echo(addr: SocketAddr) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, count) = (stop.clone(), exchanges.clone());
        let thread = spawn_checked(&failures, move || -> Result<Duration, String> {
            let mut s = connect(addr);
            let mut max = Duration::ZERO;
            let mut back = vec![0u8; 8192];
            let mut n: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let len = 1 + (n * 7919 % 8192) as usize;
                let msg: Vec<u8> = (0..len).map(|i| (i as u64 ^ n) as u8).collect();
                let t = Instant::now();
                s.write_all(&msg)
                    .map_err(|e| format!("round trip {n}: write: {e}"))?;
                s.read_exact(&mut back[..len])
                    .map_err(|e| format!("round trip {n}: read: {e}"))?;
                if back[..len] != msg[..] {
                    return Err(format!("round trip {n}: echo differs"));
                }
                max = max.max(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = s.shutdown(Shutdown::Write);
            Ok(max)
        });
        Canary {
            stop,
            exchanges,
            threads: vec![thread],
            drainers: Vec::new(),
            sockets: Vec::new(),
            failures,
        }
    }

    /// Two chat clients in the lobby: `sender` (renamed `canarysend`) says a
    /// numbered line every 10 ms; `receiver` must get every one, in order,
    /// from `canarysend`, whatever else the room says. Both also send an
    /// empty line (a no-op) regularly, so an idle timeout never closes them,
    /// and both keep reading, so they are never slow consumers.
    pub fn chat(addr: SocketAddr) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(AtomicU64::new(0));
        let receiver = connect(addr);
        let mut sender = connect(addr);
        sender.write_all(b"/nick canarysend\n").unwrap();
        let mut sender_lines = BufReader::new(sender.try_clone().unwrap());
        let mut line = Vec::new();
        loop {
            line.clear();
            sender_lines
                .read_until(b'\n', &mut line)
                .expect("canary nick");
            assert!(!line.is_empty(), "server closed the canary");
            if line.windows(19).any(|w| w == b"you are now canarys") {
                break;
            }
        }
        // From here every line the receiver gets from canarysend counts;
        // a hello proves the receiver is in the room before timing starts.
        sender.write_all(b"canary-hello\n").unwrap();
        let mut receiver_lines = BufReader::new(receiver.try_clone().unwrap());
        loop {
            line.clear();
            receiver_lines
                .read_until(b'\n', &mut line)
                .expect("canary hello");
            assert!(!line.is_empty(), "server closed the canary receiver");
            if line.starts_with(b"canarysend: canary-hello") {
                break;
            }
        }

        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent_at = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut threads = Vec::new();
        // Sender: numbered lines.
        let (flag, times) = (stop.clone(), sent_at.clone());
        let mut w = sender.try_clone().unwrap();
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                let mut n = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    times.lock().unwrap().push_back(Instant::now());
                    w.write_all(format!("canary-{n}\n").as_bytes())
                        .map_err(|e| format!("canary sender: write {n}: {e}"))?;
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Duration::ZERO)
            },
        ));
        // Sender's own inbox: drained, never checked.
        let drainer = spawn_checked(&failures, move || -> Result<Duration, String> {
            let mut buf = [0u8; 16 * 1024];
            sender_lines.get_mut().set_read_timeout(None).unwrap();
            while sender_lines.read(&mut buf).map_err(|e| e.to_string())? > 0 {}
            Ok(Duration::ZERO)
        });
        // Receiver keepalive: empty lines.
        let flag = stop.clone();
        let mut w = receiver.try_clone().unwrap();
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                while !flag.load(Ordering::Relaxed) {
                    w.write_all(b"\n")
                        .map_err(|e| format!("canary receiver: keepalive: {e}"))?;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(Duration::ZERO)
            },
        ));
        // Receiver: every canary line, in order, on time.
        let (flag, count) = (stop.clone(), exchanges.clone());
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                let mut expected = 0u64;
                let mut max = Duration::ZERO;
                let mut line = Vec::new();
                receiver_lines
                    .get_mut()
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                loop {
                    line.clear();
                    match receiver_lines.read_until(b'\n', &mut line) {
                        Ok(0) => return Err(format!("receiver closed after {expected} lines")),
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {
                            // Quiet is fine once the sender has stopped.
                            if flag.load(Ordering::Relaxed) && sent_at.lock().unwrap().is_empty() {
                                return Ok(max);
                            }
                            let waited = sent_at.lock().unwrap().front().map(|t| t.elapsed());
                            if waited.is_some_and(|w| w > CANARY_MAX_LATENCY * 2) {
                                return Err(format!(
                                    "line {expected} not received after {waited:?}"
                                ));
                            }
                            continue;
                        }
                        Err(e) => return Err(format!("receiver: {e}")),
                    }
                    let Some(rest) = line.strip_prefix(b"canarysend: canary-") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(rest);
                    let n: u64 = text
                        .trim_end()
                        .parse()
                        .map_err(|_| format!("bad line {text:?}"))?;
                    if n != expected {
                        return Err(format!("expected canary-{expected}, got canary-{n}"));
                    }
                    let sent = sent_at
                        .lock()
                        .unwrap()
                        .pop_front()
                        .expect("sent before received");
                    max = max.max(sent.elapsed());
                    expected += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            },
        ));
        Canary {
            stop,
            exchanges,
            threads,
            drainers: vec![drainer],
            sockets: vec![receiver, sender],
            failures,
        }
    }

    /// Verified exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more exchanges succeed (proves the server is
    /// still serving it *now*); panics after 10 s.
    pub fn wait_for_more(&self, n: u64, what: &str) {
        let target = self.exchanges() + n;
        let start = Instant::now();
        while self.exchanges() < target {
            assert!(
                start.elapsed() < IO_DEADLINE,
                "{what}: canary stalled at {} exchanges",
                self.exchanges()
            );
            let failures = self.failures.lock().unwrap().clone();
            assert!(failures.is_empty(), "{what}: canary failed: {failures:?}");
            assert!(
                !self.threads.iter().any(|t| t.is_finished()),
                "{what}: a canary thread ended early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the canary; panics if any exchange was wrong or too slow.
    pub fn stop(self, what: &str) -> CanaryReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut max = Duration::ZERO;
        let mut failures = Vec::new();
        for t in self.threads {
            match t.join().expect("canary thread") {
                Ok(m) => max = max.max(m),
                Err(e) => failures.push(e),
            }
        }
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.drainers {
            if let Err(e) = t.join().expect("canary drainer") {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "{what}: canary failed: {failures:?}");
        let exchanges = self.exchanges.load(Ordering::Relaxed);
        assert!(exchanges > 0, "{what}: canary made no exchange");
        assert!(
            max <= CANARY_MAX_LATENCY,
            "{what}: canary exchange took {max:?} (limit {CANARY_MAX_LATENCY:?})"
        );
        CanaryReport {
            exchanges,
            max_latency: max,
        }
    }
}
