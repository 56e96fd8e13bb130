//! The `files` entry of a manifest's `sources` (written by the files backup).
//!
//! Part of repository format v1 (`docs/repository-format.md`): the JSON this struct serialises
//! to is byte for byte what earlier versions wrote.

use serde::{Deserialize, Serialize};

/// What the files source did: the `files` entry of a manifest's `sources`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Configured paths that matched nothing.
    pub missing: Vec<String>,
    /// Entries skipped (sockets, devices, unreadable), with the reason.
    pub skipped: Vec<String>,
    /// Files that changed while they were read.
    pub changed_during_read: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sources.files` section as a v1 manifest holds it, parsed and written again: the same
    /// bytes.
    #[test]
    fn source_info_reserialises_to_v1_bytes() {
        let v1 = r#"{"files":3,"dirs":2,"symlinks":1,"bytes":4096,"missing":["/etc/zstack/ha.yaml"],"skipped":["/run/x.sock: socket"],"changed_during_read":["/var/log/a"]}"#;
        let info: FilesSummary = serde_json::from_str(v1).unwrap();
        assert_eq!(info.files, 3);
        assert_eq!(serde_json::to_string(&info).unwrap(), v1);
    }
}
