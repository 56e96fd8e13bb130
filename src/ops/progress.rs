//! Progress reporting from use cases: the binary implements [`Progress`] (a bar, log lines, JSON),
//! the ops call it; [`NoProgress`] ignores everything.

/// Receives progress from a running operation.
pub trait Progress: Send + Sync {
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn note(&self, _msg: &str) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
