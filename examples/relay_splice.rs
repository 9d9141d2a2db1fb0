//! One-way bulk through the relay, copy path vs `splice(2)` (Linux): MB/s
//! and the relay thread's CPU seconds per GB.
//!
//! The relay runs alone on a current-thread runtime in a thread pinned to
//! CPU 0; the client (64 KiB writes) and the sink (256 KiB reads to EOF)
//! are plain threads pinned to CPU 1. The relay's CPU is its thread's own
//! (`/proc/self/task/TID/schedstat`), so client and sink do not count.
//! Rounds alternate copy and splice; medians are printed.
//!
//! `cargo run --release --example relay_splice [MIB [ROUNDS]]` (default 128
//! MiB, 3 rounds: a few seconds; the figures in `relay::splice`'s
//! documentation are `relay_splice 256 5`).

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("relay_splice: splice(2) is Linux-only; nothing to compare here");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use tcpkit::Endpoint;
    use tcpkit::endpoint::HostPort;
    use tcpkit::relay::{Fixed, Relay, splice};
    use tcpkit::server::ServerBuilder;

    /// Pins the calling thread to `cpu` (best effort: a machine with one
    /// CPU just shares it).
    fn pin(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
        // sched_setaffinity only read and write the set passed.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// Nanoseconds thread `tid` of this process has run.
    fn thread_cpu_ns(tid: i32) -> u64 {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    struct RelayThread {
        addr: SocketAddr,
        tid: i32,
        stop: tcpkit::server::ShutdownHandle,
        thread: std::thread::JoinHandle<()>,
    }

    fn start_relay(upstream: SocketAddr, splice: bool) -> RelayThread {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            pin(0);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let target = HostPort::parse(&upstream.to_string()).expect("target");
                let relay =
                    Relay::new(Fixed::new(target, Duration::from_secs(5))).with_splice(splice);
                let server = ServerBuilder::new()
                    .listen(Endpoint::loopback_v4(0))
                    .bind()
                    .expect("bind relay");
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let _ = tx.send((server.local_endpoint().socket_addr(), tid, server.handle()));
                server.run(relay).await.expect("relay");
            });
        });
        let (addr, tid, stop) = rx.recv().expect("relay started");
        RelayThread {
            addr,
            tid,
            stop,
            thread,
        }
    }

    /// Sends `bytes` through the relay to a sink; returns (seconds, relay
    /// CPU seconds).
    fn round(splice: bool, bytes: usize) -> (f64, f64) {
        let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let sink_addr = sink.local_addr().expect("sink addr");
        let sink = std::thread::spawn(move || {
            pin(1);
            let (mut s, _) = sink.accept().expect("accept");
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0usize;
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let relay = start_relay(sink_addr, splice);
        let (tx, rx) = mpsc::channel();
        let client = std::thread::spawn(move || {
            pin(1);
            let _ = rx.recv();
            let mut s = TcpStream::connect(relay.addr).expect("connect relay");
            let chunk = vec![0x5au8; 64 * 1024];
            let mut sent = 0;
            while sent < bytes {
                let n = chunk.len().min(bytes - sent);
                s.write_all(&chunk[..n]).expect("send");
                sent += n;
            }
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        let cpu0 = thread_cpu_ns(relay.tid);
        let started = Instant::now();
        let _ = tx.send(());
        let got = sink.join().expect("sink");
        let secs = started.elapsed().as_secs_f64();
        let cpu = (thread_cpu_ns(relay.tid) - cpu0) as f64 / 1e9;
        client.join().expect("client");
        assert_eq!(got, bytes, "bytes through the relay");
        relay.stop.shutdown();
        relay.thread.join().expect("relay thread");
        (secs, cpu)
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn main() {
        let mut args = std::env::args().skip(1);
        let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(128);
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
        let bytes = mib << 20;
        let gb = bytes as f64 / 1e9;
        println!("one-way bulk, 1 connection, {mib} MiB per round, {rounds} rounds");
        let mut results = Vec::new();
        for (name, splice) in [("copy", false), ("splice", true)] {
            results.push((name, splice, Vec::new(), Vec::new()));
        }
        let spliced_before = splice::stats().bytes_spliced;
        for _ in 0..rounds {
            for (_, splice, rates, cpus) in results.iter_mut() {
                let (secs, cpu) = round(*splice, bytes);
                rates.push(bytes as f64 / 1e6 / secs);
                cpus.push(cpu / gb);
            }
        }
        for (name, _, rates, cpus) in results {
            let (lo, hi) = (
                rates.iter().copied().fold(f64::MAX, f64::min),
                rates.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "{name:>6}: {:7.0} MB/s (range {lo:.0}-{hi:.0}), relay CPU {:.3} s/GB (runs: {})",
                median(rates.clone()),
                median(cpus.clone()),
                cpus.iter()
                    .map(|c| format!("{c:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let spliced = splice::stats().bytes_spliced - spliced_before;
        println!(
            "spliced {spliced} of {} bytes moved with splice on",
            bytes * rounds
        );
    }
}
