//! The open-file limit (`RLIMIT_NOFILE`): every socket is a descriptor, so
//! it bounds how many connections a process can hold.

use std::mem::MaybeUninit;

/// The soft open-file limit (`getrlimit(2)`), `None` if it cannot be read.
/// "Unlimited" reads as `u64::MAX`.
pub fn open_file_limit() -> Option<u64> {
    get().map(|lim| rlim_u64(lim.rlim_cur))
}

/// Raises the soft open-file limit to the hard one (`setrlimit(2)`), so a
/// server's default connection limit, or the bench's connections, go as
/// high as the process may. Returns the soft limit in force afterwards
/// (`None` if it cannot be read); a refused raise only leaves it lower.
pub fn raise_open_file_limit() -> Option<u64> {
    let lim = get()?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            tracing::debug!(
                "raised the open-file limit from {} to {}",
                rlim_u64(lim.rlim_cur),
                rlim_u64(want.rlim_cur)
            );
            return Some(rlim_u64(want.rlim_cur));
        }
    }
    Some(rlim_u64(lim.rlim_cur))
}

fn get() -> Option<libc::rlimit> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit fills the struct passed when it returns 0.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) } == 0 {
        // SAFETY: initialised by the successful call.
        Some(unsafe { lim.assume_init() })
    } else {
        None
    }
}

/// `rlim_t` is `u64` on Linux and `i64` on the BSDs (where a negative
/// value would be `RLIM_INFINITY`).
#[allow(clippy::useless_conversion)]
fn rlim_u64(v: libc::rlim_t) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_gives_at_least_the_limit_before() {
        let before = open_file_limit().expect("getrlimit");
        let after = raise_open_file_limit().expect("getrlimit");
        assert!(after >= before, "{after} < {before}");
        assert_eq!(open_file_limit(), Some(after));
    }
}
