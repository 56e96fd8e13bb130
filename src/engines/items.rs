//! Reading a snapshot's items for a restore, every byte checked: [`RepoItems`] (whole items by
//! name, for the MariaDB loader) and [`ItemReader`] (one item streamed, for SSTables).
//!
//! At the merge with the storage work these become the repository's `repo::reader::ItemReader`.

use std::collections::HashMap;
use std::io::Read;

use crate::engines::mariadb::load::ItemSource;
use anyhow::Result;

use crate::codec::decode_piece;
use crate::error::integrity;
use crate::model::{Item, Manifest};
use crate::reader::read_item;
use crate::repo::Repo;

/// The items of a snapshot under one prefix, read whole and checked (`read_item`).
pub struct RepoItems {
    pub repo: Repo,
    pub items: HashMap<String, Item>,
}

impl RepoItems {
    /// The items of `m` whose names start with `prefix`.
    pub fn with_prefix(repo: &Repo, m: &Manifest, prefix: &str) -> RepoItems {
        RepoItems {
            repo: repo.clone(),
            items: m
                .items
                .iter()
                .filter(|i| i.name.starts_with(prefix))
                .map(|i| (i.name.clone(), i.clone()))
                .collect(),
        }
    }
}

impl ItemSource for RepoItems {
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let item = self.items.get(name).ok_or_else(|| {
            integrity(format!(
                "the snapshot has no item {name}; its manifest is inconsistent"
            ))
        })?;
        read_item(&self.repo, item)
    }
}

/// Streams an item piece by piece (each checked), checking the whole item's BLAKE3 at the end.
pub struct ItemReader {
    repo: Repo,
    item: Item,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    total: u64,
}

impl ItemReader {
    pub fn new(repo: Repo, item: Item) -> ItemReader {
        ItemReader {
            repo,
            item,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            total: 0,
        }
    }
}

impl Read for ItemReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.next == self.item.pieces.len() {
                if self.total != self.item.size
                    || self.hasher.finalize().to_hex().as_str() != self.item.blake3
                {
                    return Err(std::io::Error::other(format!(
                        "item `{}`: the reassembled content does not match its recorded BLAKE3",
                        self.item.name
                    )));
                }
                return Ok(0);
            }
            let p = &self.item.pieces[self.next].piece;
            let b = decode_piece(&self.repo, p, &format!("item `{}`", self.item.name))
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            self.hasher.update(&b);
            self.total += b.len() as u64;
            self.buf = b;
            self.pos = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
