//! The MariaDB backup, cancellable between tables and pieces.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use indicatif::HumanBytes;

use crate::engines::BackupCtx;
use crate::model::{ItemSink, ItemSpec};

/// Dump the configured databases into `sink`; returns the summary line.
pub(super) fn run(ctx: &BackupCtx, sink: Arc<dyn ItemSink>) -> Result<String> {
    let Some(m) = ctx.config.mariadb() else {
        return Ok(String::new());
    };
    let mut m = m.clone();
    m.memory = Some(ctx.config.memory());
    let m = &m;
    let rt = super::runtime()?;
    // Cancellable between tables and pieces: once the request is cancelled, the sink refuses
    // the next item, and the dump stops with that error.
    let stop = Arc::new(AtomicBool::new(false));
    let sink: Arc<dyn ItemSink> = Arc::new(CancellableSink {
        inner: sink,
        stop: stop.clone(),
    });
    let summary = rt.block_on(async {
        let watch = async {
            while !ctx.cancelled() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            stop.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await
        };
        tokio::select! {
            r = crate::engines::mariadb::backup(m, sink) => r,
            () = watch => unreachable!("the watch never ends"),
        }
    })?;
    Ok(format!(
        "mariadb: {} databases, {} tables, {} rows in {} items ({}); commits were blocked {} \
         ms; {:.1}s",
        summary.databases,
        summary.tables,
        summary.rows,
        summary.items,
        HumanBytes(summary.bytes),
        summary.block_ms,
        summary.duration_ms as f64 / 1000.0
    ))
}

/// An [`ItemSink`] that refuses every item once `stop` is set, so a source that stores item by
/// item (the MariaDB dump: tables and pieces) stops at the next one.
struct CancellableSink {
    inner: Arc<dyn ItemSink>,
    stop: Arc<AtomicBool>,
}

impl CancellableSink {
    fn check(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            anyhow::bail!("cancelled by a shutdown request (SIGTERM) during the MariaDB dump");
        }
        Ok(())
    }
}

impl ItemSink for CancellableSink {
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn std::io::Read) -> Result<()> {
        self.check()?;
        self.inner.put_reader(spec, reader)
    }
    fn put_bytes(&self, spec: ItemSpec, data: &[u8]) -> Result<()> {
        self.check()?;
        self.inner.put_bytes(spec, data)
    }
    fn put_entry(&self, spec: ItemSpec) -> Result<()> {
        self.check()?;
        self.inner.put_entry(spec)
    }
    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.inner.set_source_info(source, info)
    }
    fn gap(&self, gap: crate::model::Gap) {
        self.inner.gap(gap)
    }
    fn retract(&self, name: &str) -> bool {
        self.inner.retract(name)
    }
    fn parent_source_info(&self, source: &str) -> Option<serde_json::Value> {
        self.inner.parent_source_info(source)
    }
    fn put_unchanged(&self, spec: ItemSpec, size: u64) -> Result<bool> {
        self.check()?;
        self.inner.put_unchanged(spec, size)
    }
}
