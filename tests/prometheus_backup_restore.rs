//! Prometheus (issue 21): a real Prometheus from Debian's package, started on loopback with the
//! admin API; several complete 2-hour blocks backfilled with promtool plus the server's own
//! scrapes in the head. Snapshot into a real repository; a second snapshot after more data
//! stores only the new blocks; restore into an empty directory; a second Prometheus on it
//! answers range queries with the same series and samples.
//!
//! Without Prometheus these tests return early, unless `MNBACKUP_REQUIRE_PROMETHEUS` is set
//! (fixtures/test-all.sh sets it): then they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use mnbackup::engines::prometheus::{
    self as prom, CopyMethod, PrometheusConfig, PrometheusSourceInfo, RestoreFile,
};
use mnbackup::model::{Gap, Manifest};
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup::repo::codec::{CodecPolicy, SigCache};
use mnbackup::repo::writer::SnapshotWriter;
use mnbackup::repo::Repo;
use mnbackup_fixtures::prometheus::{self as fx, Options, TestPrometheus};

const HOUR: i64 = 3600;

/// A 2-hour-aligned start, 14 to 12 hours ago: the backfilled blocks lie well before the head.
fn backfill_start() -> i64 {
    let now = chrono::Utc::now().timestamp();
    (now - 12 * HOUR) / (2 * HOUR) * (2 * HOUR)
}

const SERIES: &[(&str, &str)] = &[
    ("mnb_temperature", "host=\"mn1\""),
    ("mnb_temperature", "host=\"mn2\""),
    ("mnb_vm_count", "zone=\"zone-1\""),
];

fn config(p: &TestPrometheus) -> PrometheusConfig {
    PrometheusConfig {
        url: p.url(),
        data_dir: p.data_dir().to_path_buf(),
        max_age_days: None,
        timeout_seconds: 60,
        ..Default::default()
    }
}

fn writer(repo: &Repo, parent: Option<Manifest>) -> SnapshotWriter {
    SnapshotWriter::new(
        repo.clone(),
        CodecPolicy::default(),
        SigCache::default(),
        parent,
        None,
    )
    .unwrap()
}

fn commit(w: SnapshotWriter) -> Manifest {
    w.commit("mn1".into(), "manual".into(), vec![]).unwrap()
}

fn info(m: &Manifest) -> PrometheusSourceInfo {
    serde_json::from_value(m.sources["prometheus"].clone()).unwrap()
}

/// The snapshot directories Prometheus holds: none may stay behind a backup.
fn snapshots_left(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Block ulid -> object ids of its items.
fn block_objects(m: &Manifest) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for it in &m.items {
        let ulid = it.name.split('/').nth(1).unwrap().to_string();
        let objs = it
            .pieces
            .iter()
            .map(|p| p.piece.data.object().0.to_string());
        out.entry(ulid).or_default().extend(objs);
    }
    out
}

/// Fails every put after `ok` successful ones (the pool went away mid-snapshot).
struct Failing<'a> {
    inner: &'a SnapshotWriter,
    ok: usize,
    puts: AtomicUsize,
}

impl ItemSink for Failing<'_> {
    fn put_reader(&self, spec: ItemSpec, r: &mut dyn std::io::Read) -> anyhow::Result<()> {
        if self.puts.fetch_add(1, Ordering::SeqCst) >= self.ok {
            anyhow::bail!("the pool went away (test sink)");
        }
        self.inner.put_reader(spec, r)
    }
    fn put_entry(&self, spec: ItemSpec) -> anyhow::Result<()> {
        self.inner.put_entry(spec)
    }
    fn set_source_info(&self, source: &str, info: serde_json::Value) {
        self.inner.set_source_info(source, info)
    }
    fn gap(&self, gap: Gap) {
        self.inner.gap(gap)
    }
}

fn restore_from(repo: &Repo, m: &Manifest, dest: &Path, owner: Option<(u32, u32)>) {
    let items: Vec<_> = m
        .items
        .iter()
        .filter(|i| i.name.starts_with("prometheus/"))
        .collect();
    let sizes: Vec<(String, u64)> = items.iter().map(|i| (i.name.clone(), i.size)).collect();
    let inf = info(m);
    let plan = prom::plan(Some(&inf), &sizes, dest, owner, false).unwrap();
    let described = plan.describe().join("\n");
    for b in &inf.blocks {
        assert!(described.contains(&b.ulid), "{described}");
        assert!(
            described.contains(&prom::format_ms(b.min_time)),
            "{described}"
        );
    }
    let files = items
        .iter()
        .map(|it| RestoreFile {
            item: it.name.clone(),
            size: it.size,
            open: Box::new(move || {
                let data = mnbackup::repo::reader::read_item(repo, it)?;
                Ok(Box::new(std::io::Cursor::new(data)) as Box<dyn std::io::Read>)
            }),
        })
        .collect();
    let report = prom::restore(&plan, files).unwrap();
    assert_eq!(report.blocks.len(), inf.blocks.len());
}

fn matrix_len(v: &serde_json::Value) -> usize {
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().unwrap().len())
        .sum()
}

#[test]
fn snapshot_incremental_and_restore_answer_the_same_queries() {
    if !fx::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = backfill_start();
    let first = fx::backfill(&data, &fx::openmetrics(SERIES, start, start + 6 * HOUR, 60)).unwrap();
    assert_eq!(first.len(), 3, "three 2-hour blocks: {first:?}");
    let mut p1 = TestPrometheus::start(&data, &Options::default()).unwrap();
    p1.wait_for_scrapes(3).unwrap();
    let (repo, _) = Repo::init(&tmp.path().join("repo")).unwrap();

    // A pool failure mid-copy: the backup fails and the snapshot directory is gone anyway.
    let w = writer(&repo, None);
    let failing = Failing {
        inner: &w,
        ok: 2,
        puts: AtomicUsize::new(0),
    };
    let e = prom::backup(&config(&p1), &failing).unwrap_err();
    assert!(format!("{e:#}").contains("the pool went away"), "{e:#}");
    assert_eq!(snapshots_left(&data), Vec::<String>::new());
    w.abort().unwrap();

    // max_age: the backfilled blocks (ending 6 hours ago or earlier) are left out.
    let w = writer(&repo, None);
    let mut cfg = config(&p1);
    cfg.max_age_days = Some(0.25);
    let s = prom::backup(&cfg, &w).unwrap();
    assert_eq!((s.blocks, s.blocks_too_old), (1, 3), "{s:?}");
    w.abort().unwrap();

    // Snapshot 1: the three backfilled blocks and the head (as one more block).
    let w = writer(&repo, None);
    let s1 = prom::backup(&config(&p1), &w).unwrap();
    let m1 = commit(w);
    assert_eq!(s1.method, CopyMethod::Snapshot);
    assert_eq!((s1.blocks, s1.blocks_unchanged), (4, 0), "{s1:?}");
    assert!(m1.complete, "{:?}", m1.gaps);
    assert_eq!(snapshots_left(&data), Vec::<String>::new());
    let i1 = info(&m1);
    assert_eq!(i1.method, CopyMethod::Snapshot);
    assert!(i1.version.as_deref().unwrap().starts_with("2."), "{i1:?}");
    for (ulid, b) in first.iter().zip(&i1.blocks) {
        assert_eq!(&b.ulid, ulid);
        assert_eq!(b.num_samples, 3 * 120);
    }
    assert!(i1.blocks[0].min_time == start * 1000);
    for name in ["meta.json", "index", "chunks/000001", "tombstones"] {
        let item = format!("prometheus/{}/{name}", first[0]);
        assert!(m1.items.iter().any(|i| i.name == item), "{item} missing");
    }
    assert!(m1
        .items
        .iter()
        .all(|i| !i.name.contains("/wal/") && !i.name.contains("chunks_head")));

    // More data: two more hours backfilled (Prometheus stopped for promtool), more scrapes.
    p1.stop().unwrap();
    let more = fx::openmetrics(SERIES, start + 6 * HOUR, start + 8 * HOUR, 60);
    let second = fx::backfill(&data, &more).unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    let p1 = TestPrometheus::start(&data, &Options::default()).unwrap();
    p1.wait_for_scrapes(6).unwrap();
    let w = writer(&repo, Some(m1.clone()));
    let s2 = prom::backup(&config(&p1), &w).unwrap();
    let m2 = commit(w);
    let until = chrono::Utc::now().timestamp() as f64 - 2.0;
    assert_eq!((s2.blocks, s2.blocks_unchanged), (5, 3), "{s2:?}");
    assert_eq!(snapshots_left(&data), Vec::<String>::new());
    let i2 = info(&m2);
    let (o1, o2) = (block_objects(&m1), block_objects(&m2));
    let mut new_bytes = 0;
    for b in &i2.blocks {
        assert_eq!(b.unchanged, first.contains(&b.ulid), "{b:?}");
        if b.unchanged {
            assert_eq!(o1[&b.ulid], o2[&b.ulid], "block {} stored again", b.ulid);
        } else {
            new_bytes += b.bytes();
        }
    }
    let added = m2.stats.bytes_added - m2.stats.manifest_bytes;
    assert!(
        added <= new_bytes + 1024 * m2.stats.objects_added,
        "snapshot 2 wrote {added} bytes for {new_bytes} bytes of new blocks"
    );
    assert!(i2.blocks.iter().any(|b| b.ulid == second[0]));

    // Restore into an empty directory; a second Prometheus on it answers the same.
    let restored = tmp.path().join("restored");
    let owner = prom::lookup_user("prometheus").unwrap_or((65534, 65534));
    restore_from(&repo, &m2, &restored, Some(owner));
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        for p in [
            restored.clone(),
            restored.join(&second[0]),
            restored.join(&second[0]).join("chunks/000001"),
        ] {
            let md = std::fs::metadata(&p).unwrap();
            assert_eq!((md.uid(), md.gid()), owner, "{}", p.display());
        }
        let names = fx::block_dirs(&restored).unwrap();
        assert_eq!(names.len(), i2.blocks.len());
        assert!(std::fs::read_dir(&restored).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tmp")));
    }
    let quiet = Options {
        admin_api: false,
        scrape_self: false,
        ..Options::default()
    };
    let p2 = TestPrometheus::start(&restored, &quiet).unwrap();
    let end = start + 8 * HOUR;
    for q in ["mnb_temperature", "mnb_vm_count", "sum(mnb_temperature)"] {
        let a = p1.query_range(q, start, end, 60).unwrap();
        let b = p2.query_range(q, start, end, 60).unwrap();
        assert!(matrix_len(&a) >= 400, "{q}: {a}");
        assert_eq!(a, b, "{q}");
    }
    // Raw samples: the backfilled ones, and the head's own scrapes up to the snapshot.
    let raw = "{__name__=~\"mnb_.+\"}[9h]";
    let (a, b) = (
        p1.query(raw, end as f64).unwrap(),
        p2.query(raw, end as f64).unwrap(),
    );
    assert_eq!(matrix_len(&a), 3 * 8 * 60);
    assert_eq!(a, b);
    let up = "up{job=\"prometheus\"}[1h]";
    let (a, b) = (p1.query(up, until).unwrap(), p2.query(up, until).unwrap());
    assert!(matrix_len(&a) >= 3, "{a}");
    assert_eq!(a, b);
}

#[test]
fn without_the_admin_api_only_complete_blocks_and_a_gap() {
    if !fx::available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let start = backfill_start();
    let blocks =
        fx::backfill(&data, &fx::openmetrics(SERIES, start, start + 4 * HOUR, 60)).unwrap();
    // A block being written (no meta.json yet, temporary name): never copied.
    let partial = data.join("01HZZZZZZZZZZZZZZZZZZZZZZZ.tmp-for-creation");
    std::fs::create_dir_all(partial.join("chunks")).unwrap();
    std::fs::write(partial.join("index"), b"partial").unwrap();
    let opts = Options {
        admin_api: false,
        ..Options::default()
    };
    let p = TestPrometheus::start(&data, &opts).unwrap();
    p.wait_for_scrapes(1).unwrap();
    let (repo, _) = Repo::init(&tmp.path().join("repo")).unwrap();
    let w = writer(&repo, None);
    let s = prom::backup(&config(&p), &w).unwrap();
    let m = commit(w);
    assert_eq!(s.method, CopyMethod::Blocks);
    assert_eq!(s.blocks, blocks.len());
    assert!(!m.complete);
    assert_eq!(m.gaps.len(), 1, "{:?}", m.gaps);
    assert_eq!(
        (m.gaps[0].source.as_str(), m.gaps[0].kind.as_str()),
        ("prometheus", "head")
    );
    assert!(
        m.gaps[0].reason.contains("admin APIs disabled"),
        "{:?}",
        m.gaps[0]
    );
    assert!(m.gaps[0]
        .fix
        .as_deref()
        .unwrap()
        .contains("--web.enable-admin-api"));
    let stored: BTreeSet<&str> = m
        .items
        .iter()
        .map(|i| i.name.split('/').nth(1).unwrap())
        .collect();
    assert_eq!(stored, blocks.iter().map(String::as_str).collect());
    assert!(data.join("wal").is_dir() && data.join("chunks_head").is_dir());
    assert_eq!(info(&m).method, CopyMethod::Blocks);

    // Prometheus stopped: nothing listens, the same fallback; restore refuses a non-empty dir.
    drop(p);
    let w = writer(&repo, Some(m.clone()));
    let s = prom::backup(&config_at(&data), &w).unwrap();
    assert_eq!((s.blocks, s.blocks_unchanged), (blocks.len(), blocks.len()));
    let m2 = commit(w);
    assert!(m2.gaps[0].reason.contains("refused"), "{:?}", m2.gaps);
    let sizes: Vec<(String, u64)> = m2.items.iter().map(|i| (i.name.clone(), i.size)).collect();
    let e = prom::plan(Some(&info(&m2)), &sizes, &data, None, false).unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");
}

fn config_at(data: &Path) -> PrometheusConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    PrometheusConfig {
        url: format!("http://127.0.0.1:{port}"),
        data_dir: data.to_path_buf(),
        max_age_days: None,
        timeout_seconds: 10,
        ..Default::default()
    }
}
