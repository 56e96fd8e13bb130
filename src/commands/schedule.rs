//! `mnbackup schedule ...`: next fire times, the systemd unit, and the import of the old crontab.
//!
//! * `next [N] [--expr EXPR]`: the next N fire times of each configured job (or of EXPR) in the
//!   `[daemon] timezone`.
//! * `install [--dry-run]`: writes (or prints) the systemd unit that runs `mnbackup daemon`.
//! * `import-crontab [--file F] [--apply]`: finds the operator's rsync of the mysql-backup
//!   directory and `zstack-ctl dump_mysql` lines, proposes the schedule and pool, and with
//!   `--apply` comments those lines out (after saving a copy of the old crontab next to the state
//!   file) and prints the configuration to put into mnbackup.toml.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use chrono::{DateTime, FixedOffset, Utc};
use mnbackup_scheduler::crontab::{backup_file_name, import_crontab as analyse, Proposal};
use mnbackup_scheduler::durable;
use mnbackup_scheduler::schedule::{Schedule, TzSpec};
use mnbackup_scheduler::systemd::{render_unit, UnitOptions, UNIT_PATH};
use serde_json::json;

use super::daemon::{parsed_schedules, state_dir, timezone, CANCEL_TIMEOUT};
use super::Ctx;
use crate::error::usage;

/// An instant as RFC 3339 with the zone's offset at that instant.
fn rfc3339(tz: &TzSpec, t: DateTime<Utc>) -> String {
    let utc = FixedOffset::east_opt(0).expect("zero offset is valid");
    let off = FixedOffset::east_opt(tz.offset_secs(t)).unwrap_or(utc);
    t.with_timezone(&off).to_rfc3339()
}

/// `schedule next`: prints the next `n` fire times.
pub fn next(ctx: &Ctx, n: usize, expr: Option<&str>) -> Result<i32> {
    let tz = timezone(&ctx.config)?;
    let list: Vec<(String, Schedule)> = match expr {
        Some(e) => vec![(
            "expr".to_string(),
            Schedule::parse(e, tz.clone()).map_err(|e| usage(e.to_string()))?,
        )],
        None => parsed_schedules(&ctx.config)?
            .into_iter()
            .map(|(s, sched)| (s.name, sched))
            .collect(),
    };
    let now = Utc::now();
    if ctx.json {
        let out: Vec<_> = list
            .iter()
            .map(|(name, s)| {
                json!({
                    "name": name,
                    "cron": s.expr(),
                    "timezone": s.tz().name(),
                    "next": s.upcoming(now, n).iter().map(|t| rfc3339(s.tz(), *t)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    for (name, s) in &list {
        println!("{name}: {s}");
        let times = s.upcoming(now, n);
        if times.is_empty() {
            println!("  (no fire time within 40 years)");
        }
        for t in times {
            println!("  {}", s.tz().format(t));
        }
    }
    Ok(0)
}

/// Makes a path absolute (relative to the current directory) without resolving symlinks.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `schedule install`: renders the systemd unit and writes it (or prints it with `--dry-run`).
pub fn install(ctx: &Ctx, dry_run: bool) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the path of the mnbackup binary")?;
    let config = ctx.config_path.as_deref().map(absolute);
    // The mount dependency comes from the repository path the service will use: the
    // configuration file's (the service is given no -r).
    let pool = ctx.config.repository.path.as_deref().map(absolute);
    if config.is_none() {
        eprintln!(
            "warning: no configuration file is in use; the service runs `mnbackup daemon` with \
             the defaults. Write /etc/mnbackup/mnbackup.toml (see docs/zstack-node.example.toml) \
             or pass -c FILE, then run this command again"
        );
    }
    if ctx.repo_path.is_some() && ctx.config.repository.path.as_deref() != ctx.repo_path.as_deref()
    {
        eprintln!(
            "warning: the repository was given with -r / MNBACKUP_REPO, but the service only \
             reads the configuration file; set [repository] path = {:?} in it",
            pool.as_deref()
                .unwrap_or(Path::new(""))
                .display()
                .to_string()
        );
    }
    let unit = render_unit(&UnitOptions {
        exe: exe.clone(),
        config,
        pool,
        grace: std::time::Duration::from_secs(ctx.config.daemon.grace_seconds),
        cancel_timeout: CANCEL_TIMEOUT,
        user: None,
        writable: {
            let mut w = vec![absolute(&ctx.config.daemon.state_dir)];
            // The signature cache (the service runs as root: /var/cache/mnbackup by default).
            w.push(
                ctx.config
                    .repository
                    .cache_dir
                    .as_deref()
                    .map(absolute)
                    .unwrap_or_else(|| PathBuf::from("/var/cache/mnbackup")),
            );
            if let Some(p) = &ctx.config.daemon.prometheus_textfile {
                if let Some(d) = absolute(p).parent() {
                    w.push(d.to_path_buf());
                }
            }
            w
        },
    });
    if dry_run {
        print!("{unit}");
        return Ok(0);
    }
    // Under ProtectSystem=strict the service cannot create its own state and cache
    // directories; create them now.
    for d in [
        Some(absolute(&ctx.config.daemon.state_dir)),
        Some(
            ctx.config
                .repository
                .cache_dir
                .as_deref()
                .map(absolute)
                .unwrap_or_else(|| PathBuf::from("/var/cache/mnbackup")),
        ),
    ]
    .into_iter()
    .flatten()
    {
        std::fs::create_dir_all(&d)
            .with_context(|| format!("cannot create {} for the service", d.display()))?;
    }
    let path = Path::new(UNIT_PATH);
    if let Err(e) = durable::write_atomic(path, unit.as_bytes()) {
        return Err(anyhow::Error::new(e).context(format!(
            "cannot write the unit {UNIT_PATH} (run as root, or use --dry-run and install it by \
             hand)"
        )));
    }
    ctx.say(format!(
        "wrote {UNIT_PATH} (ExecStart runs {} daemon). Now run:\n  systemctl daemon-reload && \
         systemctl enable --now mnbackup",
        exe.display()
    ));
    Ok(0)
}

/// Reads the crontab: `F`, or `crontab -l` (no crontab = empty).
fn read_crontab(file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the crontab file {}", f.display()));
    }
    let out = Command::new("crontab")
        .arg("-l")
        .stdin(Stdio::null())
        .output()
        .context("cannot run `crontab -l` (is cron installed?); or pass --file FILE")?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("no crontab for") {
        return Ok(String::new());
    }
    anyhow::bail!("`crontab -l` failed ({}): {}", out.status, err.trim())
}

/// Installs the new crontab text: writes `F` back, or pipes it into `crontab -`.
fn write_crontab(file: Option<&Path>, text: &str) -> Result<()> {
    if let Some(f) = file {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).map(|m| m.permissions().mode()).ok();
        let res = durable::temp_beside(f)
            .and_then(|tmp| durable::write_atomic_via(&tmp, f, text.as_bytes(), mode));
        return res.with_context(|| format!("cannot write the crontab file {}", f.display()));
    }
    let mut child = Command::new("crontab")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `crontab -`")?;
    child
        .stdin
        .take()
        .context("no stdin for `crontab -`")?
        .write_all(text.as_bytes())
        .context("writing the new crontab to `crontab -`")?;
    let out = child
        .wait_with_output()
        .context("waiting for `crontab -`")?;
    if !out.status.success() {
        anyhow::bail!(
            "`crontab -` refused the new crontab ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The scheduler crate's proposal texts refer to a `--pool` option; this command has none (the
/// pool is `[repository] path` in mnbackup.toml), so say that instead.
fn cli_wording(s: &str) -> String {
    s.replace("pass --pool", "set [repository] path in mnbackup.toml")
        .replace(
            "pass it with --pool",
            "set it as [repository] path in mnbackup.toml",
        )
        .replace(
            "pass the absolute pool path with --pool",
            "set the absolute pool path as [repository] path in mnbackup.toml",
        )
}

/// The mnbackup.toml lines for the proposal.
fn snippet(p: &Proposal) -> String {
    let mut s = String::new();
    if let Some(pool) = &p.pool {
        let repo = Path::new(pool).join("mnbackup");
        s.push_str("[repository]\n");
        s.push_str(&format!(
            "path = {:?}   # a new, empty directory on the pool: `mnbackup -r {} init`\n\n",
            repo.display().to_string(),
            repo.display()
        ));
    }
    if let Some(k) = p.keep_last {
        s.push_str(&format!(
            "[retention]\nkeep_last = {k}   # as dump_mysql --keep-amount\n\n"
        ));
    }
    for (i, j) in p.jobs.iter().enumerate() {
        let name = if i == 0 {
            "snapshot".to_string()
        } else {
            format!("snapshot-{}", i + 1)
        };
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!(
            "[[schedule]]\nname = {name:?}\ncron = {:?}\njob = \"snapshot\"\n",
            j.schedule
        ));
    }
    if let Some(tz) = &p.tz {
        s.push_str(&format!("\n[daemon]\ntimezone = {tz:?}\n"));
    }
    s
}

/// Why mnbackup cannot take over the backups yet: no repository configured or initialised, no
/// complete snapshot in it (the sources have not been proven), no daemon running.
fn not_ready_to_take_over(ctx: &Ctx) -> Vec<String> {
    let mut why = Vec::new();
    match &ctx.config.repository.path {
        None => why.push(
            "no repository is configured: set [repository] path in mnbackup.toml and run \
             `mnbackup init`"
                .to_string(),
        ),
        Some(_) => match ctx.open_repo() {
            Err(e) => why.push(format!("the repository cannot be opened: {e:#}")),
            Ok(repo) => {
                let complete = repo.snapshot_ids().ok().is_some_and(|ids| {
                    ids.iter()
                        .rev()
                        .any(|id| repo.load_manifest(id).is_ok_and(|m| m.complete))
                });
                if !complete {
                    why.push(
                        "the repository has no complete snapshot yet: run `mnbackup snapshot` \
                         and check that it exits 0"
                            .to_string(),
                    );
                }
            }
        },
    }
    if super::daemon::running_pid(&ctx.config).is_none() {
        why.push(
            "the mnbackup daemon is not running: `mnbackup schedule install` and `systemctl \
             enable --now mnbackup` first"
                .to_string(),
        );
    }
    why
}

/// Exit for a refused `--apply`: a usage error listing the reasons (nothing was changed).
fn refusal(reasons: &[String]) -> Result<i32> {
    if reasons.is_empty() {
        return Ok(0);
    }
    Err(usage(format!(
        "--apply refused, the crontab is unchanged: {}",
        reasons
            .iter()
            .map(|r| cli_wording(r))
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

/// `schedule import-crontab`: shows the proposal; with `apply` disables the old lines.
pub fn import_crontab(ctx: &Ctx, file: Option<&Path>, apply: bool) -> Result<i32> {
    let text = read_crontab(file)?;
    let p = analyse(&text);
    let snippet = snippet(&p);
    let today = chrono::Local::now().date_naive();
    let diff = p.diff(today);
    let mut backup = None;
    let mut refused = Vec::new();
    if apply && p.found() {
        refused = p.ambiguities.clone();
        refused.extend(not_ready_to_take_over(ctx));
    }
    if apply && p.found() && refused.is_empty() {
        let now = Utc::now();
        let dir = state_dir(&ctx.config);
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot create {} for the crontab backup copy",
                dir.display()
            )
        })?;
        let path = dir.join(backup_file_name(now));
        durable::temp_beside(&path)
            .and_then(|tmp| durable::write_atomic_via(&tmp, &path, text.as_bytes(), Some(0o600)))
            .with_context(|| format!("cannot save the old crontab to {}", path.display()))?;
        let new = p.apply(today);
        write_crontab(file, &new).with_context(|| {
            format!(
                "the old crontab is unchanged; its copy is in {}",
                path.display()
            )
        })?;
        backup = Some(path);
    }
    if ctx.json {
        let lines: Vec<_> = p
            .matches
            .iter()
            .map(|m| json!({"line": m.line_no, "schedule": m.schedule, "text": m.text}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "found": p.found(),
                "schedule": p.schedule,
                "timezone": p.tz,
                "pool": p.pool,
                "keep_last": p.keep_last,
                "lines": lines,
                "warnings": p.warnings.iter().map(|w| cli_wording(w)).collect::<Vec<_>>(),
                "schedules": p.jobs.iter().map(|j| json!({
                    "cron": j.schedule, "timezone": j.tz, "lines": j.lines,
                })).collect::<Vec<_>>(),
                "ambiguities": p.ambiguities,
                "refused": refused,
                "diff": diff,
                "applied": backup.is_some(),
                "backup": backup,
                "config": snippet,
            }))?
        );
        return refusal(&refused);
    }
    print!("{}", cli_wording(&p.summary()));
    if !p.found() {
        return Ok(0);
    }
    println!("\nThe change to the crontab:\n{diff}");
    if !refused.is_empty() {
        return refusal(&refused);
    }
    let source = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the crontab".into());
    match &backup {
        Some(b) => println!(
            "\nDisabled {} line(s) in {source} (commented out); the old crontab is saved in {}.",
            p.matches.len(),
            b.display()
        ),
        None => println!(
            "\nNothing was changed. Run again with --apply to comment these lines out of {source} \
             (a copy of it is saved first)."
        ),
    }
    println!(
        "\nPut this into mnbackup.toml{}:\n\n{snippet}",
        ctx.config_path
            .as_deref()
            .map(|c| format!(" ({})", c.display()))
            .unwrap_or_default()
    );
    if backup.is_some() {
        println!(
            "Then `mnbackup schedule install` and `systemctl daemon-reload && systemctl enable \
             --now mnbackup`."
        );
    }
    Ok(0)
}
