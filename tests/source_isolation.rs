//! Each source of a snapshot succeeds or fails on its own: a damaged SSTable or a Cassandra that
//! is down leaves (part of) Cassandra out as a gap, MariaDB and the files are committed, and the
//! run exits 10 (incomplete). Through the `mnbackup` binary, with a throwaway MariaDB, a files
//! directory and the Cassandra stand-ins.

mod restore_common;

use std::fs;

use mnbackup_fixtures::cassandra as fx;
use mnbackup_fixtures::mariadb::TestServer;
use restore_common::{generate, text, Env};

fn item_names(env: &Env, id: &str) -> Vec<String> {
    env.manifest(id)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Configure MariaDB on `server`, a files directory and Cassandra on `data` (stand-in with
/// `nodetool_env`); returns the files directory.
fn configure(
    env: &Env,
    server: &TestServer,
    data: &std::path::Path,
    nodetool_env: &[&str],
) -> std::path::PathBuf {
    let files = env.dir.path().join("etc-zstack");
    fs::create_dir_all(&files).unwrap();
    fs::write(
        files.join("zstack.properties"),
        b"DB.url=jdbc:mysql://localhost:3306\n",
    )
    .unwrap();
    let mut argv = vec![
        "env".to_string(),
        format!("CASSANDRA_DATA={}", data.display()),
    ];
    argv.extend(nodetool_env.iter().map(|s| s.to_string()));
    argv.push(fx::nodetool_path().display().to_string());
    let cass = format!(
        "[cassandra]\ndata_dirs = [{:?}]\nnodetool = {}\nowner = \"root\"\n",
        data.display().to_string(),
        serde_json::to_string(&argv).unwrap()
    );
    env.config(server, &[&files], &cass);
    files
}

fn snapshot_incomplete(env: &Env) -> (String, serde_json::Value, String) {
    let o = env.run(&["--json", "snapshot"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_corrupt_sstable_is_a_gap_and_mariadb_and_files_are_committed() {
    let server = TestServer::start().unwrap();
    generate(&server, 0.01, 5);
    let env = Env::new();
    let data = env.dir.path().join("cassandra/data");
    let layout = fx::generate(&data, 41).unwrap();
    layout
        .table("kairosdb", "data_points")
        .corrupt_data(2)
        .unwrap();
    configure(&env, &server, &data, &[]);

    let (id, v, stderr) = snapshot_incomplete(&env);
    assert_eq!(v["complete"], false);
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["kind"], "sstable");
    assert_eq!(gaps[0]["subject"], "kairosdb.data_points/md-2-big");
    assert!(
        stderr.contains("INCOMPLETE") && stderr.contains("md-2-big"),
        "{stderr}"
    );
    let names = item_names(&env, &id);
    assert!(names
        .iter()
        .any(|n| n.starts_with("mariadb/2-data/zstack/")));
    assert!(names.iter().any(|n| n.ends_with("zstack.properties")));
    assert!(names.contains(&"cassandra/kairosdb/data_points/md-1-big-Data.db".to_string()));
    assert!(!names.iter().any(|n| n.contains("data_points/md-2-big-")));
    // The snapshot is listed as incomplete.
    let list = env.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["complete"], false, "{list:?}");
}

#[test]
fn cassandra_down_is_a_source_gap_and_the_rest_is_committed() {
    let server = TestServer::start().unwrap();
    generate(&server, 0.01, 6);
    let env = Env::new();
    let data = env.dir.path().join("cassandra/data");
    fx::generate(&data, 42).unwrap();
    configure(&env, &server, &data, &["NODETOOL_FAIL=all"]);

    let (id, v, stderr) = snapshot_incomplete(&env);
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["source"], "cassandra");
    assert_eq!(gaps[0]["kind"], "source");
    assert!(
        gaps[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{gaps:?}"
    );
    assert!(gaps[0]["fix"].as_str().unwrap().contains("nodetool status"));
    assert!(stderr.contains("cassandra source"), "{stderr}");
    let names = item_names(&env, &id);
    assert!(names.iter().any(|n| n.starts_with("mariadb/")));
    assert!(names.iter().any(|n| n.ends_with("zstack.properties")));
    assert!(!names.iter().any(|n| n.starts_with("cassandra/")));
    assert!(env.manifest(&id)["sources"].get("cassandra").is_none());

    // A keyspace that was dropped (its directory still on disk) fails the same way, on its own.
    fx::cqlsh(&data, "DROP KEYSPACE zstack_billing").unwrap();
    let cfg = fs::read_to_string(&env.cfg).unwrap();
    fs::write(
        &env.cfg,
        cfg.replace("\"NODETOOL_FAIL=all\",", "").replace(
            "owner = \"root\"\n",
            "owner = \"root\"\nkeyspaces = [\"kairosdb\", \"zstack_billing\"]\n",
        ),
    )
    .unwrap();
    let (_, v, _) = snapshot_incomplete(&env);
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Keyspace zstack_billing does not exist"),
        "{gaps:?}"
    );
}

#[test]
fn a_restore_that_leaves_cassandra_tables_pending_exits_non_zero_and_empty_data_dirs_do_not_panic()
{
    let server = TestServer::start().unwrap();
    let env = Env::new();
    let data = env.dir.path().join("cassandra/data");
    fx::generate(&data, 43).unwrap();
    configure(&env, &server, &data, &[]);
    let o = env.run(&["--json", "snapshot"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(10)),
        "{}",
        text(&o)
    );

    // A new node without zstack_logging, and no cqlsh configured to create it.
    let data2 = env.dir.path().join("cassandra2/data");
    fx::generate_empty(&data2, 44).unwrap();
    fx::cqlsh(&data2, "DROP KEYSPACE zstack_logging").unwrap();
    fs::remove_dir_all(data2.join("zstack_logging")).unwrap();
    let cfg = fs::read_to_string(&env.cfg).unwrap();
    let data_s = data.display().to_string();
    fs::write(&env.cfg, cfg.replace(&data_s, &data2.display().to_string())).unwrap();
    let journal = env.journal.to_str().unwrap().to_string();
    let o = env.run(&[
        "restore",
        "latest",
        "--no-mariadb",
        "--no-files",
        "--force",
        "--journal",
        &journal,
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("NOT fully restored") && out.contains("zstack_logging.logs"),
        "{out}"
    );
    // The other tables were restored.
    let layout_ids = fx::schema_ids(&data2).unwrap();
    let id = &layout_ids[&("kairosdb".to_string(), "data_points".to_string())];
    assert!(
        !fx::sstable_contents(&data2.join("kairosdb").join(format!("data_points-{id}")))
            .unwrap()
            .is_empty()
    );

    // `[cassandra] data_dirs = []`: refused up front with a clear message, never a panic.
    let cfg = fs::read_to_string(&env.cfg).unwrap();
    let bad = cfg
        .lines()
        .map(|l| {
            if l.starts_with("data_dirs") {
                "data_dirs = []".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&env.cfg, bad).unwrap();
    let _ = fs::remove_file(&env.journal);
    let o = env.run(&[
        "restore",
        "latest",
        "--no-mariadb",
        "--no-files",
        "--force",
        "--journal",
        &journal,
    ]);
    let out = text(&o);
    assert_ne!(o.status.code(), Some(101), "{out}");
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("data_dirs is empty"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// The lines of table `name` in the Cassandra part of a restore plan's text.
fn plan_block(out: &str, name: &str) -> String {
    let mut lines = out
        .lines()
        .skip_while(|l| !l.starts_with(&format!("  {name}: ")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{name} not in the plan:\n{out}"));
    let mut block = vec![first];
    block.extend(lines.take_while(|l| l.starts_with("    ")));
    block.join("\n")
}

#[test]
fn restore_plan_names_each_table_its_live_directory_and_what_cqlsh_creates() {
    let server = TestServer::start().unwrap();
    let env = Env::new();
    let data = env.dir.path().join("cassandra/data");
    fx::generate(&data, 45).unwrap();
    configure(&env, &server, &data, &[]);
    let o = env.run(&["--json", "snapshot"]);
    assert!(
        matches!(o.status.code(), Some(0) | Some(10)),
        "{}",
        text(&o)
    );

    // A new node without the keyspace zstack_logging.
    let data2 = env.dir.path().join("cassandra2/data");
    let layout2 = fx::generate_empty(&data2, 46).unwrap();
    fx::cqlsh(&data2, "DROP KEYSPACE zstack_logging").unwrap();
    fs::remove_dir_all(data2.join("zstack_logging")).unwrap();
    let cfg = fs::read_to_string(&env.cfg).unwrap();
    let cfg = cfg.replace(&data.display().to_string(), &data2.display().to_string());
    fs::write(&env.cfg, &cfg).unwrap();
    let journal = env.journal.to_str().unwrap().to_string();
    let plan = |env: &Env| {
        let o = env.run(&[
            "restore",
            "latest",
            "--no-mariadb",
            "--no-files",
            "--plan",
            "--journal",
            &journal,
        ]);
        (o.status.code(), text(&o))
    };

    // Without cqlsh: each table, its live directory, "exists"; the missing table is named with
    // why the restore cannot create it.
    let (code, out) = plan(&env);
    assert_eq!(code, Some(0), "{out}");
    let existing: Vec<_> = layout2
        .user_tables()
        .filter(|t| t.keyspace != "zstack_logging")
        .collect();
    assert!(!existing.is_empty());
    for t in &existing {
        let block = plan_block(&out, &format!("{}.{}", t.keyspace, t.table));
        assert!(
            block.contains(&format!("live directory: {}", t.dir.display()))
                && block.contains("schema: exists"),
            "{}.{}: {block}\n{out}",
            t.keyspace,
            t.table
        );
    }
    assert!(
        out.contains("zstack_logging.logs")
            && out.contains("MISSING and NOT created: no cqlsh is configured"),
        "{out}"
    );
    // Nothing runs for it: the statements are shown to run by hand.
    let logs = plan_block(&out, "zstack_logging.logs");
    assert!(
        !logs.contains("run: ") && logs.contains("to create it yourself"),
        "{logs}"
    );

    // With cqlsh: the CREATE statements it will run; existing tables found through their id.
    let cqlsh = serde_json::to_string(&[
        "env".to_string(),
        format!("CASSANDRA_DATA={}", data2.display()),
        fx::cqlsh_path().display().to_string(),
    ])
    .unwrap();
    fs::write(
        &env.cfg,
        cfg.replace(
            "owner = \"root\"\n",
            &format!("owner = \"root\"\ncqlsh = {cqlsh}\n"),
        ),
    )
    .unwrap();
    let (code, out) = plan(&env);
    assert_eq!(code, Some(0), "{out}");
    let logs = plan_block(&out, "zstack_logging.logs");
    assert!(
        logs.contains("schema: missing")
            && logs.contains("CREATE KEYSPACE IF NOT EXISTS zstack_logging")
            && logs.contains("cqlsh runs:")
            && logs.contains("CREATE TABLE")
            && logs.contains("run: env CASSANDRA_DATA="),
        "{out}"
    );
    assert!(out.contains("schema: exists (its table id"), "{out}");
    // The plan changed nothing.
    assert!(!data2.join("zstack_logging").exists());

    // A failing load names only what this restore included: no MariaDB, no files.
    let nodetool_env = format!(
        "\"CASSANDRA_DATA={}\", \"NODETOOL_FAIL_TABLE=kairosdb.data_points\",",
        data2.display()
    );
    let cfg = fs::read_to_string(&env.cfg).unwrap();
    let line = cfg.lines().find(|l| l.starts_with("nodetool")).unwrap();
    let failing = line.replacen(
        &format!("\"CASSANDRA_DATA={}\",", data2.display()),
        &nodetool_env,
        1,
    );
    assert_ne!(line, failing);
    fs::write(&env.cfg, cfg.replace(line, &failing)).unwrap();
    let o = env.run(&[
        "restore",
        "latest",
        "--no-mariadb",
        "--no-files",
        "--force",
        "--journal",
        &journal,
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("kairosdb.data_points")
            && out.contains("restoring Cassandra (nothing else was restored yet"),
        "{out}"
    );
    assert!(!out.contains("MariaDB"), "{out}");
    assert!(!out.contains("files are restored"), "{out}");
}
