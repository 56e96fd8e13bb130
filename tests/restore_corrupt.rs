//! A damaged item stops the restore with an error naming it, before its table is touched: one
//! byte of the object holding a table's data is flipped on the pool; the restore exits 5 naming
//! the item, and that table on the target is empty. After the object is repaired (here: put
//! back), running the same command again finishes the restore from where it stopped.

mod restore_common;

use std::fs;

use mnbackup_fixtures::mariadb::TestServer;
use restore_common::*;

#[test]
fn damaged_item_stops_before_its_table_is_touched() {
    if skip() {
        return;
    }
    let env = Env::new_loose();
    let a = TestServer::start().unwrap();
    generate(&a, 0.005, 9);
    env.config(&a, &[], "");
    let id = env.snapshot();
    let m = env.manifest(&id);
    let item = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["name"]
                .as_str()
                .unwrap()
                .starts_with("mariadb/2-data/zstack/VolumeEO")
        })
        .expect("a VolumeEO data item")
        .clone();
    let name = item["name"].as_str().unwrap().to_string();
    let obj = item["pieces"][0]["object"].as_str().unwrap().to_string();
    let path = env.repo.join("objects").join(&obj[..2]).join(&obj);
    let good = fs::read(&path).unwrap();
    let mut bad = good.clone();
    let k = bad.len() / 2;
    bad[k] ^= 0x40;
    fs::write(&path, &bad).unwrap();

    let b = TestServer::start().unwrap();
    env.config(&b, &[], "");
    let out = env.run(&["restore", "--journal", env.journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{err}");
    assert!(err.contains(&name), "the error names the item: {err}");
    assert!(err.contains("zstack.VolumeEO was not touched"), "{err}");
    let n = b
        .sql("SELECT COUNT(*) FROM zstack.VolumeEO")
        .unwrap_or_default();
    assert!(
        n.trim().is_empty() || n.trim() == "0",
        "VolumeEO was touched: {n}"
    );
    assert!(env.journal.exists(), "the journal keeps the progress");

    // Repaired: the same command finishes.
    fs::write(&path, &good).unwrap();
    let out = env.run(&["restore", "--journal", env.journal.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_fingerprints(&b, &m, &[]);
}
