//! The generated man pages, completions, unit and tmpfiles entry cover the real command tree.

use std::path::Path;

/// (file stem, about) of every visible command, recursively: `mnbackup`, `mnbackup-init`,
/// `mnbackup-schedule-install`, …
fn commands(cmd: &clap::Command, prefix: &str, out: &mut Vec<(String, String)>) {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    out.push((name.clone(), about));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        commands(sub, &name, out);
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// roff escapes `-` as `\-`; compare on the plain words.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-").replace("\\*(Aq", "'")
}

#[test]
fn one_man_page_per_command_with_its_description() {
    let dir = tempfile::tempdir().unwrap();
    mnbackup_gen::generate(dir.path()).unwrap();
    let mut cmds = Vec::new();
    commands(&mnbackup_gen::command(), "", &mut cmds);
    // The tree as it is today at least; new subcommands are covered automatically.
    for must in [
        "mnbackup",
        "mnbackup-init",
        "mnbackup-snapshot",
        "mnbackup-restore",
        "mnbackup-schedule-install",
        "mnbackup-config-check",
    ] {
        assert!(
            cmds.iter().any(|(n, _)| n == must),
            "{must} missing from the command tree"
        );
    }
    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut want: Vec<String> = cmds.iter().map(|(n, _)| format!("{n}.1")).collect();
    want.sort();
    assert_eq!(pages, want, "one page per visible command, nothing else");
    let version = env!("CARGO_PKG_VERSION");
    for (name, about) in &cmds {
        let page = plain(&read(&dir.path().join("man").join(format!("{name}.1"))));
        assert!(page.starts_with(".ie"), "{name}.1 is not roff:\n{page}");
        assert!(
            page.contains(&format!(".TH {name} 1")),
            "{name}.1 has no title line:\n{page}"
        );
        assert!(
            page.contains(&format!("\"mnbackup {version}\" \"mnbackup manual\"")),
            "{name}.1 does not carry the version {version}:\n{page}"
        );
        let first_words: String = about
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            plain(&page.split_whitespace().collect::<Vec<_>>().join(" ")).contains(&first_words),
            "{name}.1 does not describe the command ({first_words:?}):\n{page}"
        );
    }
    let top = plain(&read(&dir.path().join("man/mnbackup.1")));
    assert!(
        top.contains("Exit codes: 0 ok"),
        "mnbackup(1) lacks the exit codes:\n{top}"
    );
    assert!(
        top.contains("MNBACKUP_CONFIG"),
        "mnbackup(1) lacks the environment:\n{top}"
    );
}

#[test]
fn completions_know_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    mnbackup_gen::generate(dir.path()).unwrap();
    let bash = read(&dir.path().join("completions/mnbackup.bash"));
    let zsh = read(&dir.path().join("completions/_mnbackup"));
    let fish = read(&dir.path().join("completions/mnbackup.fish"));
    assert!(bash.contains("complete -F _mnbackup"), "{bash}");
    assert!(zsh.starts_with("#compdef mnbackup"), "{zsh}");
    let top = mnbackup_gen::command();
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let n = sub.get_name();
        assert!(
            bash.contains(&format!("mnbackup,{n})")) || bash.contains(&format!("mnbackup__{n}")),
            "bash completion lacks {n}"
        );
        assert!(zsh.contains(&format!("'{n}:")), "zsh completion lacks {n}");
        assert!(
            fish.contains(&format!("-a \"{n}\"")),
            "fish completion lacks {n}"
        );
    }
    // Options of a nested command.
    assert!(bash.contains("--dry-run") && zsh.contains("--dry-run"));
}

#[test]
fn packaged_unit_runs_the_packaged_binary_with_the_packaged_config() {
    let dir = tempfile::tempdir().unwrap();
    mnbackup_gen::generate(dir.path()).unwrap();
    let unit = read(&dir.path().join("systemd/mnbackup.service"));
    assert!(
        unit.contains(
            "\nExecStart=/usr/bin/mnbackup --config /etc/mnbackup/mnbackup.toml daemon\n"
        ),
        "{unit}"
    );
    assert!(unit.contains("\nDocumentation=man:mnbackup(1)\n"), "{unit}");
    assert!(unit.contains("\nWantedBy=multi-user.target\n"), "{unit}");
    assert!(
        unit.starts_with("# Shipped by the mnbackup package."),
        "{unit}"
    );
    // The page the unit points at exists.
    assert!(dir.path().join("man/mnbackup.1").is_file());
    let tmp = read(&dir.path().join("tmpfiles/mnbackup.conf"));
    assert_eq!(tmp, "d /var/lib/mnbackup 0700 root root -\n");
}
