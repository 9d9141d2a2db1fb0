//! `serve`'s socket activation and restart flags: `--listen systemd` /
//! `--listen fd:N` (listeners this process inherited), `--pidfile PATH`
//! (write the pid, offer the listeners at `PATH.sock`) and `--upgrade-from
//! PIDFILE` (take a running server's listeners, then tell it to drain).
//!
//! Activation is asked for, never guessed from the environment: a server
//! listens where its command line says, and a unit that lost its `.socket`
//! fails with an error naming `LISTEN_PID` / `LISTEN_FDS` rather than
//! quietly listening on the default port.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tcpkit::net::{Inherited, LISTEN_FDS_START, ListenFds};
use tcpkit::server::handover::{self, Offer, Taken};
use tcpkit::server::{Listen, Server};

use super::values;

/// Flags of `tcpkit serve` for activation and restarts.
#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// Write this process's pid to PATH and offer the listening sockets to
    /// a successor at PATH.sock (a UNIX socket, mode 0600), for
    /// `--upgrade-from PATH`. Both are removed at exit unless a successor
    /// took them over.
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// Restart without losing a connection: take the listening sockets of
    /// the server whose pid is in PIDFILE (over PIDFILE.sock), serve them,
    /// then tell it to stop accepting and drain. Replaces --listen.
    #[arg(long, value_name = "PIDFILE", conflicts_with = "listen")]
    pub upgrade_from: Option<PathBuf>,
}

/// `--listen systemd` / `--listen fd:N`, or `None` for an address.
pub fn inherited_listen(text: &str) -> Option<anyhow::Result<Listen>> {
    if text == "systemd" {
        return Some(
            ListenFds::from_env()
                .map(|fds| Listen::Inherited(fds.into_inherited()))
                .map_err(Into::into),
        );
    }
    let n = text.strip_prefix("fd:")?;
    Some(fd_listen(n))
}

fn fd_listen(n: &str) -> anyhow::Result<Listen> {
    let fd = n
        .parse::<i32>()
        .ok()
        .filter(|fd| *fd >= LISTEN_FDS_START)
        .ok_or_else(|| {
            values::invalid(
                "--listen",
                format!("fd:{n}: a descriptor number from {LISTEN_FDS_START} up"),
            )
        })?;
    // SAFETY: F_GETFD reads the descriptor's flags and nothing else.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(tcpkit::Error::io(e, format_args!("--listen fd:{fd}")).into());
    }
    // SAFETY: the user handed this open descriptor to the process for it
    // to serve on (as a supervisor does); nothing else in tcpkit owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Listen::Inherited(Inherited::new(vec![(
        owned,
        format!("fd {fd}"),
    )])))
}

/// Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` so no child of
/// ours takes them for its own. Call before any thread starts.
pub fn forget_activation_env() {
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: called from `serve` before the runtime or any other
        // thread exists, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

/// `--upgrade-from PIDFILE`: the predecessor's sockets (blocking, bounded).
pub fn take_over(pidfile: &Path) -> anyhow::Result<Taken> {
    let pid = read_pid(pidfile)?;
    Ok(handover::receive(
        &handover::control_path(pidfile),
        Some(pid),
    )?)
}

fn read_pid(pidfile: &Path) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(pidfile)
        .map_err(|e| values::path_error("--upgrade-from", "read", pidfile, e))?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            values::invalid(
                "--upgrade-from",
                format!("{}: no pid in it ({:?})", pidfile.display(), text.trim()),
            )
        })
}

/// `--pidfile PATH`: offers the server's sockets at PATH.sock, then writes
/// the pid (renamed into place, so a reader never sees half of it).
pub fn publish(server: &Server, pidfile: &Path) -> anyhow::Result<Offer> {
    let offer = handover::offer(&handover::control_path(pidfile), server.listener_fds()?)?;
    let mut tmp = pidfile.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, pidfile));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(values::path_error("--pidfile", "write", pidfile, e));
    }
    Ok(offer)
}

/// At exit: removes the pidfile if it still names this process (a
/// successor has written its own otherwise).
pub fn unpublish(pidfile: &Path) {
    let ours = std::fs::read_to_string(pidfile)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(pidfile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_values_are_checked() {
        for bad in ["", "x", "-1", "0", "2", "99999999999"] {
            let e = fd_listen(bad).unwrap_err().to_string();
            assert!(e.contains("--listen"), "{bad}: {e}");
        }
        // Not open: EBADF, naming the descriptor.
        let e = fd_listen("1000000").unwrap_err().to_string();
        assert!(e.contains("fd:1000000"), "{e}");
    }

    #[test]
    fn a_pidfile_without_a_pid_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pid");
        std::fs::write(&p, "nope\n").unwrap();
        let e = read_pid(&p).unwrap_err().to_string();
        assert!(e.contains("--upgrade-from") && e.contains("nope"), "{e}");
        assert!(read_pid(&dir.path().join("missing")).is_err());
    }
}
