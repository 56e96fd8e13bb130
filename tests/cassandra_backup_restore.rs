//! Cassandra: backup through the `nodetool` stand-in into an in-memory sink, then restore into a
//! fresh data directory. The stand-in (`fixtures/cassandra/nodetool`) really hard-links the
//! SSTables into `snapshots/<tag>/` as Cassandra does; its calls are logged per test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use mnbackup::engines::cassandra::{self as rc, CassandraRestoreConfig, RestoreComponent};
use mnbackup::engines::cassandra::{backup, CassandraConfig, CommandLine};
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup_fixtures::cassandra::{self as fx, Layout};

/// An in-memory sink: keeps every item's bytes, stores each distinct content once (as the
/// repository does) and counts the zstd-compressed bytes of new contents.
#[derive(Default)]
struct MemSink {
    items: Mutex<BTreeMap<String, (ItemSpec, Vec<u8>)>>,
    store: Mutex<HashMap<[u8; 32], u64>>,
    bytes_added: Mutex<u64>,
    info: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Fail the put after this many successful ones.
    fail_after: Option<usize>,
    /// What the source reported it could not capture.
    gaps: Mutex<Vec<mnbackup::model::Gap>>,
}

impl MemSink {
    fn take_bytes_added(&self) -> u64 {
        std::mem::take(&mut *self.bytes_added.lock().unwrap())
    }
    fn new_run(&self) {
        self.items.lock().unwrap().clear();
        self.info.lock().unwrap().clear();
        self.take_bytes_added();
    }
    fn item_names(&self) -> BTreeSet<String> {
        self.items.lock().unwrap().keys().cloned().collect()
    }
    fn bytes_of(&self, name: &str) -> Vec<u8> {
        self.items.lock().unwrap()[name].1.clone()
    }
    fn info(&self) -> serde_json::Value {
        self.info.lock().unwrap()["cassandra"].clone()
    }
}

impl ItemSink for MemSink {
    fn put_reader(&self, spec: ItemSpec, reader: &mut dyn Read) -> anyhow::Result<()> {
        if let Some(n) = self.fail_after {
            if self.items.lock().unwrap().len() >= n {
                anyhow::bail!("the pool went away (test sink)");
            }
        }
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        let h = *blake3::hash(&data).as_bytes();
        let mut store = self.store.lock().unwrap();
        if let std::collections::hash_map::Entry::Vacant(e) = store.entry(h) {
            let z = zstd::encode_all(&data[..], 3)?.len() as u64;
            e.insert(z);
            *self.bytes_added.lock().unwrap() += z;
        }
        let mut items = self.items.lock().unwrap();
        assert!(
            !items.contains_key(&spec.name),
            "duplicate item {}",
            spec.name
        );
        items.insert(spec.name.clone(), (spec, data));
        Ok(())
    }
    fn put_entry(&self, spec: ItemSpec) -> anyhow::Result<()> {
        self.items
            .lock()
            .unwrap()
            .insert(spec.name.clone(), (spec, Vec::new()));
        Ok(())
    }
    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.info.lock().unwrap().insert(source.to_string(), info);
    }
    fn gap(&self, gap: mnbackup::model::Gap) {
        self.gaps.lock().unwrap().push(gap);
    }
}

/// A node: data directory, the stand-ins' logs, and a config that runs the stand-in on it.
struct Node {
    _tmp: tempfile::TempDir,
    layout: Layout,
    log: PathBuf,
    cqlsh_log: PathBuf,
}

impl Node {
    fn new(seed: u64, empty: bool) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let layout = if empty {
            fx::generate_empty(&data, seed).unwrap()
        } else {
            fx::generate(&data, seed).unwrap()
        };
        Node {
            log: tmp.path().join("nodetool.log"),
            cqlsh_log: tmp.path().join("cqlsh.log"),
            layout,
            _tmp: tmp,
        }
    }

    fn data(&self) -> &Path {
        &self.layout.data_dir
    }

    /// `env CASSANDRA_DATA=… NODETOOL_LOG=… [extra…] <stand-in>`: per-test environment without
    /// touching the test process's.
    fn tool(&self, tool: &Path, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "env".to_string(),
            format!("CASSANDRA_DATA={}", self.data().display()),
            format!("NODETOOL_LOG={}", self.log.display()),
            format!("CQLSH_LOG={}", self.cqlsh_log.display()),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(tool.display().to_string());
        v
    }

    fn config(&self, extra_env: &[&str]) -> CassandraConfig {
        CassandraConfig {
            data_dirs: vec![self.data().to_path_buf()],
            nodetool: CommandLine::Argv(self.tool(&fx::nodetool_path(), extra_env)),
            ..Default::default()
        }
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Snapshot directories left anywhere in the data directory.
    fn leftover_snapshots(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for t in &self.layout.tables {
            let s = t.dir.join("snapshots");
            if let Ok(rd) = fs::read_dir(&s) {
                out.extend(rd.map(|e| e.unwrap().path()));
            }
        }
        out
    }
}

fn expected_items(layout: &Layout) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in layout.user_tables() {
        for f in t.live_files().unwrap() {
            out.insert(format!("cassandra/{}/{}/{f}", t.keyspace, t.table));
        }
        for f in ["schema.cql", "manifest.json"] {
            out.insert(format!("cassandra/{}/{}/{f}", t.keyspace, t.table));
        }
    }
    out
}

#[test]
fn backup_takes_every_user_table_checks_digests_and_clears_the_snapshot() {
    let node = Node::new(1, false);
    let sink = MemSink::default();
    let summary = backup(&node.config(&[]), "20240101T000000Z-ab12", &sink).unwrap();

    assert_eq!(
        summary.keyspaces,
        vec!["kairosdb", "zstack_billing", "zstack_logging"]
    );
    assert_eq!(sink.item_names(), expected_items(&node.layout));
    assert!(!sink.item_names().iter().any(|n| n.contains("/system")));
    // Byte for byte, with file metadata, never as deltas.
    for t in node.layout.user_tables() {
        for f in t.live_files().unwrap() {
            let name = format!("cassandra/{}/{}/{f}", t.keyspace, t.table);
            assert_eq!(
                sink.bytes_of(&name),
                fs::read(t.dir.join(&f)).unwrap(),
                "{name}"
            );
            let items = sink.items.lock().unwrap();
            let spec = &items[&name].0;
            assert!(!spec.delta && spec.meta.is_some(), "{name}");
        }
    }
    // manifest.json as Cassandra writes it.
    let m: serde_json::Value =
        serde_json::from_slice(&sink.bytes_of("cassandra/kairosdb/data_points/manifest.json"))
            .unwrap();
    assert_eq!(
        m["files"],
        serde_json::json!(["md-1-big-Data.db", "md-2-big-Data.db"])
    );

    // Every Data.db (the secondary index's too) was checked against its digest, of each format.
    let data_files: usize = node
        .layout
        .user_tables()
        .map(|t| {
            t.live_files()
                .unwrap()
                .iter()
                .filter(|f| f.ends_with("Data.db"))
                .count()
        })
        .sum();
    assert_eq!(summary.digests_checked, data_files);
    assert_eq!(summary.digests_missing, 0);
    let info = sink.info();
    let checks = info["digest_checks"].as_array().unwrap();
    assert_eq!(checks.len(), data_files);
    let algos: BTreeSet<&str> = checks
        .iter()
        .map(|c| c["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(algos, BTreeSet::from(["adler32", "crc32"]));
    assert!(checks.iter().all(|c| c["ok"] == true));
    assert_eq!(info["tag"], "mnbackup-20240101T000000Z-ab12");
    assert_eq!(info["snapshot_cleared"], true);
    let dp = info["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "data_points")
        .unwrap();
    assert_eq!(dp["keyspace"], "kairosdb");
    assert_eq!(
        dp["id"],
        node.layout.table("kairosdb", "data_points").id.as_str()
    );
    assert_eq!(dp["versions"], serde_json::json!(["md"]));
    assert_eq!(dp["sstables"], 2);

    // nodetool: look for leaked snapshots, flush each keyspace, snapshot the user keyspaces
    // only, clear the tag.
    let log = node.log_lines();
    let cmds: Vec<String> = log
        .iter()
        .map(|l| l.split("-p 7199 ").last().unwrap().to_string())
        .collect();
    assert_eq!(
        cmds,
        vec![
            "listsnapshots",
            "flush kairosdb",
            "flush zstack_billing",
            "flush zstack_logging",
            "snapshot -t mnbackup-20240101T000000Z-ab12 kairosdb zstack_billing zstack_logging",
            "clearsnapshot -t mnbackup-20240101T000000Z-ab12",
        ]
    );
    assert!(node.leftover_snapshots().is_empty());
}

#[test]
fn second_snapshot_stores_only_the_new_sstable() {
    let mut node = Node::new(2, false);
    let sink = MemSink::default();
    backup(&node.config(&[]), "s1", &sink).unwrap();
    let first = sink.take_bytes_added();

    sink.new_run();
    let t = node.layout.table_mut("kairosdb", "data_points");
    // A flush: a small new SSTable beside the big compacted ones.
    let new_files = t.add_sstable(64 * 1024).unwrap();
    let new_compressed: u64 = new_files
        .iter()
        .map(|p| {
            zstd::encode_all(&fs::read(p).unwrap()[..], 3)
                .unwrap()
                .len() as u64
        })
        .sum();
    let new_data = zstd::encode_all(&fs::read(&new_files[0]).unwrap()[..], 3)
        .unwrap()
        .len() as u64;
    backup(&node.config(&[]), "s2", &sink).unwrap();
    let second = sink.take_bytes_added();

    assert!(sink
        .item_names()
        .contains("cassandra/kairosdb/data_points/md-3-big-Data.db"));
    // The new SSTable (its TOC.txt is identical to the others', so deduplicated) plus the
    // table's new manifest.json; nothing else.
    assert!(
        second >= new_data,
        "second {second} < new Data.db {new_data}"
    );
    assert!(
        second <= new_compressed + 256,
        "second {second} > new SSTable {new_compressed} + manifest"
    );
    assert!(second * 5 < first, "second {second} vs first {first}");
}

#[test]
fn a_corrupt_sstable_is_left_out_as_a_gap_and_the_rest_is_backed_up() {
    let node = Node::new(3, false);
    node.layout
        .table("kairosdb", "row_key_index")
        .corrupt_data(1)
        .unwrap();
    let sink = MemSink::default();
    backup(&node.config(&[]), "bad", &sink).unwrap();
    let gaps = sink.gaps.lock().unwrap().clone();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let g = &gaps[0];
    assert_eq!(
        (g.source.as_str(), g.kind.as_str()),
        ("cassandra", "sstable")
    );
    assert_eq!(
        g.subject.as_deref(),
        Some("kairosdb.row_key_index/md-1-big")
    );
    assert!(
        g.reason.contains("is corrupt") && g.reason.contains("Digest.crc32"),
        "{g:?}"
    );
    assert!(g
        .fix
        .as_deref()
        .unwrap()
        .contains("nodetool scrub kairosdb row_key_index"));
    // Nothing of the damaged SSTable is stored; everything else is, byte for byte.
    let names = sink.item_names();
    assert!(!names
        .iter()
        .any(|n| n.starts_with("cassandra/kairosdb/row_key_index/md-1-big-")));
    let mut want = expected_items(&node.layout);
    want.retain(|n| !n.starts_with("cassandra/kairosdb/row_key_index/md-1-big-"));
    assert_eq!(names, want);
    let dp = node.layout.table("kairosdb", "data_points");
    assert_eq!(
        sink.bytes_of("cassandra/kairosdb/data_points/md-2-big-Data.db"),
        fs::read(dp.data_file(2)).unwrap()
    );
    assert!(node.leftover_snapshots().is_empty());
    assert!(node
        .log_lines()
        .last()
        .unwrap()
        .contains("clearsnapshot -t mnbackup-bad"));

    // 2.1's Digest.sha1 (a decimal Adler-32) is checked as well.
    let node = Node::new(4, false);
    node.layout
        .table("zstack_billing", "usage")
        .corrupt_data(2)
        .unwrap();
    let sink = MemSink::default();
    backup(&node.config(&[]), "bad2", &sink).unwrap();
    let gaps = sink.gaps.lock().unwrap().clone();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0].reason.contains("Adler-32") && gaps[0].reason.contains("Digest.sha1"),
        "{gaps:?}"
    );
    assert!(node.leftover_snapshots().is_empty());
}

#[test]
fn an_incomplete_sstable_is_left_out_as_a_gap() {
    let node = Node::new(5, false);
    let t = node.layout.table("kairosdb", "data_points");
    fs::remove_file(t.dir.join("md-2-big-Index.db")).unwrap();
    let sink = MemSink::default();
    backup(&node.config(&[]), "inc", &sink).unwrap();
    let gaps = sink.gaps.lock().unwrap().clone();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].kind, "sstable");
    assert_eq!(
        gaps[0].subject.as_deref(),
        Some("kairosdb.data_points/md-2-big")
    );
    assert!(gaps[0].reason.contains("Index.db"), "{gaps:?}");
    let names = sink.item_names();
    assert!(!names.iter().any(|n| n.contains("data_points/md-2-big-")));
    assert!(names.contains("cassandra/kairosdb/data_points/md-1-big-Data.db"));
}

#[test]
fn failing_sink_midway_still_clears_the_snapshot() {
    let node = Node::new(5, false);
    let sink = MemSink {
        fail_after: Some(5),
        ..Default::default()
    };
    let err = backup(&node.config(&[]), "midway", &sink).unwrap_err();
    assert!(format!("{err:#}").contains("the pool went away"), "{err:#}");
    let log = node.log_lines();
    assert!(log
        .iter()
        .any(|l| l.contains("snapshot -t mnbackup-midway")));
    assert!(log
        .last()
        .unwrap()
        .contains("clearsnapshot -t mnbackup-midway"));
    assert!(node.leftover_snapshots().is_empty());
}

#[test]
fn failing_or_missing_nodetool_gives_a_clear_error() {
    let node = Node::new(6, false);
    let err = backup(
        &node.config(&["NODETOOL_FAIL=snapshot"]),
        "down",
        &MemSink::default(),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("taking the Cassandra snapshot"), "{msg}");
    assert!(msg.contains("Connection refused"), "{msg}"); // nodetool's stderr
    assert!(msg.contains("exit status 1"), "{msg}");
    assert!(
        msg.contains("Cassandra is running") && msg.contains("JMX"),
        "{msg}"
    );
    // The tag is cleared even though the snapshot command failed.
    assert!(node
        .log_lines()
        .last()
        .unwrap()
        .contains("clearsnapshot -t mnbackup-down"));

    let err = backup(
        &node.config(&["NODETOOL_FAIL=flush"]),
        "f",
        &MemSink::default(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("flushing Cassandra keyspace"),
        "{err:#}"
    );

    let cfg = CassandraConfig {
        nodetool: CommandLine::Line("/nonexistent/bin/nodetool".into()),
        ..node.config(&[])
    };
    let msg = format!("{:#}", backup(&cfg, "x", &MemSink::default()).unwrap_err());
    assert!(
        msg.contains("was not found") && msg.contains("/nonexistent/bin/nodetool"),
        "{msg}"
    );
}

#[test]
fn jmx_password_reaches_nodetool_through_a_private_file_only() {
    let node = Node::new(7, false);
    let pwfile = node.data().parent().unwrap().join("jmx.pw");
    fs::write(&pwfile, "Sup3r-secret\n").unwrap();
    let env = [
        "NODETOOL_EXPECT_USER=jmxadmin",
        "NODETOOL_EXPECT_PASSWORD=Sup3r-secret",
    ];
    let cfg = CassandraConfig {
        jmx_user: Some("jmxadmin".into()),
        jmx_password_file: Some(pwfile.clone()),
        host: Some("127.0.0.1".into()),
        ..node.config(&env)
    };
    backup(&cfg, "auth", &MemSink::default()).unwrap();
    let log = node.log_lines().join("\n");
    assert!(log.contains("-u jmxadmin -pwf "), "{log}");
    assert!(!log.contains("Sup3r-secret"), "{log}");
    // The temporary password files are gone.
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("mnbackup-jmx-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty());
    // A wrong password is reported with nodetool's message.
    fs::write(&pwfile, "wrong\n").unwrap();
    let msg = format!(
        "{:#}",
        backup(&cfg, "auth2", &MemSink::default()).unwrap_err()
    );
    assert!(msg.contains("Authentication failed"), "{msg}");
    assert!(!msg.contains("wrong"), "{msg}");
}

/// The restore input built from a backed-up sink, as `mnbackup restore` builds it from items.
fn components(sink: &MemSink) -> Vec<RestoreComponent<'static>> {
    let items = sink.items.lock().unwrap();
    items
        .iter()
        .filter_map(|(name, (spec, data))| {
            let data = data.clone();
            let size = data.len() as u64;
            let mut c = RestoreComponent::from_item_name(
                name,
                size,
                Box::new(move || Ok(Box::new(Cursor::new(data)) as Box<dyn Read>)),
            )?;
            c.mode = spec.meta.as_ref().map(|m| m.mode);
            Some(c)
        })
        .collect()
}

fn restore_config(node: &Node) -> CassandraRestoreConfig {
    let mut c = CassandraRestoreConfig::new(
        node.data(),
        rc::Nodetool::new(node.tool(&fx::nodetool_path(), &[])),
    );
    c.owner = Some("mnbackup-no-such-user".into());
    c
}

fn backed_up(seed: u64) -> (Node, MemSink) {
    let node = Node::new(seed, false);
    let sink = MemSink::default();
    backup(&node.config(&[]), "src", &sink).unwrap();
    (node, sink)
}

#[test]
fn restore_into_an_empty_node_puts_every_component_back_and_refreshes() {
    let (src, sink) = backed_up(10);
    let dst = Node::new(99, true);
    let cfg = restore_config(&dst);

    // The plan says where everything goes and changes nothing.
    let plan = rc::plan(&cfg, &components(&sink)).unwrap();
    assert_eq!(plan.tables.len(), 6);
    for tp in &plan.tables {
        let t = dst.layout.table(&tp.keyspace, &tp.table);
        assert_eq!(tp.dest_dir.as_deref(), Some(t.dir.as_path()));
        assert_ne!(t.id, src.layout.table(&tp.keyspace, &tp.table).id);
        assert!(tp
            .commands
            .last()
            .unwrap()
            .ends_with(&format!("refresh {} {}", tp.keyspace, tp.table)));
        assert!(tp.files.iter().all(|f| !f.exists));
        assert!(t.live_files().unwrap().is_empty());
    }
    let text = plan.to_string();
    assert!(
        text.contains("kairosdb.data_points: 2 SSTable(s)"),
        "{text}"
    );
    // The plan only asked the node its release.
    assert_eq!(dst.log_lines(), vec!["version".to_string()]);

    let report = rc::restore(&cfg, components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    assert!(report
        .notes
        .iter()
        .any(|n| n.contains("mnbackup-no-such-user")));
    for s in src.layout.user_tables() {
        let d = dst.layout.table(&s.keyspace, &s.table);
        let src_files = s.live_files().unwrap();
        // Every component, byte for byte (under the generations Cassandra gave them on load).
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap(),
            "{}.{}",
            s.keyspace,
            s.table
        );
        assert_eq!(d.live_files().unwrap().len(), src_files.len());
        // Nothing went into snapshots/ or backups/, no temporary file is left.
        assert!(!d.dir.join("snapshots").exists());
        assert_eq!(fs::read_dir(d.dir.join("backups")).unwrap().count(), 0);
        let tr = report
            .tables
            .iter()
            .find(|t| t.keyspace == s.keyspace && t.table == s.table)
            .unwrap();
        assert_eq!(tr.files_written, src_files.len());
        assert_eq!(
            tr.digests_verified,
            src_files.iter().filter(|f| f.ends_with("Data.db")).count()
        );
    }
    let log = dst.log_lines();
    for s in src.layout.user_tables() {
        let want = format!("refresh {} {}", s.keyspace, s.table);
        assert_eq!(
            log.iter().filter(|l| l.ends_with(&want)).count(),
            1,
            "{log:?}"
        );
    }

    // Running it again finds every SSTable loaded (by content, whatever its generation now)
    // and loads nothing twice.
    let open_before = fx::open_sstables(dst.data()).unwrap();
    let report = rc::restore(&cfg, components(&sink)).unwrap();
    assert!(report
        .tables
        .iter()
        .all(|t| t.files_written == 0 && t.files_present > 0));
    assert_eq!(fx::open_sstables(dst.data()).unwrap(), open_before);
    for s in src.layout.user_tables() {
        let d = dst.layout.table(&s.keyspace, &s.table);
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap()
        );
    }
}

#[test]
fn restore_into_a_table_the_application_already_wrote_takes_free_generations() {
    let (src, sink) = backed_up(11);
    let mut dst = Node::new(98, true);
    // The application wrote generation 1 (and 2) after the node was reinstalled.
    let own = {
        let t = dst.layout.table_mut("kairosdb", "data_points");
        t.add_sstable(4096).unwrap();
        t.add_sstable(4096).unwrap();
        fx::sstable_contents(&t.dir).unwrap()
    };
    let t = dst.layout.table("kairosdb", "data_points");
    let mine = fs::read(t.dir.join("md-1-big-Data.db")).unwrap();
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    // The application's SSTables are untouched, the backed-up ones are there besides them.
    assert_eq!(fs::read(t.dir.join("md-1-big-Data.db")).unwrap(), mine);
    let mut want = own;
    want.extend(fx::sstable_contents(&src.layout.table("kairosdb", "data_points").dir).unwrap());
    want.sort();
    assert_eq!(fx::sstable_contents(&t.dir).unwrap(), want);
    // All four are open on the node: 2 of its own + 2 restored.
    let open = fx::open_sstables(dst.data()).unwrap();
    let prefix = format!("kairosdb/data_points-{}/", t.id);
    assert_eq!(open.iter().filter(|l| l.starts_with(&prefix)).count(), 4);
}

#[test]
fn restore_verifies_digests_of_the_backed_up_data() {
    let (_src, sink) = backed_up(12);
    {
        let mut items = sink.items.lock().unwrap();
        let data = &mut items
            .get_mut("cassandra/zstack_billing/price/la-1-big-Data.db")
            .unwrap()
            .1;
        data[100] ^= 1;
    }
    let dst = Node::new(97, true);
    let err = rc::restore(&restore_config(&dst), components(&sink)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("is corrupt") && msg.contains("Digest.adler32"),
        "{msg}"
    );
    assert!(dst
        .layout
        .table("zstack_billing", "price")
        .live_files()
        .unwrap()
        .is_empty());
}

#[test]
fn restore_creates_missing_tables_with_cqlsh_or_says_what_to_run() {
    let (src, sink) = backed_up(13);
    let dst = Node::new(96, true);
    fx::cqlsh(dst.data(), "DROP KEYSPACE zstack_logging").unwrap();
    fs::remove_dir_all(dst.data().join("zstack_logging")).unwrap();

    // Without cqlsh: the other tables are restored, this one is pending with the command.
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert_eq!(report.tables.len(), 5);
    assert_eq!(report.pending.len(), 1);
    assert!(
        report.pending[0].contains("zstack_logging.logs"),
        "{:?}",
        report.pending
    );
    assert!(
        report.pending[0].contains("cqlsh -f"),
        "{:?}",
        report.pending
    );

    // With cqlsh: keyspace and table are created (new id), then filled and refreshed.
    let mut cfg = restore_config(&dst);
    cfg.cqlsh = Some(dst.tool(&fx::cqlsh_path(), &[]));
    let report = rc::restore(&cfg, components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    let cql = fs::read_to_string(&dst.cqlsh_log).unwrap();
    assert!(
        cql.contains("CREATE KEYSPACE IF NOT EXISTS zstack_logging"),
        "{cql}"
    );
    assert!(
        cql.contains("CREATE TABLE IF NOT EXISTS zstack_logging.logs"),
        "{cql}"
    );
    let dirs = rc::find_table_dirs(dst.data(), "zstack_logging", "logs").unwrap();
    assert_eq!(dirs.len(), 1);
    let s = src.layout.table("zstack_logging", "logs");
    assert_eq!(
        fx::sstable_contents(&dirs[0]).unwrap(),
        fx::sstable_contents(&s.dir).unwrap()
    );
    assert!(dst
        .log_lines()
        .iter()
        .any(|l| l.ends_with("refresh zstack_logging logs")));
}

#[test]
fn restore_with_nodetool_import() {
    let (src, sink) = backed_up(14);
    let dst = Node::new(95, true);
    let mut cfg = restore_config(&dst);
    // `import` exists from 4.0 on, and 4.x reads 3.0+ SSTables only (not zstack_billing's ka/la).
    cfg.nodetool = rc::Nodetool::new(dst.tool(&fx::nodetool_path(), &["NODETOOL_VERSION=4.1.5"]));
    cfg.use_import = true;
    let staging = dst.data().parent().unwrap().join("staging");
    cfg.import_dir = Some(staging.clone());
    let comps: Vec<_> = components(&sink)
        .into_iter()
        .filter(|c| c.keyspace != "zstack_billing")
        .collect();
    let report = rc::restore(&cfg, comps).unwrap();
    assert_eq!(report.tables.len(), 4);
    assert!(report.tables.iter().all(|t| t.loaded_with == "import"));
    for (ks, tb) in [("kairosdb", "data_points"), ("kairosdb", "string_index")] {
        let s = src.layout.table(ks, tb);
        let d = dst.layout.table(ks, tb);
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap()
        );
    }
    // The staging directories are removed once imported.
    assert!(!staging.join("kairosdb").join("data_points").exists());
    assert!(dst
        .log_lines()
        .iter()
        .any(|l| l.contains("import kairosdb data_points ") && l.contains("staging")));
}

/// A config whose `cqlsh` is the stand-in on this node (with `extra` environment).
fn config_with_cqlsh(node: &Node, extra: &[&str]) -> CassandraConfig {
    CassandraConfig {
        cqlsh: Some(CommandLine::Argv(node.tool(&fx::cqlsh_path(), extra))),
        ..node.config(&[])
    }
}

#[test]
fn backup_with_cqlsh_stores_each_keyspace_schema() {
    let node = Node::new(15, false);
    let sink = MemSink::default();
    let summary = backup(&config_with_cqlsh(&node, &[]), "ks", &sink).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    let keyspaces = ["kairosdb", "zstack_billing", "zstack_logging"];
    assert_eq!(summary.keyspace_schemas, keyspaces);
    let mut want = expected_items(&node.layout);
    for ks in keyspaces {
        want.insert(format!("cassandra/{ks}/keyspace.cql"));
    }
    assert_eq!(sink.item_names(), want);
    let text = String::from_utf8(sink.bytes_of("cassandra/zstack_logging/keyspace.cql")).unwrap();
    assert!(
        text.contains(
            "CREATE KEYSPACE zstack_logging WITH replication = {'class': 'NetworkTopologyStrategy'"
        ),
        "{text}"
    );
    assert!(
        text.contains("CREATE TABLE zstack_logging.logs ("),
        "{text}"
    );
    assert!(
        text.contains("CREATE INDEX logs_level_idx ON zstack_logging.logs"),
        "{text}"
    );
    assert!(
        !sink.items.lock().unwrap()["cassandra/zstack_logging/keyspace.cql"]
            .0
            .delta
    );
    assert_eq!(
        sink.info()["keyspace_schemas"],
        serde_json::json!(keyspaces)
    );
    let log = fs::read_to_string(&node.cqlsh_log).unwrap();
    for ks in keyspaces {
        assert!(log.contains(&format!("DESCRIBE KEYSPACE {ks}")), "{log}");
    }
    assert!(node.leftover_snapshots().is_empty());
}

#[test]
fn failing_cqlsh_is_a_gap_not_a_failed_backup() {
    let node = Node::new(16, false);
    let sink = MemSink::default();
    let summary = backup(&config_with_cqlsh(&node, &["CQLSH_FAIL=1"]), "nocql", &sink).unwrap();
    // The SSTables are all there; only the keyspace schemas are missing.
    assert_eq!(sink.item_names(), expected_items(&node.layout));
    assert!(summary.keyspace_schemas.is_empty());
    assert_eq!(summary.warnings.len(), 3, "{:?}", summary.warnings);
    for (w, ks) in summary
        .warnings
        .iter()
        .zip(["kairosdb", "zstack_billing", "zstack_logging"])
    {
        assert!(w.contains(&format!("keyspace {ks}")), "{w}");
        assert!(w.contains("Connection refused"), "{w}"); // cqlsh's stderr
    }
    let info = sink.info();
    assert_eq!(info["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(info["snapshot_cleared"], true);
    assert!(node.leftover_snapshots().is_empty());
    // A missing keyspace schema is a gap (the snapshot is incomplete), not only a warning.
    let gaps = sink.gaps.lock().unwrap();
    let subjects: Vec<_> = gaps
        .iter()
        .filter(|g| g.source == "cassandra" && g.kind == "schema")
        .map(|g| g.subject.clone().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["kairosdb", "zstack_billing", "zstack_logging"],
        "{gaps:?}"
    );
}

#[test]
fn restore_creates_a_missing_keyspace_from_its_keyspace_cql() {
    let node = Node::new(17, false);
    let sink = MemSink::default();
    backup(&config_with_cqlsh(&node, &[]), "src", &sink).unwrap();
    // As on Cassandra 2.2: no schema.cql at all.
    sink.items
        .lock()
        .unwrap()
        .retain(|name, _| !name.ends_with("/schema.cql"));
    let dst = Node::new(93, true);
    fx::cqlsh(dst.data(), "DROP KEYSPACE zstack_billing").unwrap();
    fs::remove_dir_all(dst.data().join("zstack_billing")).unwrap();
    let mut cfg = restore_config(&dst);

    // Without keyspace.cql the tables can only be pending (the gap this closes).
    let without: Vec<_> = components(&sink)
        .into_iter()
        .filter(|c| c.name != "keyspace.cql")
        .collect();
    let report = rc::restore(&cfg, without).unwrap();
    assert_eq!(report.tables.len(), 4);
    assert_eq!(report.pending.len(), 2, "{:?}", report.pending);
    assert!(
        report.pending[0].contains("no schema.cql"),
        "{:?}",
        report.pending
    );
    assert!(!dst.data().join("zstack_billing").exists());

    // With keyspace.cql and cqlsh: the plan says so, the restore creates keyspace and tables.
    cfg.cqlsh = Some(dst.tool(&fx::cqlsh_path(), &[]));
    let plan = rc::plan(&cfg, &components(&sink)).unwrap();
    for tb in ["usage", "price"] {
        let tp = plan
            .tables
            .iter()
            .find(|t| t.keyspace == "zstack_billing" && t.table == tb)
            .unwrap();
        assert!(tp.keyspace_missing && tp.creates_table && tp.from_keyspace_cql);
        assert!(tp.commands[0].contains("keyspace.cql"), "{:?}", tp.commands);
    }
    let text = plan.to_string();
    assert!(
        text.contains("keyspace zstack_billing does not exist on this node")
            && text.contains("backed-up replication"),
        "{text}"
    );
    // The plan only read the schema.
    let cql = fs::read_to_string(&dst.cqlsh_log).unwrap_or_default();
    assert!(
        !cql.contains("CREATE") && !cql.contains("cqlsh -f"),
        "{cql}"
    );

    let report = rc::restore(&cfg, components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    assert_eq!(report.tables.len(), 6);
    assert!(report.notes.iter().any(|n| n.contains("keyspace.cql")));
    let cql = fs::read_to_string(&dst.cqlsh_log).unwrap();
    assert_eq!(cql.matches("cqlsh -f ").count(), 1, "{cql}");
    assert!(cql.contains("SELECT id FROM system_schema.tables"), "{cql}");
    assert!(
        cql.contains(
            "CREATE KEYSPACE IF NOT EXISTS zstack_billing WITH replication = {'class': \
             'NetworkTopologyStrategy', 'dc1': '1'}"
        ),
        "{cql}"
    );
    assert!(!cql.contains("SimpleStrategy"), "{cql}");
    for tb in ["usage", "price"] {
        assert!(
            cql.contains(&format!("CREATE TABLE IF NOT EXISTS zstack_billing.{tb} (")),
            "{cql}"
        );
        let dirs = rc::find_table_dirs(dst.data(), "zstack_billing", tb).unwrap();
        assert_eq!(dirs.len(), 1);
        let s = node.layout.table("zstack_billing", tb);
        assert!(!s.live_files().unwrap().is_empty());
        assert_eq!(
            fx::sstable_contents(&dirs[0]).unwrap(),
            fx::sstable_contents(&s.dir).unwrap(),
            "{tb}"
        );
        assert!(dst
            .log_lines()
            .iter()
            .any(|l| l.ends_with(&format!("refresh zstack_billing {tb}"))));
    }
}

/// The open SSTables (Data.db) of the table's live directory on the stand-in node (not those of
/// its secondary indexes).
fn open_of(node: &Node, ks: &str, table: &str) -> Vec<String> {
    let id = &fx::schema_ids(node.data()).unwrap()[&(ks.to_string(), table.to_string())];
    let prefix = format!("{ks}/{table}-{id}/");
    fx::open_sstables(node.data())
        .unwrap()
        .into_iter()
        .filter(|l| l.strip_prefix(&prefix).is_some_and(|f| !f.contains('/')))
        .collect()
}

#[test]
fn drop_recreate_then_restore_loads_into_the_live_directory_and_proves_it() {
    let (src, sink) = backed_up(20);
    let dst = Node::new(90, true);
    // The table is dropped and re-created (a new id, a new directory); the old one stays on
    // disk with the auto-snapshot, and `clearsnapshot --all` makes it the newest directory.
    fx::cqlsh(dst.data(), "DROP TABLE kairosdb.data_points").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fx::cqlsh(
        dst.data(),
        "CREATE TABLE kairosdb.data_points (key blob, column1 blob, value blob, PRIMARY KEY (key, column1))",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = std::process::Command::new("env")
        .arg(format!("CASSANDRA_DATA={}", dst.data().display()))
        .arg("NODETOOL_VERSION=4.1.5")
        .arg(fx::nodetool_path())
        .args(["clearsnapshot", "--all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dead = dst.layout.table("kairosdb", "data_points").dir.clone();
    let dirs = rc::find_table_dirs(dst.data(), "kairosdb", "data_points").unwrap();
    assert_eq!(dirs.len(), 2);
    let live = dirs.iter().find(|d| **d != dead).unwrap().clone();
    assert!(
        fs::metadata(&dead).unwrap().modified().unwrap()
            >= fs::metadata(&live).unwrap().modified().unwrap(),
        "the dead directory must look newest for this test"
    );

    // Without cqlsh the live directory cannot be told: refused, said, exit non-zero (pending).
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert_eq!(report.pending.len(), 1, "{:?}", report.pending);
    assert!(
        report.pending[0].contains("kairosdb.data_points") && report.pending[0].contains("cqlsh"),
        "{:?}",
        report.pending
    );
    assert!(fx::sstable_contents(&live).unwrap().is_empty());
    assert!(fx::sstable_contents(&dead).unwrap().is_empty());

    // With cqlsh: the id from system_schema.tables names the live directory; loaded and proven.
    let mut cfg = restore_config(&dst);
    cfg.cqlsh = Some(dst.tool(&fx::cqlsh_path(), &[]));
    let plan = rc::plan(&cfg, &components(&sink)).unwrap();
    let tp = plan
        .tables
        .iter()
        .find(|t| t.table == "data_points")
        .unwrap();
    assert_eq!(tp.table_dir.as_deref(), Some(live.as_path()));
    assert_eq!(tp.other_dirs, vec![dead.clone()]);
    let report = rc::restore(&cfg, components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    let s = src.layout.table("kairosdb", "data_points");
    assert_eq!(
        fx::sstable_contents(&live).unwrap(),
        fx::sstable_contents(&s.dir).unwrap()
    );
    assert!(fx::sstable_contents(&dead).unwrap().is_empty());
    assert_eq!(open_of(&dst, "kairosdb", "data_points").len(), 2);
}

#[test]
fn a_refresh_that_loads_nothing_fails_the_table() {
    // An SSTable Cassandra cannot open (unreadable Statistics.db): `refresh` logs it, skips it
    // and exits 0 (ColumnFamilyStore.loadNewSSTables); the restore must not call that restored.
    let node = Node::new(21, false);
    let t = node.layout.table("kairosdb", "row_key_index");
    fs::write(t.dir.join("md-1-big-Statistics.db"), b"").unwrap();
    let sink = MemSink::default();
    backup(&node.config(&[]), "src", &sink).unwrap();
    let dst = Node::new(89, true);
    let err = rc::restore(&restore_config(&dst), components(&sink)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("did not load") && msg.contains("kairosdb.row_key_index"),
        "{msg}"
    );
    assert!(open_of(&dst, "kairosdb", "row_key_index").is_empty());
}

#[test]
fn a_rerun_after_a_failure_in_the_middle_loads_nothing_twice() {
    let (src, sink) = backed_up(22);
    let dst = Node::new(88, true);
    // The third table's refresh fails (a JMX timeout): two tables are loaded, the run fails.
    let mut cfg = restore_config(&dst);
    cfg.nodetool = rc::Nodetool::new(dst.tool(
        &fx::nodetool_path(),
        &["NODETOOL_FAIL_TABLE=zstack_billing.price"],
    ));
    let err = rc::restore(&cfg, components(&sink)).unwrap_err();
    assert!(
        format!("{err:#}").contains("zstack_billing.price"),
        "{err:#}"
    );
    assert_eq!(open_of(&dst, "kairosdb", "data_points").len(), 2);
    assert!(open_of(&dst, "zstack_billing", "price").is_empty());

    // The rerun loads the rest, and every table holds each backed-up SSTable exactly once.
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    for s in src.layout.user_tables() {
        let d = dst.layout.table(&s.keyspace, &s.table);
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap(),
            "{}.{}",
            s.keyspace,
            s.table
        );
        assert_eq!(
            open_of(&dst, &s.keyspace, &s.table).len(),
            s.generations.len(),
            "{}.{}",
            s.keyspace,
            s.table
        );
    }
}

/// What `nodetool compact ks table` does on the stand-in node: every open SSTable of the table's
/// live directory is replaced by one SSTable of a new generation (its Data.db holds all the
/// others' rows and drops what compaction purges, so it matches none of the loaded Data.db
/// files).
fn compact(node: &Node, ks: &str, table: &str) {
    let id = &fx::schema_ids(node.data()).unwrap()[&(ks.to_string(), table.to_string())];
    let dir = node.data().join(ks).join(format!("{table}-{id}"));
    let open = open_of(node, ks, table);
    assert!(!open.is_empty(), "{open:?}");
    let stems: Vec<rc::SstableFile> = open
        .iter()
        .map(|l| rc::SstableFile::parse(l.rsplit('/').next().unwrap()).unwrap())
        .collect();
    let max: u64 = stems
        .iter()
        .map(|s| s.generation.parse::<u64>().unwrap())
        .max()
        .unwrap();
    let first = &stems[0];
    let new_stem = first.stem.replacen(
        &format!("-{}-", first.generation),
        &format!("-{}-", max + 1),
        1,
    );
    let mut data = Vec::new();
    for s in &stems {
        data.extend(fs::read(dir.join(format!("{}-Data.db", s.stem))).unwrap());
    }
    for e in fs::read_dir(&dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(c) = n.strip_prefix(&format!("{}-", first.stem)) {
            if c != "Data.db" && !c.starts_with("Digest") {
                fs::copy(dir.join(&n), dir.join(format!("{new_stem}-{c}"))).unwrap();
            }
        }
    }
    data.truncate(data.len() - 1);
    fs::write(dir.join(format!("{new_stem}-Data.db")), &data).unwrap();
    for s in &stems {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{}-", s.stem))
            {
                fs::remove_file(e.path()).unwrap();
            }
        }
    }
    let open_file = fx::state_dir(node.data()).join("open");
    let kept: String = fx::open_sstables(node.data())
        .unwrap()
        .into_iter()
        .filter(|l| !open.contains(l))
        .map(|l| l + "\n")
        .collect();
    fs::write(&open_file, kept).unwrap();
    fx::mark_open(node.data(), &dir.join(format!("{new_stem}-Data.db"))).unwrap();
}

#[test]
fn the_journal_keeps_a_rerun_from_loading_a_compacted_table_again() {
    let (src, sink) = backed_up(23);
    let dst = Node::new(87, true);
    let jdir = tempfile::tempdir().unwrap();
    let jpath = jdir.path().join("restore-journal.json");
    let open_journal = || {
        mnbackup_restore::journal::Journal::open(&jpath, "snap", "node", &BTreeMap::new())
            .unwrap()
            .0
    };

    // The run stops at zstack_billing.price (a JMX timeout): kairosdb.data_points is loaded.
    let mut cfg = restore_config(&dst);
    cfg.nodetool = rc::Nodetool::new(dst.tool(
        &fx::nodetool_path(),
        &["NODETOOL_FAIL_TABLE=zstack_billing.price"],
    ));
    let mut j = open_journal();
    let err = rc::restore_journaled(&cfg, components(&sink), Some(&mut j)).unwrap_err();
    assert!(
        format!("{err:#}").contains("zstack_billing.price"),
        "{err:#}"
    );
    assert_eq!(open_of(&dst, "kairosdb", "data_points").len(), 2);
    let rec = &j.data.cassandra_tables["kairosdb.data_points"];
    assert!(rec.loaded && rec.placed.len() > 2, "{rec:?}");
    assert!(!j.data.cassandra_tables["zstack_billing.price"].loaded);
    // kairosdb.row_key_index was loaded too, but the run stopped before recording the proof.
    let rec = j
        .data
        .cassandra_tables
        .get_mut("kairosdb.row_key_index")
        .unwrap();
    assert!(rec.loaded);
    rec.loaded = false;
    j.save().unwrap();

    // The application compacts the loaded SSTables into one: no loaded Data.db is left.
    compact(&dst, "kairosdb", "data_points");
    let compacted = open_of(&dst, "kairosdb", "data_points");
    assert_eq!(compacted.len(), 1);
    compact(&dst, "kairosdb", "row_key_index");
    let compacted_rki = open_of(&dst, "kairosdb", "row_key_index");
    assert_eq!(compacted_rki.len(), 1);

    // The rerun (a new process: the journal is read from disk) loads the rest, and not
    // kairosdb.data_points again.
    let mut j = open_journal();
    assert!(j.resumed);
    let report =
        rc::restore_journaled(&restore_config(&dst), components(&sink), Some(&mut j)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    let t = report
        .tables
        .iter()
        .find(|t| t.table == "data_points")
        .unwrap();
    assert_eq!((t.loaded_with.as_str(), t.files_written), ("journal", 0));
    assert_eq!(open_of(&dst, "kairosdb", "data_points"), compacted);
    // Every file placed for row_key_index is gone (Cassandra renamed them): loaded, not again.
    let t = report
        .tables
        .iter()
        .find(|t| t.table == "row_key_index")
        .unwrap();
    assert_eq!((t.loaded_with.as_str(), t.files_written), ("journal", 0));
    assert!(report
        .notes
        .iter()
        .any(|n| n.contains("kairosdb.row_key_index") && n.contains("renamed every one of them")));
    assert_eq!(open_of(&dst, "kairosdb", "row_key_index"), compacted_rki);
    for s in src.layout.user_tables() {
        if s.table == "data_points" || s.table == "row_key_index" {
            continue;
        }
        let d = dst.layout.table(&s.keyspace, &s.table);
        assert_eq!(
            fx::sstable_contents(&d.dir).unwrap(),
            fx::sstable_contents(&s.dir).unwrap(),
            "{}.{}",
            s.keyspace,
            s.table
        );
        assert_eq!(
            open_of(&dst, &s.keyspace, &s.table).len(),
            s.generations.len()
        );
    }
    assert!(j.data.cassandra_tables.values().all(|r| r.loaded));

    // Without the journal the content check alone cannot tell: it would load the table twice.
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert!(report.pending.is_empty(), "{:?}", report.pending);
    assert_eq!(open_of(&dst, "kairosdb", "data_points").len(), 3);
}

#[test]
fn sstables_of_formats_ma_mc_md_nb_oa_back_up_and_restore_byte_exact() {
    // (release of the node, keyspace, table, format)
    let cases = [
        ("3.11.16", "fmt3", "t_ma", fx::Format::Ma),
        ("3.11.16", "fmt3", "t_mc", fx::Format::Mc),
        ("3.11.16", "fmt3", "t_md", fx::Format::Md),
        ("4.1.5", "fmt4", "t_nb", fx::Format::Nb),
        ("5.0.2", "fmt5", "t_oa", fx::Format::Oa),
    ];
    for (version, ks, tb, format) in cases {
        let env = format!("NODETOOL_VERSION={version}");
        let mut src = Node::new(30, true);
        src.layout.add_table(ks, tb, format, 2, 20_000).unwrap();
        let mut cfg = src.config(&[&env]);
        cfg.keyspaces = Some(vec![ks.to_string()]);
        let sink = MemSink::default();
        backup(&cfg, "src", &sink).unwrap();
        let names = sink.item_names();
        assert!(
            names.contains(&format!(
                "cassandra/{ks}/{tb}/{}-1-big-Data.db",
                format.version()
            )),
            "{names:?}"
        );
        let manifest =
            String::from_utf8(sink.bytes_of(&format!("cassandra/{ks}/{tb}/manifest.json")))
                .unwrap();
        assert_eq!(
            manifest.contains("created_at"),
            !version.starts_with('3'),
            "{manifest}"
        );

        let mut dst = Node::new(31, true);
        dst.layout.add_table(ks, tb, format, 0, 0).unwrap();
        let mut rcfg = restore_config(&dst);
        rcfg.nodetool = rc::Nodetool::new(dst.tool(&fx::nodetool_path(), &[&env]));
        let report = rc::restore(&rcfg, components(&sink)).unwrap();
        assert!(report.pending.is_empty(), "{:?}", report.pending);
        assert_eq!(
            fx::sstable_contents(&dst.layout.table(ks, tb).dir).unwrap(),
            fx::sstable_contents(&src.layout.table(ks, tb).dir).unwrap(),
            "{format:?}"
        );
        assert_eq!(open_of(&dst, ks, tb).len(), 2);
    }

    // A 3.11 node cannot read 4.x SSTables: the plan says so and the restore refuses before
    // placing anything.
    let mut src = Node::new(32, true);
    src.layout
        .add_table("fmt4", "t_nb", fx::Format::Nb, 1, 10_000)
        .unwrap();
    let mut cfg = src.config(&["NODETOOL_VERSION=4.1.5"]);
    cfg.keyspaces = Some(vec!["fmt4".into()]);
    let sink = MemSink::default();
    backup(&cfg, "src", &sink).unwrap();
    let mut dst = Node::new(33, true);
    dst.layout
        .add_table("fmt4", "t_nb", fx::Format::Nb, 0, 0)
        .unwrap();
    let plan = rc::plan(&restore_config(&dst), &components(&sink)).unwrap();
    let tp = plan.tables.iter().find(|t| t.table == "t_nb").unwrap();
    assert!(tp.format_refused, "{plan}");
    assert!(
        plan.to_string()
            .contains("format nb which Cassandra 3.11.16"),
        "{plan}"
    );
    let err = rc::restore(&restore_config(&dst), components(&sink)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("before placing anything") && msg.contains("format nb"),
        "{msg}"
    );
    assert!(open_of(&dst, "fmt4", "t_nb").is_empty());
    assert!(fx::sstable_contents(&dst.layout.table("fmt4", "t_nb").dir)
        .unwrap()
        .is_empty());
    assert!(!dst.log_lines().iter().any(|l| l.contains("refresh")));

    // System keyspaces are never placed, even when the backup holds them.
    let src = Node::new(34, false);
    let mut cfg = src.config(&[]);
    cfg.keyspaces = Some(vec!["kairosdb".into(), "system_auth".into()]);
    let sink = MemSink::default();
    backup(&cfg, "src", &sink).unwrap();
    assert!(sink
        .item_names()
        .iter()
        .any(|n| n.starts_with("cassandra/system_auth/")));
    let dst = Node::new(35, true);
    let plan = rc::plan(&restore_config(&dst), &components(&sink)).unwrap();
    assert!(plan.tables.iter().all(|t| t.keyspace != "system_auth"));
    assert!(
        plan.to_string()
            .contains("system_auth.roles is not restored"),
        "{plan}"
    );
    let report = rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    assert!(report.tables.iter().all(|t| t.keyspace == "kairosdb"));
    assert!(
        fx::sstable_contents(&dst.layout.table("system_auth", "roles").dir)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_leaked_mnbackup_snapshot_is_cleared_by_the_next_run() {
    let node = Node::new(23, false);
    // A run killed before its clearsnapshot left mnbackup-old; an operator took ops-manual.
    for tag in ["mnbackup-old", "ops-manual"] {
        let mut argv = node.tool(&fx::nodetool_path(), &[]);
        argv.extend([
            "snapshot".into(),
            "-t".into(),
            tag.into(),
            "kairosdb".into(),
        ]);
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let dp = node.layout.table("kairosdb", "data_points");
    assert!(dp.dir.join("snapshots/mnbackup-old").is_dir());
    let sink = MemSink::default();
    let summary = backup(&node.config(&[]), "new", &sink).unwrap();
    assert_eq!(
        summary.leaked_snapshots_cleared,
        vec!["mnbackup-old".to_string()]
    );
    assert_eq!(
        sink.info()["leaked_snapshots_cleared"],
        serde_json::json!(["mnbackup-old"])
    );
    assert!(!dp.dir.join("snapshots/mnbackup-old").exists());
    assert!(!dp.dir.join("snapshots/mnbackup-new").exists());
    // Not ours: left alone.
    assert!(dp.dir.join("snapshots/ops-manual").is_dir());
    assert!(node
        .log_lines()
        .iter()
        .any(|l| l.ends_with("clearsnapshot -t mnbackup-old")));
}

#[test]
fn restored_files_keep_their_modes() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::new(24, false);
    let t = node.layout.table("kairosdb", "row_key_index");
    fs::set_permissions(t.data_file(1), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(
        t.dir.join("md-1-big-Index.db"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let sink = MemSink::default();
    backup(&node.config(&[]), "src", &sink).unwrap();
    let dst = Node::new(87, true);
    rc::restore(&restore_config(&dst), components(&sink)).unwrap();
    let d = &dst.layout.table("kairosdb", "row_key_index").dir;
    let mode_of = |suffix: &str| {
        let f = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap();
        fs::metadata(f).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode_of("-Data.db"), 0o640);
    assert_eq!(mode_of("-Index.db"), 0o600);
    let src_toc = fs::metadata(t.dir.join("md-1-big-TOC.txt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode_of("-TOC.txt"), src_toc);
}
