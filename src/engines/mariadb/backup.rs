//! The MariaDB backup: one consistent point per set of credentials, its databases dumped in
//! parallel into items, and the source info recorded under `mariadb` (see the module docs of
//! [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::config::{ConnParams, MariadbConfig};
use super::consistency::{BlockMethod, ServerVersion};
use super::dump::{put_item, units_for, Shared, Unit};
use super::errors::explain;
use super::names::ItemName;
use super::schema::Table;
use super::sqlfmt::ident;
use super::{
    connect, consistency, dump, errors, fingerprint, lock_holders, privileges, schema, users,
};
use crate::model::mariadb_info::{
    ConsistencyInfo, DatabaseRef, ItemKind, LoadPlanEntry, MariadbInfo, MariadbSummary, PointInfo,
    ServerInfo,
};
use crate::model::Gap;
use crate::model::ItemSink;

/// The result of one consistent point (the main credentials, or the UI's).
struct GroupResult {
    info: PointInfo,
    databases: Vec<schema::Database>,
    /// (item name, kind, db, table, rows)
    plan: Vec<LoadPlanEntry>,
    fingerprints: BTreeMap<String, fingerprint::Fingerprint>,
    auto_increment: BTreeMap<String, u64>,
    /// `db.table` → bytes of its largest INSERT statement.
    max_statement: BTreeMap<String, u64>,
    accounts: Vec<String>,
    skipped: Vec<String>,
    warnings: Vec<String>,
    /// What this group could not capture (before `[mariadb] require` is applied).
    gaps: Vec<Gap>,
    tables: usize,
    rows: u64,
    bytes: u64,
    block_ms: u64,
}

fn plan_entry(item: String, kind: ItemKind, db: Option<&str>) -> LoadPlanEntry {
    LoadPlanEntry {
        item,
        kind,
        db: db.map(str::to_string),
        table: None,
        rows: None,
    }
}

/// Back up the MariaDB server described by `cfg` into `sink` (see the module docs), then record
/// the source info under `mariadb`. On error nothing is recorded and the caller abandons the
/// snapshot.
pub async fn backup(cfg: &MariadbConfig, sink: Arc<dyn ItemSink>) -> Result<MariadbSummary> {
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    let params = cfg.resolve()?;
    let opts = params.opts()?;
    let mut main = match run_group(cfg, &params, None, sink.clone(), true).await {
        Ok(g) => g,
        Err(e) if errors::server_code(&e) == Some(1205) => {
            let who = lock_holders(&opts, &params).await;
            return Err(e.context(format!(
                "the snapshot waited [mariadb] lock_wait_seconds ({} s) for a lock that another \
                 connection holds{who}",
                params.lock_wait_seconds
            )));
        }
        Err(e) => return Err(e),
    };
    let mut extra = Vec::new();
    if let Some((ui_params, ui_dbs)) = cfg.resolve_ui()? {
        let dumped: Vec<&str> = main.databases.iter().map(|d| d.name.as_str()).collect();
        let explicit_ok = |d: &String| cfg.databases.as_ref().is_none_or(|l| l.contains(d));
        let missing: Vec<String> = ui_dbs
            .into_iter()
            .filter(|d| !dumped.contains(&d.as_str()) && explicit_ok(d))
            .collect();
        if !missing.is_empty() {
            let g = run_group(cfg, &ui_params, Some(&missing), sink.clone(), false)
                .await
                .context("backing up the UI database with the zstack_ui_properties credentials")?;
            extra.push(g);
        }
    }
    for g in &extra {
        main.plan.extend(g.plan.iter().cloned());
        main.fingerprints.extend(g.fingerprints.clone());
        main.auto_increment.extend(g.auto_increment.clone());
        main.max_statement.extend(g.max_statement.clone());
        main.databases.extend(g.databases.iter().cloned());
        main.skipped.extend(g.skipped.iter().cloned());
        main.warnings.extend(g.warnings.iter().cloned());
        main.gaps.extend(g.gaps.iter().cloned());
    }
    // What could not be captured: a gap, unless the operator said it is not required.
    let mut gaps = Vec::new();
    for g in std::mem::take(&mut main.gaps) {
        if cfg.requires(&g.kind) {
            gaps.push(g);
        } else {
            main.warnings.push(format!(
                "not required by [mariadb] require, so not a gap: {}",
                g.describe()
            ));
        }
    }
    main.plan.sort_by(|a, b| a.item.cmp(&b.item));
    let finished = chrono::Utc::now();
    let duration_ms = t0.elapsed().as_millis() as u64;
    let summary = MariadbSummary {
        databases: main.databases.len(),
        tables: main.tables + extra.iter().map(|g| g.tables).sum::<usize>(),
        rows: main.rows + extra.iter().map(|g| g.rows).sum::<u64>(),
        items: main.plan.len(),
        bytes: main.bytes + extra.iter().map(|g| g.bytes).sum::<u64>(),
        block_ms: main.block_ms,
        duration_ms,
    };
    let mut point = main.info.clone();
    point.databases = main
        .databases
        .iter()
        .cloned()
        .map(DatabaseRef::Full)
        .collect();
    let info = MariadbInfo {
        format: 1,
        point,
        started,
        finished,
        duration_ms,
        load_plan: Some(main.plan),
        fingerprints: main.fingerprints,
        auto_increment: main.auto_increment,
        max_statement: main.max_statement,
        accounts: main.accounts,
        skipped: main.skipped,
        warnings: main.warnings,
        summary: summary.clone(),
        extra_points: extra.into_iter().map(|g| g.info).collect(),
        other: BTreeMap::new(),
    };
    sink.set_source_info("mariadb", info.to_value());
    for g in gaps {
        sink.gap(g);
    }
    Ok(summary)
}

async fn run_group(
    cfg: &MariadbConfig,
    params: &ConnParams,
    only: Option<&[String]>,
    sink: Arc<dyn ItemSink>,
    with_accounts: bool,
) -> Result<GroupResult> {
    let addr = params.address();
    let opts = params.opts()?;
    let mut ctl = connect(&opts, params, "connecting").await?;
    let version: String = ctl
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| explain(e, &addr, "reading the server version"))?
        .unwrap_or_default();
    let version = ServerVersion::parse(&version);
    let method = version.block_method();
    let me: String = ctl
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(|e| explain(e, &addr, "reading CURRENT_USER()"))?
        .unwrap_or_default();
    let acct = privileges::account_of(&me);
    let mut gaps: Vec<Gap> = Vec::new();

    let mut cat = schema::discover(&mut ctl, cfg, only, &addr).await?;
    let split_rows = cfg.split_rows();
    schema::plan_splits(&mut ctl, &mut cat.tables, split_rows, &addr).await?;
    let mut skipped = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for (db, o) in &cat.objects {
        for s in &o.sequences {
            skipped.push(format!("sequence {db}.{s}: sequences are not dumped"));
        }
    }
    let tables: Vec<Arc<Table>> = cat.tables.iter().cloned().map(Arc::new).collect();
    let nontx: Vec<Arc<Table>> = tables
        .iter()
        .filter(|t| !t.transactional)
        .cloned()
        .collect();

    // Work queues: the non-transactional tables (read while their writes are blocked), then
    // the InnoDB tables, biggest first.
    let workers_want = cfg.workers();
    let (nontx_queue, tx_queue) = work_queues(&tables, &nontx, workers_want);
    let workers_n = workers_want
        .min(tx_queue.len().max(nontx_queue.len()))
        .max(1);

    // Connections.
    let server = Server {
        opts: &opts,
        params,
        addr: &addr,
    };
    let workers = open_workers(&server, workers_n).await?;
    let shared = shared_state(cfg, &sink, &tables, nontx_queue, &addr);

    // The consistent point (see `consistency`).
    let t_nontx = Instant::now();
    let tb = Instant::now();
    let method =
        block_or_fall_back(&mut ctl, method, &addr, &acct, &mut gaps, &mut warnings).await?;
    let point = consistent_point(&mut ctl, &server, method, workers, &shared, &nontx, tb).await?;
    let (workers, binlog, block_ms) = (point.workers, point.binlog, point.block_ms);
    let nontx_lock_ms = if nontx.is_empty() {
        0
    } else {
        t_nontx.elapsed().as_millis() as u64
    };

    // InnoDB data in the snapshots; meanwhile the control connection writes the DDL and
    // account items.
    *shared.queue.lock().expect("queue lock") = tx_queue;
    let phase = run_phase(workers, &shared);
    let ddl = ddl_items(
        &mut ctl,
        DdlJob {
            cat: &cat,
            tables: &tables,
            sink: &sink,
            with_accounts,
            addr: &addr,
            acct: &acct,
        },
        &mut gaps,
        &mut warnings,
    );
    let (phase_res, ddl_res) = tokio::join!(phase, ddl);
    phase_res?;
    let (mut plan, accounts) = ddl_res?;
    let db_names: Vec<String> = cat.databases.iter().map(|d| d.name.clone()).collect();
    let auto_increment = schema::auto_increments(&mut ctl, &db_names, &addr).await?;
    drop(ctl);

    let shared = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("internal error: workers still hold the queue"))?;
    for (item, table, rows) in shared.items.into_inner().expect("items") {
        let (db, t) = table.split_once('.').unwrap_or((&table, ""));
        plan.push(LoadPlanEntry {
            item,
            kind: ItemKind::Data,
            db: Some(db.to_string()),
            table: Some(t.to_string()),
            rows: Some(rows),
        });
    }
    let fingerprints: BTreeMap<_, _> = shared
        .fingerprints
        .into_inner()
        .expect("fingerprints")
        .into_iter()
        .map(|(k, v)| (k, v.finish()))
        .collect();
    let max_statement = shared.max_statement.into_inner().expect("max statement");
    let info = PointInfo {
        server: ServerInfo {
            address: addr.clone(),
            version: version.version.clone(),
            user: params.user().to_string(),
        },
        consistency: ConsistencyInfo {
            method,
            block_ms,
            nontransactional_lock_ms: nontx_lock_ms,
            nontransactional_tables: nontx.iter().map(|t| t.full_name()).collect(),
        },
        binlog,
        databases: cat
            .databases
            .iter()
            .cloned()
            .map(DatabaseRef::Full)
            .collect(),
    };
    Ok(GroupResult {
        info,
        databases: cat.databases.clone(),
        plan,
        fingerprints,
        auto_increment,
        max_statement,
        accounts,
        skipped,
        warnings,
        gaps,
        tables: tables.len(),
        rows: shared.rows.load(Ordering::Relaxed),
        bytes: shared.bytes.load(Ordering::Relaxed),
        block_ms,
    })
}

/// The work queues: the non-transactional tables' units, then the InnoDB tables', biggest
/// first.
fn work_queues(
    tables: &[Arc<Table>],
    nontx: &[Arc<Table>],
    workers_want: usize,
) -> (VecDeque<Unit>, VecDeque<Unit>) {
    let mut nontx_queue = VecDeque::new();
    for t in nontx {
        nontx_queue.extend(units_for(t.clone(), workers_want));
    }
    let mut tx: Vec<&Arc<Table>> = tables.iter().filter(|t| t.transactional).collect();
    tx.sort_by(|a, b| {
        b.estimated_rows
            .cmp(&a.estimated_rows)
            .then(a.full_name().cmp(&b.full_name()))
    });
    let mut tx_queue = VecDeque::new();
    for t in tx {
        tx_queue.extend(units_for(t.clone(), workers_want));
    }
    (nontx_queue, tx_queue)
}

/// The state the workers share: the queue (first the non-transactional units), the sink, and
/// what they count and fingerprint per table.
fn shared_state(
    cfg: &MariadbConfig,
    sink: &Arc<dyn ItemSink>,
    tables: &[Arc<Table>],
    queue: VecDeque<Unit>,
    addr: &str,
) -> Arc<Shared> {
    Arc::new(Shared {
        queue: Mutex::new(queue),
        sink: sink.clone(),
        rows_per_insert: cfg.rows_per_insert(),
        max_item_bytes: cfg.max_item_bytes(),
        addr: addr.to_string(),
        fingerprints: Mutex::new(
            tables
                .iter()
                .map(|t| (t.full_name(), Default::default()))
                .collect(),
        ),
        items: Mutex::new(Vec::new()),
        bytes: AtomicU64::new(0),
        rows: AtomicU64::new(0),
        max_statement: Mutex::new(BTreeMap::new()),
    })
}

/// The server a group connects to: its options, credentials and address (for messages).
struct Server<'a> {
    opts: &'a mysql_async::Opts,
    params: &'a ConnParams,
    addr: &'a str,
}

/// `n` worker connections, each in REPEATABLE READ.
async fn open_workers(server: &Server<'_>, n: usize) -> Result<Vec<Conn>> {
    let (opts, params, addr) = (server.opts, server.params, server.addr);
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connect(opts, params, "opening a worker connection").await?;
        c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| explain(e, addr, "setting REPEATABLE READ"))?;
        workers.push(c);
    }
    Ok(workers)
}

/// Starts blocking by `method` (BACKUP STAGE freezes the non-transactional tables; FTWRL blocks
/// commits). Without RELOAD neither is allowed: that is a gap, and the method falls back to a
/// single snapshot, which is returned.
async fn block_or_fall_back(
    ctl: &mut Conn,
    method: BlockMethod,
    addr: &str,
    acct: &str,
    gaps: &mut Vec<Gap>,
    warnings: &mut Vec<String>,
) -> Result<BlockMethod> {
    let mut method = method;
    // Without RELOAD neither BACKUP STAGE nor FLUSH TABLES WITH READ LOCK is allowed.
    let no_reload = match method {
        BlockMethod::BackupStage => consistency::freeze_nontransactional(ctl, addr).await.err(),
        BlockMethod::Ftwrl => consistency::block(ctl, method, addr).await.err(),
        BlockMethod::SingleSnapshot => None,
    };
    if let Some(e) = no_reload {
        if !errors::is_privilege_error(&e) {
            return Err(e);
        }
        warnings.push(format!(
            "no RELOAD privilege: commits were not blocked; one connection dumped the \
             InnoDB tables from a single snapshot ({e:#})"
        ));
        gaps.push(
            Gap::new(
                "mariadb",
                "consistency",
                format!(
                    "{acct} may not block commits ({}), so MyISAM and InnoDB tables were not \
                     captured at one common point and DDL was not held off ({e:#})",
                    if method == BlockMethod::BackupStage {
                        "BACKUP STAGE"
                    } else {
                        "FLUSH TABLES WITH READ LOCK"
                    }
                ),
            )
            .fix(privileges::fix_reload(acct)),
        );
        method = BlockMethod::SingleSnapshot;
    }
    Ok(method)
}

/// What [`consistent_point`] leaves: the worker connections in their snapshots, the binlog
/// position of the point, and how long commits were blocked.
struct Point {
    workers: Vec<Conn>,
    binlog: Option<consistency::BinlogPosition>,
    block_ms: u64,
}

/// The consistent point's phases after `block_or_fall_back`: the non-transactional tables read
/// while they are blocked (or read-locked), the workers' consistent snapshots opened, the binlog
/// position read, and the block released (`tb`: when blocking started, for `block_ms`).
async fn consistent_point(
    ctl: &mut Conn,
    server: &Server<'_>,
    method: BlockMethod,
    mut workers: Vec<Conn>,
    shared: &Arc<Shared>,
    nontx: &[Arc<Table>],
    mut tb: Instant,
) -> Result<Point> {
    let (opts, params, addr) = (server.opts, server.params, server.addr);
    let mut locker: Option<Conn> = None;
    match method {
        BlockMethod::BackupStage => {
            // Non-transactional tables are frozen (BLOCK_DDL) while InnoDB commits go on.
            workers = run_phase(workers, shared).await?;
            tb = Instant::now();
            consistency::block(ctl, method, addr).await?;
        }
        BlockMethod::Ftwrl => {
            // Commits are blocked (above).
            workers = run_phase(workers, shared).await?;
        }
        BlockMethod::SingleSnapshot => {
            workers.truncate(1);
            if !nontx.is_empty() {
                let mut l = connect(opts, params, "opening the lock connection").await?;
                let list = nontx
                    .iter()
                    .map(|t| format!("{}.{} READ", ident(&t.db), ident(&t.name)))
                    .collect::<Vec<_>>()
                    .join(", ");
                l.query_drop(format!("LOCK TABLES {list}"))
                    .await
                    .map_err(|e| {
                        explain(
                            e,
                            addr,
                            "read-locking the non-transactional tables (LOCK TABLES)",
                        )
                    })?;
                locker = Some(l);
            }
        }
    }
    let mut snap_err = None;
    for w in workers.iter_mut() {
        if let Err(e) = w
            .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
        {
            snap_err = Some(explain(e, addr, "opening the consistent snapshot"));
            break;
        }
    }
    let binlog = match (&snap_err, method) {
        (Some(_), _) => None,
        (None, BlockMethod::SingleSnapshot) => {
            consistency::snapshot_binlog_position(&mut workers[0]).await
        }
        (None, _) => consistency::binlog_position(ctl).await,
    };
    let rel = consistency::release(ctl, method, addr).await;
    let block_ms = match method {
        BlockMethod::SingleSnapshot => 0,
        _ => tb.elapsed().as_millis() as u64,
    };
    if let Some(e) = snap_err {
        return Err(e);
    }
    rel?;
    if let Some(mut l) = locker.take() {
        workers = run_phase(workers, shared).await?;
        l.query_drop("UNLOCK TABLES")
            .await
            .map_err(|e| explain(e, addr, "releasing the non-transactional table locks"))?;
    }
    Ok(Point {
        workers,
        binlog,
        block_ms,
    })
}

/// Run one worker per connection until the shared queue is empty; returns the connections.
/// On the first error the other workers are stopped.
async fn run_phase(conns: Vec<Conn>, shared: &Arc<Shared>) -> Result<Vec<Conn>> {
    let mut set = tokio::task::JoinSet::new();
    for c in conns {
        let s = shared.clone();
        set.spawn(dump::worker(c, s));
    }
    let mut out = Vec::new();
    let mut err: Option<anyhow::Error> = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(c)) => out.push(c),
            Ok(Err(e)) => {
                if err.is_none() {
                    err = Some(e);
                }
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                if err.is_none() {
                    err = Some(anyhow::anyhow!("a dump task panicked: {e}"));
                }
                set.abort_all();
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// What [`ddl_items`] writes: the catalog and its tables, into `sink`, with the accounts or
/// not; `addr` and `acct` (the account backing up) name the server and the account in messages.
struct DdlJob<'a> {
    cat: &'a schema::Catalog,
    tables: &'a [Arc<Table>],
    sink: &'a Arc<dyn ItemSink>,
    with_accounts: bool,
    addr: &'a str,
    acct: &'a str,
}

/// Write the schema, routines, views, triggers, events, accounts and grants items; what the
/// account `acct` may not read is pushed to `gaps` with the statement that fixes it.
async fn ddl_items(
    ctl: &mut Conn,
    job: DdlJob<'_>,
    gaps: &mut Vec<Gap>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<LoadPlanEntry>, Vec<String>)> {
    let DdlJob {
        cat,
        tables,
        sink,
        with_accounts,
        addr,
        acct,
    } = job;
    let mut plan = Vec::new();
    let mut accounts = Vec::new();
    let acc = if with_accounts {
        match users::dump_accounts(ctl, addr).await {
            Ok(a) => Some(a),
            Err(e) if errors::is_privilege_error(&e) => {
                for kind in ["accounts", "grants"] {
                    gaps.push(
                        Gap::new(
                            "mariadb",
                            kind,
                            format!(
                                "{acct} may not read mysql.user, so no account (and no password \
                                 hash) {} was backed up; a rebuilt server would refuse ZStack's \
                                 logins ({e:#})",
                                if kind == "grants" {
                                    "nor any grant"
                                } else {
                                    ""
                                }
                            ),
                        )
                        .fix(privileges::fix_accounts(acct)),
                    );
                }
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    if let Some(a) = acc {
        warnings.extend(a.ignored.iter().cloned());
        put_item(sink, ItemName::Accounts.encode(), a.accounts_sql).await?;
        put_item(sink, ItemName::Grants.encode(), a.grants_sql).await?;
        plan.push(plan_entry(
            ItemName::Accounts.encode(),
            ItemKind::Accounts,
            None,
        ));
        plan.push(plan_entry(
            ItemName::Grants.encode(),
            ItemKind::Grants,
            None,
        ));
        accounts = a.names;
    }
    for db in &cat.databases {
        let ddl = |k| ItemName::Ddl(k, db.name.clone()).encode();
        let objs = &cat.objects[&db.name];
        let ts: Vec<&Table> = tables
            .iter()
            .filter(|t| t.db == db.name)
            .map(|t| t.as_ref())
            .collect();
        let item = ddl(ItemKind::Schema);
        let data = schema::schema_item(ctl, db, &ts, &objs.views, addr).await?;
        put_item(sink, item.clone(), data).await?;
        plan.push(plan_entry(item, ItemKind::Schema, Some(&db.name)));
        if !objs.routines.is_empty() {
            let item = ddl(ItemKind::Routines);
            let mut hidden = Vec::new();
            let data =
                schema::routines_item(ctl, &db.name, &objs.routines, addr, &mut hidden).await?;
            if !hidden.is_empty() {
                gaps.push(
                    Gap::new(
                        "mariadb",
                        "routines",
                        format!(
                            "{acct} is not their definer and may not read mysql.proc, so their \
                             definitions are invisible and {} of {} routines were not backed up: \
                             {}",
                            hidden.len(),
                            objs.routines.len(),
                            hidden.join(", ")
                        ),
                    )
                    .subject(&db.name)
                    .fix(privileges::fix_routines(acct)),
                );
            }
            put_item(sink, item.clone(), data).await?;
            plan.push(plan_entry(item, ItemKind::Routines, Some(&db.name)));
        }
        if !objs.views.is_empty() {
            let item = ddl(ItemKind::Views);
            let data = schema::views_item(ctl, &db.name, &objs.views, addr).await?;
            put_item(sink, item.clone(), data).await?;
            plan.push(plan_entry(item, ItemKind::Views, Some(&db.name)));
        }
        if !objs.triggers.is_empty() {
            let item = ddl(ItemKind::Triggers);
            let data = schema::triggers_item(ctl, &db.name, &objs.triggers, addr).await?;
            put_item(sink, item.clone(), data).await?;
            plan.push(plan_entry(item, ItemKind::Triggers, Some(&db.name)));
        }
        // Events are listed only to accounts with the EVENT privilege on the database: without
        // it they are invisible, so an empty list proves nothing.
        if let Err(e) = ctl
            .query_drop(format!("SHOW EVENTS FROM {}", ident(&db.name)))
            .await
        {
            let e = explain(e, addr, &format!("SHOW EVENTS FROM {}", ident(&db.name)));
            if !errors::is_privilege_error(&e) {
                return Err(e);
            }
            gaps.push(
                Gap::new(
                    "mariadb",
                    "events",
                    format!(
                        "{acct} has no EVENT privilege on {}, so its events (if any) are \
                         invisible and were not backed up ({e:#})",
                        db.name
                    ),
                )
                .subject(&db.name)
                .fix(privileges::fix_events(acct, &db.name)),
            );
        }
        if !objs.events.is_empty() {
            let item = ddl(ItemKind::Events);
            let data = schema::events_item(ctl, &db.name, &objs.events, addr).await?;
            put_item(sink, item.clone(), data).await?;
            plan.push(plan_entry(item, ItemKind::Events, Some(&db.name)));
        }
    }
    Ok((plan, accounts))
}
