use anyhow::{bail, Context, Result};

use super::tool::run_command;

pub use crate::model::cassandra_info::KEYSPACE_CQL;

/// Split CQL text (such as `DESCRIBE KEYSPACE` output) into statements, without their `;`,
/// trimmed, empty ones dropped. `;` inside string literals (`'…'`, `$$…$$`), quoted identifiers
/// and comments (`--`, `//`, `/* */`) does not split; comments are dropped.
pub fn split_cql_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let b = text.as_bytes();
    let mut i = 0;
    let mut push = |cur: &mut String| {
        let t = cur.trim();
        if !t.is_empty() {
            out.push(t.to_string());
        }
        cur.clear();
    };
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("--") || rest.starts_with("//") {
            let end = rest.find('\n').map(|n| i + n).unwrap_or(b.len());
            i = end;
            continue;
        }
        if let Some(body) = rest.strip_prefix("/*") {
            i = body.find("*/").map(|n| i + 2 + n + 2).unwrap_or(b.len());
            cur.push(' ');
            continue;
        }
        let quoted_end = if let Some(body) = rest.strip_prefix("$$") {
            Some(body.find("$$").map(|n| 2 + n + 2).unwrap_or(rest.len()))
        } else if b[i] == b'\'' || b[i] == b'"' {
            // A doubled quote is an escaped quote inside the literal.
            let q = b[i];
            let mut j = i + 1;
            loop {
                if j >= b.len() {
                    break Some(b.len() - i);
                }
                if b[j] == q {
                    if j + 1 < b.len() && b[j + 1] == q {
                        j += 2;
                        continue;
                    }
                    break Some(j + 1 - i);
                }
                j += 1;
            }
        } else {
            None
        };
        if let Some(n) = quoted_end {
            cur.push_str(&rest[..n]);
            i += n;
            continue;
        }
        if b[i] == b';' {
            push(&mut cur);
            i += 1;
            continue;
        }
        let c = rest.chars().next().expect("in bounds");
        cur.push(c);
        i += c.len_utf8();
    }
    push(&mut cur);
    out
}

/// `CREATE [CUSTOM] <KEYSPACE|TABLE|TYPE|INDEX|…> name …` with `IF NOT EXISTS` added after the
/// object kind when it is not there yet; other statements unchanged.
pub fn with_if_not_exists(stmt: &str) -> String {
    let words: Vec<(usize, &str)> = stmt
        .split_whitespace()
        .take(6)
        .map(|w| (w.as_ptr() as usize - stmt.as_ptr() as usize, w))
        .collect();
    let up = |k: usize| words.get(k).map(|(_, w)| w.to_ascii_uppercase());
    if up(0).as_deref() != Some("CREATE") {
        return stmt.to_string();
    }
    let mut k = 1;
    if up(k).as_deref() == Some("CUSTOM") {
        k += 1;
    }
    match up(k).as_deref() {
        Some(
            "KEYSPACE" | "SCHEMA" | "TABLE" | "COLUMNFAMILY" | "TYPE" | "INDEX" | "FUNCTION"
            | "AGGREGATE" | "TRIGGER",
        ) => {}
        Some("MATERIALIZED") if up(k + 1).as_deref() == Some("VIEW") => k += 1,
        _ => return stmt.to_string(),
    }
    if up(k + 1).as_deref() == Some("IF") {
        return stmt.to_string();
    }
    let (pos, w) = words[k];
    let at = pos + w.len();
    format!("{} IF NOT EXISTS{}", &stmt[..at], &stmt[at..])
}

/// The statements of a keyspace's `DESCRIBE KEYSPACE` output (`keyspace.cql`), each made
/// `IF NOT EXISTS`, as a file for `cqlsh -f`. Errors when it holds no `CREATE KEYSPACE`.
pub fn keyspace_cql_script(ks: &str, text: &str) -> Result<String> {
    let stmts = split_cql_statements(text);
    let has_keyspace = stmts.iter().any(|s| {
        let w: Vec<String> = s
            .split_whitespace()
            .take(2)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        w == ["CREATE", "KEYSPACE"]
    });
    if !has_keyspace {
        bail!(
            "the backup's keyspace.cql of {ks} holds no CREATE KEYSPACE statement; the snapshot \
             may be damaged"
        );
    }
    let mut out = String::new();
    for s in stmts {
        out.push_str(&with_if_not_exists(&s));
        out.push_str(";\n\n");
    }
    Ok(out)
}

/// The table id of `ks.table` from the node's schema (`system_schema.tables`, Cassandra 3.0+)
/// through `cqlsh -e`, as 32 hex digits (the suffix of the live directory's name); None when the
/// table does not exist.
pub fn schema_table_id(cqlsh: &[String], ks: &str, table: &str) -> Result<Option<String>> {
    let mut argv = cqlsh.to_vec();
    argv.extend([
        "-e".to_string(),
        format!(
            "SELECT id FROM system_schema.tables WHERE keyspace_name = '{ks}' AND table_name = \
             '{table}'"
        ),
    ]);
    let out = run_command(
        &argv,
        "Check that Cassandra is running and accepts CQL (port 9042), and the cqlsh command and \
         credentials in [cassandra] cqlsh.",
    )
    .with_context(|| format!("reading the table id of {ks}.{table} from system_schema.tables"))?;
    for line in out.lines() {
        let w = line.trim();
        let is_uuid = w.len() == 36
            && w.bytes().enumerate().all(|(i, b)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        if is_uuid {
            return Ok(Some(w.replace('-', "").to_ascii_lowercase()));
        }
        if w.starts_with("(0 rows)") {
            return Ok(None);
        }
    }
    bail!(
        "cannot read the table id of {ks}.{table}: cqlsh printed neither an id nor \"(0 rows)\" \
         ({:?}); check [cassandra] cqlsh",
        out.trim().chars().take(300).collect::<String>()
    )
}

/// Cassandra's own keyspaces (`system`, `system_schema`, `system_auth`, …, `dse_*`): they hold
/// the node's identity, tokens and schema; never backed up by default.
pub fn is_system_keyspace(name: &str) -> bool {
    matches!(
        name,
        "system"
            | "system_auth"
            | "system_schema"
            | "system_distributed"
            | "system_traces"
            | "system_views"
            | "system_virtual_schema"
    ) || name.starts_with("dse_")
}

/// Keyspaces the restore never places into a live node: Cassandra's own
/// ([`is_system_keyspace`]) and, to be safe with releases whose own keyspaces this list does not
/// name, every `system*` keyspace.
pub fn never_placed(ks: &str) -> bool {
    is_system_keyspace(ks) || ks.starts_with("system")
}
