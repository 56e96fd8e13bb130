//! The statement syntax of the MariaDB dump items, as a native loader needs it: splitting an
//! item into statements, and rewriting database names for `--rename-db` and the drill.
//!
//! [`split_statements`] is the one splitter of the project (the dump side re-exports it as
//! `mnbackup::engines::mariadb::sqlfmt::split_statements`). Its rules:
//!
//! - lines starting with `-- ` and empty lines between statements are comments;
//! - a statement ends at the end of a line that ends with the current delimiter, which is `;`
//!   and is changed by a line `DELIMITER ;;` (and back by `DELIMITER ;`), exactly as the
//!   `mariadb` client does; the delimiter is not part of the statement;
//! - data rows never contain a raw newline (string literals escape `\n` and `\r`), so a line
//!   ending in `;` inside a literal cannot happen; routine, trigger and event bodies (which may
//!   contain `;` at line ends) are always written inside `DELIMITER ;;` blocks.
//!
//! # Renaming databases
//!
//! A rename `A=B` restores the snapshot's database `A` as `B`. The dump items name databases in
//! three places, and [`rename_statement`] rewrites exactly those:
//!
//! - `CREATE DATABASE [IF NOT EXISTS] `A`` (schema items) and `USE `A`` (every item but the
//!   accounts and grants);
//! - qualified identifiers `` `A`.`` and `A.` in DDL statements (view definitions, routine,
//!   trigger and event bodies, which may refer to other databases): the statement is scanned
//!   token by token, and string literals (`'…'`, `"…"`) and comments are left alone;
//! - data items (`INSERT`) are never rewritten: their rows are unqualified, and row values that
//!   happen to contain the text `` `A`. `` stay byte-identical (so the fingerprints match).
//!
//! Not rewritten (documented limits): a database name inside dynamic SQL built from strings in a
//! stored routine (`PREPARE s FROM CONCAT('SELECT … FROM A.t')`), and the accounts and grants
//! items (with renames they are skipped unless asked for, because they would change the live
//! users' privileges).

use std::borrow::Cow;
use std::collections::BTreeMap;

/// Split an item's text into statements (see the module docs); returns the statements without
/// their delimiter. `DELIMITER` lines and comment lines are consumed.
pub fn split_statements(text: &str) -> Vec<String> {
    statement_slices(text)
        .into_iter()
        .map(Cow::into_owned)
        .collect()
}

/// [`split_statements`] without copying: each statement borrows from `text` (only a statement
/// with `\r\n` line ends is copied), so loading an item does not hold it twice in memory.
pub fn statement_slices(text: &str) -> Vec<Cow<'_, str>> {
    let mut out = Vec::new();
    let mut delim = ";".to_string();
    // Byte offset of the current statement's first line, and its copy once a line had `\r`.
    let mut start: Option<usize> = None;
    let mut owned: Option<String> = None;
    let mut pos = 0;
    for line in text.split('\n') {
        let line_start = pos;
        pos += line.len() + 1;
        let trimmed = line.trim_end_matches('\r');
        let had_cr = trimmed.len() != line.len();
        if start.is_none() {
            let t = trimmed.trim();
            if t.is_empty() || t.starts_with("-- ") || t == "--" {
                continue;
            }
            if let Some(d) = t
                .strip_prefix("DELIMITER ")
                .or_else(|| t.strip_prefix("delimiter "))
            {
                delim = d.trim().to_string();
                continue;
            }
        }
        let s0 = *start.get_or_insert(line_start);
        if let Some(body) = trimmed.trim_end().strip_suffix(delim.as_str()) {
            let stmt = match owned.take() {
                Some(mut o) => {
                    o.push_str(body);
                    Cow::Owned(o.trim().to_string())
                }
                None => Cow::Borrowed(text[s0..line_start + body.len()].trim()),
            };
            if !stmt.is_empty() {
                out.push(stmt);
            }
            start = None;
        } else {
            if had_cr && owned.is_none() {
                owned = Some(text[s0..line_start].to_string());
            }
            if let Some(o) = owned.as_mut() {
                o.push_str(trimmed);
                o.push('\n');
            }
        }
    }
    if let Some(s0) = start {
        let rest = match owned {
            Some(o) => Cow::Owned(o.trim().to_string()),
            None => Cow::Borrowed(text[s0..].trim()),
        };
        if !rest.is_empty() {
            out.push(rest);
        }
    }
    out
}

/// Append a quoted, escaped string literal: the escapes of `mysql_real_escape_string` (`\0`,
/// `\n`, `\r`, `\\`, `\'`, `\Z`), so the literal holds any bytes, never a raw line end (the
/// splitter's rule above) and never a NUL, as long as the session has no
/// `NO_BACKSLASH_ESCAPES` (every item and every session of mnbackup sets its `sql_mode`).
pub fn push_quoted(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'\'');
    for &c in b {
        match c {
            0 => out.extend_from_slice(b"\\0"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\'' => out.extend_from_slice(b"\\'"),
            0x1a => out.extend_from_slice(b"\\Z"),
            c => out.push(c),
        }
    }
    out.push(b'\'');
}

/// [`push_quoted`] as a String (for names, settings and query parameters, which are UTF-8).
pub fn quoted(s: &str) -> String {
    let mut v = Vec::new();
    push_quoted(&mut v, s.as_bytes());
    String::from_utf8(v).expect("escaping keeps UTF-8")
}

/// Quote an identifier with backticks (doubling any backtick inside).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Whether `stmt` starts with `word` (ASCII case-insensitive) followed by whitespace.
fn starts_with_word(stmt: &str, word: &str) -> bool {
    stmt.len() > word.len()
        && stmt.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        && stmt.as_bytes()[word.len()].is_ascii_whitespace()
}

/// Parse a leading identifier (backticked or bare) of `s`; returns (name, bytes consumed).
fn parse_ident(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    if b.first() == Some(&b'`') {
        let mut name = String::new();
        let mut i = 1;
        let mut start = 1;
        while i < b.len() {
            if b[i] == b'`' {
                if b.get(i + 1) == Some(&b'`') {
                    name.push_str(&s[start..=i]);
                    i += 2;
                    start = i;
                    continue;
                }
                name.push_str(&s[start..i]);
                return Some((name, i + 1));
            }
            i += 1;
        }
        None
    } else {
        let n = b.iter().take_while(|&&c| is_ident_char(c)).count();
        (n > 0).then(|| (s[..n].to_string(), n))
    }
}

/// Rewrite `USE db` and `CREATE DATABASE [IF NOT EXISTS] db` of a statement; None when the
/// statement is neither (or names a database that is not renamed).
fn rename_db_statement(stmt: &str, renames: &BTreeMap<String, String>) -> Option<String> {
    let (prefix_len, rest) = if starts_with_word(stmt, "USE") {
        let rest = stmt[3..].trim_start();
        (stmt.len() - rest.len(), rest)
    } else if starts_with_word(stmt, "CREATE") {
        let r = stmt[6..].trim_start();
        if !starts_with_word(r, "DATABASE") && !starts_with_word(r, "SCHEMA") {
            return None;
        }
        let kw = if starts_with_word(r, "DATABASE") {
            8
        } else {
            6
        };
        let mut r2 = r[kw..].trim_start();
        let up = r2.to_ascii_uppercase();
        if up.starts_with("IF NOT EXISTS") {
            r2 = r2[13..].trim_start();
        }
        (stmt.len() - r2.len(), r2)
    } else {
        return None;
    };
    let (name, used) = parse_ident(rest)?;
    let to = renames.get(&name)?;
    Some(format!(
        "{}{}{}",
        &stmt[..prefix_len],
        quote_ident(to),
        &rest[used..]
    ))
}

/// Rewrite the database names of one statement of a DDL item (schema, routines, views,
/// triggers, events): `USE`, `CREATE DATABASE` and every qualified identifier `db.` outside
/// string literals and comments (see the module docs).
pub fn rename_statement(stmt: &str, renames: &BTreeMap<String, String>) -> String {
    if renames.is_empty() {
        return stmt.to_string();
    }
    if let Some(s) = rename_db_statement(stmt, renames) {
        return s;
    }
    let b = stmt.as_bytes();
    let mut out = String::with_capacity(stmt.len() + 16);
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' => {
                // string literal with backslash escapes and doubled quotes
                i += 1;
                while i < b.len() {
                    if b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if b.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-')
                && b.get(i + 2).is_none_or(|x| x.is_ascii_whitespace()) =>
            {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') && b.get(i + 2) != Some(&b'!') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'`' => {
                let Some((name, used)) = parse_ident(&stmt[i..]) else {
                    break;
                };
                let end = i + used;
                let prev_dot = i > 0 && b[i - 1] == b'.';
                if !prev_dot && b.get(end) == Some(&b'.') {
                    if let Some(to) = renames.get(&name) {
                        out.push_str(&stmt[copied..i]);
                        out.push_str(&quote_ident(to));
                        copied = end;
                    }
                }
                i = end;
            }
            c if is_ident_char(c) && (i == 0 || !is_ident_char(b[i - 1])) => {
                let n = b[i..].iter().take_while(|&&x| is_ident_char(x)).count();
                let end = i + n;
                let prev_dot = i > 0 && b[i - 1] == b'.';
                let is_number = b[i].is_ascii_digit();
                if !prev_dot && !is_number && b.get(end) == Some(&b'.') {
                    if let Some(to) = renames.get(&stmt[i..end]) {
                        out.push_str(&stmt[copied..i]);
                        out.push_str(&quote_ident(to));
                        copied = end;
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&stmt[copied.min(stmt.len())..]);
    out
}

/// Rewrite a statement of a data item: only `USE db` is renamed (rows are never touched).
pub fn rename_data_statement(stmt: &str, renames: &BTreeMap<String, String>) -> Option<String> {
    if renames.is_empty() || !starts_with_word(stmt, "USE") {
        return None;
    }
    rename_db_statement(stmt, renames)
}

/// Rows in an `INSERT … VALUES` statement of a data item (one row per line after the first).
pub fn insert_rows(stmt: &str) -> u64 {
    if !starts_with_word(stmt, "INSERT") {
        return 0;
    }
    stmt.bytes().filter(|&b| b == b'\n').count() as u64
}

/// The first `n` characters of a statement, on one line, for messages.
pub fn excerpt(stmt: &str, n: usize) -> String {
    let one: String = stmt
        .chars()
        .take(n)
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if stmt.chars().count() > n {
        format!("{one}…")
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's reading of a quoted literal (`sql_lex.cc`, `get_text`): `\0 \n \r \Z \b \t`
    /// map to their bytes, `\` before any other byte is that byte (`\%` and `\_` aside, which
    /// never appear unescaped here), `''` is `'`.
    fn server_unescape(lit: &[u8]) -> Vec<u8> {
        assert!(lit.len() >= 2 && lit[0] == b'\'' && lit[lit.len() - 1] == b'\'');
        let body = &lit[1..lit.len() - 1];
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            let c = body[i];
            assert_ne!(c, b'\'', "a bare quote inside the literal ends it");
            if c == b'\\' {
                i += 1;
                out.push(match body[i] {
                    b'0' => 0,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b'Z' => 0x1a,
                    b'b' => 8,
                    b't' => b'\t',
                    x => x,
                });
            } else {
                out.push(c);
            }
            i += 1;
        }
        out
    }

    /// The one escaper holds every byte: each of the 256 bytes alone and all of them together
    /// come back unchanged, and the literal never holds a raw line end, NUL or ^Z (which the
    /// splitter and the `mariadb` client on Windows-style input would trip over).
    #[test]
    fn one_escaper_for_all_bytes() {
        let all: Vec<u8> = (0..=255u8).collect();
        let mut inputs: Vec<Vec<u8>> = all.iter().map(|&b| vec![b]).collect();
        inputs.push(all.clone());
        inputs.push(b"it's \\ a 'test'\\".to_vec());
        for input in inputs {
            let mut lit = Vec::new();
            push_quoted(&mut lit, &input);
            let body = &lit[1..lit.len() - 1];
            for bad in [b'\n', b'\r', 0, 0x1a] {
                assert!(!body.contains(&bad), "raw byte {bad} in {lit:?}");
            }
            assert_eq!(server_unescape(&lit), input);
        }
        assert_eq!(quoted("it's\\"), "'it\\'s\\\\'");
        assert_eq!(quote_ident("a`b"), "`a``b`");
        // Text that is split into statements stays one statement.
        let stmt = format!("INSERT INTO t VALUES ({});", quoted("a;\nb;\r\n"));
        assert_eq!(split_statements(&stmt).len(), 1);
    }

    fn r(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn splitting() {
        let text = "-- c\nSET NAMES utf8mb4;\nINSERT INTO t VALUES\n(1,'a;'),\n(2,'b');\n\
                    DELIMITER ;;\nCREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND;;\n\
                    DELIMITER ;\nSELECT 3;\n";
        let s = split_statements(text);
        assert_eq!(s.len(), 4, "{s:#?}");
        assert_eq!(s[1], "INSERT INTO t VALUES\n(1,'a;'),\n(2,'b')");
        assert_eq!(insert_rows(&s[1]), 2);
        assert!(s[2].starts_with("CREATE PROCEDURE p()") && s[2].ends_with("END"));
        assert_eq!(s[3], "SELECT 3");
        // the borrowing splitter gives the same statements, borrowed
        let b = statement_slices(text);
        assert_eq!(
            b,
            s.iter()
                .map(|x| Cow::Borrowed(x.as_str()))
                .collect::<Vec<_>>()
        );
        assert!(b.iter().all(|c| matches!(c, Cow::Borrowed(_))));
        // CRLF line ends: the same statements (copied), and a trailing statement without delimiter
        let crlf = text.replace('\n', "\r\n") + "SELECT 4";
        let c = statement_slices(&crlf);
        assert_eq!(c.len(), 5);
        assert_eq!(&c[..4], &b[..]);
        assert_eq!(c[4], "SELECT 4");
    }

    #[test]
    fn renames_use_and_create_database() {
        let m = r(&[("zstack", "zstack_old"), ("a`b", "c")]);
        assert_eq!(rename_statement("USE `zstack`", &m), "USE `zstack_old`");
        assert_eq!(rename_statement("use zstack", &m), "use `zstack_old`");
        assert_eq!(rename_statement("USE `a``b`", &m), "USE `c`");
        assert_eq!(
            rename_statement(
                "CREATE DATABASE IF NOT EXISTS `zstack` /*!40100 DEFAULT CHARACTER SET utf8mb3 */",
                &m
            ),
            "CREATE DATABASE IF NOT EXISTS `zstack_old` /*!40100 DEFAULT CHARACTER SET utf8mb3 */"
        );
        assert_eq!(rename_statement("USE `other`", &m), "USE `other`");
        assert_eq!(
            rename_data_statement("USE `zstack`", &m).as_deref(),
            Some("USE `zstack_old`")
        );
        assert_eq!(
            rename_data_statement("INSERT INTO `t` VALUES\n('`zstack`.x')", &m),
            None
        );
    }

    #[test]
    fn renames_qualified_identifiers_outside_literals() {
        let m = r(&[("zstack", "zs2"), ("zstack_rest", "zr2")]);
        let v = "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW \
                 `VmInstanceVO` AS select `zstack`.`VmInstanceEO`.`uuid` AS `uuid` from \
                 `zstack`.`VmInstanceEO` join zstack_rest.RestAPIVO where `zstack`.`VmInstanceEO`.`name` \
                 <> '`zstack`.x' and \"zstack.y\" = x.zstack -- zstack.z\n and 1.5 > 0";
        let out = rename_statement(v, &m);
        assert_eq!(
            out,
            "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW \
             `VmInstanceVO` AS select `zs2`.`VmInstanceEO`.`uuid` AS `uuid` from \
             `zs2`.`VmInstanceEO` join `zr2`.RestAPIVO where `zs2`.`VmInstanceEO`.`name` \
             <> '`zstack`.x' and \"zstack.y\" = x.zstack -- zstack.z\n and 1.5 > 0"
        );
        // A table named like the database is left alone when it is not a qualifier.
        assert_eq!(
            rename_statement("SELECT zstack FROM t", &m),
            "SELECT zstack FROM t"
        );
        assert_eq!(
            rename_statement("SELECT 'it''s', `zstack`.`t`.a FROM t", &m),
            "SELECT 'it''s', `zs2`.`t`.a FROM t"
        );
        assert_eq!(rename_statement("X", &BTreeMap::new()), "X");
    }

    #[test]
    fn excerpts() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
