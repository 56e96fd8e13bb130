//! `mnbackup status`: the health of each scheduled job, as a Nagios/Icinga plugin.
//!
//! Sources: the daemon's state files *and* the repository. For a snapshot job the newest
//! snapshot taken for it (trigger `schedule:<job>`) or by hand (trigger `manual`) counts as
//! well, so manual snapshots are seen, and the newest of those being INCOMPLETE is a failure.
//!
//! Per job: health (`fresh`, `pending`, `stale`, `failing`, `never`, `unknown`), last start,
//! last success, last error, next due. The first line is the verdict in the Nagios plugin
//! format, `MNBACKUP OK - … | age=…s;…`, and the exit code is the worst over the jobs:
//! 0 OK (fresh, or pending on a new installation before its first slot), 1 WARNING (stale),
//! 2 CRITICAL (failing, never, newest snapshot incomplete), 3 UNKNOWN (a state file or the
//! repository could not be read). The max age is `[daemon] max_age_hours`, or the schedule's
//! longest interval plus a grace (a quarter of it, 1 min to 1 h), so one missed slot is flagged.

use anyhow::Result;
use chrono::{DateTime, Utc};
use mnbackup_scheduler::state::{default_max_age, health, JobState};
use mnbackup_scheduler::{StateStore, TzSpec};
use serde_json::{json, Value};

use super::daemon::{describe_state_dir, parsed_schedules, running_pid, state_dir, timezone};
use super::Ctx;
use crate::config::ScheduleConfig;
use crate::model::Manifest;

/// Nagios plugin exit codes.
const OK: i32 = 0;
const WARNING: i32 = 1;
const CRITICAL: i32 = 2;
const UNKNOWN: i32 = 3;

/// Severity order for the overall verdict: CRITICAL > WARNING > UNKNOWN > OK (an unreadable
/// state file must not hide a failing job).
fn rank(code: i32) -> u8 {
    match code {
        OK => 0,
        UNKNOWN => 1,
        WARNING => 2,
        _ => 3,
    }
}

fn nagios_word(code: i32) -> &'static str {
    match code {
        OK => "OK",
        WARNING => "WARNING",
        CRITICAL => "CRITICAL",
        _ => "UNKNOWN",
    }
}

/// One row of the report.
struct Row {
    job: String,
    kind: String,
    schedule: String,
    label: &'static str,
    code: i32,
    describe: String,
    max_age_secs: i64,
    age_secs: Option<i64>,
    next_run: Option<DateTime<Utc>>,
    state: Option<JobState>,
    /// Newest snapshot for this job in the repository (any, and the newest complete one).
    newest: Option<SnapInfo>,
    newest_complete: Option<SnapInfo>,
}

/// With `[binlog]`: the RPO, the age of the newest shipped binlog event, against
/// `max_lag_seconds`; CRITICAL when older, when nothing was shipped, or when the chain is broken
/// by a gap that no later snapshot restarted.
fn binlog_row(ctx: &Ctx, now: DateTime<Utc>) -> Option<Row> {
    let b = ctx.config.binlog.as_ref()?;
    let mut row = Row {
        job: "binlog".into(),
        kind: "binlog".into(),
        schedule: "continuous".into(),
        label: "unknown",
        code: UNKNOWN,
        describe: String::new(),
        max_age_secs: b.max_lag_seconds as i64,
        age_secs: None,
        next_run: None,
        state: None,
        newest: None,
        newest_complete: None,
    };
    let series = match ctx
        .open_repo()
        .and_then(|r| crate::ops::binlog::load_series(&r))
    {
        Ok(s) => s,
        Err(e) => {
            row.describe = format!("UNKNOWN: the binlog series cannot be read: {e:#}");
            return Some(row);
        }
    };
    let broken = series.batches.last().and_then(|(_, l)| {
        let g = l.gaps.iter().find(|g| g.breaks_chain)?;
        (!series.bases.iter().any(|b| b.finished > g.detected)).then(|| g.gap.to_string())
    });
    row.age_secs = series.newest_event().map(|t| (now - t).num_seconds());
    (row.label, row.code, row.describe) = match (broken, row.age_secs) {
        (Some(g), _) => (
            "failing",
            CRITICAL,
            format!("FAILING: the binlog chain is broken ({g}); take a snapshot to start a new one"),
        ),
        (None, None) => ("never", CRITICAL, "NEVER: no binlog shipped yet".into()),
        (None, Some(a)) if a > row.max_age_secs => (
            "stale",
            CRITICAL,
            format!(
                "STALE: the newest shipped binlog event is {a} s old (RPO), over max_lag_seconds                  = {}",
                row.max_age_secs
            ),
        ),
        (None, Some(a)) => ("fresh", OK, format!("RPO {a} s (newest shipped binlog event)")),
    };
    Some(row)
}

/// What `status` needs of a manifest.
#[derive(Clone)]
struct SnapInfo {
    id: String,
    trigger: String,
    finished: DateTime<Utc>,
    complete: bool,
    gaps: Vec<String>,
}

impl SnapInfo {
    fn of(m: &Manifest) -> SnapInfo {
        SnapInfo {
            id: m.id.clone(),
            trigger: m.trigger.clone(),
            finished: m.finished,
            complete: m.complete,
            gaps: m.gaps.iter().map(|g| g.describe()).collect(),
        }
    }
}

/// The repository's snapshots, newest first (manifests that cannot be read are skipped:
/// `verify` reports them).
enum RepoView {
    NotConfigured,
    Unreadable(String),
    /// The snapshots and how the repository is protected ([`crate::repo::Repo::encryption_summary`]).
    Snapshots(Vec<SnapInfo>, String),
}

fn read_repo(ctx: &Ctx, snapshot_jobs: &[String]) -> RepoView {
    if ctx.repo_path().is_err() {
        return RepoView::NotConfigured;
    }
    let repo = match ctx.open_repo() {
        Ok(r) => r,
        Err(e) => return RepoView::Unreadable(format!("{e:#}")),
    };
    let ids = match repo.snapshot_ids() {
        Ok(ids) => ids,
        Err(e) => return RepoView::Unreadable(format!("{e:#}")),
    };
    // Newest first; stop once every snapshot job has its newest complete snapshot.
    let mut out = Vec::new();
    let mut found: Vec<&String> = Vec::new();
    for id in ids.iter().rev() {
        let Ok(m) = repo.load_manifest(id) else {
            continue;
        };
        let info = SnapInfo::of(&m);
        if info.complete {
            for j in snapshot_jobs {
                if relevant(&info, j) && !found.contains(&j) {
                    found.push(j);
                }
            }
        }
        out.push(info);
        if found.len() == snapshot_jobs.len() {
            break;
        }
    }
    RepoView::Snapshots(out, repo.encryption_summary())
}

/// Whether a snapshot counts for a snapshot job: taken by it, or by hand.
fn relevant(s: &SnapInfo, job: &str) -> bool {
    s.trigger == "manual" || s.trigger.strip_prefix("schedule:") == Some(job)
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

/// Folds the repository's view of a snapshot job into its state: a newer complete snapshot
/// (a manual one, or one the state file missed) is its last success and clears a failure
/// older than it.
fn merge(
    state: Option<JobState>,
    job: &str,
    newest_complete: Option<&SnapInfo>,
) -> Option<JobState> {
    let Some(snap) = newest_complete else {
        return state;
    };
    let mut st = state.unwrap_or_else(|| JobState::new(job, "snapshot"));
    if st.last_success.is_none_or(|t| snap.finished > t) {
        st.last_success = Some(snap.finished);
        st.last_success_summary = Some(format!(
            "snapshot {} ({}, from the repository)",
            snap.id, snap.trigger
        ));
        if st.last_error_at.is_none_or(|t| t < snap.finished) {
            st.consecutive_failures = 0;
            st.last_run_ok = Some(true);
        }
    }
    Some(st)
}

pub fn run(ctx: &Ctx) -> Result<i32> {
    let cfg = &ctx.config;
    let tz = timezone(cfg)?;
    let store = StateStore::new(state_dir(cfg));
    let now = Utc::now();
    let configured_max_age = cfg
        .daemon
        .max_age_hours
        .filter(|h| h.is_finite() && *h > 0.0)
        .map(|h| chrono::Duration::milliseconds((h * 3_600_000.0) as i64));
    let schedules = parsed_schedules(cfg)?;
    let snapshot_jobs: Vec<String> = schedules
        .iter()
        .filter(|(s, _)| s.job == "snapshot")
        .map(|(s, _)| s.name.clone())
        .collect();
    let repo = if snapshot_jobs.is_empty() {
        RepoView::NotConfigured
    } else {
        read_repo(ctx, &snapshot_jobs)
    };
    let mut rows = Vec::new();
    for (s, sched) in &schedules {
        let max_age = configured_max_age.unwrap_or_else(|| default_max_age(sched, now));
        rows.push(job_row(&store, &repo, s, sched, max_age, now));
    }
    rows.extend(binlog_row(ctx, now));
    let sched_jobs: Vec<(String, &mnbackup_scheduler::Schedule)> = schedules
        .iter()
        .filter(|(s, _)| s.job == "snapshot")
        .map(|(s, sc)| (s.name.clone(), sc))
        .collect();
    let cluster = super::cluster::status(ctx, &sched_jobs)?;
    if let Some(c) = cluster.as_ref().filter(|c| !c.missed.is_empty()) {
        rows.push(Row {
            job: "cluster".into(),
            kind: "cluster".into(),
            schedule: String::new(),
            label: "failing",
            code: CRITICAL,
            describe: format!("FAILING: {} slot(s) no node took", c.missed.len()),
            max_age_secs: 0,
            age_secs: None,
            next_run: None,
            state: None,
            newest: None,
            newest_complete: None,
        });
    }
    let code = rows
        .iter()
        .map(|r| r.code)
        .max_by_key(|c| rank(*c))
        .unwrap_or(OK);
    let report = Report {
        rows,
        repo,
        cluster,
        pid: running_pid(cfg),
        code,
    };
    let first_line = nagios_line(&report.rows, code, &report.repo);
    if ctx.json {
        print_json(ctx, &report, &first_line)?;
        return Ok(code);
    }
    // The verdict first (a monitoring check shows the first line), also with -q.
    println!("{first_line}");
    if ctx.quiet {
        return Ok(code);
    }
    print_text(ctx, &tz, &report, !snapshot_jobs.is_empty());
    Ok(code)
}

/// The report `run` prints: the rows, what the repository and the cluster said, the daemon's pid
/// and the overall exit code.
struct Report {
    rows: Vec<Row>,
    repo: RepoView,
    cluster: Option<super::cluster::ClusterStatus>,
    pid: Option<u32>,
    code: i32,
}

/// The row of one scheduled job: its state file, folded with the repository's view for a
/// snapshot job.
fn job_row(
    store: &StateStore,
    repo: &RepoView,
    s: &ScheduleConfig,
    sched: &mnbackup_scheduler::Schedule,
    max_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Row {
    let mut row = Row {
        job: s.name.clone(),
        kind: s.job.clone(),
        schedule: sched.to_string(),
        label: "unknown",
        code: UNKNOWN,
        describe: String::new(),
        max_age_secs: max_age.num_seconds(),
        age_secs: None,
        next_run: sched.next_after(now),
        state: None,
        newest: None,
        newest_complete: None,
    };
    let state = match store.load(&s.name) {
        Ok(st) => st,
        Err(e) => {
            row.describe = format!("UNKNOWN: {e}");
            return row;
        }
    };
    let state = if s.job == "snapshot" {
        match repo {
            RepoView::Snapshots(snaps, _) => {
                row.newest = snaps.iter().find(|x| relevant(x, &s.name)).cloned();
                row.newest_complete = snaps
                    .iter()
                    .find(|x| x.complete && relevant(x, &s.name))
                    .cloned();
                merge(state, &s.name, row.newest_complete.as_ref())
            }
            _ => state,
        }
    } else {
        state
    };
    let h = health(state.as_ref(), now, max_age);
    row.label = h.label();
    row.code = h.exit_code();
    row.describe = h.describe();
    row.age_secs = state
        .as_ref()
        .and_then(|st| st.last_success)
        .map(|t| (now - t).num_seconds());
    // The newest snapshot being incomplete is a failure, whatever the state file says.
    if let Some(n) = row.newest.as_ref().filter(|n| !n.complete) {
        let (label, code) = ("failing", CRITICAL);
        row.label = label;
        row.code = code;
        row.describe = format!(
            "FAILING: the newest snapshot {} ({}) is INCOMPLETE ({} gap(s): {}); fix the \
             cause (`mnbackup show {}` lists what it lacks), then take a snapshot by hand \
             (`mnbackup snapshot`)",
            n.id,
            n.trigger,
            n.gaps.len(),
            n.gaps.join("; "),
            n.id
        );
    }
    if let (RepoView::Unreadable(e), true, OK) = (repo, s.job == "snapshot", row.code) {
        // The state file looks fine, but the repository cannot be checked.
        row.label = "unknown";
        row.code = UNKNOWN;
        row.describe = format!(
            "UNKNOWN: the repository cannot be read ({e}); the state file says: {}",
            row.describe
        );
    }
    row.state = state;
    row
}

/// `status --json`: the verdict, the daemon, the repository, every job and the cluster.
fn print_json(ctx: &Ctx, report: &Report, first_line: &str) -> Result<()> {
    let cfg = &ctx.config;
    let jobs: Vec<Value> = report
        .rows
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
                "max_age_hours": r.max_age_secs as f64 / 3600.0,
                "age_seconds": r.age_secs,
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
                "newest_snapshot": r.newest.as_ref().map(|n| json!({
                    "id": n.id, "trigger": n.trigger, "finished": n.finished,
                    "complete": n.complete, "gaps": n.gaps,
                })),
                "newest_complete_snapshot": r.newest_complete.as_ref().map(|n| n.id.clone()),
            })
        })
        .collect();
    let pid = report.pid;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "verdict": first_line,
            "daemon": {"running": pid.is_some(), "pid": pid, "state_dir": state_dir(cfg)},
            "repository": match &report.repo {
                RepoView::NotConfigured => json!(null),
                RepoView::Unreadable(e) => json!({"error": e}),
                RepoView::Snapshots(_, enc) => json!({"readable": true, "encryption": enc}),
            },
            "jobs": jobs,
            "cluster": report.cluster.as_ref().map(|c| c.json.clone()),
            "exit_code": report.code,
        }))?
    );
    Ok(())
}

/// The text report after the verdict line: the daemon, the repository, the cluster, each job.
fn print_text(ctx: &Ctx, tz: &TzSpec, report: &Report, has_snapshot_jobs: bool) {
    let cfg = &ctx.config;
    match report.pid {
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
    match &report.repo {
        RepoView::Unreadable(e) => println!("repository: cannot be read: {e}"),
        RepoView::Snapshots(_, enc) => println!("repository: {enc}"),
        RepoView::NotConfigured if has_snapshot_jobs => println!(
            "repository: not configured; only the daemon's state files are checked (set \
             [repository] path or use -r)"
        ),
        _ => {}
    }
    for l in report.cluster.iter().flat_map(|c| &c.lines) {
        println!("{l}");
    }
    for r in &report.rows {
        print_row(ctx, tz, r);
    }
}

/// One job of the text report.
fn print_row(ctx: &Ctx, tz: &TzSpec, r: &Row) {
    let st = r.state.as_ref();
    println!("{:<16} {:<8} {}", r.job, r.label.to_uppercase(), r.describe);
    println!("  kind           {} at {}", r.kind, r.schedule);
    if let Some(since) = st.and_then(|s| s.running_since) {
        println!("  running since  {}", tz.format(since));
    }
    println!(
        "  last start     {}",
        fmt_time(tz, st.and_then(|s| s.last_start))
    );
    println!(
        "  last success   {}{}",
        fmt_time(tz, st.and_then(|s| s.last_success)),
        st.and_then(|s| s.last_success_summary.as_deref())
            .map(|s| format!("  ({s})"))
            .unwrap_or_default()
    );
    match st.and_then(|s| s.last_error.as_deref()) {
        Some(e) => println!(
            "  last error     {}  {e}",
            fmt_time(tz, st.and_then(|s| s.last_error_at))
        ),
        None => println!("  last error     -"),
    }
    println!("  next due       {}", fmt_time(tz, r.next_run));
    println!(
        "  max age        {} ({})",
        human(r.max_age_secs as f64),
        if ctx.config.daemon.max_age_hours.is_some() {
            "[daemon] max_age_hours"
        } else {
            "the schedule's longest interval plus a grace; set [daemon] max_age_hours to \
             change it"
        }
    );
}

/// The Nagios plugin line: `MNBACKUP <STATE> - <summary> | <perfdata>`. The summary names the
/// jobs that are not OK first, with their reason. Performance data: `age` (the youngest last
/// success over the snapshot jobs, or over all jobs when there is none), and per job
/// `<job>_age`, in seconds with the max age as the warning threshold.
fn nagios_line(rows: &[Row], code: i32, repo: &RepoView) -> String {
    let mut bad: Vec<&Row> = rows.iter().filter(|r| r.code != OK).collect();
    bad.sort_by_key(|r| std::cmp::Reverse(rank(r.code)));
    let mut parts: Vec<String> = bad
        .iter()
        .map(|r| format!("{}: {}", r.job, r.describe))
        .collect();
    let good: Vec<String> = rows
        .iter()
        .filter(|r| r.code == OK)
        .map(|r| match r.age_secs {
            Some(a) => format!("{} {} ({} ago)", r.job, r.label, human(a.max(0) as f64)),
            None => format!("{} {}", r.job, r.label),
        })
        .collect();
    if !good.is_empty() {
        parts.push(good.join(", "));
    }
    if rows.is_empty() {
        parts.push("no jobs configured".into());
    }
    if let RepoView::Snapshots(s, _) = repo {
        parts.push(format!("{} snapshot(s) read", s.len()));
    }
    // Perfdata labels: no '=', no quotes, no spaces.
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut perf = Vec::new();
    let overall = rows
        .iter()
        .filter(|r| r.kind == "snapshot")
        .filter_map(|r| r.age_secs.map(|a| (a, r.max_age_secs)))
        .min_by_key(|(a, _)| *a)
        .or_else(|| {
            rows.iter()
                .filter_map(|r| r.age_secs.map(|a| (a, r.max_age_secs)))
                .min_by_key(|(a, _)| *a)
        });
    if let Some((a, w)) = overall {
        perf.push(format!("age={a}s;{w};;0"));
    }
    for r in rows {
        if let Some(a) = r.age_secs {
            perf.push(format!("{}_age={a}s;{};;0", clean(&r.job), r.max_age_secs));
        }
    }
    let mut line = format!("MNBACKUP {} - {}", nagios_word(code), parts.join("; "));
    // The plugin output may not contain '|' outside the perfdata separator.
    line = line.replace('|', "/").replace('\n', " ");
    if !perf.is_empty() {
        line.push_str(" | ");
        line.push_str(&perf.join(" "));
    }
    line
}
