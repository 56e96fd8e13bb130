//! Table data: work units, the worker loop that streams rows into INSERT items, and the
//! fingerprints computed from the same rows.
//!
//! Each data item holds the rows of one table, or of one primary-key range of a big table, in
//! primary-key order, `rows_per_insert` rows per `INSERT`, one row per line (so a changed row is a
//! changed line for the rsync delta). Rows are streamed from the server and an item is handed to
//! the sink as soon as its range is complete, so memory stays bounded by a few items whatever the
//! table size; an item that would grow past [`MAX_ITEM_BYTES`] is continued in a `.pN` item.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::fingerprint::{select_list, text_value, FingerprintBuilder};
use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::Conn;

use super::errors::explain;
use super::names::ItemName;
use super::schema::{Split, Table};
use super::sqlfmt::{header, ident, push_value, ValueKind};
use crate::model::{ItemSink, ItemSpec};

/// No data item grows past this (it is continued in a `.pN` item); `[limits] memory` makes
/// items smaller (`MariadbConfig::max_item_bytes`).
pub const MAX_ITEM_BYTES: usize = 64 << 20;

/// Where a unit's rows are.
#[derive(Debug, Clone)]
pub enum Range {
    /// The whole table, one item.
    Whole,
    /// Integer key range `[lo, hi)` (open ends when None), items named by bucket.
    Int {
        lo: Option<i128>,
        hi: Option<i128>,
        width: i128,
    },
    /// Hex-prefix bucket `[lo, hi)` of a uuid key, one item named `name`.
    Hex {
        lo: Option<String>,
        hi: Option<String>,
        name: String,
    },
}

/// One piece of work: a table or a key range of it.
#[derive(Debug, Clone)]
pub struct Unit {
    pub table: Arc<Table>,
    pub range: Range,
}

/// The units of a table (see [`Split`]).
pub fn units_for(table: Arc<Table>, workers: usize) -> Vec<Unit> {
    match table.split.clone() {
        Split::Whole => vec![Unit {
            table,
            range: Range::Whole,
        }],
        Split::IntBuckets { width, min, max } => {
            let bmin = min.div_euclid(width);
            let bmax = max.div_euclid(width);
            let span = bmax - bmin + 1;
            let n = span.min(4 * workers.max(1) as i128).max(1);
            (0..n)
                .map(|k| {
                    let b_lo = bmin + k * span / n;
                    let b_hi = bmin + (k + 1) * span / n;
                    Unit {
                        table: table.clone(),
                        range: Range::Int {
                            lo: (k > 0).then_some(b_lo * width),
                            hi: (k + 1 < n).then_some(b_hi * width),
                            width,
                        },
                    }
                })
                .collect()
        }
        Split::HexPrefix { chars } => {
            let n = 16usize.pow(chars);
            let prefix = |i: usize| format!("{:0width$x}", i, width = chars as usize);
            (0..n)
                .map(|i| Unit {
                    table: table.clone(),
                    range: Range::Hex {
                        lo: (i > 0).then(|| prefix(i)),
                        hi: (i + 1 < n).then(|| prefix(i + 1)),
                        name: prefix(i),
                    },
                })
                .collect()
        }
    }
}

/// The item name of a table's data (`suffix` is `""`, `.<bucket>` or `.<prefix>`, `part` > 0
/// for continuation items).
pub fn data_item_name(t: &Table, suffix: &str, part: usize) -> String {
    ItemName::Data {
        db: t.db.clone(),
        table: t.name.clone(),
        range: suffix.strip_prefix('.').map(str::to_string),
        part,
    }
    .encode()
}

fn bucket_suffix(b: i128) -> String {
    if b < 0 {
        format!(".n{:06}", -b)
    } else {
        format!(".{b:06}")
    }
}

/// What the workers share.
pub struct Shared {
    pub queue: Mutex<VecDeque<Unit>>,
    pub sink: Arc<dyn ItemSink>,
    pub rows_per_insert: usize,
    /// Items grow to about this size, then continue in a `.pN` item (at most
    /// [`MAX_ITEM_BYTES`]).
    pub max_item_bytes: usize,
    pub addr: String,
    pub fingerprints: Mutex<BTreeMap<String, FingerprintBuilder>>,
    /// (item name, `db.table`, rows) of every data item written.
    pub items: Mutex<Vec<(String, String, u64)>>,
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
    /// `db.table` → bytes of its largest INSERT statement (the restore's `max_allowed_packet`
    /// must exceed it).
    pub max_statement: Mutex<BTreeMap<String, u64>>,
}

/// Hand one item to the sink on a blocking thread.
pub async fn put_item(sink: &Arc<dyn ItemSink>, name: String, data: Vec<u8>) -> Result<()> {
    let s = sink.clone();
    tokio::task::spawn_blocking(move || {
        s.put_bytes(ItemSpec::content(name.clone(), true), &data)
            .with_context(|| format!("storing item {name}"))
    })
    .await
    .context("the item writer thread panicked")?
}

struct ItemBuf {
    suffix: String,
    part: usize,
    data: Vec<u8>,
    rows: u64,
    head_len: usize,
    /// Where the current INSERT statement starts in `data`.
    stmt_start: usize,
}

/// A worker: take units until the queue is empty.
pub async fn worker(mut conn: Conn, shared: Arc<Shared>) -> Result<Conn> {
    loop {
        let unit = shared.queue.lock().expect("queue lock").pop_front();
        let Some(unit) = unit else { break };
        dump_unit(&mut conn, &shared, &unit).await?;
    }
    Ok(conn)
}

async fn dump_unit(conn: &mut Conn, shared: &Shared, unit: &Unit) -> Result<()> {
    let t = &unit.table;
    let cols: Vec<_> = t.data_columns().collect();
    let infos: Vec<_> = cols.iter().map(|c| c.info.clone()).collect();
    let kinds: Vec<ValueKind> = cols.iter().map(|c| c.kind).collect();
    let qname = format!("{}.{}", ident(&t.db), ident(&t.name));
    let key_idx =
        t.pk.first()
            .and_then(|k| cols.iter().position(|c| &c.info.name == k));
    let (where_, int_width) = range_filter(t, &unit.range);
    let sql = format!(
        "SELECT {} FROM {qname}{where_} ORDER BY {}",
        select_list(&infos),
        t.order_by()
    );
    let col_list = cols
        .iter()
        .map(|c| ident(&c.info.name))
        .collect::<Vec<_>>()
        .join(",");
    let insert_head = format!("INSERT INTO {} ({col_list}) VALUES\n", ident(&t.name));
    let item_header = header(&format!("data of {qname}"), Some(&t.db));
    let fixed_suffix = match &unit.range {
        Range::Hex { name, .. } => format!(".{name}"),
        _ => String::new(),
    };

    let what = format!("reading {qname}");
    let mut fp = FingerprintBuilder::new();
    let mut pending: Option<tokio::task::JoinHandle<Result<()>>> = None;
    let mut cur: Option<ItemBuf> = None;
    let rpi = shared.rows_per_insert as u64;
    let mut max_stmt = 0usize;

    let mut result = conn
        .query_iter(sql)
        .await
        .map_err(|e| explain(e, &shared.addr, &what))?;
    loop {
        let row = result
            .next()
            .await
            .map_err(|e| explain(e, &shared.addr, &what))?;
        let Some(row) = row else { break };
        let mut vals = Vec::with_capacity(cols.len());
        for i in 0..cols.len() {
            vals.push(text_value(&row, i)?);
        }
        fp.add_row(vals.iter().copied());
        let suffix = match (int_width, key_idx) {
            (Some(w), Some(ki)) => {
                let k: i128 = vals[ki]
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                bucket_suffix(k.div_euclid(w))
            }
            _ => fixed_suffix.clone(),
        };
        // Start a new item when the bucket changes or the item is full.
        let need_new = match &cur {
            None => true,
            Some(b) => b.suffix != suffix || b.data.len() >= shared.max_item_bytes,
        };
        if need_new {
            let next_part = match &cur {
                Some(b) if b.suffix == suffix => b.part + 1,
                _ => 0,
            };
            if let Some(b) = cur.take() {
                max_stmt = max_stmt.max(b.data.len() - b.stmt_start);
                pending = flush(shared, t, b, pending).await?;
            }
            // Room for the whole item at once: growing by doubling would hold up to twice
            // the item (pages not written are not resident).
            let mut data = Vec::with_capacity(shared.max_item_bytes + (1 << 20));
            data.extend_from_slice(item_header.as_bytes());
            cur = Some(ItemBuf {
                suffix,
                part: next_part,
                head_len: data.len(),
                stmt_start: data.len(),
                data,
                rows: 0,
            });
        }
        let b = cur.as_mut().expect("current item");
        if b.rows % rpi == 0 {
            if b.rows > 0 {
                b.data.extend_from_slice(b";\n");
                max_stmt = max_stmt.max(b.data.len() - b.stmt_start);
            }
            b.stmt_start = b.data.len();
            b.data.extend_from_slice(insert_head.as_bytes());
        } else {
            b.data.extend_from_slice(b",\n");
        }
        b.data.push(b'(');
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                b.data.push(b',');
            }
            push_value(&mut b.data, kinds[i], *v);
        }
        b.data.push(b')');
        b.rows += 1;
    }
    drop(result);
    if let Some(b) = cur.take() {
        max_stmt = max_stmt.max(b.data.len() - b.stmt_start + 2);
        pending = flush(shared, t, b, pending).await?;
    }
    if let Some(p) = pending.take() {
        p.await.context("the item writer task failed")??;
    }
    shared
        .fingerprints
        .lock()
        .expect("fingerprint lock")
        .entry(t.full_name())
        .or_default()
        .merge(&fp);
    let mut ms = shared.max_statement.lock().expect("max statement lock");
    let e = ms.entry(t.full_name()).or_default();
    *e = (*e).max(max_stmt as u64);
    Ok(())
}

/// The `WHERE` clause of a unit's key range (empty for a whole table), and the bucket width of
/// an integer range.
fn range_filter(t: &Table, range: &Range) -> (String, Option<i128>) {
    let mut conds = Vec::new();
    let mut int_width = None;
    match range {
        Range::Whole => {}
        Range::Int { lo, hi, width } => {
            int_width = Some(*width);
            let k = ident(&t.pk[0]);
            if let Some(lo) = lo {
                conds.push(format!("{k} >= {lo}"));
            }
            if let Some(hi) = hi {
                conds.push(format!("{k} < {hi}"));
            }
        }
        Range::Hex { lo, hi, .. } => {
            let k = ident(&t.pk[0]);
            if let Some(lo) = lo {
                conds.push(format!("{k} >= '{lo}'"));
            }
            if let Some(hi) = hi {
                conds.push(format!("{k} < '{hi}'"));
            }
        }
    }
    let where_ = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (where_, int_width)
}

/// Finish an item and start storing it; waits for the previous store first (one store in flight
/// per worker, overlapping with reading the next rows).
async fn flush(
    shared: &Shared,
    t: &Table,
    mut b: ItemBuf,
    pending: Option<tokio::task::JoinHandle<Result<()>>>,
) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
    if b.rows > 0 {
        b.data.extend_from_slice(b";\n");
    }
    debug_assert!(b.data.len() >= b.head_len);
    let name = data_item_name(t, &b.suffix, b.part);
    shared
        .bytes
        .fetch_add(b.data.len() as u64, Ordering::Relaxed);
    shared.rows.fetch_add(b.rows, Ordering::Relaxed);
    shared
        .items
        .lock()
        .expect("items lock")
        .push((name.clone(), t.full_name(), b.rows));
    if let Some(p) = pending {
        p.await.context("the item writer task failed")??;
    }
    let sink = shared.sink.clone();
    let data = b.data;
    Ok(Some(tokio::spawn(async move {
        put_item(&sink, name, data).await
    })))
}
