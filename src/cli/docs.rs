//! `tcpkit completions SHELL` and `tcpkit man`: generated from the same clap
//! definitions as the parser (clap_complete, clap_mangen), so they cannot
//! drift from the flags.

use std::process::ExitCode;

use super::exit::{Exit, codes_help};
use super::out;

/// Arguments of `tcpkit completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[Exit::Ok, Exit::Failure, Exit::Usage]))]
pub struct CompletionsArgs {
    /// The shell to complete for. Install e.g. with `tcpkit completions bash
    /// > ~/.local/share/bash-completion/completions/tcpkit`.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

/// Arguments of `tcpkit man` (none).
#[derive(Debug, clap::Args)]
#[command(after_help = codes_help(&[Exit::Ok, Exit::Failure, Exit::Usage]))]
pub struct ManArgs {}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "tcpkit", &mut script);
    out::bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man page, with a section per subcommand, to stdout.
pub fn man(cmd: clap::Command) -> anyhow::Result<ExitCode> {
    let mut page = Vec::new();
    let write = |e: std::io::Error| tcpkit::Error::io(e, "render the man page");
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(write)?;
    // The top page lists the subcommands; their own flags follow, each
    // under a heading of its own, so one page documents every flag.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("tcpkit {}", sub.get_name());
        page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_description_section(&mut part).map_err(write)?;
        man.render_options_section(&mut part).map_err(write)?;
        man.render_extra_section(&mut part).map_err(write)?;
        // Sections of the subcommand become subsections under its heading.
        let part = String::from_utf8_lossy(&part).replace("\n.SH ", "\n.SS ");
        let part = part
            .strip_prefix(".SH ")
            .map_or(part.clone(), |rest| format!(".SS {rest}"));
        page.extend_from_slice(part.as_bytes());
    }
    out::bytes(&page)?;
    Ok(ExitCode::SUCCESS)
}
