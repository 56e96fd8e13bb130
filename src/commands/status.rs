//! `mnbackup status`: the health of each scheduled job, from the daemon's state files.
//!
//! Per job: health (`fresh`, `stale`, `failing`, `never`), last start, last success, last error,
//! next due. The exit code is the worst over the jobs, Nagios style: 0 fresh, 1 stale, 2 failing
//! or never (an unreadable state file counts as 2). The max age is `[daemon] max_age_hours`, or
//! twice the longest interval of the job's schedule.

use anyhow::Result;
use chrono::{DateTime, Utc};
use mnbackup_scheduler::state::{job_status, JobState};
use mnbackup_scheduler::{Health, StateStore, TzSpec};
use serde_json::{json, Value};

use super::daemon::{describe_state_dir, parsed_schedules, running_pid, state_dir, timezone};
use super::Ctx;

/// One row of the report.
struct Row {
    job: String,
    kind: String,
    schedule: String,
    label: &'static str,
    code: i32,
    describe: String,
    max_age_hours: f64,
    next_run: Option<DateTime<Utc>>,
    state: Option<JobState>,
}

/// A duration for humans: `24.0h`, `30m`, `4s`.
fn human(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.1}h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.0}m", secs / 60.0)
    } else {
        format!("{secs:.0}s")
    }
}

fn fmt_time(tz: &TzSpec, t: Option<DateTime<Utc>>) -> String {
    t.map(|t| tz.format(t)).unwrap_or_else(|| "-".into())
}

pub fn run(ctx: &Ctx) -> Result<i32> {
    let cfg = &ctx.config;
    let tz = timezone(cfg)?;
    let store = StateStore::new(state_dir(cfg));
    let now = Utc::now();
    let max_age = cfg
        .daemon
        .max_age_hours
        .filter(|h| h.is_finite() && *h > 0.0)
        .map(|h| chrono::Duration::milliseconds((h * 3_600_000.0) as i64));
    let mut rows = Vec::new();
    for (s, sched) in parsed_schedules(cfg)? {
        let row = match job_status(&store, &s.name, &sched, now, max_age) {
            Ok(st) => Row {
                job: s.name.clone(),
                kind: s.job.clone(),
                schedule: sched.to_string(),
                label: st.health.label(),
                code: st.health.exit_code(),
                describe: st.health.describe(),
                max_age_hours: st.max_age.num_seconds() as f64 / 3600.0,
                next_run: st.next_run,
                state: st.state,
            },
            Err(e) => Row {
                job: s.name.clone(),
                kind: s.job.clone(),
                schedule: sched.to_string(),
                label: "unknown",
                code: Health::Never.exit_code(),
                describe: format!("UNKNOWN: {e}"),
                max_age_hours: 0.0,
                next_run: sched.next_after(now),
                state: None,
            },
        };
        rows.push(row);
    }
    let code = rows.iter().map(|r| r.code).max().unwrap_or(0);
    let pid = running_pid(cfg);
    if ctx.json {
        let jobs: Vec<Value> = rows
            .iter()
            .map(|r| {
                let st = r.state.as_ref();
                json!({
                    "job": r.job,
                    "kind": r.kind,
                    "schedule": r.schedule,
                    "health": r.label,
                    "exit_code": r.code,
                    "message": r.describe,
                    "max_age_hours": r.max_age_hours,
                    "next_due": r.next_run,
                    "last_start": st.and_then(|s| s.last_start),
                    "last_success": st.and_then(|s| s.last_success),
                    "last_success_summary": st.and_then(|s| s.last_success_summary.clone()),
                    "last_error": st.and_then(|s| s.last_error.clone()),
                    "last_error_at": st.and_then(|s| s.last_error_at),
                    "consecutive_failures": st.map(|s| s.consecutive_failures).unwrap_or(0),
                    "running_since": st.and_then(|s| s.running_since),
                    "runs_total": st.map(|s| s.runs_total).unwrap_or(0),
                    "failures_total": st.map(|s| s.failures_total).unwrap_or(0),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "daemon": {"running": pid.is_some(), "pid": pid, "state_dir": state_dir(cfg)},
                "jobs": jobs,
                "exit_code": code,
            }))?
        );
        return Ok(code);
    }
    if !ctx.quiet {
        match pid {
            Some(p) => println!(
                "daemon: running (pid {p}); state in {}",
                state_dir(cfg).display()
            ),
            None => println!(
                "daemon: not running; state in {}. Start it with `systemctl start mnbackup` \
                 (install the unit with `mnbackup schedule install`)",
                describe_state_dir(cfg)
            ),
        }
    }
    for r in &rows {
        let st = r.state.as_ref();
        // Always printed (also with -q): this is what a monitoring check shows.
        println!("{:<16} {:<8} {}", r.job, r.label.to_uppercase(), r.describe);
        if ctx.quiet {
            continue;
        }
        println!("  kind           {} at {}", r.kind, r.schedule);
        if let Some(since) = st.and_then(|s| s.running_since) {
            println!("  running since  {}", tz.format(since));
        }
        println!(
            "  last start     {}",
            fmt_time(&tz, st.and_then(|s| s.last_start))
        );
        println!(
            "  last success   {}{}",
            fmt_time(&tz, st.and_then(|s| s.last_success)),
            st.and_then(|s| s.last_success_summary.as_deref())
                .map(|s| format!("  ({s})"))
                .unwrap_or_default()
        );
        match st.and_then(|s| s.last_error.as_deref()) {
            Some(e) => println!(
                "  last error     {}  {e}",
                fmt_time(&tz, st.and_then(|s| s.last_error_at))
            ),
            None => println!("  last error     -"),
        }
        println!("  next due       {}", fmt_time(&tz, r.next_run));
        println!(
            "  max age        {} ({})",
            human(r.max_age_hours * 3600.0),
            if cfg.daemon.max_age_hours.is_some() {
                "[daemon] max_age_hours"
            } else {
                "twice the schedule's longest interval; set [daemon] max_age_hours to change it"
            }
        );
    }
    Ok(code)
}
