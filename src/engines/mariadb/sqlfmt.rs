//! SQL text of the dump items: literals, headers, item names, and the statement syntax a native
//! loader has to split.
//!
//! # Statement syntax of the items
//!
//! Items are plain SQL for the `mariadb` command-line client (`mariadb < item.sql`). A native
//! loader executes them statement by statement with [`split_statements`]:
//!
//! - lines starting with `-- ` and empty lines between statements are comments;
//! - a statement ends at the end of a line that ends with the current delimiter, which is `;`
//!   and is changed by a line `DELIMITER ;;` (and back by `DELIMITER ;`), exactly as the client
//!   does; the delimiter is not part of the statement;
//! - data rows never contain a raw newline (string literals escape `\n` and `\r`), so a line
//!   ending in `;` inside a literal cannot happen; routine, trigger and event bodies (which may
//!   contain `;` at line ends) are always written inside `DELIMITER ;;` blocks.

/// How a column's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Integers, DECIMAL, FLOAT/DOUBLE, YEAR: the server's text, unquoted.
    Number,
    /// Binary strings, BLOBs, BIT, spatial types: `0x...` hex (or `''` when empty).
    Binary,
    /// Everything else (character strings, ENUM/SET, JSON, temporal types): a quoted literal.
    Text,
}

impl ValueKind {
    /// From `information_schema.COLUMNS.DATA_TYPE` (lowercase).
    pub fn of(data_type: &str) -> ValueKind {
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal"
            | "numeric" | "float" | "double" | "real" | "double precision" | "year" => {
                ValueKind::Number
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => ValueKind::Binary,
            _ => ValueKind::Text,
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append the SQL literal of one value (`None` = NULL).
pub fn push_value(out: &mut Vec<u8>, kind: ValueKind, v: Option<&[u8]>) {
    let Some(b) = v else {
        out.extend_from_slice(b"NULL");
        return;
    };
    match kind {
        ValueKind::Number => {
            if b.is_empty() {
                out.extend_from_slice(b"''");
            } else {
                out.extend_from_slice(b);
            }
        }
        ValueKind::Binary => {
            if b.is_empty() {
                out.extend_from_slice(b"''");
            } else {
                out.reserve(2 + 2 * b.len());
                out.extend_from_slice(b"0x");
                for &x in b {
                    out.push(HEX[(x >> 4) as usize]);
                    out.push(HEX[(x & 15) as usize]);
                }
            }
        }
        ValueKind::Text => push_quoted(out, b),
    }
}

pub use super::sql::{push_quoted, quote_ident as ident, quoted};

/// The session settings every item starts with. `db` adds a `USE`.
///
/// - `utf8mb4` client character set (the dump reads with utf8mb4);
/// - `time_zone = '+00:00'` (TIMESTAMP values are dumped in UTC);
/// - no foreign-key or unique checks while loading (any load order works);
/// - `sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'`: not strict (zero dates and
///   other legacy values load as they were), 0 in an AUTO_INCREMENT column stays 0, and
///   backslash escapes on;
/// - `sql_notes = 0` (no notes for `IF NOT EXISTS`).
pub fn header(what: &str, db: Option<&str>) -> String {
    let mut s = format!(
        "-- mnbackup MariaDB dump: {what}\n\
         SET NAMES utf8mb4;\n\
         SET time_zone = '+00:00';\n\
         SET foreign_key_checks = 0;\n\
         SET unique_checks = 0;\n\
         SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION';\n\
         SET sql_notes = 0;\n"
    );
    if let Some(db) = db {
        s.push_str(&format!("USE {};\n", ident(db)));
    }
    s
}

pub use super::names::name_component;

/// The native loader's statement splitter (the rules are the ones documented above).
pub use super::sql::split_statements;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        let mut v = Vec::new();
        push_value(
            &mut v,
            ValueKind::Text,
            Some(b"a'b\\c\nd\0\x1a\r\xf0\x9f\x98\x80"),
        );
        assert_eq!(v, b"'a\\'b\\\\c\\nd\\0\\Z\\r\xf0\x9f\x98\x80'".to_vec());
        v.clear();
        push_value(&mut v, ValueKind::Binary, Some(&[0, 0xff, 0x10]));
        assert_eq!(v, b"0x00ff10");
        v.clear();
        push_value(&mut v, ValueKind::Binary, Some(&[]));
        push_value(&mut v, ValueKind::Number, None);
        push_value(&mut v, ValueKind::Number, Some(b"-1.5e-7"));
        assert_eq!(v, b"''NULL-1.5e-7");
        assert_eq!(ValueKind::of("bigint"), ValueKind::Number);
        assert_eq!(ValueKind::of("point"), ValueKind::Binary);
        assert_eq!(ValueKind::of("json"), ValueKind::Text);
    }
}
