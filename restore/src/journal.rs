//! The restore journal: what an interrupted restore already finished, so that running the same
//! command again completes it without redoing finished work.
//!
//! A JSON file on the local disk (by default `restore-journal.json` beside the daemon's state
//! file, or `--journal PATH`), rewritten atomically (temporary file, fsync, rename, fsync of the
//! directory) after every change. It is keyed by the snapshot id, the target server's address
//! and the database renames: a journal with another key is ignored (and replaced when the new
//! restore starts writing).
//!
//! It records:
//! - `created_databases`: the target databases this restore creates (absent or empty when it
//!   started, or dropped by `--force` after the safety snapshot). A rerun accepts these being
//!   non-empty, and may drop and recreate one whose schema step did not finish;
//! - `steps_done`: finished steps (`mariadb:accounts`, `mariadb:schema:<db>`, …, `files`);
//! - `tables_done`: source tables (`db.table`) all of whose data items are committed. A table
//!   that is not in this set is emptied (`TRUNCATE`) before it is loaded again on a rerun: a
//!   half-loaded table is never reported as done, and MyISAM tables (not transactional) cannot
//!   keep half an item;
//! - `cassandra_tables`: per Cassandra table (`ks.table`) the SSTables this restore placed, the
//!   names it placed them under and whether their load was proven. A table recorded as loaded
//!   is never placed or loaded again on a rerun, even when Cassandra has since compacted the
//!   loaded SSTables away (so the content check would not recognise them);
//! - `binlog_replay`: a point-in-time restore whose base is restored and whose binlog replay
//!   started, with the last applied position (a rerun continues the replay).
//!
//! The journal is removed when the restore succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The journal's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalData {
    pub format: u32,
    pub snapshot: String,
    pub target: String,
    #[serde(default)]
    pub renames: BTreeMap<String, String>,
    pub started: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    #[serde(default)]
    pub created_databases: BTreeSet<String>,
    #[serde(default)]
    pub steps_done: BTreeSet<String>,
    #[serde(default)]
    pub tables_done: BTreeSet<String>,
    /// Tables whose loading started (informational: every table not done is reloaded).
    #[serde(default)]
    pub tables_started: BTreeSet<String>,
    /// Cassandra tables (`ks.table`) this restore placed or loaded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cassandra_tables: BTreeMap<String, JournaledTable>,
    /// The safety snapshot `--force` took, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_snapshot: Option<String>,
    /// A point-in-time restore: the base snapshot is restored and the binlog replay started.
    /// A rerun does not restore the base again; it continues the replay after the last applied
    /// transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_replay: Option<JournaledReplay>,
}

/// The binlog replay of a point-in-time restore (`restore --until`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournaledReplay {
    /// The stop the replay runs to (`--until` / `--until-gtid` as given).
    pub until: String,
    /// The key of the replay's progress row on the target (the target records, in the same
    /// transaction as each replayed one, where the replay stands).
    pub key: String,
    pub started: DateTime<Utc>,
    /// The last transaction known applied (binlog file, end position, GTID, time) when this
    /// journal was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<serde_json::Value>,
}

/// What the restore journal records of one Cassandra table (see `mnbackup::engines::cassandra::restore_journaled`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournaledTable {
    /// The table's live directory it was loaded into.
    pub dir: PathBuf,
    /// The files placed for the load, under the names they were placed under (Cassandra renames
    /// each when it loads it).
    pub placed: Vec<PathBuf>,
    /// Backed-up component name -> the name it was placed under (its free generation).
    pub generations: BTreeMap<String, String>,
    /// The load command ran and its load was proven.
    pub loaded: bool,
    /// The load command.
    pub command: String,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    pub path: PathBuf,
    pub data: JournalData,
    /// The journal existed (same key) when the restore started: this run resumes.
    pub resumed: bool,
}

impl Journal {
    /// Open the journal at `path` for this key: a matching journal resumes, anything else
    /// starts a new one (not written until [`Journal::save`]). Returns the journal and a note
    /// when a non-matching journal was found.
    pub fn open(
        path: &Path,
        snapshot: &str,
        target: &str,
        renames: &BTreeMap<String, String>,
    ) -> Result<(Journal, Option<String>)> {
        let fresh = || JournalData {
            format: 1,
            snapshot: snapshot.to_string(),
            target: target.to_string(),
            renames: renames.clone(),
            started: Utc::now(),
            updated: Utc::now(),
            created_databases: BTreeSet::new(),
            steps_done: BTreeSet::new(),
            tables_done: BTreeSet::new(),
            tables_started: BTreeSet::new(),
            cassandra_tables: BTreeMap::new(),
            safety_snapshot: None,
            binlog_replay: None,
        };
        let mut note = None;
        let existing = match fs::read(path) {
            Ok(b) => match serde_json::from_slice::<JournalData>(&b) {
                Ok(d) => Some(d),
                Err(e) => {
                    note = Some(format!(
                        "the restore journal {} is unreadable ({e}); starting a new one",
                        path.display()
                    ));
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the restore journal {}; check its permissions, or pass \
                         --journal PATH",
                        path.display()
                    )
                })
            }
        };
        if let Some(d) = existing {
            if d.snapshot == snapshot && d.target == target && &d.renames == renames {
                return Ok((
                    Journal {
                        path: path.to_path_buf(),
                        data: d,
                        resumed: true,
                    },
                    None,
                ));
            }
            note = Some(format!(
                "the restore journal {} belongs to an unfinished restore of snapshot {} into {} \
                 (renames {:?}); it does not match this restore and is replaced. That earlier \
                 restore is abandoned: its databases are refused as non-empty unless you use \
                 --force or restore it again with the same arguments",
                path.display(),
                d.snapshot,
                d.target,
                d.renames
            ));
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                data: fresh(),
                resumed: false,
            },
            note,
        ))
    }

    /// Write the journal atomically (temporary file, fsync, rename, fsync directory).
    pub fn save(&mut self) -> Result<()> {
        self.data.updated = Utc::now();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the directory of the restore journal {}; pass --journal PATH to put it \
                 elsewhere",
                dir.display()
            )
        })?;
        let bytes = serde_json::to_vec_pretty(&self.data)?;
        mnbackup_scheduler::durable::write_atomic(&self.path, &bytes).with_context(|| {
            format!(
                "writing the restore journal {} (the local disk may be full or read-only; pass \
                 --journal PATH to put it elsewhere)",
                self.path.display()
            )
        })
    }

    /// Remove the journal (the restore finished).
    pub fn remove(&self) -> Result<()> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }

    /// Whether a step is done.
    pub fn step_done(&self, step: &str) -> bool {
        self.data.steps_done.contains(step)
    }

    /// Mark a step done and save.
    pub fn mark_step(&mut self, step: &str) -> Result<()> {
        if self.data.steps_done.insert(step.to_string()) {
            self.save()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_key() {
        let d = tempfile_dir();
        let p = d.join("j.json");
        let r = BTreeMap::new();
        let (mut j, note) = Journal::open(&p, "s1", "t1", &r).unwrap();
        assert!(note.is_none() && !j.resumed);
        j.data.tables_done.insert("a.b".into());
        j.mark_step("mariadb:accounts").unwrap();
        let (j2, _) = Journal::open(&p, "s1", "t1", &r).unwrap();
        assert!(j2.resumed && j2.step_done("mariadb:accounts"));
        assert!(j2.data.tables_done.contains("a.b"));
        let (j3, note) = Journal::open(&p, "s2", "t1", &r).unwrap();
        assert!(!j3.resumed && note.unwrap().contains("does not match"));
        j2.remove().unwrap();
        assert!(!p.exists());
        let _ = fs::remove_dir_all(d);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mnbackup-journal-test-{}-{}",
            std::process::id(),
            Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }
}
