//! `tcpkit bench --mode chat`: the chat flags → [`ChatConfig`], an optional
//! embedded `serve --mode chat`, the report on stdout; exit 8 on a
//! verification failure (lost, duplicated, reordered, misrouted lines),
//! exit 6 if a client broke or was dropped as slow (unless --allow-broken).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tcpkit::bench::chat::{self, ChatConfig, ChatReport};
use tcpkit::bench::proc;
use tcpkit::bench::server::ServerProcess;
use tcpkit::error::code;
use tcpkit::{Error, ErrorKind};

use super::Globals;
use super::bench::{ChatArgs, SERVER_STARTUP, resolve, serve_command};
use super::{out, values};

pub(super) fn run(args: ChatArgs, _globals: Globals) -> anyhow::Result<ExitCode> {
    if let Some(flag) = args.unsupported.first() {
        return Err(values::invalid(flag, "does not apply to --mode chat"));
    }
    for (flag, cpu) in [
        ("--server-cpu", args.server_cpu),
        ("--client-cpu", args.client_cpu),
    ] {
        if let Some(cpu) = cpu {
            values::check_cpu(flag, cpu)?;
        }
    }
    if let Some(path) = &args.histogram {
        values::check_output_file("--histogram", path)?;
    }
    let threads = args.threads.unwrap_or_else(|| match args.client_cpu {
        Some(_) => 1,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    let mut targets = Vec::with_capacity(args.targets.len());
    for text in &args.targets {
        targets.push(resolve(text)?);
    }
    let mut config = ChatConfig {
        connections: args.connections,
        rooms: args.rooms,
        size_bytes: args.size,
        pipeline: args.pipeline,
        rate_per_s: args.rate,
        lines_per_sender: args.lines.map(|n| n as u64),
        duration: args.duration,
        warmup: args.warmup,
        threads,
        connect_timeout: args.connect_timeout,
        server_pid: args.server_pid,
        protocol: args.protocol,
        slow_readers: args.slow_readers,
        ..ChatConfig::new(targets)
    };
    if config.targets.is_empty() && args.protocol != chat::ChatProtocol::Tcpkit {
        return Err(values::invalid(
            "--chat-protocol",
            format_args!(
                "{} needs --target (the embedded server is tcpkit's)",
                args.protocol.name()
            ),
        ));
    }
    if config.targets.is_empty() {
        // Filled in once the embedded server listens; validated first.
        config.targets.push(tcpkit::Endpoint::loopback_v4(1));
        config.validate()?;
        config.targets.clear();
    } else {
        config.validate()?;
    }
    tcpkit::net::raise_open_file_limit();
    let mut server = None;
    if config.targets.is_empty() {
        let workers = args.server_workers.or(args.server_cpu.map(|_| 1));
        let cmd = serve_command("chat", workers, args.server_engine)?;
        let s = ServerProcess::spawn(cmd, args.server_cpu, SERVER_STARTUP)?;
        tracing::info!("started server pid {}: {}", s.pid(), s.banner());
        config.targets.push(s.endpoint());
        config.server_pid = Some(s.pid());
        server = Some(s);
    }
    if let Some(cpu) = args.client_cpu {
        proc::pin_to_cpu(cpu)?;
    }
    let result = chat::run(&config);
    if let Some(mut s) = server
        && let Err(e) = s.stop(Duration::from_secs(5))
    {
        tracing::warn!("stopping the server: {e}");
    }
    let report = result?;
    if let Some(path) = &args.histogram {
        let io = |e| Error::io(e, format_args!("--histogram: write {}", path.display()));
        let mut file = std::fs::File::create(path).map_err(io)?;
        report
            .histogram
            .write_percentile_distribution(&mut file)
            .map_err(io)?;
    }
    let text = if args.json {
        let mut line = serde_json::to_string(&report).context("the report as JSON")?;
        line.push('\n');
        line
    } else {
        report.render_table()
    };
    out::bytes(text.as_bytes())?;
    verdict(&report, args.allow_broken)
}

/// Exit 8 on any verification failure (the kinds named); the first
/// connect error if no client joined; exit 6 if a client broke, was dropped
/// as slow or a sender stalled (unless `allow_broken`).
fn verdict(report: &ChatReport, allow_broken: bool) -> anyhow::Result<ExitCode> {
    if report.verification_failures > 0 {
        let kinds: Vec<String> = [
            ("lost", report.lost),
            ("duplicated", report.duplicated),
            ("reordered", report.reordered),
            ("misrouted", report.misrouted),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
        let first = report.failures.first().map_or_else(String::new, |f| {
            format!(
                "; first: {} at c{}: {}",
                f.kind.name(),
                f.receiver,
                f.detail
            )
        });
        let err = Error::new(
            ErrorKind::Verification,
            code::VERIFICATION,
            format!("chat verification failed: {}{first}", kinds.join(", ")),
        );
        return Err(anyhow::Error::new(err));
    }
    if report.connections_established == 0 {
        let first = report.error_samples.first().map_or("", String::as_str);
        return Err(anyhow::Error::new(Error::new(
            ErrorKind::ConnectionRefused,
            libc::ECONNREFUSED,
            format!("no chat client could connect and join: {first}"),
        )));
    }
    let trouble = report.broken_connections
        + report.slow_consumer_drops
        + report.stalled_senders
        + report.connect_failures;
    if trouble > 0 && !allow_broken {
        let first = report.error_samples.first().map_or("", String::as_str);
        let message = format!(
            "{} client(s) failed to join, {} broke, {} dropped as slow, {} sender(s) stalled ({first}; --allow-broken exits 0)",
            report.connect_failures,
            report.broken_connections,
            report.slow_consumer_drops,
            report.stalled_senders
        );
        return Err(anyhow::Error::new(Error::new(
            ErrorKind::Io,
            libc::EIO,
            message,
        )));
    }
    Ok(ExitCode::SUCCESS)
}
