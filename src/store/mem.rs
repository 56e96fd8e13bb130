//! [`MemBackend`]: a store in memory, for tests (`mem://NAME` opens a process-wide named one, so
//! a test can open the same store twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::{check_key, Backend, Meta, StoreError, StoreResult};

#[derive(Debug, Default)]
struct Inner {
    /// key -> (bytes, version, modified)
    map: BTreeMap<String, (Vec<u8>, u64, SystemTime)>,
    version: u64,
}

/// A store in memory.
#[derive(Debug, Default)]
pub struct MemBackend {
    name: String,
    inner: Mutex<Inner>,
}

impl MemBackend {
    pub fn new() -> Arc<MemBackend> {
        Arc::new(MemBackend::default())
    }

    /// The process-wide store called `name` (created empty on first use).
    pub fn named(name: &str) -> Arc<MemBackend> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<MemBackend>>>> = OnceLock::new();
        let mut all = ALL.get_or_init(Default::default).lock().unwrap();
        all.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(MemBackend {
                    name: name.to_string(),
                    inner: Mutex::default(),
                })
            })
            .clone()
    }

    fn insert(&self, key: &str, bytes: Vec<u8>) {
        let mut i = self.inner.lock().unwrap();
        i.version += 1;
        let v = i.version;
        i.map.insert(key.to_string(), (bytes, v, SystemTime::now()));
    }

    /// Change a stored value in place, as damage on the medium would (tests).
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut i = self.inner.lock().unwrap();
        i.version += 1;
        let v = i.version;
        match i.map.get_mut(key) {
            Some(e) => {
                f(&mut e.0);
                e.1 = v;
                true
            }
            None => false,
        }
    }
}

impl Backend for MemBackend {
    fn location(&self) -> String {
        format!("mem://{}", self.name)
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        check_key(key)?;
        let mut i = self.inner.lock().unwrap();
        if i.map.contains_key(key) {
            return Ok(false);
        }
        i.version += 1;
        let v = i.version;
        i.map
            .insert(key.to_string(), (bytes.to_vec(), v, SystemTime::now()));
        Ok(true)
    }

    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        check_key(key)?;
        self.insert(key, bytes.to_vec());
        Ok(())
    }

    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        check_key(key)?;
        let i = self.inner.lock().unwrap();
        let (b, _, _) = i
            .map
            .get(key)
            .ok_or_else(|| StoreError::NotFound(self.location() + "/" + key))?;
        if b.len() as u64 > max {
            return Err(StoreError::Refused(format!(
                "{key} is {} bytes, more than the {max} allowed for it",
                b.len()
            )));
        }
        Ok(b.clone())
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        let b = self.get(key, u64::MAX)?;
        let start = (offset as usize).min(b.len());
        let end = start.saturating_add(len as usize).min(b.len());
        Ok(b[start..end].to_vec())
    }

    fn stat(&self, key: &str) -> StoreResult<Meta> {
        check_key(key)?;
        let i = self.inner.lock().unwrap();
        let (b, v, t) = i
            .map
            .get(key)
            .ok_or_else(|| StoreError::NotFound(self.location() + "/" + key))?;
        Ok(Meta {
            size: b.len() as u64,
            identity: Some((b.len() as u64, *v as i64, 0, 0)),
            modified: Some(*t),
        })
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        let i = self.inner.lock().unwrap();
        Ok(i.map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (b, _, _))| (k.clone(), b.len() as u64))
            .collect())
    }

    fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        match self.inner.lock().unwrap().map.remove(key) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(self.location() + "/" + key)),
        }
    }

    fn create(&self) -> anyhow::Result<Option<String>> {
        if !self.inner.lock().unwrap().map.is_empty() {
            return Err(crate::error::usage(format!(
                "{} is not empty; `init` only creates a repository in an empty store",
                self.location()
            )));
        }
        Ok(None)
    }
}
