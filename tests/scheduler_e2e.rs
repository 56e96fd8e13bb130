//! End-to-end tests of the scheduler commands through the real binary (issue 5): `daemon` takes
//! scheduled snapshots and stops cleanly on SIGTERM, `status` reports fresh / stale / failing,
//! `schedule next`, `schedule install --dry-run` and `schedule import-crontab`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

/// Runs mnbackup with only the given arguments (no `-r`), without the caller's environment
/// pointing at a config or a repository.
fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .env("MNBACKUP_LOG", "warn")
        .output()
        .expect("run mnbackup")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr: {}", stdout(o), stderr(o)))
}

/// Writes a config file and returns its path.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("mnbackup.toml");
    fs::write(&p, text).unwrap();
    p
}

/// A running `mnbackup daemon`; killed (SIGKILL) on drop if the test did not stop it.
struct DaemonProc {
    child: Option<Child>,
    log: PathBuf,
}

impl DaemonProc {
    fn start(cfg: &Path, log: PathBuf) -> DaemonProc {
        let child = Command::new(bin())
            .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
            .arg("-c")
            .arg(cfg)
            .arg("daemon")
            .env_remove("MNBACKUP_CONFIG")
            .env_remove("MNBACKUP_REPO")
            .env("MNBACKUP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start mnbackup daemon");
        DaemonProc {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to 30 s) for the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("daemon still running");
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the daemon did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `check` every 250 ms until it returns true or `timeout` passes.
fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    check()
}

fn make_tree(root: &Path) {
    let mut rng = Rng(11);
    fs::create_dir_all(root.join("etc/zstack")).unwrap();
    fs::create_dir_all(root.join("var/lib/zstack")).unwrap();
    fs::write(
        root.join("etc/zstack/zstack.properties"),
        b"DB.url=jdbc:mysql://localhost:3306\n",
    )
    .unwrap();
    fs::write(
        root.join("var/lib/zstack/dump.sql"),
        text(&mut rng, 200_000),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "../../etc/zstack/zstack.properties",
        root.join("var/lib/props"),
    )
    .unwrap();
}

#[test]
fn daemon_takes_scheduled_snapshots_and_stops_on_sigterm() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    make_tree(&src);
    ok(&repo, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            r#"
[repository]
path = "{repo}"

[[files]]
paths = ["{src}"]

[[schedule]]
name = "snap"
cron = "*/2 * * * * *"

[retention]
keep_last = 2

[daemon]
timezone = "UTC"
state_dir = "{state}"
grace_seconds = 20
max_age_hours = 1
prometheus_textfile = "{state}/mnbackup.prom"
"#,
            repo = repo.display(),
            src = src.display(),
            state = state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let mut d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    // Three runs, so the retention policy (keep the last 2) has had something to forget.
    let three = wait_for(Duration::from_secs(40), || {
        let o = mnb(&repo, &["--json", "list"]);
        let st = run(&["-c", c, "--json", "status"]);
        o.status.success()
            && json(&o).as_array().is_some_and(|a| a.len() >= 2)
            && serde_json::from_slice::<serde_json::Value>(&st.stdout)
                .is_ok_and(|v| v["jobs"][0]["runs_total"].as_u64() >= Some(3))
    });
    assert!(
        three,
        "no three scheduled runs within 40 s; daemon log:\n{}",
        d.log()
    );

    // A second daemon on the same state directory refuses to start.
    let second = run(&["-c", c, "daemon"]);
    assert_eq!(second.status.code(), Some(4), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("already running"),
        "{}",
        stderr(&second)
    );

    assert_eq!(d.terminate(), Some(0), "daemon log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped cleanly"), "{log}");

    let snaps = list(&repo);
    assert_eq!(snaps.len(), 2, "retention keeps the last 2: {snaps:?}");
    assert!(log.contains("retention forgot 1 snapshot(s)"), "{log}");
    let expected = capture(&src);
    for s in &snaps {
        assert_eq!(s["trigger"], "schedule:snap", "{s}");
        let id = s["id"].as_str().unwrap();
        let out = t.path().join(format!("export-{id}"));
        ok(&repo, &["export", id, out.to_str().unwrap()]);
        let got = capture(&out.join("files").join(src.strip_prefix("/").unwrap()));
        assert_same(&expected, &got);
    }

    let st = run(&["-c", c, "status"]);
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&st),
        stderr(&st)
    );
    assert!(stdout(&st).contains("FRESH"), "{}", stdout(&st));
    let st = run(&["-c", c, "--json", "status"]);
    assert_eq!(st.status.code(), Some(0));
    let v = json(&st);
    let job = &v["jobs"][0];
    assert_eq!(job["job"], "snap");
    assert_eq!(job["health"], "fresh");
    assert!(job["last_success"].is_string(), "{v}");
    let summary = job["last_success_summary"].as_str().unwrap();
    assert!(
        summary.contains("snapshot ") && summary.contains("retention (keep 2 last snapshots)"),
        "{v}"
    );
    assert_eq!(v["daemon"]["running"], false, "{v}");
    let prom = fs::read_to_string(state.join("mnbackup.prom")).unwrap();
    assert!(
        prom.contains(
            "mnbackup_last_success_timestamp_seconds{mnbackup_job=\"snap\",kind=\"snapshot\"}"
        ),
        "{prom}"
    );
    // Repository metrics (issue 14 item 8): two snapshots kept, the newest complete.
    for line in [
        "mnbackup_repository_readable 1\n",
        "mnbackup_snapshots 2\n",
        "mnbackup_snapshot_complete 1\n",
        "mnbackup_snapshots_incomplete 0\n",
    ] {
        assert!(prom.contains(line), "{line} not in {prom}");
    }
    let newest: i64 = prom
        .lines()
        .find_map(|l| l.strip_prefix("mnbackup_newest_complete_snapshot_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((Utc::now().timestamp() - newest).abs() < 120, "{prom}");
    assert!(!prom.contains("{job="), "{prom}");
}

#[test]
fn status_reports_stale_from_an_old_state_file() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[daemon]\ntimezone = \"UTC\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    // No state at all: the default job "snapshot" has never run.
    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("NEVER"), "{}", stdout(&o));

    let old = Utc::now() - chrono::Duration::days(3);
    fs::write(
        state.join("snapshot.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "job": "snapshot", "kind": "snapshot", "last_start": old, "last_success": old,
            "last_run_ok": true, "last_success_summary": "snapshot 20260101T000000000Z-00000000"
        }))
        .unwrap(),
    )
    .unwrap();
    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("STALE"), "{}", stdout(&o));
    let v = json(&run(&["-c", c, "--json", "status"]));
    assert_eq!(v["jobs"][0]["health"], "stale", "{v}");
    // The default schedule 0 0,12 * * * allows 12 h plus 1 h grace: one missed slot is flagged.
    assert_eq!(v["jobs"][0]["max_age_hours"], 13.0, "{v}");
    assert_eq!(v["exit_code"], 1);

    // [daemon] max_age_hours overrides the default: 100 h makes 3 days fresh.
    let cfg = write_config(
        t.path(),
        &format!(
            "[daemon]\ntimezone = \"UTC\"\nstate_dir = \"{}\"\nmax_age_hours = 100\n",
            state.display()
        ),
    );
    let o = run(&["-c", cfg.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_failing_job_shows_in_status_and_runs_on_failure() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let pool = t.path().join("pool"); // exists but holds no repository: an unmounted pool
    let state = t.path().join("state");
    let hook = t.path().join("hook.log");
    make_tree(&src);
    fs::create_dir_all(&pool).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            r#"
[repository]
path = "{pool}"

[[files]]
paths = ["{src}"]

[[schedule]]
name = "nightly"
cron = "* * * * * *"

[daemon]
timezone = "UTC"
state_dir = "{state}"
on_failure = 'echo "$MNBACKUP_JOB: $MNBACKUP_ERROR" >> {hook}'
"#,
            pool = pool.display(),
            src = src.display(),
            state = state.display(),
            hook = hook.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let mut d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    let failing = wait_for(Duration::from_secs(20), || {
        let o = run(&["-c", c, "--json", "status"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .is_ok_and(|v| v["jobs"][0]["health"] == "failing")
    });
    assert!(
        failing,
        "the job never showed as failing; daemon log:\n{}",
        d.log()
    );
    assert!(
        wait_for(Duration::from_secs(10), || hook.exists()),
        "on_failure did not run; log:\n{}",
        d.log()
    );
    assert_eq!(d.terminate(), Some(0), "daemon log:\n{}", d.log());

    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("FAILING"), "{out}");
    assert!(out.contains("no mnbackup repository"), "{out}");
    let v = json(&run(&["-c", c, "--json", "status"]));
    let job = &v["jobs"][0];
    assert!(
        job["last_error"].as_str().unwrap().contains("not mounted"),
        "{v}"
    );
    assert!(job["consecutive_failures"].as_u64().unwrap() >= 1, "{v}");
    assert!(job["last_success"].is_null(), "{v}");
    let h = fs::read_to_string(&hook).unwrap();
    assert!(h.starts_with("nightly: no mnbackup repository at"), "{h}");
    // Nothing was created in the unmounted pool.
    assert!(files_under(&pool).is_empty());
}

#[test]
fn schedule_next_prints_times_twelve_hours_apart() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), "[daemon]\ntimezone = \"UTC\"\n");
    let c = cfg.to_str().unwrap();
    let o = run(&["-c", c, "schedule", "next", "3", "--expr", "0 0,12 * * *"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "{}", stdout(&o));
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" 00:00:00 UTC") || l.contains(" 12:00:00 UTC")),
        "{lines:?}"
    );

    let v = json(&run(&[
        "-c",
        c,
        "--json",
        "schedule",
        "next",
        "3",
        "--expr",
        "0 0,12 * * *",
    ]));
    let times: Vec<DateTime<Utc>> = v[0]["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            DateTime::parse_from_rfc3339(s.as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        })
        .collect();
    assert_eq!(times.len(), 3, "{v}");
    assert!(times[0] > Utc::now());
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], chrono::Duration::hours(12), "{v}");
    }

    // The configured jobs (here the default one) when no --expr is given.
    let o = run(&["-c", c, "schedule", "next", "2"]);
    assert!(
        stdout(&o).starts_with("snapshot: 0 0,12 * * * (UTC)"),
        "{}",
        stdout(&o)
    );
    // A bad expression is a usage error that says what is expected.
    let o = run(&["-c", c, "schedule", "next", "--expr", "0 0 12 * * * *"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected 5 crontab fields"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn schedule_install_dry_run_prints_the_unit() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("pool/repo");
    let cfg = write_config(
        t.path(),
        &format!("[repository]\npath = \"{}\"\n", repo.display()),
    );
    let o = run(&[
        "-c",
        cfg.to_str().unwrap(),
        "schedule",
        "install",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let unit = stdout(&o);
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart line");
    assert_eq!(
        exec,
        format!(
            "ExecStart={} --config {} daemon",
            bin().display(),
            cfg.display()
        )
    );
    assert!(
        unit.contains(&format!("RequiresMountsFor={}\n", repo.display())),
        "{unit}"
    );
    assert!(unit.contains("KillMode=mixed\n"), "{unit}");
    // Default grace 300 s + 60 s cancel timeout + 30 s.
    assert!(unit.contains("TimeoutStopSec=390s\n"), "{unit}");

    // Without a configuration file: `mnbackup daemon` with the defaults, and a warning.
    if !Path::new("/etc/mnbackup/mnbackup.toml").exists() {
        let o = run(&["schedule", "install", "--dry-run"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(&format!("ExecStart={} daemon\n", bin().display())));
        assert!(stdout(&o).contains("mnbackup daemon"));
        assert!(
            stderr(&o).contains("no configuration file"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn import_crontab_proposes_and_applies() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let cfg = write_config(
        t.path(),
        &format!("[daemon]\nstate_dir = \"{}\"\n", state.display()),
    );
    let c = cfg.to_str().unwrap();
    let crontab = t.path().join("crontab");
    let original = "\
# m h dom mon dow command
MAILTO=root
0 0,12 * * * /usr/bin/rsync -avu /var/lib/zstack/mysql-backup/* /mysql_bk/
30 0,12 * * * zstack-ctl dump_mysql --keep-amount 14
15 3 * * * /usr/local/bin/rotate-logs.sh > /dev/null 2>&1
";
    fs::write(&crontab, original).unwrap();
    let f = crontab.to_str().unwrap();

    // Without --apply: a proposal, nothing changed.
    let o = run(&["-c", c, "schedule", "import-crontab", "--file", f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("line 3: 0 0,12 * * * /usr/bin/rsync"), "{out}");
    assert!(
        out.contains("line 4: 30 0,12 * * * zstack-ctl dump_mysql"),
        "{out}"
    );
    assert!(out.contains("Proposed schedule: 30 0,12 * * *"), "{out}");
    assert!(out.contains("Proposed pool:     /mysql_bk"), "{out}");
    assert!(out.contains("Nothing was changed"), "{out}");
    assert_eq!(fs::read_to_string(&crontab).unwrap(), original);
    assert!(!state.exists() || files_under(&state).is_empty());
    let v = json(&run(&[
        "-c",
        c,
        "--json",
        "schedule",
        "import-crontab",
        "--file",
        f,
    ]));
    assert_eq!(v["found"], true);
    assert_eq!(v["pool"], "/mysql_bk");
    assert_eq!(v["keep_last"], 14);
    assert_eq!(v["applied"], false);
    assert_eq!(v["lines"].as_array().unwrap().len(), 2);
    assert_eq!(fs::read_to_string(&crontab).unwrap(), original);

    // Issue 14 item 10: --apply is refused while mnbackup cannot take over (no repository, no
    // snapshot, no daemon); the exact diff is shown first, and nothing changes.
    let o = run(&[
        "-c",
        c,
        "schedule",
        "import-crontab",
        "--file",
        f,
        "--apply",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "@@ line 3 @@\n-0 0,12 * * * /usr/bin/rsync -avu /var/lib/zstack/mysql-backup/* \
             /mysql_bk/\n+# disabled by mnbackup schedule import-crontab "
        ),
        "{out}"
    );
    let err = stderr(&o);
    assert!(
        err.contains("--apply refused, the crontab is unchanged"),
        "{err}"
    );
    assert!(err.contains("no repository is configured"), "{err}");
    assert!(err.contains("daemon is not running"), "{err}");
    assert_eq!(fs::read_to_string(&crontab).unwrap(), original);
    assert!(!state.exists() || files_under(&state).is_empty());

    // Make mnbackup able to take over: a repository with a complete snapshot, and the daemon.
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    make_tree(&src);
    ok(&repo, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            "[repository]\npath = \"{}\"\n[[files]]\npaths = [\"{}\"]\n[[schedule]]\n\
             name = \"snapshot\"\ncron = \"0 0 1 1 *\"\n[daemon]\nstate_dir = \"{}\"\n",
            repo.display(),
            src.display(),
            state.display()
        ),
    );
    let o = run(&["-c", c, "snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&[
        "-c",
        c,
        "schedule",
        "import-crontab",
        "--file",
        f,
        "--apply",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no repository"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("daemon is not running"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(&crontab).unwrap(), original);
    let mut d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    assert!(
        wait_for(Duration::from_secs(10), || state
            .join("daemon.lock")
            .exists()
            && fs::read_to_string(state.join("daemon.lock"))
                .is_ok_and(|p| !p.trim().is_empty())),
        "{}",
        d.log()
    );

    // With --apply: the two lines are commented out, a copy of the old crontab is saved.
    let o = run(&[
        "-c",
        c,
        "schedule",
        "import-crontab",
        "--file",
        f,
        "--apply",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("[[schedule]]\nname = \"snapshot\"\ncron = \"30 0,12 * * *\""),
        "{out}"
    );
    assert!(out.contains("path = \"/mysql_bk/mnbackup\""), "{out}");
    assert!(out.contains("keep_last = 14"), "{out}");
    let now = fs::read_to_string(&crontab).unwrap();
    let lines: Vec<&str> = now.lines().collect();
    assert_eq!(lines.len(), 5, "{now}");
    assert_eq!(lines[0], "# m h dom mon dow command");
    assert_eq!(lines[1], "MAILTO=root");
    assert!(
        lines[2].starts_with("# disabled by mnbackup schedule import-crontab "),
        "{now}"
    );
    assert!(
        lines[2].ends_with(
            ": 0 0,12 * * * /usr/bin/rsync -avu /var/lib/zstack/mysql-backup/* /mysql_bk/"
        ),
        "{now}"
    );
    assert!(
        lines[3].starts_with("# disabled by mnbackup")
            && lines[3].ends_with("zstack-ctl dump_mysql --keep-amount 14"),
        "{now}"
    );
    assert_eq!(
        lines[4],
        "15 3 * * * /usr/local/bin/rotate-logs.sh > /dev/null 2>&1"
    );
    let backups: Vec<PathBuf> = files_under(&state)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("crontab.before-mnbackup.")
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert_eq!(fs::read_to_string(&backups[0]).unwrap(), original);

    // Applying again finds nothing and changes nothing.
    let o = run(&[
        "-c",
        c,
        "schedule",
        "import-crontab",
        "--file",
        f,
        "--apply",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("nothing to import"), "{}", stdout(&o));
    assert_eq!(fs::read_to_string(&crontab).unwrap(), now);
    let copies = files_under(&state)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("crontab.before-mnbackup."))
        .count();
    assert_eq!(copies, 1);
    assert_eq!(d.terminate(), Some(0), "{}", d.log());
}

/// Issue 14 item 7: `status` reads the repository (manual snapshots count, the newest being
/// incomplete is CRITICAL), prints the Nagios verdict first (also with -q, for the worst job),
/// and uses 0/1/2/3.
#[test]
fn status_sees_manual_snapshots_and_speaks_nagios() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    make_tree(&src);
    ok(&repo, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            r#"
[repository]
path = "{repo}"

[[files]]
paths = ["{src}"]

[[schedule]]
name = "nightly"
cron = "0 0,12 * * *"

[[schedule]]
name = "check"
cron = "30 3 * * *"
job = "verify"

[daemon]
timezone = "UTC"
state_dir = "{state}"
"#,
            repo = repo.display(),
            src = src.display(),
            state = state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    for _ in 0..2 {
        let o = run(&["-c", c, "snapshot"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    // The verify job has a good state file; the snapshot job only manual snapshots.
    fs::create_dir_all(&state).unwrap();
    let recent = Utc::now() - chrono::Duration::hours(1);
    let verify_state = serde_json::to_vec_pretty(&serde_json::json!({
        "job": "check", "kind": "verify", "last_start": recent, "last_success": recent,
        "last_run_ok": true, "last_success_summary": "verify ok"
    }))
    .unwrap();
    fs::write(state.join("check.json"), &verify_state).unwrap();
    let o = run(&["-c", c, "status"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("MNBACKUP OK - "), "{out}");
    assert!(first.contains("nightly fresh"), "{first}");
    let perf = first.split_once(" | ").expect("performance data").1;
    let age: i64 = perf
        .split(' ')
        .find_map(|p| p.strip_prefix("age="))
        .and_then(|p| p.split_once("s;"))
        .map(|(a, _)| a.parse().unwrap())
        .unwrap_or_else(|| panic!("no age= in {perf}"));
    assert!((0..300).contains(&age), "{perf}");
    // 12 h interval + 1 h grace as the warning threshold.
    assert!(
        perf.contains("nightly_age=") && perf.contains("s;46800;;0"),
        "{perf}"
    );
    let v = json(&run(&["-c", c, "--json", "status"]));
    let nightly = &v["jobs"][0];
    assert_eq!(nightly["health"], "fresh", "{v}");
    assert!(nightly["last_success_summary"]
        .as_str()
        .unwrap()
        .contains("manual"));

    // -q prints only the verdict, and it is the worst job's: a corrupt state file is UNKNOWN.
    fs::write(state.join("check.json"), "{not json").unwrap();
    let o = run(&["-c", c, "-q", "status"]);
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("MNBACKUP UNKNOWN - check: UNKNOWN: "),
        "{}",
        stdout(&o)
    );
    fs::write(state.join("check.json"), &verify_state).unwrap();

    // The newest snapshot is incomplete: CRITICAL with the reason, even though an older one
    // is complete and recent.
    let newest = ids(&repo).pop().unwrap();
    forge_manifest(&repo, Some(&newest), |m| {
        m["complete"] = false.into();
        m["gaps"] = serde_json::json!([{
            "source": "mariadb", "kind": "routines", "reason": "SHOW CREATE PROCEDURE denied"
        }]);
    });
    let o = run(&["-c", c, "-q", "status"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.starts_with(&format!(
            "MNBACKUP CRITICAL - nightly: FAILING: the newest snapshot {newest} (manual) is \
             INCOMPLETE (1 gap(s): mariadb routines: SHOW CREATE PROCEDURE denied"
        )),
        "{out}"
    );
    assert!(out.contains("check fresh"), "{out}");
}

/// Issue 14 item 7: a new installation whose daemon has planned, but not yet reached, the
/// first slot is OK, not CRITICAL.
#[test]
fn status_of_a_new_installation_is_ok_until_the_first_slot() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    fs::create_dir_all(&state).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[daemon]\ntimezone = \"UTC\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let first = Utc::now() + chrono::Duration::hours(5);
    fs::write(
        state.join("snapshot.json"),
        serde_json::to_vec(&serde_json::json!({
            "job": "snapshot", "kind": "snapshot", "next_due": first
        }))
        .unwrap(),
    )
    .unwrap();
    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("MNBACKUP OK - snapshot pending"),
        "{}",
        stdout(&o)
    );
    // The first slot passed long ago without a run: CRITICAL.
    let long_ago = Utc::now() - chrono::Duration::hours(20);
    fs::write(
        state.join("snapshot.json"),
        serde_json::to_vec(&serde_json::json!({
            "job": "snapshot", "kind": "snapshot", "next_due": long_ago
        }))
        .unwrap(),
    )
    .unwrap();
    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("MNBACKUP CRITICAL - snapshot: NEVER"),
        "{}",
        stdout(&o)
    );
}

/// Issue 14 item 4: a snapshot job and a verify job due in the same second, without retries,
/// never fail on the daemon's own repository lock: the daemon runs them one after the other.
#[test]
fn daemon_runs_jobs_due_together_one_after_the_other() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    make_tree(&src);
    ok(&repo, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            r#"
[repository]
path = "{repo}"

[[files]]
paths = ["{src}"]

[[schedule]]
name = "snap"
cron = "*/2 * * * * *"
retries = 0

[[schedule]]
name = "check"
cron = "*/2 * * * * *"
job = "verify"
args = ["--read-data"]
retries = 0

[daemon]
timezone = "UTC"
state_dir = "{state}"
"#,
            repo = repo.display(),
            src = src.display(),
            state = state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let mut d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    let runs = |v: &serde_json::Value, i: usize| v["jobs"][i]["runs_total"].as_u64().unwrap_or(0);
    let done = wait_for(Duration::from_secs(40), || {
        let o = run(&["-c", c, "--json", "status"]);
        serde_json::from_slice::<serde_json::Value>(&o.stdout)
            .is_ok_and(|v| runs(&v, 0) >= 4 && runs(&v, 1) >= 4)
    });
    assert!(
        done,
        "not 4 runs each within 40 s; daemon log:\n{}",
        d.log()
    );
    assert_eq!(d.terminate(), Some(0), "daemon log:\n{}", d.log());
    let v = json(&run(&["-c", c, "--json", "status"]));
    for job in v["jobs"].as_array().unwrap() {
        assert_eq!(job["failures_total"], 0, "{v}\nlog:\n{}", d.log());
        assert_eq!(job["health"], "fresh", "{v}");
    }
    assert!(!d.log().contains("locked"), "{}", d.log());
}

/// Issue 14 item 13: `on_success` beside `on_failure`, for the daemon's jobs and, with
/// `--hooks`, for manual runs, with the same MNBACKUP_* variables.
#[test]
fn hooks_run_on_success_and_failure_for_daemon_and_manual_runs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    let hook = t.path().join("hook.log");
    make_tree(&src);
    ok(&repo, &["init"]);
    let config = |repo: &Path| {
        format!(
            r#"
[repository]
path = "{repo}"

[[files]]
paths = ["{src}"]

[[schedule]]
name = "snap"
cron = "*/2 * * * * *"

[daemon]
timezone = "UTC"
state_dir = "{state}"
on_success = 'echo "ok $MNBACKUP_JOB $MNBACKUP_KIND $MNBACKUP_RESULT [$MNBACKUP_SUMMARY]" >> {hook}'
on_failure = 'echo "fail $MNBACKUP_JOB $MNBACKUP_KIND $MNBACKUP_RESULT [$MNBACKUP_ERROR]" >> {hook}'
"#,
            repo = repo.display(),
            src = src.display(),
            state = state.display(),
            hook = hook.display()
        )
    };
    let cfg = write_config(t.path(), &config(&repo));
    let c = cfg.to_str().unwrap();
    let lines = || {
        fs::read_to_string(&hook)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };

    // Manual runs without --hooks run no hook.
    let o = run(&["-c", c, "snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(lines().is_empty());
    // With --hooks: on_success, JOB=manual.
    let o = run(&["-c", c, "--hooks", "snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(lines(), ["ok manual snapshot success [snapshot ok]"]);
    let o = run(&["-c", c, "verify", "--hooks"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(lines()[1], "ok manual verify success [verify ok]");
    // A manual run that fails: on_failure with the error, and the command's own exit code.
    let other = t.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let unmounted = write_config(&other, &config(&t.path().join("nothing-here")));
    let o = run(&["-c", unmounted.to_str().unwrap(), "--hooks", "snapshot"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let l = lines();
    assert!(
        l[2].starts_with("fail manual snapshot failure [") && l[2].contains("(exit code 3)]"),
        "{l:?}"
    );
    // --hooks where it means nothing is a usage error, and runs nothing.
    let o = run(&["-c", c, "--hooks", "list"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(lines().len(), 3);

    // The daemon runs on_success after each good run.
    let mut d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    let two = wait_for(Duration::from_secs(30), || {
        lines()
            .iter()
            .filter(|l| l.starts_with("ok snap snapshot success [snapshot "))
            .count()
            >= 2
    });
    assert_eq!(d.terminate(), Some(0), "daemon log:\n{}", d.log());
    assert!(two, "{:?}\n{}", lines(), d.log());
}

/// Issue 14 item 5: `timezone = "local"` follows exactly the DST rules of the system's named
/// zone (here TZ=America/New_York) over a year: repeated and skipped hours alike.
#[test]
fn local_timezone_fires_exactly_as_the_named_zone_over_a_dst_year() {
    let t = tempfile::tempdir().unwrap();
    let fires = |tz: &str, expr: &str| -> Vec<DateTime<Utc>> {
        let dir = t.path().join(tz.replace('/', "_"));
        fs::create_dir_all(&dir).unwrap();
        let cfg = write_config(&dir, &format!("[daemon]\ntimezone = \"{tz}\"\n"));
        let o = Command::new(bin())
            .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "--json",
                "schedule",
                "next",
                "1500",
            ])
            .args(["--expr", expr])
            .env_remove("MNBACKUP_CONFIG")
            .env_remove("MNBACKUP_REPO")
            .env("TZ", "America/New_York")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        json(&o)[0]["next"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                DateTime::parse_from_rfc3339(v.as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc)
            })
            .collect()
    };
    // Every 15 minutes in the 2 o'clock hour (skipped in March), 1:30 (repeated in November),
    // and the hours around both transitions on Sundays.
    for expr in ["*/15 2 * * *", "30 1 * * *", "0 1-3 * * 0"] {
        let local = fires("local", expr);
        let named = fires("America/New_York", expr);
        assert_eq!(local.len(), 1500, "{expr}");
        let span = *local.last().unwrap() - local[0];
        let differ: Vec<_> = local
            .iter()
            .zip(&named)
            .filter(|(a, b)| a != b)
            .take(3)
            .collect();
        assert!(
            differ.is_empty() && local.len() == named.len(),
            "{expr}: local differs from America/New_York (local, named): {differ:?}"
        );
        assert!(
            span > chrono::Duration::days(364),
            "{expr}: covers a DST year"
        );
    }
}

/// Issue 14 item 11: the generated unit passes `systemd-analyze verify`, is hardened (exposure
/// score from `systemd-analyze security` at most 3.0, "OK"), takes its mount dependency from the
/// configuration's repository path (not a `-r` given to the command), and stops restarting on a
/// configuration error.
#[test]
fn the_generated_unit_verifies_and_is_hardened() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "systemd-analyze is missing: install the systemd package (fixtures/test-all.sh does)"
    );
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    let cfg = write_config(
        t.path(),
        &format!(
            "[repository]\npath = \"{}\"\n[daemon]\nstate_dir = \"{}\"\n\
             prometheus_textfile = \"{}/textfile/mnbackup.prom\"\n",
            repo.display(),
            state.display(),
            t.path().display()
        ),
    );
    let other = t.path().join("elsewhere");
    let o = run(&[
        "-c",
        cfg.to_str().unwrap(),
        "-r",
        other.to_str().unwrap(),
        "schedule",
        "install",
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let unit = stdout(&o);
    assert!(
        unit.contains(&format!("RequiresMountsFor={}\n", repo.display())),
        "{unit}"
    );
    assert!(!unit.contains("elsewhere"), "{unit}");
    for line in [
        "RestartPreventExitStatus=2\n".to_string(),
        "SyslogIdentifier=mnbackup\n".to_string(),
        "ProtectSystem=strict\n".to_string(),
        format!(
            "ReadWritePaths={} -{} -/var/cache/mnbackup -{}/textfile -/root/.cassandra\n",
            repo.display(),
            state.display(),
            t.path().display()
        ),
        "ProtectHome=read-only\n".to_string(),
        "PrivateTmp=yes\n".to_string(),
        "NoNewPrivileges=yes\n".to_string(),
    ] {
        assert!(unit.contains(&line), "missing {line:?} in\n{unit}");
    }
    let file = t.path().join("mnbackup.service");
    fs::write(&file, &unit).unwrap();
    let v = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        v.status.success() && v.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&v),
        stderr(&v)
    );
    let s = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&file)
        .output()
        .unwrap();
    let out = stdout(&s);
    let verdict = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in {out}{}", stderr(&s)));
    let score: f64 = verdict
        .split(": ")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{verdict}"));
    eprintln!("{verdict}");
    assert!(score <= 3.0, "{verdict}\n{out}");
}

/// Issue 14 item 11: under systemd (stderr is the journal stream) every log line carries its
/// journald priority, so `journalctl -p err` finds the failures.
#[test]
fn log_lines_carry_journald_priorities_under_systemd() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    make_tree(&src);
    let repo = t.path().join("repo");
    ok(&repo, &["init"]);
    let log = t.path().join("journal");
    let journal_run = |args: &[&str]| {
        let f = fs::File::create(&log).unwrap();
        let m = f.metadata().unwrap();
        let o = Command::new(bin())
            .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
            .args(args)
            .env_remove("MNBACKUP_CONFIG")
            .env("MNBACKUP_LOG", "debug")
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .stderr(f)
            .output()
            .unwrap();
        (o.status.code(), fs::read_to_string(&log).unwrap())
    };
    let r = repo.to_str().unwrap();
    let (code, text) = journal_run(&["-r", r, "snapshot", "--files", src.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.is_empty());
    for l in text.lines() {
        assert!(
            l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<7>"),
            "{text}"
        );
    }
    let missing = t.path().join("missing");
    let (code, text) = journal_run(&["-r", missing.to_str().unwrap(), "list"]);
    assert_eq!(code, Some(3));
    assert!(
        text.starts_with("<3>error: no mnbackup repository"),
        "{text}"
    );
    // Not under systemd: no prefixes.
    let o = run(&["-r", missing.to_str().unwrap(), "list"]);
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
}

/// libfaketime's multi-threaded preload library (Debian's `faketime` package).
fn libfaketime() -> PathBuf {
    let found = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("faketime/libfaketimeMT.so.1"))
    .find(|p| p.exists());
    found.expect(
        "libfaketime is missing: install Debian's faketime package (fixtures/test-all.sh does)",
    )
}

/// Issue 14 item 1, end to end under libfaketime: the wall clock of a running daemon steps
/// back an hour (NTP correcting a clock that was ahead; the monotonic clock is not faked). An
/// every-3-seconds job keeps running instead of stalling for the hour.
#[test]
fn daemon_keeps_running_after_the_clock_steps_back() {
    let lib = libfaketime();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    let repo = t.path().join("pool/repo");
    let state = t.path().join("state");
    make_tree(&src);
    ok(&repo, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            "[repository]\npath = \"{}\"\n[[files]]\npaths = [\"{}\"]\n[[schedule]]\n\
             name = \"snap\"\ncron = \"*/3 * * * * *\"\nretries = 0\n[daemon]\n\
             timezone = \"UTC\"\nstate_dir = \"{}\"\n",
            repo.display(),
            src.display(),
            state.display()
        ),
    );
    let offset = t.path().join("faketime-offset");
    let set_offset = |v: &str| {
        let tmp = t.path().join("faketime-offset.tmp");
        fs::write(&tmp, format!("{v}\n")).unwrap();
        fs::rename(&tmp, &offset).unwrap();
    };
    set_offset("+0");
    let log = t.path().join("daemon.log");
    let mut child = Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-c")
        .arg(&cfg)
        .arg("daemon")
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .env("MNBACKUP_LOG", "info")
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = DaemonProc {
        child: None,
        log: log.clone(),
    };
    let runs = || {
        fs::read_to_string(state.join("snap.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["runs_total"].as_u64())
            .unwrap_or(0)
    };
    let two = wait_for(Duration::from_secs(30), || runs() >= 2);
    if !two {
        let _ = child.kill();
        panic!("no two runs before the step; log:\n{}", d.log());
    }
    // NTP steps the clock back by an hour.
    set_offset("-1h");
    let before = runs();
    let more = wait_for(Duration::from_secs(20), || runs() >= before + 2);
    d.child = Some(child);
    let code = d.terminate();
    let text = d.log();
    assert!(
        more,
        "the daemon stalled after the clock stepped back; log:\n{text}"
    );
    assert!(text.contains("the system clock was stepped by"), "{text}");
    assert_eq!(code, Some(0), "{text}");
    // Every run succeeded.
    let st: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(state.join("snap.json")).unwrap()).unwrap();
    assert_eq!(st["failures_total"], 0, "{st}\n{text}");
}
