//! Every subcommand, with hostile values for every flag and argument that
//! takes one: no panic (exit 101), no death by signal; an invalid value exits
//! 2 with a message that names the flag (or the input) before anything runs.
//!
//! The flag list comes from each subcommand's `--help`: a flag that appears
//! there with no entry in [`CASES`] fails the test, and so does an entry for a
//! flag that no longer exists. Only loopback is dialled (port 1, refused), no
//! name but `localhost` is looked up, and nothing listens: invalid values stop
//! every run before a socket opens.
// Linux only: the CPU cases read the affinity mask with `sched_getaffinity(2)`.
#![cfg(all(feature = "cli", target_os = "linux"))]

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

const DURATIONS: &[&str] = &[
    "300000000000y",
    "366d",
    "18446744073709551616s",
    "-1s",
    "soon",
    "",
];
/// A zero deadline would refuse every header.
const DURATIONS_ABOVE_ZERO: &[&str] = &[
    "300000000000y",
    "366d",
    "18446744073709551616s",
    "-1s",
    "soon",
    "",
    "0",
    "0s",
];
const PATHS: &[&str] = &["/nonexistent/dir/file", "/", ""];
const TLS_FILES: &[&str] = &["/nonexistent/dir/file", "/", "", file!()];
const CPUS: &[&str] = &[
    "1024",
    "4294967296",
    "18446744073709551616",
    "-1",
    "x",
    "#UNAVAILABLE_CPU",
];
const ENUM: &[&str] = &["bogus", ""];
const PINS: &[&str] = &[
    "",
    "AB:CD",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    "#LONG_TEXT",
];
const SNIS: &[&str] = &["", "not a name", "127.0.0.1", "#LONG_TEXT"];
const CIDRS: &[&str] = &[
    "",
    "localhost",
    "10.0.0.1/8",
    "10.0.0.0/33",
    "::1/129",
    "10.0.0.0/-1",
    "10.0.0.0/",
    "/8",
    "999.0.0.0/8",
    "#LONG_TEXT",
];
/// A `unix:` path one byte longer than `sun_path` holds.
const UNIX_TOO_LONG: &str = "unix:/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const ALPNS: &[&str] = &["", ",", "h2,,x", "#LONG_TEXT"];
const TLS_VERSIONS: &[&str] = &["1.1", "1.4", "", "x"];
const ADDRS: &[&str] = &[
    ":3333",
    "999.1.1.1:1",
    "[::1",
    "::1:80",
    "70000",
    "bad host:1",
    "",
];

/// `listen [ADDR]`: [`ADDRS`] and the `unix:` forms.
const LISTEN_ADDRS: &[&str] = &[
    ":3333",
    "999.1.1.1:1",
    "[::1",
    "::1:80",
    "70000",
    "bad host:1",
    "",
    "unix:",
    UNIX_TOO_LONG,
];

/// `serve --listen`: addresses, and the inherited forms (`systemd` with no
/// LISTEN_PID in the environment; descriptors that are not numbers >= 3).
const SERVE_LISTEN: &[&str] = &[
    ":3333",
    "999.1.1.1:1",
    "[::1",
    "70000",
    "",
    "systemd",
    "fd:",
    "fd:x",
    "fd:2",
    "fd:-1",
    "fd:99999999999",
];

/// One flag (or positional argument, as `--help` shows it: `<HOST:PORT>`,
/// `[ADDR]`) of one subcommand, its invalid values (each must exit 2), and
/// extreme values that are valid (each must end without a panic, with any
/// status but 2 and 101).
struct Case {
    command: &'static str,
    flag: &'static str,
    invalid: &'static [&'static str],
    valid: &'static [&'static str],
}

const fn case(
    command: &'static str,
    flag: &'static str,
    invalid: &'static [&'static str],
    valid: &'static [&'static str],
) -> Case {
    Case {
        command,
        flag,
        invalid,
        valid,
    }
}

const CASES: &[Case] = &[
    case(
        "demo",
        "--port",
        &["65536", "-1", "18446744073709551616", "x", ""],
        &[],
    ),
    case(
        "demo",
        "--backlog",
        &["4294967296", "-1", "x"],
        &["4294967295", "0"],
    ),
    // Free text: any value is valid; the longest one argument can be.
    case("demo", "--message", &[], &["", "#LONG_TEXT"]),
    case(
        "serve",
        "--listen",
        SERVE_LISTEN,
        &["fd:1000000", "fd:2147483647"],
    ),
    case("serve", "--pidfile", PATHS, &[]),
    case("serve", "--upgrade-from", PATHS, &[]),
    case("serve", "--mode", ENUM, &[]),
    case("serve", "--backlog", &["0", "4294967296", "-1"], &[]),
    case(
        "serve",
        "--max-connections",
        &["0", "16777217", "-1", "18446744073709551616"],
        &[],
    ),
    case("serve", "--idle-timeout", DURATIONS, &[]),
    case(
        "serve",
        "--max-line",
        &["0", "16777217", "18446744073709551616", "-1"],
        &[],
    ),
    case("serve", "--history", &["-1", "18446744073709551616"], &[]),
    // Checked before anything connects: not a redis:// URL, no host, a
    // broken one, a database that is not a number, very long text.
    case(
        "serve",
        "--bus",
        &[
            "",
            "http://127.0.0.1:1",
            "redis://",
            "redis://[::1",
            "redis://127.0.0.1:1/x",
            "redis://127.0.0.1:99999",
            "#LONG_TEXT",
        ],
        &[],
    ),
    // Without --bus, and out of range.
    case(
        "serve",
        "--bus-ttl",
        &["0", "299ms", "25h", "300000000000y", "-1s", "soon", ""],
        &[],
    ),
    case("serve", "--workers", &["0", "1025", "100000", "-1"], &[]),
    case("serve", "--engine", ENUM, &[]),
    case("serve", "--shutdown-grace", DURATIONS, &[]),
    #[cfg(feature = "metrics")]
    case("serve", "--metrics", ADDRS, &[]),
    case("serve", "--proxy-trusted", CIDRS, &[]),
    case("serve", "--proxy-timeout", DURATIONS_ABOVE_ZERO, &[]),
    case(
        "serve",
        "--log-format",
        &["bogus", "", "xml", "json,text"],
        &[],
    ),
    // Files are read and parsed as the flag is: missing, a directory, empty
    // names, and a file that is not PEM (this test's own source).
    case("serve", "--tls-cert", TLS_FILES, &[]),
    case("serve", "--tls-key", TLS_FILES, &[]),
    case("serve", "--tls-client-ca", TLS_FILES, &[]),
    case("serve", "--alpn", &["", ",", "h2,", "#LONG_TEXT"], &[]),
    case(
        "serve",
        "--tls-min",
        &["1.1", "1.4", "tls1.3", "", "x"],
        &[],
    ),
    case("serve", "--tls-handshake-timeout", DURATIONS, &[]),
    // Access lists: a CIDR or an address, never a name; host bits below the
    // prefix, prefixes past the family's width, an empty value and long
    // text are refused. Files are read as the flag is: missing, a
    // directory, empty names, and a file of no CIDRs (this test's source).
    case("serve", "--allow", CIDRS, &[]),
    case("serve", "--deny", CIDRS, &[]),
    case("serve", "--allow-file", TLS_FILES, &[]),
    case("serve", "--deny-file", TLS_FILES, &[]),
    case(
        "serve",
        "--max-handshakes",
        &["0", "16777217", "-1", "18446744073709551616"],
        &[],
    ),
    case(
        "connect",
        "<HOST:PORT>",
        &[
            ":3333",
            "localhost:0",
            "999.1.1.1:1",
            "[::1",
            "70000",
            "bad host:1",
            "",
            "unix:",
            UNIX_TOO_LONG,
        ],
        &[],
    ),
    case("connect", "[PORT]", &["0", "65536", "http", ""], &[]),
    case("connect", "--timeout", DURATIONS, &["0"]),
    // Free text sent to the peer: nothing to validate.
    case("connect", "--send", &[], &[]),
    case(
        "connect",
        "--lines",
        &["0", "-1", "18446744073709551616"],
        &[],
    ),
    case(
        "connect",
        "--source",
        &["localhost", "5000", ":1", "999.1.1.1", "[::1", ""],
        &[],
    ),
    case(
        "connect",
        "--retries",
        &["-1", "4294967296"],
        &["4294967295"],
    ),
    case("connect", "--idle-timeout", DURATIONS, &["0"]),
    case("connect", "--send-proxy", &["bogus", "", "v3", "V2 "], &[]),
    case("connect", "--output", PATHS, &[]),
    case("connect", "--hex-dump", PATHS, &[]),
    case("connect", "--ca", PATHS, &[]),
    case("connect", "--pin", PINS, &[]),
    case("connect", "--sni", SNIS, &[]),
    case("connect", "--alpn", ALPNS, &[]),
    // Each needs the other (clap says so, naming both).
    case("connect", "--cert", PATHS, &[]),
    case("connect", "--key", PATHS, &[]),
    case("connect", "--tls-min", TLS_VERSIONS, &[]),
    case("listen", "[ADDR]", LISTEN_ADDRS, &[]),
    case("listen", "--idle-timeout", DURATIONS, &[]),
    case("listen", "--output", PATHS, &[]),
    case("listen", "--hex-dump", PATHS, &[]),
    // Each needs the other (clap says so, naming both).
    case("listen", "--tls-cert", PATHS, &[]),
    case("listen", "--tls-key", PATHS, &[]),
    case("listen", "--tls-client-ca", PATHS, &[]),
    case("listen", "--alpn", ALPNS, &[]),
    case("listen", "--tls-min", TLS_VERSIONS, &[]),
    case(
        "bench",
        "--target",
        &[":1", "localhost:0", "999.1.1.1:1", "[::1", "bad host:1", ""],
        &[],
    ),
    case("bench", "--mode", ENUM, &[]),
    case("bench", "--chat-protocol", ENUM, &[]),
    case(
        "bench",
        "--slow-readers",
        &["0", "16777217", "-1", "x", ""],
        &[],
    ),
    case("bench", "--rooms", &["0", "16777217", "-1", "x", ""], &[]),
    case(
        "bench",
        "--lines",
        &["0", "1099511627777", "18446744073709551616", "-1", "x"],
        &[],
    ),
    case("bench", "--connections", &["0", "16777217", "-1", "x"], &[]),
    case("bench", "--idle-connections", &["16777217", "-1"], &[]),
    case(
        "bench",
        "--size",
        &["0", "1048577", "18446744073709551616", "-1"],
        &[],
    ),
    case(
        "bench",
        "--pipeline",
        &["0", "1048577", "18446744073709551616"],
        &[],
    ),
    case(
        "bench",
        "--rate",
        &["0", "-1", "NaN", "inf", "1e400", "x"],
        &[],
    ),
    case("bench", "--duration", DURATIONS, &[]),
    case("bench", "--warmup", DURATIONS, &[]),
    case("bench", "--threads", &["0", "1025", "-1"], &[]),
    case("bench", "--server-cpu", CPUS, &[]),
    case("bench", "--server-workers", &["0", "1025"], &[]),
    case("bench", "--server-engine", ENUM, &[]),
    case("bench", "--client-cpu", CPUS, &[]),
    case(
        "bench",
        "--server-pid",
        &["0", "4194305", "4294967296", "-1"],
        &[],
    ),
    case("bench", "--connect-timeout", DURATIONS, &[]),
    case("bench", "--send-proxy", &["bogus", "", "v3"], &[]),
    case("bench", "--histogram", PATHS, &[]),
    case("bench", "--plot", PATHS, &[]),
    case("bench", "--ca", PATHS, &[]),
    case("bench", "--pin", PINS, &[]),
    case("bench", "--sni", SNIS, &[]),
    case("bench", "--alpn", ALPNS, &[]),
    case("bench", "--cert", PATHS, &[]),
    case("bench", "--key", PATHS, &[]),
    case("bench", "--tls-min", TLS_VERSIONS, &[]),
    case("completions", "<SHELL>", &["tcsh", ""], &[]),
    // `relay` takes serve's flags (those that apply to a relay), checked by
    // the same code: the same hostile values, each with a valid `--to`.
    case(
        "relay",
        "--listen",
        SERVE_LISTEN,
        &["fd:1000000", "fd:2147483647"],
    ),
    case("relay", "--pidfile", PATHS, &[]),
    case("relay", "--upgrade-from", PATHS, &[]),
    case("relay", "--backlog", &["0", "4294967296", "-1"], &[]),
    case(
        "relay",
        "--max-connections",
        &["0", "16777217", "-1", "18446744073709551616"],
        &[],
    ),
    case("relay", "--idle-timeout", DURATIONS, &[]),
    case("relay", "--workers", &["0", "1025", "100000", "-1"], &[]),
    case("relay", "--engine", ENUM, &[]),
    case("relay", "--shutdown-grace", DURATIONS, &[]),
    case("relay", "--metrics", ADDRS, &[]),
    case("relay", "--proxy-trusted", CIDRS, &[]),
    case("relay", "--proxy-timeout", DURATIONS_ABOVE_ZERO, &[]),
    case(
        "relay",
        "--log-format",
        &["bogus", "", "xml", "json,text"],
        &[],
    ),
    case("relay", "--tls-cert", TLS_FILES, &[]),
    case("relay", "--tls-key", TLS_FILES, &[]),
    case("relay", "--tls-client-ca", TLS_FILES, &[]),
    case("relay", "--alpn", &["", ",", "h2,", "#LONG_TEXT"], &[]),
    case(
        "relay",
        "--tls-min",
        &["1.1", "1.4", "tls1.3", "", "x"],
        &[],
    ),
    case("relay", "--tls-handshake-timeout", DURATIONS, &[]),
    case("relay", "--allow", CIDRS, &[]),
    case("relay", "--deny", CIDRS, &[]),
    case("relay", "--allow-file", TLS_FILES, &[]),
    case("relay", "--deny-file", TLS_FILES, &[]),
    case(
        "relay",
        "--max-handshakes",
        &["0", "16777217", "-1", "18446744073709551616"],
        &[],
    ),
    case(
        "relay",
        "--to",
        &[
            ":3333",
            "localhost:0",
            "127.0.0.1:0",
            "999.1.1.1:1",
            "[::1",
            "70000",
            "bad host:1",
            "",
            "unix:",
            UNIX_TOO_LONG,
        ],
        &[],
    ),
    // Edges: PROXY towards the upstream, TLS towards it.
    case("relay", "--send-proxy", &["bogus", "", "v3", "V2 "], &[]),
    case("relay", "--to-ca", TLS_FILES, &[]),
    case("relay", "--to-sni", SNIS, &[]),
    case(
        "relay",
        "--connect-timeout",
        &[
            "300000000000y",
            "366d",
            "18446744073709551616s",
            "-1s",
            "soon",
            "",
            "0",
            "0s",
            "6m",
        ],
        &[],
    ),
    case(
        "relay",
        "--balance",
        &["bogus", "", "round_robin", "random"],
        &[],
    ),
    case(
        "relay",
        "--health-interval",
        &[
            "300000000000y",
            "366d",
            "18446744073709551616s",
            "-1s",
            "soon",
            "",
            "0",
            "0s",
            "2h",
        ],
        &[],
    ),
];

/// Runs tcpkit with `args` (stdin empty), killing it at the deadline.
fn run(args: &[String]) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpkit");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tcpkit {args:?} still running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, reader.join().expect("stderr reader"))
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{args:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

fn subcommands() -> Vec<String> {
    let text = help(&[]);
    let section = text.split("Commands:").nth(1).expect("Commands: section");
    section
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The flags of `command` that take a value (`--flag <V>`), and its
/// positional arguments (`<V>` / `[V]` under `Arguments:`).
fn value_taking(command: &str) -> BTreeSet<String> {
    let text = help(&[command]);
    let mut found = BTreeSet::new();
    let mut in_args = false;
    for line in text.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            in_args = line == "Arguments:";
            continue;
        }
        let trimmed = line.trim_start();
        if in_args
            && line.starts_with("  ")
            && (trimmed.starts_with('<') || trimmed.starts_with('['))
        {
            if let Some(name) = trimmed.split_whitespace().next() {
                found.insert(name.to_owned());
            }
            continue;
        }
        // `-x, --flag <V>` or `--flag <V>` at the start of an option line.
        let short = trimmed.as_bytes();
        let opt =
            if short.len() > 4 && short[0] == b'-' && short[1] != b'-' && &short[2..4] == b", " {
                &trimmed[4..]
            } else {
                trimmed
            };
        let mut words = opt.split_whitespace();
        if let (Some(flag), Some(value)) = (words.next(), words.next())
            && flag.starts_with("--")
            && value.starts_with('<')
        {
            found.insert(flag.to_owned());
        }
    }
    found
}

/// A CPU this process may not run on (below `CPU_SETSIZE`).
fn unavailable_cpu() -> String {
    // SAFETY: cpu_set_t is plain data; CPU_ISSET stays below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| !libc::CPU_ISSET(c, &set))
            .expect("some CPU outside the affinity mask")
            .to_string()
    }
}

/// The command line for `value` given to `case.flag`, with whatever else
/// the subcommand needs to get as far as validating it.
fn argv(case: &Case, value: &str) -> Vec<String> {
    let value = match value {
        "#UNAVAILABLE_CPU" => unavailable_cpu(),
        // Linux caps one argument at 128 KiB (MAX_ARG_STRLEN).
        "#LONG_TEXT" => "x".repeat(120 * 1024),
        v => v.to_owned(),
    };
    let mut args = vec![case.command.to_owned()];
    match case.flag {
        "<HOST:PORT>" | "[ADDR]" | "<SHELL>" => args.push(value),
        "[PORT]" => args.extend(["127.0.0.1".to_owned(), value]),
        flag => {
            if case.command == "relay" && flag != "--to" {
                // A closed upstream: nothing runs before the flag is checked.
                args.push(format!("--to=127.0.0.1:{}", common::closed_port()));
            }
            if case.command == "connect" {
                // A closed loopback port: refused, if validation let it get that far.
                args.push(format!("127.0.0.1:{}", common::closed_port()));
            }
            // `--flag=VALUE`, so values such as `-1` reach the parser.
            args.push(format!("{flag}={value}"));
        }
    }
    args
}

fn assert_no_crash(args: &[String], status: ExitStatus, stderr: &str) {
    use std::os::unix::process::ExitStatusExt;
    assert_ne!(
        status.code(),
        Some(101),
        "tcpkit {args:?} panicked: {stderr}"
    );
    assert!(
        status.signal().is_none(),
        "tcpkit {args:?} killed by signal {status:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "tcpkit {args:?}: {stderr}");
}

#[test]
fn every_value_taking_flag_of_every_subcommand_has_hostile_cases() {
    let mut in_help = BTreeSet::new();
    for command in subcommands() {
        for flag in value_taking(&command) {
            in_help.insert((command.clone(), flag));
        }
    }
    assert!(
        in_help.len() > 30,
        "help parsing found too few flags: {in_help:?}"
    );
    let covered: BTreeSet<(String, String)> = CASES
        .iter()
        .map(|c| (c.command.to_owned(), c.flag.to_owned()))
        .collect();
    let missing: Vec<_> = in_help.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "flags in --help with no hostile cases: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&in_help).collect();
    assert!(
        stale.is_empty(),
        "cases for flags no longer in --help: {stale:?}"
    );
}

#[test]
fn invalid_values_exit_2_naming_the_flag_and_never_panic() {
    for case in CASES {
        for value in case.invalid {
            let args = argv(case, value);
            let (status, stderr) = run(&args);
            assert_no_crash(&args, status, &stderr);
            assert_eq!(status.code(), Some(2), "tcpkit {args:?}: {stderr}");
            let named = if case.flag.starts_with("--") {
                let words = case.flag.trim_start_matches("--").replace('-', " ");
                stderr.contains(case.flag) || stderr.contains(&words)
            } else {
                // The input, or its host part (an address error names that).
                let host = value.rsplit_once(':').map_or(*value, |(h, _)| h);
                value.is_empty() || stderr.contains(value) || stderr.contains(host)
            };
            assert!(
                named,
                "tcpkit {args:?} does not name {}: {stderr}",
                case.flag
            );
        }
    }
}

#[test]
fn extreme_valid_values_run_without_panicking() {
    for case in CASES {
        for value in case.valid {
            let args = argv(case, value);
            let (status, stderr) = run(&args);
            assert_no_crash(&args, status, &stderr);
            assert_ne!(
                status.code(),
                Some(2),
                "tcpkit {args:?} refused a valid value: {stderr}"
            );
        }
    }
    // Retries without end still stop at the overall deadline.
    let args: Vec<String> = vec![
        "connect".to_owned(),
        "--retries=4294967295".to_owned(),
        "--timeout=1s".to_owned(),
        format!("127.0.0.1:{}", common::closed_port()),
    ];
    let (status, stderr) = run(&args);
    assert_no_crash(&args, status, &stderr);
    assert_eq!(status.code(), Some(5), "{stderr}");
}

#[test]
fn a_hostile_environment_does_not_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_tcpkit"))
        .arg("demo")
        .env("RUST_LOG", "[[[not a filter")
        .env("COLUMNS", "-5")
        .output()
        .expect("run demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `serve --listen` and `relay --listen` with a bad `unix:` path (empty,
/// longer than `sun_path`): a usage error naming the input, before any
/// socket file is made. (A NUL byte cannot travel in argv; `Target::parse`'s
/// unit tests cover it.)
#[test]
fn bad_unix_listen_paths_exit_2_naming_the_input() {
    let closed = format!("--to=127.0.0.1:{}", common::closed_port());
    for value in ["unix:", UNIX_TOO_LONG] {
        for command in [
            vec!["serve".to_owned()],
            vec!["relay".to_owned(), closed.clone()],
        ] {
            let mut args = command;
            args.push(format!("--listen={value}"));
            let (status, stderr) = run(&args);
            assert_no_crash(&args, status, &stderr);
            assert_eq!(status.code(), Some(2), "tcpkit {args:?}: {stderr}");
            assert!(
                stderr.contains("--listen") && stderr.contains("unix:"),
                "tcpkit {args:?} does not name the input: {stderr}"
            );
        }
    }
}
