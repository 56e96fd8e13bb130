//! Replay: feed stored segments, cut to whole transactions between a start position and a
//! stop point, through `mariadb-binlog` (or `mysqlbinlog`) into the `mariadb` client.
//!
//! The start, stop and database filtering are decided here, per transaction (GTID group),
//! from the events themselves, so the stop point is exact and does not depend on the
//! installed `mariadb-binlog` knowing GTID positions; `mariadb-binlog` only turns the chosen
//! events into SQL (`--verify-binlog-checksum`, `--rewrite-db` for renamed databases).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{kind, read_binlog_file, Gtid, RawEvent, BINLOG_MAGIC};
use super::gaps::BinlogPos;
use super::segment::SegmentInfo;

/// Where replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAt {
    /// Replay everything.
    End,
    /// Stop before the first transaction stamped at or after this time (binlog timestamps
    /// have a resolution of one second, like `mariadb-binlog --stop-datetime`).
    DateTime(DateTime<Utc>),
    /// Stop before the first transaction at or after this server position.
    Position { file: String, pos: u64 },
    /// Stop at this GTID: after its transaction (`inclusive`) or just before it.
    Gtid { gtid: Gtid, inclusive: bool },
}

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// `mariadb-binlog` / `mysqlbinlog` to use (default: the first found in `PATH`).
    pub binlog_tool: Option<PathBuf>,
    /// `mariadb` / `mysql` client to use (default: the first found in `PATH`).
    pub client: Option<PathBuf>,
    /// Connection arguments for the client (`--socket=...`, `--user=...`, ...).
    pub client_args: Vec<String>,
    /// The client's password (given as `MYSQL_PWD` to the client only, never on its command
    /// line).
    pub password: Option<String>,
    /// Replay transactions at or after this position (a snapshot's consistent point).
    pub start: Option<BinlogPos>,
    pub stop: StopAt,
    /// Only these databases (`None`: all).
    pub databases: Option<Vec<String>>,
    /// Databases to rename: (from, to), applied after filtering.
    pub rename: Vec<(String, String)>,
    /// Do not write the replayed events into the target's own binlog.
    pub skip_target_binlog: bool,
    /// Record progress on the target under this key (a resumable replay): every replayed
    /// transaction also writes its end position into [`PROGRESS_TABLE`], in the same
    /// transaction, so what the target holds and what the table says cannot disagree, even
    /// when the replay is killed; [`applied_on_target`] reads it back.
    pub progress: Option<String>,
}

/// Where a progress-recording replay keeps its position on the target (one row per key).
pub const PROGRESS_TABLE: &str = "mysql.mnbackup_replay";

const PROGRESS_DDL: &str = "CREATE TABLE IF NOT EXISTS mysql.mnbackup_replay (\
     replay_key VARCHAR(128) NOT NULL PRIMARY KEY, file VARCHAR(255) NOT NULL, \
     end_pos BIGINT UNSIGNED NOT NULL, gtid VARCHAR(64) NULL, ts INT UNSIGNED NOT NULL\
     ) ENGINE=InnoDB";

/// SQL string literal (the values are file names, keys and GTIDs, but quote them anyway).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The statement recording that the transaction ending at `a` is applied.
fn progress_sql(key: &str, a: &AppliedEvent) -> String {
    format!(
        "REPLACE INTO {PROGRESS_TABLE} (replay_key, file, end_pos, gtid, ts) VALUES ({}, {}, {}, {}, {})",
        lit(key),
        lit(&a.file),
        a.end_pos,
        a.gtid.map(|g| lit(&g.to_string())).unwrap_or_else(|| "NULL".into()),
        a.timestamp
    )
}

/// The last transaction replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEvent {
    pub file: String,
    /// Server position just after the transaction (where a resumed replay starts).
    pub end_pos: u64,
    pub gtid: Option<Gtid>,
    /// Binlog timestamp (seconds since the epoch) of the transaction.
    pub timestamp: u32,
}

/// What replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub last_applied: Option<AppliedEvent>,
    pub transactions: u64,
    /// Transactions before the start position.
    pub skipped_before_start: u64,
    /// Transactions only touching databases not replayed.
    pub filtered_out: u64,
    /// Whether the stop point was reached (false: the segments ended first).
    pub stop_reached: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay: reading segment {path}: {source}")]
    Segment {
        path: PathBuf,
        source: super::event::EventError,
    },
    #[error("replay: {0}")]
    Tool(String),
    #[error("replay: {0}")]
    Io(#[from] std::io::Error),
}

/// The number in `binlog.000042`, for ordering positions across files.
fn file_index(name: &str) -> u64 {
    super::gaps::file_index(name).unwrap_or(0)
}

fn find_tool(given: &Option<PathBuf>, names: &[&str]) -> Result<PathBuf, ReplayError> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        for d in std::env::split_paths(&path) {
            let p = d.join(n);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(ReplayError::Tool(format!(
        "none of {names:?} found in PATH"
    )))
}

/// One transaction: its GTID event and what follows it.
struct Group {
    file: String,
    events: Vec<RawEvent>,
}

impl Group {
    fn gtid(&self) -> Option<Gtid> {
        self.events.first().and_then(|e| e.gtid()).map(|(g, _)| g)
    }
    fn at(&self) -> (u64, u64) {
        (file_index(&self.file), self.events[0].start_pos())
    }
}

/// Decides per group: before start, past the stop, filtered, or replayed.
struct Selector<'a> {
    opts: &'a ReplayOptions,
    crc: bool,
    report: ReplayReport,
    /// Length of the stream after each applied transaction.
    ends: Vec<usize>,
}

/// Whether `e` commits the transaction it ends (XID, or a `COMMIT` query).
fn ends_transaction(e: &RawEvent, crc: bool) -> bool {
    e.kind() == kind::XID
        || e.query(crc)
            .is_some_and(|(_, q)| q.trim().eq_ignore_ascii_case("COMMIT"))
}

enum Verdict {
    Skip,
    Stop,
    Apply(Vec<RawEvent>, bool),
}

impl Selector<'_> {
    fn judge(&mut self, g: Group) -> Verdict {
        let at = g.at();
        if let Some(s) = &self.opts.start {
            if at < (file_index(&s.file), s.pos) {
                self.report.skipped_before_start += 1;
                return Verdict::Skip;
            }
        }
        let mut last = false;
        match &self.opts.stop {
            StopAt::End => {}
            StopAt::DateTime(t) => {
                if i64::from(g.events[0].timestamp()) >= t.timestamp() {
                    return Verdict::Stop;
                }
            }
            StopAt::Position { file, pos } => {
                if at >= (file_index(file), *pos) {
                    return Verdict::Stop;
                }
            }
            StopAt::Gtid { gtid, inclusive } => {
                if let Some(x) = g.gtid() {
                    let passed = x.domain == gtid.domain && x.seq > gtid.seq;
                    if passed || (x == *gtid && !inclusive) {
                        return Verdict::Stop;
                    }
                    last = x == *gtid;
                }
            }
        }
        match self.filter(g.events) {
            Some(evs) => Verdict::Apply(evs, last),
            None => {
                self.report.filtered_out += 1;
                if last {
                    Verdict::Stop
                } else {
                    Verdict::Skip
                }
            }
        }
    }

    /// Drop the events of databases not replayed; `None` if nothing of substance is left.
    fn filter(&self, events: Vec<RawEvent>) -> Option<Vec<RawEvent>> {
        let Some(dbs) = &self.opts.databases else {
            return Some(events);
        };
        let mut tables = HashSet::new();
        let mut substance = false;
        let mut kept = Vec::with_capacity(events.len());
        for ev in events {
            let keep = if let Some((id, db, _)) = ev.table_map(self.crc) {
                let k = dbs.contains(&db);
                if k {
                    tables.insert(id);
                }
                k
            } else if let Some(id) = ev.rows_table_id() {
                tables.contains(&id)
            } else if let Some((db, q)) = ev.query(self.crc) {
                let q = q.trim().to_ascii_uppercase();
                let frame = q == "BEGIN" || q == "COMMIT" || q.starts_with("ROLLBACK");
                frame || dbs.contains(&db)
            } else {
                true
            };
            let structural = matches!(
                ev.kind(),
                kind::GTID | kind::XID | kind::ANNOTATE_ROWS | kind::QUERY
            );
            if keep && !structural {
                substance = true;
            }
            if keep && ev.kind() == kind::QUERY {
                let q = ev.query(self.crc).map(|(_, q)| q).unwrap_or_default();
                let q = q.trim().to_ascii_uppercase();
                substance |= !(q == "BEGIN" || q == "COMMIT" || q.starts_with("ROLLBACK"));
            }
            if keep {
                kept.push(ev);
            }
        }
        substance.then_some(kept)
    }
}

/// Read the segments (verifying every checksum) and write the selected transactions as one
/// binlog stream to `out`.
fn select(
    segments: &[(SegmentInfo, PathBuf)],
    opts: &ReplayOptions,
    out: &mut Vec<u8>,
) -> Result<(ReplayReport, Vec<usize>), ReplayError> {
    let mut sel = Selector {
        opts,
        crc: false,
        report: ReplayReport::default(),
        ends: Vec::new(),
    };
    let mut wrote_fde = false;
    let mut group: Option<Group> = None;
    'segments: for (info, path) in segments {
        let f = std::fs::File::open(path)?;
        let events = read_binlog_file(std::io::BufReader::new(f)).map_err(|source| {
            ReplayError::Segment {
                path: path.clone(),
                source,
            }
        })?;
        for ev in events {
            if sel.crc || ev.kind() == kind::FORMAT_DESCRIPTION {
                let crc = ev.kind() != kind::FORMAT_DESCRIPTION
                    || ev.fde_info().is_some_and(|i| i.checksum_crc32);
                if crc {
                    // Nothing of a damaged segment reaches the server.
                    ev.verify_crc(&info.server_file)
                        .map_err(|source| ReplayError::Segment {
                            path: path.clone(),
                            source,
                        })?;
                }
            }
            match ev.kind() {
                kind::FORMAT_DESCRIPTION => {
                    sel.crc = ev.fde_info().is_some_and(|i| i.checksum_crc32);
                    if !wrote_fde {
                        out.write_all(&BINLOG_MAGIC)?;
                        out.write_all(&ev.0)?;
                        wrote_fde = true;
                        if opts.progress.is_some() {
                            let q = RawEvent::query_event(
                                ev.timestamp(),
                                ev.server_id(),
                                ev.log_pos(),
                                PROGRESS_DDL,
                                sel.crc,
                            );
                            out.write_all(&q.0)?;
                        }
                    }
                }
                kind::GTID => {
                    if let Some(g) = group.take() {
                        if !apply(&mut sel, g, out)? {
                            break 'segments;
                        }
                    }
                    group = Some(Group {
                        file: info.server_file.clone(),
                        events: vec![ev],
                    });
                }
                kind::GTID_LIST | kind::BINLOG_CHECKPOINT | kind::STOP | kind::ROTATE => {}
                _ => {
                    if let Some(g) = group.as_mut() {
                        g.events.push(ev);
                    }
                }
            }
        }
    }
    if let Some(g) = group.take() {
        apply(&mut sel, g, out)?;
    }
    Ok((sel.report, sel.ends))
}

/// Judge one group and write it if chosen; false when replay must stop.
fn apply(sel: &mut Selector<'_>, g: Group, out: &mut Vec<u8>) -> Result<bool, ReplayError> {
    if sel.report.stop_reached {
        return Ok(false);
    }
    let (file, gtid) = (g.file.clone(), g.gtid());
    let ts = g.events[0].timestamp();
    match sel.judge(g) {
        Verdict::Skip => Ok(true),
        Verdict::Stop => {
            sel.report.stop_reached = true;
            Ok(false)
        }
        Verdict::Apply(evs, last) => {
            let applied = AppliedEvent {
                file,
                end_pos: evs.last().map(|e| u64::from(e.log_pos())).unwrap_or(0),
                gtid,
                timestamp: ts,
            };
            let marker = sel.opts.progress.as_ref().map(|key| {
                let at = evs.last().expect("a group has events");
                RawEvent::query_event(
                    ts,
                    at.server_id(),
                    at.log_pos(),
                    &progress_sql(key, &applied),
                    sel.crc,
                )
            });
            // Inside the transaction, just before its commit (XID or COMMIT); after a
            // statement that commits by itself (DDL).
            let split = match (&marker, evs.last()) {
                (Some(_), Some(e)) if ends_transaction(e, sel.crc) => evs.len() - 1,
                _ => evs.len(),
            };
            for e in &evs[..split] {
                out.write_all(&e.0)?;
            }
            if let Some(m) = &marker {
                out.write_all(&m.0)?;
            }
            for e in &evs[split..] {
                out.write_all(&e.0)?;
            }
            sel.report.transactions += 1;
            sel.ends.push(out.len());
            sel.report.last_applied = Some(applied);
            if last {
                sel.report.stop_reached = true;
            }
            Ok(!last)
        }
    }
}

/// Replay `segments` (in order, as captured) into the server the client arguments name.
pub fn replay(
    segments: &[(SegmentInfo, PathBuf)],
    opts: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let tool = find_tool(&opts.binlog_tool, &["mariadb-binlog", "mysqlbinlog"])?;
    let client = find_tool(&opts.client, &["mariadb", "mysql"])?;
    let mut stream = Vec::new();
    let (report, ends) = select(segments, opts, &mut stream)?;
    if report.transactions == 0 {
        return Ok(report);
    }
    let pause_after = test_pause_after();
    let mut bl = Command::new(&tool);
    bl.arg("--no-defaults").arg("--verify-binlog-checksum");
    if opts.skip_target_binlog {
        bl.arg("--disable-log-bin");
    }
    for (from, to) in &opts.rename {
        bl.arg(format!("--rewrite-db={from}->{to}"));
    }
    bl.arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut bl = bl
        .spawn()
        .map_err(|e| ReplayError::Tool(format!("starting {}: {e}", tool.display())))?;
    let bl_out = bl.stdout.take().expect("piped");
    let mut cl = Command::new(&client);
    if let Some(p) = &opts.password {
        cl.env("MYSQL_PWD", p);
    }
    let cl = cl
        .arg("--no-defaults")
        .args(&opts.client_args)
        .arg("--binary-mode")
        .arg("--batch")
        .stdin(Stdio::from(bl_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ReplayError::Tool(format!("starting {}: {e}", client.display())))?;
    let mut bl_in = bl.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || match pause_after {
        Some(n) if n < ends.len() => {
            // Test hook: feed the first n transactions, then hang (the test kills us).
            bl_in.write_all(&stream[..ends[n.saturating_sub(1).min(ends.len() - 1)]])?;
            bl_in.flush()?;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        _ => bl_in.write_all(&stream),
    });
    let cl_res = cl.wait_with_output()?;
    let bl_res = bl.wait_with_output()?;
    let fed = feeder.join().unwrap_or(Ok(()));
    check_status(&tool, &bl_res)?;
    check_status(&client, &cl_res)?;
    fed?;
    Ok(report)
}

/// `MNBACKUP_TEST_REPLAY_PAUSE_AFTER=N` (tests only): feed N transactions, then hang until
/// killed, so a test can interrupt a replay at a known point.
fn test_pause_after() -> Option<usize> {
    std::env::var("MNBACKUP_TEST_REPLAY_PAUSE_AFTER")
        .ok()?
        .parse()
        .ok()
}

/// Where a progress-recording replay under `key` stands on the target, read through the
/// client (`None`: nothing applied yet under this key).
pub fn applied_on_target(
    opts: &ReplayOptions,
    key: &str,
) -> Result<Option<AppliedEvent>, ReplayError> {
    let sql = format!(
        "{PROGRESS_DDL}; SELECT file, end_pos, IFNULL(gtid, ''), ts FROM {PROGRESS_TABLE} WHERE \
         replay_key = {}",
        lit(key)
    );
    let out = run_client(opts, &sql)?;
    let line = out.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Ok(None);
    }
    let f: Vec<&str> = line.split('\t').collect();
    let bad = || {
        ReplayError::Tool(format!(
            "unexpected progress row in {PROGRESS_TABLE}: {line:?}"
        ))
    };
    if f.len() != 4 {
        return Err(bad());
    }
    Ok(Some(AppliedEvent {
        file: f[0].to_string(),
        end_pos: f[1].parse().map_err(|_| bad())?,
        gtid: if f[2].is_empty() {
            None
        } else {
            Some(f[2].parse().map_err(|_| bad())?)
        },
        timestamp: f[3].parse().map_err(|_| bad())?,
    }))
}

/// Forget the progress of `key` on the target (the replay finished, or starts afresh); drops
/// the table when no other replay's row is left.
pub fn clear_progress(opts: &ReplayOptions, key: &str) -> Result<(), ReplayError> {
    let sql = format!(
        "{PROGRESS_DDL}; DELETE FROM {PROGRESS_TABLE} WHERE replay_key = {}; SELECT COUNT(*) FROM \
         {PROGRESS_TABLE}",
        lit(key)
    );
    if run_client(opts, &sql)?.trim() == "0" {
        run_client(opts, &format!("DROP TABLE IF EXISTS {PROGRESS_TABLE}"))?;
    }
    Ok(())
}

/// Run `sql` with the client; its tab-separated output.
fn run_client(opts: &ReplayOptions, sql: &str) -> Result<String, ReplayError> {
    let client = find_tool(&opts.client, &["mariadb", "mysql"])?;
    let mut cl = Command::new(&client);
    if let Some(p) = &opts.password {
        cl.env("MYSQL_PWD", p);
    }
    let out = cl
        .arg("--no-defaults")
        .args(&opts.client_args)
        .arg("--batch")
        .arg("--skip-column-names")
        .arg("-e")
        .arg(sql)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ReplayError::Tool(format!("starting {}: {e}", client.display())))?;
    check_status(&client, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check_status(tool: &Path, out: &std::process::Output) -> Result<(), ReplayError> {
    if out.status.success() {
        return Ok(());
    }
    Err(ReplayError::Tool(format!(
        "{} failed ({}): {}",
        tool.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}
