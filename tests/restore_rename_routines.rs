//! `--rename-db old=new` and routines that compare a schema name with the literal 'old' (ZStack
//! has such helper procedures): `restore --plan` warns about them before anything is loaded,
//! and the restore's routines step says the same.

mod restore_common;

use mnbackup_fixtures::mariadb::TestServer;
use restore_common::*;

#[test]
fn plan_warns_about_routines_naming_the_old_database() {
    if skip() {
        return;
    }
    let a = TestServer::start().unwrap();
    a.load(
        b"CREATE DATABASE app; CREATE TABLE app.t (id int PRIMARY KEY, KEY k (id)) ENGINE=InnoDB;\n\
          DELIMITER //\n\
          CREATE PROCEDURE app.dropIndexIfExists(IN tbl VARCHAR(64), IN idx VARCHAR(64))\n\
          BEGIN\n\
            IF EXISTS (SELECT 1 FROM information_schema.statistics WHERE table_schema = 'app'\n\
                       AND table_name = tbl AND index_name = idx) THEN\n\
              SET @s = CONCAT('DROP INDEX ', idx, ' ON ', tbl);\n\
            END IF;\n\
          END //\n\
          CREATE PROCEDURE app.countRows() BEGIN SELECT COUNT(*) FROM t; END //\n\
          DELIMITER ;\n",
    )
    .unwrap();
    let env = Env::new();
    env.config(&a, &[], "");
    let id = env.snapshot();

    let o = env.run(&[
        "restore",
        &id,
        "--plan",
        "--no-files",
        "--rename-db",
        "app=app_old",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let line = out
        .lines()
        .find(|l| l.contains("[WARN] renamed routines"))
        .unwrap_or_else(|| panic!("no warning in the plan:\n{out}"));
    assert!(
        line.contains("1 routine(s)")
            && line.contains("'app'")
            && line.contains("app_old.dropIndexIfExists"),
        "{line}"
    );
    assert!(!out.contains("countRows"), "{out}");

    // Without a rename there is nothing to warn about.
    let b = TestServer::start().unwrap();
    let sock = b.socket().to_str().unwrap().to_string();
    let o = env.run(&[
        "restore",
        &id,
        "--plan",
        "--no-files",
        "--target-socket",
        &sock,
    ]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!out.contains("renamed routines"), "{out}");

    // The restore itself says it too (the routines step's note), and loads the routine.
    let o = env.run(&["restore", &id, "--no-files", "--rename-db", "app=app_old"]);
    let all = text(&o);
    assert_eq!(o.status.code(), Some(0), "{all}");
    assert!(all.contains("app_old.dropIndexIfExists"), "{all}");
    assert!(a
        .sql("SHOW PROCEDURE STATUS WHERE Db = 'app_old'")
        .unwrap()
        .contains("dropIndexIfExists"));
}
