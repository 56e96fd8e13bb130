//! The data step of the loader: tables biggest first, every item of a table read and checked
//! before the table is touched, the items of all tables loaded over `workers` connections, and
//! each table's fingerprint proved by the connection that finished it (overlapping the proof
//! with the loading of the other tables).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::{check_table, connect, infile, ItemSource, Loader};
use crate::engines::mariadb::plan::{target_db, ItemKind, MariadbSource, SqlItem};
use crate::engines::mariadb::sql::quote_ident;
use mnbackup_restore::journal::Journal;
use mnbackup_restore::report::{StepReport, StepStatus, TableCheck};

pub(super) struct TableWork {
    key: String,
    items: Vec<SqlItem>,
    bytes: u64,
}

struct TableState {
    key: String,
    remaining: AtomicUsize,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

struct ItemJob {
    table: Arc<TableState>,
    item: SqlItem,
    data: Option<Arc<Vec<u8>>>,
}

/// The longest time between two journal writes of finished tables.
const JOURNAL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A table whose items all checked out: the items held in memory (or `None`: read again at
/// load time), and its share of the memory budget.
type Checked = (TableWork, Vec<Option<Arc<Vec<u8>>>>, OwnedSemaphorePermit);

/// What the reader, the workers and the dispatcher share.
#[derive(Clone)]
struct Shared {
    sem: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
    rows: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    items_n: Arc<AtomicUsize>,
    /// When the journal was last written: finished tables are journaled at most once a second
    /// (two fsyncs and the whole journal per write cost seconds over ~600 small tables). A
    /// finished table not yet journaled is just loaded again by a resumed run.
    last_save: Arc<Mutex<Instant>>,
}

impl Shared {
    /// Stop the others: the reader (waiting for memory) and the dispatcher.
    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        self.sem.close();
    }
    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// One loader connection's context.
struct Worker {
    shared: Shared,
    renames: BTreeMap<String, String>,
    src: Arc<MariadbSource>,
    checked: Arc<Mutex<BTreeMap<String, TableCheck>>>,
    items: Arc<dyn ItemSource>,
    journal: Option<Arc<Mutex<Journal>>>,
    /// The server takes `LOAD DATA LOCAL INFILE` (`@@local_infile`).
    infile: bool,
}

impl Worker {
    /// Load jobs until the queue closes or another task failed.
    async fn run(
        self,
        mut conn: Conn,
        wrx: Arc<tokio::sync::Mutex<mpsc::Receiver<ItemJob>>>,
    ) -> Result<()> {
        let res = self.jobs(&mut conn, wrx).await;
        if res.is_err() {
            self.shared.fail();
        }
        conn.disconnect().await.ok();
        res
    }

    async fn jobs(
        &self,
        conn: &mut Conn,
        wrx: Arc<tokio::sync::Mutex<mpsc::Receiver<ItemJob>>>,
    ) -> Result<()> {
        while !self.shared.failed() {
            let job = wrx.lock().await.recv().await;
            let Some(job) = job else { break };
            let data = match &job.data {
                Some(d) => d.clone(),
                None => Arc::new(self.read_again(&job).await?),
            };
            let n = infile::load_item(conn, &job.item, data.clone(), &self.renames, self.infile)
                .await?;
            self.shared.rows.fetch_add(n, Ordering::Relaxed);
            self.shared
                .bytes
                .fetch_add(job.item.size, Ordering::Relaxed);
            self.shared.items_n.fetch_add(1, Ordering::Relaxed);
            drop(data);
            if job.table.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.table_done(conn, &job.table).await?;
            }
        }
        Ok(())
    }

    /// An item of a table too big to hold in memory, read again to load it.
    async fn read_again(&self, job: &ItemJob) -> Result<Vec<u8>> {
        let s = self.items.clone();
        let n = job.item.name.clone();
        tokio::task::spawn_blocking(move || s.read(&n))
            .await
            .map_err(|e| anyhow!("the item reader thread failed: {e}"))
            .and_then(|r| r)
            .with_context(|| {
                format!(
                    "reading item {} of table {} again to load it (it was intact moments ago: is \
                     the pool failing?). The table is incomplete; rerun the restore to reload it",
                    job.item.name, job.table.key
                )
            })
    }

    /// The table's last item committed: free its memory, journal it, prove it.
    async fn table_done(&self, conn: &mut Conn, table: &TableState) -> Result<()> {
        table.permit.lock().expect("permit").take();
        if let Some(j) = &self.journal {
            let mut j = j.lock().expect("journal");
            j.data.tables_done.insert(table.key.clone());
            let mut last = self.shared.last_save.lock().expect("last save");
            if last.elapsed() >= JOURNAL_EVERY {
                j.save()?;
                *last = Instant::now();
            }
        }
        let key = &table.key;
        if let Some(exp) = self.src.fingerprints.get(key) {
            let c = check_table(conn, key, exp, &self.renames).await;
            self.checked.lock().expect("checked").insert(key.clone(), c);
        }
        Ok(())
    }
}

/// Read and check every item of each table, biggest table first, and hand the table on.
fn spawn_reader(
    todo: Vec<TableWork>,
    items: Arc<dyn ItemSource>,
    shared: Shared,
    budget: u64,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Result<Checked>>) {
    let budget_mib = (budget >> 20).max(1);
    let (rtx, rrx) = mpsc::channel::<Result<Checked>>(1);
    let handle = tokio::spawn(async move {
        for t in todo {
            if shared.failed() {
                return;
            }
            let mib = (t.bytes >> 20).clamp(1, budget_mib) as u32;
            let Ok(permit) = shared.sem.clone().acquire_many_owned(mib).await else {
                return;
            };
            let items = items.clone();
            let keep = t.bytes <= budget;
            let names: Vec<String> = t.items.iter().map(|i| i.name.clone()).collect();
            let key = t.key.clone();
            let res = tokio::task::spawn_blocking(move || read_table(&*items, &names, &key, keep))
                .await
                .map_err(|e| anyhow!("the item reader thread failed: {e}"))
                .and_then(|r| r);
            let stop = res.is_err();
            if rtx.send(res.map(|d| (t, d, permit))).await.is_err() || stop {
                return;
            }
        }
    });
    (handle, rrx)
}

/// Read (and so check) every item of one table; keep the bytes when `keep`.
fn read_table(
    items: &dyn ItemSource,
    names: &[String],
    key: &str,
    keep: bool,
) -> Result<Vec<Option<Arc<Vec<u8>>>>> {
    let mut out = Vec::new();
    for n in names {
        let b = items.read(n).with_context(|| {
            format!(
                "the restore stopped: data item {n} of table {key} cannot be read back intact, \
                 so table {key} was not touched. Run `mnbackup verify --read-data` to see what \
                 is damaged, and restore an older snapshot (`mnbackup list`)"
            )
        })?;
        out.push(keep.then(|| Arc::new(b)));
    }
    Ok(out)
}

/// Whether the server takes `LOAD DATA LOCAL INFILE` (`local_infile` is on by default; when it
/// is off the items are loaded with their `INSERT`s).
async fn local_infile(conn: &mut Conn) -> bool {
    let on: Option<i64> = conn
        .query_first("SELECT @@local_infile")
        .await
        .ok()
        .flatten();
    if on != Some(1) {
        tracing::info!(
            "the target server has local_infile off: the rows are loaded with INSERTs (slower)"
        );
    }
    on == Some(1)
}

impl Loader {
    /// The tables still to load, biggest first; the ones an interrupted run finished are
    /// counted into `r`. Returns the tables and how many were already done.
    fn tables_to_load(&self, r: &mut StepReport) -> (Vec<TableWork>, usize) {
        let mut by_table: BTreeMap<String, TableWork> = BTreeMap::new();
        for i in self.src.items.iter().filter(|i| i.kind == ItemKind::Data) {
            let Some(key) = i.table_key() else { continue };
            let w = by_table.entry(key.clone()).or_insert_with(|| TableWork {
                key,
                items: Vec::new(),
                bytes: 0,
            });
            w.bytes += i.size;
            w.items.push(i.clone());
        }
        let done: BTreeSet<String> = self
            .journal
            .as_ref()
            .map(|j| j.lock().expect("journal").data.tables_done.clone())
            .unwrap_or_default();
        let mut already = 0usize;
        let mut todo: Vec<TableWork> = Vec::new();
        for (k, w) in by_table {
            if done.contains(&k) {
                already += 1;
                r.items += w.items.len();
                r.bytes += w.bytes;
                r.rows += w.items.iter().filter_map(|i| i.rows).sum::<u64>();
            } else {
                todo.push(w);
            }
        }
        todo.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.key.cmp(&b.key)));
        (todo, already)
    }

    /// The data step (see the module docs).
    pub(super) async fn load_data(&self) -> Result<StepReport> {
        let t0 = Instant::now();
        let mut r = StepReport::new("mariadb data", StepStatus::Done);
        let (todo, already) = self.tables_to_load(&mut r);
        if todo.is_empty() {
            r.status = if already > 0 {
                StepStatus::AlreadyDone
            } else {
                StepStatus::Skipped
            };
            return Ok(r);
        }
        let budget_mib = (self.opts.memory_budget >> 20).max(1) as usize;
        let shared = Shared {
            sem: Arc::new(Semaphore::new(budget_mib)),
            failed: Default::default(),
            rows: Default::default(),
            bytes: Default::default(),
            items_n: Default::default(),
            last_save: Arc::new(Mutex::new(Instant::now())),
        };
        let (reader, rrx) = spawn_reader(
            todo,
            self.items.clone(),
            shared.clone(),
            self.opts.memory_budget,
        );
        let res = self.load_checked(rrx, &shared).await;
        reader.abort();
        if let Some(j) = &self.journal {
            // The finished tables not journaled yet (also when the load failed).
            let saved = j.lock().expect("journal").save();
            if res.is_ok() {
                saved?;
            }
        }
        res?;
        r.items += shared.items_n.load(Ordering::Relaxed);
        r.rows += shared.rows.load(Ordering::Relaxed);
        r.bytes += shared.bytes.load(Ordering::Relaxed);
        r.duration_ms = t0.elapsed().as_millis() as u64;
        if already > 0 {
            r.note = Some(format!(
                "{already} tables were already loaded by the interrupted run"
            ));
        }
        Ok(r)
    }

    /// Start the workers and feed them the checked tables; the first error wins.
    async fn load_checked(
        &self,
        mut rrx: mpsc::Receiver<Result<Checked>>,
        shared: &Shared,
    ) -> Result<()> {
        let workers = self.opts.workers.max(1);
        let (wtx, wrx) = mpsc::channel::<ItemJob>(workers * 2);
        let wrx = Arc::new(tokio::sync::Mutex::new(wrx));
        let mut set = tokio::task::JoinSet::new();
        let mut infile = None;
        for _ in 0..workers {
            let conn = match connect(&self.target, "opening a loader connection").await {
                Ok(c) => self.session(c).await,
                Err(e) => Err(e),
            };
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    shared.fail();
                    return Err(e);
                }
            };
            if infile.is_none() {
                infile = Some(local_infile(&mut conn).await);
            }
            let w = Worker {
                shared: shared.clone(),
                renames: self.opts.renames.clone(),
                src: self.src.clone(),
                checked: self.checked.clone(),
                items: self.items.clone(),
                journal: self.journal.clone(),
                infile: infile.unwrap_or(false),
            };
            set.spawn(w.run(conn, wrx.clone()));
        }
        // Only the workers hold the receiver: when they all stop, sending fails.
        drop(wrx);

        let mut ctl = connect(&self.target, "opening the control connection").await?;
        let resumed = self.resumed();
        let mut dispatch_err = None;
        while let Some(res) = rrx.recv().await {
            if shared.failed() {
                break;
            }
            let res = match res {
                Ok((t, data, permit)) => {
                    self.dispatch(&mut ctl, t, data, permit, resumed, &wtx)
                        .await
                }
                Err(e) => Err(e),
            };
            match res {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    dispatch_err = Some(e);
                    break;
                }
            }
        }
        drop(wtx);
        drop(rrx);
        if dispatch_err.is_some() {
            shared.fail();
        }
        let mut worker_err = None;
        while let Some(j) = set.join_next().await {
            let e = match j {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => anyhow!("a loader task panicked: {e}"),
            };
            worker_err.get_or_insert(e);
        }
        ctl.disconnect().await.ok();
        match dispatch_err.or(worker_err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hand a checked table to the workers: journal it as started, empty it when resuming (an
    /// earlier run may have loaded part of it), queue its items. Returns false when the workers
    /// are gone.
    async fn dispatch(
        &self,
        ctl: &mut Conn,
        t: TableWork,
        data: Vec<Option<Arc<Vec<u8>>>>,
        permit: OwnedSemaphorePermit,
        resumed: bool,
        wtx: &mpsc::Sender<ItemJob>,
    ) -> Result<bool> {
        let (sd, st) = t.key.split_once('.').unwrap_or((&t.key, ""));
        let tdb = target_db(&self.opts.renames, sd).to_string();
        if let Some(j) = &self.journal {
            // Journaled with the next write: a resumed run empties every table not done anyway.
            j.lock()
                .expect("journal")
                .data
                .tables_started
                .insert(t.key.clone());
        }
        if resumed {
            // Not done according to the journal: whatever an earlier run loaded goes.
            let q = format!("{}.{}", quote_ident(&tdb), quote_ident(st));
            if let Err(e) = ctl.query_drop(format!("TRUNCATE TABLE {q}")).await {
                ctl.query_drop(format!("DELETE FROM {q}"))
                    .await
                    .with_context(|| {
                        format!(
                            "emptying {tdb}.{st} (partly loaded by the interrupted run) before \
                             loading it again failed (TRUNCATE: {e})"
                        )
                    })?;
            }
        }
        let state = Arc::new(TableState {
            key: t.key.clone(),
            remaining: AtomicUsize::new(t.items.len()),
            permit: Mutex::new(Some(permit)),
        });
        for (item, d) in t.items.into_iter().zip(data) {
            let job = ItemJob {
                table: state.clone(),
                item,
                data: d,
            };
            if wtx.send(job).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
