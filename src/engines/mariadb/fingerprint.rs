//! Canonical row fingerprints of MariaDB tables, shared by the dump (`mnbackup snapshot`), the
//! restore and `verify`.
//!
//! A table's fingerprint is its row count plus a 256-bit hash of its rows:
//!
//! - **canonical column list**: every column of the table in ordinal order except generated
//!   (virtual or stored) columns, which are recomputed by the server and never dumped; see
//!   [`ColumnInfo`] and [`select_expr`] (`FLOAT` columns are read as `col + 0e0`, the exact double
//!   value, because the server prints FLOAT with 6 significant digits, which does not round-trip);
//! - **session**: the values are the text-protocol bytes the server sends with
//!   `SET NAMES utf8mb4` and `SET time_zone = '+00:00'` (so `TIMESTAMP`s are in UTC);
//! - **canonical row**: for each column, `0x00` for NULL, or `0x01`, the value's length as a
//!   little-endian `u64`, then the value bytes (so NULL, `''` and `'NULL'` all differ);
//! - **row hash**: BLAKE3 of the canonical row (`blake3::hash`);
//! - **table hash**: the sum of all row hashes, each read as a little-endian 256-bit integer,
//!   modulo 2^256, written as 64 lowercase hex digits (little-endian bytes).
//!
//! The sum makes the fingerprint independent of row order: the dumper hashes the primary-key
//! ranges of a big table on several connections in parallel and adds the partial sums, and the
//! verifier can read the table in any order (no `ORDER BY`, no second pass, no buffering). Two
//! tables with the same multiset of rows have the same fingerprint; any changed, missing or extra
//! row changes it (barring a 2^-256-scale accident; this is an integrity check, not a defence
//! against an adversary who can choose rows).

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use serde::{Deserialize, Serialize};

/// A table's row count and row-multiset hash (see the module docs).
pub use crate::model::mariadb_info::Fingerprint;

/// Accumulates a [`Fingerprint`] row by row; partial builders over disjoint row sets [`merge`]
/// into the fingerprint of their union.
///
/// [`merge`]: FingerprintBuilder::merge
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FingerprintBuilder {
    rows: u64,
    sum: [u64; 4],
}

impl FingerprintBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one row given as its column values in canonical column order (`None` = SQL NULL).
    pub fn add_row<'a, I>(&mut self, values: I)
    where
        I: IntoIterator<Item = Option<&'a [u8]>>,
    {
        let mut h = blake3::Hasher::new();
        for v in values {
            match v {
                None => {
                    h.update(&[0u8]);
                }
                Some(b) => {
                    h.update(&[1u8]);
                    h.update(&(b.len() as u64).to_le_bytes());
                    h.update(b);
                }
            }
        }
        self.add_hash(h.finalize().as_bytes());
    }

    /// Add one row read through the text protocol (every non-NULL value is `Value::Bytes`).
    pub fn add_text_row(&mut self, row: &Row) -> Result<()> {
        let mut vals: Vec<Option<&[u8]>> = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            vals.push(text_value(row, i)?);
        }
        self.add_row(vals);
        Ok(())
    }

    fn add_hash(&mut self, hash: &[u8; 32]) {
        let mut carry = 0u128;
        for (i, limb) in self.sum.iter_mut().enumerate() {
            let x = u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let s = *limb as u128 + x as u128 + carry;
            *limb = s as u64;
            carry = s >> 64;
        }
        self.rows += 1;
    }

    /// Add the rows of another builder (over a disjoint set of rows).
    pub fn merge(&mut self, other: &FingerprintBuilder) {
        let mut carry = 0u128;
        for (limb, o) in self.sum.iter_mut().zip(other.sum.iter()) {
            let s = *limb as u128 + *o as u128 + carry;
            *limb = s as u64;
            carry = s >> 64;
        }
        self.rows += other.rows;
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn finish(&self) -> Fingerprint {
        let mut bytes = [0u8; 32];
        for (i, limb) in self.sum.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
        }
        let mut hash = String::with_capacity(64);
        for b in bytes {
            hash.push_str(&format!("{b:02x}"));
        }
        Fingerprint {
            rows: self.rows,
            hash,
        }
    }
}

/// The raw text-protocol bytes of column `i` of `row` (`None` for NULL).
pub fn text_value(row: &Row, i: usize) -> Result<Option<&[u8]>> {
    match row.as_ref(i) {
        Some(Value::NULL) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.as_slice())),
        Some(other) => anyhow::bail!(
            "internal error: column {i} came back as {other:?}, not text; fingerprints need the \
             text protocol (query, not exec)"
        ),
        None => anyhow::bail!("internal error: column {i} was already taken from the row"),
    }
}

/// One column of a table as the fingerprint (and the dump) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    /// `information_schema.COLUMNS.DATA_TYPE`, lowercase (`int`, `varchar`, `float`, ...).
    pub data_type: String,
    /// Generated (virtual or persistent/stored) columns are left out of dumps and fingerprints.
    pub generated: bool,
}

/// Whether a column is generated (virtual or stored), from `information_schema.COLUMNS.EXTRA`,
/// the one column every supported server has (`IS_GENERATED` and `GENERATION_EXPRESSION` do not
/// exist on MariaDB 5.5, and `IS_GENERATED` not on MySQL 5.7). The servers write:
///
/// - MariaDB 5.5 – 10.1: `VIRTUAL` or `PERSISTENT`;
/// - MariaDB 10.2+ and MySQL 5.7+: `VIRTUAL GENERATED` or `STORED GENERATED`;
/// - MySQL 8.0.13+: `DEFAULT_GENERATED` for an ordinary column with an expression default (not
///   generated: its values are stored and must be dumped), possibly followed by
///   `on update CURRENT_TIMESTAMP`.
pub fn is_generated_extra(extra: &str) -> bool {
    extra.split_whitespace().any(|w| {
        w.eq_ignore_ascii_case("VIRTUAL")
            || w.eq_ignore_ascii_case("PERSISTENT")
            || w.eq_ignore_ascii_case("STORED")
    })
}

use super::sql::{quote_ident, quoted};

/// The select expression of a column: the quoted name, except `FLOAT` columns which are read as
/// `(col + 0e0)` (the exact double value; the server prints FLOAT with only 6 significant digits).
pub fn select_expr(col: &ColumnInfo) -> String {
    if col.data_type == "float" {
        format!("({} + 0e0)", quote_ident(&col.name))
    } else {
        quote_ident(&col.name)
    }
}

/// The comma-separated select list of the canonical (non-generated) columns.
pub fn select_list(cols: &[ColumnInfo]) -> String {
    cols.iter()
        .filter(|c| !c.generated)
        .map(select_expr)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of `db`.`table` in ordinal order, from `information_schema.COLUMNS`.
pub async fn table_columns(conn: &mut Conn, db: &str, table: &str) -> Result<Vec<ColumnInfo>> {
    let sql = format!(
        "SELECT COLUMN_NAME, LOWER(DATA_TYPE), EXTRA \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         ORDER BY ORDINAL_POSITION",
        quoted(db),
        quoted(table)
    );
    let rows: Vec<(String, String, String)> = conn
        .query(sql)
        .await
        .with_context(|| format!("reading the columns of `{db}`.`{table}`"))?;
    if rows.is_empty() {
        anyhow::bail!(
            "table `{db}`.`{table}` does not exist or has no columns visible to this user; check \
             that the database was restored and that the user may SELECT from it"
        );
    }
    Ok(rows
        .into_iter()
        .map(|(name, data_type, extra)| ColumnInfo {
            name,
            data_type,
            generated: is_generated_extra(&extra),
        })
        .collect())
}

/// Set the session the canonical values are defined in: utf8mb4 results, UTC time zone.
pub async fn prepare_session(conn: &mut Conn) -> Result<()> {
    conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await
        .context("setting the session character set and time zone for fingerprinting")?;
    Ok(())
}

/// Compute the fingerprint of `db`.`table` on any server (one full read of the table). Sets the
/// session to `SET NAMES utf8mb4` and `time_zone = '+00:00'`.
pub async fn table_fingerprint(conn: &mut Conn, db: &str, table: &str) -> Result<Fingerprint> {
    prepare_session(conn).await?;
    let cols = table_columns(conn, db, table).await?;
    let sql = format!(
        "SELECT {} FROM {}.{}",
        select_list(&cols),
        quote_ident(db),
        quote_ident(table)
    );
    let mut fp = FingerprintBuilder::new();
    let mut result = conn
        .query_iter(sql)
        .await
        .with_context(|| format!("reading `{db}`.`{table}` to fingerprint it"))?;
    while let Some(row) = result
        .next()
        .await
        .with_context(|| format!("reading `{db}`.`{table}` to fingerprint it"))?
    {
        fp.add_text_row(&row)?;
    }
    drop(result);
    Ok(fp.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_null_distinct() {
        let mut a = FingerprintBuilder::new();
        a.add_row([Some(&b"1"[..]), None]);
        a.add_row([Some(&b"2"[..]), Some(&b""[..])]);
        let mut b = FingerprintBuilder::new();
        b.add_row([Some(&b"2"[..]), Some(&b""[..])]);
        b.add_row([Some(&b"1"[..]), None]);
        assert_eq!(a.finish(), b.finish());
        let mut c = FingerprintBuilder::new();
        c.add_row([Some(&b"1"[..]), Some(&b""[..])]);
        c.add_row([Some(&b"2"[..]), Some(&b""[..])]);
        assert_ne!(a.finish(), c.finish());
        // Length prefixes: ("ab","c") differs from ("a","bc").
        let mut d = FingerprintBuilder::new();
        d.add_row([Some(&b"ab"[..]), Some(&b"c"[..])]);
        let mut e = FingerprintBuilder::new();
        e.add_row([Some(&b"a"[..]), Some(&b"bc"[..])]);
        assert_ne!(d.finish(), e.finish());
    }

    #[test]
    fn merge_equals_sequential() {
        let mut all = FingerprintBuilder::new();
        let mut p1 = FingerprintBuilder::new();
        let mut p2 = FingerprintBuilder::new();
        for i in 0..1000u32 {
            let s = i.to_string();
            all.add_row([Some(s.as_bytes())]);
            if i % 3 == 0 {
                p1.add_row([Some(s.as_bytes())]);
            } else {
                p2.add_row([Some(s.as_bytes())]);
            }
        }
        p2.merge(&p1);
        assert_eq!(all.finish(), p2.finish());
        assert_eq!(all.finish().rows, 1000);
        assert_eq!(FingerprintBuilder::new().finish().hash, "0".repeat(64));
    }

    /// `EXTRA` values as the servers write them (MariaDB `sql_show.cc` / MySQL
    /// `sql_show.cc` of each version; see docs/old-servers.md).
    #[test]
    fn generated_columns_on_every_server() {
        for (extra, generated) in [
            ("VIRTUAL", true),           // MariaDB 5.5 - 10.1
            ("PERSISTENT", true),        // MariaDB 5.5 - 10.1
            ("VIRTUAL GENERATED", true), // MariaDB 10.2+, MySQL 5.7+
            ("STORED GENERATED", true),  // MariaDB 10.2+, MySQL 5.7+
            ("", false),
            ("auto_increment", false),
            ("on update current_timestamp()", false), // MariaDB 10.2+
            ("on update CURRENT_TIMESTAMP", false),   // MariaDB 5.5, MySQL 5.7
            ("DEFAULT_GENERATED", false),             // MySQL 8.0.13+
            ("DEFAULT_GENERATED on update CURRENT_TIMESTAMP", false), // MySQL 8.0.13+
            ("INVISIBLE", false),                     // MariaDB 10.3+
        ] {
            assert_eq!(is_generated_extra(extra), generated, "{extra:?}");
        }
    }
}
