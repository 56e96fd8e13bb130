//! The snapshot writer: the [`ItemSink`] that turns what sources hand over into objects and,
//! at the end, one committed manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::error::unsafe_content;
use crate::model::{EntryKind, Gap, Item, Manifest, Piece, PieceData, SnapshotStats};
use crate::model::{ItemSink, ItemSpec};
use crate::repo::codec::{check_item_name, encode_piece, CodecPolicy, SigCache};
use crate::repo::{InProgress, Repo};

/// Receives progress: bytes of plain content processed, and the item being stored.
pub trait Progress: Send + Sync {
    fn item(&self, name: &str);
    fn bytes(&self, n: u64);
}

/// A snapshot being written. Not visible to anyone until [`SnapshotWriter::commit`].
pub struct SnapshotWriter {
    repo: Repo,
    policy: CodecPolicy,
    cache: SigCache,
    pub id: String,
    started: DateTime<Utc>,
    clock: Instant,
    parent_id: Option<String>,
    parent_items: HashMap<String, Item>,
    known: Mutex<HashMap<String, Piece>>,
    items: Mutex<Vec<Item>>,
    names: Mutex<HashSet<String>>,
    sources: Mutex<BTreeMap<String, serde_json::Value>>,
    gaps: Mutex<Vec<Gap>>,
    /// The components this run takes (its series with the host; see [`SnapshotWriter::component`]).
    components: Mutex<std::collections::BTreeSet<String>>,
    stats: Mutex<SnapshotStats>,
    new_objects: Mutex<Vec<String>>,
    /// Objects checked by [`SnapshotWriter::piece_intact`] (id -> present with its size).
    checked: Mutex<HashMap<String, bool>>,
    in_progress: InProgress,
    progress: Option<Box<dyn Progress>>,
    processed: AtomicU64,
    /// Storing into the pool failed (out of space, I/O on the pool, ...): the whole snapshot
    /// must abort, whatever source was writing.
    pool_failed: std::sync::atomic::AtomicBool,
    /// The parent's source infos (see [`ItemSink::parent_source_info`]).
    parent_sources: BTreeMap<String, serde_json::Value>,
}

/// A new snapshot id: UTC time to the millisecond plus 8 random hex digits, so ids sort by
/// time. `after` (the newest existing id) keeps ids increasing even if the clock went back.
pub fn new_snapshot_id(now: DateTime<Utc>, after: Option<&str>) -> String {
    let mut t = now;
    // After a clock step back, start just after the newest id's time at once (stepping 1 ms at
    // a time through an hour took seconds).
    if let Some(prev) = after
        .and_then(|a| a.get(..18))
        .and_then(|p| chrono::NaiveDateTime::parse_from_str(p, "%Y%m%dT%H%M%S%3f").ok())
        .map(|p| p.and_utc())
    {
        if t <= prev {
            t = prev + chrono::Duration::milliseconds(1);
        }
    }
    loop {
        let id = format!(
            "{}Z-{:08x}",
            t.format("%Y%m%dT%H%M%S%3f"),
            rand::random::<u32>()
        );
        match after {
            Some(a) if id.as_str() <= a => t += chrono::Duration::milliseconds(1),
            _ => return id,
        }
    }
}

impl SnapshotWriter {
    /// Start a snapshot whose delta parent is `parent` (normally the latest snapshot).
    pub fn new(
        mut repo: Repo,
        policy: CodecPolicy,
        cache: SigCache,
        parent: Option<Manifest>,
        progress: Option<Box<dyn Progress>>,
    ) -> Result<Self> {
        let started = Utc::now();
        let newest = repo.snapshot_ids()?.pop();
        let id = new_snapshot_id(started, newest.as_deref());
        // Objects `verify` recorded as damaged are written again when this run has their content.
        repo.rewrite = std::sync::Arc::new(Mutex::new(repo.damaged_objects()?));
        // Objects this node checked or wrote before and that did not change since are not
        // read again when reused.
        repo.verified = Default::default();
        if let Some(f) = cache.verified_file() {
            repo.load_verified(&f);
        }
        let in_progress = repo.mark_in_progress(&id)?;
        let mut known = HashMap::new();
        let mut parent_items = HashMap::new();
        let parent_id = parent.as_ref().map(|p| p.id.clone());
        let parent_sources = parent
            .as_ref()
            .map(|p| p.sources.clone())
            .unwrap_or_default();
        if let Some(p) = parent {
            for item in p.items {
                for piece in &item.pieces {
                    known.insert(piece.piece.blake3.clone(), piece.clone());
                }
                parent_items.insert(item.name.clone(), item);
            }
        }
        Ok(SnapshotWriter {
            repo,
            policy,
            cache,
            id,
            started,
            clock: Instant::now(),
            parent_id,
            parent_items,
            known: Mutex::new(known),
            items: Mutex::new(Vec::new()),
            names: Mutex::new(HashSet::new()),
            sources: Mutex::new(BTreeMap::new()),
            gaps: Mutex::new(Vec::new()),
            components: Mutex::default(),
            stats: Mutex::new(SnapshotStats::default()),
            new_objects: Mutex::new(Vec::new()),
            checked: Mutex::new(HashMap::new()),
            in_progress,
            progress,
            processed: AtomicU64::new(0),
            pool_failed: std::sync::atomic::AtomicBool::new(false),
            parent_sources,
        })
    }

    fn claim_name(&self, name: &str) -> Result<()> {
        check_item_name(name)?;
        if !self.names.lock().unwrap().insert(name.to_string()) {
            return Err(unsafe_content(format!(
                "two items are named `{name}` in one snapshot (check overlapping [[files]] paths)"
            )));
        }
        Ok(())
    }

    fn record(&self, item: Item) {
        let mut st = self.stats.lock().unwrap();
        st.items += 1;
        st.logical_bytes += item.size;
        drop(st);
        self.items.lock().unwrap().push(item);
    }

    /// True once storing into the pool failed (not reading from a source): the snapshot cannot
    /// be committed.
    pub fn pool_failed(&self) -> bool {
        self.pool_failed.load(Ordering::SeqCst)
    }

    /// Leave out everything a failed source stored: its items (names under `prefix`) and its
    /// source info. Returns how many items were dropped. Their objects stay in the pool until
    /// a prune (the next snapshot may reuse them).
    pub fn forget_source(&self, source: &str, prefix: &str) -> usize {
        let mut items = self.items.lock().unwrap();
        let before = items.len();
        let mut dropped_bytes = 0;
        items.retain(|i| {
            let keep = !i.name.starts_with(prefix);
            if !keep {
                dropped_bytes += i.size;
            }
            keep
        });
        let n = before - items.len();
        drop(items);
        self.names
            .lock()
            .unwrap()
            .retain(|n| !n.starts_with(prefix));
        self.sources.lock().unwrap().remove(source);
        let mut st = self.stats.lock().unwrap();
        st.items -= n as u64;
        st.logical_bytes -= dropped_bytes;
        n
    }

    /// Record that component `name` is part of this snapshot (its series: a component that
    /// failed and left a gap still counts).
    pub fn component(&self, name: &str) {
        self.components.lock().unwrap().insert(name.to_string());
    }

    /// Tie the in-progress record to the lock this run holds: while that lock file exists and
    /// its holder is not certainly gone, `prune` keeps every object newer than this run's start
    /// (see [`Repo::clean_leftovers`]).
    pub fn bind_lock(&self, lock: &crate::repo::lock::Lock) -> Result<()> {
        match lock.key() {
            Some(k) => self.in_progress.note_lock(k),
            None => Ok(()),
        }
    }

    /// Plain bytes processed so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Commit the manifest: from here on the snapshot exists.
    pub fn commit(self, hostname: String, trigger: String, tags: Vec<String>) -> Result<Manifest> {
        // Every object the manifest references is stored before it commits.
        self.repo.flush_packs()?;
        let mut items = self.items.into_inner().unwrap();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        let mut stats = self.stats.into_inner().unwrap();
        stats.duration_ms = self.clock.elapsed().as_millis() as u64;
        let gaps = self.gaps.into_inner().unwrap();
        let components = self.components.into_inner().unwrap().into_iter().collect();
        let mut m = Manifest {
            format: self.repo.config.version,
            id: self.id.clone(),
            time: self.started,
            finished: Utc::now(),
            hostname,
            components,
            trigger,
            tags,
            parent: self.parent_id.clone(),
            items,
            sources: self.sources.into_inner().unwrap(),
            stats,
            complete: gaps.is_empty(),
            gaps,
        };
        crate::repo::codec::validate_manifest(&m)?;
        // `bytes_added` counts the manifest itself: it is written to the pool like any object.
        // Its size depends on the number, so settle the fixed point (the digits change at most
        // a few times).
        let objects_added = m.stats.bytes_added;
        for _ in 0..8 {
            let len = self.repo.encode_manifest_file(&m)?.len() as u64;
            if m.stats.manifest_bytes == len {
                break;
            }
            m.stats.manifest_bytes = len;
            m.stats.bytes_added = objects_added + len;
        }
        self.repo.commit_manifest(&m)?;
        self.in_progress.remove();
        if let Some(f) = self.cache.verified_file() {
            self.repo.save_verified(&f);
        }
        Ok(m)
    }

    /// Abandon the snapshot: remove the in-progress marker only. The objects this run added
    /// stay: another writer running at the same time may have found them present and
    /// reference them; `prune` (under the exclusive lock) removes those no snapshot needs.
    /// Returns the number of objects this run added (left for prune).
    pub fn abort(self) -> Result<usize> {
        let n = self.new_objects.into_inner().unwrap().len();
        self.in_progress.remove();
        Ok(n)
    }

    /// Whether every object a stored piece needs (its data and, for a delta, the whole base
    /// chain) exists with its recorded size and is not recorded as damaged. A piece that fails
    /// is not reused: its content is stored anew from the source.
    fn piece_intact(&self, p: &PieceData) -> bool {
        crate::model::chain(p).all(|c| {
            let (obj, stored) = c.data.object();
            let mut checked = self.checked.lock().unwrap();
            *checked
                .entry(obj.to_string())
                .or_insert_with(|| self.repo.object_good(obj, stored))
        })
    }

    /// A stored piece made safe to build on: None when its data is not intact; its signature
    /// dropped when that is not intact (the signature is then computed again).
    fn usable(&self, p: &Piece) -> Option<Piece> {
        if !self.piece_intact(&p.piece) {
            return None;
        }
        let mut p = p.clone();
        if let (Some(sig), Some(size)) = (&p.sig, p.sig_size) {
            let ok = {
                let mut checked = self.checked.lock().unwrap();
                *checked
                    .entry(sig.clone())
                    .or_insert_with(|| self.repo.object_good(sig, size))
            };
            if !ok {
                p.sig = None;
                p.sig_size = None;
            }
        }
        Some(p)
    }

    /// Snapshot statistics so far.
    pub fn stats(&self) -> SnapshotStats {
        self.stats.lock().unwrap().clone()
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl ItemSink for SnapshotWriter {
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn Read) -> Result<()> {
        self.claim_name(&spec.name)?;
        if let Some(p) = &self.progress {
            p.item(&spec.name);
        }
        let cfg = &self.repo.config;
        let parent = self.parent_items.get(&spec.name);
        let mut whole = blake3::Hasher::new();
        let mut pieces = Vec::new();
        let mut size = 0u64;
        // Content-defined chunking over a bounded window: memory is at most two maximum-size
        // pieces whatever the item's size.
        let max = cfg.chunk_max as usize;
        let mut buf = vec![0u8; max];
        let mut filled = 0usize;
        let mut eof = false;
        loop {
            if !eof && filled < max {
                let n = read_full(reader, &mut buf[filled..])
                    .with_context(|| format!("reading {}", spec.name))?;
                if filled + n < max {
                    eof = true;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let cut = if eof && filled <= cfg.chunk_min as usize {
                filled
            } else {
                let mut cdc = fastcdc::v2020::FastCDC::new(
                    &buf[..filled],
                    cfg.chunk_min,
                    cfg.chunk_avg,
                    cfg.chunk_max,
                );
                match cdc.next() {
                    Some(c) if c.length < filled || eof => c.length,
                    _ => filled,
                }
            };
            let chunk = &buf[..cut];
            whole.update(chunk);
            let hash = blake3::hash(chunk).to_hex().to_string();
            let idx = pieces.len();
            // Stored pieces are built on only when their objects are intact (a cheap size
            // check); a damaged one is stored anew from the source.
            let base = parent
                .and_then(|p: &Item| p.pieces.get(idx))
                .and_then(|b| self.usable(b));
            let base = base.as_ref();
            let reuse = {
                let same_pos = base.filter(|b| b.piece.blake3 == hash).cloned();
                let known = || {
                    let k = self.known.lock().unwrap().get(&hash).cloned();
                    k.and_then(|k| self.usable(&k))
                };
                same_pos.or_else(known)
            };
            let want_sig = spec.delta && self.policy.delta;
            let (piece, cost) = encode_piece(
                &self.repo,
                &self.policy,
                &self.cache,
                crate::repo::codec::PieceInput {
                    plain: chunk,
                    plain_hash: &hash,
                    want_sig,
                    reuse: reuse.as_ref(),
                    base,
                },
            )
            .inspect_err(|_| self.pool_failed.store(true, Ordering::SeqCst))
            .with_context(|| format!("storing {}", spec.name))?;
            {
                let mut st = self.stats.lock().unwrap();
                st.bytes_added += cost.bytes_added;
                st.signature_bytes_added += cost.signature_bytes;
                st.objects_added += cost.objects_added;
                if cost.unchanged {
                    st.pieces_unchanged += 1;
                } else if cost.delta {
                    st.pieces_delta += 1;
                } else {
                    st.pieces_full += 1;
                }
            }
            if !cost.new_objects.is_empty() {
                self.in_progress
                    .record(&cost.new_objects)
                    .with_context(|| format!("storing {}", spec.name))?;
                let mut checked = self.checked.lock().unwrap();
                for id in &cost.new_objects {
                    checked.insert(id.clone(), true);
                }
                drop(checked);
                self.new_objects.lock().unwrap().extend(cost.new_objects);
            }
            {
                // The objects of the piece just stored are present (written or checked).
                let mut checked = self.checked.lock().unwrap();
                checked.insert(piece.piece.data.object().0.to_string(), true);
                if let Some(sig) = &piece.sig {
                    checked.insert(sig.clone(), true);
                }
            }
            // The newest stored form wins: it replaces a damaged one found earlier.
            self.known.lock().unwrap().insert(hash, piece.clone());
            size += cut as u64;
            self.processed.fetch_add(cut as u64, Ordering::Relaxed);
            if let Some(p) = &self.progress {
                p.bytes(cut as u64);
            }
            pieces.push(piece);
            buf.copy_within(cut..filled, 0);
            filled -= cut;
        }
        self.record(Item {
            name: spec.name,
            kind: EntryKind::File,
            meta: spec.meta,
            target: None,
            size,
            blake3: whole.finalize().to_hex().to_string(),
            pieces,
        });
        Ok(())
    }

    fn put_entry(&self, spec: ItemSpec) -> Result<()> {
        if spec.kind == EntryKind::File {
            return self.put_bytes(spec, &[]);
        }
        self.claim_name(&spec.name)?;
        self.record(Item {
            name: spec.name,
            kind: spec.kind,
            meta: spec.meta,
            target: spec.target,
            size: 0,
            blake3: blake3::hash(b"").to_hex().to_string(),
            pieces: Vec::new(),
        });
        Ok(())
    }

    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.sources
            .lock()
            .unwrap()
            .insert(source.to_string(), info);
    }

    fn retract(&self, name: &str) -> bool {
        let mut items = self.items.lock().unwrap();
        let Some(pos) = items.iter().position(|i| i.name == name) else {
            return false;
        };
        let item = items.remove(pos);
        drop(items);
        self.names.lock().unwrap().remove(name);
        let mut st = self.stats.lock().unwrap();
        st.items = st.items.saturating_sub(1);
        st.logical_bytes = st.logical_bytes.saturating_sub(item.size);
        true
    }

    fn gap(&self, gap: Gap) {
        tracing::warn!("gap: {}", gap.describe());
        self.gaps.lock().unwrap().push(gap);
    }

    fn parent_source_info(&self, source: &str) -> Option<serde_json::Value> {
        self.parent_sources.get(source).cloned()
    }

    fn put_unchanged(&self, spec: ItemSpec, size: u64) -> Result<bool> {
        let Some(prev) = self.parent_items.get(&spec.name) else {
            return Ok(false);
        };
        if prev.kind != EntryKind::File || prev.size != size {
            return Ok(false);
        }
        // Reused only when every piece's data is still intact in the repository (the same
        // check a delta parent gets): a damaged or missing object makes the caller read the
        // content again, so a snapshot that succeeds is always restorable.
        let mut pieces = Vec::with_capacity(prev.pieces.len());
        for p in &prev.pieces {
            match self.usable(p) {
                Some(p) => pieces.push(p),
                None => return Ok(false),
            }
        }
        self.claim_name(&spec.name)?;
        if let Some(p) = &self.progress {
            p.item(&spec.name);
        }
        {
            let mut st = self.stats.lock().unwrap();
            st.pieces_unchanged += prev.pieces.len() as u64;
        }
        let mut item = prev.clone();
        item.pieces = pieces;
        item.meta = spec.meta;
        self.record(item);
        Ok(true)
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;

    /// Issue 14 item 1: after the clock stepped back an hour, the next id still sorts after the
    /// newest one, at once (it used to step 1 ms at a time through the hour).
    #[test]
    fn ids_stay_increasing_after_a_clock_step_back() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T09:38:57.048Z")
            .unwrap()
            .with_timezone(&Utc);
        let newest = new_snapshot_id(now, None);
        assert!(newest.starts_with("20261203T093857048Z-"), "{newest}");
        let start = std::time::Instant::now();
        let id = new_snapshot_id(now - chrono::Duration::hours(1), Some(&newest));
        assert!(start.elapsed() < std::time::Duration::from_millis(50));
        assert!(id.as_str() > newest.as_str(), "{id} {newest}");
        assert!(id.starts_with("20261203T093857049Z-"), "{id}");
        // A normal, later time is kept as it is.
        let later = new_snapshot_id(now + chrono::Duration::seconds(5), Some(&newest));
        assert!(later.starts_with("20261203T093902048Z-"), "{later}");
    }
}
