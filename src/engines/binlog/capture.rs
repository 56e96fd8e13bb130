//! Capture: follow a server's binlog over the replication protocol (as a replica with its own
//! `server_id`), verify every event's CRC32 and cut the events into segments.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};

use super::event::{kind, EventError, Gtid, RawEvent};
use super::gaps::{check_resume, BinlogPos, Gap};
use super::segment::{SegmentBuilder, SegmentInfo, SegmentSink};

/// MariaDB's "fatal error reading binlog" (purged or missing file, among others).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// How capture cuts and keeps in touch.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// `server_id` the capture registers with; unique among the server's replicas and
    /// different from every server's own id.
    pub server_id: u32,
    /// Close a segment this long after its first event (at the next transaction boundary).
    pub segment_seconds: u64,
    /// Close a segment once it has this many bytes (at the next transaction boundary).
    pub segment_bytes: u64,
    /// Heartbeat period asked from the server while following, so time cuts happen without
    /// traffic and a dead connection is noticed.
    pub heartbeat_seconds: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            server_id: 0x6d6e_6200, // "mnb\0"
            segment_seconds: 60,
            segment_bytes: 64 << 20,
            heartbeat_seconds: 5,
        }
    }
}

/// Until when capture runs.
#[derive(Debug)]
pub enum CaptureMode {
    /// Ship what is there now and stop (non-blocking dump, `binlog --once`).
    Once,
    /// Follow until the value in the channel becomes `true` (the daemon).
    Follow(tokio::sync::watch::Receiver<bool>),
}

/// What a capture run did.
#[derive(Debug, Clone, Default)]
pub struct CaptureOutcome {
    /// Segments shipped to the sink, in order.
    pub segments: Vec<SegmentInfo>,
    /// Where the next run resumes (after the last shipped segment), if anything was shipped.
    pub resume: Option<BinlogPos>,
    /// Discontinuities seen while following (server restarts).
    pub gaps: Vec<Gap>,
}

/// Why capture stopped early.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The chain cannot be continued from the requested position.
    #[error(transparent)]
    Gap(Gap),
    /// An event failed its CRC32 or was malformed: nothing after the last shipped segment
    /// is trusted.
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("binlog capture: server: {0}")]
    Server(#[from] mysql_async::Error),
    #[error("binlog capture: storing a segment: {0:#}")]
    Sink(anyhow::Error),
    #[error("binlog capture: {0:#}")]
    Other(#[from] anyhow::Error),
}

/// The event as the server sent it, byte for byte (mysql_common splits off the checksum).
fn raw_bytes(ev: &mysql_async::binlog::events::Event) -> Result<RawEvent, EventError> {
    let h = ev.header();
    let mut b = Vec::with_capacity(h.event_size() as usize);
    b.extend_from_slice(&h.timestamp().to_le_bytes());
    b.push(h.event_type_raw());
    b.extend_from_slice(&h.server_id().to_le_bytes());
    b.extend_from_slice(&h.event_size().to_le_bytes());
    b.extend_from_slice(&h.log_pos().to_le_bytes());
    b.extend_from_slice(&h.flags_raw().to_le_bytes());
    b.extend_from_slice(ev.data());
    let missing = (ev.header().event_size() as usize).saturating_sub(b.len());
    if ev.header().event_type_raw() == kind::FORMAT_DESCRIPTION && missing >= 1 {
        let alg = ev.footer().get_checksum_alg().ok().flatten();
        b.push(alg.map(|a| a as u8).unwrap_or(0));
    }
    if missing >= 4 {
        b.extend_from_slice(&ev.checksum().unwrap_or_default());
    }
    RawEvent::new(b)
}

/// State of one capture run.
struct Capturer<'a> {
    cfg: &'a CaptureConfig,
    sink: &'a mut dyn SegmentSink,
    out: CaptureOutcome,
    file: String,
    /// The file before `file` (named in restart gaps).
    prev_file: String,
    fde: Option<RawEvent>,
    crc: bool,
    /// Kind of the last event of the current file (Stop = clean shutdown).
    last_kind: u8,
    last_pos: u64,
    gtid_pos: Vec<Gtid>,
    seg: Option<(SegmentBuilder, Instant)>,
    next_seq: u64,
}

impl Capturer<'_> {
    fn flush(&mut self) -> Result<(), CaptureError> {
        let Some((b, _)) = self.seg.take() else {
            return Ok(());
        };
        if b.events == 0 {
            return Ok(());
        }
        let (info, data) = b.finish();
        self.sink
            .put_segment(&info, &data)
            .map_err(CaptureError::Sink)?;
        self.next_seq += 1;
        self.out.resume = Some(BinlogPos {
            file: info.server_file.clone(),
            pos: info.end_pos,
            gtid_pos: info.gtid_pos_end.clone(),
        });
        self.gtid_pos = info.gtid_pos_end.clone();
        self.out.segments.push(info);
        Ok(())
    }

    fn due(&self) -> bool {
        self.seg.as_ref().is_some_and(|(b, t)| {
            !b.in_group
                && b.events > 0
                && (b.len() as u64 >= self.cfg.segment_bytes
                    || t.elapsed() >= Duration::from_secs(self.cfg.segment_seconds))
        })
    }

    fn switch_file(&mut self, name: String) -> Result<(), CaptureError> {
        if name != self.file {
            self.flush()?;
            self.prev_file = std::mem::replace(&mut self.file, name);
        }
        Ok(())
    }

    fn on_fde(&mut self, ev: RawEvent) -> Result<(), CaptureError> {
        let info = ev
            .fde_info()
            .ok_or_else(|| anyhow::anyhow!("unreadable Format_description event"))?;
        self.crc = info.checksum_crc32;
        if self.crc {
            ev.verify_crc(&self.file)?;
        }
        let new_file = self
            .seg
            .as_ref()
            .map(|(b, _)| b.events == 0)
            .unwrap_or(true);
        if info.created != 0 && self.fde.is_some() && new_file && self.last_pos > 0 {
            let gap = Gap::Restart {
                previous: BinlogPos {
                    file: self.prev_file.clone(),
                    pos: self.last_pos,
                    gtid_pos: self.gtid_pos.clone(),
                },
                new_file: self.file.clone(),
                clean_shutdown: self.last_kind == kind::STOP,
            };
            if gap.breaks_chain() {
                self.flush()?;
                self.sink.note_gap(&gap).map_err(CaptureError::Sink)?;
            }
            self.out.gaps.push(gap);
        }
        self.fde = Some(ev);
        Ok(())
    }

    fn on_event(&mut self, ev: RawEvent) -> Result<(), CaptureError> {
        match ev.kind() {
            kind::ROTATE => {
                let crc = if ev.is_artificial() {
                    ev.has_valid_crc()
                } else {
                    if self.crc {
                        ev.verify_crc(&self.file)?;
                    }
                    self.crc
                };
                if let Some((name, _)) = ev.rotate_target(crc) {
                    if !ev.is_artificial() {
                        self.last_kind = kind::ROTATE;
                    }
                    self.switch_file(name)?;
                }
                return Ok(());
            }
            kind::FORMAT_DESCRIPTION => return self.on_fde(ev),
            kind::HEARTBEAT => return Ok(()),
            _ => {}
        }
        if self.crc {
            ev.verify_crc(&self.file)?;
        }
        if ev.is_artificial() {
            return Ok(());
        }
        if self.seg.is_none() {
            let fde = self
                .fde
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("event before any Format_description event"))?;
            let b = SegmentBuilder::new(self.next_seq, &self.file, fde, &self.gtid_pos);
            self.seg = Some((b, Instant::now()));
        }
        let (b, _) = self.seg.as_mut().expect("segment");
        b.push(&ev, self.crc);
        self.last_kind = ev.kind();
        self.last_pos = u64::from(ev.log_pos());
        if let Some((g, _)) = ev.gtid() {
            match self.gtid_pos.iter_mut().find(|x| x.domain == g.domain) {
                Some(x) => *x = g,
                None => self.gtid_pos.push(g),
            }
        }
        if self.due() {
            self.flush()?;
        }
        Ok(())
    }
}

/// Map a stream error: error 1236 at the start is a purge gap.
fn stream_error(e: mysql_async::Error, from: &BinlogPos) -> CaptureError {
    if let mysql_async::Error::Server(se) = &e {
        if se.code == ER_MASTER_FATAL_ERROR_READING_BINLOG {
            return CaptureError::Gap(Gap::Purged {
                wanted: from.clone(),
                oldest_available: None,
                server_message: Some(se.message.clone()),
            });
        }
    }
    CaptureError::Server(e)
}

async fn open_stream(
    opts: mysql_async::Opts,
    cfg: &CaptureConfig,
    from: &BinlogPos,
    follow: bool,
) -> Result<BinlogStream, CaptureError> {
    let mut conn = mysql_async::Conn::new(opts).await?;
    if let Some(gap) = check_resume(&mut conn, from).await? {
        return Err(CaptureError::Gap(gap));
    }
    // Receive MariaDB GTID events as they are (not rewritten for pre-GTID replicas).
    conn.query_drop("SET @mariadb_slave_capability = 4").await?;
    if follow {
        let ns = u64::from(cfg.heartbeat_seconds.max(1)) * 1_000_000_000;
        conn.query_drop(format!("SET @master_heartbeat_period = {ns}"))
            .await?;
    }
    let mut req = BinlogStreamRequest::new(cfg.server_id)
        .with_filename(from.file.as_bytes())
        .with_pos(from.pos.max(4));
    if !follow {
        req = req.with_non_blocking();
    }
    Ok(conn.get_binlog_stream(req).await?)
}

/// Follow the binlog from `from` (a position a snapshot or an earlier capture recorded) and
/// ship segments to `sink`. Returns what was shipped; on error, everything shipped before
/// stays valid and `from` for the next run is the last shipped segment's end.
pub async fn capture(
    opts: mysql_async::Opts,
    cfg: &CaptureConfig,
    from: &BinlogPos,
    mode: CaptureMode,
    sink: &mut dyn SegmentSink,
) -> Result<CaptureOutcome, CaptureError> {
    let (follow, mut stop) = match mode {
        CaptureMode::Once => (false, None),
        CaptureMode::Follow(rx) => (true, Some(rx)),
    };
    let mut stream = open_stream(opts, cfg, from, follow).await?;
    let mut c = Capturer {
        cfg,
        sink,
        out: CaptureOutcome::default(),
        file: from.file.clone(),
        prev_file: String::new(),
        fde: None,
        crc: false,
        last_kind: 0,
        last_pos: from.pos,
        gtid_pos: from.gtid_pos.clone(),
        seg: None,
        next_seq: 0,
    };
    let tick = Duration::from_secs(u64::from(cfg.heartbeat_seconds.max(1)));
    loop {
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            break;
        }
        let next = match stop.as_mut() {
            Some(s) => tokio::select! {
                n = tokio::time::timeout(tick, stream.next()) => n.ok(),
                _ = s.changed() => continue,
            },
            None => Some(stream.next().await),
        };
        match next {
            None => {} // tick without events: time cut below
            Some(None) => break,
            Some(Some(Err(e))) => {
                c.flush_complete()?;
                return Err(stream_error(e, from));
            }
            Some(Some(Ok(ev))) => c.on_event(raw_bytes(&ev)?)?,
        }
        if c.due() {
            c.flush()?;
        }
    }
    c.flush_complete()?;
    let _ = stream.close().await;
    Ok(c.out)
}

impl Capturer<'_> {
    /// At the end: ship the open segment if it ends at a transaction boundary; otherwise drop
    /// the partial transaction (the next run resumes before it).
    fn flush_complete(&mut self) -> Result<(), CaptureError> {
        if self.seg.as_ref().is_some_and(|(b, _)| b.in_group) {
            self.seg = None;
            return Ok(());
        }
        self.flush()
    }
}
