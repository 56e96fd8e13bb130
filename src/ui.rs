//! Terminal output: progress bars on a terminal, plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::ops::progress::Progress;

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// Progress of a snapshot: an indicatif spinner with throughput on a terminal (a bar with an
/// ETA when the size is estimated from the parent snapshot), a log line every 10 s otherwise.
pub struct SnapshotProgress {
    bar: Option<ProgressBar>,
    last_log: Mutex<Instant>,
    total: std::sync::atomic::AtomicU64,
    /// The estimated size (the parent snapshot's), 0 when unknown.
    estimate: std::sync::atomic::AtomicU64,
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
            estimate: 0.into(),
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
    /// A phase with a known size (a copy) turns the spinner into a bar with an ETA.
    fn phase(&self, name: &str, total: Option<u64>) {
        self.estimate
            .store(total.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        let Some(b) = &self.bar else {
            if let Some(t) = total {
                tracing::info!(
                    "{name}: about {} to read (the last snapshot's size)",
                    bytes(t)
                );
            }
            return;
        };
        let Some(t) = total else {
            return;
        };
        b.set_length(t);
        b.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, \
                 eta {eta})",
            )
            .expect("valid template"),
        );
    }

    fn note(&self, name: &str) {
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
        } else {
            tracing::debug!("storing {name}");
        }
    }

    fn advance(&self, n: u64) {
        let t = self
            .total
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
            + n;
        if let Some(b) = &self.bar {
            b.inc(n);
            // More than estimated: the total grows with it (the ETA stays meaningful).
            if b.length().is_some_and(|l| b.position() > l) {
                b.set_length(b.position());
            }
        } else {
            let mut last = self.last_log.lock().unwrap();
            if last.elapsed() >= Duration::from_secs(10) {
                *last = Instant::now();
                let secs = self.start.elapsed().as_secs_f64().max(0.001);
                let rate = t as f64 / secs;
                let est = self.estimate.load(std::sync::atomic::Ordering::Relaxed);
                let eta = if est > t && rate > 0.0 {
                    format!(
                        " of about {}, eta {}s",
                        bytes(est),
                        ((est - t) as f64 / rate).ceil() as u64
                    )
                } else {
                    String::new()
                };
                tracing::info!("{} processed{eta} ({}/s)", bytes(t), bytes(rate as u64));
            }
        }
    }
}

/// Progress of restore, export, prune, verify and the drill, step by step. On a terminal
/// (stderr): an indicatif bar per step with bytes, rate and ETA (a spinner when the step's size is
/// unknown). Otherwise plain lines on stderr: one when a step starts and one every 10 s while it
/// runs. Notes go to stdout as lines. `quiet` shows nothing; `json` keeps the notes off stdout.
pub struct StepProgress {
    quiet: bool,
    json: bool,
    tty: bool,
    state: Mutex<StepState>,
}

struct StepState {
    bar: Option<ProgressBar>,
    name: String,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

/// Seconds between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(10);

impl StepProgress {
    pub fn new(quiet: bool, json: bool) -> Self {
        StepProgress {
            quiet,
            json,
            tty: !quiet && std::io::stderr().is_terminal(),
            state: Mutex::new(StepState {
                bar: None,
                name: String::new(),
                total: None,
                done: 0,
                started: Instant::now(),
                last_line: Instant::now(),
            }),
        }
    }

    fn new_bar(name: &str, total: Option<u64>) -> ProgressBar {
        let (b, t) = match total {
            Some(n) => (
                ProgressBar::new(n),
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta})",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{spinner} {msg} {elapsed_precise} {bytes} ({binary_bytes_per_sec})",
            ),
        };
        b.set_style(ProgressStyle::with_template(t).expect("valid template"));
        b.set_message(name.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        b
    }

    /// End the current step's bar (left on screen).
    pub fn finish(&self) {
        if let Some(b) = self.state.lock().unwrap().bar.take() {
            b.finish();
        }
    }

    fn line(st: &StepState) -> String {
        let secs = st.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes((st.done as f64 / secs) as u64);
        match st.total {
            Some(t) => format!("{}: {} of {} ({rate}/s)", st.name, bytes(st.done), bytes(t)),
            None => format!("{}: {} ({rate}/s)", st.name, bytes(st.done)),
        }
    }
}

impl Progress for StepProgress {
    fn phase(&self, name: &str, total_bytes: Option<u64>) {
        if self.quiet {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if let Some(b) = st.bar.take() {
            b.finish();
        }
        st.name = name.to_string();
        st.total = total_bytes;
        st.done = 0;
        st.started = Instant::now();
        st.last_line = Instant::now();
        if self.tty {
            st.bar = Some(Self::new_bar(name, total_bytes));
        } else {
            match total_bytes {
                Some(t) => eprintln!("{name}: {}", bytes(t)),
                None => eprintln!("{name}"),
            }
        }
    }
    fn advance(&self, n: u64) {
        if self.quiet {
            return;
        }
        let mut st = self.state.lock().unwrap();
        st.done += n;
        if let Some(b) = &st.bar {
            b.inc(n);
        } else if st.last_line.elapsed() >= LINE_EVERY {
            st.last_line = Instant::now();
            eprintln!("{}", Self::line(&st));
        }
    }
    fn note(&self, msg: &str) {
        if self.quiet || self.json {
            return;
        }
        match &self.state.lock().unwrap().bar {
            Some(b) => b.suspend(|| println!("{msg}")),
            None => println!("{msg}"),
        }
    }
}

impl Drop for StepProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Whether stderr is connected to the systemd journal: `JOURNAL_STREAM` (set by systemd for a
/// service's stdout/stderr stream) names stderr's device and inode.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on fd 2 into a properly sized, zeroed struct.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// The journald priority prefix (`sd-daemon(3)`) of a log level: `<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug and trace. journald strips it and files the line under that
/// priority, so `journalctl -u mnbackup -p err` lists the failures.
pub fn journal_prefix(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "<3>",
        tracing::Level::WARN => "<4>",
        tracing::Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// A log line formatter that puts the journald priority prefix before each line of another
/// formatter's output.
pub struct JournalPriority<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(journal_prefix(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}
