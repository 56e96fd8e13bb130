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
    /// An existing object of that name is kept only when it is a regular file of the right size
    /// and not recorded as damaged; otherwise it is replaced by the new bytes (which hash to the
    /// name by construction), so a damaged object is repaired by the next write of its content.
    pub fn put_object(&self, ty: ObjectType, payload: &[u8]) -> Result<(String, u64, bool)> {
        let id = self.object_id(ty, payload)?;
        let size = self.object_stored_size(payload.len());
        let key = object_key(&id)?;
        let existed = match self.store.stat(&key) {
            Err(StoreError::NotFound(_)) => false,
            _ => {
                if self.object_good(&id, size) {
                    return Ok((id, size, false));
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
        // Sealed only when written: an object that exists costs no encryption.
        let (_, bytes) = self.encode_object(ty, payload)?;
        self.store.put_replace(&key, &bytes).map_err(se)?;
        if let Ok(Some(k)) = self.store.stat(&key).map(|m| m.identity) {
            self.verified.lock().unwrap().insert(id.clone(), k);
        }
        if existed {
            self.rewrite.lock().unwrap().remove(&id);
            self.clear_damaged(&id);
        }
        Ok((id, bytes.len() as u64, !existed))
    }

    /// Whether an object exists as a regular file of the given size, is not recorded as
    /// damaged, and holds the content its name promises: checked by reading and hashing it
    /// unless it was checked (or written) before and it has not changed since (same identity).
    /// This is the check before a stored piece is built on.
    pub fn object_good(&self, id: &str, size: u64) -> bool {
        let Ok(key) = object_key(id) else {
            return false;
        };
        let meta = match self.store.stat(&key) {
            Ok(m) if m.size == size => m,
            _ => return false,
        };
        if self.rewrite.lock().unwrap().contains(id) {
            return false;
        }
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
        let Some(dir) = file.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let mut text = String::new();
        for (id, (a, b, c, d)) in self.verified.lock().unwrap().iter() {
            text.push_str(&format!("{id} {a} {b} {c} {d}\n"));
        }
        let _ = mnbackup_scheduler::durable::write_atomic(file, text.as_bytes());
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
        let key = object_key(id)?;
        if let Some(want) = stored.filter(|s| *s > 0) {
            if let Ok(m) = self.store.stat(&key) {
                if m.size != want {
                    return Err(integrity(format!(
                        "object {id} is damaged: its file is {} bytes, recorded {want}",
                        m.size
                    )));
                }
            }
        }
        let max = stored
            .filter(|s| *s > 0)
            .unwrap_or(MAX_OBJECT)
            .min(MAX_OBJECT);
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
        if ty != Some(expect) {
            return Err(integrity(format!(
                "object {id} is a {:?} object where a {expect:?} object was expected",
                ty
            )));
        }
        Ok(payload)
    }

    /// Size of an object, or None when it is missing.
    pub fn object_size(&self, id: &str) -> Result<Option<u64>> {
        match self.store.stat(&object_key(id)?) {
            Ok(m) => Ok(Some(m.size)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(StoreError::Refused(_)) => Ok(Some(0)),
            Err(e) => Err(se(e)),
        }
    }

    /// Remove an object (prune, repair, an abandoned snapshot). Returns false when it was
    /// already gone.
    pub fn delete_object(&self, id: &str) -> Result<bool> {
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

    /// Every object id in the repository with its stored size.
    pub fn all_objects(&self) -> Result<Vec<(String, u64)>> {
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
