//! `mnbackup binlog --once`, `mnbackup list --binlog`, and the point-in-time part of
//! `restore --until` (see `docs/binlog.md`).

use anyhow::Result;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::json;

use super::Ctx;
use crate::engines::binlog::series::{self, PitrPlan, Until};
use crate::engines::binlog::{Gtid, ReplayReport};
use crate::error::usage;
use crate::ops::binlog::{load_series, ship, Series};
use crate::ops::binlog_follow::{follow, FollowLog, FollowStatus};

/// `mnbackup binlog --once` / `--follow`.
pub fn run(ctx: &Ctx, once: bool, follow: bool) -> Result<i32> {
    if follow {
        return run_follow(ctx);
    }
    if !once {
        return Err(usage(
            "`mnbackup binlog` needs --once (ship what is new and stop) or --follow (follow \
             continuously until SIGTERM; the daemon's `binlog` job does the same)",
        ));
    }
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry)?;
    let o = ship(&env, None)?;
    let last = o.segments.last();
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "batch": o.manifest, "start": o.start, "segments": o.segments,
                "gap": o.gap.as_ref().map(|g| g.to_string()),
            }))?
        );
    } else if !ctx.quiet {
        match (&o.manifest, last) {
            (Some(id), Some(l)) => println!(
                "shipped {} segments as {id}: {}:{} .. {}:{}, newest event {}",
                o.segments.len(),
                o.start.file,
                o.start.pos,
                l.server_file,
                l.end_pos,
                series::ts(l.last_time)
            ),
            _ => println!("nothing new since {}:{}", o.start.file, o.start.pos),
        }
    }
    if let Some(g) = o.gap {
        eprintln!(
            "error: {g}; the gap is recorded (`mnbackup list --binlog`); the next snapshot \
             starts a new chain"
        );
        return Ok(crate::error::EXIT_INCOMPLETE);
    }
    Ok(0)
}

/// Logs the follower's events on stderr (unless `--quiet`).
struct StderrLog(bool);

impl FollowLog for StderrLog {
    fn event(&self, what: &str) {
        if !self.0 {
            eprintln!("{} {what}", Utc::now().format("%Y-%m-%dT%H:%M:%SZ"));
        }
    }
}

/// A watch channel that turns true on SIGTERM or SIGINT (a thread with its own small runtime).
pub fn stop_on_signal() -> Result<tokio::sync::watch::Receiver<bool>> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let term = signal(SignalKind::terminate());
                let int = signal(SignalKind::interrupt());
                let (Ok(mut term), Ok(mut int)) = (term, int) else {
                    let _ = ready_tx.send(false);
                    return;
                };
                let _ = ready_tx.send(true);
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = tx.send(true);
            });
        })?;
    if !ready_rx.recv().unwrap_or(false) {
        anyhow::bail!("cannot install the SIGTERM / SIGINT handlers");
    }
    Ok(rx)
}

/// `mnbackup binlog --follow`: follow until SIGTERM / SIGINT; the open segment is stored as a
/// final short one.
fn run_follow(ctx: &Ctx) -> Result<i32> {
    let registry = crate::engines::default_registry();
    let env = ctx.ops_env(&registry)?;
    let stop = stop_on_signal()?;
    let status = std::sync::Mutex::new(FollowStatus::default());
    follow(&env, stop, &status, &StderrLog(ctx.quiet))?;
    let st = status.into_inner().unwrap_or_else(|p| p.into_inner());
    if !ctx.quiet {
        println!(
            "stopped: {} segments stored{}",
            st.segments,
            st.newest_event
                .map(|t| format!(", newest event {t}"))
                .unwrap_or_default()
        );
    }
    if let Some(g) = st.gap {
        eprintln!("error: {g}; the gap is recorded (`mnbackup list --binlog`)");
        return Ok(crate::error::EXIT_INCOMPLETE);
    }
    Ok(0)
}

/// The recoverable ranges, chains and gaps as text.
pub fn describe(s: &Series) -> String {
    let mut t = String::new();
    for (i, c) in s.chains.iter().enumerate() {
        let (a, b) = c.time_range().unwrap_or_default();
        let start = c.start.as_ref().map(|p| format!("{}:{}", p.file, p.pos));
        let end = c.end().map(|(f, p)| format!("{f}:{p}"));
        t.push_str(&format!(
            "chain {}: {} segments, {} .. {}, events {a} .. {b}{}\n",
            i + 1,
            c.links.len(),
            start.unwrap_or_default(),
            end.unwrap_or_default(),
            match &c.ended_by {
                Some(g) => format!(", ended by a gap: {}", g.gap),
                None => String::new(),
            }
        ));
    }
    for g in s.gaps() {
        t.push_str(&format!("gap detected {}: {}\n", g.detected, g.gap));
    }
    let ranges = series::recoverable(&s.chains, &s.bases);
    if ranges.is_empty() {
        t.push_str("recoverable: none (no snapshot is followed by shipped binlog)\n");
    }
    for (id, a, b) in ranges {
        t.push_str(&format!(
            "recoverable: {a} .. {b} (base snapshot {id} and later)\n"
        ));
    }
    if let Some(n) = s.newest_event() {
        t.push_str(&format!(
            "newest shipped event: {n} ({} s ago)\n",
            (Utc::now() - n).num_seconds()
        ));
    }
    t
}

/// `mnbackup list --binlog`.
pub fn list(ctx: &Ctx) -> Result<i32> {
    let repo = ctx.open_repo()?;
    let s = load_series(&repo)?;
    if ctx.json {
        let chains: Vec<_> = s
            .chains
            .iter()
            .map(|c| {
                json!({"start": c.start, "segments": c.links.len(),
                       "time_range": c.time_range(), "ended_by": c.ended_by})
            })
            .collect();
        let ranges: Vec<_> = series::recoverable(&s.chains, &s.bases)
            .into_iter()
            .map(|(id, a, b)| json!({"base": id, "from": a, "to": b}))
            .collect();
        let gaps: Vec<_> = s.gaps().into_iter().cloned().collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "chains": chains, "gaps": gaps, "recoverable": ranges,
                "newest_event": s.newest_event(),
            }))?
        );
    } else {
        print!("{}", describe(&s));
    }
    Ok(0)
}

/// Parse `--until` / `--until-gtid`.
pub fn parse_until(until: Option<&str>, gtid: Option<&str>) -> Result<Option<Until>> {
    if let Some(g) = gtid {
        let g: Gtid = g
            .parse()
            .map_err(|e: String| usage(format!("--until-gtid: {e}")))?;
        return Ok(Some(Until::Gtid(g)));
    }
    let Some(u) = until else { return Ok(None) };
    if u == "latest" {
        return Ok(Some(Until::Latest));
    }
    let t = DateTime::parse_from_rfc3339(u)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(u, "%Y-%m-%d %H:%M:%S").map(|n| n.and_utc()))
        .map_err(|_| {
            usage(format!(
                "--until {u}: expected `latest`, `YYYY-MM-DD HH:MM:SS` (UTC) or RFC 3339"
            ))
        })?;
    Ok(Some(Until::Time(t)))
}

/// The base and segments for `until`, or a refusal naming the recoverable ranges.
pub fn plan(ctx: &Ctx, until: &Until) -> Result<PitrPlan> {
    let s = load_series(&ctx.open_repo()?)?;
    series::plan(&s.chains, &s.bases, until).map_err(|e| {
        usage(format!(
            "restore --until refused: {e}. `mnbackup list --binlog` shows chains and gaps"
        ))
    })
}

/// The plan's point-in-time part as text.
pub fn plan_text(p: &PitrPlan) -> String {
    let mut t = format!(
        "point in time: base snapshot {} (binlog {}:{}), then {} binlog segments, stop {}\n",
        p.base.id,
        p.base.point.file,
        p.base.point.pos,
        p.links.len(),
        match &p.until {
            Until::Time(t) => format!("before the first transaction at or after {t}"),
            Until::Gtid(g) => format!("after GTID {g}"),
            Until::Latest => format!("at the newest shipped event ({})", p.chain_end),
        }
    );
    for l in &p.links {
        let i = &l.segment.info;
        t.push_str(&format!(
            "  {} ({}) {}:{}..{} events {} .. {}\n",
            l.segment.item,
            l.manifest,
            i.server_file,
            i.first_pos,
            i.end_pos,
            series::ts(i.first_time),
            series::ts(i.last_time)
        ));
    }
    t.push_str("gap check: the chain is continuous from the base's point to the stop\n");
    t
}

/// The binlog replay of a point-in-time restore whose base is restored (or, when the journal
/// records a replay in progress, its continuation): progress is recorded on the target in the
/// same transaction as each replayed one, so a replay killed anywhere continues after the last
/// applied transaction and applies none twice. The journal records the replay and the last
/// applied position; it is removed when the replay finished. Returns the text and exit code.
pub fn replay_after_restore(
    env: &crate::ops::Env,
    p: &PitrPlan,
    mut target: crate::ops::binlog::ReplayTarget,
    journal: &std::sync::Mutex<mnbackup_restore::journal::Journal>,
    until: &str,
) -> (String, i32) {
    let mut text = String::new();
    let result = (|| -> Result<ReplayReport> {
        let existing = journal.lock().expect("journal").data.binlog_replay.clone();
        let key = match &existing {
            Some(jr) => jr.key.clone(),
            None => format!("{} {until}", p.base.id),
        };
        let resume = match &existing {
            Some(_) => crate::ops::binlog::applied_on_target(&target, &key)?,
            None => {
                crate::ops::binlog::clear_progress(&target, &key)?;
                None
            }
        };
        {
            let mut j = journal.lock().expect("journal");
            j.data.binlog_replay = Some(mnbackup_restore::journal::JournaledReplay {
                until: until.to_string(),
                key: key.clone(),
                started: existing.map(|e| e.started).unwrap_or_else(Utc::now),
                last_applied: resume.as_ref().and_then(|a| serde_json::to_value(a).ok()),
            });
            j.save()?;
        }
        if let Some(a) = &resume {
            text.push_str(&format!(
                "binlog replay resumed after {}:{} (GTID {}), the last transaction the target \
                 recorded\n",
                a.file,
                a.end_pos,
                a.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
        target.progress = Some(key.clone());
        target.resume_from = resume.clone();
        let mut rep = crate::ops::binlog::replay_plan(&env.repo, p, &target)?;
        if rep.last_applied.is_none() {
            rep.last_applied = resume;
        }
        crate::ops::binlog::clear_progress(&target, &key)?;
        journal.lock().expect("journal").remove()?;
        Ok(rep)
    })();
    match result {
        Ok(rep) => {
            text.push_str(&replay_text(&rep));
            (text, 0)
        }
        Err(e) => {
            text.push_str(&format!(
                "error: the binlog replay after snapshot {} failed: {e:#}\nThe base snapshot \
                 is restored and every replayed transaction is recorded on the target: rerun \
                 the same command to continue the replay where it stopped.\n",
                p.base.id
            ));
            (text, 1)
        }
    }
}

/// The report line of a replay.
pub fn replay_text(r: &ReplayReport) -> String {
    match &r.last_applied {
        Some(a) => format!(
            "binlog replayed: {} transactions, last applied {}:{} GTID {} at {}\n",
            r.transactions,
            a.file,
            a.end_pos,
            a.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            series::ts(a.timestamp)
        ),
        None => "binlog replayed: no transaction after the base snapshot's point\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_parses_times_gtids_and_latest() {
        let t = parse_until(Some("2026-12-03 13:52:07"), None).unwrap();
        let want = DateTime::parse_from_rfc3339("2026-12-03T13:52:07Z").unwrap();
        assert_eq!(t, Some(Until::Time(want.with_timezone(&Utc))));
        let t = parse_until(Some("2026-12-03T14:52:07+01:00"), None).unwrap();
        assert_eq!(t, Some(Until::Time(want.with_timezone(&Utc))));
        assert_eq!(
            parse_until(Some("latest"), None).unwrap(),
            Some(Until::Latest)
        );
        let g = parse_until(None, Some("0-1-42")).unwrap();
        assert_eq!(g, Some(Until::Gtid("0-1-42".parse().unwrap())));
        assert!(parse_until(Some("yesterday"), None).is_err());
        assert!(parse_until(None, Some("0-1")).is_err());
        assert_eq!(parse_until(None, None).unwrap(), None);
    }
}
