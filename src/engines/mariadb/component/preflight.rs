//! The MariaDB preflight checks: renamed routines, the target server (version,
//! max_allowed_packet), the target databases (absent or empty), ZStack's volume paths.

use crate::engines::mariadb::load::{self as rm, Target};
use crate::engines::mariadb::plan::{target_db, ItemKind, MariadbSource};
use anyhow::{Context, Result};
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{Check, CheckStatus};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::{ours, MariadbPart, PREFIX};
use crate::engines::{Preflight, RestoreEnv};
use crate::repo::reader::read_item;
use crate::repo::reader::RepoItems;

/// All MariaDB checks, in order.
pub(super) fn run(
    part: &mut MariadbPart,
    env: &RestoreEnv,
    journal: &Journal,
) -> Result<Vec<Preflight>> {
    let mut checks = renamed_routines(part, env);
    let t = part.target.clone();
    let src = part.src.clone();
    let ours = ours(journal);
    let target_dbs = part.target_dbs(&env.req.renames);
    let mut version = None;
    let mut to_replace = Vec::new();
    let r: Result<()> = part.rt.block_on(async {
        let mut c = rm::connect(&t, "checking the target").await?;
        let v = rm::server_version(&mut c).await?;
        version = Some(v.clone());
        checks.push(match rm::version_warning(&src.version, &v) {
            Some(w) => Check::new("target version", CheckStatus::Warn, w),
            None => Check::new(
                "target version",
                CheckStatus::Ok,
                format!(
                    "{} reachable, {v} (snapshot from {})",
                    t.address, src.version
                ),
            ),
        });
        if let Some(ch) = packet_check(&mut c, &t, &src, env.req.plan).await? {
            checks.push(ch);
        }
        let states = rm::database_states(&mut c, &target_dbs).await?;
        let nonempty: Vec<&rm::DbState> = states
            .iter()
            .filter(|s| !s.is_empty() && !ours.contains(&s.name))
            .collect();
        to_replace = nonempty.iter().map(|s| s.name.clone()).collect();
        checks.push(databases_check(&t, env, &target_dbs, &states, &nonempty));
        // ZStack's check_restore_mysql: volumes moved since the snapshot?
        let live = target_db(&env.req.renames, "zstack").to_string();
        let replaces_live =
            src.databases.iter().any(|d| d == "zstack") && nonempty.iter().any(|s| s.name == live);
        if replaces_live {
            checks.push(volume_paths(&t, &src, env, &live).await?);
        }
        c.disconnect().await.ok();
        Ok(())
    });
    part.target_version = version;
    part.to_replace = to_replace;
    if let Err(e) = r {
        checks.push(Check::new(
            "target MariaDB",
            CheckStatus::Fail,
            format!("{e:#}"),
        ));
    }
    Ok(checks.into_iter().map(Preflight::new).collect())
}

/// Routines that still name a renamed database in a string literal.
fn renamed_routines(part: &MariadbPart, env: &RestoreEnv) -> Vec<Check> {
    let mut checks = Vec::new();
    for si in part
        .src
        .items
        .iter()
        .filter(|i| i.kind == ItemKind::Routines)
    {
        let Some((db, to)) = si
            .db
            .as_ref()
            .and_then(|d| env.req.renames.get(d).map(|t| (d, t)))
        else {
            continue;
        };
        // An unreadable item is reported by the objects check.
        let Some(text) = part
            .items
            .iter()
            .find(|i| i.name == si.name)
            .and_then(|i| read_item(env.repo, i).ok())
        else {
            continue;
        };
        if let Some(n) = rm::schema_literal_note(&text, db, to) {
            checks.push(Check::new("renamed routines", CheckStatus::Warn, n));
        }
    }
    checks
}

/// The largest statement must fit the target's max_allowed_packet.
async fn packet_check(
    c: &mut Conn,
    t: &Target,
    src: &MariadbSource,
    plan: bool,
) -> Result<Option<Check>> {
    let Some((table, &need)) = src.max_statement.iter().max_by_key(|(_, v)| **v) else {
        return Ok(None);
    };
    let have: Option<u64> = c
        .query_first("SELECT @@GLOBAL.max_allowed_packet")
        .await
        .context("reading the target's max_allowed_packet")?;
    let have = have.unwrap_or(0);
    // Room for the protocol header; the server wants a multiple of 1024.
    let want = (need + 64 * 1024).div_ceil(1024) * 1024;
    if need + 1024 <= have {
        return Ok(Some(Check::new(
            "max_allowed_packet",
            CheckStatus::Ok,
            format!("{have} bytes; the largest statement is {need} bytes ({table})"),
        )));
    }
    if want > 1 << 30 {
        return Ok(Some(Check::new(
            "max_allowed_packet",
            CheckStatus::Fail,
            format!(
                "the largest statement ({table}, {need} bytes) exceeds MariaDB's 1 GiB limit of \
                 max_allowed_packet; load that table by hand (`mnbackup export`) with smaller \
                 rows per INSERT"
            ),
        )));
    }
    // Setting the current value again proves the privilege without a change.
    let sql = if plan {
        "SET GLOBAL max_allowed_packet = @@GLOBAL.max_allowed_packet".to_string()
    } else {
        format!("SET GLOBAL max_allowed_packet = {want}")
    };
    Ok(Some(match c.query_drop(sql).await {
        Ok(()) => Check::new(
            "max_allowed_packet",
            CheckStatus::Warn,
            format!(
                "{} the target's max_allowed_packet from {have} to {want} bytes (SET GLOBAL) for \
                 the largest statement ({table}, {need} bytes); it lasts until the server \
                 restarts: set max_allowed_packet = {want} in my.cnf to keep it",
                if plan { "would raise" } else { "raised" }
            ),
        ),
        Err(e) => Check::new(
            "max_allowed_packet",
            CheckStatus::Fail,
            format!(
                "the largest statement ({table}, {need} bytes) exceeds the target's \
                 max_allowed_packet ({have} bytes) and {} may not raise it ({e}); run as root \
                 `SET GLOBAL max_allowed_packet = {want};` (and set it in my.cnf), then restore \
                 again",
                t.user
            ),
        ),
    }))
}

/// The target databases are absent or empty (or --force replaces them).
fn databases_check(
    t: &Target,
    env: &RestoreEnv,
    target_dbs: &[String],
    states: &[rm::DbState],
    nonempty: &[&rm::DbState],
) -> Check {
    if nonempty.is_empty() {
        let resumed: Vec<&str> = states
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        return Check::new(
            "target databases",
            CheckStatus::Ok,
            if resumed.is_empty() {
                format!("{} absent or empty", target_dbs.join(", "))
            } else {
                format!(
                    "{} absent or empty; {} partly restored by the interrupted run (the journal \
                     says so)",
                    target_dbs.join(", "),
                    resumed.join(", ")
                )
            },
        );
    }
    let list = nonempty
        .iter()
        .map(|s| format!("{} ({} tables, {} routines)", s.name, s.tables, s.routines))
        .collect::<Vec<_>>()
        .join(", ");
    if env.req.force {
        Check::new(
            "target databases",
            CheckStatus::Warn,
            format!(
                "not empty: {list}; --force: they are saved in a safety snapshot, then dropped \
                 and replaced"
            ),
        )
    } else {
        Check::new(
            "target databases",
            CheckStatus::Fail,
            format!(
                "not empty on {}: {list}. Refusing to overwrite them. Restore beside them with \
                 --rename-db DB=NEWNAME, or replace them with --force (a safety snapshot of them \
                 is taken first)",
                t.address
            ),
        )
    }
}

/// ZStack's `check_restore_mysql`: compare `VolumeEO.installPath` with the live database.
async fn volume_paths(
    t: &Target,
    src: &MariadbSource,
    env: &RestoreEnv<'_>,
    live: &str,
) -> Result<Check> {
    if env.req.plan {
        return Ok(Check::new(
            "volume paths",
            CheckStatus::Skipped,
            format!(
                "the comparison of VolumeEO.installPath with the live {live} runs at restore \
                 time (it needs a scratch database; --plan changes nothing)"
            ),
        ));
    }
    let items = RepoItems::with_prefix(env.repo, env.manifest, PREFIX);
    let vc = rm::volume_check(t, src, &items, "zstack", live).await?;
    Ok(match (&vc.skipped, vc.moved.is_empty()) {
        (Some(why), _) => Check::new("volume paths", CheckStatus::Skipped, why.clone()),
        (None, true) => Check::new(
            "volume paths",
            CheckStatus::Ok,
            format!(
                "{} volumes compared, none moved since the snapshot",
                vc.compared
            ),
        ),
        (None, false) => {
            let list = vc
                .moved
                .iter()
                .take(10)
                .map(|(u, a, b)| {
                    format!(
                        "{u}: {} -> now {}",
                        a.as_deref().unwrap_or("NULL"),
                        b.as_deref().unwrap_or("NULL")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Check::new(
                "volume paths",
                if env.req.force {
                    CheckStatus::Warn
                } else {
                    CheckStatus::Fail
                },
                format!(
                    "{} of {} volumes moved since the snapshot ({list}); the restored database \
                     would point at old locations. Use a newer snapshot, or --force and fix the \
                     paths afterwards",
                    vc.moved.len(),
                    vc.compared
                ),
            )
        }
    })
}
