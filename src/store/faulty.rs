//! [`Faulty`]: a decorator over any backend that injects failures on chosen operations and keys,
//! after a number of matching calls (tests of the layers above: a full pool in the middle of a
//! snapshot, a vanished object, a torn write, a flaky network).

use std::sync::{Arc, Mutex};

use super::{Backend, Meta, StoreError, StoreResult};

/// The operations a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Stat,
    List,
    Delete,
    Any,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    NotFound,
    NoSpace,
    Transient,
    Permanent,
    /// A put stores only the first half of the bytes under the key, then fails (Permanent): what
    /// a store without atomic writes leaves after a crash. On other operations: Permanent.
    Torn,
}

/// One fault: the `skip` first matching calls pass, then `times` calls fail (None: all).
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    /// Only keys containing this text (None: every key).
    pub key_contains: Option<String>,
    pub skip: u64,
    pub times: Option<u64>,
    pub kind: FaultKind,
}

impl Fault {
    pub fn new(op: Op, kind: FaultKind) -> Fault {
        Fault {
            op,
            key_contains: None,
            skip: 0,
            times: None,
            kind,
        }
    }
    pub fn on_keys(mut self, text: &str) -> Fault {
        self.key_contains = Some(text.to_string());
        self
    }
    pub fn after(mut self, n: u64) -> Fault {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: u64,
    fired: u64,
}

/// A backend that fails as told.
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn Backend>,
    faults: Mutex<Vec<Armed>>,
    /// Listing lag: how many of the most recently written keys a listing leaves out, and those
    /// keys (an object store whose listing trails its writes).
    lag: Mutex<(usize, std::collections::VecDeque<String>)>,
    /// Writes (puts and appends) passed to the inner backend.
    puts: std::sync::atomic::AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            faults: Mutex::new(Vec::new()),
            lag: Mutex::default(),
            puts: Default::default(),
        })
    }

    /// From now on a listing leaves out the `n` most recently written keys (0: no lag).
    pub fn lag_listing(&self, n: usize) {
        let mut l = self.lag.lock().unwrap();
        l.0 = n;
        l.1.clear();
    }

    /// How many writes reached the inner backend.
    pub fn puts(&self) -> u64 {
        self.puts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Arm one more fault.
    pub fn inject(&self, f: Fault) {
        self.faults.lock().unwrap().push(Armed {
            fault: f,
            seen: 0,
            fired: 0,
        });
    }

    /// Disarm every fault.
    pub fn clear(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// How many injected faults fired so far.
    pub fn fired(&self) -> u64 {
        self.faults.lock().unwrap().iter().map(|a| a.fired).sum()
    }

    fn check(&self, op: Op, key: &str) -> Option<FaultKind> {
        let mut faults = self.faults.lock().unwrap();
        for a in faults.iter_mut() {
            let f = &a.fault;
            let op_ok = f.op == Op::Any || f.op == op;
            let key_ok = f.key_contains.as_deref().is_none_or(|t| key.contains(t));
            if !(op_ok && key_ok) {
                continue;
            }
            a.seen += 1;
            if a.seen <= f.skip || f.times.is_some_and(|t| a.fired >= t) {
                continue;
            }
            a.fired += 1;
            return Some(f.kind);
        }
        None
    }

    fn fail(kind: FaultKind, op: Op, key: &str) -> StoreError {
        let msg = format!("injected {kind:?} on {op:?} {key}");
        match kind {
            FaultKind::NotFound => StoreError::NotFound(key.to_string()),
            FaultKind::NoSpace => StoreError::NoSpace(msg),
            FaultKind::Transient => StoreError::Transient(msg),
            FaultKind::Permanent | FaultKind::Torn => StoreError::Permanent(msg),
        }
    }

    fn put(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        match self.check(Op::Put, key) {
            Some(FaultKind::Torn) => {
                let _ = self.inner.put_replace(key, &bytes[..bytes.len() / 2]);
                Err(Self::fail(FaultKind::Torn, Op::Put, key))
            }
            Some(k) => Err(Self::fail(k, Op::Put, key)),
            None => {
                self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut l = self.lag.lock().unwrap();
                if l.0 > 0 {
                    l.1.push_back(key.to_string());
                    while l.1.len() > l.0 {
                        l.1.pop_front();
                    }
                }
                Ok(())
            }
        }
    }

    fn gate(&self, op: Op, key: &str) -> StoreResult<()> {
        match self.check(op, key) {
            Some(k) => Err(Self::fail(k, op, key)),
            None => Ok(()),
        }
    }
}

impl Backend for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> StoreResult<bool> {
        self.put(key, bytes)?;
        self.inner.put_if_absent(key, bytes)
    }
    fn put_replace(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.put(key, bytes)?;
        self.inner.put_replace(key, bytes)
    }
    fn get(&self, key: &str, max: u64) -> StoreResult<Vec<u8>> {
        self.gate(Op::Get, key)?;
        self.inner.get(key, max)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> StoreResult<Vec<u8>> {
        self.gate(Op::Get, key)?;
        self.inner.get_range(key, offset, len)
    }
    fn stat(&self, key: &str) -> StoreResult<Meta> {
        self.gate(Op::Stat, key)?;
        self.inner.stat(key)
    }
    fn list(&self, prefix: &str) -> StoreResult<Vec<(String, u64)>> {
        self.gate(Op::List, prefix)?;
        let mut all = self.inner.list(prefix)?;
        let l = self.lag.lock().unwrap();
        all.retain(|(k, _)| !l.1.contains(k));
        Ok(all)
    }
    fn delete(&self, key: &str) -> StoreResult<()> {
        self.gate(Op::Delete, key)?;
        self.inner.delete(key)
    }
    fn append(&self, key: &str, bytes: &[u8]) -> StoreResult<()> {
        self.put(key, bytes)?;
        self.inner.append(key, bytes)
    }
    fn ensure_dir(&self, prefix: &str) -> StoreResult<()> {
        self.inner.ensure_dir(prefix)
    }
    fn check_dir(&self, prefix: &str) -> StoreResult<()> {
        self.inner.check_dir(prefix)
    }
    fn has_dir(&self, prefix: &str) -> bool {
        self.inner.has_dir(prefix)
    }
    fn create(&self) -> anyhow::Result<Option<String>> {
        self.inner.create()
    }
    fn explain_missing(&self) -> String {
        self.inner.explain_missing()
    }
    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}
