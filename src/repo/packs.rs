//! Packs: small objects stored together, restic-style, so a tree of many small files costs a
//! few file writes instead of four fsyncs and three renames per piece.
//!
//! ```text
//! packs/<xx>/<packid>   the stored bytes of small objects, one after the other, then a trailer
//! index/<packid>        the pack's index (the trailer's text again): id, type, offset, length
//! ```
//! `packid` is the BLAKE3 of the whole pack file. The pack is written first, its index second,
//! both with the store's commit protocol; a writer flushes its pack before the manifest that
//! references it commits. A pack without an index file (an interrupted writer, an interrupted
//! prune) is read through its trailer. Packs are written only when the marker says so
//! (`"packs": true`), and read always. Objects in a pack are the same bytes as a loose object
//! file and are checked by the same function ([`super::objects::check_object`]).
//! `docs/repository-format.md` ("Packs") is the specification.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

use super::leftovers::LiveWriters;
use super::{se, ObjectType, Repo};
use crate::model::check_object_id;
use crate::store::StoreError;

/// The directory of the pack files.
pub const PACKS: &str = "packs";
/// The directory of the pack index files.
pub const INDEX: &str = "index";
/// Objects whose stored bytes are smaller than this go into packs.
pub const PACK_SMALL: usize = 512 * 1024;
/// A pack is written once its objects reach this size.
pub const PACK_TARGET: usize = 4 << 20;
/// The largest index (trailer or file) read: 64 MiB (a pack holds at most a few thousand
/// objects; this is far above).
const MAX_INDEX: u64 = 64 << 20;
const INDEX_HEADER: &str = "mnbackup-pack-index v1";
const TRAILER_MAGIC: &[u8; 4] = b"MNBI";

/// One object of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub id: String,
    pub ty: ObjectType,
    pub offset: u64,
    pub len: u64,
}

/// Where a packed object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub pack: String,
    pub offset: u64,
    pub len: u64,
}

/// The pack index of a repository, as loaded from `index/` (and trailers).
#[derive(Debug, Default, Clone)]
pub struct PackIndex {
    /// Pack id -> its objects.
    pub packs: BTreeMap<String, Vec<PackEntry>>,
    /// Object id -> the packs holding it.
    pub objects: HashMap<String, Vec<Located>>,
    /// Index files whose pack does not exist.
    pub orphan_indexes: Vec<String>,
    /// Packs whose index and trailer are both unusable (left alone; named by prune).
    pub unreadable: Vec<String>,
}

impl PackIndex {
    fn add(&mut self, pack: &str, entries: Vec<PackEntry>) {
        for e in &entries {
            self.objects.entry(e.id.clone()).or_default().push(Located {
                pack: pack.to_string(),
                offset: e.offset,
                len: e.len,
            });
        }
        self.packs.insert(pack.to_string(), entries);
    }
}

/// The objects waiting for the next pack.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
    ids: HashMap<String, usize>,
}

/// The pack state of a repository handle (shared by its clones).
#[derive(Debug, Default)]
pub struct PackState {
    index: Mutex<Option<PackIndex>>,
    pending: Mutex<Pending>,
    /// The packs this handle wrote, in order (a rewrite never removes a pack it wrote).
    written: Mutex<Vec<String>>,
}

/// The key of a pack file.
pub fn pack_key(id: &str) -> Result<String> {
    check_object_id(id)?;
    Ok(format!("{PACKS}/{}/{id}", &id[..2]))
}

/// The key of a pack's index file.
pub fn index_key(id: &str) -> Result<String> {
    check_object_id(id)?;
    Ok(format!("{INDEX}/{id}"))
}

/// The index text: a header line with the BLAKE3 of the entry lines, then one line per object
/// `<id> <F|D|S> <offset> <length>`.
pub fn encode_index(entries: &[PackEntry]) -> Vec<u8> {
    let mut body = String::new();
    for e in entries {
        body.push_str(&format!(
            "{} {} {} {}\n",
            e.id,
            e.ty.byte() as char,
            e.offset,
            e.len
        ));
    }
    let mut out = format!(
        "{INDEX_HEADER} blake3={}\n",
        blake3::hash(body.as_bytes()).to_hex()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Parse and check an index; `data_len` is the size of the pack's object area when known.
pub fn decode_index(bytes: &[u8], data_len: Option<u64>) -> Result<Vec<PackEntry>> {
    let text = std::str::from_utf8(bytes).context("the index is not text")?;
    let (header, body) = text.split_once('\n').context("the index has no header")?;
    let sum = header
        .strip_prefix(INDEX_HEADER)
        .and_then(|h| h.strip_prefix(" blake3="))
        .context("not a pack index header")?;
    if blake3::hash(body.as_bytes()).to_hex().as_str() != sum {
        bail!("the index checksum does not match (changed or truncated)");
    }
    let mut out = Vec::new();
    for line in body.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [id, ty, off, len] = f[..] else {
            bail!("an index line has {} fields", f.len());
        };
        check_object_id(id)?;
        let ty = ty
            .bytes()
            .next()
            .filter(|_| ty.len() == 1)
            .and_then(ObjectType::from_byte)
            .context("an index line has an unknown object type")?;
        let offset: u64 = off.parse().context("an index offset is not a number")?;
        let len: u64 = len.parse().context("an index length is not a number")?;
        let end = offset.checked_add(len);
        if len > crate::model::MAX_OBJECT || end.is_none() {
            bail!("an index entry has an impossible length ({len} bytes at {offset})");
        }
        if data_len.is_some_and(|d| end.is_some_and(|e| e > d)) {
            bail!("an index entry points past the pack's objects");
        }
        out.push(PackEntry {
            id: id.to_string(),
            ty,
            offset,
            len,
        });
    }
    Ok(out)
}

/// A whole pack file: the objects, the index text, its length (u64 LE) and `MNBI`.
pub fn seal_pack(data: &[u8], entries: &[PackEntry]) -> Vec<u8> {
    let index = encode_index(entries);
    let mut out = Vec::with_capacity(data.len() + index.len() + 12);
    out.extend_from_slice(data);
    out.extend_from_slice(&index);
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    out
}

impl Repo {
    /// Whether this repository writes small objects into packs (the marker's `packs`).
    pub fn packs_enabled(&self) -> bool {
        self.config.packs
    }

    /// The pack index, loaded on first use.
    pub fn pack_index(&self) -> Result<MutexGuard<'_, Option<PackIndex>>> {
        let mut g = self.packs.index.lock().unwrap();
        if g.is_none() {
            *g = Some(self.load_pack_index()?);
        }
        Ok(g)
    }

    /// Forget the loaded pack index (after prune changed packs).
    pub fn reload_pack_index(&self) {
        *self.packs.index.lock().unwrap() = None;
    }

    fn load_pack_index(&self) -> Result<PackIndex> {
        let mut idx = PackIndex::default();
        if !self.store.has_dir(PACKS) {
            return Ok(idx);
        }
        self.store.check_dir(PACKS).map_err(se)?;
        let packs: HashMap<String, u64> = self
            .store
            .list(&format!("{PACKS}/"))
            .map_err(se)
            .with_context(|| format!("listing the packs of {}", self.location()))?
            .into_iter()
            .filter_map(|(k, n)| {
                let name = k.rsplit('/').next()?.to_string();
                (check_object_id(&name).is_ok() && pack_key(&name).ok()? == k).then_some((name, n))
            })
            .collect();
        let mut indexed = HashSet::new();
        if self.store.has_dir(INDEX) {
            self.store.check_dir(INDEX).map_err(se)?;
            for (k, _) in self.store.list(&format!("{INDEX}/")).map_err(se)? {
                let name = k[INDEX.len() + 1..].to_string();
                if check_object_id(&name).is_err() {
                    continue;
                }
                if !packs.contains_key(&name) {
                    idx.orphan_indexes.push(name);
                    continue;
                }
                let parsed = self
                    .store
                    .get(&k, MAX_INDEX)
                    .map_err(se)
                    .and_then(|b| decode_index(&b, None));
                match parsed {
                    Ok(entries) => {
                        indexed.insert(name.clone());
                        idx.add(&name, entries);
                    }
                    Err(e) => tracing::warn!(
                        "the index of pack {name} is not usable ({e:#}); reading the pack's \
                         trailer instead"
                    ),
                }
            }
        }
        for (pack, size) in &packs {
            if indexed.contains(pack) {
                continue;
            }
            match self.pack_trailer(pack, *size) {
                Ok(entries) => idx.add(pack, entries),
                Err(e) => {
                    tracing::warn!(
                        "pack {pack} has no usable index ({e:#}); its objects are not used"
                    );
                    idx.unreadable.push(pack.clone());
                }
            }
        }
        Ok(idx)
    }

    /// The index in a pack's trailer.
    pub fn pack_trailer(&self, pack: &str, size: u64) -> Result<Vec<PackEntry>> {
        let key = pack_key(pack)?;
        if size < 12 {
            bail!("the pack is too short for a trailer");
        }
        let tail = self.store.get_range(&key, size - 12, 12).map_err(se)?;
        if tail.len() != 12 || &tail[8..] != TRAILER_MAGIC {
            bail!("the pack has no trailer");
        }
        let n = u64::from_le_bytes(tail[..8].try_into().unwrap());
        if n > MAX_INDEX || n > size - 12 {
            bail!("the pack's trailer length is not valid");
        }
        let data_len = size - 12 - n;
        let text = self.store.get_range(&key, data_len, n).map_err(se)?;
        decode_index(&text, Some(data_len))
    }

    /// Where object `id` is packed (empty: in no pack).
    pub fn locate(&self, id: &str) -> Result<Vec<Located>> {
        Ok(self
            .pack_index()?
            .as_ref()
            .and_then(|i| i.objects.get(id).cloned())
            .unwrap_or_default())
    }

    /// The stored bytes of an object waiting for the next pack of this handle.
    pub(crate) fn pending_object(&self, id: &str) -> Option<Vec<u8>> {
        let p = self.packs.pending.lock().unwrap();
        let e = &p.entries[*p.ids.get(id)?];
        Some(p.bytes[e.offset as usize..(e.offset + e.len) as usize].to_vec())
    }

    /// Whether an object waits for the next pack of this handle.
    pub(crate) fn is_pending(&self, id: &str) -> bool {
        self.packs.pending.lock().unwrap().ids.contains_key(id)
    }

    /// Queue an object's stored bytes for the next pack; writes the pack when it is full.
    pub(crate) fn store_packed(&self, id: &str, ty: ObjectType, bytes: &[u8]) -> Result<()> {
        let mut p = self.packs.pending.lock().unwrap();
        if p.ids.contains_key(id) {
            return Ok(());
        }
        let offset = p.bytes.len() as u64;
        p.bytes.extend_from_slice(bytes);
        let n = p.entries.len();
        p.entries.push(PackEntry {
            id: id.to_string(),
            ty,
            offset,
            len: bytes.len() as u64,
        });
        p.ids.insert(id.to_string(), n);
        if p.bytes.len() >= PACK_TARGET {
            // Written while the pending objects are locked: another thread never finds an
            // object of this pack neither pending nor indexed.
            let full = std::mem::take(&mut *p);
            self.write_pack(full)?;
        }
        Ok(())
    }

    /// Write the pending objects as a pack (and its index). Must run before a manifest that
    /// references them commits.
    pub fn flush_packs(&self) -> Result<()> {
        let mut g = self.packs.pending.lock().unwrap();
        if g.entries.is_empty() {
            return Ok(());
        }
        let p = std::mem::take(&mut *g);
        self.write_pack(p)
    }

    fn write_pack(&self, p: Pending) -> Result<()> {
        let sealed = seal_pack(&p.bytes, &p.entries);
        let id = blake3::hash(&sealed).to_hex().to_string();
        let key = pack_key(&id)?;
        self.store
            .put_replace(&key, &sealed)
            .map_err(se)
            .with_context(|| format!("writing pack {id}"))?;
        self.store
            .put_replace(&index_key(&id)?, &encode_index(&p.entries))
            .map_err(se)
            .with_context(|| format!("writing the index of pack {id}"))?;
        if let Ok(Some(k)) = self.store.stat(&key).map(|m| m.identity) {
            let mut v = self.verified.lock().unwrap();
            for e in &p.entries {
                v.insert(e.id.clone(), k);
            }
        }
        self.packs.written.lock().unwrap().push(id.clone());
        if let Some(idx) = self.packs.index.lock().unwrap().as_mut() {
            idx.add(&id, p.entries);
        }
        Ok(())
    }

    /// Read a packed object's stored bytes (unchecked: the caller checks them).
    pub(crate) fn read_packed(&self, l: &Located) -> std::result::Result<Vec<u8>, StoreError> {
        self.store.get_range(
            &pack_key(&l.pack).map_err(|e| StoreError::Refused(e.to_string()))?,
            l.offset,
            l.len,
        )
    }

    /// The stored size of a packed object: `(true, Some(len))` when a pack holds all of it;
    /// `(false, Some(n))` when its pack is truncated (n bytes left); `(false, None)` when no
    /// pack holding it exists.
    pub(crate) fn packed_size(&self, id: &str) -> Result<(bool, Option<u64>)> {
        let mut truncated = None;
        for l in self.locate(id)? {
            match self.store.stat(&pack_key(&l.pack)?) {
                Ok(m) if m.size >= l.offset + l.len => return Ok((true, Some(l.len))),
                Ok(m) => truncated = Some(m.size.saturating_sub(l.offset)),
                Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Refused(_)) => truncated = Some(0),
                Err(e) => return Err(se(e)),
            }
        }
        Ok((false, truncated))
    }

    /// Whether a packed copy of `id` of `size` bytes exists and holds what its id promises
    /// (checked once per pack identity, as loose objects are).
    pub(crate) fn packed_good(&self, id: &str, size: u64) -> bool {
        let Ok(locs) = self.locate(id) else {
            return false;
        };
        for l in locs.iter().filter(|l| l.len == size) {
            let Ok(key) = pack_key(&l.pack) else { continue };
            let meta = match self.store.stat(&key) {
                Ok(m) if m.size >= l.offset + l.len => m,
                _ => continue,
            };
            if meta.identity.is_some()
                && self.verified.lock().unwrap().get(id) == meta.identity.as_ref()
            {
                return true;
            }
            let good = self
                .read_packed(l)
                .is_ok_and(|b| self.object_bytes_good(id, &b));
            if good {
                if let Some(k) = meta.identity {
                    self.verified.lock().unwrap().insert(id.to_string(), k);
                }
                return true;
            }
        }
        false
    }

    /// Drop objects from their packs: each pack holding one is written again without it (the
    /// other objects, checked, into a new pack), then the old index and pack are removed.
    /// Returns whether anything was removed.
    pub fn unpack_objects(&self, ids: &HashSet<String>) -> Result<bool> {
        let idx = self.pack_index()?.clone().unwrap_or_default();
        let packs: Vec<String> = idx
            .packs
            .iter()
            .filter(|(_, es)| es.iter().any(|e| ids.contains(&e.id)))
            .map(|(p, _)| p.clone())
            .collect();
        if packs.is_empty() {
            return Ok(false);
        }
        let keep = |e: &PackEntry| !ids.contains(&e.id);
        self.rewrite_packs(&idx, &packs, keep)?;
        Ok(true)
    }

    /// Write the objects of `packs` that `keep` selects into new packs, then remove the old
    /// packs (index first, pack last: an interrupted run leaves duplicates or a pack read
    /// through its trailer, never a lost object). A kept object that does not check is kept
    /// where it is (its pack is not removed). Returns the packs removed.
    pub(crate) fn rewrite_packs(
        &self,
        idx: &PackIndex,
        packs: &[String],
        keep: impl Fn(&PackEntry) -> bool,
    ) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let log_start = self.packs.written.lock().unwrap().len();
        for pack in packs {
            let entries = &idx.packs[pack];
            let mut moved = Vec::new();
            let mut ok = true;
            for e in entries.iter().filter(|e| keep(e)) {
                let l = Located {
                    pack: pack.clone(),
                    offset: e.offset,
                    len: e.len,
                };
                match self.read_packed(&l) {
                    Ok(b) if self.object_bytes_good(&e.id, &b) => moved.push((e.clone(), b)),
                    _ => {
                        tracing::warn!(
                            "object {} of pack {pack} does not read back; the pack is kept \
                             (`mnbackup verify --read-data` names what needs it)",
                            e.id
                        );
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                for (e, b) in moved {
                    self.store_packed(&e.id, e.ty, &b)?;
                }
                done.push(pack.clone());
            }
        }
        self.flush_packs()?;
        let written: HashSet<String> = self.packs.written.lock().unwrap()[log_start..]
            .iter()
            .cloned()
            .collect();
        for pack in done.iter().filter(|p| !written.contains(*p)) {
            self.remove_pack(pack)?;
        }
        self.reload_pack_index();
        Ok(done)
    }

    /// Remove a pack: its index first, the pack last.
    pub(crate) fn remove_pack(&self, pack: &str) -> Result<()> {
        for key in [index_key(pack)?, pack_key(pack)?] {
            match self.store.delete(&key) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(se(e)).with_context(|| format!("removing {key}")),
            }
        }
        Ok(())
    }

    /// Prune the packs: remove those whose objects are all unreferenced, rewrite those with
    /// more than half of their bytes unreferenced (the live objects into a new pack), remove
    /// index files without a pack. Packs a live writer may have written are left alone.
    pub fn prune_packs(
        &self,
        keep: &HashSet<String>,
        live: &LiveWriters,
        dry_run: bool,
    ) -> Result<PackPrune> {
        let idx = self.pack_index()?.clone().unwrap_or_default();
        let mut r = PackPrune::default();
        let mut remove = Vec::new();
        let mut repack = Vec::new();
        for (pack, entries) in &idx.packs {
            let total: u64 = entries.iter().map(|e| e.len).sum();
            let unused: u64 = entries
                .iter()
                .filter(|e| !keep.contains(&e.id))
                .map(|e| e.len)
                .sum();
            let n_unused = entries.iter().filter(|e| !keep.contains(&e.id)).count();
            r.objects_total += entries.len();
            if unused == 0 || self.recent(&pack_key(pack)?, live) {
                r.bytes_kept += total;
                continue;
            }
            r.objects_removed += n_unused;
            r.bytes_removed += unused;
            r.bytes_kept += total - unused;
            if unused == total {
                remove.push(pack.clone());
            } else if unused * 2 > total {
                repack.push(pack.clone());
            } else {
                // Mostly used: kept whole until more of it is unused.
                r.objects_removed -= n_unused;
                r.bytes_removed -= unused;
                r.bytes_kept += unused;
            }
        }
        r.packs_removed = remove.len();
        r.packs_repacked = repack.len();
        if dry_run {
            return Ok(r);
        }
        if !repack.is_empty() {
            let written = self.rewrite_packs(&idx, &repack, |e| keep.contains(&e.id))?;
            r.packs_repacked = written.len();
        }
        for pack in &remove {
            self.remove_pack(pack)?;
        }
        for orphan in &idx.orphan_indexes {
            if !self.recent(&index_key(orphan)?, live) {
                let _ = self.store.delete(&index_key(orphan)?);
            }
        }
        self.reload_pack_index();
        Ok(r)
    }
}

/// What [`Repo::prune_packs`] removed (or would remove).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PackPrune {
    pub objects_total: usize,
    pub objects_removed: usize,
    pub bytes_removed: u64,
    pub bytes_kept: u64,
    pub packs_removed: usize,
    pub packs_repacked: usize,
}
