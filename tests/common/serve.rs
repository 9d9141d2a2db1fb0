//! `tcpkit serve` as a child process for tests that drive the command
//! line: its stdout and stderr lines arrive on channels (read on threads),
//! it is killed by its PID when dropped, and every wait has a deadline.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How long any wait on the child may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `tcpkit serve --listen 127.0.0.1:0 --workers 1 ARGS…`.
pub struct Serve {
    /// The process (killed on drop).
    pub child: Child,
    /// Its stdout, line by line.
    pub stdout: Receiver<String>,
    /// Its stderr, line by line.
    pub stderr: Receiver<String>,
}

impl Serve {
    /// Starts `tcpkit serve` on an ephemeral loopback port with `args`.
    pub fn spawn(args: &[&str]) -> Serve {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--workers", "1"];
        all.extend_from_slice(args);
        Serve::tcpkit(&all)
    }

    /// Starts `tcpkit ARGS…` (any subcommand, as given), with the same
    /// line channels and kill on drop.
    pub fn tcpkit(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpkit serve");
        let lines = |pipe: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().expect("stdout")));
        let stderr = lines(Box::new(child.stderr.take().expect("stderr")));
        Serve {
            child,
            stdout,
            stderr,
        }
    }

    /// The first line on `pipe` containing `needle` (earlier lines are
    /// consumed); panics after [`DEADLINE`].
    pub fn wait_line(pipe: &Receiver<String>, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match pipe.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?} from tcpkit serve: {e}"),
            }
        }
    }

    /// Waits until a stderr line containing each of `needles` was seen, in
    /// any order.
    pub fn wait_all(&self, needles: &[&str]) {
        let deadline = Instant::now() + DEADLINE;
        let mut missing: Vec<&str> = needles.to_vec();
        while !missing.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => missing.retain(|n| !line.contains(n)),
                Err(e) => panic!("no line with {missing:?} from tcpkit serve: {e}"),
            }
        }
    }

    /// The address from the `listening on ADDR …` line, and the line.
    pub fn listening(&self) -> (SocketAddr, String) {
        let line = Serve::wait_line(&self.stdout, "listening on ");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|ep| ep.parse().ok())
            .unwrap_or_else(|| panic!("no endpoint in {line:?}"));
        (addr, line)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listening().0
    }

    /// Sends `sig` to the child (by its PID).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// SIGTERM, then the exit status and every stdout and stderr line not
    /// read yet.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "tcpkit serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, once the child is gone.
        let drain = |rx: &Receiver<String>| {
            let mut lines = Vec::new();
            while let Ok(line) = rx.recv_timeout(DEADLINE) {
                lines.push(line);
            }
            lines
        };
        (status, drain(&self.stdout), drain(&self.stderr))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
