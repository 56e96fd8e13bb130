//! Identifiers and limits of the repository format, and their validation (no I/O).

use anyhow::Result;

use crate::error::unsafe_content;
use crate::model::PieceData;

/// The largest piece this build accepts from a manifest (a larger declared size is refused as
/// malformed before anything is allocated or written).
pub const MAX_PIECE: u64 = 64 * 1024 * 1024;
/// The largest manifest this build reads (a larger file is refused before it is read).
pub const MAX_MANIFEST: u64 = 64 * 1024 * 1024;
/// The largest marker file.
pub const MAX_MARKER: u64 = 64 * 1024;
/// The largest object file: a piece's zstd frame (or a delta of it) with headroom.
pub const MAX_OBJECT: u64 = 2 * MAX_PIECE + (1 << 20);
/// Hard limit on a delta chain read from a manifest (policy keeps it far lower).
pub const MAX_CHAIN_HARD: u32 = 64;

/// Check that an object id is 64 lowercase hex digits.
pub fn check_object_id(id: &str) -> Result<()> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(unsafe_content(format!(
            "malformed object id `{}` in the repository",
            id.escape_debug()
        )))
    }
}

/// Check a snapshot id: letters, digits and '-' only (it becomes a file name).
pub fn check_snapshot_id(id: &str) -> Result<()> {
    if !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(unsafe_content(format!(
            "malformed snapshot id `{}`",
            id.escape_debug()
        )))
    }
}

/// The one walk over a delta chain: the piece itself, then its base, the base's base, ... down
/// to the full piece. Used by every reader of chains (referenced objects, validation, the
/// writer's intact check).
pub fn chain(p: &PieceData) -> impl Iterator<Item = &PieceData> {
    std::iter::successors(Some(p), |p| match &p.data {
        crate::model::Encoding::Delta { base, .. } => Some(&**base),
        crate::model::Encoding::Full { .. } => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Encoding;

    #[test]
    fn chain_walks_from_the_piece_down_to_the_full_base() {
        let full = PieceData {
            size: 1,
            blake3: "f".into(),
            data: Encoding::Full {
                object: "a".into(),
                stored: 1,
            },
        };
        let d1 = PieceData {
            size: 1,
            blake3: "d".into(),
            data: Encoding::Delta {
                object: "b".into(),
                stored: 1,
                depth: 1,
                base: Box::new(full),
            },
        };
        let objs: Vec<&str> = chain(&d1).map(|p| p.data.object().0).collect();
        assert_eq!(objs, ["b", "a"]);
    }

    #[test]
    fn ids_are_checked() {
        check_object_id(&"a".repeat(64)).unwrap();
        assert!(check_object_id(&"A".repeat(64)).is_err());
        assert!(check_object_id("../x").is_err());
        check_snapshot_id("20261203T093857048Z-0a1b2c3d").unwrap();
        assert!(check_snapshot_id("a/b").is_err());
        assert!(check_snapshot_id("").is_err());
    }
}
