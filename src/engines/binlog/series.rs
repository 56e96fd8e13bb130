//! The binlog series of a repository: what a `binlog` manifest records (`sources.binlog`), the
//! chains its batches form, and the choice of base snapshot and segments for a point-in-time
//! restore. Pure logic over typed infos; the repository I/O is in `ops::binlog`.
//!
//! A shipping run (`mnbackup binlog --once`, or the daemon's `binlog` job) commits one manifest
//! with trigger `binlog`: its items are the segments (`binlog/NNNNNNNN-<file>-<pos>.binlog`, raw
//! binlog files `mariadb-binlog` reads) and `sources.binlog` is a [`BatchInfo`]. Consecutive
//! batches form a chain when one starts where the previous stopped and no chain-breaking gap lies
//! between them.

use std::cmp::Ordering;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::event::Gtid;
use super::gaps::{BinlogPos, Gap};
use super::segment::SegmentInfo;

/// Source name and manifest trigger of a binlog batch.
pub const SOURCE: &str = "binlog";
/// Item name prefix of segments.
pub const PREFIX: &str = "binlog/";

/// `sources.binlog` of a binlog manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchInfo {
    pub format: u32,
    /// Where this run started reading (the previous batch's `resume`, or a snapshot's point).
    pub start: Option<BinlogPos>,
    /// The segments, in order, with their item names.
    pub segments: Vec<StoredSegment>,
    /// Where the next run resumes.
    pub resume: Option<BinlogPos>,
    /// Discontinuities met by this run.
    pub gaps: Vec<GapRecord>,
}

/// One stored segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSegment {
    pub item: String,
    #[serde(flatten)]
    pub info: SegmentInfo,
}

/// A recorded discontinuity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapRecord {
    pub gap: Gap,
    /// When it was detected.
    pub detected: DateTime<Utc>,
    pub breaks_chain: bool,
}

/// The item name of a segment.
pub fn item_name(info: &SegmentInfo) -> String {
    format!(
        "{PREFIX}{:08}-{}-{}.binlog",
        info.seq, info.server_file, info.first_pos
    )
}

/// Order of two binlog positions of one server (file names `prefix.NNNNNN` sort as their
/// numbers; the fixed-width suffix keeps the string order).
pub fn cmp_pos(a: (&str, u64), b: (&str, u64)) -> Ordering {
    a.0.len()
        .cmp(&b.0.len())
        .then_with(|| a.0.cmp(b.0))
        .then(a.1.cmp(&b.1))
}

/// A segment with the batch (manifest) it is stored in.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub manifest: String,
    pub segment: StoredSegment,
}

/// A continuous run of segments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chain {
    /// Where the chain starts.
    pub start: Option<BinlogPos>,
    pub links: Vec<Link>,
    /// The gap that ended this chain (none: it is the open, newest chain or simply ends).
    pub ended_by: Option<GapRecord>,
}

impl Chain {
    /// Time of the first and last event in the chain.
    pub fn time_range(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let first = self.links.first()?.segment.info.first_time;
        let last = self.links.last()?.segment.info.last_time;
        Some((ts(first), ts(last)))
    }

    /// Where the chain ends (the next event's position).
    pub fn end(&self) -> Option<(&str, u64)> {
        self.links
            .last()
            .map(|l| (l.segment.info.server_file.as_str(), l.segment.info.end_pos))
    }

    /// Whether position `p` lies inside the chain (from its start to its end).
    pub fn covers(&self, p: (&str, u64)) -> bool {
        let (Some(s), Some(e)) = (&self.start, self.end()) else {
            return false;
        };
        cmp_pos((&s.file, s.pos), p) != Ordering::Greater && cmp_pos(p, e) != Ordering::Greater
    }
}

/// A timestamp of a binlog event.
pub fn ts(secs: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(i64::from(secs), 0)
        .single()
        .unwrap_or_default()
}

/// Build the chains from the batches, oldest manifest first.
pub fn chains(batches: &[(String, BatchInfo)]) -> Vec<Chain> {
    let mut out: Vec<Chain> = Vec::new();
    let mut cur = Chain::default();
    let mut last_resume: Option<BinlogPos> = None;
    for (id, b) in batches {
        let continues = match (&last_resume, &b.start) {
            (Some(r), Some(s)) => r.file == s.file && r.pos == s.pos,
            _ => false,
        };
        if !continues && !cur.links.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if cur.links.is_empty() {
            cur.start = b.start.clone();
        }
        for s in &b.segments {
            cur.links.push(Link {
                manifest: id.clone(),
                segment: s.clone(),
            });
        }
        if let Some(g) = b.gaps.iter().find(|g| g.breaks_chain) {
            cur.ended_by = Some(g.clone());
            if !cur.links.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur = Chain::default();
            last_resume = None;
            continue;
        }
        if b.resume.is_some() {
            last_resume = b.resume.clone();
        }
    }
    if !cur.links.is_empty() {
        out.push(cur);
    }
    out
}

/// A snapshot a point-in-time restore can start from.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    pub id: String,
    /// The consistent point's position.
    pub point: BinlogPos,
    /// When the snapshot's MariaDB part finished (the point lies before it).
    pub finished: DateTime<Utc>,
}

/// Where a point-in-time restore stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Until {
    /// Before the first transaction stamped at or after this time.
    Time(DateTime<Utc>),
    /// After this transaction.
    Gtid(Gtid),
    /// The newest shipped event.
    Latest,
}

/// The chosen base and segments.
#[derive(Debug, Clone, PartialEq)]
pub struct PitrPlan {
    pub base: Base,
    /// The segments to read, in order (the replay skips what lies before the base's point).
    pub links: Vec<Link>,
    pub until: Until,
    /// The last event time the chain reaches.
    pub chain_end: DateTime<Utc>,
}

/// Why no plan is possible, with the recoverable ranges to name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}; recoverable ranges: {}", describe_ranges(ranges))]
pub struct NoPlan {
    pub reason: String,
    pub ranges: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
}

fn describe_ranges(r: &[(String, DateTime<Utc>, DateTime<Utc>)]) -> String {
    if r.is_empty() {
        return "none (no snapshot with a binlog position is followed by shipped binlog)".into();
    }
    r.iter()
        .map(|(id, a, b)| format!("{a} .. {b} (from snapshot {id})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For each chain, the oldest base inside it and the chain's time range: the recoverable ranges.
pub fn recoverable(
    chains: &[Chain],
    bases: &[Base],
) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    for c in chains {
        let Some((_, end)) = c.time_range() else {
            continue;
        };
        if let Some(b) = bases
            .iter()
            .filter(|b| c.covers((&b.point.file, b.point.pos)))
            .min_by_key(|b| b.finished)
        {
            out.push((b.id.clone(), b.finished, end));
        }
    }
    out
}

/// Choose the newest base from which the chain is continuous to `until`.
pub fn plan(chains: &[Chain], bases: &[Base], until: &Until) -> Result<PitrPlan, NoPlan> {
    let mut ordered: Vec<&Base> = bases.iter().collect();
    ordered.sort_by_key(|b| std::cmp::Reverse(b.finished));
    let latest_chain = chains.iter().rev().find(|c| !c.links.is_empty());
    for b in ordered {
        let p = (b.point.file.as_str(), b.point.pos);
        for c in chains.iter().filter(|c| c.covers(p)) {
            let Some((_, end)) = c.time_range() else {
                continue;
            };
            let first = c
                .links
                .iter()
                .position(|l| {
                    let i = &l.segment.info;
                    cmp_pos((&i.server_file, i.end_pos), p) == Ordering::Greater
                })
                .unwrap_or(c.links.len());
            let last = match until {
                Until::Time(t) => {
                    if b.finished >= *t {
                        continue;
                    }
                    c.links
                        .iter()
                        .position(|l| ts(l.segment.info.last_time) >= *t)
                }
                Until::Gtid(g) => c
                    .links
                    .iter()
                    .position(|l| contains_gtid(&l.segment.info, g)),
                Until::Latest => {
                    if Some(c) != latest_chain {
                        continue;
                    }
                    Some(c.links.len() - 1)
                }
            };
            let Some(last) = last else { continue };
            if last < first && !matches!(until, Until::Latest | Until::Time(_)) {
                continue;
            }
            let links = if first <= last {
                c.links[first..=last].to_vec()
            } else {
                Vec::new()
            };
            return Ok(PitrPlan {
                base: b.clone(),
                links,
                until: until.clone(),
                chain_end: end,
            });
        }
    }
    let reason = match until {
        Until::Time(t) => format!("no snapshot with a continuous binlog chain reaches {t}"),
        Until::Gtid(g) => format!("no snapshot with a continuous binlog chain reaches GTID {g}"),
        Until::Latest => "no snapshot is followed by the newest binlog chain".to_string(),
    };
    Err(NoPlan {
        reason,
        ranges: recoverable(chains, bases),
    })
}

fn contains_gtid(i: &SegmentInfo, g: &Gtid) -> bool {
    match (i.first_gtid, i.last_gtid) {
        (Some(a), Some(b)) => a.domain == g.domain && a.seq <= g.seq && g.seq <= b.seq,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
            gtid_pos: Vec::new(),
        }
    }

    fn seg(seq: u64, file: &str, first: u64, end: u64, t: (u32, u32)) -> StoredSegment {
        let info = SegmentInfo {
            seq,
            source_server_id: 1,
            server_file: file.into(),
            first_pos: first,
            end_pos: end,
            first_gtid: Some(Gtid {
                domain: 0,
                server: 1,
                seq: first,
            }),
            last_gtid: Some(Gtid {
                domain: 0,
                server: 1,
                seq: end - 1,
            }),
            gtid_pos_end: Vec::new(),
            first_time: t.0,
            last_time: t.1,
            transactions: 1,
            events: 3,
            bytes: end - first,
        };
        StoredSegment {
            item: item_name(&info),
            info,
        }
    }

    fn batch(start: (&str, u64), segs: Vec<StoredSegment>, gap: bool) -> BatchInfo {
        let resume = segs
            .last()
            .map(|s| pos(&s.info.server_file, s.info.end_pos))
            .or(Some(pos(start.0, start.1)));
        BatchInfo {
            format: 1,
            start: Some(pos(start.0, start.1)),
            segments: segs,
            resume,
            gaps: if gap {
                vec![GapRecord {
                    gap: Gap::Purged {
                        wanted: pos(start.0, start.1),
                        oldest_available: Some("b.000009".into()),
                        server_message: None,
                    },
                    detected: ts(500),
                    breaks_chain: true,
                }]
            } else {
                Vec::new()
            },
        }
    }

    fn base(id: &str, file: &str, p: u64, finished: u32) -> Base {
        Base {
            id: id.into(),
            point: pos(file, p),
            finished: ts(finished),
        }
    }

    #[test]
    fn chains_break_at_gaps_and_discontinuities() {
        let batches = vec![
            (
                "m1".to_string(),
                batch(
                    ("b.000001", 100),
                    vec![
                        seg(1, "b.000001", 100, 200, (100, 110)),
                        seg(2, "b.000001", 200, 300, (110, 120)),
                    ],
                    false,
                ),
            ),
            (
                "m2".to_string(),
                batch(
                    ("b.000001", 300),
                    vec![seg(3, "b.000001", 300, 400, (120, 130))],
                    false,
                ),
            ),
            ("m3".to_string(), batch(("b.000001", 400), vec![], true)),
            (
                "m4".to_string(),
                batch(
                    ("b.000010", 4),
                    vec![seg(1, "b.000010", 4, 50, (600, 610))],
                    false,
                ),
            ),
        ];
        let ch = chains(&batches);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].links.len(), 3);
        assert!(ch[0].ended_by.is_some());
        assert_eq!(ch[1].links.len(), 1);
        let bases = vec![
            base("s1", "b.000001", 150, 105),
            base("s2", "b.000001", 250, 115),
            base("s3", "b.000010", 4, 599),
        ];
        // The newest base before the target whose chain reaches it.
        let p = plan(&ch, &bases, &Until::Time(ts(125))).unwrap();
        assert_eq!(p.base.id, "s2");
        assert_eq!(p.links.len(), 2);
        assert_eq!(p.links[0].segment.info.seq, 2);
        // Inside the gap: refused, naming both recoverable ranges.
        let e = plan(&ch, &bases, &Until::Time(ts(300))).unwrap_err();
        assert_eq!(e.ranges.len(), 2);
        assert_eq!(e.ranges[0].0, "s1");
        assert_eq!(e.ranges[0].2, ts(130));
        assert_eq!(e.ranges[1].1, ts(599));
        assert!(e.to_string().contains("recoverable ranges"), "{e}");
        // Latest: the newest chain only.
        let p = plan(&ch, &bases, &Until::Latest).unwrap();
        assert_eq!(p.base.id, "s3");
        assert_eq!(p.links.len(), 1);
        // A GTID inside segment 3.
        let g = Gtid {
            domain: 0,
            server: 1,
            seq: 350,
        };
        let p = plan(&ch, &bases, &Until::Gtid(g)).unwrap();
        assert_eq!(p.base.id, "s2");
        assert_eq!(p.links.last().unwrap().segment.info.seq, 3);
    }

    #[test]
    fn positions_order_by_file_number_then_offset() {
        assert_eq!(
            cmp_pos(("b.000002", 4), ("b.000001", 900)),
            Ordering::Greater
        );
        assert_eq!(cmp_pos(("b.000001", 4), ("b.000001", 900)), Ordering::Less);
        assert_eq!(
            cmp_pos(("b.1000000", 4), ("b.999999", 9)),
            Ordering::Greater
        );
    }
}
