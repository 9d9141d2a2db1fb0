//! What the bench reads about processes: CPU time and resident memory of a
//! server's process tree from `/proc/PID/stat` and `/proc/PID/status`, its
//! own CPU time from `getrusage(2)`, and the `sched_setaffinity(2)` call that
//! pins it. (The open-file limit that lets it hold thousands of connections
//! is [`crate::net::raise_open_file_limit`].)

use std::collections::HashMap;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result, code};

/// The most processes counted in one tree: a bound on the work of one
/// sample, far above any server's worker count.
const MAX_TREE_PROCESSES: usize = 100_000;

/// One look at a process and its descendants: CPU time so far and resident
/// set size.
///
/// A forking server (`socat TCP-LISTEN:…,fork`, `ncat --exec`, inetd-style)
/// does its work in child processes, so the PID alone would show no CPU:
/// the sample counts every live descendant, and the CPU of children that
/// have exited and been reaped (`wait(2)`) by a process in the tree, which
/// the kernel adds to the reaper's `cutime`/`cstime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time since the processes started, of the PID, its
    /// live descendants and the children they reaped.
    pub cpu: Duration,
    /// Resident set size (`VmRSS`) summed over the PID and its live
    /// descendants, in KiB (pages shared between them count once per
    /// process).
    pub rss_kib: u64,
    /// Processes counted: the PID and its live descendants.
    pub processes: u32,
}

/// Reads `/proc/PID/stat` (utime + stime + cutime + cstime) and
/// `/proc/PID/status` (VmRSS) of `pid` and of every live descendant, found
/// by their parent PIDs in `/proc/*/stat`. The calling process and its own
/// descendants are left out, so a bench started by the server it measures
/// does not count itself. Errors only when `pid` itself cannot be read.
///
/// A child reaped while `/proc` is being read would be missed (gone from
/// the listing, not yet read in its reaper's `cutime`), and servers reap in
/// bursts just when the bench closes its connections: so the pass is
/// repeated, up to [`SAMPLE_PASSES`] times, until no process of the tree
/// reaped a child while it ran.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let me = std::process::id();
    let mut pass = 1;
    let (stats, tree) = loop {
        // The PID itself must be readable: its error names the file.
        read_stat(pid)?;
        let stats = read_all_stats();
        let tree = tree_of(pid, me, &stats);
        let settled = tree.iter().all(|p| match (read_stat(*p), stats.get(p)) {
            (Ok(now), Some(then)) => now.reaped_children == then.reaped_children,
            // Exited since: counted from the pass, or in its reaper's
            // `cutime` if that changed.
            _ => true,
        });
        if settled || pass >= SAMPLE_PASSES {
            break (stats, tree);
        }
        pass += 1;
    };
    if tree.is_empty() {
        return Err(bad(pid, "stat", "utime/stime (has the process exited?)"));
    }
    let ticks = tree
        .iter()
        .filter_map(|p| stats.get(p))
        .map(StatTicks::ticks)
        .sum();
    let root_rss =
        read_rss_kib(pid)?.ok_or_else(|| bad(pid, "status", "VmRSS (has the process exited?)"))?;
    let children_rss: u64 = tree[1..]
        .iter()
        .filter_map(|p| read_rss_kib(*p).ok().flatten())
        .sum();
    Ok(ProcSample {
        cpu: ticks_to_duration(ticks),
        rss_kib: root_rss + children_rss,
        processes: u32::try_from(tree.len()).unwrap_or(u32::MAX),
    })
}

/// Passes over `/proc` that [`sample`] makes at most to get one in which no
/// process of the tree reaped a child.
pub const SAMPLE_PASSES: u32 = 10;

/// `root` and its descendants in `stats` (root first), leaving out `skip`
/// and its descendants; empty when `root` is not in `stats`.
fn tree_of(root: u32, skip: u32, stats: &HashMap<u32, StatTicks>) -> Vec<u32> {
    if !stats.contains_key(&root) {
        return Vec::new();
    }
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&p, s) in stats {
        children.entry(s.ppid).or_default().push(p);
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() && tree.len() < MAX_TREE_PROCESSES {
        let parent = tree[next];
        next += 1;
        let kids = children.get(&parent).into_iter().flatten();
        tree.extend(kids.filter(|&&k| k != skip && k != root));
    }
    tree.truncate(MAX_TREE_PROCESSES);
    tree
}

/// The CPU fields of one `/proc/PID/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatTicks {
    /// Parent PID (field 4).
    pub ppid: u32,
    /// User + system time of the process, all threads (fields 14, 15).
    pub own: u64,
    /// User + system time of its children that it has waited for
    /// (`cutime` + `cstime`, fields 16, 17).
    pub reaped_children: u64,
}

impl StatTicks {
    fn ticks(&self) -> u64 {
        self.own.saturating_add(self.reaped_children)
    }
}

/// One `/proc/PID/stat`; the error names the file.
fn read_stat(pid: u32) -> Result<StatTicks> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(e, format_args!("read {path}")))?;
    parse_stat(&text).ok_or_else(|| bad(pid, "stat", "ppid/utime/stime/cutime/cstime"))
}

/// `VmRSS` of `pid`, `None` for a process without one (a zombie or a
/// kernel thread) or that is gone.
fn read_rss_kib(pid: u32) -> Result<Option<u64>> {
    let path = format!("/proc/{pid}/status");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_status_rss_kib(&text)),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io(e, format_args!("read {path}"))),
    }
}

/// The stat of every process in `/proc`, in one pass (a process that exits
/// meanwhile is left out). `/proc/PID/task/TID/children` would list a
/// tree more cheaply, but needs a kernel built with `CONFIG_PROC_CHILDREN`,
/// which not every one is. Empty when `/proc` cannot be listed.
fn read_all_stats() -> HashMap<u32, StatTicks> {
    let mut stats = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return stats;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = read_stat(pid) {
            stats.insert(pid, stat);
        }
    }
    stats
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
    parse_stat(stat).map(|t| t.own)
}

/// Parent PID, utime + stime and cutime + cstime of a `/proc/PID/stat`
/// line, fields counted after the last `)` as in [`parse_stat_cpu_ticks`].
///
/// ```
/// use tcpkit::bench::proc::{StatTicks, parse_stat};
/// let stat = "42 (socat) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 30 12 20 0 1 0";
/// let t = StatTicks { ppid: 7, own: 300, reaped_children: 42 };
/// assert_eq!(parse_stat(stat), Some(t));
/// assert_eq!(parse_stat("42 (truncated) S 7"), None);
/// ```
pub fn parse_stat(stat: &str) -> Option<StatTicks> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so ppid (4) is index 1
    // and utime (14) index 11.
    let fields: Vec<&str> = after.split_whitespace().take(15).collect();
    let num = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    Some(StatTicks {
        ppid: fields.get(1)?.parse().ok()?,
        own: num(11)?.saturating_add(num(12)?),
        reaped_children: num(13)?.saturating_add(num(14)?),
    })
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

/// The length of one clock tick, the resolution of `/proc` CPU times
/// (10 ms at the usual `CLK_TCK` of 100).
pub fn clock_tick() -> Duration {
    ticks_to_duration(1)
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

    /// A forking server's shape: a parent that does no work itself, a child
    /// that worked and was reaped, and a live child. The sample counts the
    /// reaped child's CPU (the parent's `cutime`) and the live child.
    #[test]
    fn counts_the_process_tree_and_reaped_children() {
        use std::os::unix::process::CommandExt;
        let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("sh -c '{burn}'; sleep 60 & wait")])
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        // The sleep starts once the worker has exited and been reaped.
        let sleeping = || {
            let stats = read_all_stats();
            tree_of(pid, 0, &stats).iter().any(|k| {
                std::fs::read_to_string(format!("/proc/{k}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
        };
        while !sleeping() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = sample(pid).unwrap();
        // SAFETY: kill(2) on the process group this test created.
        unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        let _ = child.wait();
        assert_eq!(s.processes, 2, "{s:?}");
        assert!(s.cpu >= Duration::from_millis(100), "{s:?}");
        assert!(s.rss_kib > 0, "{s:?}");
        let alone = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap());
        assert!(alone.is_some());
    }

    #[test]
    fn missing_process_is_an_error_naming_the_file() {
        let err = sample(u32::MAX).unwrap_err();
        assert!(err.message().contains("/proc/4294967295/stat"), "{err}");
    }
}
