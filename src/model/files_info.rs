//! The `files` entry of a manifest's `sources` (written by the files backup), and the encoding
//! of file names (bytes on Linux) in item names and symlink targets.
//!
//! Part of repository format v1 (`docs/repository-format.md`): the JSON this struct serialises
//! to is byte for byte what earlier versions wrote.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

use crate::model::FileMeta;

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
    /// Files recorded as unchanged since the parent snapshot, without reading them (absent
    /// when 0, so older manifests read the same).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
    /// Item name → the file's [`FileStat`] when it was stored: the next snapshot reuses a file
    /// whose size, mtime, ctime and inode all match, without reading it (absent when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stat: BTreeMap<String, FileStat>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What tells an unchanged file (restic's rule): `[size, mtime_ns, ctime_ns, inode]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat(pub u64, pub i64, pub i64, pub u64);

/// Content that is unsafe to place (a path leaving the root, a symlink escaping it, a path
/// through a symlink): the snapshot's manifest is malformed or hostile. Callers map it to their
/// "unsafe content" error; nothing was written for it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unsafe(pub String);

/// The [`FileMeta`] of an entry from its `stat` (owner names resolved through the user
/// database when possible). Shared by the files and Cassandra backups.
pub fn file_meta(md: &std::fs::Metadata) -> FileMeta {
    let user = nix::unistd::User::from_uid(md.uid().into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let group = nix::unistd::Group::from_gid(md.gid().into())
        .ok()
        .flatten()
        .map(|g| g.name);
    FileMeta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        user,
        group,
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
    }
}

/// Encode file-name (or symlink-target) bytes for a manifest: valid UTF-8 is kept, a backslash
/// becomes `\\`, every byte that is not part of valid UTF-8 becomes `\xHH`. Names on Linux are
/// bytes; this keeps them exactly and [`decode_name`] gives them back.
pub fn encode_name(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Decode [`encode_name`]'s form. Only `\\` and `\xHH` with HH >= 0x80 are escapes (so `/`,
/// `.` and NUL can never be hidden in one); anything else after a backslash is refused.
pub fn decode_name(s: &str) -> anyhow::Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) if v >= 0x80 => out.push(v),
                    _ => return Err(malformed(s)),
                }
                i += 4;
            }
            _ => return Err(malformed(s)),
        }
    }
    Ok(out)
}

fn malformed(s: &str) -> anyhow::Error {
    Unsafe(format!(
        "refusing name `{}`: malformed escape; the manifest is malformed or hostile, nothing \
         was written",
        s.escape_debug()
    ))
    .into()
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
