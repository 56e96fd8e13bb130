//! `mnbackup daemon`: run the configured schedules in the foreground (for systemd).
//!
//! The timing (catch-up after downtime, no overlapping runs, retries with backoff, graceful
//! shutdown, state files, Prometheus metrics) is the scheduler crate's [`Daemon`]; this module
//! plugs in what a job does:
//!
//! * `snapshot`: [`snapshot::take`] with trigger `schedule:<name>` on its own thread, cancelled
//!   between sources when the shutdown grace period expires. After each successful snapshot the
//!   `[retention]` policy (if any) is applied under one exclusive lock: `forget`, then `prune`
//!   when `[retention] prune` is on.
//! * `verify`: [`verify::verify`] with the job's `args` (`--read-data`, `--subset X`); a report
//!   with problems is a permanent failure.
//!
//! Errors are classified: pool not mounted, repository locked, MariaDB refusing connections or
//! restarting are *transient* (retried per `[[schedule]] retries`); everything else is
//! permanent. When a run has failed for good, `[daemon] on_failure` runs, and after a
//! successful run `[daemon] on_success` (a heartbeat): `sh -c` in its own process group (killed
//! with it after 120 s), with `MNBACKUP_JOB`, `MNBACKUP_KIND`, `MNBACKUP_RESULT` and
//! `MNBACKUP_ERROR` or `MNBACKUP_SUMMARY` set. `snapshot --hooks` and `verify --hooks` run
//! the same hooks for manual runs, with `MNBACKUP_JOB=manual`.
//!
//! Job state lives in the directory of `[daemon] state_dir` (one `<job>.json` per job), which
//! also holds `daemon.lock`, an `flock` that keeps a second daemon from starting.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use mnbackup_scheduler::{
    CancelToken, Daemon, DaemonConfig, DaemonError, DaemonReport, Job, JobContext, JobError,
    JobOutcome, JobSpec, KeepPolicy, RetryPolicy, Schedule, SystemClock, TzSpec,
};
use tracing::{error, info, warn};

mod follower;
mod hooks;
mod job;
mod metrics;
mod start;

pub use hooks::ManualHooks;
use hooks::{hook_vars, run_hook};
use metrics::MetricsCache;

use super::{forget, prune, snapshot, verify, Ctx};
use crate::config::{Config, ScheduleConfig};
use crate::error::{usage, MnError};
use crate::ui::bytes;

/// How long a job may take to stop after it was cancelled (after the grace period) before the
/// daemon abandons it. Also used for the systemd unit's `TimeoutStopSec`.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);

/// The default job when the configuration has no `[[schedule]]`.
pub const DEFAULT_CRON: &str = "0 0,12 * * *";

/// How long the `on_failure` command may run before it is killed.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);

/// The `[[schedule]]` entries, or the default snapshot job at `0 0,12 * * *` when none is given.
pub fn schedule_configs(cfg: &Config) -> Vec<ScheduleConfig> {
    if !cfg.schedule.is_empty() {
        return cfg.schedule.clone();
    }
    vec![ScheduleConfig {
        name: "snapshot".into(),
        cron: DEFAULT_CRON.into(),
        job: "snapshot".into(),
        args: Vec::new(),
        catch_up: true,
        retries: 3,
    }]
}

/// The time zone of `[daemon] timezone`.
pub fn timezone(cfg: &Config) -> Result<TzSpec> {
    TzSpec::parse(&cfg.daemon.timezone).map_err(|e| usage(format!("[daemon] timezone: {e}")))
}

/// Every configured job with its parsed schedule (a bad expression is a usage error naming the
/// job).
pub fn parsed_schedules(cfg: &Config) -> Result<Vec<(ScheduleConfig, Schedule)>> {
    let tz = timezone(cfg)?;
    schedule_configs(cfg)
        .into_iter()
        .map(|s| {
            let sched = Schedule::parse(&s.cron, tz.clone())
                .map_err(|e| usage(format!("[[schedule]] {:?}: {e}", s.name)))?;
            Ok((s, sched))
        })
        .collect()
}

/// `[daemon] state_dir`: per-job state files, `daemon.lock`, crontab backups.
pub fn state_dir(cfg: &Config) -> PathBuf {
    cfg.daemon.state_dir.clone()
}

/// The single-instance lock file in the state directory.
pub fn lock_path(cfg: &Config) -> PathBuf {
    state_dir(cfg).join("daemon.lock")
}

/// The pid of a running daemon, read from `daemon.lock` (None if no daemon runs). Does not take
/// the lock, so it never disturbs a daemon that is starting.
pub fn running_pid(cfg: &Config) -> Option<u32> {
    let text = std::fs::read_to_string(lock_path(cfg)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let alive = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

/// What one job does, parsed from its `[[schedule]]` entry.
#[derive(Debug, Clone)]
enum Work {
    Snapshot {
        tags: Vec<String>,
    },
    Verify {
        read_data: bool,
        subset: verify::Subset,
    },
    /// `args = ["--once"]`: ship the binlog beyond the last stored segment on the schedule
    /// (`binlog --once`). Without arguments: the daemon follows the server continuously on a
    /// thread of its own (`binlog --follow`), and the scheduled run is the follower's health
    /// check (fails when the newest shipped event is older than `[binlog] max_lag_seconds`, or
    /// the follower has stopped).
    Binlog {
        once: bool,
    },
    /// Copy snapshots to the `[[copy]]` target of this name (`copy --to NAME`), e.g. nightly
    /// after the 00:00 snapshot (the daemon runs one job at a time).
    Copy {
        target: String,
    },
}

impl Work {
    fn parse(s: &ScheduleConfig, cfg: &Config) -> Result<Work> {
        let bad = |what: String| usage(format!("[[schedule]] {:?}: {what}", s.name));
        let mut args = s.args.iter();
        match s.job.as_str() {
            "snapshot" => {
                let mut tags = Vec::new();
                while let Some(a) = args.next() {
                    match a.split_once('=') {
                        Some(("--tag", v)) => tags.push(v.to_string()),
                        _ if a == "--tag" => tags.push(
                            args.next()
                                .ok_or_else(|| bad("--tag needs a value".into()))?
                                .clone(),
                        ),
                        _ => {
                            return Err(bad(format!(
                                "argument {a:?} is not understood by a snapshot job; only \
                                 `--tag T` is"
                            )))
                        }
                    }
                }
                Ok(Work::Snapshot { tags })
            }
            "verify" => {
                let mut read_data = false;
                let mut subset = None;
                while let Some(a) = args.next() {
                    match a.split_once('=') {
                        Some(("--subset", v)) => subset = Some(v.to_string()),
                        _ if a == "--subset" => {
                            subset = Some(
                                args.next()
                                    .ok_or_else(
                                        || bad("--subset needs a value (N/M or P%)".into()),
                                    )?
                                    .clone(),
                            )
                        }
                        _ if a == "--read-data" => read_data = true,
                        _ => {
                            return Err(bad(format!(
                                "argument {a:?} is not understood by a verify job; use \
                                 `--read-data` and `--subset N/M|P%`"
                            )))
                        }
                    }
                }
                let subset = match subset {
                    Some(s) => {
                        read_data = true;
                        verify::Subset::parse(&s).map_err(|e| bad(format!("{e:#}")))?
                    }
                    None => verify::Subset::All,
                };
                Ok(Work::Verify { read_data, subset })
            }
            "binlog" => {
                let mut once = false;
                for a in args {
                    if a == "--once" {
                        once = true;
                    } else {
                        return Err(bad(format!(
                            "argument {a:?} is not understood by a binlog job; it takes only \
                             `--once` (ship on the schedule instead of following; its settings \
                             are in [binlog])"
                        )));
                    }
                }
                Ok(Work::Binlog { once })
            }
            "copy" => {
                let names: Vec<&str> = cfg.copy.iter().map(|c| c.name.as_str()).collect();
                match (args.next(), args.next()) {
                    (Some(t), None) if cfg.copy_target(t).is_some() => {
                        Ok(Work::Copy { target: t.clone() })
                    }
                    (Some(t), None) => Err(bad(format!(
                        "args = [{t:?}] names no [[copy]] target ({})",
                        if names.is_empty() {
                            "the configuration has none: add a [[copy]] section".to_string()
                        } else {
                            format!("configured: {}", names.join(", "))
                        }
                    ))),
                    _ => Err(bad(
                        "a copy job takes one argument, the name of a [[copy]] target: \
                         args = [\"NAME\"]"
                            .into(),
                    )),
                }
            }
            other => Err(bad(format!(
                "job = {other:?} is not a job kind; use \"snapshot\", \"verify\", \"binlog\" \
                 or \"copy\""
            ))),
        }
    }
}

/// One configured job as the runner sees it.
struct Plan {
    work: Work,
    schedule: Schedule,
    retry: RetryPolicy,
}

/// The [`Job`] implementation: runs snapshots and verifies against the repository.
struct Runner {
    ctx: Arc<Ctx>,
    metrics: Arc<MetricsCache>,
    plans: HashMap<String, Plan>,
    on_failure: Option<String>,
    on_success: Option<String>,
    shutdown: CancelToken,
}

/// Whether an error is worth retrying, decided by the error's type where it was created (never
/// by its text): the pool not (yet) mounted or the repository locked by another process
/// ([`MnError`]); a MariaDB error whose `transient` property is set (server busy or restarting,
/// too many connections, DDL during the dump, connection refused, reset or timed out: see
/// [`mariadb::errors::is_transient`]); a raw driver error of those kinds; a network I/O error.
pub fn is_transient(e: &anyhow::Error) -> bool {
    use crate::engines::mariadb;
    use std::io::ErrorKind as K;
    for cause in e.chain() {
        if let Some(m) = cause.downcast_ref::<MnError>() {
            return matches!(m, MnError::NoRepo(_) | MnError::Locked(_));
        }
        if let Some(d) = cause.downcast_ref::<mariadb::errors::DbError>() {
            return d.transient;
        }
        if let Some(my) = cause.downcast_ref::<mysql_async::Error>() {
            return mariadb::errors::is_transient(my);
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::ConnectionRefused | K::ConnectionReset | K::ConnectionAborted
            ) {
                return true;
            }
        }
    }
    false
}

/// Converts a failed attempt into the scheduler's error, transient or not.
fn job_error(e: anyhow::Error) -> JobError {
    let msg = format!("{e:#}");
    if is_transient(&e) {
        JobError::transient(msg)
    } else {
        JobError::permanent(msg)
    }
}

/// Applies `[retention]` (forget, then prune if configured) under one lock: the exclusive one
/// when it prunes, else forget's (shared with snapshots). `None` when no policy is configured.
fn apply_retention(ctx: &Ctx) -> Result<Option<String>> {
    let pol = forget::policy(ctx, &KeepPolicy::default());
    if pol.is_empty() {
        return Ok(None);
    }
    let repo = ctx.open_repo()?;
    let kind = if ctx.config.retention.prune {
        crate::repo::lock::Kind::Exclusive
    } else {
        crate::repo::lock::Kind::Forget
    };
    let _lock = repo.lock_kind(kind, "forget", ctx.lock_wait())?;
    // The daemon applies the node's policy to its own series only: another node sharing the
    // pool keeps its snapshots by its own policy.
    let own = forget::ForgetArgs {
        host: Some(repo.host.clone()),
        ..Default::default()
    };
    let (kept, removed) = forget::forget_locked(ctx, &repo, &own)?;
    let mut out = format!(
        "retention ({pol}): {} kept, {} forgotten",
        kept.len(),
        removed.len()
    );
    if !removed.is_empty() {
        info!(
            "retention forgot {} snapshot(s): {}",
            removed.len(),
            removed.join(", ")
        );
    }
    if ctx.config.retention.prune {
        let p = prune::prune_locked(&repo, false)?;
        out.push_str(&format!(
            ", pruned {} objects ({})",
            p.objects_removed,
            bytes(p.bytes_removed)
        ));
    }
    Ok(Some(out))
}

impl Runner {
    /// Whether the scheduler will give up on this slot after `e` (mirrors its retry rule: no
    /// retry for permanent errors, after the last attempt, during shutdown, or when the retry
    /// would run into the next slot).
    fn is_final(
        &self,
        plan: &Plan,
        jc: &JobContext,
        e: &JobError,
        started: chrono::DateTime<Utc>,
    ) -> bool {
        if !e.transient || jc.attempt >= plan.retry.max_attempts || self.shutdown.is_cancelled() {
            return true;
        }
        let finish = Utc::now();
        let to_chrono =
            |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let retry_at = finish + to_chrono(plan.retry.backoff(jc.attempt));
        let headroom = to_chrono(plan.retry.min_headroom).max(finish - started);
        plan.schedule
            .next_after(jc.slot)
            .is_some_and(|next| next < retry_at + headroom)
    }

    /// Runs `[daemon] on_failure` for a job that failed for good.
    async fn on_failure(&self, job: &str, kind: &str, msg: &str) {
        let Some(cmd) = self.on_failure.clone() else {
            return;
        };
        let vars = hook_vars(job, kind, Err(msg));
        let _ = tokio::task::spawn_blocking(move || run_hook("on_failure", &cmd, &vars)).await;
    }

    /// Runs `[daemon] on_success` (a heartbeat) for a job that succeeded.
    async fn on_success(&self, job: &str, kind: &str, summary: &str) {
        let Some(cmd) = self.on_success.clone() else {
            return;
        };
        let vars = hook_vars(job, kind, Ok(summary));
        let _ = tokio::task::spawn_blocking(move || run_hook("on_success", &cmd, &vars)).await;
    }
}

impl Job for Runner {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    async fn run(&self, jc: JobContext) -> Result<JobOutcome, JobError> {
        let Some(plan) = self.plans.get(&jc.job_name) else {
            return Err(JobError::permanent(format!(
                "internal error: job {:?} has no plan; please report this",
                jc.job_name
            )));
        };
        let started = Utc::now();
        let flag = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (flag, token) = (flag.clone(), jc.cancel.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                flag.store(true, Ordering::SeqCst);
            })
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ctx, work, name, f, metrics) = (
            self.ctx.clone(),
            plan.work.clone(),
            jc.job_name.clone(),
            flag.clone(),
            self.metrics.clone(),
        );
        let slot = jc.slot;
        // A plain thread, not the runtime's blocking pool: the snapshot starts its own runtime
        // for MariaDB, and an abandoned run must not keep the daemon's runtime from shutting down.
        let spawned = std::thread::Builder::new()
            .name(format!("job-{name}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let r = job::run_blocking(&ctx, &name, slot, &work, &f, &metrics);
                    metrics.refresh(&ctx);
                    r
                }))
                    .unwrap_or_else(|p| {
                        let what = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(JobError::permanent(format!(
                            "internal error: the job panicked ({what}); please report this with the log"
                        )))
                    });
                let _ = tx.send(r);
            });
        let result = match spawned {
            Ok(_) => rx.await.unwrap_or_else(|_| {
                Err(JobError::permanent(
                    "internal error: the job thread ended without a result".to_string(),
                ))
            }),
            Err(e) => Err(JobError::transient(format!(
                "cannot start a thread for the job: {e}"
            ))),
        };
        watcher.abort();
        match result {
            Ok(summary) => {
                self.on_success(&jc.job_name, &jc.kind, &summary).await;
                Ok(JobOutcome { summary })
            }
            Err(e) => {
                if !flag.load(Ordering::SeqCst) && self.is_final(plan, &jc, &e, started) {
                    self.on_failure(&jc.job_name, &jc.kind, &e.msg).await;
                }
                Err(e)
            }
        }
    }
}

/// Takes the single-instance lock (`flock` on `<state dir>/daemon.lock`) and writes our pid
/// into it. The lock lasts as long as the returned value.
fn single_instance(cfg: &Config) -> Result<nix::fcntl::Flock<File>> {
    let path = lock_path(cfg);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open the daemon lock {}; check that the state directory is on a \
                 writable local disk and owned by the user running mnbackup",
                path.display()
            )
        })?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((mut f, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(MnError::Locked(format!(
                "another `mnbackup daemon` is already running (pid {}) with the state directory \
                 {}; stop it first (`systemctl stop mnbackup`), or give this one a different \
                 [daemon] state_dir",
                pid.trim(),
                state_dir(cfg).display()
            ))
            .into());
        }
        Err((_, errno)) => {
            return Err(anyhow::anyhow!(
                "cannot lock {}: {errno}; the state directory must be on a local disk that \
                 supports flock",
                path.display()
            ))
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(&mut *lock, "{}", std::process::id())?;
    lock.sync_all()?;
    Ok(lock)
}

/// Builds the jobs, checks the configuration, and runs the scheduler until SIGTERM / SIGINT.
pub fn run(ctx: &Ctx) -> Result<i32> {
    let cfg = &ctx.config;
    ctx.repo_path()?;
    let schedules = parsed_schedules(cfg)?;
    let (plans, specs) = start::jobs(cfg, schedules)?;
    let dir = state_dir(cfg);
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create the state directory {}; check [daemon] state_dir and that it is on \
             a writable local disk",
            dir.display()
        )
    })?;
    let _instance = single_instance(cfg)?;
    let dcfg = DaemonConfig {
        state_dir: dir.clone(),
        metrics_file: cfg.daemon.prometheus_textfile.clone(),
        grace: Duration::from_secs(cfg.daemon.grace_seconds),
        cancel_timeout: CANCEL_TIMEOUT,
        // One job at a time: a snapshot and a verify due together must not meet on the
        // daemon's own repository lock.
        serialize_jobs: true,
    };
    let shutdown = CancelToken::new();
    let metrics = start::metrics(ctx, &dcfg, &specs);
    let follower = if plans
        .values()
        .any(|p| matches!(p.work, Work::Binlog { once: false }))
    {
        Some(follower::spawn(ctx, &metrics)?)
    } else {
        None
    };
    let runner = start::runner(ctx, metrics, plans, &shutdown);
    start::log_jobs(&specs);
    let daemon = Daemon::new(dcfg, specs, Arc::new(runner), Arc::new(SystemClock))
        .map_err(|e| usage(e.to_string()))?;
    let result = start::serve(daemon, shutdown, follower, &dir)?;
    start::stopped(result)
}

/// The state directory, for other commands' messages.
pub fn describe_state_dir(cfg: &Config) -> String {
    let d = state_dir(cfg);
    if Path::new(&d).exists() {
        d.display().to_string()
    } else {
        format!(
            "{} (does not exist yet: the daemon has never run)",
            d.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engines::mariadb::errors::{connect_timeout, explain, DbError};
    use mysql_async::{DriverError, Error as MyError, IoError, ServerError};

    fn server(code: u16, message: &str) -> anyhow::Error {
        let e = MyError::Server(ServerError {
            code,
            message: message.into(),
            state: "HY000".into(),
        });
        // As the sources return it: explained, then with context added on the way up.
        explain(e, "db:3306", "dumping zstack.VmInstanceVO")
            .context("the snapshot failed; nothing was committed")
    }

    fn io(kind: std::io::ErrorKind) -> anyhow::Error {
        let e = MyError::Io(IoError::Io(std::io::Error::new(kind, "test")));
        explain(e, "db:3306", "connecting")
    }

    /// Issue 14 item 6: each class of MariaDB error is retried or not by its type, whatever
    /// its message says.
    #[test]
    fn mariadb_errors_are_classified_by_type() {
        use std::io::ErrorKind as K;
        // DDL during the dump, too many connections, lock wait timeout, deadlock, server
        // shutting down, connection killed, gone away: retried.
        for code in [1412, 1040, 1203, 1205, 1213, 1053, 1927, 2006, 2013] {
            assert!(is_transient(&server(code, "x")), "server error {code}");
        }
        // Connect timeout, refused, reset, socket missing while restarting: retried.
        assert!(is_transient(&connect_timeout("db:3306", "connecting", 30)));
        for k in [
            K::TimedOut,
            K::ConnectionRefused,
            K::ConnectionReset,
            K::NotFound,
            K::UnexpectedEof,
            K::HostUnreachable,
        ] {
            assert!(is_transient(&io(k)), "{k:?}");
        }
        let closed = explain(
            MyError::Driver(DriverError::ConnectionClosed),
            "db:3306",
            "reading rows",
        );
        assert!(is_transient(&closed));
        // Access denied, missing privilege, host not allowed, unknown table, syntax: not
        // retried.
        for code in [1045, 1044, 1142, 1227, 1130, 1146, 1064] {
            assert!(!is_transient(&server(code, "x")), "server error {code}");
        }
        assert!(!is_transient(&io(K::PermissionDenied)));
        // The text plays no part: a permanent error that reads like a lost connection stays
        // permanent, a transient one with any text stays transient.
        let text = anyhow::Error::new(DbError {
            msg: "cannot reach MariaDB at db:3306; lost the connection to MariaDB".into(),
            code: Some(1045),
            transient: false,
        });
        assert!(!is_transient(&text));
        assert!(!is_transient(&anyhow::anyhow!(
            "cannot reach MariaDB: lost the connection to MariaDB, MariaDB closed the connection"
        )));
        // Repository not there (pool not mounted) or locked by another process: retried; a
        // configuration error is not.
        assert!(is_transient(
            &MnError::NoRepo("no repository".into()).into()
        ));
        assert!(is_transient(
            &anyhow::Error::new(MnError::Locked("locked".into())).context("snapshot")
        ));
        assert!(!is_transient(&usage("bad config")));
        assert!(job_error(server(1412, "Table definition has changed")).transient);
        assert!(!job_error(server(1045, "Access denied")).transient);
    }
}
