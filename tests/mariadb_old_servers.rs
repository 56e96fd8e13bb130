//! End to end against servers that *answer* like MariaDB 5.5 and 10.3: the old-server stand-in
//! (`mnbackup_fixtures::oldserver`, a MySQL-protocol proxy in front of a throwaway 10.11 that
//! rewrites the handshake version and answers what the old server cannot do with the old
//! server's errors). Per personality, on the small ZStack-like schema (tables, views, a trigger,
//! routines, ZStack's accounts) with the binary log on:
//!
//! 1. `check` as ZStack's own `zstack@localhost` exits 10 and names exactly what is missing,
//!    with GRANTs the old server accepts (REPLICATION CLIENT, not BINLOG MONITOR); run through
//!    the proxy they all succeed and `check` then exits 0;
//! 2. `grants` asks the server through the proxy and prints what `--server-version <old>`
//!    prints; that script runs through the proxy, the 10.11 script does not (1064);
//! 3. `snapshot` as that backup account: complete, no gaps, the old version recorded, the FTWRL
//!    path (BACKUP STAGE never sent); on 5.5 the accounts come from `mysql.user` (SHOW CREATE
//!    USER refused), without `is_role`, and the binlog position without GTID;
//! 4. `restore` into an empty 10.11 ("the new Server 1"): rows, fingerprints, routines equal,
//!    `zstack` logs in with its password.

mod restore_common;

use mnbackup_fixtures::mariadb::{ServerOptions, TestServer};
use mnbackup_fixtures::oldserver::{Answer, OldServer, Personality};
use mnbackup_fixtures::zstack_db;
use mysql_async::prelude::*;
use restore_common::*;

const PW: &str = "MNB_TEST_DB_PW";

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

/// Point the configuration at the proxy as `user` (password from `$MNB_TEST_DB_PW`).
fn configure(env: &Env, proxy: &OldServer, user: &str) {
    std::fs::write(
        &env.cfg,
        format!(
            "[repository]\ncache_dir = \"{}\"\n[daemon]\nstate_dir = \"{}\"\n[restore]\n\
             service_check = \"\"\n[mariadb]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{user}\"\n\
             password_env = \"{PW}\"\nworkers = 2\nsplit_rows = 300\n",
            env.dir.path().join("cache").display(),
            env.dir.path().join("state").display(),
            proxy.port()
        ),
    )
    .unwrap();
}

fn run(env: &Env, pw: &str, args: &[&str]) -> std::process::Output {
    env.cmd(args).env(PW, pw).output().unwrap()
}

/// Run statements through the proxy as root, one by one; the first error (code, message).
fn run_through(proxy: &OldServer, stmts: &[String]) -> Result<(), (u16, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = mysql_async::Conn::new(proxy.opts_as("root", None))
            .await
            .unwrap();
        for s in stmts {
            match c.query_drop(s.as_str()).await {
                Ok(()) => {}
                Err(mysql_async::Error::Server(e)) => return Err((e.code, e.message)),
                Err(e) => panic!("{s}: {e}"),
            }
        }
        c.disconnect().await.ok();
        Ok(())
    })
}

/// The statements of a `mnbackup grants` script (comments dropped), password filled in.
fn script_statements(script: &str, password: &str) -> Vec<String> {
    script
        .lines()
        .filter(|l| !l.starts_with("--") && !l.trim().is_empty())
        .map(|l| {
            l.trim_end_matches(';')
                .replace("CHANGE-ME", password)
                .to_string()
        })
        .collect()
}

#[allow(clippy::too_many_lines)] // one end-to-end scenario, read top to bottom
fn scenario(p: Personality) {
    let src = TestServer::start_with(ServerOptions {
        binlog: true,
        ..Default::default()
    })
    .unwrap();
    generate(&src, 0.002, 5);
    let src_routines = routines(&src);
    assert!(src_routines.lines().count() >= 2, "{src_routines}");
    let proxy = OldServer::start(&src, p).unwrap();
    let old = p.version();
    let env = Env::new();

    // The stand-in answers like the old server: version by handshake and by query.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hs, v) = rt.block_on(async {
        let mut c = mysql_async::Conn::new(proxy.opts_as("root", None))
            .await
            .unwrap();
        let hs = c.server_version();
        let v: Option<String> = c.query_first("SELECT VERSION()").await.unwrap();
        c.disconnect().await.ok();
        (hs, v.unwrap())
    });
    assert_eq!(v, old);
    let nums: Vec<u16> = old
        .split(['.', '-'])
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!([hs.0, hs.1, hs.2], nums[..], "handshake version");

    // 1. check as zstack@localhost: exactly what is missing, GRANTs for the old server.
    configure(&env, &proxy, "zstack");
    let o = run(&env, zstack_db::ZSTACK_PASSWORD, &["--json", "check"]);
    assert_eq!(o.status.code(), Some(10), "{}", text(&o));
    let chk = json(&o);
    assert_eq!(chk["server"]["version"], old, "{chk:#}");
    let failing: Vec<String> = chk["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failing,
        [
            "consistency point",
            "routines",
            "accounts and grants",
            "binlog position"
        ],
        "{chk:#}"
    );
    let consistency = chk["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "consistency point")
        .unwrap()
        .to_string();
    assert!(
        consistency.contains("FLUSH TABLES WITH READ LOCK is refused"),
        "{consistency}"
    );
    let fixes = check_fixes(&chk);
    assert_eq!(
        fixes,
        [
            "GRANT RELOAD ON *.* TO 'zstack'@'localhost';",
            "GRANT SELECT ON mysql.proc TO 'zstack'@'localhost';",
            "GRANT SELECT ON mysql.* TO 'zstack'@'localhost';",
            "GRANT REPLICATION CLIENT ON *.* TO 'zstack'@'localhost';",
        ]
    );
    let fix_sql: Vec<String> = fixes
        .iter()
        .map(|f| f.trim_end_matches(';').to_string())
        .collect();
    run_through(&proxy, &fix_sql).expect("the printed GRANTs run on the old server");
    let o = run(&env, zstack_db::ZSTACK_PASSWORD, &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // 2. grants: the version read through the proxy, a script the old server runs.
    configure(&env, &proxy, "root");
    let asked = run(&env, "", &["grants"]);
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked));
    let given = run(&env, "", &["grants", "--server-version", old]);
    assert_eq!(given.status.code(), Some(0), "{}", text(&given));
    assert_eq!(asked.stdout, given.stdout);
    let script = String::from_utf8(asked.stdout).unwrap();
    assert!(!script.contains("BINLOG MONITOR"), "{script}");
    assert_eq!(
        script.contains("IF NOT EXISTS"),
        p == Personality::Mariadb103,
        "{script}"
    );
    let new = run(&env, "", &["grants", "--server-version", "10.11.6-MariaDB"]);
    let new_script = String::from_utf8(new.stdout).unwrap();
    let (code, msg) = run_through(&proxy, &script_statements(&new_script, "bk-pw"))
        .expect_err("the 10.11 script fails on the old server");
    assert_eq!(code, 1064, "{msg}");
    let no = match p {
        Personality::Mariadb55 => "near 'IF NOT EXISTS 'mnbackup'@'localhost'",
        Personality::Mariadb103 => "near 'BINLOG MONITOR ON *.* TO 'mnbackup'@'localhost''",
    };
    assert!(msg.contains(no), "{msg}");
    run_through(&proxy, &script_statements(&script, "bk-pw"))
        .expect("the script for the old server runs there");

    // 3. snapshot as the new backup account through the old server.
    configure(&env, &proxy, "mnbackup");
    let o = run(&env, "bk-pw", &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    proxy.clear();
    let o = run(&env, "bk-pw", &["--json", "snapshot"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let snap = json(&o);
    assert_eq!(snap["complete"], true, "{snap:#}");
    assert_eq!(snap["gaps"].as_array().map_or(0, Vec::len), 0, "{snap:#}");
    let id = snap["id"].as_str().unwrap().to_string();
    let info = env.manifest(&id)["sources"]["mariadb"].clone();
    assert_eq!(info["server"]["version"], old);
    assert_eq!(
        info["consistency"]["method"], "ftwrl",
        "{:#}",
        info["consistency"]
    );
    let sent = proxy.statements();
    assert!(sent.iter().any(|s| s == "FLUSH TABLES WITH READ LOCK"));
    assert!(!sent.iter().any(|s| s.starts_with("BACKUP STAGE")));
    let binlog = &info["binlog"];
    assert!(
        binlog["file"].as_str().unwrap().starts_with("binlog."),
        "{binlog}"
    );
    assert!(binlog["position"].as_u64().unwrap() > 0, "{binlog}");
    let ignored = info["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w.as_str()
                .unwrap()
                .contains("not backed up: the server ignores it")
        })
        .count();
    let fired: Vec<&str> = proxy.hits().iter().map(|h| h.rule).collect::<Vec<_>>();
    let mut fired_set = fired.clone();
    fired_set.sort_unstable();
    fired_set.dedup();
    match p {
        Personality::Mariadb55 => {
            // No GTID on 5.5: the position without it.
            assert!(binlog["gtid_binlog_pos"].is_null(), "{binlog}");
            assert_eq!(
                fired_set,
                [
                    "COLUMNS of mysql.user",
                    "GTID variable",
                    "SHOW CREATE USER",
                    "VERSION()"
                ],
                "{fired:?}"
            );
            // Every account rebuilt from mysql.user (no SHOW CREATE USER answered); those
            // the server ignores (a host name under skip-name-resolve) left out with a warning.
            let n = fired.iter().filter(|r| **r == "SHOW CREATE USER").count();
            assert_eq!(n, info["accounts"].as_array().unwrap().len() + ignored);
            assert!(!sent.iter().any(|s| s.contains("is_role")), "{sent:?}");
        }
        Personality::Mariadb103 => {
            assert!(binlog["gtid_binlog_pos"].is_string(), "{binlog}");
            assert_eq!(
                fired_set,
                ["COLUMNS of mysql.user", "VERSION()"],
                "{fired:?}"
            );
        }
    }
    let accounts = info["accounts"].as_array().unwrap();
    for a in [
        "zstack@localhost",
        "zstack@%",
        "zstack_ui@%",
        "mnbackup@localhost",
    ] {
        assert!(accounts.iter().any(|x| x == a), "{a} not in {accounts:?}");
    }

    // 4. restore into an empty 10.11: the same rows, fingerprints, routines and logins.
    let dst = TestServer::start().unwrap();
    let o = env
        .cmd(&[
            "restore",
            &id,
            "--target-socket",
            dst.socket().to_str().unwrap(),
            "--target-user",
            "root",
            "--target-password-env",
            PW,
        ])
        .env(PW, "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("restore complete"));
    assert_eq!(all_rows(&src, &DBS), all_rows(&dst, &DBS));
    let n = check_fingerprints(&dst, &env.manifest(&id), &[]);
    assert!(n >= 20, "{n} fingerprints");
    assert_eq!(routines(&dst), src_routines);
    rt.block_on(async {
        let tcp = |pw: &str| -> mysql_async::Opts {
            mysql_async::OptsBuilder::default()
                .ip_or_hostname("127.0.0.1")
                .tcp_port(dst.port())
                .user(Some("zstack"))
                .pass(Some(pw))
                .into()
        };
        let mut c = mysql_async::Conn::new(tcp(zstack_db::ZSTACK_PASSWORD))
            .await
            .expect("zstack logs in to the restored server with its password");
        let who: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
        assert!(who.unwrap().starts_with("zstack@"));
        c.disconnect().await.ok();
        assert!(mysql_async::Conn::new(tcp("wrong")).await.is_err());
    });
    // Nothing the proxy answered itself was an error during the snapshot except the rules
    // listed above.
    for h in proxy.hits() {
        if let Answer::Error { code, .. } = h.answer {
            assert!(matches!(code, 1064 | 1193), "{h:?}");
        }
    }
}

#[test]
fn mariadb_55() {
    if skip() {
        return;
    }
    scenario(Personality::Mariadb55);
}

#[test]
fn mariadb_103() {
    if skip() {
        return;
    }
    scenario(Personality::Mariadb103);
}
