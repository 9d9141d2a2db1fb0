//! Parsers and checks for flag values shared by the subcommands: durations
//! with a ceiling, CPUs that exist, output files that can be written, and
//! the error that names the flag. Everything here runs before a socket opens
//! or a child starts, so a bad value never leaves half a run behind.

use std::path::Path;
use std::time::Duration;

use tcpkit::endpoint::{HostPort, RESOLVE_TIMEOUT, SystemResolver};
use tcpkit::error::code;
use tcpkit::{Endpoint, Error, ErrorKind};

/// The longest duration any flag takes: one year (365 days). Longer values
/// are typos (`300000000000y`), and adding them to `Instant::now()` would
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The most runtime threads `serve --workers` (and bench's `--threads`,
/// `--server-workers`) start: far above any core count a host has, far below
/// the number at which thread creation aborts the process.
pub const MAX_WORKERS: usize = 1024;

/// The most connections bench opens, and `serve --max-connections` admits
/// (tokio's semaphore allows fewer than `usize::MAX >> 3` permits).
pub const MAX_CONNECTIONS: usize = 1 << 24;

/// The longest chat line `serve --max-line` allows: every member may hold
/// one partial line this long in memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// clap value parser for a count in `min..=max` (the error names the flag
/// and the range).
pub fn count(min: usize, max: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min as u64..=max as u64)
}

/// clap value parser for durations: `30s`, `500ms`, `5m`, `1h 30m`; a bare
/// `0` is zero (which flags that can be turned off read as "none"). At most
/// [`MAX_DURATION`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let d = if text.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 30s, 500ms, 5m)"))?
    };
    if d > MAX_DURATION {
        return Err(format!("{text} is above the maximum of 365d"));
    }
    Ok(d)
}

/// A usage error (exit 2) naming the flag and its value.
pub fn invalid(flag: &str, message: impl std::fmt::Display) -> anyhow::Error {
    Error::new(
        ErrorKind::InvalidConfig,
        code::INVALID_CONFIG,
        format!("{flag}: {message}"),
    )
    .into()
}

/// Parses endpoint text given to `flag` with the one parser every command
/// uses ([`HostPort::parse`]), naming the flag in the error.
pub fn host_port(flag: &str, text: &str) -> anyhow::Result<HostPort> {
    HostPort::parse(text).map_err(|e| e.context(flag).into())
}

/// The first address `place` resolves to (a port alone: the first loopback
/// address), naming `flag` in the error; the lookup gets [`RESOLVE_TIMEOUT`].
pub fn first_address(flag: &str, place: &HostPort) -> anyhow::Result<Endpoint> {
    let endpoints = place
        .resolve(&SystemResolver, RESOLVE_TIMEOUT)
        .map_err(|e| e.context(flag))?;
    // A resolver answers with an address or an error; an empty answer is
    // still reported as a resolution failure rather than trusted.
    endpoints.into_iter().next().ok_or_else(|| {
        Error::new(
            ErrorKind::Resolve,
            code::RESOLVE,
            format!("{flag}: {place} resolved to no address"),
        )
        .into()
    })
}

/// Checks that `cpu` is one this process may run on (`sched_getaffinity(2)`),
/// so a pinned child never starts on a CPU that does not exist.
#[cfg(target_os = "linux")]
pub fn check_cpu(flag: &str, cpu: usize) -> anyhow::Result<()> {
    let allowed = allowed_cpus();
    if allowed.contains(&cpu) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    Err(invalid(
        flag,
        format_args!(
            "CPU {cpu} is not available (this process may use CPU {})",
            list.join(", ")
        ),
    ))
}

/// CPU pinning needs Linux; the pin itself reports that.
#[cfg(not(target_os = "linux"))]
pub fn check_cpu(_flag: &str, _cpu: usize) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its
    // size, and CPU_ISSET is called only below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            return (0..n).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Checks that `path` can be created (or overwritten) as a file, before the
/// run whose results it is meant to hold: not a directory, parent present.
/// A file created by the check is removed again.
pub fn check_output_file(flag: &str, path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(invalid(
            flag,
            format_args!("{} is a directory, not a file", path.display()),
        ));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| path_error(flag, "cannot write", path, e))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// A path the user gave that cannot be used: a usage error (exit 2) naming
/// the flag and the path, with the errno as its code.
pub fn path_error(flag: &str, what: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    let os = Error::io(e, format_args!("{flag}: {what} {}", path.display()));
    Error::new(ErrorKind::InvalidConfig, os.code(), os.message()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_ceiling_and_zero() {
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("365d"), Ok(MAX_DURATION));
        assert!(duration("366d").unwrap_err().contains("maximum"));
        assert!(duration("300000000000y").is_err());
        assert!(duration("soon").unwrap_err().contains("e.g."));
    }

    #[test]
    fn output_files_are_checked_without_leaving_one_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_output_file("--histogram", dir.path()).unwrap_err();
        assert!(format!("{err}").contains("directory"), "{err}");
        let missing = dir.path().join("no/such/dir/x.svg");
        let err = check_output_file("--plot", &missing).unwrap_err();
        assert!(format!("{err}").contains("--plot"), "{err}");
        let fresh = dir.path().join("fresh.svg");
        check_output_file("--plot", &fresh).expect("writable");
        assert!(!fresh.exists());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpus_beyond_the_set_are_named() {
        let err = check_cpu("--server-cpu", 1024).unwrap_err();
        assert!(format!("{err}").contains("CPU 1024"), "{err}");
        assert!(check_cpu("--server-cpu", allowed_cpus()[0]).is_ok());
    }
}
