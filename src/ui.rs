//! Terminal output: progress bars on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::writer::Progress;

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// Progress of a snapshot: an indicatif spinner with throughput on a terminal, a log line every
/// few seconds otherwise.
pub struct SnapshotProgress {
    bar: Option<ProgressBar>,
    last_log: Mutex<Instant>,
    total: std::sync::atomic::AtomicU64,
    start: Instant,
}

impl SnapshotProgress {
    pub fn new(quiet: bool) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {bytes} ({binary_bytes_per_sec}) {wide_msg}",
                )
                .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            Some(b)
        } else {
            None
        };
        SnapshotProgress {
            bar,
            last_log: Mutex::new(Instant::now()),
            total: 0.into(),
            start: Instant::now(),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress for SnapshotProgress {
    fn item(&self, name: &str) {
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
        } else {
            tracing::debug!("storing {name}");
        }
    }

    fn bytes(&self, n: u64) {
        let t = self
            .total
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            + n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else {
            let mut last = self.last_log.lock().unwrap();
            if last.elapsed() >= Duration::from_secs(10) {
                *last = Instant::now();
                let secs = self.start.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    "{} processed ({}/s)",
                    bytes(t),
                    bytes((t as f64 / secs) as u64)
                );
            }
        }
    }
}
