//! The restore's checks that belong to no component: the snapshot's objects, its gaps, the
//! management service.

use std::collections::BTreeSet;

use anyhow::Result;
use mnbackup_restore::plan::{Check, CheckStatus};

use crate::engines::{CheckKind, Preflight};
use crate::model::{Encoding, Item, Manifest, PieceData};
use crate::repo::Repo;

fn chain_ok(repo: &Repo, p: &PieceData, missing: &mut BTreeSet<String>) -> Result<bool> {
    let (obj, stored) = p.data.object();
    let mut ok = match repo.object_size(obj)? {
        Some(sz) => sz == stored,
        None => false,
    };
    if !ok {
        missing.insert(obj.to_string());
    }
    if let Encoding::Delta { base, .. } = &p.data {
        ok &= chain_ok(repo, base, missing)?;
    }
    Ok(ok)
}

/// Check that every object the given items need exists with its recorded size. Returns the
/// items that cannot be restored and the objects missing or of the wrong size.
pub fn incomplete_items(repo: &Repo, items: &[&Item]) -> Result<(Vec<String>, BTreeSet<String>)> {
    let mut bad = Vec::new();
    let mut objects = BTreeSet::new();
    for i in items {
        let mut ok = true;
        for p in &i.pieces {
            ok &= chain_ok(repo, &p.piece, &mut objects)?;
        }
        if !ok {
            bad.push(i.name.clone());
        }
    }
    Ok((bad, objects))
}

/// The snapshot is complete: every object of the restored items, and no gap.
pub fn snapshot_checks(repo: &Repo, m: &Manifest, restored: &[&Item]) -> Result<Vec<Preflight>> {
    let mut checks = Vec::new();
    let (bad, objects) = incomplete_items(repo, restored)?;
    checks.push(if bad.is_empty() {
        Preflight::new(Check::new(
            "snapshot objects",
            CheckStatus::Ok,
            format!("all {} items to restore have their objects", restored.len()),
        ))
    } else {
        Preflight::new(Check::new(
            "snapshot objects",
            CheckStatus::Fail,
            format!(
                "snapshot {} cannot be fully restored: {} objects are missing or truncated, \
                 affecting {} items ({}{}); choose another snapshot (`mnbackup list`, `mnbackup \
                 verify` names the damage)",
                m.id,
                objects.len(),
                bad.len(),
                bad.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if bad.len() > 5 { ", …" } else { "" }
            ),
        ))
        .kind(CheckKind::Integrity)
    });
    // What the snapshot never captured: the restore brings back what there is and says so.
    for g in &m.gaps {
        checks.push(Preflight::new(Check::new(
            "snapshot incomplete",
            CheckStatus::Warn,
            format!(
                "{} (the restore brings back what the snapshot has and ends with exit 10)",
                g.describe()
            ),
        )));
    }
    if !m.complete && m.gaps.is_empty() {
        checks.push(Preflight::new(Check::new(
            "snapshot incomplete",
            CheckStatus::Warn,
            "the snapshot is marked incomplete (no gap recorded)",
        )));
    }
    Ok(checks)
}

/// The service check of `[restore] service_check` (see [`crate::config::RestoreConfig`]).
pub fn service_check(cmd: &str) -> Check {
    if cmd.trim().is_empty() {
        return Check::new(
            "management service",
            CheckStatus::Skipped,
            "not checked ([restore] service_check is empty)",
        );
    }
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Check::new(
                "management service",
                CheckStatus::Warn,
                format!(
                    "could not run `{cmd}` ({e}); make sure ZStack is stopped (`zstack-ctl stop`)"
                ),
            )
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out.status.code();
    if code == Some(127) {
        return Check::new(
            "management service",
            CheckStatus::Ok,
            format!("`{cmd}` is not installed here: no management service to stop"),
        );
    }
    let running = code == Some(0)
        && text.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("running") && !l.contains("not running")
        });
    if running {
        let line = text
            .lines()
            .find(|l| l.to_ascii_lowercase().contains("running"))
            .unwrap_or("")
            .trim()
            .to_string();
        Check::new(
            "management service",
            CheckStatus::Fail,
            format!(
                "`{cmd}` says the service is running ({line}); stop it first (`zstack-ctl \
                 stop`; on an HA pair, on both nodes), or use --force"
            ),
        )
    } else {
        Check::new(
            "management service",
            CheckStatus::Ok,
            format!("not running (`{cmd}` exit {})", code.unwrap_or(-1)),
        )
    }
}

/// Run a `[restore] post_hooks` command.
pub fn run_hook(cmd: &str) -> mnbackup_restore::report::HookReport {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            mnbackup_restore::report::HookReport {
                command: cmd.to_string(),
                exit_code: o.status.code(),
                ok: o.status.success(),
                output: tail,
            }
        }
        Err(e) => mnbackup_restore::report::HookReport {
            command: cmd.to_string(),
            exit_code: None,
            ok: false,
            output: format!("could not start: {e}"),
        },
    }
}
