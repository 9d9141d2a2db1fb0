//! A server process to measure: started as a child (normally `tcpkit serve`),
//! found by the first line it prints, and stopped with `SIGTERM` by PID.
//!
//! The contract with `tcpkit serve` is its first stdout line:
//! `listening on <ENDPOINT> (<mode>, backlog <N>)`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorKind, Result, code};

/// A running server child process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    pid: u32,
    endpoint: Endpoint,
    banner: String,
}

/// The endpoint of a `listening on <ENDPOINT> (...)` line.
///
/// ```
/// use tcpkit::bench::server::parse_listening_line;
/// let ep = parse_listening_line("listening on 127.0.0.1:40123 (echo, backlog 1024)").unwrap();
/// assert_eq!(ep.port(), 40123);
/// assert_eq!(parse_listening_line("listening on [::1]:7 (discard, backlog 30)").unwrap().port(), 7);
/// assert!(parse_listening_line("hello").is_none());
/// ```
pub fn parse_listening_line(line: &str) -> Option<Endpoint> {
    let rest = line.trim().strip_prefix("listening on ")?;
    let addr = rest.split_whitespace().next()?;
    Endpoint::parse(addr).ok()
}

impl ServerProcess {
    /// Spawns `command` with stdout piped, pinned to CPU `cpu` if given
    /// (`sched_setaffinity(2)` in the child before `exec`, as `taskset`), and
    /// waits up to `startup` for its `listening on` line.
    pub fn spawn(command: Command, cpu: Option<usize>, startup: Duration) -> Result<ServerProcess> {
        Self::start(command, cpu, startup, None).map(|(server, _)| server)
    }

    /// As [`spawn`](Self::spawn), also reading the child's stderr: every
    /// line is passed on to this process's stderr, and the first one that
    /// contains `marker` (printed before `listening on`, such as `serve
    /// --tls`'s certificate fingerprint) is returned with the server.
    pub fn spawn_with_stderr_line(
        command: Command,
        cpu: Option<usize>,
        startup: Duration,
        marker: &'static str,
    ) -> Result<(ServerProcess, String)> {
        let (server, line) = Self::start(command, cpu, startup, Some(marker))?;
        // The line is written before `listening on`; its reader thread may
        // lag behind the stdout one by a moment, not more.
        match line.and_then(|rx| rx.recv_timeout(startup).ok()) {
            Some(line) => Ok((server, line)),
            None => Err(startup_error(format!(
                "server pid {} printed no line containing {marker:?} on stderr",
                server.pid
            ))),
        }
    }

    fn start(
        mut command: Command,
        cpu: Option<usize>,
        startup: Duration,
        marker: Option<&'static str>,
    ) -> Result<(ServerProcess, Option<mpsc::Receiver<String>>)> {
        let program = command.get_program().to_string_lossy().into_owned();
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        if marker.is_some() {
            command.stderr(Stdio::piped());
        }
        #[cfg(not(target_os = "linux"))]
        if let Some(cpu) = cpu {
            return Err(super::proc::pinning_unsupported(cpu));
        }
        #[cfg(target_os = "linux")]
        if let Some(cpu) = cpu {
            use std::os::unix::process::CommandExt;
            // SAFETY: only an async-signal-safe syscall runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(e, format_args!("start server {program}")))?;
        let pid = child.id();
        let marked = match (marker, child.stderr.take()) {
            (Some(marker), Some(stderr)) => {
                let (tx, rx) = mpsc::channel();
                // Passes every line on, so the server's logs still show.
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                        eprintln!("{line}");
                        if line.contains(marker)
                            && let Some(tx) = tx.take()
                        {
                            let _ = tx.send(line);
                        }
                    }
                });
                Some(rx)
            }
            _ => None,
        };
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            // Keeps draining stdout after the first line so the server never
            // blocks on a full pipe.
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let first = lines.next();
                let _ = tx.send(first);
                for _ in lines {}
            });
        }
        let mut server = ServerProcess {
            child: Some(child),
            pid,
            endpoint: Endpoint::loopback_v4(0),
            banner: String::new(),
        };
        let line = match rx.recv_timeout(startup) {
            Ok(Some(Ok(line))) => line,
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server.stop(Duration::from_secs(1)).ok();
                return Err(startup_error(format!(
                    "server {program} (pid {pid}) exited or closed stdout before printing `listening on ...` ({})",
                    status.map_or("status unknown".into(), |s| s.to_string())
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = server.stop(Duration::from_secs(1));
                return Err(Error::timed_out(
                    format_args!("server {program} (pid {pid}) printing `listening on ...`"),
                    startup,
                ));
            }
        };
        server.endpoint = parse_listening_line(&line).ok_or_else(|| {
            startup_error(format!(
                "server {program} (pid {pid}) printed {line:?}, expected `listening on <ENDPOINT> (<mode>, backlog <N>)`"
            ))
        })?;
        server.banner = line;
        Ok((server, marked))
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where it listens (from its first line).
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Its first stdout line.
    pub fn banner(&self) -> &str {
        &self.banner
    }

    /// Sends `SIGTERM` to the PID and waits up to `grace` for the exit, then
    /// sends `SIGKILL` and reaps it.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::new(
                ErrorKind::Io,
                libc::ESRCH,
                format!("server pid {} already stopped", self.pid),
            ));
        };
        let waited = |e| Error::io(e, format_args!("wait for server pid {}", self.pid));
        if let Some(status) = child.try_wait().map_err(waited)? {
            return Ok(status);
        }
        // SAFETY: kill(2) on our own child's PID, not yet reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().map_err(waited)? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().map_err(waited)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn startup_error(message: String) -> Error {
    Error::new(ErrorKind::Io, code::UNEXPECTED_EOF, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_endpoint_and_stops_by_sigterm() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo 'listening on 127.0.0.1:4444 (echo, backlog 30)'; exec sleep 30",
        ]);
        let mut server = ServerProcess::spawn(cmd, None, Duration::from_secs(5)).unwrap();
        assert_eq!(server.endpoint().port(), 4444);
        let status = server.stop(Duration::from_secs(5)).unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn a_server_that_prints_something_else_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo nope"]);
        let err = ServerProcess::spawn(cmd, None, Duration::from_secs(5)).unwrap_err();
        assert!(err.message().contains("expected `listening on"), "{err}");
    }
}
