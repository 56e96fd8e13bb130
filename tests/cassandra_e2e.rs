//! Cassandra end to end through the `mnbackup` binary: `init`, two `snapshot`s of a node (the
//! `nodetool` stand-in over a generated data directory) with one new SSTable between them,
//! `list --json` stats, then `export` and a restore into a fresh node from the exported items.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mnbackup::engines::cassandra::{self as rc, CassandraRestoreConfig, RestoreComponent};
use mnbackup_fixtures::cassandra as fx;

fn mnb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnbackup"))
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .env_remove("MNBACKUP_REPO")
        .env_remove("MNBACKUP_CONFIG")
        .output()
        .expect("running mnbackup")
}

fn ok(args: &[&str]) -> Output {
    let o = mnb(args);
    assert!(
        o.status.success(),
        "mnbackup {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn tool(data: &Path, log: &Path, tool: &Path) -> Vec<String> {
    vec![
        "env".into(),
        format!("CASSANDRA_DATA={}", data.display()),
        format!("NODETOOL_LOG={}", log.display()),
        tool.display().to_string(),
    ]
}

fn files_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            files_under(root, &e.path(), out);
        } else {
            out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

#[test]
fn snapshot_twice_then_restore_from_the_repository() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("node/data");
    let log = t.path().join("nodetool.log");
    let mut layout = fx::generate(&data, 21).unwrap();
    let repo = t.path().join("pool/repo");
    let config = t.path().join("mnbackup.toml");
    let argv = tool(&data, &log, &fx::nodetool_path());
    fs::write(
        &config,
        format!(
            "[cassandra]\ndata_dirs = [{:?}]\nnodetool = {}\n",
            data.display().to_string(),
            serde_json::to_string(&argv).unwrap()
        ),
    )
    .unwrap();
    let (r, c) = (repo.to_str().unwrap(), config.to_str().unwrap());

    ok(&["-r", r, "init"]);
    ok(&["-r", r, "-c", c, "snapshot"]);
    let dp = layout.table_mut("kairosdb", "data_points");
    let new_files = dp.add_sstable(64 * 1024).unwrap();
    let new_compressed: u64 = new_files
        .iter()
        .map(|p| {
            zstd::encode_all(&fs::read(p).unwrap()[..], 3)
                .unwrap()
                .len() as u64
        })
        .sum();
    ok(&["-r", r, "-c", c, "snapshot"]);

    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&ok(&["-r", r, "--json", "list"]).stdout).unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let added: Vec<u64> = list
        .iter()
        .map(|s| s["stats"]["bytes_added"].as_u64().unwrap())
        .collect();
    eprintln!(
        "bytes_added per snapshot: {added:?}; the new SSTable is {new_compressed} bytes compressed"
    );
    // The second snapshot stored the new SSTable (compressed) and a few small objects
    // (manifest.json of the table, the repository's own per-snapshot data), nothing of the
    // unchanged SSTables.
    // `bytes_added` includes the manifest itself (`manifest_bytes`); the objects alone are
    // compared with the new SSTable.
    let manifest_bytes = list[1]["stats"]["manifest_bytes"].as_u64().unwrap();
    assert!(manifest_bytes > 0 && manifest_bytes < added[1], "{list:?}");
    assert!(
        added[1] - manifest_bytes < new_compressed + 16 * 1024,
        "second snapshot added {} bytes ({manifest_bytes} of them its manifest); new SSTable is \
         {new_compressed} compressed",
        added[1]
    );
    assert!(added[1] * 5 < added[0], "{added:?}");
    // The unchanged SSTables were not even read: only the new one (and small files).
    let show: serde_json::Value = serde_json::from_slice(
        &ok(&["-r", r, "--json", "show", list[1]["id"].as_str().unwrap()]).stdout,
    )
    .unwrap();
    let info = &show["sources"]["cassandra"];
    let new_bytes: u64 = new_files
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let read = info["bytes_read"].as_u64().unwrap();
    eprintln!("second snapshot read {read} bytes from the node; the new SSTable is {new_bytes}");
    // Besides the new SSTable only each table's manifest.json and schema.cql (written by every
    // `nodetool snapshot`) are read.
    assert!(
        read >= new_bytes && read <= new_bytes + 8 * 1024,
        "read {read}, new SSTable {new_bytes}: {info}"
    );
    assert!(info["files_unchanged"].as_u64().unwrap() > 20, "{info}");
    // No snapshot left on the node; each run cleared its tag.
    let nt = fs::read_to_string(&log).unwrap();
    assert_eq!(nt.matches("clearsnapshot -t mnbackup-").count(), 2, "{nt}");
    for tb in &layout.tables {
        assert!(!tb.dir.join("snapshots").exists(), "{}", tb.dir.display());
    }

    // Export the latest snapshot's Cassandra items and restore them into a fresh node.
    let id = list[1]["id"].as_str().unwrap();
    let out = t.path().join("export");
    ok(&[
        "-r",
        r,
        "export",
        id,
        out.to_str().unwrap(),
        "--include",
        "cassandra/",
    ]);
    let mut files = Vec::new();
    files_under(&out, &out, &mut files);
    let components: Vec<RestoreComponent<'static>> = files
        .iter()
        .filter_map(|rel| {
            let path = out.join(rel);
            let size = fs::metadata(&path).unwrap().len();
            RestoreComponent::from_item_name(
                rel.to_str().unwrap(),
                size,
                Box::new(move || Ok(Box::new(fs::File::open(path)?) as Box<dyn Read>)),
            )
        })
        .collect();
    assert!(!components.is_empty());
    let new_data = t.path().join("new-node/data");
    let fresh = fx::generate_empty(&new_data, 77).unwrap();
    let new_log = t.path().join("new-nodetool.log");
    let mut cfg = CassandraRestoreConfig::new(
        &new_data,
        rc::Nodetool::new(tool(&new_data, &new_log, &fx::nodetool_path())),
    );
    cfg.owner = None;
    let report = rc::restore(&cfg, components).unwrap();
    assert_eq!(report.tables.len(), 6);
    for s in layout.user_tables() {
        let d = fresh.table(&s.keyspace, &s.table);
        // Byte for byte, under the generations Cassandra gave them when it loaded them.
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap(),
            "{}.{}",
            s.keyspace,
            s.table
        );
        assert_eq!(d.live_files().unwrap().len(), s.live_files().unwrap().len());
    }
    let nl = fs::read_to_string(&new_log).unwrap();
    assert_eq!(nl.matches("refresh ").count(), 6, "{nl}");
}
