//! `tcpkit demo`: the seed tutorial's walkthrough, end to end, in one process.
//!
//! Both sides run on one thread: the kernel completes the TCP handshake into
//! the listen backlog before `accept` is called, and the demo's messages fit
//! in the socket buffers, so no step waits on the other side.

use std::fmt::Display;
use std::net::Shutdown;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use tcpkit::net::Protocol;
use tcpkit::{Acceptor, DEFAULT_BACKLOG, Endpoint, Socket};

use super::Globals;
use super::exit::{Exit, codes_help};
use super::out::outln;

/// Arguments of `tcpkit demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[
    Exit::Ok, Exit::Failure, Exit::Usage, Exit::Io, Exit::Bind, Exit::Verification,
]))]
pub struct Args {
    /// Port for the server's acceptor; 0 lets the kernel pick a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// A message the client sends and the server echoes back (repeatable).
    #[arg(long = "message", short = 'm', value_name = "TEXT")]
    messages: Vec<String>,
    /// Listen backlog (the seed's is 30).
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    backlog: u32,
}

struct Steps {
    n: usize,
    quiet: bool,
}

impl Steps {
    /// Runs one step, printing its number, name, result and duration.
    fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> tcpkit::Result<T>,
        describe: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<T> {
        self.n += 1;
        let start = Instant::now();
        let value = f().with_context(|| format!("demo step {} ({name}) failed", self.n))?;
        if !self.quiet {
            outln!(
                "{:>2}. {name:<22} {:<52} {}",
                self.n,
                describe(&value),
                micros(start.elapsed())
            )?;
        }
        Ok(value)
    }
}

fn micros(d: Duration) -> impl Display {
    format!("{:>9.1} µs", d.as_secs_f64() * 1e6)
}

pub fn run(args: Args, globals: Globals) -> anyhow::Result<ExitCode> {
    let messages = if args.messages.is_empty() {
        vec![
            "hello from the client".to_owned(),
            "the acceptor keeps listening".to_owned(),
            "bye".to_owned(),
        ]
    } else {
        args.messages
    };
    let mut steps = Steps {
        n: 0,
        quiet: globals.quiet,
    };

    // Server side: blocks 2, 4, 5 and 7 of the seed.
    let wanted = Endpoint::any_v6(args.port);
    let server_ep = steps.run(
        "server endpoint",
        || Ok(wanted),
        |ep| format!("{ep} (wildcard: every interface)"),
    )?;
    let (acceptor, server_ep) = steps.run(
        "open acceptor",
        || match Acceptor::open(Protocol::V6) {
            Ok(a) => Ok((a, server_ep)),
            // Hosts with IPv6 disabled: the seed's IPv4 wildcard instead.
            Err(_) => Ok((Acceptor::open(Protocol::V4)?, Endpoint::any_v4(args.port))),
        },
        |(a, _)| format!("{} passive socket", a.protocol()),
    )?;
    let bound = steps.run(
        "bind",
        || {
            acceptor.set_reuse_address(true)?;
            if server_ep.is_ipv6() {
                // Dual-stack: the IPv4 client below reaches this IPv6 acceptor.
                acceptor.set_v6_only(false)?;
            }
            acceptor.bind(&server_ep)?;
            acceptor.local_endpoint()
        },
        |ep| {
            format!(
                "{ep} (SO_REUSEADDR{})",
                if ep.is_ipv6() { ", dual-stack" } else { "" }
            )
        },
    )?;
    steps.run(
        "listen",
        || acceptor.listen(args.backlog),
        |()| {
            let granted = Acceptor::effective_backlog(args.backlog);
            if granted == args.backlog {
                format!("backlog {}", args.backlog)
            } else {
                format!("backlog {} (kernel caps it at {granted})", args.backlog)
            }
        },
    )?;

    // Client side: blocks 1, 3 and 6.
    let client_ep = steps.run(
        "client endpoint",
        || Endpoint::new("127.0.0.1", bound.port()),
        |ep| format!("{ep} (parsed from text)"),
    )?;
    let mut client = steps.run(
        "open client socket",
        || Socket::open(Protocol::of(&client_ep)),
        |s| format!("{} active socket", s.protocol()),
    )?;
    steps.run(
        "connect",
        || {
            client.connect_timeout(&client_ep, Duration::from_secs(5))?;
            client.set_nodelay(true)?;
            client.local_endpoint()
        },
        |local| format!("{local} -> {client_ep}"),
    )?;
    let (mut conn, _peer) = steps.run(
        "accept",
        || acceptor.accept(),
        |(_, peer)| format!("new socket for peer {peer}"),
    )?;
    conn.set_nodelay(true)?;

    // Read and write in both directions.
    let mut buf = vec![0u8; messages.iter().map(String::len).max().unwrap_or(0)];
    for text in &messages {
        let len = text.len();
        steps
            .run(
                "client write, echo",
                || {
                    client.write_all(text.as_bytes())?;
                    conn.read_exact(&mut buf[..len])?;
                    conn.write_all(&buf[..len])?;
                    client.read_exact(&mut buf[..len])?;
                    Ok(buf[..len] == *text.as_bytes())
                },
                |_| format!("{text:?} round trip ({len} B)"),
            )
            .and_then(|same| {
                if same {
                    return Ok(());
                }
                Err(tcpkit::Error::new(
                    tcpkit::ErrorKind::Verification,
                    tcpkit::error::code::VERIFICATION,
                    format!("echo of {text:?} came back different"),
                )
                .into())
            })?;
    }

    steps.run(
        "close",
        || {
            client.shutdown(Shutdown::Write)?;
            let eof = conn.read_some(&mut buf)?;
            drop(conn);
            let client_eof = client.read_some(&mut buf)?;
            Ok((eof, client_eof))
        },
        |(a, b)| format!("server read EOF ({a} B), client read EOF ({b} B)"),
    )?;
    Ok(ExitCode::SUCCESS)
}
