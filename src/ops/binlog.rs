//! The binlog series in the repository: ship what is new (`mnbackup binlog --once`, the daemon's
//! `binlog` job), read the series back (chains, bases, recoverable ranges, RPO age) and replay a
//! point-in-time plan after a restore (`restore --until`).
//!
//! A shipping run is one manifest with trigger `binlog` (see `engines::binlog::series`); it is
//! not a snapshot: `latest`, the delta parent and retention policies skip it.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};

use super::Env;
use crate::config::BinlogConfig;
use crate::engines::binlog::series::{
    self, Base, BatchInfo, Chain, GapRecord, PitrPlan, StoredSegment,
};
use crate::engines::binlog::{
    capture, check_resume, replay, AppliedEvent, BinlogPos, CaptureConfig, CaptureError,
    CaptureMode, Gap, ReplayOptions, ReplayReport, SegmentInfo, SegmentSink, StopAt,
};
use crate::model::mariadb_info::MariadbInfo;
use crate::model::{ItemSink, ItemSpec, Manifest};
use crate::repo::reader::{find_item, ItemReader};
use crate::repo::writer::SnapshotWriter;
use crate::repo::Repo;

/// Whether a manifest is a binlog batch (not a snapshot).
pub fn is_batch(m: &Manifest) -> bool {
    m.trigger == series::SOURCE
}

/// The series as stored: batches (oldest first), the snapshots a replay can start from, chains.
#[derive(Debug, Default)]
pub struct Series {
    pub batches: Vec<(String, BatchInfo)>,
    pub bases: Vec<Base>,
    pub chains: Vec<Chain>,
}

impl Series {
    /// Time of the newest shipped event.
    pub fn newest_event(&self) -> Option<DateTime<Utc>> {
        self.batches
            .iter()
            .flat_map(|(_, b)| b.segments.iter())
            .map(|s| series::ts(s.info.last_time))
            .max()
    }

    /// Gaps recorded, oldest first.
    pub fn gaps(&self) -> Vec<&GapRecord> {
        self.batches
            .iter()
            .flat_map(|(_, b)| b.gaps.iter())
            .collect()
    }
}

/// The base a snapshot offers: its MariaDB consistent point with a binlog position.
pub fn base_of(m: &Manifest) -> Option<Base> {
    if is_batch(m) || m.trigger == "safety" {
        return None;
    }
    let info: MariadbInfo = serde_json::from_value(m.sources.get("mariadb")?.clone()).ok()?;
    let b = info.point.binlog?;
    let gtid_pos =
        crate::engines::binlog::event::parse_gtid_list(b.gtid_binlog_pos.as_deref().unwrap_or(""))
            .unwrap_or_default();
    Some(Base {
        id: m.id.clone(),
        point: BinlogPos {
            file: b.file?,
            pos: b.position?,
            gtid_pos,
        },
        finished: info.finished,
    })
}

/// Read the series from the repository (damaged manifests are left out).
pub fn load_series(repo: &Repo) -> Result<Series> {
    let mut s = Series::default();
    for m in repo.load_all()?.into_iter().flatten() {
        if is_batch(&m) {
            let v = m.sources.get(series::SOURCE).cloned().unwrap_or_default();
            let b: BatchInfo = serde_json::from_value(v)
                .with_context(|| format!("reading the binlog batch {}", m.id))?;
            s.batches.push((m.id.clone(), b));
        } else if let Some(b) = base_of(&m) {
            s.bases.push(b);
        }
    }
    s.chains = series::chains(&s.batches);
    Ok(s)
}

/// Where the next shipping run starts: after the last batch, or (no batch yet, or the last one
/// ended in a chain-breaking gap) at the newest snapshot's point taken after it.
pub fn resume_point(s: &Series) -> Result<BinlogPos> {
    let last = s.batches.last().map(|(_, b)| b);
    let broken_at = last.and_then(|b| b.gaps.iter().find(|g| g.breaks_chain).map(|g| g.detected));
    if let (Some(b), None) = (last, broken_at) {
        if let Some(r) = b.resume.clone().or_else(|| b.start.clone()) {
            return Ok(r);
        }
    }
    s.bases
        .iter()
        .filter(|b| broken_at.is_none_or(|t| b.finished > t))
        .max_by_key(|b| b.finished)
        .map(|b| b.point.clone())
        .ok_or_else(|| {
            anyhow!(match broken_at {
                Some(_) =>
                    "the binlog chain is broken (see `mnbackup list --binlog`) and no \
                            snapshot was taken since; take one (`mnbackup snapshot`) to start a \
                            new chain",
                None =>
                    "no snapshot with a MariaDB binlog position yet: take one (`mnbackup \
                         snapshot`, with log_bin on) before shipping the binlog",
            })
        })
}

/// What one shipping run did.
#[derive(Debug)]
pub struct ShipOutcome {
    pub start: BinlogPos,
    /// The committed batch, if anything was shipped or a gap recorded.
    pub manifest: Option<String>,
    pub segments: Vec<SegmentInfo>,
    pub gap: Option<Gap>,
}

/// Stores each finished segment as an item of the batch.
struct RepoSink<'a> {
    writer: &'a SnapshotWriter,
    stored: Vec<StoredSegment>,
}

impl SegmentSink for RepoSink<'_> {
    fn put_segment(&mut self, info: &SegmentInfo, data: &[u8]) -> Result<()> {
        let item = series::item_name(info);
        self.writer
            .put_bytes(ItemSpec::content(item.clone(), false), data)?;
        self.stored.push(StoredSegment {
            item,
            info: info.clone(),
        });
        Ok(())
    }
}

/// The capture settings of `[binlog]`.
pub fn capture_config(c: &BinlogConfig) -> CaptureConfig {
    CaptureConfig {
        server_id: c.server_id,
        segment_seconds: c.segment_seconds.max(1),
        segment_bytes: c.segment_bytes.max(4096),
        heartbeat_seconds: 5,
    }
}

/// Ship what the server has beyond the last stored segment, as one batch (`binlog --once`), or
/// follow until `stop` turns true (the daemon). A gap is recorded in a batch of its own and
/// returned in the outcome.
pub fn ship(env: &Env, stop: Option<tokio::sync::watch::Receiver<bool>>) -> Result<ShipOutcome> {
    let repo = &env.repo;
    let mcfg =
        env.config.mariadb.as_ref().ok_or_else(|| {
            anyhow!("no [mariadb] section: binlog shipping needs the source server")
        })?;
    let bcfg = env.config.binlog.clone().unwrap_or_default();
    let opts = mcfg.resolve()?.opts()?;
    let _lock = repo.lock(true, "binlog", env.lock_wait)?;
    repo.clean_leftovers()?;
    let s = load_series(repo)?;
    let start = resume_point(&s)?;
    let writer = SnapshotWriter::new(
        repo.clone(),
        env.config.codec_policy(),
        super::snapshot::sig_cache(env.config, repo),
        None,
        None,
    )?;
    let rt = crate::engines::mariadb::component::runtime()?;
    let mut sink = RepoSink {
        writer: &writer,
        stored: Vec::new(),
    };
    let result: Result<Option<Gap>> = rt.block_on(async {
        let mut conn = mysql_async::Conn::new(opts.clone())
            .await
            .context("connecting to the source MariaDB for binlog shipping")?;
        if let Some(g) = check_resume(&mut conn, &start).await? {
            return Ok(Some(g));
        }
        drop(conn);
        let mode = match stop {
            Some(rx) => CaptureMode::Follow(rx),
            None => CaptureMode::Once,
        };
        match capture(opts, &capture_config(&bcfg), &start, mode, &mut sink).await {
            Ok(o) => Ok(o.gaps.into_iter().find(Gap::breaks_chain)),
            Err(CaptureError::Gap(g)) => Ok(Some(g)),
            Err(e) => Err(anyhow::Error::new(e)),
        }
    });
    let stored = std::mem::take(&mut sink.stored);
    let gap = match &result {
        Ok(g) => g.clone(),
        Err(_) => None,
    };
    let outcome = commit_batch(writer, start, stored, gap)?;
    result.map(|_| outcome)
}

/// Commit the batch (or abandon it when it holds nothing).
fn commit_batch(
    writer: SnapshotWriter,
    start: BinlogPos,
    stored: Vec<StoredSegment>,
    gap: Option<Gap>,
) -> Result<ShipOutcome> {
    let segments: Vec<SegmentInfo> = stored.iter().map(|s| s.info.clone()).collect();
    if stored.is_empty() && gap.is_none() {
        writer.abort()?;
        return Ok(ShipOutcome {
            start,
            manifest: None,
            segments,
            gap,
        });
    }
    let resume = stored
        .last()
        .map(|s| BinlogPos {
            file: s.info.server_file.clone(),
            pos: s.info.end_pos,
            gtid_pos: s.info.gtid_pos_end.clone(),
        })
        .unwrap_or_else(|| start.clone());
    let info = BatchInfo {
        format: 1,
        start: Some(start.clone()),
        segments: stored,
        resume: Some(resume),
        gaps: gap
            .iter()
            .map(|g| GapRecord {
                gap: g.clone(),
                detected: Utc::now(),
                breaks_chain: g.breaks_chain(),
            })
            .collect(),
    };
    writer.set_source_info(series::SOURCE, serde_json::to_value(&info)?);
    let m = writer.commit(
        crate::repo::lock::hostname(),
        series::SOURCE.into(),
        vec![series::SOURCE.into()],
    )?;
    Ok(ShipOutcome {
        start,
        manifest: Some(m.id),
        segments,
        gap,
    })
}

/// How the replay reaches the target server.
#[derive(Debug, Clone, Default)]
pub struct ReplayTarget {
    pub client_args: Vec<String>,
    pub password: Option<String>,
    /// Only these databases (those restored); `None`: all.
    pub databases: Option<Vec<String>>,
    pub rename: Vec<(String, String)>,
    /// Record progress on the target under this key (resumable; see
    /// `engines::binlog::replay::PROGRESS_TABLE`).
    pub progress: Option<String>,
    /// Continue after this transaction (a resumed replay) instead of the base's point.
    pub resume_from: Option<AppliedEvent>,
}

impl ReplayTarget {
    /// The replay options for this target (stop and start set by [`replay_plan`]).
    pub fn options(&self) -> ReplayOptions {
        ReplayOptions {
            binlog_tool: None,
            client: None,
            client_args: self.client_args.clone(),
            password: self.password.clone(),
            start: None,
            stop: StopAt::End,
            databases: self.databases.clone(),
            rename: self.rename.clone(),
            skip_target_binlog: false,
            progress: self.progress.clone(),
        }
    }
}

/// Where a resumable replay under `key` stands on the target.
pub fn applied_on_target(t: &ReplayTarget, key: &str) -> Result<Option<AppliedEvent>> {
    Ok(replay::applied_on_target(&t.options(), key)?)
}

/// Forget the progress of a finished (or restarted) replay on the target.
pub fn clear_progress(t: &ReplayTarget, key: &str) -> Result<()> {
    Ok(replay::clear_progress(&t.options(), key)?)
}

/// The stop of a plan.
pub fn stop_of(p: &PitrPlan) -> StopAt {
    match &p.until {
        series::Until::Time(t) => StopAt::DateTime(*t),
        series::Until::Gtid(g) => StopAt::Gtid {
            gtid: *g,
            inclusive: true,
        },
        series::Until::Latest => StopAt::End,
    }
}

/// Replay the plan's segments into the target (after the base snapshot was restored).
pub fn replay_plan(repo: &Repo, p: &PitrPlan, t: &ReplayTarget) -> Result<ReplayReport> {
    let dir = tempfile::tempdir().context("a temporary directory for the segments")?;
    let mut segs: Vec<(SegmentInfo, PathBuf)> = Vec::new();
    let mut loaded: Option<Manifest> = None;
    for (i, l) in p.links.iter().enumerate() {
        if loaded.as_ref().is_none_or(|m| m.id != l.manifest) {
            loaded = Some(repo.load_manifest(&l.manifest)?);
        }
        let m = loaded.as_ref().expect("loaded");
        let item = find_item(m, &l.segment.item)?;
        let path = dir.path().join(format!("{i:08}.binlog"));
        let mut f = std::fs::File::create(&path)?;
        std::io::copy(&mut ItemReader::new(repo, item), &mut f)
            .with_context(|| format!("reading {} of {}", l.segment.item, l.manifest))?;
        segs.push((l.segment.info.clone(), path));
    }
    let start = match &t.resume_from {
        Some(a) => BinlogPos {
            file: a.file.clone(),
            pos: a.end_pos,
            gtid_pos: Vec::new(),
        },
        None => p.base.point.clone(),
    };
    let opts = ReplayOptions {
        start: Some(start),
        stop: stop_of(p),
        ..t.options()
    };
    Ok(replay::replay(&segs, &opts)?)
}

/// The mariadb client arguments for a connection.
pub fn client_args(p: &crate::engines::mariadb::config::ConnParams) -> Vec<String> {
    let mut a = Vec::new();
    match &p.socket {
        Some(s) => a.push(format!("--socket={}", s.display())),
        None => {
            a.push(format!(
                "--host={}",
                p.host.as_deref().unwrap_or("127.0.0.1")
            ));
            a.push(format!("--port={}", p.port.unwrap_or(3306)));
            a.push("--protocol=TCP".into());
        }
    }
    a.push(format!("--user={}", p.user()));
    a
}
