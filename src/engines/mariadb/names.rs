//! Item names of the MariaDB engine: one type, [`ItemName`], whose [`ItemName::encode`] the dump
//! writes and whose [`ItemName::parse`] the restore reads (for snapshots without a `load_plan`,
//! and to know an item's kind, database and table).
//!
//! | item | [`ItemName`] |
//! |---|---|
//! | `mariadb/0-accounts.sql` | `Accounts` |
//! | `mariadb/1-schema/<db>.sql` | `Ddl(Schema, db)` |
//! | `mariadb/2-data/<db>/<table>[.<range>][.pN].sql` | `Data { db, table, range, part }` |
//! | `mariadb/3-routines/<db>.sql` … `6-events` | `Ddl(Routines / Views / Triggers / Events, db)` |
//! | `mariadb/7-grants.sql` | `Grants` |
//!
//! Database and table names are encoded by [`name_component`] (so `.` and `/` never appear in
//! them) and decoded by [`decode_component`].

use crate::model::mariadb_info::ItemKind;

/// The prefix of every MariaDB item.
pub const PREFIX: &str = "mariadb/";

/// A parsed MariaDB item name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemName {
    Accounts,
    /// A per-database DDL item: `kind` is Schema, Routines, Views, Triggers or Events.
    Ddl(ItemKind, String),
    Data {
        db: String,
        table: String,
        /// The key range (`000003`, `n000001`, `a3f`), without its dot.
        range: Option<String>,
        /// Continuation number (`pN`), 0 for the first item.
        part: usize,
    },
    Grants,
}

fn ddl_dir(kind: ItemKind) -> Option<&'static str> {
    Some(match kind {
        ItemKind::Schema => "1-schema",
        ItemKind::Routines => "3-routines",
        ItemKind::Views => "4-views",
        ItemKind::Triggers => "5-triggers",
        ItemKind::Events => "6-events",
        _ => return None,
    })
}

impl ItemName {
    /// The item name in the snapshot.
    pub fn encode(&self) -> String {
        match self {
            ItemName::Accounts => format!("{PREFIX}0-accounts.sql"),
            ItemName::Grants => format!("{PREFIX}7-grants.sql"),
            ItemName::Ddl(kind, db) => format!(
                "{PREFIX}{}/{}.sql",
                ddl_dir(*kind).expect("a per-database DDL kind"),
                name_component(db)
            ),
            ItemName::Data {
                db,
                table,
                range,
                part,
            } => {
                let range = range.as_ref().map(|r| format!(".{r}")).unwrap_or_default();
                let part = if *part == 0 {
                    String::new()
                } else {
                    format!(".p{part}")
                };
                format!(
                    "{PREFIX}2-data/{}/{}{range}{part}.sql",
                    name_component(db),
                    name_component(table)
                )
            }
        }
    }

    /// Parse an item name; `None` for anything that is not a MariaDB item of this format.
    pub fn parse(name: &str) -> Option<ItemName> {
        let rest = name.strip_prefix(PREFIX)?;
        match rest {
            "0-accounts.sql" => return Some(ItemName::Accounts),
            "7-grants.sql" => return Some(ItemName::Grants),
            _ => {}
        }
        let (dir, file) = rest.split_once('/')?;
        if dir == "2-data" {
            let (db, file) = file.split_once('/')?;
            let mut parts = file.strip_suffix(".sql")?.split('.');
            let table = decode_component(parts.next()?);
            let mut range = None;
            let mut part = 0;
            for p in parts {
                match p.strip_prefix('p').and_then(|n| n.parse::<usize>().ok()) {
                    Some(n) if n > 0 => part = n,
                    _ if range.is_none() && part == 0 => range = Some(p.to_string()),
                    _ => return None,
                }
            }
            return Some(ItemName::Data {
                db: decode_component(db),
                table,
                range,
                part,
            });
        }
        let kind = [
            ItemKind::Schema,
            ItemKind::Routines,
            ItemKind::Views,
            ItemKind::Triggers,
            ItemKind::Events,
        ]
        .into_iter()
        .find(|k| ddl_dir(*k) == Some(dir))?;
        Some(ItemName::Ddl(
            kind,
            decode_component(file.strip_suffix(".sql")?),
        ))
    }

    pub fn kind(&self) -> ItemKind {
        match self {
            ItemName::Accounts => ItemKind::Accounts,
            ItemName::Grants => ItemKind::Grants,
            ItemName::Ddl(k, _) => *k,
            ItemName::Data { .. } => ItemKind::Data,
        }
    }

    /// The source database (all but the accounts and grants items).
    pub fn db(&self) -> Option<&str> {
        match self {
            ItemName::Ddl(_, db) | ItemName::Data { db, .. } => Some(db),
            _ => None,
        }
    }

    /// The source table (data items).
    pub fn table(&self) -> Option<&str> {
        match self {
            ItemName::Data { table, .. } => Some(table),
            _ => None,
        }
    }
}

/// Encode a database or table name for use as one component of an item name: ASCII letters,
/// digits, `_`, `-` and `$` stay; every other byte is `%XX` (so `.` and `/` never appear).
pub fn name_component(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'$' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Decode a [`name_component`].
pub fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Work on bytes: a `%` before a multi-byte character is not an escape (slicing the
        // `str` there would panic on the character boundary).
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let odd = [
            "zstack",
            "a.b/c d",
            "été",
            "x%41",
            "back`tick",
            "$-_",
            "",
            "多字节",
        ];
        let mut names = vec![ItemName::Accounts, ItemName::Grants];
        for db in odd {
            for k in [
                ItemKind::Schema,
                ItemKind::Routines,
                ItemKind::Views,
                ItemKind::Triggers,
                ItemKind::Events,
            ] {
                names.push(ItemName::Ddl(k, db.to_string()));
            }
            for table in odd {
                for range in [None, Some("000003"), Some("n000001"), Some("a3f")] {
                    for part in [0, 1, 12] {
                        names.push(ItemName::Data {
                            db: db.to_string(),
                            table: table.to_string(),
                            range: range.map(str::to_string),
                            part,
                        });
                    }
                }
            }
        }
        for n in names {
            let enc = n.encode();
            assert_eq!(ItemName::parse(&enc), Some(n.clone()), "{enc}");
            assert!(enc.starts_with(PREFIX) && enc.ends_with(".sql"));
        }
        assert_eq!(
            ItemName::parse("mariadb/2-data/zstack/VmUsageHistoryVO.000003.p1.sql")
                .unwrap()
                .table(),
            Some("VmUsageHistoryVO")
        );
        for bad in [
            "files/etc/x",
            "mariadb/8-x.sql",
            "mariadb/9-x/a.sql",
            "mariadb/2-data/a.sql",
        ] {
            assert_eq!(ItemName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn components() {
        assert_eq!(name_component("VmInstanceEO"), "VmInstanceEO");
        assert_eq!(name_component("a.b/c d"), "a%2Eb%2Fc%20d");
        assert_eq!(decode_component("a%2Eb%2Fc%20d"), "a.b/c d");
        assert_eq!(decode_component("abc%"), "abc%");
        // Issue 14 item 12: a `%` before a multi-byte character (a forged or damaged
        // manifest) is kept as it is instead of panicking on the character boundary.
        assert_eq!(decode_component("a%é1"), "a%é1");
        assert_eq!(decode_component("%€"), "%€");
        assert_eq!(decode_component("x%4€"), "x%4€");
        assert_eq!(decode_component("%+1"), "%+1");
        assert_eq!(decode_component("%C3%A9t%C3%A9"), "été");
    }
}
