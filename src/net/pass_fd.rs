//! Descriptors across processes (Linux): `sendmsg(2)` / `recvmsg(2)` with
//! one `SCM_RIGHTS` control message, and the peer's pid (`SO_PEERCRED`), for
//! the server's handover of its listening sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;

use super::MAX_LISTEN_FDS;

/// The pid of the process at the other end of a UNIX stream socket.
pub(crate) fn peer_pid(stream: &StdUnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a ucred and its size; the kernel writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.pid as u32)
}

/// Control-message room for `n` descriptors, as `u64`s for `cmsghdr`'s alignment.
fn cmsg_buffer(n: usize) -> Vec<u64> {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    let bytes = unsafe { libc::CMSG_SPACE((n * std::mem::size_of::<RawFd>()) as u32) } as usize;
    vec![0u64; bytes.div_ceil(8)]
}

/// `sendmsg(2)` of `data` with `fds` as one `SCM_RIGHTS` message.
pub(crate) fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut buf = cmsg_buffer(fds.len());
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // sendmsg call, and the control buffer has CMSG_SPACE for the fds.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = (buf.len() * 8) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fds.len(),
        );
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize == data.len() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short handover message",
        )),
    }
}

/// `recvmsg(2)` of one message and the descriptors it carries
/// (`MSG_CMSG_CLOEXEC`: none leaks into a child).
pub(crate) fn recv_fds(stream: &StdUnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut data = [0u8; 64];
    let mut buf = cmsg_buffer(MAX_LISTEN_FDS);
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: as in send_fds; the kernel writes within the lengths given.
    let (got, msg) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = (buf.len() * 8) as _;
        let got = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        (got, msg)
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `buf`
    // (still alive), with the libc macros and the lengths it set.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more sockets than fit in one handover",
        ));
    }
    let text = String::from_utf8_lossy(&data[..got as usize]).into_owned();
    Ok((text, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_and_text_arrive_together_close_on_exec() {
        let (a, b) = StdUnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_fds(a.as_raw_fd(), b"two\n", &[l1.as_raw_fd(), l2.as_raw_fd()]).unwrap();
        let (text, fds) = recv_fds(&b).unwrap();
        assert_eq!(text, "two\n");
        assert_eq!(fds.len(), 2);
        let got = std::net::TcpListener::from(fds.into_iter().nth(1).unwrap());
        assert_eq!(got.local_addr().unwrap(), l2.local_addr().unwrap());
        // SAFETY: F_GETFD reads the flags of a descriptor we own.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(peer_pid(&a).unwrap(), std::process::id());
    }
}
