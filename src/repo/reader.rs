//! Reading items back: [`ItemReader`] pulls an item's content piece by piece; every piece is
//! reconstructed and checked against its BLAKE3 before a single byte of it is handed on, and the
//! whole item's BLAKE3 is checked at the end, so a damaged object gives an error naming the
//! item, never wrong bytes.

use std::collections::HashMap;
use std::io::{Read, Write};

use anyhow::{Context, Result};

use crate::error::integrity;
use crate::model::{Item, ItemSource, ItemsByName, Manifest};
use crate::repo::codec::decode_piece;
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

/// An item's plain content as a stream ([`Read`]); pieces are decoded one at a time, so memory
/// stays at one piece whatever the item's size.
///
/// As a `Read`, a failure is an `io::Error`; [`ItemReader::take_error`] gives back the typed
/// error (whose kind decides the exit code). [`ItemReader::next_piece`] returns it directly.
pub struct ItemReader<'a> {
    repo: &'a Repo,
    item: &'a Item,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    whole: blake3::Hasher,
    total: u64,
    error: Option<anyhow::Error>,
}

impl<'a> ItemReader<'a> {
    pub fn new(repo: &'a Repo, item: &'a Item) -> Self {
        ItemReader {
            repo,
            item,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            whole: blake3::Hasher::new(),
            total: 0,
            error: None,
        }
    }

    /// The next piece's checked bytes, None at the end (after the whole item's check).
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>> {
        let item = self.item;
        let Some(p) = item.pieces.get(self.next) else {
            if self.next == item.pieces.len() {
                self.next += 1;
                if self.total != item.size || self.whole.finalize().to_hex().as_str() != item.blake3
                {
                    return Err(integrity(format!(
                        "item `{}`: the reassembled content does not match the item's recorded \
                         BLAKE3; the manifest is inconsistent",
                        item.name
                    )));
                }
            }
            return Ok(None);
        };
        let bytes = decode_piece(self.repo, &p.piece, &format!("item `{}`", item.name))?;
        self.next += 1;
        self.whole.update(&bytes);
        self.total += bytes.len() as u64;
        Ok(Some(bytes))
    }

    /// The typed error behind the last `io::Error` of [`Read::read`].
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take()
    }
}

impl Read for ItemReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_piece() {
                Ok(Some(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => {
                    let msg = format!("{e:#}");
                    self.error = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ItemSource for Repo {
    fn open_item<'a>(&'a self, item: &'a Item) -> Result<Box<dyn Read + Send + 'a>> {
        Ok(Box::new(ItemReader::new(self, item)))
    }
}

/// Write an item's plain content to `out`, piece by piece, each checked before it is written;
/// the whole item's BLAKE3 is checked at the end. Returns the number of bytes written.
pub fn write_item(repo: &Repo, item: &Item, out: &mut dyn Write) -> Result<u64> {
    let mut r = ItemReader::new(repo, item);
    let mut n = 0u64;
    while let Some(bytes) = r.next_piece()? {
        out.write_all(&bytes)
            .with_context(|| format!("writing the content of `{}`", item.name))?;
        n += bytes.len() as u64;
    }
    Ok(n)
}

/// Read an item fully into memory (for small items: SQL pieces, schema files).
pub fn read_item(repo: &Repo, item: &Item) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(item.size.min(64 << 20) as usize);
    write_item(repo, item, &mut v)?;
    Ok(v)
}

/// The items of a snapshot under one prefix, each read whole and checked ([`read_item`]).
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

impl ItemsByName for RepoItems {
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let item = self.items.get(name).ok_or_else(|| {
            integrity(format!(
                "the snapshot has no item {name}; its manifest is inconsistent"
            ))
        })?;
        read_item(&self.repo, item)
    }
}
