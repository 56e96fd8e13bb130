//! Continuous binlog shipping (`mnbackup binlog --follow`, the daemon's `binlog` job): follow
//! the server over the replication protocol and commit every segment as a batch of its own the
//! moment it is cut, so the recovery point is one segment (`[binlog] segment_seconds`) behind
//! the server.
//!
//! - A lost connection is retried with a growing pause (1 s to 30 s); the follower resumes
//!   after the last committed segment (nothing stored twice, nothing skipped).
//! - A gap (purged binlog, `RESET MASTER`, a restart after a crash) is committed as a batch
//!   with the gap at once. After a purge or reset the follower waits for the next snapshot and
//!   starts a new chain from its point; after a crash restart it keeps following (the segments
//!   after the gap form a new chain that the next snapshot makes recoverable).
//! - Stopping (SIGTERM, the `stop` channel) ships the open segment as a final short one (when
//!   it ends at a transaction boundary) and returns.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, Result};
use chrono::{DateTime, Utc};

use super::binlog::{capture_config, load_series, resume_point};
use super::Env;
use crate::engines::binlog::series::{self, BatchInfo, GapRecord, StoredSegment};
use crate::engines::binlog::{
    capture, BinlogPos, CaptureError, CaptureMode, Gap, SegmentInfo, SegmentSink,
};
use crate::model::{ItemSink, ItemSpec};
use crate::repo::writer::SnapshotWriter;

/// What the follower is doing, for the daemon's health check and the log.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    /// Following the server right now.
    pub connected: bool,
    /// Segments committed since the follower started.
    pub segments: u64,
    /// Time of the newest committed event.
    pub newest_event: Option<DateTime<Utc>>,
    /// When the last segment was committed.
    pub last_commit: Option<DateTime<Utc>>,
    /// The last error (cleared by the next commit).
    pub last_error: Option<String>,
    /// The last gap recorded.
    pub gap: Option<String>,
    /// Where the next segment starts.
    pub position: Option<BinlogPos>,
}

/// The follower's events, for the caller's log.
pub trait FollowLog: Sync {
    fn event(&self, what: &str);
}

/// Discards the events.
pub struct Quiet;

impl FollowLog for Quiet {
    fn event(&self, _what: &str) {}
}

/// Commits every segment (and every gap) as a batch of its own.
struct CommitSink<'a> {
    env: &'a Env<'a>,
    /// Where the next batch starts (the previous batch's resume).
    start: BinlogPos,
    status: &'a Mutex<FollowStatus>,
}

impl CommitSink<'_> {
    /// Commit one batch: the segment (if any) and the gap (if any), starting at `self.start`.
    fn commit(&mut self, seg: Option<(&SegmentInfo, &[u8])>, gap: Option<&Gap>) -> Result<()> {
        let repo = &self.env.repo;
        let _lock = repo.lock_writer("binlog --follow", self.env.lock_wait)?;
        let writer = SnapshotWriter::new(
            repo.clone(),
            self.env.config.codec_policy(),
            super::snapshot::sig_cache(self.env.config, repo),
            None,
            None,
        )?;
        let mut segments = Vec::new();
        let mut resume = self.start.clone();
        if let Some((info, data)) = seg {
            let item = series::item_name(info);
            writer.put_bytes(ItemSpec::content(item.clone(), false), data)?;
            segments.push(StoredSegment {
                item,
                info: info.clone(),
            });
            resume = BinlogPos {
                file: info.server_file.clone(),
                pos: info.end_pos,
                gtid_pos: info.gtid_pos_end.clone(),
            };
        }
        let batch = BatchInfo {
            format: 1,
            start: Some(self.start.clone()),
            segments,
            resume: Some(resume.clone()),
            gaps: gap
                .iter()
                .map(|g| GapRecord {
                    gap: (*g).clone(),
                    detected: Utc::now(),
                    breaks_chain: g.breaks_chain(),
                })
                .collect(),
        };
        writer.set_source_info(series::SOURCE, serde_json::to_value(&batch)?);
        writer.commit(
            crate::repo::lock::hostname(),
            series::SOURCE.into(),
            vec![series::SOURCE.into()],
        )?;
        self.start = resume;
        Ok(())
    }
}

impl SegmentSink for CommitSink<'_> {
    fn put_segment(&mut self, info: &SegmentInfo, data: &[u8]) -> Result<()> {
        self.commit(Some((info, data)), None)?;
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.segments += 1;
        st.newest_event = Some(series::ts(info.last_time));
        st.last_commit = Some(Utc::now());
        st.last_error = None;
        st.position = Some(self.start.clone());
        Ok(())
    }

    fn note_gap(&mut self, gap: &Gap) -> Result<()> {
        self.commit(None, Some(gap))?;
        self.status.lock().unwrap_or_else(|p| p.into_inner()).gap = Some(gap.to_string());
        Ok(())
    }
}

/// Wait up to `d`, or until `stop` turns true; returns whether to stop.
fn pause(stop: &tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < d {
        if *stop.borrow() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100).min(d));
    }
    *stop.borrow()
}

/// Follow the server until `stop` turns true, committing each segment as it is cut. Returns
/// only when stopped (or on a setup error: no `[mariadb]` section, an unreadable repository
/// at start); every other error is logged and retried.
pub fn follow(
    env: &Env,
    stop: tokio::sync::watch::Receiver<bool>,
    status: &Mutex<FollowStatus>,
    log: &dyn FollowLog,
) -> Result<()> {
    let mcfg =
        env.config.mariadb.as_ref().ok_or_else(|| {
            anyhow!("no [mariadb] section: binlog shipping needs the source server")
        })?;
    let bcfg = env.config.binlog.clone().unwrap_or_default();
    let ccfg = capture_config(&bcfg);
    let opts = mcfg.resolve()?.opts()?;
    let rt = crate::engines::mariadb::component::runtime()?;
    let mut start: Option<BinlogPos> = None;
    let mut backoff = Duration::from_secs(1);
    let set_error = |msg: String| {
        let mut st = status.lock().unwrap_or_else(|p| p.into_inner());
        st.connected = false;
        st.last_error = Some(msg);
    };
    while !*stop.borrow() {
        let from = match start.clone() {
            Some(s) => s,
            None => match load_series(&env.repo).and_then(|s| resume_point(&s)) {
                Ok(p) => p,
                Err(e) => {
                    let msg = format!("{e:#}");
                    log.event(&format!("binlog follower waiting: {msg}"));
                    set_error(msg);
                    if pause(&stop, Duration::from_secs(5)) {
                        break;
                    }
                    continue;
                }
            },
        };
        let mut sink = CommitSink {
            env,
            start: from.clone(),
            status,
        };
        status.lock().unwrap_or_else(|p| p.into_inner()).connected = true;
        log.event(&format!(
            "binlog follower: following from {}:{}",
            from.file, from.pos
        ));
        let r = rt.block_on(capture(
            opts.clone(),
            &ccfg,
            &from,
            CaptureMode::Follow(stop.clone()),
            &mut sink,
        ));
        start = Some(sink.start.clone());
        status.lock().unwrap_or_else(|p| p.into_inner()).connected = false;
        match r {
            Ok(o) => {
                if !o.segments.is_empty() {
                    backoff = Duration::from_secs(1);
                }
                if !*stop.borrow() {
                    log.event("binlog follower: the server ended the stream; reconnecting");
                    if pause(&stop, backoff) {
                        break;
                    }
                }
            }
            Err(CaptureError::Gap(g)) => {
                log.event(&format!(
                    "binlog follower: {g}; recorded; waiting for the next snapshot to start a \
                     new chain"
                ));
                if let Err(e) = sink.note_gap(&g) {
                    set_error(format!("recording the gap ({g}): {e:#}"));
                    if pause(&stop, backoff) {
                        break;
                    }
                    continue;
                }
                set_error(g.to_string());
                // The chain is broken: start again from the next snapshot's point.
                start = None;
                if pause(&stop, Duration::from_secs(5)) {
                    break;
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                log.event(&format!(
                    "binlog follower: {msg}; retrying in {} s",
                    backoff.as_secs()
                ));
                set_error(msg);
                if pause(&stop, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    Ok(())
}
