//! Segments: a run of whole transactions of one server binlog file, written in the binlog
//! file format `mariadb-binlog` reads (magic, the file's Format_description event, events),
//! with a typed description of what is in it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::event::{kind, Gtid, RawEvent, BINLOG_MAGIC};

/// Where a segment's events come from and what they cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Ordinal of the segment within one capture run (0, 1, ...).
    pub seq: u64,
    /// `server_id` of the source server (from the events).
    pub source_server_id: u32,
    /// Binlog file on the server the events were read from (`binlog.000003`).
    pub server_file: String,
    /// Position on the server of the first event in the segment.
    pub first_pos: u64,
    /// Position on the server just after the last event (where the next segment resumes).
    pub end_pos: u64,
    /// First and last GTID of the transactions in the segment (none for a segment of only
    /// non-transactional events).
    pub first_gtid: Option<Gtid>,
    pub last_gtid: Option<Gtid>,
    /// The replication position after the segment: the last GTID of every domain seen so far
    /// (MariaDB's `gtid_binlog_pos` form), so a capture can resume from it.
    pub gtid_pos_end: Vec<Gtid>,
    /// Event timestamps (seconds since the epoch, UTC) of the first and last event.
    pub first_time: u32,
    pub last_time: u32,
    /// Transactions (GTID groups) and events in the segment.
    pub transactions: u64,
    pub events: u64,
    /// Size of the segment file in bytes.
    pub bytes: u64,
}

/// Where capture delivers finished segments. The later integration stores them as items of a
/// binlog series in the repository; [`DirSink`] writes files for tests and tools.
pub trait SegmentSink: Send {
    /// Store one finished segment (`data` is a complete binlog file). A segment is only
    /// considered shipped once this returns `Ok`; capture resumes after the last shipped one.
    fn put_segment(&mut self, info: &SegmentInfo, data: &[u8]) -> anyhow::Result<()>;

    /// A chain-breaking gap seen while following (a server restart after a crash), after the
    /// segments before it were stored. A continuous follower records it at once; the default
    /// does nothing (a `--once` run records the gaps of its outcome when it commits).
    fn note_gap(&mut self, _gap: &super::gaps::Gap) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Writes `NNNNNNNN-<server file>-<first pos>.binlog` and a `.json` beside it with the
/// [`SegmentInfo`]; the `.json` is written last (a segment without one is incomplete).
#[derive(Debug, Clone)]
pub struct DirSink {
    pub dir: PathBuf,
    /// What was stored, in order.
    pub stored: Vec<(SegmentInfo, PathBuf)>,
}

impl DirSink {
    pub fn new(dir: impl Into<PathBuf>) -> anyhow::Result<DirSink> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(DirSink {
            dir,
            stored: Vec::new(),
        })
    }

    /// The complete segments in a directory written by a `DirSink`, in order.
    pub fn list(dir: &Path) -> anyhow::Result<Vec<(SegmentInfo, PathBuf)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let info: SegmentInfo = serde_json::from_slice(&std::fs::read(&p)?)?;
                out.push((info, p.with_extension("binlog")));
            }
        }
        out.sort_by_key(|(i, _)| i.seq);
        Ok(out)
    }
}

impl SegmentSink for DirSink {
    fn put_segment(&mut self, info: &SegmentInfo, data: &[u8]) -> anyhow::Result<()> {
        let stem = format!("{:08}-{}-{}", info.seq, info.server_file, info.first_pos);
        let bin = self.dir.join(format!("{stem}.binlog"));
        std::fs::write(&bin, data)?;
        let json = self.dir.join(format!("{stem}.json"));
        let tmp = self.dir.join(format!("{stem}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(&tmp, &json)?;
        self.stored.push((info.clone(), bin));
        Ok(())
    }
}

/// Accumulates the events of one segment.
#[derive(Debug)]
pub(crate) struct SegmentBuilder {
    data: Vec<u8>,
    info: SegmentInfo,
    /// Events after the Format_description event.
    pub(crate) events: u64,
    /// Inside a transaction group (cut only outside).
    pub(crate) in_group: bool,
    standalone: bool,
}

impl SegmentBuilder {
    /// Start a segment of `server_file` with that file's Format_description event.
    pub(crate) fn new(seq: u64, server_file: &str, fde: &RawEvent, gtid_pos: &[Gtid]) -> Self {
        let mut fde = fde.clone();
        fde.clear_in_use();
        let mut data = BINLOG_MAGIC.to_vec();
        data.extend_from_slice(&fde.0);
        SegmentBuilder {
            data,
            info: SegmentInfo {
                seq,
                source_server_id: fde.server_id(),
                server_file: server_file.to_string(),
                first_pos: 0,
                end_pos: 0,
                first_gtid: None,
                last_gtid: None,
                gtid_pos_end: gtid_pos.to_vec(),
                first_time: 0,
                last_time: 0,
                transactions: 0,
                events: 0,
                bytes: 0,
            },
            events: 0,
            in_group: false,
            standalone: false,
        }
    }

    /// Bytes so far.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// Append an event (already checksum-verified; `crc` says whether it carries one).
    pub(crate) fn push(&mut self, ev: &RawEvent, crc: bool) {
        let i = &mut self.info;
        if self.events == 0 {
            i.first_pos = ev.start_pos();
            i.first_time = ev.timestamp();
        }
        i.end_pos = u64::from(ev.log_pos());
        i.last_time = i.last_time.max(ev.timestamp());
        self.events += 1;
        if let Some((g, standalone)) = ev.gtid() {
            i.first_gtid.get_or_insert(g);
            i.last_gtid = Some(g);
            i.transactions += 1;
            match i.gtid_pos_end.iter_mut().find(|x| x.domain == g.domain) {
                Some(x) => *x = g,
                None => i.gtid_pos_end.push(g),
            }
            self.in_group = true;
            self.standalone = standalone;
        } else if self.in_group {
            let ends = match ev.kind() {
                kind::XID => true,
                kind::QUERY => {
                    self.standalone
                        || ev.query(crc).is_some_and(|(_, q)| {
                            let q = q.trim().to_ascii_uppercase();
                            q == "COMMIT" || q.starts_with("ROLLBACK")
                        })
                }
                _ => false,
            };
            if ends {
                self.in_group = false;
            }
        }
        self.data.extend_from_slice(&ev.0);
    }

    /// The finished segment: its info and its binlog file bytes.
    pub(crate) fn finish(mut self) -> (SegmentInfo, Vec<u8>) {
        self.info.events = self.events;
        self.info.bytes = self.data.len() as u64;
        (self.info, self.data)
    }
}
