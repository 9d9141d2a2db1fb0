//! What the bench reads about processes: CPU time and resident memory from
//! `/proc/PID/stat` and `/proc/PID/status`, its own CPU time from
//! `getrusage(2)`, and the `sched_setaffinity(2)` / `setrlimit(2)` calls that
//! pin it and let it hold thousands of connections.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result, code};

/// One look at a process: CPU time so far and resident set size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time since the process started.
    pub cpu: Duration,
    /// Resident set size (`VmRSS`), in KiB.
    pub rss_kib: u64,
}

/// Reads `/proc/PID/stat` (utime + stime) and `/proc/PID/status` (VmRSS).
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| Error::io(e, format_args!("read /proc/{pid}/stat")))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Error::io(e, format_args!("read /proc/{pid}/status")))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| bad(pid, "stat", "utime/stime"))?;
    let rss_kib = parse_status_rss_kib(&status)
        .ok_or_else(|| bad(pid, "status", "VmRSS (has the process exited?)"))?;
    Ok(ProcSample {
        cpu: ticks_to_duration(ticks),
        rss_kib,
    })
}

fn bad(pid: u32, file: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        libc::EIO,
        format!("/proc/{pid}/{file}: no {what}"),
    )
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after the last
/// `)`.
///
/// ```
/// let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
/// assert_eq!(tcpkit::bench::proc::parse_stat_cpu_ticks(stat), Some(300));
/// ```
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:` of `/proc/PID/status`, in KiB.
///
/// ```
/// let status = "Name:\tx\nVmRSS:\t    1234 kB\nThreads:\t1\n";
/// assert_eq!(tcpkit::bench::proc::parse_status_rss_kib(status), Some(1234));
/// ```
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}

/// This process's user + system CPU time, all threads (`getrusage(2)`,
/// microsecond resolution, unlike the 10 ms ticks of `/proc/self/stat`).
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Pins the calling thread (and the threads and processes it starts later)
/// to CPU `cpu`: `sched_setaffinity(2)`, as `taskset -c CPU`. Linux only:
/// elsewhere it is an [`ErrorKind::InvalidConfig`] error.
#[cfg(target_os = "linux")]
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            code::INVALID_CONFIG,
            format!("CPU {cpu} is out of range"),
        ));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET is bounds-checked above.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(Error::io(
            std::io::Error::last_os_error(),
            format_args!("pin to CPU {cpu}"),
        ));
    }
    Ok(())
}

/// Pins the calling thread to CPU `cpu`: not available on this system.
#[cfg(not(target_os = "linux"))]
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    Err(pinning_unsupported(cpu))
}

/// The error for CPU pinning where there is no `sched_setaffinity(2)`.
#[cfg(not(target_os = "linux"))]
pub(crate) fn pinning_unsupported(cpu: usize) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        code::INVALID_CONFIG,
        format!("pin to CPU {cpu}: CPU pinning needs Linux (sched_setaffinity)"),
    )
}

/// Raises the soft open-file limit to the hard one (`setrlimit(2)`), so the
/// bench and a server it starts can hold thousands of connections. Returns
/// the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain struct in/out.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return rlim_u64(want.rlim_cur);
            }
        }
        rlim_u64(lim.rlim_cur)
    }
}

/// `rlim_t` is `u64` on Linux and `i64` on the BSDs.
#[allow(clippy::useless_conversion)]
fn rlim_u64(v: libc::rlim_t) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let before = sample(std::process::id()).unwrap();
        assert!(before.rss_kib > 0);
        // Burn CPU until getrusage has seen 50 ms more; /proc must see it too
        // (it counts in clock ticks, 10 ms each).
        let (cpu0, wall) = (self_cpu(), std::time::Instant::now());
        while self_cpu() < cpu0 + Duration::from_millis(50) {
            assert!(
                wall.elapsed() < Duration::from_secs(30),
                "no CPU time counted"
            );
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        let after = sample(std::process::id()).unwrap();
        assert!(
            after.cpu >= before.cpu + Duration::from_millis(20),
            "/proc CPU {:?} -> {:?} after 50 ms of work",
            before.cpu,
            after.cpu
        );
    }

    #[test]
    fn missing_process_is_an_error_naming_the_file() {
        let err = sample(u32::MAX).unwrap_err();
        assert!(err.message().contains("/proc/4294967295/stat"), "{err}");
    }
}
