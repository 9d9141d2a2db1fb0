//! `tcpkit connect` (being built on its own branch).

use std::process::ExitCode;

use super::Globals;

/// Arguments of `tcpkit connect`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _globals: Globals) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tcpkit connect` is not available in this build yet")
}
