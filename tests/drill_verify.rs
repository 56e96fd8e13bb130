//! `verify --drill`: a good snapshot passes; a manifest whose recorded fingerprint of one table
//! was altered fails with exit 9 naming that table; the scratch databases are gone afterwards
//! either way, and the live databases are untouched.

mod restore_common;

use mnbackup_fixtures::mariadb::TestServer;
use restore_common::*;

#[test]
fn drill_passes_then_catches_an_altered_fingerprint() {
    if skip() {
        return;
    }
    let env = Env::new();
    let a = TestServer::start().unwrap();
    generate(&a, 0.005, 3);
    env.config(&a, &[], "");
    let id = env.snapshot();
    let before = all_rows(&a, &DBS);

    let out = env.run(&["verify", "--drill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    eprintln!("{s}");
    assert!(s.contains("drill passed"), "{s}");
    assert!(s.contains("Flyway schema_version"), "{s}");
    assert!(databases_like(&a, "mnbackup_drill").is_empty());

    // JSON, naming the snapshot explicitly.
    let out = env.run(&["--json", "verify", "--drill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tables_mismatched"], 0);
    assert!(r["tables_ok"].as_u64().unwrap() > 20);

    // Someone (or some bug) changed the recorded fingerprint of one table.
    env.forge(&id, |m| {
        let fp = &mut m["sources"]["mariadb"]["fingerprints"]["zstack.HostEO"]["hash"];
        let h = fp.as_str().unwrap().to_string();
        let flipped = match h.strip_prefix('0') {
            Some(rest) => format!("1{rest}"),
            None => format!("0{}", &h[1..]),
        };
        *fp = flipped.into();
    });
    let out = env.run(&["verify", "--drill", &id]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("MISMATCH zstack.HostEO"), "{s}");
    assert_eq!(s.matches("MISMATCH").count(), 1, "{s}");
    assert!(s.contains("DRILL FAILED"), "{s}");
    assert!(
        databases_like(&a, "mnbackup_drill").is_empty(),
        "scratch databases left behind"
    );
    assert!(
        all_rows(&a, &DBS) == before,
        "the drill changed the live databases"
    );
}
