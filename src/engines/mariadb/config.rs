//! `[mariadb]`: how to reach the server, whose credentials, what to dump and how.
//!
//! Credentials are resolved in this order, the first that gives a value winning for each of
//! user, password, host, port and socket:
//!
//! 1. the `[mariadb]` table itself (`user`, `password`, `host`, `port`, `socket`);
//! 2. `password_env`: the name of an environment variable holding the password;
//! 3. `option_file`: a MariaDB option file (`[client]`, `[client-server]`, `[client-mariadb]`,
//!    `[mysqldump]` and `[mariadb-dump]` sections, later sections overriding earlier ones);
//! 4. `zstack_properties`: ZStack's `zstack.properties` (`DB.url`, `DB.user`, `DB.password`,
//!    the password possibly encrypted by `zstack-ctl`, see [`super::zstack`]);
//! 5. defaults: user `root`, no password, `127.0.0.1:3306`.
//!
//! A password never comes from the command line and is never logged: [`MariadbConfig`]'s `Debug`
//! masks it, and [`MariadbConfig::mask`] gives a copy safe to print.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::zstack;

/// Default rows per `INSERT` statement.
pub const DEFAULT_ROWS_PER_INSERT: usize = 500;
/// Default rows per data item of a split table (and the width, in key values, of the buckets of
/// an integer primary key).
pub const DEFAULT_SPLIT_ROWS: u64 = 100_000;

/// The `[mariadb]` table of the configuration.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MariadbConfig {
    /// Server host name or IP (TCP). Default `127.0.0.1` unless `socket` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP port, default 3306.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Unix socket path; when set (here or in the option file) it is used instead of TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// User name (default `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Inline password: the configuration file must then not be world-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A MariaDB option file with user/password/host/port/socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_file: Option<PathBuf>,
    /// Require TLS on TCP connections.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// CA certificate (PEM) to verify the server with (implies `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Databases to dump; default: every database except mysql, information_schema,
    /// performance_schema and sys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
    /// Glob patterns `db.table` of tables whose data (and definition) are left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// Parallel reader connections; default: the number of cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// `[limits] memory` (not a `[mariadb]` key): sizes the dump's items, see
    /// [`MariadbConfig::max_item_bytes`].
    #[serde(skip)]
    pub memory: Option<u64>,
    /// Rows per INSERT statement (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_insert: Option<usize>,
    /// Tables with more rows than this are split into primary-key ranges of about this many rows
    /// (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_rows: Option<u64>,
    /// ZStack's `zstack.properties`: credentials and address from `DB.url`, `DB.user`,
    /// `DB.password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstack_properties: Option<PathBuf>,
    /// ZStack UI's `zstack.ui.properties` (`db_url`, `db_username`, `db_password`): the UI
    /// database(s) it names are dumped with these credentials when the main credentials cannot
    /// see them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zstack_ui_properties: Option<PathBuf>,
    /// What a snapshot must capture for it to count as complete: any of `consistency`,
    /// `routines`, `accounts`, `grants`, `events` (default: all). What is left out here and
    /// cannot be captured is noted in the source info's `warnings`, not recorded as a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Vec<String>>,
    /// Seconds a backup statement waits for a table or backup lock before the snapshot fails
    /// naming the table and the connection holding it (default 120).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_seconds: Option<u64>,
}

impl fmt::Debug for MariadbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.mask();
        f.debug_struct("MariadbConfig")
            .field("host", &m.host)
            .field("port", &m.port)
            .field("socket", &m.socket)
            .field("user", &m.user)
            .field("password", &m.password)
            .field("password_env", &m.password_env)
            .field("option_file", &m.option_file)
            .field("tls", &m.tls)
            .field("tls_ca", &m.tls_ca)
            .field("databases", &m.databases)
            .field("exclude_tables", &m.exclude_tables)
            .field("workers", &m.workers)
            .field("rows_per_insert", &m.rows_per_insert)
            .field("split_rows", &m.split_rows)
            .field("zstack_properties", &m.zstack_properties)
            .field("zstack_ui_properties", &m.zstack_ui_properties)
            .field("require", &m.require)
            .field("lock_wait_seconds", &m.lock_wait_seconds)
            .finish()
    }
}

impl MariadbConfig {
    /// Whether the configuration file itself holds a secret (an inline `password`): the loader
    /// then refuses a world-readable file.
    pub fn has_inline_secret(&self) -> bool {
        self.password.is_some()
    }

    /// A copy with every secret replaced by `********`, for display (`config check`).
    pub fn mask(&self) -> MariadbConfig {
        let mut m = self.clone();
        if m.password.is_some() {
            m.password = Some("********".into());
        }
        m
    }

    /// Parallel reader connections.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .clamp(1, 64)
    }

    /// Rows per INSERT statement.
    pub fn rows_per_insert(&self) -> usize {
        self.rows_per_insert
            .unwrap_or(DEFAULT_ROWS_PER_INSERT)
            .max(1)
    }

    /// The size at which a data item is continued in a `.pN` item: each worker holds the item
    /// it fills and the one being stored, so a quarter of `[limits] memory` (default 64 MiB)
    /// per worker, 1 to 64 MiB.
    pub fn max_item_bytes(&self) -> usize {
        let mem = self.memory.unwrap_or(64 << 20);
        let per = mem / (4 * self.workers() as u64);
        per.clamp(1 << 20, super::dump::MAX_ITEM_BYTES as u64) as usize
    }

    /// Split threshold and bucket size.
    pub fn split_rows(&self) -> u64 {
        self.split_rows.unwrap_or(DEFAULT_SPLIT_ROWS).max(1)
    }

    /// Check what can be checked without connecting (patterns, files exist, numbers sane).
    pub fn validate(&self) -> Result<()> {
        for p in &self.exclude_tables {
            glob::Pattern::new(p).map_err(|e| {
                anyhow::anyhow!("[mariadb] exclude_tables: {p:?} is not a valid glob pattern: {e}")
            })?;
            if !p.contains('.') {
                anyhow::bail!(
                    "[mariadb] exclude_tables: {p:?} must be `database.table` (globs allowed, e.g. \
                     \"zstack.*UsageHistoryVO\")"
                );
            }
        }
        if self.workers == Some(0) {
            anyhow::bail!("[mariadb] workers must be at least 1");
        }
        if self.rows_per_insert == Some(0) {
            anyhow::bail!("[mariadb] rows_per_insert must be at least 1");
        }
        if self.split_rows == Some(0) {
            anyhow::bail!("[mariadb] split_rows must be at least 1");
        }
        for r in self.require.iter().flatten() {
            if !super::privileges::KINDS.contains(&r.as_str()) {
                anyhow::bail!(
                    "[mariadb] require: {r:?} is not something a backup can capture; use any of \
                     {} (default: all of them)",
                    super::privileges::KINDS.join(", ")
                );
            }
        }
        Ok(())
    }

    /// Whether a snapshot that lacks `kind` (see [`super::privileges::KINDS`]) is incomplete.
    pub fn requires(&self, kind: &str) -> bool {
        self.require
            .as_ref()
            .is_none_or(|l| l.iter().any(|k| k == kind))
    }

    /// Whether `db`.`table` matches an `exclude_tables` pattern.
    pub fn is_excluded(&self, db: &str, table: &str) -> bool {
        let full = format!("{db}.{table}");
        self.exclude_tables.iter().any(|p| {
            glob::Pattern::new(p)
                .map(|pat| pat.matches(&full))
                .unwrap_or(false)
        })
    }

    /// Resolve the connection parameters (see the module docs for the order).
    pub fn resolve(&self) -> Result<ConnParams> {
        self.validate()?;
        let mut p = ConnParams::default();
        let mut user_src = "default";
        let mut pass_src = "none";
        // 1. inline
        p.host = self.host.clone();
        p.port = self.port;
        p.socket = self.socket.clone();
        if let Some(u) = &self.user {
            p.user = Some(u.clone());
            user_src = "[mariadb] user";
        }
        if let Some(pw) = &self.password {
            p.password = Some(pw.clone());
            pass_src = "[mariadb] password";
        }
        // 2. environment
        if p.password.is_none() {
            if let Some(var) = &self.password_env {
                match std::env::var(var) {
                    Ok(v) => {
                        p.password = Some(v);
                        pass_src = "[mariadb] password_env";
                    }
                    Err(_) => anyhow::bail!(
                        "[mariadb] password_env names the environment variable {var}, which is not \
                         set (or not UTF-8); export it before running mnbackup, or use \
                         option_file"
                    ),
                }
            }
        }
        // 3. option file
        if let Some(path) = &self.option_file {
            let o = read_option_file(path)?;
            if p.user.is_none() {
                if let Some(u) = o.get("user") {
                    p.user = Some(u.clone());
                    user_src = "option_file";
                }
            }
            if p.password.is_none() {
                if let Some(pw) = o.get("password") {
                    p.password = Some(pw.clone());
                    pass_src = "option_file";
                }
            }
            if p.host.is_none() {
                p.host = o.get("host").cloned();
            }
            if p.port.is_none() {
                if let Some(port) = o.get("port") {
                    p.port = Some(port.parse().with_context(|| {
                        format!(
                            "option file {}: port {port:?} is not a number",
                            path.display()
                        )
                    })?);
                }
            }
            if p.socket.is_none() {
                p.socket = o.get("socket").map(PathBuf::from);
            }
        }
        // 4. zstack.properties
        if let Some(path) = &self.zstack_properties {
            let z = zstack::read_db_properties(path, zstack::PropertyKeys::SERVER)?;
            if p.user.is_none() {
                p.user = Some(z.user.clone());
                user_src = "zstack_properties";
            }
            if p.password.is_none() {
                p.password = Some(z.password.clone());
                pass_src = "zstack_properties";
            }
            if p.host.is_none() && p.socket.is_none() {
                p.host = Some(z.host.clone());
                p.port = p.port.or(Some(z.port));
            }
        }
        p.user_source = user_src.into();
        p.password_source = pass_src.into();
        if p.user.is_none() {
            p.user = Some("root".into());
        }
        p.tls = self.tls || self.tls_ca.is_some();
        p.tls_ca = self.tls_ca.clone();
        p.lock_wait_seconds = self.lock_wait_seconds.unwrap_or(120).max(1);
        Ok(p)
    }

    /// Connection parameters for the UI database, from `zstack_ui_properties`, with the list of
    /// databases its URL names (`zstack_ui` when the URL names none).
    pub fn resolve_ui(&self) -> Result<Option<(ConnParams, Vec<String>)>> {
        let Some(path) = &self.zstack_ui_properties else {
            return Ok(None);
        };
        let z = zstack::read_db_properties(path, zstack::PropertyKeys::UI)?;
        let p = ConnParams {
            host: Some(z.host.clone()),
            port: Some(z.port),
            socket: None,
            user: Some(z.user.clone()),
            password: Some(z.password.clone()),
            user_source: "zstack_ui_properties".into(),
            password_source: "zstack_ui_properties".into(),
            tls: self.tls || self.tls_ca.is_some(),
            tls_ca: self.tls_ca.clone(),
            lock_wait_seconds: self.lock_wait_seconds.unwrap_or(120).max(1),
        };
        let dbs = match z.database {
            Some(d) if !d.is_empty() => vec![d],
            _ => vec!["zstack_ui".to_string()],
        };
        Ok(Some((p, dbs)))
    }
}

/// Resolved connection parameters.
#[derive(Clone, Default)]
pub struct ConnParams {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Where the user name came from (for error messages).
    pub user_source: String,
    /// Where the password came from (for error messages).
    pub password_source: String,
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    /// `lock_wait_timeout` of every session (seconds; 0 means the default, 120).
    pub lock_wait_seconds: u64,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("address", &self.address())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("password_source", &self.password_source)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ConnParams {
    /// `host:port` or the socket path, for messages.
    pub fn address(&self) -> String {
        match &self.socket {
            Some(s) => format!("socket {}", s.display()),
            None => format!(
                "{}:{}",
                self.host.as_deref().unwrap_or("127.0.0.1"),
                self.port.unwrap_or(3306)
            ),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }

    /// mysql_async connection options.
    pub fn opts(&self) -> Result<mysql_async::Opts> {
        let mut b = mysql_async::OptsBuilder::default()
            .user(self.user.clone())
            .pass(self.password.clone())
            .prefer_socket(false)
            .stmt_cache_size(0)
            .tcp_keepalive(Some(std::time::Duration::from_secs(60)));
        match &self.socket {
            Some(s) => {
                b = b
                    .ip_or_hostname("localhost")
                    .socket(Some(s.to_string_lossy().to_string()));
            }
            None => {
                b = b
                    .ip_or_hostname(self.host.clone().unwrap_or_else(|| "127.0.0.1".into()))
                    .tcp_port(self.port.unwrap_or(3306));
                if self.tls {
                    let mut ssl = mysql_async::SslOpts::default();
                    if let Some(ca) = &self.tls_ca {
                        if !ca.exists() {
                            anyhow::bail!(
                                "[mariadb] tls_ca {} does not exist; point it at the PEM file of \
                                 the CA that signed the server's certificate",
                                ca.display()
                            );
                        }
                        ssl = ssl.with_root_certs(vec![ca.clone().into()]);
                    }
                    b = b.ssl_opts(Some(ssl));
                }
            }
        }
        Ok(b.into())
    }
}

/// Read the client settings of a MariaDB option file: the keys of the `[client]`,
/// `[client-server]`, `[client-mariadb]`, `[mysqldump]` and `[mariadb-dump]` sections (later ones
/// win), with `_` and `-` treated alike and quotes removed. `!include` lines are not followed.
pub fn read_option_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the MariaDB option file {} ([mariadb] option_file); check the path and \
             that this user may read it",
            path.display()
        )
    })?;
    Ok(parse_option_file(&text))
}

/// See [`read_option_file`].
pub fn parse_option_file(text: &str) -> BTreeMap<String, String> {
    const SECTIONS: [&str; 5] = [
        "client",
        "client-server",
        "client-mariadb",
        "mysqldump",
        "mariadb-dump",
    ];
    let mut per_section: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); SECTIONS.len()];
    let mut current: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            let name = line[1..line.len() - 1].trim().to_ascii_lowercase();
            current = SECTIONS.iter().position(|s| *s == name);
            continue;
        }
        let Some(i) = current else { continue };
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        let key = key.replace('_', "-").to_ascii_lowercase();
        per_section[i].insert(key, unquote(value));
    }
    let mut out = BTreeMap::new();
    for s in per_section {
        out.extend(s);
    }
    out
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        let inner = &v[1..v.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('s') => out.push(' '),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        // an unquoted value ends at a `#` comment
        match v.find(" #") {
            Some(i) => v[..i].trim().to_string(),
            None => v.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_file_sections() {
        let o = parse_option_file(
            "[mysqld]\nuser=mysql\n[client]\nuser = backup\npassword=\"p#ss w\"\nport=3307\n\
             [mysqldump]\nuser=dumper # comment\n[other]\nhost=x\n",
        );
        assert_eq!(o.get("user").unwrap(), "dumper");
        assert_eq!(o.get("password").unwrap(), "p#ss w");
        assert_eq!(o.get("port").unwrap(), "3307");
        assert!(!o.contains_key("host"));
    }

    #[test]
    fn debug_masks_password() {
        let c = MariadbConfig {
            password: Some("sekret".into()),
            ..Default::default()
        };
        let d = format!("{c:?}");
        assert!(!d.contains("sekret"), "{d}");
        assert!(d.contains("********"));
        assert!(c.has_inline_secret());
        assert_eq!(c.mask().password.as_deref(), Some("********"));
        let p = c.resolve().unwrap();
        assert!(!format!("{p:?}").contains("sekret"));
    }

    #[test]
    fn deny_unknown_and_excludes() {
        let e = toml::from_str::<MariadbConfig>("hots = 'x'").unwrap_err();
        assert!(e.to_string().contains("hots"), "{e}");
        let c: MariadbConfig =
            toml::from_str("exclude_tables = ['zstack.*UsageHistoryVO']\nworkers = 3").unwrap();
        assert!(c.is_excluded("zstack", "VmUsageHistoryVO"));
        assert!(!c.is_excluded("zstack", "VmInstanceEO"));
        assert_eq!(c.workers(), 3);
        let bad: MariadbConfig = toml::from_str("exclude_tables = ['nodot']").unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn password_env_and_precedence() {
        std::env::set_var("MNBACKUP_TEST_PW_1", "from-env");
        let c = MariadbConfig {
            password_env: Some("MNBACKUP_TEST_PW_1".into()),
            ..Default::default()
        };
        assert_eq!(c.resolve().unwrap().password.as_deref(), Some("from-env"));
        let c2 = MariadbConfig {
            password_env: Some("MNBACKUP_TEST_PW_UNSET_XYZ".into()),
            ..Default::default()
        };
        let e = c2.resolve().unwrap_err().to_string();
        assert!(e.contains("MNBACKUP_TEST_PW_UNSET_XYZ"), "{e}");
    }
}
