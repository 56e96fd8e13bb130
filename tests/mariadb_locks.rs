//! A table held by another connection's `LOCK TABLES … WRITE`: the snapshot fails after
//! `[mariadb] lock_wait_seconds` (no hang) with a message naming the table and the holder's
//! connection id, not a privilege.

mod mariadb_common;

use mariadb_common::*;
use mnbackup::engines::mariadb;
use mnbackup_fixtures::mariadb::TestServer;
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_locked_table_names_table_and_holder() {
    if skip() {
        return;
    }
    let s = TestServer::start().unwrap();
    s.sql(
        "CREATE DATABASE app; CREATE TABLE app.busy (id int PRIMARY KEY) ENGINE=InnoDB; \
         INSERT INTO app.busy VALUES (1); CREATE TABLE app.free (id int PRIMARY KEY) ENGINE=InnoDB;",
    )
    .unwrap();
    let mut holder = mysql_async::Conn::new(s.opts()).await.unwrap();
    let holder_id: u64 = holder
        .query_first("SELECT CONNECTION_ID()")
        .await
        .unwrap()
        .unwrap();
    holder
        .query_drop("LOCK TABLES app.busy WRITE")
        .await
        .unwrap();
    let mut cfg = cfg_socket(&s);
    cfg.lock_wait_seconds = Some(2);
    let t = std::time::Instant::now();
    let e = format!(
        "{:#}",
        mariadb::backup(&cfg, MemSink::new()).await.unwrap_err()
    );
    eprintln!("{e}");
    assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
    assert!(e.contains("app.busy"), "{e}");
    assert!(e.contains(&format!("connection {holder_id} ")), "{e}");
    assert!(!e.contains("RELOAD"), "{e}");
    holder.query_drop("UNLOCK TABLES").await.unwrap();
    // Released: the snapshot goes through.
    mariadb::backup(&cfg, MemSink::new()).await.unwrap();
}
