//! The codec: how a piece of plain bytes becomes objects and back.
//!
//! A piece is stored as one of:
//! - *unchanged*: the parent snapshot (or this one) already has a piece with the same BLAKE3;
//!   its encoding is reused and nothing is written;
//! - *delta*: a fast_rsync delta against the parent's piece at the same position, computed from
//!   that piece's stored signature (so the old content is never read back), zstd-compressed;
//! - *full*: the piece zstd-compressed.
//!
//! A delta is refused in favour of a full when the chain would grow past `max_chain` or when the
//! delta is larger than `max_delta_percent` of the piece, so restore never replays an unbounded
//! chain and a heavily changed piece does not cost more than a full.

use std::path::PathBuf;

use anyhow::{Context, Result};
use fast_rsync::{Signature, SignatureOptions};

use crate::error::{integrity, unsafe_content};
use crate::model::{Encoding, Item, Manifest, Piece, PieceData};
use crate::repo::{check_object_id, ObjectType, Repo, MAX_PIECE};

pub use crate::model::MAX_CHAIN_HARD;

/// Compression and delta policy.
#[derive(Debug, Clone)]
pub struct CodecPolicy {
    pub level: i32,
    /// zstd worker threads per frame (0: none).
    pub threads: u32,
    pub delta: bool,
    pub max_chain: u32,
    pub max_delta_percent: u32,
}

impl Default for CodecPolicy {
    fn default() -> Self {
        CodecPolicy {
            level: 3,
            threads: 0,
            delta: true,
            max_chain: 8,
            max_delta_percent: 50,
        }
    }
}

/// What encoding one piece cost.
#[derive(Debug, Default, Clone)]
pub struct PieceCost {
    pub bytes_added: u64,
    pub signature_bytes: u64,
    pub objects_added: u64,
    /// Ids of the objects this piece newly wrote (removed again if the snapshot is abandoned).
    pub new_objects: Vec<String>,
    pub unchanged: bool,
    pub delta: bool,
}

/// Signature block size for a piece: about twice the square root of its size, as a power of
/// two between 512 bytes and 16 KiB. Small pieces get fine blocks (precise deltas), large ones
/// coarser blocks, so a 4 MiB piece's signature is 0.3% of it (12 bytes per 4 KiB block).
pub fn signature_block_size(len: usize) -> u32 {
    let root = 2 * (len as f64).sqrt() as u32;
    root.next_power_of_two().clamp(512, 16384)
}

/// Bytes of signature per block: 4 (rolling checksum) + this strong-hash prefix length.
pub const SIG_HASH_BYTES: u32 = 8;

/// A local cache of signatures on the node (the pool is the fallback).
#[derive(Debug, Clone, Default)]
pub struct SigCache {
    pub dir: Option<PathBuf>,
}

impl SigCache {
    /// Fetch a signature object's payload: from the cache, else from the pool (then cached).
    pub fn get(&self, repo: &Repo, id: &str) -> Result<Vec<u8>> {
        check_object_id(id)?;
        if let Some(dir) = &self.dir {
            let p = dir.join(id);
            if let Ok(b) = std::fs::read(&p) {
                // The cache is trusted only after a check against the id.
                if repo.object_id(ObjectType::Signature, &b)? == id {
                    return Ok(b);
                }
            }
        }
        let b = repo.get_object(id, ObjectType::Signature)?;
        self.put(id, &b);
        Ok(b)
    }

    /// The file of the verified-objects cache (beside the signatures).
    pub fn verified_file(&self) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .and_then(|d| d.parent())
            .map(|p| p.join("verified-objects"))
    }

    /// Keep a copy of a signature (best effort: a failing cache never fails a backup). The
    /// cache is as private as the pool: directories 0700, files 0600, whatever the umask.
    pub fn put(&self, id: &str, payload: &[u8]) {
        use crate::store::local::{create_private_dir_all, create_private_file, temp_name};
        if let Some(dir) = &self.dir {
            if create_private_dir_all(dir).is_ok() {
                let tmp = dir.join(temp_name(&id[..8]));
                let written = create_private_file(&tmp)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, payload));
                if written.is_ok() {
                    let _ = std::fs::rename(&tmp, dir.join(id));
                } else {
                    let _ = std::fs::remove_file(&tmp);
                }
            }
        }
    }
}

fn compress(policy: &CodecPolicy, data: &[u8]) -> Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(policy.level).context("starting zstd")?;
    if policy.threads > 1 && data.len() >= 2 << 20 {
        c.multithread(policy.threads)
            .context("enabling zstd workers")?;
    }
    c.compress(data).context("zstd compression")
}

fn decompress(data: &[u8], limit: usize, what: &str) -> Result<Vec<u8>> {
    // The limit comes from the manifest's declared size: a frame that would expand past it is
    // rejected before the memory is used.
    zstd::bulk::decompress(data, limit).map_err(|e| {
        integrity(format!(
            "{what}: cannot decompress ({e}); it is damaged or larger than declared"
        ))
    })
}

/// One piece to encode.
pub struct PieceInput<'a> {
    pub plain: &'a [u8],
    /// BLAKE3 of `plain`, hex.
    pub plain_hash: &'a str,
    /// Whether the item takes deltas (then the piece gets a signature).
    pub want_sig: bool,
    /// An already stored piece with the same plain hash (unchanged).
    pub reuse: Option<&'a Piece>,
    /// The parent's piece at the same position (the delta base).
    pub base: Option<&'a Piece>,
}

/// Encode one piece: unchanged, delta or full (see the module documentation).
pub fn encode_piece(
    repo: &Repo,
    policy: &CodecPolicy,
    cache: &SigCache,
    input: PieceInput,
) -> Result<(Piece, PieceCost)> {
    let PieceInput {
        plain,
        plain_hash,
        want_sig,
        reuse,
        base,
    } = input;
    let mut cost = PieceCost::default();
    if let Some(r) = reuse {
        if !want_sig || r.sig.is_some() {
            cost.unchanged = true;
            let mut p = r.clone();
            if !want_sig {
                p.sig = None;
                p.sig_size = None;
            }
            return Ok((p, cost));
        }
    }
    let size = plain.len() as u64;
    let sig_id = if want_sig {
        let sig = Signature::calculate(
            plain,
            SignatureOptions {
                block_size: signature_block_size(plain.len()),
                crypto_hash_size: SIG_HASH_BYTES,
            },
        );
        let (id, n, new) = repo.put_object(ObjectType::Signature, sig.serialized())?;
        cache.put(&id, sig.serialized());
        if new {
            cost.bytes_added += n;
            cost.signature_bytes += n;
            cost.objects_added += 1;
            cost.new_objects.push(id.clone());
        }
        Some((id, n))
    } else {
        None
    };
    if let Some(r) = reuse {
        // Same content stored before, only its signature was missing.
        cost.unchanged = true;
        let mut p = r.clone();
        p.sig_size = sig_id.as_ref().map(|s| s.1);
        p.sig = sig_id.map(|s| s.0);
        return Ok((p, cost));
    }

    let mut data = None;
    if policy.delta && want_sig {
        if let Some(b) = base {
            if let Some(bsig) = &b.sig {
                let depth = b.piece.data.depth() + 1;
                // A missing or damaged signature only costs a full copy of this piece.
                let sig = if depth <= policy.max_chain {
                    match cache.get(repo, bsig).and_then(|b| {
                        Signature::deserialize(b).map_err(|_| {
                            integrity(format!("signature object {bsig} is not a valid signature"))
                        })
                    }) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::warn!(
                                "{e:#}; storing this piece in full (run `mnbackup verify`)"
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                if let Some(sig) = sig {
                    let mut delta = Vec::new();
                    fast_rsync::diff(&sig.index(), plain, &mut delta)
                        .map_err(|e| anyhow::anyhow!("computing an rsync delta: {e}"))?;
                    if (delta.len() as u64) * 100 <= size * policy.max_delta_percent as u64 {
                        let z = compress(policy, &delta)?;
                        let (id, n, new) = repo.put_object(ObjectType::Delta, &z)?;
                        if new {
                            cost.bytes_added += n;
                            cost.objects_added += 1;
                            cost.new_objects.push(id.clone());
                        }
                        cost.delta = true;
                        data = Some(Encoding::Delta {
                            object: id,
                            stored: n,
                            depth,
                            base: Box::new(b.piece.clone()),
                        });
                    }
                }
            }
        }
    }
    let data = match data {
        Some(d) => d,
        None => {
            let z = compress(policy, plain)?;
            let (id, n, new) = repo.put_object(ObjectType::Full, &z)?;
            if new {
                cost.bytes_added += n;
                cost.objects_added += 1;
                cost.new_objects.push(id.clone());
            }
            Encoding::Full {
                object: id,
                stored: n,
            }
        }
    };
    Ok((
        Piece {
            piece: PieceData {
                size,
                blake3: plain_hash.to_string(),
                data,
            },
            sig_size: sig_id.as_ref().map(|s| s.1),
            sig: sig_id.map(|s| s.0),
        },
        cost,
    ))
}

/// Reconstruct a piece's plain bytes and check them against its recorded size and BLAKE3.
/// `what` names the item for error messages.
pub fn decode_piece(repo: &Repo, p: &PieceData, what: &str) -> Result<Vec<u8>> {
    if p.size > MAX_PIECE {
        return Err(unsafe_content(format!(
            "{what}: a piece declares {} bytes, more than the {} this format allows",
            p.size, MAX_PIECE
        )));
    }
    let out = match &p.data {
        Encoding::Full { object, stored } => {
            let z = repo
                .get_object_sized(object, ObjectType::Full, Some(*stored))
                .with_context(|| format!("reading {what}"))?;
            decompress(&z, p.size as usize, what)?
        }
        Encoding::Delta {
            object,
            base,
            stored,
            ..
        } => {
            let base_bytes = decode_piece(repo, base, what)?;
            let z = repo
                .get_object_sized(object, ObjectType::Delta, Some(*stored))
                .with_context(|| format!("reading {what}"))?;
            // A delta holds at most the piece's bytes as literals plus small command overhead.
            let delta = decompress(&z, (p.size as usize) * 2 + 4096, what)?;
            let mut out = Vec::with_capacity(p.size as usize);
            fast_rsync::apply_limited(&base_bytes, &delta, &mut out, p.size as usize).map_err(
                |e| {
                    integrity(format!(
                        "{what}: delta does not apply ({e}); the piece is damaged"
                    ))
                },
            )?;
            out
        }
    };
    if out.len() as u64 != p.size || blake3::hash(&out).to_hex().as_str() != p.blake3 {
        return Err(integrity(format!(
            "{what}: content does not match its recorded size and BLAKE3 (expected {} bytes, \
             {}); the stored data is damaged",
            p.size, p.blake3
        )));
    }
    Ok(out)
}

/// Check an item name: relative, '/'-separated, no empty, `.` or `..` components, no NUL.
pub fn check_item_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || crate::model::files_info::decode_name(name).is_err()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(unsafe_content(format!(
            "item name `{}` is not a safe relative path (absolute, empty or `..` component); \
             the manifest is malformed or hostile and is not used",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn check_piece(p: &PieceData, item: &str) -> Result<()> {
    for (depth_seen, c) in crate::model::chain(p).enumerate() {
        if depth_seen as u32 > MAX_CHAIN_HARD {
            return Err(unsafe_content(format!(
                "{item}: delta chain longer than {MAX_CHAIN_HARD}"
            )));
        }
        if c.size > MAX_PIECE {
            return Err(unsafe_content(format!(
                "{item}: a piece declares {} bytes (limit {MAX_PIECE})",
                c.size
            )));
        }
        check_object_id(c.data.object().0)?;
        if let Encoding::Delta { base, depth, .. } = &c.data {
            if *depth != base.data.depth() + 1 {
                return Err(unsafe_content(format!("{item}: inconsistent delta depth")));
            }
        }
    }
    Ok(())
}

/// Structural checks on a manifest before it is used: safe names, sane sizes, consistent pieces.
pub fn validate_manifest(m: &Manifest) -> Result<()> {
    crate::repo::check_snapshot_id(&m.id)?;
    let mut names = std::collections::HashSet::new();
    for item in &m.items {
        validate_item(item)?;
        if !names.insert(item.name.as_str()) {
            return Err(unsafe_content(format!(
                "item `{}` appears twice",
                item.name
            )));
        }
    }
    Ok(())
}

fn validate_item(item: &Item) -> Result<()> {
    check_item_name(&item.name)?;
    let mut total = 0u64;
    for p in &item.pieces {
        check_piece(&p.piece, &item.name)?;
        if let Some(s) = &p.sig {
            check_object_id(s)?;
        }
        total = total
            .checked_add(p.piece.size)
            .ok_or_else(|| unsafe_content("size overflow"))?;
    }
    if total != item.size {
        return Err(unsafe_content(format!(
            "{}: pieces add up to {total} bytes but the item declares {}",
            item.name, item.size
        )));
    }
    Ok(())
}
