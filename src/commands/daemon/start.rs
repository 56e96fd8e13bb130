//! The steps of `mnbackup daemon` ([`super::run`]): the jobs from the configuration, the
//! metrics seeded from the state files, the runner, and the scheduler loop until a signal.

#[allow(unused_imports)]
use super::*;

/// The runner's plans and the scheduler's job specs, one per `[[schedule]]`; a snapshot job
/// without a source or a name used twice is a usage error.
pub(super) fn jobs(
    cfg: &Config,
    schedules: Vec<(ScheduleConfig, Schedule)>,
) -> Result<(HashMap<String, Plan>, Vec<JobSpec>)> {
    let mut plans = HashMap::new();
    let mut specs = Vec::new();
    for (s, schedule) in schedules {
        let work = Work::parse(&s, cfg)?;
        if matches!(work, Work::Snapshot { .. })
            && cfg.mariadb.is_none()
            && cfg.cassandra.is_none()
            && cfg.files.is_empty()
        {
            return Err(usage(format!(
                "[[schedule]] {:?} takes snapshots, but the configuration has no [mariadb], \
                 [cassandra] or [[files]] source; add one (see docs/zstack-node.example.toml)",
                s.name
            )));
        }
        let retry = RetryPolicy {
            max_attempts: s.retries.saturating_add(1),
            ..RetryPolicy::default()
        };
        specs.push(JobSpec {
            name: s.name.clone(),
            kind: s.job.clone(),
            schedule: schedule.clone(),
            retry: retry.clone(),
            catch_up: s.catch_up,
        });
        if plans
            .insert(
                s.name.clone(),
                Plan {
                    work,
                    schedule,
                    retry,
                },
            )
            .is_some()
        {
            return Err(usage(format!(
                "[[schedule]] name {:?} is used twice; job names must be unique",
                s.name
            )));
        }
    }
    Ok((plans, specs))
}

/// The metrics cache; with a textfile configured, filled now, with the last verify result from
/// the verify jobs' state files.
pub(super) fn metrics(ctx: &Ctx, dcfg: &DaemonConfig, specs: &[JobSpec]) -> Arc<MetricsCache> {
    let metrics = Arc::new(MetricsCache {
        enabled: dcfg.metrics_file.is_some(),
        ..Default::default()
    });
    if metrics.enabled {
        metrics.refresh(ctx);
        // The last verify result, from the verify jobs' state files.
        let store = mnbackup_scheduler::StateStore::new(&dcfg.state_dir);
        let last_verify = specs
            .iter()
            .filter(|s| s.kind == "verify")
            .filter_map(|s| store.load(&s.name).ok().flatten())
            .filter_map(|st| Some((st.last_finish?, st.last_run_ok?)))
            .max_by_key(|(t, _)| *t);
        if let Some((t, ok)) = last_verify {
            metrics.set_verify(t, ok);
        }
    }
    metrics
}

/// The [`Job`] the scheduler runs: a quiet copy of the context, the plans and the hooks.
pub(super) fn runner(
    ctx: &Ctx,
    metrics: Arc<MetricsCache>,
    plans: HashMap<String, Plan>,
    shutdown: &CancelToken,
) -> Runner {
    let cfg = &ctx.config;
    Runner {
        metrics,
        ctx: Arc::new(Ctx {
            repo_path: ctx.repo_path.clone(),
            config_path: ctx.config_path.clone(),
            config: ctx.config.clone(),
            json: false,
            quiet: true,
            verbose: ctx.verbose,
        }),
        plans,
        on_failure: cfg
            .daemon
            .on_failure
            .clone()
            .filter(|c| !c.trim().is_empty()),
        on_success: cfg
            .daemon
            .on_success
            .clone()
            .filter(|c| !c.trim().is_empty()),
        shutdown: shutdown.clone(),
    }
}

/// Logs each job, its schedule and its next run.
pub(super) fn log_jobs(specs: &[JobSpec]) {
    for s in specs {
        info!(
            job = %s.name,
            "job {:?} ({}) scheduled at {}, next run at {}",
            s.name,
            s.kind,
            s.schedule,
            s.schedule
                .next_after(Utc::now())
                .map(|t| s.schedule.tz().format(t))
                .unwrap_or_else(|| "never".into())
        );
    }
}

/// Runs the scheduler on its own runtime until SIGTERM / SIGINT (which also stop the binlog
/// follower), then stops the follower.
pub(super) fn serve(
    daemon: Daemon<SystemClock, Runner>,
    shutdown: CancelToken,
    follower: Option<follower::Follower>,
    dir: &Path,
) -> Result<Result<DaemonReport, DaemonError>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let sd = shutdown.clone();
        let stop_follower = follower.as_ref().map(|f| f.stop.clone());
        tokio::spawn(async move {
            loop {
                let which = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                if let Some(tx) = &stop_follower {
                    let _ = tx.send(true);
                }
                if sd.is_cancelled() {
                    info!("{which} received again; already shutting down (a running job gets its grace period)");
                } else {
                    info!("{which} received; shutting down: idle jobs stop now, a running job gets up to the grace period to finish");
                    sd.cancel();
                }
            }
        });
        info!(
            "mnbackup daemon started (pid {}); state in {}; stop it with SIGTERM (`systemctl stop mnbackup`)",
            std::process::id(),
            dir.display()
        );
        anyhow::Ok(daemon.run(shutdown).await)
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    if let Some(f) = follower {
        f.stop_and_wait(CANCEL_TIMEOUT);
    }
    Ok(result)
}

/// The daemon's exit: 0 after a clean stop (runs interrupted by it logged), the scheduler's
/// error otherwise.
pub(super) fn stopped(result: Result<DaemonReport, DaemonError>) -> Result<i32> {
    match result {
        Ok(report) => {
            for j in &report.jobs {
                if j.interrupted {
                    warn!(
                        job = %j.name,
                        "the run in progress was interrupted by the shutdown; it is caught up at \
                         the next start (catch_up = true) or runs at its next slot"
                    );
                }
            }
            info!("mnbackup daemon stopped cleanly");
            Ok(0)
        }
        Err(e) => {
            error!("the daemon stopped: {e}");
            Err(anyhow::Error::new(e).context(
                "the scheduler stopped with an error; systemd restarts it (see the log above)",
            ))
        }
    }
}
