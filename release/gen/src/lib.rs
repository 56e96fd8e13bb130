//! What the packages ship besides the binary, generated from the code so it cannot drift:
//! man pages and shell completions from the clap definitions (`mnbackup::cli::Cli`), the systemd
//! unit from the scheduler's generator (the one `mnbackup schedule install` uses), and the
//! tmpfiles.d entry for the state directory (`[daemon] state_dir`'s default).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Where the package installs the binary; the unit's `ExecStart` uses it.
pub const BIN_PATH: &str = "/usr/bin/mnbackup";

/// The clap command tree of `mnbackup`.
pub fn command() -> clap::Command {
    mnbackup::cli::Cli::command()
}

/// Writes, under `out`: `man/*.1` (`mnbackup.1` and one page per subcommand, e.g.
/// `mnbackup-schedule-install.1`), `completions/{mnbackup.bash,_mnbackup,mnbackup.fish}`,
/// `systemd/mnbackup.service` and `tmpfiles/mnbackup.conf`. Returns the written paths.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man = out.join("man");
    let completions = out.join("completions");
    let systemd = out.join("systemd");
    let tmpfiles = out.join("tmpfiles");
    for d in [&man, &completions, &systemd, &tmpfiles] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_man_pages(&man).with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = command();
        written.push(
            clap_complete::generate_to(shell, &mut cmd, "mnbackup", &completions).with_context(
                || format!("writing {shell} completion to {}", completions.display()),
            )?,
        );
    }
    let unit = systemd.join("mnbackup.service");
    std::fs::write(&unit, unit_text()).with_context(|| format!("writing {}", unit.display()))?;
    written.push(unit);
    let tmp = tmpfiles.join("mnbackup.conf");
    std::fs::write(&tmp, tmpfiles_text()).with_context(|| format!("writing {}", tmp.display()))?;
    written.push(tmp);
    for e in std::fs::read_dir(&man).with_context(|| format!("listing {}", man.display()))? {
        written.push(e?.path());
    }
    written.sort();
    Ok(written)
}

/// `mnbackup.1` and one page per visible subcommand (as `clap_mangen::generate_to`), each
/// footed with `mnbackup VERSION` and titled `mnbackup manual`.
fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    fn walk(cmd: clap::Command, dir: &Path, source: &str) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, dir, source)?;
        }
        let env = environment(&cmd);
        let man = clap_mangen::Man::new(cmd)
            .source(source)
            .manual("mnbackup manual");
        let mut page = Vec::new();
        man.render(&mut page)?;
        let mut page = String::from_utf8_lossy(&page).into_owned();
        let mut section = String::from(".SH ENVIRONMENT\n");
        for (var, help) in env {
            section.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(&var), roff(&help)));
        }
        // Before the after-help text and the version, as man-pages(7) orders sections.
        let at = [".SH EXTRA", ".SH VERSION"]
            .iter()
            .filter_map(|h| page.find(&format!("\n{h}")).map(|i| i + 1))
            .min()
            .unwrap_or(page.len());
        page.insert_str(at, &section);
        std::fs::write(dir.join(man.get_filename()), page)
    }
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("mnbackup {}", cmd.get_version().unwrap_or_default());
    walk(cmd, dir, &source)
}

/// The environment variables of a command's options, and the log filter the binary reads.
fn environment(cmd: &clap::Command) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let var = a.get_env()?.to_string_lossy().into_owned();
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a.get_long().map(|l| format!("--{l}")).unwrap_or_default();
            Some((var, format!("Same as {long}: {help}")))
        })
        .collect();
    env.push((
        "MNBACKUP_LOG".into(),
        "Log filter in tracing-subscriber's EnvFilter syntax (e.g. `debug`), overriding -q/-v."
            .into(),
    ));
    env
}

/// Escapes text for a roff line: backslashes, hyphens and a leading dot or quote.
fn roff(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The packaged unit: the scheduler's own generator with the package's paths. It names no pool
/// (`RequiresMountsFor=`), which is site-specific: `mnbackup schedule install` writes a unit with
/// it to /etc/systemd/system, which takes precedence over the packaged one.
pub fn unit_text() -> String {
    let cfg = mnbackup::config::Config::default();
    let mut opts = mnbackup_scheduler::systemd::UnitOptions {
        exe: BIN_PATH.into(),
        config: Some(mnbackup::config::DEFAULT_CONFIG.into()),
        ..Default::default()
    };
    opts.grace = std::time::Duration::from_secs(cfg.daemon.grace_seconds);
    mnbackup_scheduler::systemd::render_unit(&opts)
        .replace(
            "# Generated by `mnbackup schedule install`. Edit the mnbackup config, not this\n\
             # file, and re-run the command to regenerate it.\n",
            "# Shipped by the mnbackup package. `mnbackup schedule install` writes a unit for this\n\
             # node (with RequiresMountsFor= the pool) to /etc/systemd/system, which overrides it.\n",
        )
}

/// systemd-tmpfiles entry creating the state directory (`[daemon] state_dir` default), root only.
pub fn tmpfiles_text() -> String {
    let state = mnbackup::config::DaemonConfig::default().state_dir;
    format!("d {} 0700 root root -\n", state.display())
}
