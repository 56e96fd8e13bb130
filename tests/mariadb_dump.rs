//! The MariaDB dump against throwaway servers: every type round-trips through plain SQL loaded
//! by the `mariadb` client and through the native loader, dumps are deterministic, accounts
//! come back and log in.

mod mariadb_common;

use std::collections::BTreeMap;
use std::sync::Arc;

use mariadb_common::*;
use mnbackup::engines::mariadb;
use mnbackup_fixtures::mariadb::TestServer;
use mysql_async::prelude::*;

const TYPES_SQL: &str = r#"
CREATE DATABASE types CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
USE types;
CREATE TABLE t (
  id int NOT NULL PRIMARY KEY,
  ti tinyint, tiu tinyint unsigned, si smallint, siu smallint unsigned,
  mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint, biu bigint unsigned,
  d decimal(65,30), d2 decimal(10,2) unsigned, f float, f2 float(7,3), db double, db2 double(10,4),
  bt1 bit(1), bt64 bit(64), bt5 bit(5),
  dt date, dtt datetime, dt6 datetime(6), ts3 timestamp(3) NULL DEFAULT NULL, tm time, tm6 time(6), y year,
  c char(10), vc varchar(255), tx text, lt longtext, bn binary(4), vb varbinary(255), bl blob, lb longblob,
  e enum('a','b','c'), st set('x','y','z'), j json, g geometry, p point,
  lat1 varchar(20) CHARACTER SET latin1, bin_vc varchar(20) CHARACTER SET binary,
  gen_v int AS (i + 1) VIRTUAL, gen_s varchar(300) AS (concat(vc, '!')) PERSISTENT,
  inv int INVISIBLE
) ENGINE=InnoDB;
SET time_zone = '+00:00';
SET sql_mode = '';
INSERT INTO t (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d, d2, f, f2, db, db2, bt1, bt64, bt5,
  dt, dtt, dt6, ts3, tm, tm6, y, c, vc, tx, lt, bn, vb, bl, lb, e, st, j, g, p, lat1, bin_vc, inv) VALUES
(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
  -9223372036854775808, 18446744073709551615,
  '-12345678901234567890123456789012345.123456789012345678901234567890', 99999999.99,
  0.123456789, 1234.567, 0.30000000000000004, 123456.7891, b'1', b'1111111111111111111111111111111111111111111111111111111111111111', b'10101',
  '0000-00-00', '0000-00-00 00:00:00', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.999', '-838:59:59', '838:59:59.000000', 1901,
  'char', 'ascii ''quoted'' \\back\\slash "dq"', 'line1\nline2\r\nTab\there\0nul\Zctrlz', 'emoji 😀🎉 𝄞 中文 ñ',
  0x00ff7f80, '', 0x000102030405060708090a0b0c0d0e0f, 0x5c275c22,
  'b', 'x,z', '{"k": "v", "n": [1, 2.5, null], "u": "\\u00e9😀"}',
  ST_GeomFromText('POLYGON((0 0,10 0,10 10,0 10,0 0))', 4326), ST_GeomFromText('POINT(1.5 -2.25)'),
  CONVERT(0x636166e9 USING latin1), 0x00ff, 7),
(2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
  '0.000000000000000000000000000001', 0.00,
  3.4028234e38, -0.001, 1.7976931348623157e308, -0.0001, b'0', b'0', b'0',
  '9999-12-31', '9999-12-31 23:59:59', '1000-01-01 00:00:00.000001', '1970-01-01 00:00:01.000', '-00:00:01.5', '-838:59:59.000000', 2155,
  '', '', '', '', 0x00000000, '', '', '', 'a', '', '[]', NULL, NULL, '', '', 0),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  1.401298e-45, NULL, 5e-324, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1.5, 0, -2.2250738585072014e-308, 0, NULL, NULL, NULL,
  '2000-02-29', '2000-01-01 00:00:00', '2000-01-01 00:00:00.5', '2000-01-01 00:00:00', '00:00:00', '123:45:67.123456', 0,
  'NULL', 'NULL', 'NULL', 'null', NULL, 'NULL', 'NULL', NULL, 'c', 'x,y,z', '"NULL"', NULL, NULL, NULL, NULL, NULL);
-- every byte value, in blobs and text
INSERT INTO t (id, lb, bl, vb, tx)
SELECT 100 + n, UNHEX(REPEAT(LPAD(HEX(n), 2, '0'), 300)), UNHEX(LPAD(HEX(n), 2, '0')),
       CONCAT(UNHEX(LPAD(HEX(n), 2, '0')), 'x'), CONCAT('row ', n, CHAR(n USING latin1))
FROM (SELECT a.x * 16 + b.x AS n FROM
  (SELECT 0 x UNION SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7
   UNION SELECT 8 UNION SELECT 9 UNION SELECT 10 UNION SELECT 11 UNION SELECT 12 UNION SELECT 13 UNION SELECT 14 UNION SELECT 15) a,
  (SELECT 0 x UNION SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4 UNION SELECT 5 UNION SELECT 6 UNION SELECT 7
   UNION SELECT 8 UNION SELECT 9 UNION SELECT 10 UNION SELECT 11 UNION SELECT 12 UNION SELECT 13 UNION SELECT 14 UNION SELECT 15) b) nums;
-- keyless table, MyISAM table, Aria table, composite key, a view chain, routines, trigger, event
CREATE TABLE nokey (a int, b varchar(10)) ENGINE=InnoDB;
INSERT INTO nokey VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, 'y');
CREATE TABLE my (id int AUTO_INCREMENT PRIMARY KEY, v varchar(20)) ENGINE=MyISAM;
INSERT INTO my (v) VALUES ('m1'), ('m2'), ('m3');
CREATE TABLE ar (id int PRIMARY KEY, v text) ENGINE=Aria;
INSERT INTO ar VALUES (1, 'aria'), (2, NULL);
CREATE TABLE comp (a varchar(5), b int, c double, PRIMARY KEY (a, b)) ENGINE=InnoDB;
INSERT INTO comp VALUES ('k', 2, 0.1), ('k', 1, 0.2), ('A', 9, 1e100);
CREATE TABLE `we.ird/na``me` (`col ``x` int PRIMARY KEY) ENGINE=InnoDB;
INSERT INTO `we.ird/na``me` VALUES (1), (2);
CREATE VIEW v2 AS SELECT id, vc FROM v1 WHERE id < 100;
"#;

const TYPES_SQL2: &str = r#"
USE types;
CREATE OR REPLACE VIEW v1 AS SELECT id, vc, i FROM t;
CREATE OR REPLACE VIEW v2 AS SELECT id, vc FROM v1 WHERE id < 100;
CREATE VIEW v0 AS SELECT COUNT(*) AS n FROM v2;
DELIMITER ;;
CREATE FUNCTION f_add(a INT, b INT) RETURNS INT DETERMINISTIC
BEGIN
  DECLARE s INT;
  SET s = a + b;
  RETURN s;
END;;
CREATE PROCEDURE p_count(OUT n INT)
BEGIN
  SELECT COUNT(*) INTO n FROM t;
  SELECT n;
END;;
CREATE TRIGGER trg_my BEFORE INSERT ON my FOR EACH ROW
BEGIN
  SET NEW.v = CONCAT(NEW.v, ';');
END;;
CREATE EVENT ev_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO
BEGIN
  DELETE FROM nokey WHERE a IS NULL;
END;;
DELIMITER ;
CREATE VIEW v_fn AS SELECT f_add(id, 1) AS x FROM t WHERE id < 3;
"#;

fn setup_types(src: &TestServer) {
    // v2 refers to v1 which does not exist yet: create v1 first in a separate step.
    let (first, _) = TYPES_SQL.split_once("CREATE VIEW v2").unwrap();
    src.load(first.as_bytes()).expect("types schema");
    src.load(TYPES_SQL2.as_bytes()).expect("types objects");
}

const T_COLS: &str = "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d, d2, f, f2, db, db2, bt1, bt64, bt5, \
  dt, dtt, dt6, ts3, tm, tm6, y, c, vc, tx, lt, bn, vb, bl, lb, e, st, j, g, p, lat1, bin_vc, gen_v, gen_s, inv";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_the_mariadb_client() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    let dst = TestServer::start().unwrap();
    setup_types(&src);
    let sink = MemSink::new();
    let summary = mariadb::backup(&cfg_socket(&src), sink.clone())
        .await
        .unwrap();
    eprintln!("summary: {summary:?}");
    let items = sink.items();
    let info = sink.info();
    eprintln!("items: {:#?}", items.keys().collect::<Vec<_>>());
    load_all(&dst, &items);

    // Row by row, text and binary protocol, every column including generated and invisible ones.
    for sql in [
        format!("SELECT {T_COLS} FROM types.t ORDER BY id"),
        "SELECT * FROM types.nokey ORDER BY a, b".to_string(),
        "SELECT * FROM types.my ORDER BY id".to_string(),
        "SELECT * FROM types.ar ORDER BY id".to_string(),
        "SELECT * FROM types.comp ORDER BY a, b".to_string(),
        "SELECT * FROM types.`we.ird/na``me`".to_string(),
        "SELECT * FROM types.v2 ORDER BY id".to_string(),
        "SELECT * FROM types.v0".to_string(),
        "SELECT * FROM types.v_fn ORDER BY x".to_string(),
        "SELECT ST_AsText(g), ST_SRID(g), ST_AsText(p) FROM types.t ORDER BY id".to_string(),
        "SELECT f, f2, db, CAST(f AS CHAR) FROM types.t ORDER BY id".to_string(),
    ] {
        let a = rows_text(src.opts(), &sql).await;
        let b = rows_text(dst.opts(), &sql).await;
        assert!(!a.is_empty(), "{sql}");
        assert_eq!(a, b, "text protocol differs for {sql}");
        let a = rows_binary(src.opts(), &sql).await;
        let b = rows_binary(dst.opts(), &sql).await;
        assert_eq!(a, b, "binary protocol differs for {sql}");
    }
    // Fingerprints recorded at dump time match the loaded copy.
    let n = check_fingerprints(&info, &dst).await;
    assert_eq!(n, 6);
    assert_eq!(info["fingerprints"]["types.t"]["rows"], 260);
    // Routines, trigger, event came back.
    let out = dst
        .sql("SELECT types.f_add(2, 3); CALL types.p_count(@n); SELECT @n;")
        .unwrap();
    assert!(out.starts_with("5\n"), "{out}");
    dst.sql("INSERT INTO types.my (v) VALUES ('t')").unwrap();
    assert_eq!(
        dst.sql("SELECT v FROM types.my WHERE v LIKE 't%'").unwrap(),
        "t;\n"
    );
    assert_eq!(
        dst.sql(
            "SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA='types'"
        )
        .unwrap(),
        "ev_cleanup\tDISABLED\n"
    );
    // AUTO_INCREMENT counter kept in the source info, not in the schema item.
    assert_eq!(info["auto_increment"]["types.my"], 4);
    let schema = String::from_utf8(items["mariadb/1-schema/types.sql"].clone()).unwrap();
    assert!(!schema.contains("AUTO_INCREMENT=4"), "{schema}");
    // Generated columns are not dumped as data.
    let data = String::from_utf8_lossy(&items["mariadb/2-data/types/t.sql"]).into_owned();
    assert!(!data.contains("gen_v") && data.contains("`inv`"));
    // Every item splits into statements the native way and executes on a third server.
    let third = TestServer::start().unwrap();
    let mut c = mysql_async::Conn::new(third.opts()).await.unwrap();
    for (name, data) in &items {
        for stmt in
            mariadb::sqlfmt::split_statements(std::str::from_utf8(data).unwrap_or_else(|_| {
                // binary-safe items: every item we write is UTF-8 except blobs, which are hex
                panic!("item {name} is not UTF-8")
            }))
        {
            c.query_drop(&stmt)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}: {}", &stmt[..stmt.len().min(300)]));
        }
    }
    drop(c);
    check_fingerprints(&info, &third).await;
    // The source info has the documented shape, and the typed source info reads it and writes
    // it back unchanged (format v1).
    let typed = mnbackup::model::mariadb_info::MariadbInfo::from_value(&info).unwrap();
    assert_eq!(typed.to_value(), info);
    assert!(typed.other.is_empty(), "{:?}", typed.other.keys());
    assert_eq!(info["consistency"]["method"], "backup_stage");
    assert_eq!(
        info["consistency"]["nontransactional_tables"],
        serde_json::json!(["types.ar", "types.my"])
    );
    let plan: Vec<&str> = info["load_plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["item"].as_str().unwrap())
        .collect();
    let mut sorted = plan.clone();
    sorted.sort();
    assert_eq!(plan, sorted);
    assert_eq!(plan.len(), items.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dumps_of_an_unchanged_database_are_identical() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    setup_types(&src);
    // a table big enough to be split into buckets, with gaps and a negative key
    src.sql(
        "SET SESSION max_recursive_iterations = 100000; \
         CREATE TABLE types.big (id bigint PRIMARY KEY, v varchar(40)) ENGINE=InnoDB; \
         INSERT INTO types.big WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 3000) \
           SELECT n * 3 - 50, CONCAT('value ', n) FROM s; \
         CREATE TABLE types.uu (uuid varchar(32) PRIMARY KEY, v int) ENGINE=InnoDB; \
         INSERT INTO types.uu WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 2000) \
           SELECT MD5(n), n FROM s;",
    )
    .unwrap();
    let mut cfg = cfg_socket(&src);
    cfg.split_rows = Some(500);
    cfg.rows_per_insert = Some(100);
    let s1 = MemSink::new();
    mariadb::backup(&cfg, s1.clone()).await.unwrap();
    cfg.workers = Some(1);
    let s2 = MemSink::new();
    mariadb::backup(&cfg, s2.clone()).await.unwrap();
    let (a, b) = (s1.items(), s2.items());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert!(v == &b[k], "item {k} differs between two dumps");
    }
    let big: Vec<_> = a.keys().filter(|k| k.contains("/types/big.")).collect();
    assert!(big.len() >= 18, "{big:?}");
    assert!(
        a.contains_key("mariadb/2-data/types/big.n000001.sql"),
        "{big:?}"
    );
    let uu: Vec<_> = a.keys().filter(|k| k.contains("/types/uu.")).collect();
    assert_eq!(
        uu.len(),
        16,
        "2000 rows, 500 per item: one hex digit (at most 16 x 500 rows)"
    );
    assert_eq!(s1.info()["fingerprints"], s2.info()["fingerprints"]);
    // An update in one bucket changes only that item.
    src.sql("UPDATE types.big SET v = 'changed' WHERE id = 1000")
        .unwrap();
    let s3 = MemSink::new();
    mariadb::backup(&cfg, s3.clone()).await.unwrap();
    let c = s3.items();
    let changed: Vec<_> = a
        .iter()
        .filter(|(k, v)| c.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        changed,
        vec!["mariadb/2-data/types/big.000002.sql".to_string()]
    );
    // Loading the split dump gives the same rows.
    let dst = TestServer::start().unwrap();
    load_all(&dst, &c);
    check_fingerprints(&s3.info(), &dst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_grants_come_back_and_log_in() {
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    let dst = TestServer::start().unwrap();
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id int PRIMARY KEY, v text); INSERT INTO app.t VALUES (1, 'hello'); \
         CREATE TABLE app.secret (id int PRIMARY KEY); \
         CREATE USER 'app'@'%' IDENTIFIED BY 'app pass 1'; GRANT SELECT, INSERT ON app.* TO 'app'@'%'; \
         CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'r3ader'; GRANT SELECT ON app.t TO 'reader'@'127.0.0.1'; \
         CREATE ROLE auditor; GRANT SELECT ON app.* TO auditor; GRANT auditor TO 'reader'@'127.0.0.1'; \
         CREATE USER 'nopw'@'localhost';",
    )
    .unwrap();
    let sink = MemSink::new();
    mariadb::backup(&cfg_socket(&src), sink.clone())
        .await
        .unwrap();
    let items = sink.items();
    let acc = String::from_utf8(items["mariadb/0-accounts.sql"].clone()).unwrap();
    // Every account but the server's internal ones: root too (ZStack's deploydb.sh creates
    // root accounts a rebuilt node needs).
    assert!(
        acc.contains("`root`@`localhost`") && !acc.contains("mariadb.sys"),
        "{acc}"
    );
    load_all(&dst, &items);
    // The users log in on the new server with their old passwords.
    let mut c = mysql_async::Conn::new(dst.opts_as("app", Some("app pass 1")))
        .await
        .unwrap();
    let v: Option<String> = c
        .query_first("SELECT v FROM app.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("hello"));
    c.query_drop("INSERT INTO app.t VALUES (2, 'x')")
        .await
        .unwrap();
    assert!(
        c.query_drop("DELETE FROM app.t").await.is_err(),
        "grants must not widen"
    );
    let mut r = mysql_async::Conn::new(dst.opts_as("reader", Some("r3ader")))
        .await
        .unwrap();
    assert!(r.query_drop("SELECT * FROM app.t").await.is_ok());
    assert!(r.query_drop("SELECT * FROM app.secret").await.is_err());
    assert!(mysql_async::Conn::new(dst.opts_as("app", Some("wrong")))
        .await
        .is_err());
    for u in [
        "'app'@'%'",
        "'reader'@'127.0.0.1'",
        "auditor",
        "'nopw'@'localhost'",
    ] {
        assert_eq!(
            src.sql(&format!("SHOW GRANTS FOR {u}")).unwrap(),
            dst.sql(&format!("SHOW GRANTS FOR {u}")).unwrap(),
            "grants of {u}"
        );
    }
    let accounts = sink.info()["accounts"].clone();
    assert_eq!(
        accounts,
        serde_json::json!([
            "app@%",
            "auditor@",
            "nopw@localhost",
            "reader@127.0.0.1",
            // mariadb-install-db's root accounts (root@<hostname> is ignored by the server
            // under skip-name-resolve, so it is noted, not dumped)
            "root@127.0.0.1",
            "root@::1",
            "root@localhost"
        ])
    );
}

/// The snapshot's items, by name (the loader's input).
struct MapItems(BTreeMap<String, Vec<u8>>);

impl mnbackup::model::ItemsByName for MapItems {
    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no item {name}"))
    }
}

/// `SHOW GLOBAL STATUS` counter of `dst`.
fn status(dst: &TestServer, name: &str) -> u64 {
    let out = dst
        .sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The native loader's data step (LOAD DATA LOCAL INFILE, and its INSERT fallback on a server
/// with `local_infile` off) restores every type byte for byte: NULLs, every byte value in
/// blobs and text, escapes, latin1 and binary character sets, BIT, spatial, JSON, generated and
/// invisible columns, keyless tables with duplicate rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_the_native_loader() {
    use mnbackup::engines::mariadb::load::{LoadOptions, Loader, Target};
    use mnbackup::engines::mariadb::plan::MariadbSource;
    use mnbackup_fixtures::mariadb::ServerOptions;
    if skip() {
        return;
    }
    let src = TestServer::start().unwrap();
    setup_types(&src);
    let sink = MemSink::new();
    mariadb::backup(&cfg_socket(&src), sink.clone())
        .await
        .unwrap();
    let items = sink.items();
    let info = sink.info();
    let sizes = items
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect();
    let source = Arc::new(MariadbSource::from_info(&info, &sizes).unwrap());
    let items = Arc::new(MapItems(items));
    for infile in [true, false] {
        let dst = TestServer::start_with(ServerOptions {
            extra_args: vec![format!("--local-infile={}", u8::from(infile))],
            ..Default::default()
        })
        .unwrap();
        let (loads, inserts) = (status(&dst, "Com_load"), status(&dst, "Com_insert"));
        let loader = Loader {
            target: Target {
                opts: dst.opts(),
                address: "test".into(),
                user: "root".into(),
            },
            src: source.clone(),
            items: items.clone(),
            opts: LoadOptions {
                with_accounts: false,
                workers: 3,
                ..Default::default()
            },
            journal: None,
            checked: Default::default(),
        };
        let steps = loader.run().await.unwrap();
        let data = steps.iter().find(|s| s.step == "mariadb data").unwrap();
        assert_eq!(data.rows, 260 + 4 + 3 + 2 + 3 + 2, "{steps:?}");
        // The path taken: one LOAD DATA per data item, or their INSERTs.
        let (loads, inserts) = (
            status(&dst, "Com_load") - loads,
            status(&dst, "Com_insert") - inserts,
        );
        if infile {
            assert_eq!((loads, inserts), (data.items as u64, 0));
        } else {
            assert_eq!(loads, 0);
            assert!(inserts >= data.items as u64);
        }
        for sql in [
            format!("SELECT {T_COLS} FROM types.t ORDER BY id"),
            "SELECT * FROM types.nokey ORDER BY a, b".to_string(),
            "SELECT * FROM types.my ORDER BY id".to_string(),
            "SELECT * FROM types.ar ORDER BY id".to_string(),
            "SELECT * FROM types.comp ORDER BY a, b".to_string(),
            "SELECT * FROM types.`we.ird/na``me`".to_string(),
            "SELECT ST_AsText(g), ST_SRID(g), ST_AsText(p), HEX(bt64), HEX(lat1) FROM types.t ORDER BY id"
                .to_string(),
        ] {
            let a = rows_text(src.opts(), &sql).await;
            assert!(!a.is_empty(), "{sql}");
            assert_eq!(a, rows_text(dst.opts(), &sql).await, "{infile}: {sql}");
            assert_eq!(
                rows_binary(src.opts(), &sql).await,
                rows_binary(dst.opts(), &sql).await,
                "{infile}: {sql}"
            );
        }
        assert_eq!(check_fingerprints(&info, &dst).await, 6);
    }
}
