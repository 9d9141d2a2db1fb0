//! Canaries: well-behaved clients that run beside a hostile one and check
//! every answer the server gives them, in time.

use std::io::{BufRead, BufReader, ErrorKind as IoKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{IO_DEADLINE, connect};

/// What a canary saw.
#[derive(Debug)]
pub struct CanaryReport {
    /// Verified exchanges (echo round trips, or chat lines received in order).
    pub exchanges: u64,
    /// The slowest exchange.
    pub max_latency: Duration,
}

/// A well-behaved client running beside a hostile one, checking every
/// answer. `stop` panics if anything it saw was wrong or late.
pub struct Canary {
    stop: Arc<AtomicBool>,
    exchanges: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Result<Duration, String>>>,
    /// Threads that only end when their socket closes (after `threads`).
    drainers: Vec<JoinHandle<Result<Duration, String>>>,
    sockets: Vec<TcpStream>,
    /// What a canary thread that ended early reported.
    failures: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Spawns a canary thread whose error is also recorded in `failures` at
/// once, so a waiting test can say what went wrong.
fn spawn_checked(
    failures: &Arc<std::sync::Mutex<Vec<String>>>,
    body: impl FnOnce() -> Result<Duration, String> + Send + 'static,
) -> JoinHandle<Result<Duration, String>> {
    let failures = failures.clone();
    std::thread::spawn(move || {
        let result = body();
        if let Err(e) = &result {
            failures.lock().unwrap().push(e.clone());
        }
        result
    })
}

/// Longest a canary's exchange may take while the server is under attack.
pub const CANARY_MAX_LATENCY: Duration = Duration::from_secs(3);

impl Canary {
    /// An echo client doing a verified round trip every 10 ms, with message
    /// sizes from 1 byte to 8 KiB.
    pub fn echo(addr: SocketAddr) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, count) = (stop.clone(), exchanges.clone());
        let thread = spawn_checked(&failures, move || -> Result<Duration, String> {
            let mut s = connect(addr);
            let mut max = Duration::ZERO;
            let mut back = vec![0u8; 8192];
            let mut n: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let len = 1 + (n * 7919 % 8192) as usize;
                let msg: Vec<u8> = (0..len).map(|i| (i as u64 ^ n) as u8).collect();
                let t = Instant::now();
                s.write_all(&msg)
                    .map_err(|e| format!("round trip {n}: write: {e}"))?;
                s.read_exact(&mut back[..len])
                    .map_err(|e| format!("round trip {n}: read: {e}"))?;
                if back[..len] != msg[..] {
                    return Err(format!("round trip {n}: echo differs"));
                }
                max = max.max(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = s.shutdown(Shutdown::Write);
            Ok(max)
        });
        Canary {
            stop,
            exchanges,
            threads: vec![thread],
            drainers: Vec::new(),
            sockets: Vec::new(),
            failures,
        }
    }

    /// Two chat clients in the lobby: `sender` (renamed `canarysend`) says a
    /// numbered line every 10 ms; `receiver` must get every one, in order,
    /// from `canarysend`, whatever else the room says. Both also send an
    /// empty line (a no-op) regularly, so an idle timeout never closes them,
    /// and both keep reading, so they are never slow consumers.
    pub fn chat(addr: SocketAddr) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(AtomicU64::new(0));
        let receiver = connect(addr);
        let mut sender = connect(addr);
        sender.write_all(b"/nick canarysend\n").unwrap();
        let mut sender_lines = BufReader::new(sender.try_clone().unwrap());
        let mut line = Vec::new();
        loop {
            line.clear();
            sender_lines
                .read_until(b'\n', &mut line)
                .expect("canary nick");
            assert!(!line.is_empty(), "server closed the canary");
            if line.windows(19).any(|w| w == b"you are now canarys") {
                break;
            }
        }
        // From here every line the receiver gets from canarysend counts;
        // a hello proves the receiver is in the room before timing starts.
        sender.write_all(b"canary-hello\n").unwrap();
        let mut receiver_lines = BufReader::new(receiver.try_clone().unwrap());
        loop {
            line.clear();
            receiver_lines
                .read_until(b'\n', &mut line)
                .expect("canary hello");
            assert!(!line.is_empty(), "server closed the canary receiver");
            if line.starts_with(b"canarysend: canary-hello") {
                break;
            }
        }

        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sent_at = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut threads = Vec::new();
        // Sender: numbered lines.
        let (flag, times) = (stop.clone(), sent_at.clone());
        let mut w = sender.try_clone().unwrap();
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                let mut n = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    times.lock().unwrap().push_back(Instant::now());
                    w.write_all(format!("canary-{n}\n").as_bytes())
                        .map_err(|e| format!("canary sender: write {n}: {e}"))?;
                    n += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Duration::ZERO)
            },
        ));
        // Sender's own inbox: drained to the server's EOF, never checked.
        let drainer = spawn_checked(&failures, move || -> Result<Duration, String> {
            let mut buf = [0u8; 16 * 1024];
            let inbox = sender_lines.get_mut();
            inbox.set_read_timeout(Some(IO_DEADLINE)).unwrap();
            while inbox
                .read(&mut buf)
                .map_err(|e| format!("canary sender inbox: {e}"))?
                > 0
            {}
            Ok(Duration::ZERO)
        });
        // Receiver keepalive: empty lines.
        let flag = stop.clone();
        let mut w = receiver.try_clone().unwrap();
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                while !flag.load(Ordering::Relaxed) {
                    w.write_all(b"\n")
                        .map_err(|e| format!("canary receiver: keepalive: {e}"))?;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Ok(Duration::ZERO)
            },
        ));
        // Receiver: every canary line, in order, on time.
        let (flag, count) = (stop.clone(), exchanges.clone());
        threads.push(spawn_checked(
            &failures,
            move || -> Result<Duration, String> {
                let mut expected = 0u64;
                let mut max = Duration::ZERO;
                let mut line = Vec::new();
                receiver_lines
                    .get_mut()
                    .set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                loop {
                    line.clear();
                    match receiver_lines.read_until(b'\n', &mut line) {
                        Ok(0) => return Err(format!("receiver closed after {expected} lines")),
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => {
                            // Quiet is fine once the sender has stopped.
                            if flag.load(Ordering::Relaxed) && sent_at.lock().unwrap().is_empty() {
                                return Ok(max);
                            }
                            let waited = sent_at.lock().unwrap().front().map(|t| t.elapsed());
                            if waited.is_some_and(|w| w > CANARY_MAX_LATENCY * 2) {
                                return Err(format!(
                                    "line {expected} not received after {waited:?}"
                                ));
                            }
                            continue;
                        }
                        Err(e) => return Err(format!("receiver: {e}")),
                    }
                    let Some(rest) = line.strip_prefix(b"canarysend: canary-") else {
                        continue;
                    };
                    let text = String::from_utf8_lossy(rest);
                    let n: u64 = text
                        .trim_end()
                        .parse()
                        .map_err(|_| format!("bad line {text:?}"))?;
                    if n != expected {
                        return Err(format!("expected canary-{expected}, got canary-{n}"));
                    }
                    let sent = sent_at
                        .lock()
                        .unwrap()
                        .pop_front()
                        .expect("sent before received");
                    max = max.max(sent.elapsed());
                    expected += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                }
            },
        ));
        Canary {
            stop,
            exchanges,
            threads,
            drainers: vec![drainer],
            sockets: vec![receiver, sender],
            failures,
        }
    }

    /// Verified exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.exchanges.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more exchanges succeed (proves the server is
    /// still serving it *now*); panics after 10 s.
    pub fn wait_for_more(&self, n: u64, what: &str) {
        let target = self.exchanges() + n;
        let start = Instant::now();
        while self.exchanges() < target {
            assert!(
                start.elapsed() < IO_DEADLINE,
                "{what}: canary stalled at {} exchanges",
                self.exchanges()
            );
            let failures = self.failures.lock().unwrap().clone();
            assert!(failures.is_empty(), "{what}: canary failed: {failures:?}");
            assert!(
                !self.threads.iter().any(|t| t.is_finished()),
                "{what}: a canary thread ended early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the canary; panics if any exchange was wrong or too slow.
    pub fn stop(self, what: &str) -> CanaryReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut max = Duration::ZERO;
        let mut failures = Vec::new();
        for t in self.threads {
            match t.join().expect("canary thread") {
                Ok(m) => max = max.max(m),
                Err(e) => failures.push(e),
            }
        }
        // Write side only: a socket shut for reading answers any data
        // still in flight (say, "* user1 left lobby" for the receiver's own
        // exit) with a reset (Linux, RFC 1122), which the drainer would
        // report as ECONNRESET. The server sees EOF, closes, and the
        // drainer ends on the server's FIN instead.
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Write);
        }
        for t in self.drainers {
            if let Err(e) = t.join().expect("canary drainer") {
                failures.push(e);
            }
        }
        assert!(failures.is_empty(), "{what}: canary failed: {failures:?}");
        let exchanges = self.exchanges.load(Ordering::Relaxed);
        assert!(exchanges > 0, "{what}: canary made no exchange");
        assert!(
            max <= CANARY_MAX_LATENCY,
            "{what}: canary exchange took {max:?} (limit {CANARY_MAX_LATENCY:?})"
        );
        CanaryReport {
            exchanges,
            max_latency: max,
        }
    }
}
