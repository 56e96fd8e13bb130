//! What `restore` refuses, and what `--plan` and `--force` do, against a live server:
//!
//! - `--plan` prints the plan and the preflight results and changes nothing (same databases,
//!   same rows, files root untouched);
//! - restoring into non-empty databases is refused (exit 2) naming them; a running management
//!   service is refused; volumes that moved since the snapshot are named;
//! - `--force` first takes a safety snapshot (trigger `safety`, tag `pre-restore`) of what it
//!   replaces, then replaces it; existing files are replaced, and saved in that snapshot.

mod restore_common;

use std::fs;

use mnbackup_fixtures::mariadb::TestServer;
use restore_common::*;

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn plan_changes_nothing_and_non_empty_targets_need_force() {
    if skip() {
        return;
    }
    let env = Env::new();
    let a = TestServer::start().unwrap();
    generate(&a, 0.005, 5);
    let node = env.dir.path().join("node");
    fs::create_dir_all(node.join("etc")).unwrap();
    fs::write(node.join("etc/app.conf"), b"snapshot version\n").unwrap();
    env.config(&a, &[&node], "");
    let id = env.snapshot();
    let m = env.manifest(&id);

    // The node changes after the snapshot: a volume moves, a row is added, a file changes.
    let vol = a
        .sql("SELECT uuid FROM zstack.VolumeEO ORDER BY uuid LIMIT 1")
        .unwrap()
        .trim()
        .to_string();
    a.sql(&format!(
        "UPDATE zstack.VolumeEO SET installPath = '/moved/{vol}' WHERE uuid = '{vol}'"
    ))
    .unwrap();
    a.sql("INSERT INTO zstack_ui.user_preference (username, pref_key, pref_value) VALUES ('x', 'after', 'snapshot')")
        .unwrap();
    fs::write(node.join("etc/app.conf"), b"live version\n").unwrap();
    let live_rows = all_rows(&a, &DBS);
    let live_dbs = a.sql("SHOW DATABASES").unwrap();
    let root = env.dir.path().join("root");
    fs::create_dir_all(root.join("keep")).unwrap();
    fs::write(root.join("keep/me"), b"x").unwrap();
    let root_before = restore_common_capture(&root);

    // --plan: the whole plan, nothing changed.
    let out = env.run(&[
        "restore",
        "--plan",
        "--files-root",
        root.to_str().unwrap(),
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the plan says the restore would be refused\n{}",
        text(&out)
    );
    eprintln!("{s}");
    for want in [
        "mariadb schema",
        "mariadb data",
        "mariadb fingerprints",
        "files",
        "[FAIL] target databases",
        "zstack (",
        "would be REFUSED",
        "estimated",
    ] {
        assert!(s.contains(want), "plan lacks {want:?}:\n{s}");
    }
    let out = env.run(&[
        "--json",
        "restore",
        "--plan",
        "--rename-db",
        "zstack=z2",
        "--rename-db",
        "zstack_rest=zr2",
        "--rename-db",
        "zstack_ui=zu2",
        "--files-root",
        root.to_str().unwrap(),
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plan"]["would_proceed"], true);
    assert!(plan["plan"]["estimate_secs"].as_u64().unwrap() >= 1);
    assert!(all_rows(&a, &DBS) == live_rows, "--plan changed rows");
    assert_eq!(
        a.sql("SHOW DATABASES").unwrap(),
        live_dbs,
        "--plan changed the databases"
    );
    assert_eq!(
        restore_common_capture(&root),
        root_before,
        "--plan changed the files root"
    );
    assert!(!env.journal.exists(), "--plan wrote a journal");

    // Refused: non-empty databases (and the volume that moved is named).
    let out = env.run(&[
        "restore",
        "--files-root",
        root.to_str().unwrap(),
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{err}");
    for want in [
        "not empty",
        "zstack (",
        "zstack_ui (",
        "--force",
        "--rename-db",
        "volume paths",
        &vol,
        "nothing was changed",
    ] {
        assert!(err.contains(want), "refusal lacks {want:?}:\n{err}");
    }
    assert!(all_rows(&a, &DBS) == live_rows);
    assert!(
        databases_like(&a, "mnbackup_volcheck").is_empty(),
        "the volume check's scratch database is left"
    );

    // Refused: the management service runs (even with --force? no: --force overrides it, so
    // check it without).
    env.config(&a, &[&node], "post_hooks = []");
    let cfg = fs::read_to_string(&env.cfg).unwrap().replace(
        "service_check = \"\"",
        "service_check = \"echo 'MN status: Running [PID:4242]'\"",
    );
    fs::write(&env.cfg, cfg).unwrap();
    let out = env.run(&[
        "restore",
        "--rename-db",
        "zstack=z2",
        "--rename-db",
        "zstack_rest=zr2",
        "--rename-db",
        "zstack_ui=zu2",
        "--no-files",
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("management service")
            && err.contains("Running [PID:4242]")
            && err.contains("zstack-ctl stop"),
        "{err}"
    );
    assert!(databases_like(&a, "z2").is_empty());

    // --force: the safety snapshot first, then the replacement.
    env.config(&a, &[&node], "");
    let n_before = env.list().len();
    let out = env.run(&[
        "--json",
        "restore",
        &id,
        "--force",
        "--files-root",
        "/",
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let safety = report["safety_snapshot"]
        .as_str()
        .expect("a safety snapshot")
        .to_string();
    let list = env.list();
    assert_eq!(list.len(), n_before + 1);
    let entry = list.iter().find(|s| s["id"] == safety.as_str()).unwrap();
    assert_eq!(entry["trigger"], "safety", "{entry}");
    assert!(entry["tags"].to_string().contains("pre-restore"), "{entry}");
    assert!(safety.as_str() > id.as_str());
    // The safety snapshot holds the replaced state: the moved volume, the new row, the live file.
    let sm = env.manifest(&safety);
    let fp = |m: &serde_json::Value, t: &str| m["sources"]["mariadb"]["fingerprints"][t].clone();
    assert_ne!(fp(&sm, "zstack.VolumeEO"), fp(&m, "zstack.VolumeEO"));
    assert_eq!(
        fp(&sm, "zstack_ui.user_preference")["rows"]
            .as_u64()
            .unwrap(),
        fp(&m, "zstack_ui.user_preference")["rows"]
            .as_u64()
            .unwrap()
            + 1
    );
    let conf = format!("files{}", node.join("etc/app.conf").display());
    assert!(
        sm["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == conf.as_str()),
        "the replaced file is in the safety snapshot"
    );
    // And the node is back at the snapshot.
    check_fingerprints(&a, &m, &[]);
    assert_eq!(
        fs::read(node.join("etc/app.conf")).unwrap(),
        b"snapshot version\n"
    );
    assert_eq!(
        a.sql(&format!(
            "SELECT installPath FROM zstack.VolumeEO WHERE uuid = '{vol}'"
        ))
        .unwrap()
        .trim(),
        m_install_path(&env, &id, &vol, &a)
    );
}

/// The installPath of `vol` as the snapshot has it (via a renamed restore on the same server).
fn m_install_path(env: &Env, id: &str, vol: &str, a: &TestServer) -> String {
    let out = env.run(&[
        "restore",
        id,
        "--rename-db",
        "zstack=zcheck",
        "--rename-db",
        "zstack_rest=zrcheck",
        "--rename-db",
        "zstack_ui=zucheck",
        "--no-files",
        "--journal",
        env.journal.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = a
        .sql(&format!(
            "SELECT installPath FROM zcheck.VolumeEO WHERE uuid = '{vol}'"
        ))
        .unwrap()
        .trim()
        .to_string();
    assert!(!p.starts_with("/moved/"), "{p}");
    p
}

fn restore_common_capture(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let c = if e.file_type().is_file() {
            fs::read(e.path()).unwrap()
        } else {
            vec![]
        };
        v.push((e.path().display().to_string(), c));
    }
    v
}
