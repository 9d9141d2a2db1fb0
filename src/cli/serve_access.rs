//! `tcpkit serve`'s access-list flags -> a checked [`AccessList`], before
//! any socket opens: `--allow`/`--deny` values and `--allow-file` /
//! `--deny-file` contents are parsed as clap parses the flag, so a bad
//! value exits 2 naming the flag (and the file and line). SIGHUP reads the
//! files again ([`Sources::reload`]); a file that no longer parses keeps
//! the list in force.

use std::path::PathBuf;

use ipnet::IpNet;
use tcpkit::server::access::{self, AccessList};

/// The access-list flags of `tcpkit serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// Admit only clients in this CIDR (repeatable; a bare address is /32
    /// or /128). A deny rule wins over any allow rule; without allow
    /// rules, everyone not denied is admitted.
    #[arg(long, value_name = "CIDR", action = clap::ArgAction::Append, value_parser = rule)]
    allow: Vec<IpNet>,
    /// Refuse clients in this CIDR (repeatable; a bare address is /32 or
    /// /128), closed right after accept, before any byte.
    #[arg(long, value_name = "CIDR", action = clap::ArgAction::Append, value_parser = rule)]
    deny: Vec<IpNet>,
    /// Allow rules from a file, one CIDR a line (`#` comments, blank lines
    /// ignored); read again on SIGHUP. Repeatable.
    #[arg(long, value_name = "FILE", action = clap::ArgAction::Append, value_parser = rules_file)]
    allow_file: Vec<PathBuf>,
    /// Deny rules from a file, as --allow-file; read again on SIGHUP.
    /// Repeatable.
    #[arg(long, value_name = "FILE", action = clap::ArgAction::Append, value_parser = rules_file)]
    deny_file: Vec<PathBuf>,
}

fn rule(text: &str) -> Result<IpNet, String> {
    access::parse_rule(text).map_err(|e| e.message().to_owned())
}

/// A file that parses now (read again when the list is built).
fn rules_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    access::read_rules_file(&path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Where a server's access list comes from: the flags' rules and the files
/// to read (again on SIGHUP).
#[derive(Debug, Clone)]
pub struct Sources {
    args: AccessArgs,
}

impl AccessArgs {
    /// The sources, or `None` when no access flag is given (no list: the
    /// accept loop checks nothing).
    pub fn sources(&self) -> Option<Sources> {
        let any = !(self.allow.is_empty()
            && self.deny.is_empty()
            && self.allow_file.is_empty()
            && self.deny_file.is_empty());
        any.then(|| Sources { args: self.clone() })
    }
}

impl Sources {
    /// The list from the flags and the files as they are now.
    pub fn build(&self) -> tcpkit::Result<AccessList> {
        let mut allow = self.args.allow.clone();
        for file in &self.args.allow_file {
            allow.extend(access::read_rules_file(file)?);
        }
        let mut deny = self.args.deny.clone();
        for file in &self.args.deny_file {
            deny.extend(access::read_rules_file(file)?);
        }
        Ok(AccessList::new(&allow, &deny))
    }

    /// Whether there are files to read again on SIGHUP.
    pub fn has_files(&self) -> bool {
        !(self.args.allow_file.is_empty() && self.args.deny_file.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        access: AccessArgs,
    }

    fn parse(argv: &[&str]) -> Result<AccessArgs, clap::Error> {
        T::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).map(|t| t.access)
    }

    #[test]
    fn flags_and_files_make_one_list_and_files_are_read_again() {
        assert!(parse(&[]).unwrap().sources().is_none());
        let dir = tempfile::tempdir().unwrap();
        let deny = dir.path().join("deny.txt");
        std::fs::write(&deny, "# nobody from .3\n127.0.0.3\n").unwrap();
        let deny_arg = deny.display().to_string();
        let args = parse(&["--allow", "127.0.0.0/8", "--deny-file", &deny_arg]).unwrap();
        let sources = args.sources().expect("flags given");
        assert!(sources.has_files());
        let list = sources.build().unwrap();
        assert!(list.admits("127.0.0.2".parse().unwrap()));
        assert!(!list.admits("127.0.0.3".parse().unwrap()));
        assert!(!list.admits("10.0.0.1".parse().unwrap()));
        std::fs::write(&deny, "127.0.0.2\n").unwrap();
        let list = sources.build().unwrap();
        assert!(!list.admits("127.0.0.2".parse().unwrap()));
        assert!(list.admits("127.0.0.3".parse().unwrap()));
        std::fs::write(&deny, "127.0.0.2\nnot-an-address\n").unwrap();
        let err = sources.build().unwrap_err();
        assert!(err.message().contains(&format!("{deny_arg}:2: ")), "{err}");
        assert!(
            !parse(&["--deny", "127.0.0.3"])
                .unwrap()
                .sources()
                .unwrap()
                .has_files()
        );
    }

    #[test]
    fn bad_values_fail_as_parsed_naming_the_file_and_line() {
        assert!(parse(&["--allow", "10.0.0.1/8"]).is_err());
        assert!(parse(&["--deny", "localhost"]).is_err());
        assert!(parse(&["--deny", ""]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("allow.txt");
        std::fs::write(&bad, "10.0.0.0/8\n\n# fine so far\n10.0.0.0/33\n").unwrap();
        let err = parse(&["--allow-file", &bad.display().to_string()]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains(&format!("{}:4: ", bad.display())), "{text}");
        let err = parse(&["--deny-file", "/nonexistent/deny.txt"]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/deny.txt"), "{err}");
    }
}
