//! An interrupted restore finishes when run again: the restore is killed (SIGKILL) at several
//! points while it loads a somewhat bigger fixture — early, after the first tables, late in the
//! data — and each time the same command is run again. The last run completes, skipping what
//! was done, reloading what was half done (also the MyISAM `AuditsVO`), and every table's
//! fingerprint matches.

mod restore_common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use mnbackup_fixtures::mariadb::TestServer;
use restore_common::*;

fn journal(env: &Env) -> Option<serde_json::Value> {
    let b = std::fs::read(&env.journal).ok()?;
    serde_json::from_slice(&b).ok()
}

fn count(j: &serde_json::Value, key: &str) -> usize {
    j[key].as_array().map(|a| a.len()).unwrap_or(0)
}

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn killed_restores_resume_and_finish() {
    if skip() {
        return;
    }
    let env = Env::new();
    let a = TestServer::start().unwrap();
    generate(&a, 0.03, 21);
    env.config(&a, &[], "");
    let id = env.snapshot();
    let m = env.manifest(&id);
    let tables = m["sources"]["mariadb"]["load_plan"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "data")
        .map(|e| {
            format!(
                "{}.{}",
                e["db"].as_str().unwrap(),
                e["table"].as_str().unwrap()
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    drop(a);

    let b = TestServer::start().unwrap();
    env.config(&b, &[], "");
    let args = [
        "restore",
        "--workers",
        "2",
        "--memory-budget-mib",
        "1",
        "--journal",
        env.journal.to_str().unwrap(),
    ];
    // Kill points: (description, condition on the journal, the tables done when the run
    // started, and the elapsed time).
    type Cond = Box<dyn Fn(Option<&serde_json::Value>, usize, Duration) -> bool>;
    let done = |j: Option<&serde_json::Value>| j.map(|j| count(j, "tables_done")).unwrap_or(0);
    let points: Vec<(&str, Cond)> = vec![
        (
            "early (preflight / schema)",
            Box::new(|_, _, t| t > Duration::from_millis(300)),
        ),
        (
            "after one more table",
            Box::new(move |j, base, _| done(j) > base),
        ),
        (
            "half of the remaining tables",
            Box::new(move |j, base, _| done(j) >= base + (tables - base) / 2),
        ),
        (
            "most of the tables",
            Box::new(move |j, _, _| done(j) + 3 >= tables),
        ),
    ];
    let mut kills = 0;
    for (what, cond) in &points {
        let base = done(journal(&env).as_ref());
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let killed = loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut e = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut e).ok();
                assert!(
                    st.success(),
                    "restore failed before the kill point {what}: {e}"
                );
                break false;
            }
            let j = journal(&env);
            if cond(j.as_ref(), base, t0.elapsed()) {
                child.kill().unwrap();
                child.wait().unwrap();
                break true;
            }
            if t0.elapsed() > Duration::from_secs(90) {
                let pl = b.sql("SHOW FULL PROCESSLIST").unwrap_or_default();
                child.kill().ok();
                let mut e = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut e).ok();
                panic!("the restore hangs at kill point {what}; processlist:\n{pl}\nstderr: {e}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let j = journal(&env);
        eprintln!(
            "kill point {what}: {} after {:?} (journal: {} tables done, {} started, {} steps)",
            if killed { "killed" } else { "already finished" },
            t0.elapsed(),
            j.as_ref().map(|j| count(j, "tables_done")).unwrap_or(0),
            j.as_ref().map(|j| count(j, "tables_started")).unwrap_or(0),
            j.as_ref().map(|j| count(j, "steps_done")).unwrap_or(0),
        );
        if !killed {
            break;
        }
        kills += 1;
    }
    assert!(
        kills >= 2,
        "the restore was too fast to interrupt; use a bigger fixture"
    );
    // The last run completes.
    let t0 = Instant::now();
    let out = env.run(&[&["--json"][..], &args[..]].concat());
    assert!(out.status.code() == Some(0), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "final run after {kills} kills: {:.2}s, {}",
        t0.elapsed().as_secs_f64(),
        r["warnings"]
    );
    assert_eq!(r["tables_mismatched"], 0);
    assert!(
        r["warnings"].to_string().contains("resuming"),
        "{}",
        r["warnings"]
    );
    let n = check_fingerprints(&b, &m, &[]);
    assert!(n >= tables);
    assert!(!env.journal.exists());

    drop(b);

    // Twenty more kills at seeded random points of a restore into another empty instance (each
    // run resuming the one before): each leaves the repository verifiable, and the restore
    // finishes with every fingerprint matching.
    let c = TestServer::start().unwrap();
    env.config(&c, &[], "");
    let mut seed: u64 = 0x5eed_2026;
    let mut random_kills = 0;
    let mut completions = 0;
    // the whole restore takes about 2 s here: points from its start to well into the data
    let span = 600;
    let dbs: Vec<String> = m["sources"]["mariadb"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    for round in 0..80 {
        if random_kills >= 20 {
            break;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(30 + seed % span);
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let mut done = false;
        while t0.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "random kill round {round}: the restore failed"
                );
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if done {
            // A complete restore: prove it, then empty the target for the next cycle.
            completions += 1;
            assert!(check_fingerprints(&c, &m, &[]) >= tables);
            assert!(!env.journal.exists());
            for d in &dbs {
                c.sql(&format!("DROP DATABASE IF EXISTS `{d}`")).unwrap();
            }
            continue;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        random_kills += 1;
        let v = env.run(&["verify", "--read-data"]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "verify after kill {round}: {}",
            text(&v)
        );
    }
    eprintln!(
        "{random_kills} restores killed at seeded random points; {completions} restores completed between them"
    );
    let out = env.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let n = check_fingerprints(&c, &m, &[]);
    assert!(n >= tables);
    assert!(!env.journal.exists());
    assert_eq!(random_kills, 20);
}
