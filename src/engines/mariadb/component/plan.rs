//! The MariaDB plan steps.

use std::collections::BTreeSet;

use crate::engines::mariadb::plan::{target_db, ItemKind, MariadbSource};
use mnbackup_restore::journal::Journal;
use mnbackup_restore::plan::{estimate_secs, PlanStep, FINGERPRINT_RATE, SQL_LOAD_RATE};

use super::MariadbPart;
use crate::engines::RestoreEnv;

const KINDS: [ItemKind; 8] = [
    ItemKind::Accounts,
    ItemKind::Schema,
    ItemKind::Data,
    ItemKind::Routines,
    ItemKind::Views,
    ItemKind::Triggers,
    ItemKind::Events,
    ItemKind::Grants,
];

/// The steps: one per item kind, the AUTO_INCREMENT counters, the fingerprints, VM HA.
pub(super) fn steps(part: &MariadbPart, env: &RestoreEnv, journal: &Journal) -> Vec<PlanStep> {
    let s = &part.src;
    let t = &part.target;
    let req = env.req;
    let mut steps = Vec::new();
    if req.rebuild {
        steps.push(PlanStep {
            step: "mariadb rebuild mode".into(),
            what: format!(
                "innodb_flush_log_at_trx_commit = 0 and sync_binlog = 0 for the load, set back                  afterwards (also after a failure){}; a server crash during the load loses its                  last commits: run the restore again",
                if req.rebuild_skip_binlog {
                    "; the load skips the binlog (sql_log_bin = 0): replicas do not get it"
                } else {
                    ""
                }
            ),
            destination: format!("MariaDB {} as {}", t.address, t.user),
            items: 2,
            bytes: 0,
            rows: None,
            estimate_secs: 0,
            skipped: None,
        });
    }
    for kind in KINDS {
        let items: Vec<_> = s.items.iter().filter(|i| i.kind == kind).collect();
        if items.is_empty() {
            continue;
        }
        let bytes: u64 = items.iter().map(|i| i.size).sum();
        let rows: u64 = items.iter().filter_map(|i| i.rows).sum();
        let skipped = match kind {
            ItemKind::Accounts | ItemKind::Grants if !MariadbPart::with_accounts(req) => {
                Some("--rename-db without --with-accounts".to_string())
            }
            ItemKind::Data => {
                let tables: BTreeSet<String> = items.iter().filter_map(|i| i.table_key()).collect();
                (journal.resumed && tables.iter().all(|k| journal.data.tables_done.contains(k)))
                    .then(|| "done by the interrupted run".to_string())
            }
            _ => (journal.resumed
                && items
                    .iter()
                    .all(|i| journal.step_done(&format!("mariadb:{}:{}", kind.as_str(), i.name))))
            .then(|| "done by the interrupted run".to_string()),
        };
        let what = what(part, env, kind, &items);
        steps.push(PlanStep {
            step: format!("mariadb {}", kind.as_str()),
            what,
            destination: format!("MariaDB {} as {}", t.address, t.user),
            items: items.len(),
            bytes,
            rows: (kind == ItemKind::Data).then_some(rows),
            estimate_secs: estimate_secs(bytes, SQL_LOAD_RATE),
            skipped,
        });
    }
    steps.extend(final_steps(s, &t.address, env));
    steps
}

/// What a step of one item kind loads.
fn what(
    part: &MariadbPart,
    env: &RestoreEnv,
    kind: ItemKind,
    items: &[&crate::engines::mariadb::plan::SqlItem],
) -> String {
    let s = &part.src;
    let renames = &env.req.renames;
    match kind {
        ItemKind::Data => format!(
            "rows of {} tables ({} parallel connections)",
            items
                .iter()
                .filter_map(|i| i.table_key())
                .collect::<BTreeSet<_>>()
                .len(),
            MariadbPart::workers(env)
        ),
        ItemKind::Schema => {
            let dbs = s
                .databases
                .iter()
                .map(|d| {
                    let to = target_db(renames, d);
                    if to == d {
                        d.clone()
                    } else {
                        format!("{d} as {to}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("databases and tables: {dbs}")
        }
        ItemKind::Accounts if !s.accounts.is_empty() => {
            let list: Vec<String> = s
                .accounts
                .iter()
                .map(|a| {
                    let local = a
                        .rsplit_once('@')
                        .is_some_and(|(u, h)| u == "root" && h == "localhost");
                    if local && !env.req.replace_local_root {
                        format!("{a} (kept as it is on the target; --replace-local-root)")
                    } else {
                        a.clone()
                    }
                })
                .collect();
            format!("accounts: {}", list.join(", "))
        }
        k => k.as_str().to_string(),
    }
}

/// The steps after the load: counters, fingerprints, VM HA.
fn final_steps(s: &MariadbSource, address: &str, env: &RestoreEnv) -> Vec<PlanStep> {
    let data = s.bytes_of(ItemKind::Data);
    let mut steps = vec![
        PlanStep {
            step: "mariadb auto_increment".into(),
            what: format!("{} AUTO_INCREMENT counters", s.auto_increment.len()),
            destination: address.to_string(),
            items: s.auto_increment.len(),
            bytes: 0,
            rows: None,
            estimate_secs: 1,
            skipped: None,
        },
        PlanStep {
            step: "mariadb fingerprints".into(),
            what: format!(
                "row fingerprints of {} tables compared with the snapshot",
                s.fingerprints.len()
            ),
            destination: address.to_string(),
            items: s.fingerprints.len(),
            bytes: data,
            rows: Some(s.fingerprints.values().map(|f| f.rows).sum()),
            estimate_secs: estimate_secs(data, FINGERPRINT_RATE),
            skipped: None,
        },
    ];
    if env.req.disable_vm_ha {
        steps.push(PlanStep {
            step: "disable VM HA".into(),
            what: "GlobalConfigVO ha.enable = false".into(),
            destination: target_db(&env.req.renames, "zstack").to_string(),
            items: 1,
            bytes: 0,
            rows: None,
            estimate_secs: 0,
            skipped: None,
        });
    }
    steps
}
