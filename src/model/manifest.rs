//! The snapshot manifest (`snapshots/<id>.json`), its statistics and its gaps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Item;

/// Totals recorded when a snapshot is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub items: u64,
    /// Sum of the plain sizes of all items.
    pub logical_bytes: u64,
    /// Bytes this snapshot wrote to the pool: new objects (data, deltas, signatures) and its own
    /// manifest.
    pub bytes_added: u64,
    /// Of `bytes_added`, the bytes of new signature objects.
    pub signature_bytes_added: u64,
    pub objects_added: u64,
    /// Size of this snapshot's manifest file (included in `bytes_added`; 0 in manifests written
    /// before it was counted).
    #[serde(default)]
    pub manifest_bytes: u64,
    pub pieces_unchanged: u64,
    pub pieces_delta: u64,
    pub pieces_full: u64,
    pub duration_ms: u64,
}

/// Something a snapshot run could not capture: recorded in the manifest, reported by `snapshot`
/// (exit 10), `list`, `show`, `status` and `restore`. A gap is never silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The source that could not capture it: `mariadb`, `cassandra`, `files`, ...
    pub source: String,
    /// What kind of thing is missing, e.g. `routines`, `accounts`, `grants`, `events`,
    /// `consistency`, `table`, `sstable`, `file`, `source` (the whole source).
    pub kind: String,
    /// Which one, when the gap is about a single thing (a table, a file, an SSTable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Why it could not be captured (the server's or the system's own words).
    pub reason: String,
    /// What an operator does to close it (e.g. the exact GRANT to run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Gap {
    pub fn new(source: &str, kind: &str, reason: impl Into<String>) -> Self {
        Gap {
            source: source.into(),
            kind: kind.into(),
            subject: None,
            reason: reason.into(),
            fix: None,
        }
    }
    pub fn subject(mut self, s: impl Into<String>) -> Self {
        self.subject = Some(s.into());
        self
    }
    pub fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = Some(f.into());
        self
    }
    /// One line for an operator: `mariadb routines (zstack.foo): reason — fix: ...`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.source, self.kind);
        if let Some(sub) = &self.subject {
            s.push_str(&format!(" ({sub})"));
        }
        s.push_str(&format!(": {}", self.reason));
        if let Some(f) = &self.fix {
            s.push_str(&format!(" -- fix: {f}"));
        }
        s
    }
}

fn default_true() -> bool {
    true
}

/// A committed snapshot: `snapshots/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub time: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// The host whose series this snapshot belongs to (the system host name, or `[repository]
    /// host` / `snapshot --host`). `latest`, the delta parent, `forget` and `list --host` work per
    /// host.
    pub hostname: String,
    /// The components (sources) this snapshot was taken of, e.g. `["files", "mariadb"]`: with the
    /// host, its series. Absent in manifests written before it was recorded: then
    /// [`Manifest::components`] derives it from the items' first name component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// `manual`, or `schedule:<job name>`, or `safety` (taken by restore --force).
    pub trigger: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub items: Vec<Item>,
    /// Per-source metadata (e.g. `mariadb`: versions, binlog position, row fingerprints).
    #[serde(default)]
    pub sources: BTreeMap<String, serde_json::Value>,
    pub stats: SnapshotStats,
    /// False when any source could not capture everything it should have (see `gaps`).
    /// Manifests written before this field existed read as complete.
    #[serde(default = "default_true")]
    pub complete: bool,
    /// What this snapshot lacks, one entry per gap; empty when `complete`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<Gap>,
}

impl Manifest {
    /// The host of the snapshot's series.
    pub fn host(&self) -> &str {
        &self.hostname
    }

    /// The components of the snapshot's series: as recorded, or (older manifests) the first
    /// component of each item's name and the sources' names.
    pub fn components(&self) -> std::collections::BTreeSet<String> {
        if !self.components.is_empty() {
            return self.components.iter().cloned().collect();
        }
        let items = self
            .items
            .iter()
            .map(|i| i.name.split('/').next().unwrap_or_default().to_string());
        items
            .chain(self.sources.keys().cloned())
            .filter(|c| !c.is_empty())
            .collect()
    }

    /// Whether this snapshot is of the same series (host and components) as `other`.
    pub fn same_series(&self, host: &str, components: &std::collections::BTreeSet<String>) -> bool {
        self.hostname == host && &self.components() == components
    }
}

/// How `forget` groups snapshots before applying a retention policy (as restic's `--group-by`):
/// each group keeps its own newest snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub components: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            components: false,
        }
    }
}

impl GroupBy {
    /// `host`, `components`, `host,components` (either order) or `none` / empty.
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        let mut g = GroupBy {
            host: false,
            components: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "components" => g.components = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "unknown group `{other}`; use host, components, host,components or none"
                    ))
                }
            }
        }
        Ok(g)
    }

    /// The group a snapshot belongs to.
    pub fn key(&self, m: &Manifest) -> String {
        let mut k = String::new();
        if self.host {
            k.push_str(m.host());
        }
        if self.components {
            let c: Vec<String> = m.components().into_iter().collect();
            k.push('\n');
            k.push_str(&c.join(","));
        }
        k
    }

    /// The group's name for messages (`host node-a`, `components files`).
    pub fn describe(&self, m: &Manifest) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host {}", m.host()));
        }
        if self.components {
            let c: Vec<String> = m.components().into_iter().collect();
            parts.push(format!("components {}", c.join(",")));
        }
        parts.join(", ")
    }
}
