//! `mnbackup restore [SNAPSHOT|latest]`: rebuild the node from a snapshot — MariaDB, files,
//! Cassandra — and prove it with the recorded row fingerprints.
//!
//! The disaster scenario: Server 1 is dead; on new hardware the operator installs the OS,
//! MariaDB (and Cassandra / ZStack packages), mounts the pool and runs this one command.
//!
//! # What happens, in order
//!
//! 1. **Preflight** (all of it also runs for `--plan`, which changes nothing): the snapshot is
//!    complete (every object its restored items need exists with its recorded size); the target
//!    MariaDB answers and is not older than the source (a downgrade is a warning); the target
//!    databases (after `--rename-db`) are absent or empty — otherwise the restore is refused
//!    (exit 2) unless `--force`; when the live `zstack` database would be replaced, ZStack's
//!    `check_restore_mysql` comparison of `VolumeEO.installPath` (refused unless `--force` when
//!    volumes moved since the snapshot); enough free space under `--files-root`; the management
//!    service is stopped (`[restore] service_check`, see [`crate::config::RestoreConfig`]).
//! 2. `--force` with something to replace: a **safety snapshot** of what is replaced (the
//!    target's non-empty databases, and files that would be overwritten; trigger `safety`, tag
//!    `pre-restore`), then the databases are dropped.
//! 3. MariaDB: accounts, schema, data (parallel), routines, views, triggers, events, grants,
//!    AUTO_INCREMENT counters (`crate::engines::mariadb::load`), then the row fingerprint of every
//!    table is compared with the snapshot's.
//! 4. `--disable-vm-ha`: ZStack's VM HA switched off in `GlobalConfigVO` (as `restore_mysql`).
//! 5. Files under `--files-root` (default `/`); an existing different file is kept as
//!    `NAME.pre-restore` (replaced with `--force`), identical ones (size, mtime, mode) are left.
//! 6. Cassandra SSTables, with the `[cassandra]` configuration.
//! 7. `[restore] post_hooks` (e.g. `zstack-ctl start`), only when everything matched.
//!
//! # Resuming
//!
//! Progress is journaled (see `mnbackup_restore::journal`) in `restore-journal.json` beside the
//! daemon's state file, or `--journal PATH`. Running the same command again after an
//! interruption skips what finished and reloads the tables that were not complete.
//!
//! # Exit codes
//!
//! 0 restored and every table matches; 9 restored but a table does not match its fingerprint;
//! 2 refused by a preflight check (the message says what to do) or bad usage; 5 a damaged or
//! missing item (nothing of its table was loaded); 7 not enough space; 1 anything else.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::Ctx;
use crate::cli::RestoreArgs;
use crate::engines::RestoreRequest;
use crate::error::{usage, EXIT_INCOMPLETE};
use crate::ops::restore::{RestoreSession, RunResult};
use crate::ui::StepProgress;

pub use crate::engines::mariadb::component::runtime;

/// Parse `--rename-db FROM=TO` options.
pub fn parse_renames(list: &[String]) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    let mut targets = BTreeSet::new();
    for r in list {
        let Some((a, b)) = r.split_once('=') else {
            return Err(usage(format!(
                "--rename-db {r}: expected FROM=TO, e.g. --rename-db zstack=zstack_old"
            )));
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() || b.is_empty() || b.len() > 64 {
            return Err(usage(format!(
                "--rename-db {r}: both names must be given, and TO at most 64 characters"
            )));
        }
        if ["mysql", "information_schema", "performance_schema", "sys"].contains(&b) {
            return Err(usage(format!("--rename-db {r}: {b} is a system database")));
        }
        if m.insert(a.to_string(), b.to_string()).is_some() || !targets.insert(b.to_string()) {
            return Err(usage(format!(
                "--rename-db {r}: each database may be renamed once, to a distinct name"
            )));
        }
    }
    Ok(m)
}

/// The use case's request for these options.
fn request(ctx: &Ctx, args: &RestoreArgs) -> Result<RestoreRequest> {
    let mut skip = BTreeSet::new();
    for (no, name) in [
        (args.no_mariadb, "mariadb"),
        (args.no_files, "files"),
        (args.no_cassandra, "cassandra"),
        (args.no_prometheus, "prometheus"),
    ] {
        if no {
            skip.insert(name.to_string());
        }
    }
    Ok(RestoreRequest {
        plan: args.plan,
        force: args.force,
        skip,
        mariadb_target: Some(args.target.config(ctx.config.mariadb.as_ref())),
        renames: parse_renames(&args.rename_db)?,
        with_accounts: args.with_accounts,
        replace_local_root: args.replace_local_root,
        rebuild: args.rebuild,
        rebuild_skip_binlog: args.rebuild_skip_binlog,
        skip_events: false,
        disable_vm_ha: args.disable_vm_ha,
        workers: args.workers,
        // Half of `[limits] memory` for the checked items; the rest is the loader's connections
        // and the item being converted.
        memory_budget: args
            .memory_budget_mib
            .map_or(ctx.config.limits.memory() / 2, |m| m.max(1) << 20),
        files_root: args.files_root.clone(),
        after_drill_load: None,
    })
}

fn print_out(ctx: &Ctx, text: &str, json: &serde_json::Value) -> Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(json)?);
    } else if !ctx.quiet {
        print!("{text}");
    }
    Ok(())
}

pub fn run(ctx: &Ctx, args: &RestoreArgs) -> Result<i32> {
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry)?;
    let journal = args
        .journal
        .clone()
        .unwrap_or_else(|| ctx.config.daemon.state_dir.join("restore-journal.json"));
    let pitr = match super::binlog::parse_until(args.until.as_deref(), args.until_gtid.as_deref())?
    {
        Some(u) => Some(super::binlog::plan(ctx, &u)?),
        None => None,
    };
    let spec = pitr
        .as_ref()
        .map_or_else(|| args.snapshot.clone(), |p| p.base.id.clone());
    if let Some(host) = &args.host {
        return run_for_host(ctx, args, &env, &journal, host);
    }
    let mut session = crate::ops::restore::open(&env, request(ctx, args)?, &spec, &journal)?;
    let jhandle = session.journal();
    let replaying = jhandle.lock().expect("journal").data.binlog_replay.clone();
    let until_text = args
        .until_gtid
        .clone()
        .or_else(|| args.until.clone())
        .unwrap_or_default();
    if let (Some(p), Some(jr)) = (&pitr, &replaying) {
        // The base is restored and its replay started: continue the replay only.
        if jr.until != until_text {
            return Err(usage(format!(
                "a point-in-time restore of snapshot {} to {} is in progress on this target                  (journal {}); rerun it with the same --until to finish it, or remove the                  journal and restore with --force",
                session.id,
                jr.until,
                journal.display()
            )));
        }
        if args.plan {
            print_out(
                ctx,
                &format!(
                    "resumes the point-in-time restore: base snapshot {} is restored, the binlog                      replay continues after the last transaction the target recorded\n{}",
                    session.id,
                    super::binlog::plan_text(p)
                ),
                &serde_json::json!({"resume": true}),
            )?;
            return Ok(0);
        }
        let target = replay_target(ctx, args, restored_databases(&session.manifest))?;
        drop(session);
        let (text, code) =
            super::binlog::replay_after_restore(&env, p, target, &jhandle, &until_text);
        print_out(ctx, &text, &serde_json::json!({"replay_exit_code": code}))?;
        return Ok(code);
    }
    session.keep_journal = pitr.is_some();
    let checks = session.preflight()?;
    if args.plan {
        let extra = pitr
            .as_ref()
            .map(super::binlog::plan_text)
            .unwrap_or_default();
        return print_plan(ctx, &session, &checks, &extra);
    }
    if let Some(e) = session.refusal(&checks, &spec) {
        return Err(e);
    }
    let gaps: Vec<String> = session.manifest.gaps.iter().map(|g| g.describe()).collect();
    let id = session.id.clone();
    let progress = StepProgress::new(ctx.quiet, ctx.json);
    let databases = restored_databases(&session.manifest);
    let mut r = session.run(&checks, &progress)?;
    progress.finish();
    let mut text = outcome_text(ctx, &id, &gaps, &r);
    if let Some(p) = &pitr {
        if r.report.exit_code == 0 || r.report.exit_code == EXIT_INCOMPLETE {
            let target = replay_target(ctx, args, databases)?;
            let (t, code) =
                super::binlog::replay_after_restore(&env, p, target, &jhandle, &until_text);
            text.push_str(&t);
            if code != 0 {
                r.report.exit_code = code;
                r.report.ok = false;
            }
        } else {
            text.push_str("the binlog was not replayed: the snapshot restore did not succeed\n");
        }
    }
    print_out(ctx, &text, &serde_json::to_value(&r.report)?)?;
    Ok(r.report.exit_code)
}

/// `restore --host NODE`: restore each snapshot [`crate::ops::cluster::rebuild_picks`] picks
/// (the shared data, then the node's own files), each with only its components, one after the
/// other; the exit code is the first failing one's (0 when all succeed).
fn run_for_host(
    ctx: &Ctx,
    args: &RestoreArgs,
    env: &crate::ops::Env,
    journal: &std::path::Path,
    host: &str,
) -> Result<i32> {
    if args.snapshot != "latest" {
        return Err(usage(format!(
            "--host {host} restores the newest snapshots of that node; it cannot be combined with              a snapshot id ({})",
            args.snapshot
        )));
    }
    let nodes = ctx
        .config
        .cluster
        .as_ref()
        .map(|c| c.nodes.clone())
        .unwrap_or_default();
    let picks = crate::ops::cluster::rebuild_picks(&env.repo, host, &nodes)?;
    let names: Vec<String> = env.registry.iter().map(|c| c.name().to_string()).collect();
    let mut code = 0;
    let mut reports = Vec::new();
    for (i, pick) in picks.iter().enumerate() {
        let mut req = request(ctx, args)?;
        req.skip.extend(
            names
                .iter()
                .filter(|n| !pick.components.contains(*n))
                .cloned(),
        );
        if pick.components.iter().all(|c| req.skip.contains(c)) {
            continue;
        }
        let what: Vec<&str> = pick.components.iter().map(String::as_str).collect();
        if !ctx.quiet && !ctx.json {
            println!(
                "rebuilding node {host}: {} from snapshot {} (taken by node {})",
                what.join(", "),
                pick.snapshot,
                pick.host
            );
        }
        // Each part has its own journal, so an interrupted rebuild resumes either part.
        let jpath = if i == 0 {
            journal.to_path_buf()
        } else {
            journal.with_extension(format!("part{i}.json"))
        };
        let mut session = crate::ops::restore::open(env, req, &pick.snapshot, &jpath)?;
        let checks = session.preflight()?;
        if args.plan {
            let c = print_plan(ctx, &session, &checks, "")?;
            code = if code == 0 { c } else { code };
            continue;
        }
        if let Some(e) = session.refusal(&checks, &pick.snapshot) {
            return Err(e);
        }
        let gaps: Vec<String> = session.manifest.gaps.iter().map(|g| g.describe()).collect();
        let id = session.id.clone();
        let progress = StepProgress::new(ctx.quiet, ctx.json);
        let r = session.run(&checks, &progress)?;
        progress.finish();
        let text = outcome_text(ctx, &id, &gaps, &r);
        if !ctx.json && !ctx.quiet {
            print!("{text}");
        }
        reports.push(serde_json::to_value(&r.report)?);
        if code == 0 {
            code = r.report.exit_code;
        }
        if r.report.exit_code != 0 && r.report.exit_code != EXIT_INCOMPLETE {
            break;
        }
    }
    if ctx.json && !args.plan {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "host": host, "restores": reports })
            )?
        );
    }
    Ok(code)
}

/// How the binlog replay reaches the restore's target.
fn replay_target(
    ctx: &Ctx,
    args: &RestoreArgs,
    databases: Option<Vec<String>>,
) -> Result<crate::ops::binlog::ReplayTarget> {
    let params = args.target.config(ctx.config.mariadb.as_ref()).resolve()?;
    Ok(crate::ops::binlog::ReplayTarget {
        client_args: crate::ops::binlog::client_args(&params),
        password: params.password.clone(),
        databases,
        rename: parse_renames(&args.rename_db)?.into_iter().collect(),
        progress: None,
        resume_from: None,
    })
}

/// `--plan`: the plan, each component's detail, the warnings; exit 2 when it would not proceed.
fn print_plan(
    ctx: &Ctx,
    session: &RestoreSession,
    checks: &[crate::engines::Preflight],
    extra: &str,
) -> Result<i32> {
    let view = session.plan(checks)?;
    let mut text = view.plan.to_string();
    text.push_str(&view.detail_text);
    text.push_str(extra);
    for w in &view.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    let mut json = serde_json::Map::new();
    json.insert("plan".into(), serde_json::to_value(&view.plan)?);
    for (name, v) in view.details {
        json.insert(name, v);
    }
    json.insert("warnings".into(), serde_json::to_value(&view.warnings)?);
    print_out(ctx, &text, &serde_json::Value::Object(json))?;
    Ok(if view.would_proceed { 0 } else { 2 })
}

/// The databases a snapshot's MariaDB part restores (`None`: unknown, replay all).
fn restored_databases(m: &crate::model::Manifest) -> Option<Vec<String>> {
    let v = m.sources.get("mariadb")?.clone();
    let info: crate::model::mariadb_info::MariadbInfo = serde_json::from_value(v).ok()?;
    let mut names: Vec<String> = info
        .point
        .databases
        .iter()
        .chain(info.extra_points.iter().flat_map(|p| p.databases.iter()))
        .map(|d| d.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// The report, then what the operator does now.
fn outcome_text(ctx: &Ctx, id: &str, gaps: &[String], r: &RunResult) -> String {
    let report = &r.report;
    let mut text = report.to_string();
    if r.mismatch {
        text.push_str(
            "RESTORE DOES NOT MATCH THE SNAPSHOT: the tables above differ. Do not start the \
             management service on this data. Rerun the same command to reload the mismatched \
             tables; if they still differ, restore an older snapshot.\n",
        );
    } else if report.exit_code == EXIT_INCOMPLETE {
        text.push_str(&format!(
            "restore INCOMPLETE: every restored table matches snapshot {id}, but the snapshot \
             itself is incomplete, so this server lacks:\n"
        ));
        for g in gaps {
            text.push_str(&format!("  - {g}\n"));
        }
        text.push_str(
            "Restore what is missing by hand (e.g. recreate the accounts and routines from \
             another source) before starting the management node, or restore a complete \
             snapshot (`mnbackup list` shows which are).\n",
        );
    } else if report.ok {
        text.push_str(&format!(
            "restore complete: every table matches snapshot {id}{}\n",
            if ctx.config.restore.post_hooks.is_empty() {
                ". Start the management node now (`zstack-ctl start`)"
            } else {
                ""
            }
        ));
    }
    for f in &r.failures {
        text.push_str(&format!("error: {f}\n"));
    }
    text
}
