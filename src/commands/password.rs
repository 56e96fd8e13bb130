//! Where the passphrase of an encrypted repository comes from, in this order (never from the
//! command line, where `ps` shows it to every user):
//!
//! 1. `MNBACKUP_PASSWORD` (environment);
//! 2. `MNBACKUP_PASSWORD_FILE` (environment), else `[repository] password_file`: the file's first
//!    line;
//! 3. `[repository] password_command`: run with `sh -c`, its output trimmed;
//! 4. the systemd credential `mnbackup-password` (`LoadCredential=` / `SetCredentialEncrypted=`:
//!    `$CREDENTIALS_DIRECTORY/mnbackup-password`);
//! 5. a prompt, only when stdin is a terminal.
//!
//! A new passphrase (`key add`, `key passwd`) comes from `MNBACKUP_NEW_PASSWORD`,
//! `MNBACKUP_NEW_PASSWORD_FILE` or a prompt (twice). The destination of `copy` is unlocked with
//! `MNBACKUP_TO_PASSWORD` / `MNBACKUP_TO_PASSWORD_FILE` when set, else as the source.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use zeroize::Zeroizing;

use super::Ctx;
use crate::error::MnError;

/// A passphrase (wiped from memory when dropped).
pub type Secret = Zeroizing<String>;

fn key_err(msg: String) -> anyhow::Error {
    MnError::Key(msg).into()
}

fn read_file(p: &Path) -> Result<Secret> {
    let text = Zeroizing::new(std::fs::read_to_string(p).map_err(|e| {
        key_err(format!(
            "cannot read the passphrase file {}: {e}",
            p.display()
        ))
    })?);
    let line = Zeroizing::new(text.lines().next().unwrap_or("").to_string());
    if line.is_empty() {
        return Err(key_err(format!(
            "the passphrase file {} is empty: write the passphrase on its first line",
            p.display()
        )));
    }
    Ok(line)
}

fn non_empty(name: &str) -> Option<Secret> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Zeroizing::new)
}

fn run_command(cmd: &str) -> Result<Secret> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running password_command `{cmd}`"))?;
    let text = Zeroizing::new(String::from_utf8_lossy(&out.stdout).into_owned());
    if !out.status.success() {
        return Err(key_err(format!(
            "password_command `{cmd}` failed ({}); fix it or give the passphrase another way",
            out.status
        )));
    }
    let t = Zeroizing::new(text.trim().to_string());
    if t.is_empty() {
        return Err(key_err(format!("password_command `{cmd}` printed nothing")));
    }
    Ok(t)
}

fn prompt(what: &str) -> Result<Secret> {
    Ok(Zeroizing::new(
        rpassword::prompt_password(format!("{what}: ")).context("reading the passphrase")?,
    ))
}

/// The passphrase of the repository at `location` from the configured sources (see the module
/// documentation); `dest`: the destination of `copy` (its own variables first).
pub fn current(ctx: &Ctx, location: &str, dest: bool) -> Result<Secret> {
    if dest {
        if let Some(p) = non_empty("MNBACKUP_TO_PASSWORD") {
            return Ok(p);
        }
        if let Some(f) = non_empty("MNBACKUP_TO_PASSWORD_FILE") {
            return read_file(Path::new(f.as_str()));
        }
    }
    if let Some(p) = non_empty("MNBACKUP_PASSWORD") {
        return Ok(p);
    }
    if let Some(f) = non_empty("MNBACKUP_PASSWORD_FILE") {
        return read_file(Path::new(f.as_str()));
    }
    let repo = &ctx.config.repository;
    if let Some(f) = &repo.password_file {
        return read_file(f);
    }
    if let Some(c) = &repo.password_command {
        return run_command(c);
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("mnbackup-password");
        if p.exists() {
            return read_file(&p);
        }
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("passphrase of the repository {location}"));
    }
    Err(key_err(format!(
        "the repository at {location} is encrypted and no passphrase was given: set \
         [repository] password_file (a 0600 file holding it) or password_command, \
         MNBACKUP_PASSWORD_FILE, the systemd credential `mnbackup-password`, or \
         MNBACKUP_PASSWORD (docs/configuration.md, \"Passphrase\")"
    )))
}

/// A new passphrase (`init` on a terminal, `key add`, `key passwd`): `MNBACKUP_NEW_PASSWORD`,
/// `MNBACKUP_NEW_PASSWORD_FILE`, or asked twice on a terminal.
pub fn new(what: &str) -> Result<Secret> {
    if let Some(p) = non_empty("MNBACKUP_NEW_PASSWORD") {
        return Ok(p);
    }
    if let Some(f) = non_empty("MNBACKUP_NEW_PASSWORD_FILE") {
        return read_file(Path::new(f.as_str()));
    }
    if std::io::stdin().is_terminal() {
        let a = prompt(&format!("new passphrase {what}"))?;
        let b = prompt("the same passphrase again")?;
        if a != b {
            return Err(crate::error::usage(
                "the two passphrases differ; nothing was changed",
            ));
        }
        if a.is_empty() {
            return Err(crate::error::usage("an empty passphrase is refused"));
        }
        return Ok(a);
    }
    Err(crate::error::usage(format!(
        "no new passphrase {what}: set MNBACKUP_NEW_PASSWORD_FILE (a file holding it) or \
         MNBACKUP_NEW_PASSWORD, or run on a terminal"
    )))
}

/// The passphrase of a new repository (`init`): the usual sources (so a node's configured
/// passphrase file is used), else asked twice on a terminal.
pub fn for_init(ctx: &Ctx, location: &str) -> Result<Secret> {
    let configured = std::env::var_os("MNBACKUP_PASSWORD").is_some()
        || std::env::var_os("MNBACKUP_PASSWORD_FILE").is_some()
        || ctx.config.repository.password_file.is_some()
        || ctx.config.repository.password_command.is_some()
        || std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|d| Path::new(&d).join("mnbackup-password").exists());
    if configured || !std::io::stdin().is_terminal() {
        return current(ctx, location, false).map_err(|e| {
            if crate::error::exit_code(&e) == crate::error::EXIT_KEY && !configured {
                key_err(
                    "init creates an encrypted repository and needs a passphrase: set \
                     MNBACKUP_PASSWORD_FILE (or [repository] password_file / password_command, \
                     or MNBACKUP_PASSWORD), or run on a terminal; `init --no-encryption` creates \
                     an unencrypted one (not recommended: docs/security.md)"
                        .into(),
                )
            } else {
                e
            }
        });
    }
    new(&format!("for the new repository {location}"))
}
