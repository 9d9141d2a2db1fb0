//! README's "Behind HAProxy and nginx" and "Chat across instances" show
//! the configurations and commands `tests/balancers.sh` runs: the script
//! prints them with README's example ports (`--print-snippets`, no balancer
//! needed), and each must appear in README.md verbatim.
#![cfg(unix)]

use std::path::Path;
use std::process::Command;

#[test]
fn readme_shows_the_balancer_configs_the_script_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("tests/balancers.sh"))
        .arg("--print-snippets")
        .output()
        .expect("run bash tests/balancers.sh --print-snippets");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    let blocks: Vec<&str> = printed.split("---\n").collect();
    assert_eq!(
        blocks.len(),
        5,
        "serve command, HAProxy, nginx, chat commands, chat HAProxy: {printed}"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let section = readme
        .split("### Behind HAProxy and nginx")
        .nth(1)
        .expect("README has a 'Behind HAProxy and nginx' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let serve = blocks[0].trim_end();
    assert!(
        section.contains(&format!("```sh\n{serve}")),
        "README's serve command differs from the script's:\n{serve}"
    );
    for (fence, block) in [("haproxy", blocks[1]), ("nginx", blocks[2])] {
        let fenced = format!("```{fence}\n{block}```\n");
        assert!(
            section.contains(&fenced),
            "README's {fence} config differs from the one tests/balancers.sh runs:\n{fenced}"
        );
    }
    let chat = readme
        .split("### Chat across instances: `--bus`")
        .nth(1)
        .expect("README has a 'Chat across instances' section");
    let chat = chat.split("\n### ").next().unwrap_or(chat);
    for (fence, block) in [("sh", blocks[3]), ("haproxy", blocks[4])] {
        let fenced = format!("```{fence}\n{block}```\n");
        assert!(
            chat.contains(&fenced),
            "README's chat example differs from the one tests/balancers.sh runs:\n{fenced}"
        );
    }
}
