//! Point-in-time recovery end to end on ZStack's real shape (issue 20, "what it must show"):
//! the ~620-table fixture (`zstack_shape::generate_real`, InnoDB with foreign keys, MyISAM log
//! tables, views, routines, a trigger) at a small scale, its continuous churn
//! (`zstack_churn`: numbered transactions over many tables, InnoDB and MyISAM statements in the
//! same transaction, and every few transactions the core generator's 12-hour step) logging every
//! commit with its time, `mnbackup binlog --follow` with `segment_seconds = 1`, and a full
//! snapshot during the churn. At T1 the churn pauses for every table's `CHECKSUM TABLE`; the
//! source is SIGKILLed at a random T2. `restore --until T1` into an empty server gives every
//! checksum of T1; `restore --until latest` into another holds every transaction committed
//! more than segment_seconds + 5 s before T2 (by the churn's log), and none never committed.

mod restore_common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mnbackup_fixtures::mariadb::{kill_pid, ServerOptions, TestServer};
use mnbackup_fixtures::zstack_churn::{self, ChurnLog, Control, Effect};
use restore_common::common::{next_second, require_mariadb, term};
use restore_common::{tables, text, Env, DBS};

const SCALE: f64 = 0.01;
const SEED: u64 = 2020;
const SEGMENT_SECONDS: i64 = 1;

/// `CHECKSUM TABLE` of every base table of the ZStack databases, by `db.table`.
fn checksums(s: &TestServer) -> BTreeMap<String, String> {
    let all = tables(s, &DBS);
    let list = all
        .iter()
        .map(|t| {
            let (d, n) = t.split_once('.').unwrap();
            format!("`{d}`.`{n}`")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let out = s.sql(&format!("CHECKSUM TABLE {list}")).unwrap();
    let sums: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, c)| (t.to_string(), c.to_string()))
        .collect();
    assert_eq!(sums.len(), all.len(), "a checksum per table: {out}");
    sums
}

/// The number of transactions a restore's report says it replayed.
fn replayed(o: &std::process::Output) -> u64 {
    let out = String::from_utf8_lossy(&o.stdout);
    out.split("binlog replayed: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no replay in the report: {}", text(o)))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `restore --until T1` into an empty server: every table's checksum of T1. The number of
/// transactions replayed.
fn restore_until_t1(e: &Env, t1: chrono::DateTime<Utc>, at_t1: &BTreeMap<String, String>) -> u64 {
    // --until T1 into an empty server: every table's checksum of T1.
    let dst = TestServer::start().unwrap();
    let sock = dst.socket().display().to_string();
    let until = t1.format("%Y-%m-%d %H:%M:%S").to_string();
    let o = e.run(&["restore", "--until", &until, "--target-socket", &sock]);
    assert!(o.status.success(), "{}", text(&o));
    let got = checksums(&dst);
    let differ: Vec<&String> = at_t1
        .iter()
        .filter(|(t, c)| got.get(*t) != Some(c))
        .map(|(t, _)| t)
        .collect();
    assert!(
        differ.is_empty() && got.len() == at_t1.len(),
        "restore --until {until}: {} of {} tables differ from T1: {differ:?}\n{}",
        differ.len(),
        at_t1.len(),
        text(&o)
    );
    let at_t1_replayed = replayed(&o);
    assert!(at_t1_replayed > 0, "{}", text(&o));
    at_t1_replayed
}

/// Every transaction of `log` committed more than segment_seconds + 5 s before `t2` is on
/// `dst` (`o`: its restore), none never committed is; the number checked.
fn assert_nothing_lost(
    dst: &TestServer,
    o: &std::process::Output,
    log: &[zstack_churn::Commit],
    t2: chrono::DateTime<Utc>,
    committed_at_t1: usize,
) -> usize {
    let horizon = t2 - chrono::Duration::seconds(SEGMENT_SECONDS + 5);
    let must: Vec<_> = log.iter().filter(|c| c.at < horizon).cloned().collect();
    assert!(
        must.len() > committed_at_t1,
        "{} transactions before the horizon, {committed_at_t1} at T1",
        must.len()
    );
    let lost = block_on(zstack_churn::missing(dst.opts(), &must)).unwrap();
    assert!(
        lost.is_empty(),
        "lost {} of {} transactions: {lost:?}\n{}",
        lost.len(),
        must.len(),
        text(o)
    );
    let clock = block_on(zstack_churn::core_clock(dst.opts())).unwrap();
    let want_clock = must
        .iter()
        .filter_map(|c| match c.effect {
            Effect::Core { clock } => Some(clock),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(
        clock >= want_clock,
        "the last core step before the horizon (clock {want_clock}) is missing: {clock}"
    );
    let last = log.last().unwrap().seq;
    for k in [last + 2, last + 3] {
        assert!(
            !block_on(zstack_churn::has_marker(dst.opts(), SEED, k)).unwrap(),
            "transaction {k} was never committed but is on the restored server"
        );
    }
    must.len()
}

#[test]
fn zstack_shape_churn_restore_to_t1_and_latest_after_a_crash() {
    if !require_mariadb() {
        return;
    }
    let t0 = Instant::now();
    let mut src = TestServer::start_with(ServerOptions::binlog_capture(1)).unwrap();
    let g = block_on(mnbackup_fixtures::zstack_shape::generate_real(
        src.opts(),
        SCALE,
        SEED,
    ))
    .unwrap();
    let n_tables = tables(&src, &DBS).len();
    eprintln!(
        "generated {} rows in {n_tables} tables at scale {SCALE} in {:.1} s",
        g.rows, g.seconds
    );
    assert!(
        n_tables >= 600,
        "the real shape has ~620 tables: {n_tables}"
    );
    let e = Env::new();
    e.config(
        &src,
        &[],
        &format!("[binlog]\nsegment_seconds = {SEGMENT_SECONDS}\nserver_id = 4251\n"),
    );

    let log: ChurnLog = Arc::default();
    let ctl = Arc::new(Control::default());
    let churner = zstack_churn::spawn(
        src.opts(),
        zstack_churn::Options {
            scale: SCALE,
            seed: SEED,
            core_every: 20,
            pause_between: Duration::from_millis(10),
        },
        ctl.clone(),
        log.clone(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let snap = e.snapshot();
    let follower = e
        .cmd(&["binlog", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!churner.is_finished(), "the churn ended early");

    // T1: the churn pauses for the checksums.
    ctl.pause();
    let t1 = next_second();
    let at_t1 = checksums(&src);
    let committed_at_t1 = log.lock().unwrap().len();
    ctl.resume();
    eprintln!(
        "snapshot {snap}; T1 {t1} after {committed_at_t1} transactions ({:.1} s in)",
        t0.elapsed().as_secs_f64()
    );

    // T2: a random moment 6 to 12 s later, the source dies.
    let wait = 6000 + u64::from(Utc::now().timestamp_subsec_nanos()) % 6000;
    std::thread::sleep(Duration::from_millis(wait));
    assert!(!churner.is_finished(), "the churn ended before T2");
    let t2 = Utc::now();
    kill_pid(src.pid().unwrap());
    src.kill();
    let ended = churner.join().unwrap().unwrap();
    assert!(
        ended.error.is_some(),
        "the churn ends with the server: {ended:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let o = term(follower);
    assert!(o.status.success(), "binlog --follow: {}", text(&o));
    let log = log.lock().unwrap().clone();
    let cores = log
        .iter()
        .filter(|c| matches!(c.effect, Effect::Core { .. }))
        .count();
    eprintln!(
        "T2 {t2} ({wait} ms after T1): {} transactions committed ({cores} core steps), ended by {:?}",
        log.len(),
        ended.error
    );
    assert!(
        log.len() > committed_at_t1 + 50 && cores >= 2,
        "churn too slow: {} transactions, {cores} core steps",
        log.len()
    );

    let o = e.ok(&["--json", "list", "--binlog"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["chains"][0]["segments"].as_u64().unwrap() >= 5, "{v}");

    let at_t1_replayed = restore_until_t1(&e, t1, &at_t1);

    // --until latest into another empty server: nothing committed more than
    // segment_seconds + 5 s before T2 is lost, nothing never committed appears.
    let dst2 = TestServer::start().unwrap();
    let sock2 = dst2.socket().display().to_string();
    let o = e.run(&["restore", "--until", "latest", "--target-socket", &sock2]);
    assert!(o.status.success(), "{}", text(&o));
    let latest_replayed = replayed(&o);
    let after_t1 = checksums(&dst2)
        .iter()
        .filter(|(t, c)| at_t1.get(*t) != Some(c))
        .count();
    eprintln!(
        "replayed {at_t1_replayed} transactions up to T1, {latest_replayed} up to the latest; \
         {after_t1} tables changed after T1"
    );
    assert!(
        latest_replayed > at_t1_replayed && after_t1 >= 10,
        "the latest state must go beyond T1: {latest_replayed} replayed, {after_t1} tables changed"
    );
    let must = assert_nothing_lost(&dst2, &o, &log, t2, committed_at_t1);
    eprintln!(
        "restored: {} transactions before the horizon all present; whole run {:.1} s",
        must,
        t0.elapsed().as_secs_f64()
    );
}
