//! Helpers for `tests/hostile.rs`: the real `tcpkit serve` as a child process
//! (port 0, its `listening on` line parsed, RSS and descriptors read from
//! /proc, stopped by SIGTERM under a deadline, killed by PID on drop), and
//! well-behaved "canary" clients that keep checking the server's answers
//! while a hostile client does its worst.
#![allow(dead_code)]

mod canary;
pub mod framed;

pub use canary::Canary;

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
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
    // `rlim_t` is `u64` on Linux and `i64` on the BSDs.
    #[allow(clippy::useless_conversion)]
    u64::try_from(lim.rlim_cur).unwrap_or(1024)
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

impl Served {
    /// `tcpkit serve --listen 127.0.0.1:0 ARGS...`; panics if it does not
    /// come up (the binary is always built with the tests).
    pub fn start(args: &[&str]) -> Served {
        Self::start_with(args, None)
    }

    /// As [`Served::start`], with RLIMIT_NOFILE (soft and hard) set to
    /// `nofile` in the child before exec, so the server cannot raise it.
    pub fn start_with(args: &[&str], nofile: Option<u64>) -> Served {
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
                #[allow(clippy::useless_conversion)]
                let limit = libc::rlim_t::try_from(limit).unwrap_or(libc::rlim_t::MAX);
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
            let stderr = String::from_utf8_lossy(&output.stderr);
            panic!("tcpkit serve {args:?}: no listening line; stdout {banner:?}, stderr {stderr}");
        };
        let addr = endpoint.parse().expect("listening endpoint");
        // Nobody reads stderr: it must not fill its pipe and block the server.
        let mut stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Served {
            child: Some(child),
            addr,
            banner,
            stdout,
        }
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
