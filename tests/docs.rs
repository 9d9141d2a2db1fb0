//! The documentation stays usable on any machine: commands in the Markdown
//! files name paths relative to the repository, never one machine's home or
//! work directory. (README's Rust examples are compiled as doc tests: see
//! `ReadmeDoctests` in src/lib.rs.)

use std::path::Path;

/// Prefixes of absolute paths that exist on one machine only.
const MACHINE_PATHS: [&str; 4] = ["/work/", "/root/", "/home/", "/Users/"];

#[test]
fn markdown_names_no_path_of_one_machine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).expect("read the repository root") {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a Markdown file");
        checked += 1;
        for (i, line) in text.lines().enumerate() {
            if MACHINE_PATHS.iter().any(|p| line.contains(p)) {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                found.push(format!("{name}:{}: {line}", i + 1));
            }
        }
    }
    assert!(
        checked >= 2,
        "README.md and BENCHMARKS.md not found in {root:?}"
    );
    assert!(found.is_empty(), "machine paths:\n{}", found.join("\n"));
}
