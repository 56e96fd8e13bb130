//! End to end through the `mnbackup` binary: snapshots of a generated ZStack database. A second
//! snapshot of an unchanged database adds almost nothing; after one churn step (12 simulated
//! hours) it adds a small fraction of the first. The exported dump loads into an empty server.

use std::path::Path;
use std::process::Command;

use mnbackup_fixtures::mariadb::{available, TestServer};
use mnbackup_fixtures::zstack_db;

fn mnbackup(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mnbackup"))
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .output()
        .expect("running mnbackup");
    assert!(
        out.status.success(),
        "mnbackup {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn snapshot(repo: &Path, cfg: &Path) -> serde_json::Value {
    mnbackup(&[
        "-r",
        repo.to_str().unwrap(),
        "-c",
        cfg.to_str().unwrap(),
        "--json",
        "snapshot",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_a_zstack_db_are_incremental() {
    if !available() {
        eprintln!("MariaDB server not installed; skipping");
        return;
    }
    let src = TestServer::start().unwrap();
    let scale: f64 = std::env::var("MNBACKUP_E2E_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.05);
    let g = zstack_db::generate(src.opts(), scale, 11).await.unwrap();
    eprintln!(
        "generated {} rows at scale {scale} in {:.1} s",
        g.rows, g.seconds
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let cfg = dir.path().join("mnbackup.toml");
    std::fs::write(
        &cfg,
        format!(
            "[mariadb]\nsocket = \"{}\"\nuser = \"root\"\nsplit_rows = 20000\n",
            src.socket().display()
        ),
    )
    .unwrap();
    mnbackup(&["-r", repo.to_str().unwrap(), "init"]);
    let s1 = snapshot(&repo, &cfg);
    let s2 = snapshot(&repo, &cfg);
    let c = zstack_db::churn(src.opts(), 11).await.unwrap();
    let s3 = snapshot(&repo, &cfg);
    let added = |s: &serde_json::Value| s["stats"]["bytes_added"].as_u64().unwrap();
    let logical = |s: &serde_json::Value| s["stats"]["logical_bytes"].as_u64().unwrap();
    eprintln!(
        "first snapshot: {} logical bytes, {} bytes added; unchanged: {} added ({:.3}%); after churn {c:?}: {} added ({:.2}% of the first)",
        logical(&s1),
        added(&s1),
        added(&s2),
        100.0 * added(&s2) as f64 / added(&s1) as f64,
        added(&s3),
        100.0 * added(&s3) as f64 / added(&s1) as f64
    );
    assert!(
        added(&s2) * 100 < added(&s1),
        "an unchanged database must add < 1%"
    );
    assert!(
        added(&s3) * 4 < added(&s1),
        "one churn step must add well under a quarter"
    );

    // The export of the latest snapshot loads into an empty server with the mariadb client.
    let out = dir.path().join("export");
    mnbackup(&[
        "-r",
        repo.to_str().unwrap(),
        "export",
        "latest",
        out.to_str().unwrap(),
    ]);
    let mut files: Vec<_> = walk(&out.join("mariadb"));
    files.sort();
    assert!(files.len() > 20);
    let dst = TestServer::start().unwrap();
    for f in &files {
        dst.load(&std::fs::read(f).unwrap()).unwrap();
    }
    for q in [
        "SELECT COUNT(*), SUM(memorySize) FROM zstack.VmInstanceVO",
        "SELECT COUNT(*), SUM(dateInLong) FROM zstack.VmUsageHistoryVO",
        "SELECT COUNT(*) FROM zstack.AuditsVO",
    ] {
        assert_eq!(src.sql(q).unwrap(), dst.sql(q).unwrap(), "{q}");
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        } else {
            v.push(e.path());
        }
    }
    v
}
