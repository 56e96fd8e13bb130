//! Reading items back: every piece is reconstructed and checked against its BLAKE3 before a
//! single byte of it is handed on, so a damaged object gives an error naming the item, never
//! wrong bytes.

use std::io::Write;

use anyhow::{Context, Result};

use crate::codec::decode_piece;
use crate::error::integrity;
use crate::model::{Item, Manifest};
use crate::repo::Repo;

/// Find an item by name in a manifest.
pub fn find_item<'a>(m: &'a Manifest, name: &str) -> Result<&'a Item> {
    let name = name.trim_start_matches('/');
    m.items.iter().find(|i| i.name == name).ok_or_else(|| {
        crate::error::usage(format!(
            "snapshot {} has no item `{name}`; `mnbackup show {}` lists its items",
            m.id, m.id
        ))
    })
}

/// Write an item's plain content to `out`, piece by piece, each checked before it is written;
/// the whole item's BLAKE3 is checked at the end. Returns the number of bytes written.
pub fn write_item(repo: &Repo, item: &Item, out: &mut dyn Write) -> Result<u64> {
    let mut whole = blake3::Hasher::new();
    let mut n = 0u64;
    for p in &item.pieces {
        let bytes = decode_piece(repo, &p.piece, &format!("item `{}`", item.name))?;
        whole.update(&bytes);
        out.write_all(&bytes)
            .with_context(|| format!("writing the content of `{}`", item.name))?;
        n += bytes.len() as u64;
    }
    if n != item.size || whole.finalize().to_hex().as_str() != item.blake3 {
        return Err(integrity(format!(
            "item `{}`: the reassembled content does not match the item's recorded BLAKE3; the \
             manifest is inconsistent",
            item.name
        )));
    }
    Ok(n)
}

/// Read an item fully into memory (for small items: SQL pieces, schema files).
pub fn read_item(repo: &Repo, item: &Item) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(item.size.min(64 << 20) as usize);
    write_item(repo, item, &mut v)?;
    Ok(v)
}
