//! Prometheus through the `mnbackup` binary: `snapshot` with `[prometheus]` (a real Prometheus
//! with the admin API), a second `snapshot` that stores only the new blocks, `restore --plan`
//! naming the blocks, `restore` into an empty data directory, refused into a non-empty one,
//! and a second Prometheus on the restored directory answering like the first.

mod common;

use std::path::Path;

use mnbackup_fixtures::prometheus::{self as fx, Options, TestPrometheus};

const HOUR: i64 = 3600;
const SERIES: &[(&str, &str)] = &[("mnb_temperature", "host=\"mn1\"")];

fn write_config(path: &Path, url: &str, data: &Path) {
    std::fs::write(
        path,
        format!(
            "[restore]\nservice_check = \"\"\n\n[prometheus]\nurl = \"{url}\"\ndata_dir = \
             \"{}\"\ntimeout_seconds = 60\nowner = \"nobody-here\"\n",
            data.display()
        ),
    )
    .unwrap();
}

fn out(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn latest_blocks(repo: &Path) -> Vec<serde_json::Value> {
    let list: serde_json::Value =
        serde_json::from_str(&out(common::ok(repo, &["list", "--json"]))).unwrap();
    let id = list
        .as_array()
        .and_then(|a| a.last())
        .and_then(|s| s["id"].as_str())
        .expect("a snapshot")
        .to_string();
    let m: serde_json::Value =
        serde_json::from_str(&out(common::ok(repo, &["show", &id, "--json"]))).unwrap();
    m["sources"]["prometheus"]["blocks"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no sources.prometheus in {m}"))
}

#[test]
fn snapshot_and_restore_through_the_cli() {
    assert!(
        fx::available(),
        "this test needs Debian's prometheus package (prometheus, promtool)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let now = chrono::Utc::now().timestamp();
    let start = (now - 12 * HOUR) / (2 * HOUR) * (2 * HOUR);
    let first = fx::backfill(&data, &fx::openmetrics(SERIES, start, start + 4 * HOUR, 60)).unwrap();
    assert_eq!(first.len(), 2, "{first:?}");
    let mut p1 = TestPrometheus::start(&data, &Options::default()).unwrap();
    p1.wait_for_scrapes(3).unwrap();
    let repo = tmp.path().join("repo");
    let cfg = tmp.path().join("mnbackup.toml");
    write_config(&cfg, &p1.url(), &data);
    let c = cfg.to_str().unwrap();
    common::ok(&repo, &["init"]);
    common::ok(&repo, &["-c", c, "snapshot"]);
    let b1 = latest_blocks(&repo);
    assert_eq!(b1.len(), 3, "two blocks and the head: {b1:?}");

    // More data: one new block; the second snapshot stores it and the head, the rest unchanged.
    let second = fx::backfill(
        &data,
        &fx::openmetrics(SERIES, start + 4 * HOUR, start + 6 * HOUR, 60),
    )
    .unwrap();
    assert_eq!(second.len(), 1, "{second:?}");
    p1.stop().unwrap();
    let p1 = TestPrometheus::start(&data, &Options::default()).unwrap();
    p1.wait_for_scrapes(2).unwrap();
    write_config(&cfg, &p1.url(), &data);
    common::ok(&repo, &["-c", c, "snapshot"]);
    let b2 = latest_blocks(&repo);
    let unchanged: Vec<&str> = b2
        .iter()
        .filter(|b| b["unchanged"].as_bool() == Some(true))
        .filter_map(|b| b["ulid"].as_str())
        .collect();
    assert_eq!(unchanged.len(), 2, "{b2:?}");
    for u in &first {
        assert!(unchanged.contains(&u.as_str()), "{u} not unchanged: {b2:?}");
    }
    assert!(b2.iter().any(|b| b["ulid"] == second[0].as_str()));

    // Restore into an empty directory (restore's config points data_dir there).
    let restored = tmp.path().join("restored");
    let rcfg = tmp.path().join("restore.toml");
    write_config(&rcfg, &p1.url(), &restored);
    let rc = rcfg.to_str().unwrap();
    let plan = out(common::ok(
        &repo,
        &["-c", rc, "restore", "latest", "--plan"],
    ));
    for b in &b2 {
        let u = b["ulid"].as_str().unwrap();
        assert!(plan.contains(u), "plan does not name {u}: {plan}");
    }
    assert!(plan.contains(" UTC"), "plan names no time range: {plan}");
    assert!(!restored.exists(), "--plan changed nothing");
    common::ok(&repo, &["-c", rc, "restore", "latest"]);
    let names = fx::block_dirs(&restored).unwrap();
    assert_eq!(names.len(), b2.len(), "{names:?}");

    // A non-empty directory is refused without --force.
    let o = common::mnb(&repo, &["-c", rc, "restore", "latest"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not empty"), "{err}");

    let quiet = Options {
        admin_api: false,
        scrape_self: false,
        ..Options::default()
    };
    let p2 = TestPrometheus::start(&restored, &quiet).unwrap();
    let end = start + 6 * HOUR;
    let a = p1.query_range("mnb_temperature", start, end, 60).unwrap();
    let b = p2.query_range("mnb_temperature", start, end, 60).unwrap();
    assert!(
        a["result"][0]["values"].as_array().unwrap().len() >= 300,
        "{a}"
    );
    assert_eq!(a, b);
}
