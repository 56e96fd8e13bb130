//! Verify: prove the backups restore (the use case; `commands/verify.rs` prints it).
//!
//! - structure (default, fast): every manifest parses and matches its checksum, every object it
//!   needs exists with the recorded size, every delta's base and signature exist, chains are
//!   within policy;
//! - `--read-data [--subset N/M | P%]`: also read every object (or a subset), check its hash,
//!   and reconstruct every piece whose data lies in the subset, checking its BLAKE3;
//! - `--drill [SNAPSHOT]`: restore the MariaDB items into scratch databases and compare every
//!   table's row fingerprint (see `drill`).
//!
//! Each damaged or missing object is reported with every snapshot and item that depends on it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::Result;
use serde::Serialize;

use crate::error::{EXIT_INTEGRITY, EXIT_MISSING};
use crate::model::{Encoding, Manifest, PieceData};
use crate::ops::progress::Progress;
use crate::repo::codec::decode_piece;
use crate::repo::{ObjectType, Repo};

/// Which objects `--read-data` reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    All,
    /// Bucket `n` (1-based) of `m`, by object id: `--subset 3/7`. Running 1/M … M/M covers the pool.
    Bucket(u32, u32),
    /// A random share: `--subset 10%`.
    Percent(f64),
}

impl Subset {
    pub fn parse(s: &str) -> Result<Subset> {
        let bad = || {
            crate::error::usage(format!(
                "--subset `{s}` is not understood; use N/M (e.g. 1/7, a bucket of the objects: \
                 run 1/7 … 7/7 to cover the pool) or P% (e.g. 10%)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) || v == 0.0 {
                return Err(bad());
            }
            return Ok(Subset::Percent(v));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(Subset::Bucket(n, m))
    }

    fn contains(&self, id: &str) -> bool {
        match *self {
            Subset::All => true,
            Subset::Bucket(n, m) => {
                let v = u32::from_str_radix(&id[..8], 16).unwrap_or(0);
                v % m == n - 1
            }
            Subset::Percent(p) => rand::random::<f64>() * 100.0 < p,
        }
    }
}

/// A problem with one object, and who depends on it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectProblem {
    pub object: String,
    pub problem: String,
    pub snapshots: BTreeSet<String>,
    pub items: BTreeSet<String>,
}

/// The verify report (`--json` prints it).
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: usize,
    pub objects: usize,
    pub objects_read: usize,
    pub bytes_read: u64,
    pub pieces_reconstructed: usize,
    pub damaged_manifests: Vec<(String, String)>,
    pub missing: Vec<ObjectProblem>,
    pub damaged: Vec<ObjectProblem>,
    pub policy: Vec<String>,
    /// Items whose pieces all reconstruct but whose whole content does not match the item's
    /// recorded size and BLAKE3 (`--read-data` over all objects).
    pub items_inconsistent: Vec<String>,
    pub ok: bool,
    pub exit_code: i32,
}

#[derive(Default)]
struct Users {
    ty: Option<ObjectType>,
    size: u64,
    snapshots: BTreeSet<String>,
    items: BTreeSet<String>,
}

fn index_piece(p: &PieceData, snap: &str, item: &str, idx: &mut HashMap<String, Users>) {
    for c in crate::model::chain(p) {
        let (obj, stored) = c.data.object();
        let ty = match c.data {
            Encoding::Full { .. } => ObjectType::Full,
            Encoding::Delta { .. } => ObjectType::Delta,
        };
        let u = idx.entry(obj.to_string()).or_default();
        u.ty = Some(ty);
        u.size = stored;
        u.snapshots.insert(snap.to_string());
        u.items.insert(format!("{snap}:{item}"));
    }
}

/// What the manifests need: each object with its users, and the unique pieces to reconstruct
/// (by plain hash and top object), each with one user to name.
#[derive(Default)]
struct Index {
    users: HashMap<String, Users>,
    pieces: BTreeMap<(String, String), (PieceData, String)>,
}

fn problem(id: &str, what: String, u: &Users) -> ObjectProblem {
    ObjectProblem {
        object: id.to_string(),
        problem: what,
        snapshots: u.snapshots.clone(),
        items: u.items.clone(),
    }
}

/// Verify the repository. `max_chain` is the policy's chain limit.
pub fn verify(
    repo: &Repo,
    read_data: bool,
    subset: Subset,
    max_chain: u32,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut manifests: Vec<Manifest> = Vec::new();
    for r in repo.load_all()? {
        match r {
            Ok(m) => manifests.push(m),
            Err((id, e)) => report.damaged_manifests.push((id, format!("{e:#}"))),
        }
    }
    report.snapshots = manifests.len() + report.damaged_manifests.len();
    let idx = index(&manifests, max_chain, &mut report);
    report.objects = idx.users.len();
    let mut bad_objects = BTreeSet::new();
    let to_read = check_sizes(repo, &idx, read_data, subset, &mut report, &mut bad_objects)?;
    if read_data {
        read_objects(
            repo,
            &idx,
            &to_read,
            progress,
            &mut report,
            &mut bad_objects,
        );
    }
    // The whole content of every distinct item (pieces in order) against the item's BLAKE3: a
    // manifest whose pieces are each fine but do not add up to the item is caught too.
    if read_data && subset == Subset::All {
        check_items(repo, &manifests, &bad_objects, &mut report);
    }
    record_damaged(repo, &report, read_data, &to_read, &bad_objects);
    report.exit_code = if !report.damaged.is_empty()
        || !report.damaged_manifests.is_empty()
        || !report.items_inconsistent.is_empty()
        || !report.policy.is_empty()
    {
        EXIT_INTEGRITY
    } else if !report.missing.is_empty() {
        EXIT_MISSING
    } else {
        0
    };
    report.ok = report.exit_code == 0;
    Ok(report)
}

/// Indexes the objects and pieces of every manifest; chains over the policy go to the report.
fn index(manifests: &[Manifest], max_chain: u32, report: &mut VerifyReport) -> Index {
    let mut idx = Index::default();
    for m in manifests {
        for item in &m.items {
            for p in &item.pieces {
                index_piece(&p.piece, &m.id, &item.name, &mut idx.users);
                if p.piece.data.depth() > max_chain {
                    report.policy.push(format!(
                        "{}:{}: delta chain of {} exceeds the policy's {max_chain}",
                        m.id,
                        item.name,
                        p.piece.data.depth()
                    ));
                }
                if let Some(s) = &p.sig {
                    let u = idx.users.entry(s.clone()).or_default();
                    u.ty = Some(ObjectType::Signature);
                    if let Some(sz) = p.sig_size {
                        u.size = sz;
                    }
                    u.snapshots.insert(m.id.clone());
                    u.items
                        .insert(format!("{}:{} (signature)", m.id, item.name));
                }
                let key = (p.piece.blake3.clone(), p.piece.data.object().0.to_string());
                idx.pieces
                    .entry(key)
                    .or_insert_with(|| (p.piece.clone(), format!("{}:{}", m.id, item.name)));
            }
        }
    }
    idx
}

/// The structure pass: every object exists with its recorded size. Returns the objects (and
/// their sizes) the read-data pass reads.
fn check_sizes(
    repo: &Repo,
    idx: &Index,
    read_data: bool,
    subset: Subset,
    report: &mut VerifyReport,
    bad_objects: &mut BTreeSet<String>,
) -> Result<Vec<(String, u64)>> {
    let mut to_read = Vec::new();
    let mut ids: Vec<&String> = idx.users.keys().collect();
    ids.sort();
    for id in ids {
        let u = &idx.users[id];
        match repo.object_size(id)? {
            None => {
                report.missing.push(problem(id, "missing".into(), u));
                bad_objects.insert(id.clone());
            }
            Some(sz) if u.size != 0 && sz != u.size => {
                report.damaged.push(problem(
                    id,
                    format!(
                        "size {sz} bytes, recorded {} (truncated or overwritten)",
                        u.size
                    ),
                    u,
                ));
                bad_objects.insert(id.clone());
            }
            Some(sz) => {
                if read_data && subset.contains(id) {
                    to_read.push((id.clone(), sz));
                }
            }
        }
    }
    Ok(to_read)
}

/// The read-data pass: reads `to_read` on several threads, checking each object's hash, then
/// reconstructs the pieces whose data lies in it.
fn read_objects(
    repo: &Repo,
    idx: &Index,
    to_read: &[(String, u64)],
    progress: &dyn Progress,
    report: &mut VerifyReport,
    bad_objects: &mut BTreeSet<String>,
) {
    let total: u64 = to_read.iter().map(|x| x.1).sum();
    progress.phase("reading objects", Some(total));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let queue = Mutex::new(to_read.iter());
    let found = Mutex::new(Vec::new());
    let read_bytes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let Some((id, sz)) = queue.lock().unwrap().next().cloned() else {
                    break;
                };
                let ty = idx.users[&id].ty.unwrap_or(ObjectType::Full);
                if let Err(e) = repo.get_object_sized(&id, ty, Some(sz)) {
                    found.lock().unwrap().push((id.clone(), format!("{e:#}")));
                }
                read_bytes.fetch_add(sz, std::sync::atomic::Ordering::Relaxed);
                progress.advance(sz);
            });
        }
    });
    progress.phase("done", None);
    report.objects_read = to_read.len();
    report.bytes_read = read_bytes.into_inner();
    for (id, e) in found.into_inner().unwrap() {
        report.damaged.push(problem(&id, e, &idx.users[&id]));
        bad_objects.insert(id);
    }
    // Reconstruct the pieces whose data object is in the subset and whose objects all read
    // fine: this proves decompression, delta application and the plain BLAKE3.
    let in_subset: BTreeSet<&String> = to_read.iter().map(|x| &x.0).collect();
    for ((_, obj), (piece, user)) in &idx.pieces {
        if !in_subset.contains(obj)
            || chain_objects(piece)
                .iter()
                .any(|o| bad_objects.contains(*o))
        {
            continue;
        }
        report.pieces_reconstructed += 1;
        if let Err(e) = decode_piece(repo, piece, user) {
            report.damaged.push(problem(
                obj,
                format!("does not reconstruct: {e:#}"),
                &idx.users[obj],
            ));
            bad_objects.insert(obj.clone());
        }
    }
}

/// Reads every distinct item whose objects are all fine, whole, against its size and BLAKE3.
fn check_items(
    repo: &Repo,
    manifests: &[Manifest],
    bad_objects: &BTreeSet<String>,
    report: &mut VerifyReport,
) {
    let mut seen = std::collections::HashSet::new();
    for m in manifests {
        for item in &m.items {
            let key: Vec<&str> = std::iter::once(item.blake3.as_str())
                .chain(item.pieces.iter().map(|p| p.piece.data.object().0))
                .collect();
            if !seen.insert(key.join(",")) {
                continue;
            }
            if item.pieces.iter().any(|p| {
                chain_objects(&p.piece)
                    .iter()
                    .any(|o| bad_objects.contains(*o))
            }) {
                continue;
            }
            if let Err(e) = crate::repo::reader::write_item(repo, item, &mut std::io::sink()) {
                report
                    .items_inconsistent
                    .push(format!("{}:{}: {e:#}", m.id, item.name));
            }
        }
    }
}

/// Record what is damaged in the repository, so the next snapshot writes those pieces anew
/// from the source instead of reusing them, and `repair` knows them; objects that read fine
/// lose an old record. A pool that cannot be written (full, read-only) only loses the record.
fn record_damaged(
    repo: &Repo,
    report: &VerifyReport,
    read_data: bool,
    to_read: &[(String, u64)],
    bad_objects: &BTreeSet<String>,
) {
    let recorded = repo.damaged_objects().unwrap_or_default();
    for p in &report.damaged {
        if !recorded.contains(&p.object) {
            if let Err(e) = repo.mark_damaged(&p.object) {
                tracing::warn!(
                    "could not record object {} as damaged in the repository: {e:#}",
                    p.object
                );
            }
        }
    }
    if read_data {
        for (id, _) in to_read {
            if recorded.contains(id) && !bad_objects.contains(id) {
                repo.clear_damaged(id);
            }
        }
    }
}

fn chain_objects(p: &PieceData) -> Vec<&str> {
    crate::model::chain(p).map(|c| c.data.object().0).collect()
}
