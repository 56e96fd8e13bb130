pub trait Progress: Send + Sync {
    fn phase(&self, _name: &str, _total_bytes: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn note(&self, _msg: &str) {}
}
pub struct NoProgress;
impl Progress for NoProgress {}
