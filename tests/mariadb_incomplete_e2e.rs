//! Never a silent incomplete backup (issue 11), end to end through the `mnbackup` binary on a
//! ZStack-shaped server: routines defined by root, accounts as `deploydb.sh` creates them, and
//! a `zstack.properties` with `DB.user = zstack` and a zstack-ctl-encrypted password.
//!
//! 1. `snapshot` with ZStack's own credentials exits 10 and names the gaps (routines, accounts,
//!    grants, consistency); `list --json` marks the snapshot incomplete;
//! 2. `restore --plan` shows `[WARN] snapshot incomplete` per gap; `restore` exits 10 and says
//!    INCOMPLETE;
//! 3. `check` exits 10 listing exactly the missing privileges with the GRANTs for this server;
//! 4. after running those GRANTs, `snapshot` exits 0, and a restore into an empty server exits 0,
//!    lets `zstack` and `root@'127.0.0.1'` log in with their passwords and has every routine.

mod restore_common;

use mnbackup::engines::mariadb::zstack;
use mnbackup_fixtures::mariadb::TestServer;
use mnbackup_fixtures::zstack_db;
use mysql_async::prelude::*;
use restore_common::*;

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(o)))
}

fn routines(s: &TestServer) -> String {
    s.sql(
        "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME, MD5(ROUTINE_DEFINITION) FROM \
         information_schema.ROUTINES WHERE ROUTINE_SCHEMA LIKE 'zstack%' ORDER BY 1, 2, 3",
    )
    .unwrap()
}

async fn login(opts: mysql_async::Opts) -> Result<String, mysql_async::Error> {
    let mut c = mysql_async::Conn::new(opts).await?;
    let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await?;
    c.disconnect().await.ok();
    Ok(who.unwrap_or_default())
}

fn tcp(s: &TestServer, user: &str, pw: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(s.port())
        .user(Some(user))
        .pass(Some(pw))
        .into()
}

#[test]
#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn zstack_credentials_give_an_incomplete_snapshot_until_the_grants_are_run() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    generate(&src, 0.002, 5);
    let src_routines = routines(&src);
    assert!(src_routines.lines().count() >= 2, "{src_routines}");
    let definers = src
        .sql("SELECT DISTINCT DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'zstack'")
        .unwrap();
    assert_eq!(definers.trim(), "root@localhost");

    let env = Env::new();
    let props = env.dir.path().join("zstack.properties");
    std::fs::write(
        &props,
        format!(
            "DB.url = jdbc:mysql://127.0.0.1:{}/zstack\nDB.user = zstack\nDB.password = {}\n",
            src.port(),
            zstack::encrypt(zstack_db::ZSTACK_PASSWORD)
        ),
    )
    .unwrap();
    std::fs::write(
        &env.cfg,
        format!(
            "[repository]\ncache_dir = \"{}\"\n[daemon]\nstate_dir = \"{}\"\n[restore]\n\
             service_check = \"\"\n[mariadb]\nzstack_properties = \"{}\"\nworkers = 2\n",
            env.dir.path().join("cache").display(),
            env.dir.path().join("state").display(),
            props.display()
        ),
    )
    .unwrap();

    // 1. The snapshot is committed but incomplete: exit 10, the gaps named with their fixes.
    let o = env.run(&["--json", "snapshot"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let snap = json(&o);
    assert_eq!(snap["complete"], false);
    let kinds: Vec<&str> = snap["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    for k in ["consistency", "routines", "accounts", "grants"] {
        assert!(kinds.contains(&k), "gap {k} missing: {kinds:?}");
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INCOMPLETE"), "{err}");
    assert!(
        err.contains("GRANT SELECT ON mysql.proc TO 'zstack'@'127.0.0.1';"),
        "{err}"
    );
    assert!(
        err.contains("GRANT RELOAD ON *.* TO 'zstack'@'127.0.0.1';"),
        "{err}"
    );
    let id1 = snap["id"].as_str().unwrap().to_string();
    let listed = env.list();
    let l1 = listed.iter().find(|s| s["id"] == id1.as_str()).unwrap();
    assert_eq!(l1["complete"], false, "{l1}");

    // 2. The plan warns per gap; the restore brings back what there is and exits 10.
    let dst1 = TestServer::start().unwrap();
    let sock1 = dst1.socket().to_str().unwrap().to_string();
    let target = |sock: &str| {
        vec![
            "--target-socket".to_string(),
            sock.to_string(),
            "--target-user".to_string(),
            "root".to_string(),
            "--target-password-env".to_string(),
            "MNB_TEST_EMPTY_PW".to_string(),
        ]
    };
    let mut args: Vec<String> = vec!["restore".into(), id1.clone(), "--plan".into()];
    args.extend(target(&sock1));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.cmd(&a).env("MNB_TEST_EMPTY_PW", "").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let warns = out
        .lines()
        .filter(|l| l.contains("[WARN] snapshot incomplete: mariadb"))
        .count();
    assert_eq!(warns, kinds.len(), "{out}");
    assert!(!out.contains("[ok  ] snapshot complete"), "{out}");
    args.retain(|a| a != "--plan");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.cmd(&a).env("MNB_TEST_EMPTY_PW", "").output().unwrap();
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("restore INCOMPLETE"), "{out}");
    assert!(!out.contains("restore complete"), "{out}");
    // What there was came back; the routines did not (they were never captured).
    let q = "SELECT COUNT(*), SUM(memorySize) FROM zstack.VmInstanceEO";
    assert_eq!(src.sql(q).unwrap(), dst1.sql(q).unwrap());
    assert_ne!(routines(&dst1), src_routines);

    // 3. check lists exactly the missing privileges, with GRANTs this server accepts.
    let o = env.run(&["--json", "check"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let chk = json(&o);
    let failing: Vec<String> = chk["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failing,
        ["consistency point", "routines", "accounts and grants"],
        "{chk:#}"
    );
    let fixes = check_fixes(&chk);
    assert_eq!(
        fixes,
        [
            "GRANT RELOAD ON *.* TO 'zstack'@'127.0.0.1';",
            "GRANT SELECT ON mysql.proc TO 'zstack'@'127.0.0.1';",
            "GRANT SELECT ON mysql.* TO 'zstack'@'127.0.0.1';",
        ]
    );
    let human = env.run(&["check"]);
    let h = String::from_utf8_lossy(&human.stdout);
    assert!(h.contains("[FAIL] mariadb routines"), "{h}");
    assert!(h.contains("[ok  ] pool repository"), "{h}");

    // 4. After the printed GRANTs the next snapshot is complete.
    for f in &fixes {
        src.sql(f).unwrap();
    }
    let o = env.run(&["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.run(&["--json", "snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let snap2 = json(&o);
    assert_eq!(snap2["complete"], true, "{snap2}");
    let id2 = snap2["id"].as_str().unwrap().to_string();
    let accounts = env.manifest(&id2)["sources"]["mariadb"]["accounts"].clone();
    for a in [
        "root@%",
        "root@127.0.0.1",
        &format!("root@{}", zstack_db::MANAGEMENT_IP),
        "zstack@%",
        "zstack@127.0.0.1",
        "zstack@localhost",
        "zstack_ui@%",
    ] {
        assert!(
            accounts.as_array().unwrap().iter().any(|x| x == a),
            "{a} not in {accounts}"
        );
    }

    // A restore into an empty server: complete, zstack and root@'127.0.0.1' log in with their
    // passwords, every routine is there.
    let dst2 = TestServer::start().unwrap();
    let mut args: Vec<String> = vec!["restore".into(), id2.clone()];
    args.extend(target(dst2.socket().to_str().unwrap()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.cmd(&a).env("MNB_TEST_EMPTY_PW", "").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restore complete"));
    assert_eq!(routines(&dst2), src_routines);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // zstack@'localhost' or zstack@'127.0.0.1', whichever the server matches first: both
        // carry the same password.
        let who = login(tcp(&dst2, "zstack", zstack_db::ZSTACK_PASSWORD))
            .await
            .unwrap();
        assert!(who.starts_with("zstack@"), "{who}");
        assert!(login(tcp(&dst2, "zstack", "wrong")).await.is_err());
        assert_eq!(
            login(tcp(&dst2, "root", zstack_db::ROOT_PASSWORD))
                .await
                .unwrap(),
            "root@127.0.0.1"
        );
        assert!(login(tcp(&dst2, "root", "wrong")).await.is_err());
        // The target's own root@localhost was kept (the restore logged in through it).
        assert_eq!(login(dst2.opts()).await.unwrap(), "root@localhost");
    });
    // root@'%' has its grants back.
    let g = dst2.sql("SHOW GRANTS FOR 'root'@'%'").unwrap();
    assert!(
        g.contains("GRANT ALL PRIVILEGES ON *.* TO `root`@`%`") && g.contains("WITH GRANT OPTION"),
        "{g}"
    );
}
