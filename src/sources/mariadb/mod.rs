//! PLACEHOLDER written by the lead so the tree compiles; the MariaDB engineer replaces this file.
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbConfig {
    pub password: Option<String>,
}
impl MariadbConfig {
    pub fn has_inline_secret(&self) -> bool {
        self.password.is_some()
    }
}
pub async fn backup(_cfg: &MariadbConfig, _sink: Arc<dyn crate::source::ItemSink>) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
