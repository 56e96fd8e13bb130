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

/// `mnbackup binlog --once`.
pub fn run(ctx: &Ctx, once: bool) -> Result<i32> {
    if !once {
        return Err(usage(
            "`mnbackup binlog` ships with --once (the daemon's `binlog` job follows \
             continuously)",
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
