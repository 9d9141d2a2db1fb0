//! `tcpkit bench` (being built on its own branch).

use std::process::ExitCode;

use super::Globals;

/// Arguments of `tcpkit bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _globals: Globals) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tcpkit bench` is not available in this build yet")
}
