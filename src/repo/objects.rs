//! Objects: content-addressed, immutable values under `objects/<xx>/<id>`; the `damaged/`
//! records of `verify`; the node's verified-objects cache.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};

use super::{se, ObjectType, Repo, DAMAGED, OBJECTS};
use crate::error::integrity;
use crate::model::{chain, check_object_id, Manifest, MAX_OBJECT};
use crate::store::StoreError;

/// The key of an object. The id must be 64 lowercase hex digits (checked: ids come from
/// manifests, which may be damaged or hostile).
pub fn object_key(id: &str) -> Result<String> {
    check_object_id(id)?;
    Ok(format!("{OBJECTS}/{}/{id}", &id[..2]))
}

fn damaged_key(id: &str) -> Result<String> {
    check_object_id(id)?;
    Ok(format!("{DAMAGED}/{id}"))
}

impl Repo {
    /// The objects recorded as damaged (by `verify`).
    pub fn damaged_objects(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        if !self.store.has_dir(DAMAGED) {
            return Ok(out);
        }
        self.store.check_dir(DAMAGED).map_err(se)?;
        for (k, _) in self.store.list(&format!("{DAMAGED}/")).map_err(se)? {
            let name = &k[DAMAGED.len() + 1..];
            if check_object_id(name).is_ok() {
                out.insert(name.to_string());
            }
        }
        Ok(out)
    }

    /// Record an object as damaged: the next snapshot writes its content anew when it has it.
    pub fn mark_damaged(&self, id: &str) -> Result<()> {
        let key = damaged_key(id)?;
        self.store.ensure_dir(DAMAGED).map_err(se)?;
        self.store.check_dir(DAMAGED).map_err(se)?;
        self.store.put_if_absent(&key, b"").map_err(se)?;
        Ok(())
    }

    /// Remove an object's damaged record (it was rewritten, removed, or reads fine).
    pub fn clear_damaged(&self, id: &str) {
        if let Ok(key) = damaged_key(id) {
            if self.store.has_dir(DAMAGED) && self.store.check_dir(DAMAGED).is_ok() {
                let _ = self.store.delete(&key);
            }
        }
    }

    /// Store an object; returns (id, stored size, whether it did not exist before).
    ///
    /// An existing object of that name is kept only when it is a regular file (or packed copy)
    /// of the right size, not recorded as damaged, and holds its content; otherwise it is
    /// written again (the new bytes hash to the name by construction), so a damaged object is
    /// repaired by the next write of its content. In a repository with packs, a small object
    /// goes into the writer's next pack ([`Repo::flush_packs`] before the manifest commits).
    pub fn put_object(&self, ty: ObjectType, payload: &[u8]) -> Result<(String, u64, bool)> {
        let id = self.object_id(ty, payload)?;
        let size = self.object_stored_size(payload.len());
        let rewrite = self.rewrite.lock().unwrap().contains(&id);
        if !rewrite && (self.is_pending(&id) || self.object_good(&id, size)) {
            return Ok((id, size, false));
        }
        // Sealed only when written: an object that exists costs no encryption.
        let (_, bytes) = self.encode_object(ty, payload)?;
        if !rewrite && self.packs_enabled() && bytes.len() < super::packs::PACK_SMALL {
            // Checked just above (neither pending nor stored): no second lookup.
            self.store_packed(&id, ty, &bytes)?;
            return Ok((id, bytes.len() as u64, true));
        }
        let new = self.put_object_bytes(&id, ty, &bytes)?;
        Ok((id, bytes.len() as u64, new))
    }

    /// [`Repo::put_object_bytes`] for an object a listing of this repository just showed
    /// absent (`copy`): no existence check per object (on an object store each is a request).
    pub fn put_absent_object_bytes(&self, id: &str, ty: ObjectType, bytes: &[u8]) -> Result<bool> {
        if self.is_pending(id) {
            return Ok(false);
        }
        if self.packs_enabled() && bytes.len() < super::packs::PACK_SMALL {
            self.store_packed(id, ty, bytes)?;
            return Ok(true);
        }
        self.store
            .put_replace(&object_key(id)?, bytes)
            .map_err(se)?;
        Ok(true)
    }

    /// Store an object's stored bytes under its id (checked by the caller or built to match);
    /// returns whether it was written (false: a good copy existed).
    pub fn put_object_bytes(&self, id: &str, ty: ObjectType, bytes: &[u8]) -> Result<bool> {
        let key = object_key(id)?;
        let len = bytes.len() as u64;
        let rewrite = self.rewrite.lock().unwrap().contains(id);
        if self.packs_enabled() && bytes.len() < super::packs::PACK_SMALL && !rewrite {
            if self.is_pending(id) || self.object_good(id, len) {
                return Ok(false);
            }
            self.store_packed(id, ty, bytes)?;
            return Ok(true);
        }
        let existed = match self.store.stat(&key) {
            Err(StoreError::NotFound(_)) => {
                if !rewrite && self.packed_good(id, len) {
                    return Ok(false);
                }
                false
            }
            _ => {
                if self.object_good(id, len) {
                    return Ok(false);
                }
                tracing::info!("object {id} was damaged; writing it again");
                true
            }
        };
        if existed {
            // A symbolic link or directory in the way is removed first (never written through).
            if let Err(StoreError::Refused(_)) = self.store.stat(&key) {
                let _ = self.store.delete(&key);
            }
        }
        self.store.put_replace(&key, bytes).map_err(se)?;
        if let Ok(Some(k)) = self.store.stat(&key).map(|m| m.identity) {
            self.verified.lock().unwrap().insert(id.to_string(), k);
        }
        if self.rewrite.lock().unwrap().remove(id) || existed {
            self.clear_damaged(id);
        }
        Ok(!existed)
    }

    /// Whether an object exists as a regular file of the given size, is not recorded as
    /// damaged, and holds the content its name promises: checked by reading and hashing it
    /// unless it was checked (or written) before and it has not changed since (same identity).
    /// This is the check before a stored piece is built on.
    pub fn object_good(&self, id: &str, size: u64) -> bool {
        let Ok(key) = object_key(id) else {
            return false;
        };
        if self.rewrite.lock().unwrap().contains(id) {
            return false;
        }
        if self.packed_good(id, size) {
            return true;
        }
        let meta = match self.store.stat(&key) {
            Ok(m) if m.size == size => m,
            _ => return false,
        };
        if meta.identity.is_some()
            && self.verified.lock().unwrap().get(id) == meta.identity.as_ref()
        {
            return true;
        }
        let good = self
            .store
            .get(&key, size)
            .map(|b| b.len() as u64 == size && self.object_bytes_good(id, &b))
            .unwrap_or(false);
        if let (true, Some(k)) = (good, meta.identity) {
            self.verified.lock().unwrap().insert(id.to_string(), k);
        }
        good
    }

    /// Load the verified-objects cache (a file on the node; missing or unreadable: empty).
    pub fn load_verified(&self, file: &Path) {
        let Ok(b) = crate::store::local::read_regular(file, 1 << 30) else {
            return;
        };
        let mut map = self.verified.lock().unwrap();
        for line in String::from_utf8_lossy(&b).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() != 5 || check_object_id(f[0]).is_err() {
                continue;
            }
            if let (Ok(a), Ok(b), Ok(c), Ok(d)) =
                (f[1].parse(), f[2].parse(), f[3].parse(), f[4].parse())
            {
                map.insert(f[0].to_string(), (a, b, c, d));
            }
        }
    }

    /// Save the verified-objects cache (best effort: a failing cache never fails a backup).
    pub fn save_verified(&self, file: &Path) {
        use mnbackup_scheduler::durable;
        let Some(dir) = file.parent() else { return };
        // Private like the pool (0700 / 0600 whatever the umask).
        if crate::store::local::create_private_dir_all(dir).is_err() {
            return;
        }
        let mut text = String::new();
        for (id, (a, b, c, d)) in self.verified.lock().unwrap().iter() {
            text.push_str(&format!("{id} {a} {b} {c} {d}\n"));
        }
        let mode = Some(crate::store::local::FILE_MODE);
        let _ = durable::temp_beside(file)
            .and_then(|tmp| durable::write_atomic_via(&tmp, file, text.as_bytes(), mode));
    }

    /// Read an object, check its hash and type, return its payload.
    pub fn get_object(&self, id: &str, expect: ObjectType) -> Result<Vec<u8>> {
        self.get_object_sized(id, expect, None)
    }

    /// Read an object whose stored size is recorded (`stored`): a value of another size is
    /// refused before it is read.
    pub fn get_object_sized(
        &self,
        id: &str,
        expect: ObjectType,
        stored: Option<u64>,
    ) -> Result<Vec<u8>> {
        // Checked against the id (and opened) by `read_object_checked`.
        let (_, ty, payload) = self.read_object_checked(id, stored)?;
        if ty != Some(expect) {
            return Err(integrity(format!(
                "object {id} is a {:?} object where a {expect:?} object was expected",
                ty
            )));
        }
        Ok(payload)
    }

    /// An object's stored bytes (header included), checked against its id: from this handle's
    /// pending pack, a pack, or its own file.
    pub fn read_object_bytes(&self, id: &str, stored: Option<u64>) -> Result<Vec<u8>> {
        self.read_object_checked(id, stored).map(|(b, _, _)| b)
    }

    /// An object's stored bytes, type and payload (opened), checked against its id.
    #[allow(clippy::type_complexity)]
    fn read_object_checked(
        &self,
        id: &str,
        stored: Option<u64>,
    ) -> Result<(Vec<u8>, Option<ObjectType>, Vec<u8>)> {
        check_object_id(id)?;
        if let Some(b) = self.pending_object(id) {
            let (ty, payload) = self.decode_object(id, &b)?;
            return Ok((b, ty, payload));
        }
        let want = stored.filter(|s| *s > 0);
        let mut pack_err = None;
        for l in self.locate(id)? {
            if want.is_some_and(|w| w != l.len) {
                pack_err = Some(integrity(format!(
                    "object {id} is damaged: its pack entry is {} bytes, recorded {}",
                    l.len,
                    want.unwrap_or(0)
                )));
                continue;
            }
            match self.read_packed(&l) {
                Ok(b) => match self.decode_object(id, &b) {
                    Ok((ty, payload)) => return Ok((b, ty, payload)),
                    Err(e) => pack_err = Some(e.context(format!("in pack {}", l.pack))),
                },
                Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Refused(e)) => {
                    pack_err = Some(integrity(format!("object {id} is damaged: {e}")))
                }
                Err(e) => {
                    return Err(se(e))
                        .with_context(|| format!("reading object {id} from pack {}", l.pack))
                }
            }
        }
        if let Some(e) = pack_err {
            // A damaged packed copy is the error unless the object also has a file.
            if let Err(StoreError::NotFound(_)) = self.store.stat(&object_key(id)?) {
                return Err(e);
            }
        }
        self.read_loose(id, want)
    }

    #[allow(clippy::type_complexity)]
    fn read_loose(
        &self,
        id: &str,
        want: Option<u64>,
    ) -> Result<(Vec<u8>, Option<ObjectType>, Vec<u8>)> {
        let key = object_key(id)?;
        if let Some(want) = want {
            if let Ok(m) = self.store.stat(&key) {
                if m.size != want {
                    return Err(integrity(format!(
                        "object {id} is damaged: its file is {} bytes, recorded {want}",
                        m.size
                    )));
                }
            }
        }
        let max = want.unwrap_or(MAX_OBJECT).min(MAX_OBJECT);
        let bytes = match self.store.get(&key, max) {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => {
                return Err(integrity(format!(
                    "object {id} is missing from the repository"
                )));
            }
            Err(StoreError::Refused(e)) => {
                return Err(integrity(format!("object {id} is damaged: {e}")));
            }
            Err(e) => return Err(se(e)).with_context(|| format!("reading object {id}")),
        };
        let (ty, payload) = self.decode_object(id, &bytes)?;
        Ok((bytes, ty, payload))
    }

    /// Size of an object, or None when it is missing.
    pub fn object_size(&self, id: &str) -> Result<Option<u64>> {
        let key = object_key(id)?;
        let (whole, packed) = self.packed_size(id)?;
        if whole {
            return Ok(packed);
        }
        match self.store.stat(&key) {
            Ok(m) => Ok(Some(m.size)),
            Err(StoreError::NotFound(_)) => Ok(packed),
            Err(StoreError::Refused(_)) => Ok(Some(0)),
            Err(e) => Err(se(e)),
        }
    }

    /// Remove an object (repair): its file, and its copies in packs (each such pack is
    /// written again without it). Returns false when it was already gone.
    pub fn delete_object(&self, id: &str) -> Result<bool> {
        let loose = self.delete_loose_object(id)?;
        let packed = self.unpack_objects(&HashSet::from([id.to_string()]))?;
        Ok(loose || packed)
    }

    /// Remove an object's own file (prune, an abandoned snapshot's leftovers; packed copies are
    /// pruned pack by pack). Returns false when there was none.
    pub fn delete_loose_object(&self, id: &str) -> Result<bool> {
        match self.store.delete(&object_key(id)?) {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(se(e)).with_context(|| format!("removing object {id}")),
        }
    }

    /// Every object id referenced by the given manifests (pieces, delta bases, signatures).
    pub fn referenced_objects<'a>(
        manifests: impl IntoIterator<Item = &'a Manifest>,
    ) -> HashSet<String> {
        let mut set = HashSet::new();
        for m in manifests {
            for item in &m.items {
                for p in &item.pieces {
                    set.extend(chain(&p.piece).map(|c| c.data.object().0.to_string()));
                    if let Some(s) = &p.sig {
                        set.insert(s.clone());
                    }
                }
            }
        }
        set
    }

    /// Every object id in the repository with its stored size: object files, then packed
    /// objects that have no file.
    pub fn all_objects(&self) -> Result<Vec<(String, u64)>> {
        let mut all = self.loose_objects()?;
        let have: HashSet<String> = all.iter().map(|(id, _)| id.clone()).collect();
        if let Some(idx) = self.pack_index()?.as_ref() {
            let mut seen = HashSet::new();
            for es in idx.packs.values() {
                for e in es {
                    if !have.contains(&e.id) && seen.insert(e.id.clone()) {
                        all.push((e.id.clone(), e.len));
                    }
                }
            }
        }
        Ok(all)
    }

    /// Every object file (`objects/`) with its size.
    pub fn loose_objects(&self) -> Result<Vec<(String, u64)>> {
        let all = self
            .store
            .list(&format!("{OBJECTS}/"))
            .map_err(se)
            .with_context(|| format!("listing the objects of {}", self.location()))?;
        Ok(all
            .into_iter()
            .filter_map(|(k, n)| {
                let name = k.rsplit('/').next()?.to_string();
                check_object_id(&name).is_ok().then_some((name, n))
            })
            .collect())
    }
}

/// The one check of an object's stored bytes against its id (loose file or packed copy), for
/// any format: v1 the content hashes to the id and has a valid header; v2 the AEAD tag (or
/// checksum) holds and the plain content hashes (keyed) to the id. Returns the object's type
/// (None: unknown type).
pub fn check_object(repo: &Repo, id: &str, bytes: &[u8]) -> Result<Option<ObjectType>> {
    repo.decode_object(id, bytes).map(|(ty, _)| ty)
}
