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
