//! `mnbackup check`: without writing a snapshot, check that the configured credentials and the
//! pool can give a complete one (pgBackRest's `check` is the model). Exit 0 all good, 10 some
//! capability missing (each failing line names the statement that fixes it for this server's
//! version), 1 cannot connect.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Ctx;
use crate::engines::binlog::{check_requirements, Level, RequirementInputs};
use crate::engines::mariadb::probe::{self, Capability};
use crate::error::EXIT_INCOMPLETE;

#[derive(Debug, Serialize)]
struct Line {
    area: &'static str,
    #[serde(flatten)]
    cap: Capability,
}

fn line(area: &'static str, name: &str, ok: bool, detail: String, fix: Vec<String>) -> Line {
    Line {
        area,
        cap: Capability {
            name: name.into(),
            ok,
            detail,
            fix,
        },
    }
}

fn free_bytes(p: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(p).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Try to create and remove a file in `dir`.
fn writable(dir: &Path) -> std::result::Result<(), String> {
    let p = dir.join(format!(".mnbackup-check-{}", std::process::id()));
    std::fs::write(&p, b"check")
        .and_then(|_| std::fs::remove_file(&p))
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

fn pool_lines(ctx: &Ctx, out: &mut Vec<Line>) {
    let path = match ctx.repo_path() {
        Ok(p) => p,
        Err(e) => {
            out.push(line("pool", "repository", false, format!("{e:#}"), vec![]));
            return;
        }
    };
    match ctx.open_repo() {
        Ok(repo) => {
            out.push(line(
                "pool",
                "repository",
                true,
                format!("marker present at {}", repo.location()),
                vec![],
            ));
            // An unencrypted repository is a finding: the pool is usually an NFS export other
            // machines mount (docs/security.md).
            out.push(line(
                "pool",
                "encryption",
                repo.encrypted(),
                repo.encryption_summary(),
                vec![],
            ));
            let probe = format!("tmp/.mnbackup-check-{}", std::process::id());
            let w = repo
                .store()
                .put_replace(&probe, b"check")
                .and_then(|_| repo.store().delete(&probe))
                .map_err(|e| format!("cannot write {}/{probe}: {e}", repo.location()));
            out.push(match w {
                Ok(()) => line("pool", "writable", true, "tmp/ writable".into(), vec![]),
                Err(e) => line(
                    "pool",
                    "writable",
                    false,
                    format!("{e}; check the NFS export (rw, no_root_squash) and the mount"),
                    vec![],
                ),
            });
            match repo.local_root().and_then(free_bytes) {
                Some(n) => out.push(line(
                    "pool",
                    "free space",
                    n >= 1 << 30,
                    format!(
                        "{:.1} GiB free{}",
                        n as f64 / (1u64 << 30) as f64,
                        if n < 1 << 30 {
                            " (under 1 GiB: the next snapshot may not fit; `mnbackup prune` \
                             frees unreferenced objects)"
                        } else {
                            ""
                        }
                    ),
                    vec![],
                )),
                None => out.push(line(
                    "pool",
                    "free space",
                    false,
                    format!("cannot read the free space of {}", repo.location()),
                    vec![],
                )),
            }
        }
        Err(e) => out.push(line(
            "pool",
            "repository",
            false,
            format!(
                "{e:#} (is the pool mounted at {}? `mnbackup init` creates a new one)",
                path.display()
            ),
            vec![],
        )),
    }
    if let Some(cache) = &ctx.config.repository.cache_dir {
        out.push(
            match crate::store::local::create_private_dir_all(cache)
                .map_err(|e| format!("cannot create {}: {e}", cache.display()))
                .and_then(|_| writable(cache))
            {
                Ok(()) => line(
                    "pool",
                    "local cache",
                    true,
                    format!("{} writable", cache.display()),
                    vec![],
                ),
                Err(e) => line("pool", "local cache", false, e, vec![]),
            },
        );
    }
}

fn cassandra_lines(ctx: &Ctx, out: &mut Vec<Line>) {
    let Some(c) = &ctx.config.cassandra else {
        return;
    };
    let mut tools = vec![("nodetool", c.nodetool.argv())];
    if let Some(q) = &c.cqlsh {
        tools.push(("cqlsh", q.argv()));
    }
    for (name, argv) in tools {
        let Some(prog) = argv.first() else { continue };
        let found = if prog.contains('/') {
            Path::new(prog).is_file()
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
                .unwrap_or(false)
        };
        out.push(line(
            "cassandra",
            name,
            found,
            if found {
                format!("{prog} found")
            } else {
                format!("{prog} not found (set [cassandra] {name} to its full path)")
            },
            vec![],
        ));
    }
}

/// With `[binlog]`: the server settings and privileges binlog shipping needs
/// (`engines::binlog::requirements`); a warning passes, with its `my.cnf` line shown.
fn binlog_lines(ctx: &Ctx, out: &mut Vec<Line>) -> Result<()> {
    let (Some(b), Some(m)) = (&ctx.config.binlog, &ctx.config.mariadb) else {
        return Ok(());
    };
    let opts = m.resolve()?.opts()?;
    let inp = RequirementInputs {
        capture_server_id: b.server_id,
        // The follower must be able to catch up after a day of downtime.
        min_retention_seconds: 86_400,
    };
    let rt = super::restore::runtime()?;
    let findings = rt.block_on(async {
        let mut conn = mysql_async::Conn::new(opts).await?;
        check_requirements(&mut conn, &inp).await
    })?;
    for f in findings {
        let detail = match f.level {
            Level::Ok => f.found,
            Level::Warning => format!("{} (warning; works, but set it in my.cnf)", f.found),
            Level::Error => format!("{} (binlog shipping cannot work)", f.found),
        };
        out.push(line(
            "binlog",
            &f.setting,
            f.level != Level::Error,
            detail,
            f.fix.into_iter().collect(),
        ));
    }
    Ok(())
}

pub fn run(ctx: &Ctx) -> Result<i32> {
    let mut lines = Vec::new();
    let mut server = None;
    if let Some(cfg) = &ctx.config.mariadb {
        let rt = super::restore::runtime()?;
        let p = rt.block_on(probe::probe(cfg)).map_err(|e| {
            e.context("mnbackup check cannot connect to MariaDB with the configured credentials")
        })?;
        server = Some(serde_json::json!({
            "address": p.address, "version": p.version, "account": p.account
        }));
        for cap in p.capabilities {
            lines.push(Line {
                area: "mariadb",
                cap,
            });
        }
        if !ctx.json {
            ctx.say(format!(
                "MariaDB {} at {} as {}:",
                p.version, p.address, p.account
            ));
        }
    }
    binlog_lines(ctx, &mut lines)?;
    pool_lines(ctx, &mut lines);
    cassandra_lines(ctx, &mut lines);
    let missing = lines.iter().filter(|l| !l.cap.ok).count();
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": missing == 0, "server": server, "checks": lines
            }))?
        );
    } else {
        for l in &lines {
            ctx.say(format!(
                "  [{}] {} {}: {}",
                if l.cap.ok { "ok  " } else { "FAIL" },
                l.area,
                l.cap.name,
                l.cap.detail
            ));
            for f in &l.cap.fix {
                ctx.say(format!("         fix: {f}"));
            }
        }
        if missing == 0 {
            ctx.say("all checks passed: a snapshot now would be complete");
        } else {
            let fixes: Vec<&String> = lines.iter().flat_map(|l| l.cap.fix.iter()).collect();
            ctx.say(format!(
                "{missing} check(s) failed: a snapshot now would be incomplete (exit 10).{}",
                if fixes.is_empty() {
                    String::new()
                } else {
                    format!(
                        " Run as root (`mariadb -u root -p`):\n{}",
                        fixes
                            .iter()
                            .map(|f| format!("  {f}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    )
                }
            ));
        }
    }
    Ok(if missing == 0 { 0 } else { EXIT_INCOMPLETE })
}
