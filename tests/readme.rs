//! README.md's flag table must match `tun-manager --help`: the same flags, with the same
//! defaults.

use std::collections::BTreeMap;
use std::process::Command;

/// Returns flag name to default text from the `## Flags` table of README.md.
fn readme_flags() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let table = readme
        .split("## Flags")
        .nth(1)
        .expect("README.md has a ## Flags section");
    table
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.trim_matches('`');
            let default = cells.get(2)?.trim_matches('`');
            // The separator row `|---|---|` is not a flag.
            let is_flag = flag.starts_with("--") && !flag.starts_with("---");
            is_flag.then(|| (flag.to_owned(), default.to_owned()))
        })
        .collect()
}

/// Returns flag name to default text from the daemon's `--help` output.
fn help_flags() -> BTreeMap<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tun-manager"))
        .arg("--help")
        .output()
        .expect("run tun-manager --help");
    assert!(output.status.success(), "expected --help to exit 0");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let options = help
        .split("Options:")
        .nth(1)
        .and_then(|rest| rest.split("Commands:").next())
        .expect("help has an Options section");

    // Join each option's wrapped description into one line.
    let mut entries: Vec<String> = Vec::new();
    for line in options.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") {
            entries.push(trimmed.to_owned());
        } else if let Some(last) = entries.last_mut() {
            last.push(' ');
            last.push_str(trimmed);
        }
    }
    entries
        .iter()
        .filter(|entry| !entry.starts_with("--help"))
        .map(|entry| {
            let flag = entry.split_whitespace().next().unwrap_or_default();
            let default = entry
                .rsplit_once("(default: ")
                .map(|(_, rest)| rest.trim_end_matches(')').trim().to_owned())
                .unwrap_or_else(|| panic!("expected a default in the help of {flag}"));
            (flag.to_owned(), default)
        })
        .collect()
}

#[test]
fn flag_table_matches_help() {
    let readme = readme_flags();
    let help = help_flags();
    assert!(!help.is_empty(), "expected flags in --help");
    assert_eq!(
        readme.keys().collect::<Vec<_>>(),
        help.keys().collect::<Vec<_>>(),
        "expected README's flag table to list exactly the flags of --help"
    );
    for (flag, default) in &help {
        assert_eq!(
            readme.get(flag),
            Some(default),
            "expected README to give {flag} the default that --help gives"
        );
    }
}
