//! Cassandra (Mevoco 1.x monitoring data): put backed-up SSTables back into a node's data
//! directory and make the node load them.
//!
//! This module is also the home of what both halves of the Cassandra support share (the backup
//! half lives in the root crate, `mnbackup::sources::cassandra`, which depends on this crate; the
//! reverse is not allowed):
//!
//! * [`Nodetool`] / [`run_command`]: running `nodetool` and `cqlsh` with a clear error when they
//!   fail, and the JMX password passed through a private `-pwf` file instead of the command line;
//! * [`SstableFile`]: SSTable component file names of every format (2.x `ks-table-ka-1-Data.db`,
//!   3.x+ `md-1-big-Data.db`, 5.0 `da-<uuid-ish>-bti-Data.db`);
//! * [`ExpectedDigest`], [`Digester`], [`HashingReader`]: the whole-file digest Cassandra writes
//!   beside each `Data.db` (`Digest.crc32`, `Digest.adler32`, `Digest.sha1`), checked while the
//!   file streams;
//!
//! and the restore itself: [`plan`] (what goes where, changes nothing) and [`restore`].
//!
//! The restore takes a narrow input, [`RestoreComponent`]: keyspace, table, the component's path
//! relative to the table directory, its size and a closure that opens its bytes. The caller
//! (the `mnbackup restore` command) builds these from the snapshot's `cassandra/<ks>/<table>/…`
//! items with [`RestoreComponent::from_item_name`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------------------------

/// CRC-32 (IEEE 802.3, the one `java.util.zip.CRC32` computes), via `crc32fast`.
#[derive(Clone, Default)]
pub struct Crc32(crc32fast::Hasher);

impl Crc32 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The CRC of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.clone().finalize()
    }
}

/// Adler-32 (`java.util.zip.Adler32`), via `adler2`.
#[derive(Clone, Default)]
pub struct Adler32(adler2::Adler32);

impl Adler32 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.write_slice(data);
    }
    /// The checksum of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0.checksum()
    }
}

/// SHA-1, via the `sha1` crate. Only used to check the `Digest.sha1` of old (2.0) SSTables,
/// never as a security measure.
#[derive(Clone, Default)]
pub struct Sha1(sha1::Sha1);

impl Sha1 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        sha1::Digest::update(&mut self.0, data);
    }
    /// The hash of everything fed so far, lowercase hex.
    pub fn hex(&self) -> String {
        let d = sha1::Digest::finalize(self.0.clone());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Which whole-file checksum a `Digest.*` component holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    /// `Digest.crc32`: decimal CRC32 of `Data.db` (3.0 and later: `ma` … `oa`, `da`).
    Crc32,
    /// `Digest.adler32`: decimal Adler-32 of `Data.db` (2.2, `la`). 2.1 (`ka`) wrote the same
    /// decimal Adler-32 into a file named `Digest.sha1`.
    Adler32,
    /// `Digest.sha1`: hex SHA-1 of `Data.db` in `sha1sum` format (2.0, `jb`, and older).
    Sha1,
}

impl fmt::Display for DigestAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgo::Crc32 => "CRC32",
            DigestAlgo::Adler32 => "Adler-32",
            DigestAlgo::Sha1 => "SHA-1",
        })
    }
}

/// What a `Digest.*` component says the `Data.db` beside it must hash to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedDigest {
    pub algo: DigestAlgo,
    /// Decimal for CRC32 / Adler-32 (as Cassandra writes it), lowercase hex for SHA-1.
    pub value: String,
    /// The digest component's file name (e.g. `md-1-big-Digest.crc32`).
    pub component: String,
}

impl ExpectedDigest {
    /// Parse a digest component. `component` is its file name (its suffix tells the algorithm,
    /// except for 2.1's `Digest.sha1` files, which hold a decimal Adler-32).
    pub fn parse(component: &str, text: &[u8]) -> Result<ExpectedDigest> {
        let text = String::from_utf8_lossy(text);
        let first = text.split_whitespace().next().unwrap_or("");
        let bad = || {
            anyhow!(
                "digest component {component} holds {:?}, which is not a checksum Cassandra \
                 writes; the SSTable may be damaged (run `nodetool scrub` on the table)",
                text.chars().take(80).collect::<String>()
            )
        };
        let decimal = |algo| -> Result<ExpectedDigest> {
            let v: u64 = first.parse().map_err(|_| bad())?;
            if v > u32::MAX as u64 {
                return Err(bad());
            }
            Ok(ExpectedDigest {
                algo,
                value: v.to_string(),
                component: component.to_string(),
            })
        };
        if component.ends_with("Digest.crc32") {
            decimal(DigestAlgo::Crc32)
        } else if component.ends_with("Digest.adler32") {
            decimal(DigestAlgo::Adler32)
        } else if component.ends_with("Digest.sha1") {
            if first.len() == 40 && first.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(ExpectedDigest {
                    algo: DigestAlgo::Sha1,
                    value: first.to_ascii_lowercase(),
                    component: component.to_string(),
                })
            } else {
                // Cassandra 2.1 (`ka`) named the file Digest.sha1 but wrote a decimal Adler-32.
                decimal(DigestAlgo::Adler32)
            }
        } else {
            bail!("{component} is not a Cassandra digest component")
        }
    }
}

/// A running whole-file checksum of one of the [`DigestAlgo`]s.
#[derive(Clone)]
pub enum Digester {
    Crc32(Crc32),
    Adler32(Adler32),
    Sha1(Box<Sha1>),
}

impl Digester {
    /// A fresh digester for `algo`.
    pub fn new(algo: DigestAlgo) -> Self {
        match algo {
            DigestAlgo::Crc32 => Digester::Crc32(Crc32::new()),
            DigestAlgo::Adler32 => Digester::Adler32(Adler32::new()),
            DigestAlgo::Sha1 => Digester::Sha1(Box::default()),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Crc32(c) => c.update(data),
            Digester::Adler32(a) => a.update(data),
            Digester::Sha1(s) => s.update(data),
        }
    }

    /// The value in the form Cassandra writes it (decimal, or hex for SHA-1).
    pub fn value(&self) -> String {
        match self {
            Digester::Crc32(c) => c.value().to_string(),
            Digester::Adler32(a) => a.value().to_string(),
            Digester::Sha1(s) => s.hex(),
        }
    }
}

/// Passes reads through, feeding an optional [`Digester`] and counting bytes.
pub struct HashingReader<R> {
    inner: R,
    /// The digester, when the file has a digest to check.
    pub digester: Option<Digester>,
    /// Bytes read so far.
    pub bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`; `algo` None only counts bytes.
    pub fn new(inner: R, algo: Option<DigestAlgo>) -> Self {
        HashingReader {
            inner,
            digester: algo.map(Digester::new),
            bytes: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(d) = &mut self.digester {
            d.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The error for a `Data.db` whose digest does not match its digest component. `what` names the
/// SSTable (its path or its table and stem).
pub fn digest_mismatch(what: &str, expected: &ExpectedDigest, actual: &str) -> anyhow::Error {
    anyhow!(
        "SSTable {what} is corrupt: Data.db {} {actual} does not match {} {}; run `nodetool \
         scrub` on the table (or `nodetool repair` to fetch the data from another replica) and \
         take the backup again",
        expected.algo,
        expected.component,
        expected.value
    )
}

// ---------------------------------------------------------------------------------------------
// SSTable file names
// ---------------------------------------------------------------------------------------------

/// One SSTable component file name, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstableFile {
    /// Everything before the component (`md-1-big`, `ks-table-ka-3`): the SSTable's identity.
    pub stem: String,
    /// Format version (`ka`, `la`, `md`, `nb`, `oa`, `da`, …).
    pub version: String,
    /// Generation: a number, or 5.0's time-based id (`3gdd_0jkt_…`).
    pub generation: String,
    /// `big` or `bti`; None for 2.x names, which have no format part.
    pub format: Option<String>,
    /// The component (`Data.db`, `Digest.crc32`, `TOC.txt`, `SAI+…db`, …).
    pub component: String,
}

impl SstableFile {
    /// Parse a component file name; None for names that are not SSTable components
    /// (`manifest.json`, `schema.cql`, temporary files, …).
    pub fn parse(name: &str) -> Option<SstableFile> {
        let is_version = |v: &str| v.len() == 2 && v.bytes().all(|b| b.is_ascii_lowercase());
        let is_generation =
            |g: &str| !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let parts: Vec<&str> = name.splitn(4, '-').collect();
        // 3.0+: <version>-<generation>-<format>-<component>
        if parts.len() == 4
            && is_version(parts[0])
            && is_generation(parts[1])
            && matches!(parts[2], "big" | "bti")
            && !parts[3].is_empty()
        {
            return Some(SstableFile {
                stem: format!("{}-{}-{}", parts[0], parts[1], parts[2]),
                version: parts[0].to_string(),
                generation: parts[1].to_string(),
                format: Some(parts[2].to_string()),
                component: parts[3].to_string(),
            });
        }
        // 2.x: <keyspace>-<table>-<version>-<generation>-<component>
        // (keyspace and table names are [A-Za-z0-9_], so '-' separates reliably; `tmp`/`tmplink`
        // files of an unfinished write are not components).
        let parts: Vec<&str> = name.splitn(5, '-').collect();
        if parts.len() == 5
            && is_version(parts[2])
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && !parts[3].is_empty()
            && !parts[4].is_empty()
        {
            return Some(SstableFile {
                stem: format!("{}-{}-{}-{}", parts[0], parts[1], parts[2], parts[3]),
                version: parts[2].to_string(),
                generation: parts[3].to_string(),
                format: None,
                component: parts[4].to_string(),
            });
        }
        None
    }

    /// True for `Digest.crc32`, `Digest.adler32`, `Digest.sha1`.
    pub fn is_digest(&self) -> bool {
        self.component.starts_with("Digest.")
    }

    /// True for `Data.db`.
    pub fn is_data(&self) -> bool {
        self.component == "Data.db"
    }
}

/// Split a table directory name `<table>-<32 hex id>` into (table, Some(id)); a 2.0-style
/// directory without an id gives (name, None).
pub fn split_table_dir(name: &str) -> (&str, Option<&str>) {
    if let Some((t, id)) = name.rsplit_once('-') {
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !t.is_empty() {
            return (t, Some(id));
        }
    }
    (name, None)
}

/// True for a valid keyspace or table name (`[A-Za-z0-9_]+`, at most 222 characters).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 222 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// Running nodetool and cqlsh
// ---------------------------------------------------------------------------------------------

/// Split a configured command line (`nodetool`, `/opt/cassandra/bin/nodetool -Dfoo=1`,
/// `"/path with spaces/cqlsh" 10.0.0.5`) into words: whitespace separates, single and double
/// quotes group, backslash escapes the next character outside single quotes.
pub fn split_command_line(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// An argv rendered for messages, with the value after `-pw`/`--password`/`-p` of cqlsh masked.
pub fn display_argv(argv: &[String]) -> String {
    let mut out = Vec::with_capacity(argv.len());
    let mut mask_next = false;
    for a in argv {
        if mask_next {
            out.push("****".to_string());
            mask_next = false;
            continue;
        }
        if a == "-pw" || a == "--password" {
            mask_next = true;
        }
        if let Some(flag) = a.strip_prefix("--password=") {
            let _ = flag;
            out.push("--password=****".to_string());
            continue;
        }
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            out.push(format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            out.push(a.clone());
        }
    }
    out.join(" ")
}

/// Default of [`set_command_timeout`]: 10 minutes (a flush or snapshot of a large node).
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 600;

static COMMAND_TIMEOUT_SECS: AtomicU64 = AtomicU64::new(DEFAULT_COMMAND_TIMEOUT_SECS);
static CANCEL_COMMANDS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long [`run_command`] lets an external command (nodetool, cqlsh) run before it kills it
/// (`[cassandra] command_timeout_seconds`).
pub fn set_command_timeout(secs: u64) {
    COMMAND_TIMEOUT_SECS.store(secs.max(1), Ordering::SeqCst);
}

/// The flag that makes a running (and any later) [`run_command`] kill its command's process
/// group and fail: set on a shutdown request (SIGTERM). Cleared with `store(false)`.
pub fn cancel_commands_flag() -> &'static std::sync::atomic::AtomicBool {
    &CANCEL_COMMANDS
}

/// Kill the whole process group `pgid` (the command and everything it started).
fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Run `argv` (program and arguments), wait, and return its stdout. A program that cannot be
/// started or exits non-zero gives an error with its stderr and `hint` (what to check).
///
/// The command runs in its own process group; when it runs longer than the command timeout
/// ([`set_command_timeout`]) or a shutdown is requested ([`cancel_commands_flag`]), the whole
/// group is killed (a hung nodetool's JVM included) and the error names the command.
pub fn run_command(argv: &[String], hint: &str) -> Result<String> {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("empty command line; {hint}"))?;
    let shown = display_argv(argv);
    tracing::debug!(command = %shown, "running");
    let timeout = Duration::from_secs(COMMAND_TIMEOUT_SECS.load(Ordering::SeqCst));
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow!(
                    "cannot run `{shown}`: {prog} was not found ({e}); install it or set the full \
                     path of the command in the configuration. {hint}"
                )
            } else {
                anyhow!("cannot run `{shown}`: {e}. {hint}")
            }
        })?;
    let pgid = child.id();
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let out_rx = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err_rx = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {}
            Err(e) => {
                kill_group(pgid);
                let _ = child.wait();
                bail!("waiting for `{shown}`: {e}");
            }
        }
        let cancelled = CANCEL_COMMANDS.load(Ordering::SeqCst);
        if cancelled || start.elapsed() >= timeout {
            kill_group(pgid);
            let _ = child.wait();
            if cancelled {
                bail!(
                    "`{shown}` was stopped by a shutdown request (SIGTERM) after {:.1}s; it and \
                     its child processes were killed",
                    start.elapsed().as_secs_f64()
                );
            }
            bail!(
                "`{shown}` did not finish within {}s and was killed (with its child processes). \
                 Raise [cassandra] command_timeout_seconds if the node is just slow. {hint}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Output: a process the command left behind may hold the pipes; do not wait for it forever.
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
            kill_group(pgid);
            rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default()
        })
    };
    let stdout = collect(out_rx);
    let stderr = collect(err_rx);
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let stdout = String::from_utf8_lossy(&stdout);
        let mut detail = stderr.trim().to_string();
        if detail.is_empty() {
            detail = stdout.trim().to_string();
        }
        if detail.len() > 4000 {
            detail = format!("{}…", detail.chars().take(4000).collect::<String>());
        }
        let status = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        bail!("`{shown}` failed ({status}): {detail}\n{hint}");
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Where the JMX password comes from.
#[derive(Clone)]
pub enum JmxPassword {
    /// The password itself (read from an environment variable or a plain file). Passed to
    /// nodetool through a private temporary `-pwf` file, never on the command line.
    Value(String),
    /// A JMX password file (`<user> <password>` lines) handed to nodetool as `-pwf <file>`.
    PasswordFile(PathBuf),
}

impl fmt::Debug for JmxPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JmxPassword::Value(_) => f.write_str("Value(****)"),
            JmxPassword::PasswordFile(p) => f.debug_tuple("PasswordFile").field(p).finish(),
        }
    }
}

/// How to run `nodetool` against the local node.
#[derive(Debug, Clone)]
pub struct Nodetool {
    /// Program and leading arguments (`["nodetool"]`, `["/opt/cassandra/bin/nodetool"]`).
    pub argv: Vec<String>,
    /// JMX host (`-h`); None leaves nodetool's default (127.0.0.1).
    pub host: Option<String>,
    /// JMX port (`-p`); None leaves nodetool's default (7199).
    pub port: Option<u16>,
    /// JMX user (`-u`).
    pub user: Option<String>,
    /// JMX password, when JMX authentication is on.
    pub password: Option<JmxPassword>,
}

impl Nodetool {
    /// `nodetool` from the PATH, default host and port, no authentication.
    pub fn new(argv: Vec<String>) -> Self {
        Nodetool {
            argv,
            host: None,
            port: None,
            user: None,
            password: None,
        }
    }

    fn hint(&self) -> String {
        format!(
            "Check that Cassandra is running (`systemctl status cassandra`, `nodetool status`), \
             that its JMX port is reachable at {}:{} (set [cassandra] host / port), and the JMX \
             credentials ([cassandra] jmx_user, jmx_password_env or jmx_password_file) when JMX \
             authentication is on.",
            self.host.as_deref().unwrap_or("127.0.0.1"),
            self.port.unwrap_or(7199)
        )
    }

    /// Run `nodetool [connection options] <args…>` and return its stdout; a failure's error
    /// holds nodetool's stderr and what to check.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut argv = self.argv.clone();
        if argv.is_empty() {
            argv.push("nodetool".to_string());
        }
        if let Some(h) = &self.host {
            argv.extend(["-h".to_string(), h.clone()]);
        }
        if let Some(p) = self.port {
            argv.extend(["-p".to_string(), p.to_string()]);
        }
        let mut _pwf_guard = None;
        match (&self.user, &self.password) {
            (Some(u), pw) => {
                argv.extend(["-u".to_string(), u.clone()]);
                match pw {
                    Some(JmxPassword::PasswordFile(p)) => {
                        argv.extend(["-pwf".to_string(), p.display().to_string()]);
                    }
                    Some(JmxPassword::Value(v)) => {
                        let f = PrivateTempFile::create("jmx", format!("{u} {v}\n").as_bytes())
                            .context("writing the temporary JMX password file for nodetool")?;
                        argv.extend(["-pwf".to_string(), f.path.display().to_string()]);
                        _pwf_guard = Some(f);
                    }
                    None => {}
                }
            }
            (None, Some(_)) => bail!(
                "a JMX password is configured ([cassandra] jmx_password_env / jmx_password_file) \
                 but no jmx_user: nodetool needs both; set [cassandra] jmx_user"
            ),
            (None, None) => {}
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        run_command(&argv, &self.hint())
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file only its owner can read (mode 0600), removed when dropped.
pub struct PrivateTempFile {
    /// Where it is.
    pub path: PathBuf,
}

impl PrivateTempFile {
    /// Create a new private file in the temporary directory holding `content`.
    pub fn create(stem: &str, content: &[u8]) -> Result<PrivateTempFile> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mnbackup-{stem}-{}-{n}-{nanos:08x}",
            std::process::id()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let guard = PrivateTempFile { path };
        f.write_all(content)
            .with_context(|| format!("writing {}", guard.path.display()))?;
        Ok(guard)
    }
}

impl Drop for PrivateTempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Restore
// ---------------------------------------------------------------------------------------------

/// Opens one component's bytes (called at most once, only by [`restore`]).
pub type OpenFn<'a> = Box<dyn FnOnce() -> Result<Box<dyn Read + 'a>> + 'a>;

/// One backed-up file of a table: an SSTable component, the table's `schema.cql` or the
/// snapshot's `manifest.json`; or of a keyspace: its `keyspace.cql` (the `DESCRIBE KEYSPACE`
/// output), with an empty `table`.
pub struct RestoreComponent<'a> {
    pub keyspace: String,
    /// Empty for the keyspace's `keyspace.cql`.
    pub table: String,
    /// Path relative to the table directory: a component file name (`md-1-big-Data.db`),
    /// `.<index>/<file>` for a secondary index, `schema.cql`, `manifest.json`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits as backed up (`0o640`); None: the restore's default (0644).
    pub mode: Option<u32>,
    /// Opens the bytes.
    pub open: OpenFn<'a>,
}

impl fmt::Debug for RestoreComponent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestoreComponent")
            .field("keyspace", &self.keyspace)
            .field("table", &self.table)
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<'a> RestoreComponent<'a> {
    /// Build from a snapshot item name `cassandra/<ks>/<table>/<name…>` (or
    /// `cassandra/<ks>/keyspace.cql`, which gets an empty `table`); None for other items.
    pub fn from_item_name(item: &str, size: u64, open: OpenFn<'a>) -> Option<Self> {
        let rest = item.strip_prefix("cassandra/")?;
        let mut it = rest.splitn(3, '/');
        let (ks, second, third) = (it.next()?, it.next()?, it.next());
        let (table, name) = match third {
            Some(name) => (second, name),
            None if second == KEYSPACE_CQL => ("", KEYSPACE_CQL),
            None => return None,
        };
        Some(RestoreComponent {
            keyspace: ks.to_string(),
            table: table.to_string(),
            name: name.to_string(),
            size,
            mode: None,
            open,
        })
    }
}

/// The item (`cassandra/<ks>/keyspace.cql`) holding a keyspace's `DESCRIBE KEYSPACE` output.
pub const KEYSPACE_CQL: &str = "keyspace.cql";

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

/// Where and how to restore.
#[derive(Debug, Clone)]
pub struct CassandraRestoreConfig {
    /// The node's data directory (`data_file_directories`; `/var/lib/cassandra/data`).
    pub data_dir: PathBuf,
    /// How to run nodetool (refresh / import).
    pub nodetool: Nodetool,
    /// `cqlsh` program and arguments (host, `-u`, …), used as `<cqlsh…> -f <file>` to create
    /// missing tables; None: the restore reports what to run instead.
    pub cqlsh: Option<Vec<String>>,
    /// Owner to give the restored files (`cassandra`); skipped with a note when no such user
    /// exists; None never changes ownership.
    pub owner: Option<String>,
    /// Load with `nodetool import <ks> <table> <dir>` from a staging directory instead of
    /// placing the files in the live table directory and running `nodetool refresh`.
    pub use_import: bool,
    /// Staging directory for `use_import` (default: `mnbackup-import` beside `data_dir`).
    pub import_dir: Option<PathBuf>,
    /// Replication for a keyspace that has to be created when the backup has no `keyspace.cql`
    /// for it (schema.cql does not hold it).
    pub keyspace_replication: String,
}

impl CassandraRestoreConfig {
    /// Defaults: refresh in place, owner `cassandra`, SimpleStrategy RF 1 for new keyspaces.
    pub fn new(data_dir: impl Into<PathBuf>, nodetool: Nodetool) -> Self {
        CassandraRestoreConfig {
            data_dir: data_dir.into(),
            nodetool,
            cqlsh: None,
            owner: Some("cassandra".to_string()),
            use_import: false,
            import_dir: None,
            keyspace_replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}"
                .to_string(),
        }
    }

    fn staging_root(&self) -> PathBuf {
        self.import_dir.clone().unwrap_or_else(|| {
            self.data_dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join("mnbackup-import")
        })
    }
}

/// One file of a [`TablePlan`].
#[derive(Debug, Clone, Serialize)]
pub struct PlannedFile {
    /// Path relative to the table directory.
    pub name: String,
    pub size: u64,
    /// A file of that name already exists at the destination (restore accepts it only when its
    /// content is identical, and never overwrites it).
    pub exists: bool,
}

/// What happens to one table.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub keyspace: String,
    pub table: String,
    /// The live table directory found (`<data_dir>/<ks>/<table>-<id>`), or None when the table
    /// does not exist on this node yet.
    pub table_dir: Option<PathBuf>,
    /// Where the files are written: the table directory, or the import staging directory.
    pub dest_dir: Option<PathBuf>,
    /// Other directories of the same table (left by a dropped and recreated table).
    pub other_dirs: Vec<PathBuf>,
    /// The table is not restored: why, and what to do (e.g. its live directory cannot be told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Refused because the node's release cannot read the SSTables' format: the whole restore
    /// is refused before anything is placed.
    pub format_refused: bool,
    /// The table is missing and is created from the backup's `schema.cql` or `keyspace.cql`
    /// (through cqlsh).
    pub creates_table: bool,
    /// The keyspace directory is missing too (the keyspace is created first).
    pub keyspace_missing: bool,
    /// The missing keyspace (and its tables) is created from the backup's `keyspace.cql`, with
    /// its backed-up replication.
    pub from_keyspace_cql: bool,
    pub files: Vec<PlannedFile>,
    /// SSTables in the backup (distinct stems).
    pub sstables: usize,
    pub bytes: u64,
    /// Commands the restore runs for this table, in order.
    pub commands: Vec<String>,
    /// The table in the node's schema: `exists`, `created through cqlsh`, or why it is missing
    /// and not created (no cqlsh configured, no schema in the backup) or refused.
    pub schema: String,
    /// The CQL the restore runs through cqlsh for this table (its keyspace's `CREATE KEYSPACE`
    /// first when that is missing too), when it is created; filled by [`plan_with_cql`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_cql: Option<String>,
}

/// The result of [`plan`]: nothing has been changed.
#[derive(Debug, Clone, Serialize)]
pub struct CassandraPlan {
    pub data_dir: PathBuf,
    pub tables: Vec<TablePlan>,
    pub notes: Vec<String>,
}

impl CassandraPlan {
    /// Total bytes to write.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

impl fmt::Display for CassandraPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Cassandra: {} table(s), {} byte(s) into {}",
            self.tables.len(),
            self.bytes(),
            self.data_dir.display()
        )?;
        for t in &self.tables {
            let dest = match &t.dest_dir {
                Some(d) => d.display().to_string(),
                None => "(table missing on this node)".to_string(),
            };
            writeln!(
                f,
                "  {}.{}: {} SSTable(s), {} file(s), {} bytes -> {}",
                t.keyspace,
                t.table,
                t.sstables,
                t.files.len(),
                t.bytes,
                dest
            )?;
            let existing = t.files.iter().filter(|p| p.exists).count();
            if existing > 0 {
                writeln!(
                    f,
                    "    {existing} file(s) already exist there (kept when identical, refused \
                     otherwise)"
                )?;
            }
            writeln!(
                f,
                "    live directory: {}",
                t.table_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "(none yet)".to_string())
            )?;
            writeln!(f, "    schema: {}", t.schema)?;
            if let Some(cql) = &t.create_cql {
                if t.commands.iter().any(|c| c.contains(" -f <")) {
                    writeln!(f, "    cqlsh runs:")?;
                } else {
                    writeln!(
                        f,
                        "    to create it yourself (cqlsh -f FILE, then run the restore again):"
                    )?;
                }
                for l in cql.lines() {
                    writeln!(f, "      {l}")?;
                }
            }
            for c in &t.commands {
                writeln!(f, "    run: {c}")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// What [`restore`] did for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub keyspace: String,
    pub table: String,
    pub dir: PathBuf,
    pub files_written: usize,
    /// Files that were already there with identical content.
    pub files_present: usize,
    pub bytes_written: u64,
    /// Data.db files whose digest was verified.
    pub digests_verified: usize,
    /// `refresh` or `import`; `journal` when an earlier run loaded it (nothing done now).
    pub loaded_with: String,
}

/// What the restore journal records of one Cassandra table (see [`restore_journaled`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournaledTable {
    /// The table's live directory it was loaded into.
    pub dir: PathBuf,
    /// The files placed for the load, under the names they were placed under (Cassandra renames
    /// each when it loads it).
    pub placed: Vec<PathBuf>,
    /// Backed-up component name -> the name it was placed under (its free generation).
    pub generations: BTreeMap<String, String>,
    /// The load command ran and its load was proven.
    pub loaded: bool,
    /// The load command.
    pub command: String,
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CassandraRestoreReport {
    pub tables: Vec<TableReport>,
    /// Tables not restored, with what must be done before running the restore again.
    pub pending: Vec<String>,
    pub notes: Vec<String>,
}

/// Metadata view of the input, shared by [`plan`] and [`restore`].
struct TableInput {
    keyspace: String,
    table: String,
    /// (name, size) of files to place, sorted.
    files: Vec<(String, u64)>,
    has_schema: bool,
}

fn check_relative_name(name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('/').collect();
    let ok = match parts.as_slice() {
        [f] => is_plain_file_name(f),
        [d, f] => {
            d.len() > 1 && d.starts_with('.') && is_valid_name(&d[1..]) && is_plain_file_name(f)
        }
        _ => false,
    };
    if !ok {
        return Err(anyhow!(
            "refusing Cassandra component name {name:?}: not a file name in a table directory \
             (or a `.<index>/` secondary index directory); the snapshot may be damaged or forged"
        ));
    }
    Ok(())
}

fn is_plain_file_name(f: &str) -> bool {
    !f.is_empty() && f != "." && f != ".." && !f.contains('/') && !f.contains('\0')
}

/// The per-table inputs, and the keyspaces the backup has a `keyspace.cql` for.
fn group_inputs(
    components: &[(String, String, String, u64)],
) -> Result<(Vec<TableInput>, BTreeSet<String>)> {
    let mut map: BTreeMap<(String, String), TableInput> = BTreeMap::new();
    let mut ks_cql = BTreeSet::new();
    for (ks, table, name, size) in components {
        if table.is_empty() && name == KEYSPACE_CQL && is_valid_name(ks) {
            ks_cql.insert(ks.clone());
            continue;
        }
        if !is_valid_name(ks) || !is_valid_name(table) {
            bail!(
                "refusing Cassandra keyspace/table name {ks:?}.{table:?}: Cassandra names are \
                 [A-Za-z0-9_]; the snapshot may be damaged or forged"
            );
        }
        check_relative_name(name)?;
        let t = map
            .entry((ks.clone(), table.clone()))
            .or_insert_with(|| TableInput {
                keyspace: ks.clone(),
                table: table.clone(),
                files: Vec::new(),
                has_schema: false,
            });
        match name.as_str() {
            "schema.cql" => t.has_schema = true,
            "manifest.json" => {}
            _ => t.files.push((name.clone(), *size)),
        }
    }
    let mut out: Vec<TableInput> = map.into_values().collect();
    for t in &mut out {
        t.files.sort();
    }
    Ok((out, ks_cql))
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
/// the node's identity, tokens and schema and are never placed into a live node.
pub fn is_system_keyspace(ks: &str) -> bool {
    ks.starts_with("system") || ks.starts_with("dse_")
}

/// Whether a Cassandra release of major version `major` reads SSTable format `version`
/// (BigFormat/BtiFormat `isCompatible`: 3.x reads 2.1's `ka` onwards, 4.x and 5.0 read 3.0's
/// `ma` onwards); None for a release this table does not know.
pub fn release_reads(major: u32, version: &str) -> Option<bool> {
    if version.len() != 2 {
        return None;
    }
    let at_least = |min: &str| version >= min;
    match major {
        2 => Some(matches!(version, "jb" | "ka" | "la")),
        3 => Some(at_least("ka") && !at_least("n")),
        4 => Some(at_least("ma") && !at_least("o")),
        5 => Some(at_least("ma") && !at_least("p") || version == "da"),
        _ => None,
    }
}

/// The release of the node (`nodetool version`: `ReleaseVersion: 3.11.16`).
pub fn node_release(nodetool: &Nodetool) -> Result<String> {
    let out = nodetool
        .run(&["version"])
        .context("asking the node its Cassandra release (`nodetool version`)")?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("ReleaseVersion:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            anyhow!(
                "`nodetool version` printed no ReleaseVersion ({:?})",
                out.trim()
            )
        })
}

/// Where table `ks.table` lives on the node.
#[derive(Debug, Clone)]
enum Live {
    /// The live directory (from the schema's table id, or the only directory there is).
    Dir(PathBuf),
    /// The table does not exist.
    Missing,
    /// It cannot be determined safely: why, and what to do.
    Unknown(String),
}

/// The live directory of `ks.table`: from the schema's table id when cqlsh is configured (a
/// dropped and re-created table leaves its old directory on disk, so modification times prove
/// nothing), else the only directory of the table; several directories without cqlsh cannot be
/// told apart and are refused.
fn live_dir(cfg: &CassandraRestoreConfig, ks: &str, table: &str, dirs: &[PathBuf]) -> Result<Live> {
    if let Some(cqlsh) = &cfg.cqlsh {
        return Ok(match schema_table_id(cqlsh, ks, table)? {
            None => Live::Missing,
            Some(id) => {
                let dir = cfg.data_dir.join(ks).join(format!("{table}-{id}"));
                if dir.is_dir() {
                    Live::Dir(dir)
                } else {
                    Live::Unknown(format!(
                        "{ks}.{table}: the schema gives table id {id}, but its directory {} does \
                         not exist: is {} the node's data_file_directories (cassandra.yaml)? Not \
                         restored; fix [cassandra] data_dirs (or --cassandra-data-dir) and run \
                         the restore again",
                        dir.display(),
                        cfg.data_dir.display()
                    ))
                }
            }
        });
    }
    Ok(match dirs {
        [] => Live::Missing,
        [one] => Live::Dir(one.clone()),
        many => Live::Unknown(format!(
            "{ks}.{table}: {} directories exist ({}); one is left by a dropped table and only \
             the table id in the schema tells which is live. Not restored: configure [cassandra] \
             cqlsh so the restore can read `SELECT id FROM system_schema.tables`, or move the \
             dead directory away, then run the restore again",
            many.len(),
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// Every directory of table `ks.table` under `data_dir` (live and dead ones), sorted by name.
pub fn find_table_dirs(data_dir: &Path, ks: &str, table: &str) -> Result<Vec<PathBuf>> {
    let ks_dir = data_dir.join(ks);
    let rd = match fs::read_dir(&ks_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", ks_dir.display())),
    };
    let mut found = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("listing {}", ks_dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if split_table_dir(name).0 != table || !e.file_type()?.is_dir() {
            continue;
        }
        found.push(e.path());
    }
    found.sort();
    Ok(found)
}

fn build_plan(
    cfg: &CassandraRestoreConfig,
    inputs: &[TableInput],
    ks_cql: &BTreeSet<String>,
) -> Result<CassandraPlan> {
    let mut plan = CassandraPlan {
        data_dir: cfg.data_dir.clone(),
        tables: Vec::new(),
        notes: Vec::new(),
    };
    if !cfg.data_dir.is_dir() {
        plan.notes.push(format!(
            "{} does not exist: is Cassandra installed, and is this its data_file_directories?",
            cfg.data_dir.display()
        ));
    }
    // The node's release decides which SSTable formats it reads.
    let release = match node_release(&cfg.nodetool) {
        Ok(r) => Some(r),
        Err(e) => {
            plan.notes.push(format!(
                "the SSTable formats could not be checked against the node's Cassandra release: \
                 {e:#}"
            ));
            None
        }
    };
    let major: Option<u32> = release
        .as_deref()
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse().ok());
    for t in inputs {
        if is_system_keyspace(&t.keyspace) {
            plan.notes.push(format!(
                "{}.{} is not restored: Cassandra's own keyspaces (system*) hold the node's \
                 identity, tokens and schema; placing them into a live node would corrupt it",
                t.keyspace, t.table
            ));
            continue;
        }
        let unreadable: BTreeSet<String> = t
            .files
            .iter()
            .filter_map(|(n, _)| SstableFile::parse(n.rsplit('/').next().unwrap_or(n)))
            .map(|s| s.version)
            .filter(|v| major.and_then(|m| release_reads(m, v)) == Some(false))
            .collect();
        let format_refusal = (!unreadable.is_empty()).then(|| {
            format!(
                "{}.{}: its SSTables are of format {} which Cassandra {} on this node cannot \
                 read; nothing is placed. Restore onto a node of the release that wrote them \
                 (then upgrade it and run `nodetool upgradesstables`), or convert them with \
                 `sstableupgrade` first",
                t.keyspace,
                t.table,
                unreadable.iter().cloned().collect::<Vec<_>>().join(", "),
                release.as_deref().unwrap_or("?")
            )
        });
        let dirs = find_table_dirs(&cfg.data_dir, &t.keyspace, &t.table)?;
        let (table_dir, mut refused) = match live_dir(cfg, &t.keyspace, &t.table, &dirs)? {
            Live::Dir(d) => (Some(d), None),
            Live::Missing => (None, None),
            Live::Unknown(why) => (None, Some(why)),
        };
        let format_refused = format_refusal.is_some();
        if format_refused {
            refused = format_refusal;
        }
        let other_dirs: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| Some(*d) != table_dir.as_ref())
            .cloned()
            .collect();
        if refused.is_none() && !other_dirs.is_empty() {
            plan.notes.push(format!(
                "{}.{}: {} is {}; not used: {} (left by a dropped table)",
                t.keyspace,
                t.table,
                match &table_dir {
                    Some(d) => d.display().to_string(),
                    None => "the table (to be created)".to_string(),
                },
                if table_dir.is_some() {
                    "the live directory (table id from system_schema.tables)"
                } else {
                    "missing from the schema"
                },
                other_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(why) = &refused {
            plan.notes.push(format!("REFUSED {why}"));
        }
        let keyspace_missing = !cfg.data_dir.join(&t.keyspace).is_dir();
        let dest_dir = if cfg.use_import {
            Some(cfg.staging_root().join(&t.keyspace).join(&t.table))
        } else {
            table_dir.clone()
        };
        let mut files = Vec::new();
        let mut stems = BTreeSet::new();
        for (name, size) in &t.files {
            let exists = dest_dir
                .as_ref()
                .map(|d| d.join(name).symlink_metadata().is_ok())
                .unwrap_or(false);
            let base = name.rsplit('/').next().unwrap_or(name);
            if let Some(s) = SstableFile::parse(base) {
                if !name.contains('/') {
                    stems.insert(s.stem);
                }
            }
            files.push(PlannedFile {
                name: name.clone(),
                size: *size,
                exists,
            });
        }
        let mut commands = Vec::new();
        let from_keyspace_cql = refused.is_none()
            && table_dir.is_none()
            && keyspace_missing
            && ks_cql.contains(&t.keyspace);
        let creates_table =
            refused.is_none() && table_dir.is_none() && (t.has_schema || from_keyspace_cql);
        let cqlsh = cfg
            .cqlsh
            .as_ref()
            .map(|c| display_argv(c))
            .unwrap_or_else(|| "cqlsh".to_string());
        // Without cqlsh nothing is created: no cqlsh command runs, and the table is not loaded.
        let will_create = creates_table && cfg.cqlsh.is_some();
        if from_keyspace_cql && will_create {
            commands.push(format!(
                "{cqlsh} -f <CREATE KEYSPACE {} and its tables, IF NOT EXISTS, from the backup's \
                 keyspace.cql>",
                t.keyspace
            ));
            let note = format!(
                "keyspace {} does not exist on this node: it is created with its backed-up \
                 replication and tables from the backup's keyspace.cql (DESCRIBE KEYSPACE)",
                t.keyspace
            );
            if !plan.notes.contains(&note) {
                plan.notes.push(note);
            }
        } else if will_create {
            commands.push(format!(
                "{cqlsh} -f <schema of {}.{} from the backup's schema.cql>",
                t.keyspace, t.table
            ));
        }
        let schema = if let Some(why) = &refused {
            format!("REFUSED: {why}")
        } else if table_dir.is_some() {
            if cfg.cqlsh.is_some() {
                "exists (its table id in system_schema.tables names the live directory)".to_string()
            } else {
                "exists".to_string()
            }
        } else if creates_table && cfg.cqlsh.is_some() {
            if from_keyspace_cql {
                format!(
                    "missing, with its keyspace: created through cqlsh from the backup's \
                     keyspace.cql (CREATE KEYSPACE {} … and its tables, IF NOT EXISTS)",
                    t.keyspace
                )
            } else {
                "missing: created through cqlsh from the backup's schema.cql".to_string()
            }
        } else if creates_table {
            format!(
                "MISSING and NOT created: no cqlsh is configured ([cassandra] cqlsh). The \
                 restore writes the CREATE statements to a file, leaves {}.{} pending and exits \
                 non-zero; configure cqlsh, or run the statements with cqlsh -f yourself, then \
                 run the restore again",
                t.keyspace, t.table
            )
        } else {
            format!(
                "MISSING and NOT created: the backup has no schema.cql for {}.{}; create the \
                 table first, then run the restore again",
                t.keyspace, t.table
            )
        };
        if creates_table && cfg.cqlsh.is_none() {
            plan.notes.push(format!(
                "{}.{} does not exist on this node and no cqlsh is configured ([cassandra] \
                 cqlsh): the restore cannot create it, leaves it pending and exits non-zero",
                t.keyspace, t.table
            ));
        }
        if table_dir.is_none() && !creates_table && refused.is_none() {
            plan.notes.push(format!(
                "{}.{} does not exist on this node and the backup has no schema.cql for it \
                 (Cassandra before 3.0 does not write one): create the table first (start the \
                 application that owns it, e.g. the management node or KairosDB, or run its \
                 CREATE TABLE in cqlsh), then run the restore again",
                t.keyspace, t.table
            ));
        }
        let nt = display_argv(&cfg.nodetool.argv);
        let loads = refused.is_none() && (table_dir.is_some() || will_create);
        if loads && cfg.use_import {
            commands.push(format!(
                "{nt} import {} {} {}",
                t.keyspace,
                t.table,
                dest_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ));
        } else if loads {
            commands.push(format!("{nt} refresh {} {}", t.keyspace, t.table));
        }
        plan.tables.push(TablePlan {
            keyspace: t.keyspace.clone(),
            table: t.table.clone(),
            table_dir,
            dest_dir,
            other_dirs,
            refused,
            format_refused,
            creates_table,
            keyspace_missing,
            from_keyspace_cql,
            bytes: files.iter().map(|f| f.size).sum(),
            sstables: stems.len(),
            files,
            commands,
            schema,
            create_cql: None,
        });
    }
    Ok(plan)
}

fn metadata_of(components: &[RestoreComponent<'_>]) -> Vec<(String, String, String, u64)> {
    components
        .iter()
        .map(|c| (c.keyspace.clone(), c.table.clone(), c.name.clone(), c.size))
        .collect()
}

/// What a restore of `components` would do: per table the directory the files go to, the
/// files, bytes, the live directory, whether the table exists or is created through cqlsh, and
/// the commands that will run. Reads the data directory, changes nothing, and never opens the
/// components (see [`plan_with_cql`] for the CREATE statements).
pub fn plan(
    cfg: &CassandraRestoreConfig,
    components: &[RestoreComponent<'_>],
) -> Result<CassandraPlan> {
    let (inputs, ks_cql) = group_inputs(&metadata_of(components))?;
    build_plan(cfg, &inputs, &ks_cql)
}

/// [`plan`], with each created table's CQL read from the backup (`create_cql`): the statements
/// cqlsh will run. Reads only the small schema.cql / keyspace.cql of the tables to be created.
pub fn plan_with_cql(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
) -> Result<CassandraPlan> {
    let mut plan = plan(cfg, &components)?;
    let mut schemas: BTreeMap<(String, String), OpenFn<'_>> = BTreeMap::new();
    for c in components {
        if c.name == KEYSPACE_CQL && c.table.is_empty() || c.name == "schema.cql" {
            schemas.insert((c.keyspace, c.table), c.open);
        }
    }
    // The CQL of the tables to be created (the small schema.cql / keyspace.cql only).
    let mut ks_done = BTreeSet::new();
    for tp in plan.tables.iter_mut().filter(|t| t.creates_table) {
        let mut cql = String::new();
        if tp.from_keyspace_cql {
            if ks_done.insert(tp.keyspace.clone()) {
                let open = schemas
                    .remove(&(tp.keyspace.clone(), String::new()))
                    .ok_or_else(|| {
                        anyhow!(
                            "the backup lists keyspace.cql of {} but it cannot be read; the \
                             snapshot may be damaged (mnbackup verify)",
                            tp.keyspace
                        )
                    })?;
                let what = format!("keyspace.cql of {}", tp.keyspace);
                let text = read_all_limited(open, &what, 16 << 20)?;
                cql = keyspace_cql_script(&tp.keyspace, &String::from_utf8_lossy(&text))?;
            } else {
                cql = format!("(created with keyspace {} above)\n", tp.keyspace);
            }
        } else if let Some(open) = schemas.remove(&(tp.keyspace.clone(), tp.table.clone())) {
            if tp.keyspace_missing && ks_done.insert(tp.keyspace.clone()) {
                cql.push_str(&format!(
                    "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {};\n",
                    tp.keyspace, cfg.keyspace_replication
                ));
            }
            let what = format!("{}.{} schema.cql", tp.keyspace, tp.table);
            let text = read_all_limited(open, &what, 16 << 20)?;
            cql.push_str(String::from_utf8_lossy(&text).trim_end());
            cql.push('\n');
        }
        tp.create_cql = Some(cql);
    }
    Ok(plan)
}

/// `<sub/>stem` of an SSTable component name (`.idx/md-1-big` for `.idx/md-1-big-Data.db`).
fn stem_key(name: &str) -> Option<String> {
    let (sub, base) = match name.rsplit_once('/') {
        Some((d, b)) => (format!("{d}/"), b),
        None => (String::new(), name),
    };
    SstableFile::parse(base).map(|s| format!("{sub}{}", s.stem))
}

/// The name of component `sf` under generation `gen`.
fn with_generation(sf: &SstableFile, gen: u64) -> String {
    match &sf.format {
        Some(fmt) => format!("{}-{gen}-{fmt}-{}", sf.version, sf.component),
        // 2.x: <ks>-<table>-<version>-<generation>: keep what precedes the generation.
        None => {
            let prefix = sf.stem.rsplit_once('-').map(|(p, _)| p).unwrap_or(&sf.stem);
            format!("{prefix}-{gen}-{}", sf.component)
        }
    }
}

/// The highest numeric SSTable generation in `dir` (0 when none or no such directory).
fn max_generation(dir: &Path) -> Result<u64> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut max = 0;
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if let Some(sf) = e.file_name().to_str().and_then(SstableFile::parse) {
            if let Ok(g) = sf.generation.parse::<u64>() {
                max = max.max(g);
            }
        }
    }
    Ok(max)
}

/// New names for the components `names` (relative to `dest_dir`): every SSTable with a numeric
/// generation gets one above the highest in its destination directory, in the backed-up order,
/// so no name collides with the node's own SSTables. 5.0's time-based ids are unique already
/// and keep their names.
fn fresh_names(dest_dir: &Path, names: &[String]) -> Result<BTreeMap<String, String>> {
    // per directory ("" or ".idx"): backed-up numeric generations, ascending
    let mut gens: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for n in names {
        let (sub, base) = n.rsplit_once('/').unwrap_or(("", n));
        if let Some(g) = SstableFile::parse(base).and_then(|s| s.generation.parse::<u64>().ok()) {
            gens.entry(sub.to_string()).or_default().insert(g);
        }
    }
    let mut map_gen: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for (sub, set) in &gens {
        let base = max_generation(&dest_dir.join(sub))?;
        for (i, g) in set.iter().enumerate() {
            map_gen.insert((sub.clone(), *g), base + 1 + i as u64);
        }
    }
    let mut out = BTreeMap::new();
    for n in names {
        let (sub, base) = n.rsplit_once('/').unwrap_or(("", n));
        let Some(sf) = SstableFile::parse(base) else {
            continue;
        };
        let Ok(g) = sf.generation.parse::<u64>() else {
            continue;
        };
        let new_base = with_generation(&sf, map_gen[&(sub.to_string(), g)]);
        let new = if sub.is_empty() {
            new_base
        } else {
            format!("{sub}/{new_base}")
        };
        out.insert(n.clone(), new);
    }
    Ok(out)
}

/// True when `dir` holds a `*-Data.db` of `size` bytes whose BLAKE3 is `hash`.
fn has_data_content(dir: &Path, size: u64, hash: &blake3::Hash) -> Result<bool> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with("-Data.db") {
            continue;
        }
        let md = e.metadata()?;
        if md.is_file() && md.len() == size && blake3_file(&e.path())? == *hash {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove `dir` and its subdirectories when they hold no file.
fn remove_empty_dirs(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_empty_dirs(&e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// Removes the listed files on drop unless disarmed.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.0.drain(..) {
            let _ = fs::remove_file(p);
        }
    }
}

fn read_all_limited(open: OpenFn<'_>, what: &str, limit: u64) -> Result<Vec<u8>> {
    let r = open().with_context(|| format!("opening {what} from the backup"))?;
    let mut buf = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {what} from the backup"))?;
    if buf.len() as u64 > limit {
        bail!("{what} in the backup is larger than {limit} bytes; the snapshot may be damaged");
    }
    Ok(buf)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// uid and gid of a local user (from /etc/passwd, then `getent passwd`).
pub fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let parse = |text: &str| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() >= 4 && f[0] == name {
                Some((f[2].parse().ok()?, f[3].parse().ok()?))
            } else {
                None
            }
        })
    };
    if let Some(found) = fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| parse(&t))
    {
        return Some(found);
    }
    let out = Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

struct StagedFile {
    tmp: PathBuf,
    dest: PathBuf,
    blake3: blake3::Hash,
    size: u64,
}

fn blake3_file(path: &Path) -> Result<blake3::Hash> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize())
}

/// Write one component to a temporary name in `dest`'s directory (fsynced), computing BLAKE3 and
/// the SSTable digest when `algo` is given.
fn stage_file(
    reader: &mut dyn Read,
    dest: &Path,
    expected_size: u64,
    algo: Option<DigestAlgo>,
    what: &str,
    cleanup: &mut Cleanup,
) -> Result<(StagedFile, Option<String>)> {
    let dir = dest.parent().expect("component destination has a parent");
    let base = dest
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("component");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".mnbackup-tmp-{}-{n}-{base}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    cleanup.0.push(tmp.clone());
    let mut hr = HashingReader::new(reader, algo);
    let mut b3 = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = hr
            .read(&mut buf)
            .with_context(|| format!("reading {what} from the backup"))?;
        if n == 0 {
            break;
        }
        b3.update(&buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", tmp.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    if hr.bytes != expected_size {
        bail!(
            "{what} read back as {} bytes, but the snapshot records {expected_size}; the backup \
             is damaged (run `mnbackup check`)",
            hr.bytes
        );
    }
    let digest = hr.digester.as_ref().map(|d| d.value());
    Ok((
        StagedFile {
            tmp,
            dest: dest.to_path_buf(),
            blake3: b3.finalize(),
            size: hr.bytes,
        },
        digest,
    ))
}

fn create_dir_owned(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_owned(parent, owner)?;
    }
    fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        let _ = std::os::unix::fs::chown(dir, Some(uid), Some(gid));
    }
    Ok(())
}

/// Restore `components` into the node of `cfg`:
///
/// 1. tables missing on the node are created with `<cqlsh> -f <file>`: a missing keyspace for
///    which the backup has a `keyspace.cql` (its `DESCRIBE KEYSPACE`) is created from it, with
///    its backed-up replication and all its tables (statements made `IF NOT EXISTS`); other
///    missing tables from their `schema.cql` (a missing keyspace first, with
///    `keyspace_replication`); without a configured cqlsh the table is skipped and the report's
///    `pending` says what to run;
/// 2. per table, the live directory `<data_dir>/<ks>/<table>-<id>/` is found (the id differs on
///    a new node; `snapshots/` and `backups/` are never touched); every component is written to
///    a temporary name, fsynced, its size and (for `Data.db`) its digest checked, then linked to
///    its name, never replacing an existing file (an identical file is accepted as already
///    restored, a different one is refused), and the directory fsynced;
/// 3. files are given to the `owner` user when it exists;
/// 4. `nodetool refresh <ks> <table>` (or `nodetool import <ks> <table> <dir>`) loads them.
///
/// A failure stops the restore with an error naming the table; tables finished before it stay
/// restored (and a rerun accepts their identical files).
pub fn restore(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
) -> Result<CassandraRestoreReport> {
    restore_journaled(cfg, components, None)
}

/// [`restore`], recording per table in `journal` what was placed (before the load command) and
/// that it was loaded (after the proof). A table the journal records as loaded into the same live
/// directory is not placed or loaded again, and neither is one whose placed files are all gone
/// (Cassandra renamed them: the load ran, the run stopped before recording it): a rerun never
/// loads a table twice, even when the loaded SSTables were compacted away meanwhile.
pub fn restore_journaled(
    cfg: &CassandraRestoreConfig,
    components: Vec<RestoreComponent<'_>>,
    mut journal: Option<&mut crate::journal::Journal>,
) -> Result<CassandraRestoreReport> {
    let (inputs, ks_cql) = group_inputs(&metadata_of(&components))?;
    let mut plan = build_plan(cfg, &inputs, &ks_cql)?;
    let unreadable: Vec<String> = plan
        .tables
        .iter()
        .filter(|t| t.format_refused)
        .filter_map(|t| t.refused.clone())
        .collect();
    if !unreadable.is_empty() {
        bail!(
            "refusing the Cassandra restore before placing anything: {}",
            unreadable.join("; ")
        );
    }
    let mut report = CassandraRestoreReport {
        notes: plan.notes.clone(),
        ..Default::default()
    };

    // Sort components into per-table buckets, reading the small ones (schema, digests) now.
    struct Bucket<'a> {
        schema: Option<String>,
        digests: BTreeMap<String, Vec<u8>>,
        files: Vec<RestoreComponent<'a>>,
    }
    let mut buckets: BTreeMap<(String, String), Bucket<'_>> = BTreeMap::new();
    // Backed-up permission bits by (keyspace, table, name).
    let modes: BTreeMap<(String, String, String), u32> = components
        .iter()
        .filter_map(|c| {
            c.mode
                .map(|m| ((c.keyspace.clone(), c.table.clone(), c.name.clone()), m))
        })
        .collect();
    let mut keyspace_cql: BTreeMap<String, String> = BTreeMap::new();
    for c in components {
        if c.table.is_empty() {
            if c.name == KEYSPACE_CQL && ks_cql.contains(&c.keyspace) {
                let what = format!("keyspace.cql of {}", c.keyspace);
                let text = read_all_limited(c.open, &what, 16 << 20)?;
                keyspace_cql.insert(c.keyspace, String::from_utf8_lossy(&text).into_owned());
            }
            continue;
        }
        let key = (c.keyspace.clone(), c.table.clone());
        let b = buckets.entry(key).or_insert_with(|| Bucket {
            schema: None,
            digests: BTreeMap::new(),
            files: Vec::new(),
        });
        let what = format!("{}.{} {}", c.keyspace, c.table, c.name);
        match c.name.as_str() {
            "schema.cql" => {
                let text = read_all_limited(c.open, &what, 16 << 20)?;
                b.schema = Some(String::from_utf8_lossy(&text).into_owned());
            }
            "manifest.json" => {}
            _ if SstableFile::parse(c.name.rsplit('/').next().unwrap_or(&c.name))
                .is_some_and(|s| s.is_digest()) =>
            {
                let text = read_all_limited(c.open, &what, 4096)?;
                b.digests.insert(c.name.clone(), text);
            }
            _ => b.files.push(c),
        }
    }

    // 1. Schema for missing tables.
    let mut cql = String::new();
    let mut created_keyspaces = BTreeSet::new();
    let mut need_schema = Vec::new();
    for tp in &plan.tables {
        if let Some(why) = &tp.refused {
            report.pending.push(why.clone());
            continue;
        }
        if tp.table_dir.is_some() {
            continue;
        }
        if tp.from_keyspace_cql {
            if created_keyspaces.insert(tp.keyspace.clone()) {
                let text = &keyspace_cql[&tp.keyspace];
                cql.push_str(&keyspace_cql_script(&tp.keyspace, text)?);
                report.notes.push(format!(
                    "keyspace {} is created with its backed-up replication and tables (the \
                     backup's keyspace.cql)",
                    tp.keyspace
                ));
            }
            need_schema.push((tp.keyspace.clone(), tp.table.clone()));
            continue;
        }
        let b = &buckets[&(tp.keyspace.clone(), tp.table.clone())];
        let Some(schema) = &b.schema else {
            report.pending.push(format!(
                "{}.{}: the table does not exist on this node and the backup has no schema.cql \
                 for it; create it (start the application that owns it, or run its CREATE TABLE \
                 in cqlsh), then run the restore again",
                tp.keyspace, tp.table
            ));
            continue;
        };
        if tp.keyspace_missing && created_keyspaces.insert(tp.keyspace.clone()) {
            cql.push_str(&format!(
                "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {};\n",
                tp.keyspace, cfg.keyspace_replication
            ));
            report.notes.push(format!(
                "keyspace {} is created with replication {} (schema.cql does not hold the \
                 keyspace's replication; ALTER KEYSPACE it if the cluster had another)",
                tp.keyspace, cfg.keyspace_replication
            ));
        }
        cql.push_str(schema.trim_end());
        cql.push('\n');
        need_schema.push((tp.keyspace.clone(), tp.table.clone()));
    }
    if !need_schema.is_empty() {
        match &cfg.cqlsh {
            Some(cqlsh) => {
                let f = PrivateTempFile::create("schema.cql", cql.as_bytes())?;
                let mut argv = cqlsh.clone();
                argv.extend(["-f".to_string(), f.path.display().to_string()]);
                run_command(
                    &argv,
                    "Check that Cassandra is running and accepts CQL (port 9042), and the cqlsh \
                     command and credentials in [cassandra] cqlsh.",
                )
                .context(
                    "creating the missing Cassandra keyspaces and tables from the backup's \
                     keyspace.cql / schema.cql",
                )?;
                for (ks, table) in &need_schema {
                    let dirs = find_table_dirs(&cfg.data_dir, ks, table)?;
                    let dir = match live_dir(cfg, ks, table, &dirs)? {
                        Live::Dir(d) => d,
                        Live::Missing => bail!(
                            "cqlsh ran the CREATE statements, but {ks}.{table} is still not in the \
                             schema (system_schema.tables); check the statements in the cqlsh \
                             output and the node's log"
                        ),
                        Live::Unknown(why) => bail!("{why}"),
                    };
                    let dir = &dir;
                    let tp = plan
                        .tables
                        .iter_mut()
                        .find(|t| &t.keyspace == ks && &t.table == table)
                        .expect("planned table");
                    tp.table_dir = Some(dir.clone());
                    if !cfg.use_import {
                        tp.dest_dir = Some(dir.clone());
                    }
                }
            }
            None => {
                let path = std::env::temp_dir().join(format!(
                    "mnbackup-cassandra-schema-{}.cql",
                    std::process::id()
                ));
                fs::write(&path, &cql).with_context(|| format!("writing {}", path.display()))?;
                let tables: Vec<String> = need_schema
                    .iter()
                    .map(|(k, t)| format!("{k}.{t}"))
                    .collect();
                report.pending.push(format!(
                    "{} do(es) not exist on this node and no cqlsh is configured ([cassandra] \
                     cqlsh): run `cqlsh -f {}`, then run the restore again",
                    tables.join(", "),
                    path.display()
                ));
            }
        }
    }

    // 2.–4. Place, own, load.
    let owner = match &cfg.owner {
        Some(user) => match lookup_user(user) {
            Some(ids) => Some(ids),
            None => {
                report.notes.push(format!(
                    "no user {user:?} on this machine: the restored files keep the restoring \
                     user's ownership (chown them if Cassandra runs as another user)"
                ));
                None
            }
        },
        None => None,
    };
    let mut chown_failed = false;
    for tp in &plan.tables {
        let (Some(table_dir), Some(dest_dir)) = (&tp.table_dir, &tp.dest_dir) else {
            continue;
        };
        let key = (tp.keyspace.clone(), tp.table.clone());
        let mut bucket = buckets.remove(&key).expect("bucket of a planned table");
        let label = format!("{}.{}", tp.keyspace, tp.table);

        // Loaded by an earlier run of this restore (the journal says so)?
        if let Some(j) = journal.as_deref_mut() {
            if let Some(rec) = j.data.cassandra_tables.get(&label).cloned() {
                let renamed_all = !rec.placed.is_empty()
                    && rec.placed.iter().all(|p| p.symlink_metadata().is_err());
                if &rec.dir == table_dir && (rec.loaded || renamed_all) {
                    if !rec.loaded {
                        report.notes.push(format!(
                            "{label}: the interrupted run placed {} files and ran `{}`; Cassandra \
                             renamed every one of them (it loaded them), so the table is not \
                             loaded again",
                            rec.placed.len(),
                            rec.command
                        ));
                        let mut done = rec.clone();
                        done.loaded = true;
                        j.data.cassandra_tables.insert(label.clone(), done);
                        j.save()?;
                    }
                    report.tables.push(TableReport {
                        keyspace: tp.keyspace.clone(),
                        table: tp.table.clone(),
                        dir: table_dir.clone(),
                        files_written: 0,
                        files_present: rec.generations.len(),
                        bytes_written: 0,
                        digests_verified: 0,
                        loaded_with: "journal".to_string(),
                    });
                    continue;
                }
            }
        }

        // Cassandra renames every SSTable it loads to a fresh generation, so the backed-up
        // generation numbers may be taken by the application's own SSTables: place each SSTable
        // under a generation that is free in its destination directory.
        let names: Vec<String> = bucket
            .digests
            .keys()
            .cloned()
            .chain(bucket.files.iter().map(|c| c.name.clone()))
            .collect();
        let renames = fresh_names(dest_dir, &names)?;
        let rename = |n: &str| renames.get(n).cloned().unwrap_or_else(|| n.to_string());
        let mode_of: BTreeMap<String, u32> = names
            .iter()
            .filter_map(|n| {
                modes
                    .get(&(tp.keyspace.clone(), tp.table.clone(), n.clone()))
                    .map(|m| (rename(n), *m))
            })
            .collect();
        let set_mode = |s: &StagedFile, name: &str| -> Result<()> {
            if let Some(m) = mode_of.get(name) {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&s.tmp, fs::Permissions::from_mode(m & 0o7777))
                    .with_context(|| format!("setting the mode of {}", s.tmp.display()))?;
            }
            Ok(())
        };
        bucket.digests = std::mem::take(&mut bucket.digests)
            .into_iter()
            .map(|(n, t)| (rename(&n), t))
            .collect();
        for c in &mut bucket.files {
            c.name = rename(&c.name);
        }

        // Expected digests by SSTable (stem within its directory).
        let mut expected: BTreeMap<String, ExpectedDigest> = BTreeMap::new();
        for (name, text) in &bucket.digests {
            let (sub, base) = match name.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b),
                None => (String::new(), name.as_str()),
            };
            let sf = SstableFile::parse(base).expect("digest names were parsed");
            let d = ExpectedDigest::parse(base, text).with_context(|| format!("table {label}"))?;
            expected.insert(format!("{sub}{}", sf.stem), d);
        }

        create_dir_owned(dest_dir, owner)?;
        let mut cleanup = Cleanup(Vec::new());
        // (staged file, "<sub/>stem" of its SSTable, whether it is the Data.db)
        let mut staged: Vec<(StagedFile, Option<String>, bool)> = Vec::new();
        let mut verified = 0;
        // Digest components first (from memory), then the streamed files.
        for (name, text) in &bucket.digests {
            let dest = dest_dir.join(name);
            create_dir_owned(dest.parent().expect("parent"), owner)?;
            let (s, _) = stage_file(
                &mut text.as_slice(),
                &dest,
                text.len() as u64,
                None,
                &format!("{label} {name}"),
                &mut cleanup,
            )?;
            set_mode(&s, name)?;
            staged.push((s, stem_key(name), false));
        }
        for c in bucket.files {
            let dest = dest_dir.join(&c.name);
            create_dir_owned(dest.parent().expect("parent"), owner)?;
            let (sub, base) = match c.name.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b.to_string()),
                None => (String::new(), c.name.clone()),
            };
            let sf = SstableFile::parse(&base);
            let exp = sf
                .as_ref()
                .filter(|s| s.is_data())
                .and_then(|s| expected.get(&format!("{sub}{}", s.stem)));
            let what = format!("{label} {}", c.name);
            let mut reader = (c.open)().with_context(|| format!("opening {what} in the backup"))?;
            let (s, digest) = stage_file(
                &mut reader,
                &dest,
                c.size,
                exp.map(|e| e.algo),
                &what,
                &mut cleanup,
            )?;
            if let (Some(exp), Some(actual)) = (exp, digest) {
                if exp.value != actual {
                    return Err(digest_mismatch(
                        &format!("{label} {}{}", sub, sf.expect("data file").stem),
                        exp,
                        &actual,
                    )
                    .context(
                        "the backed-up SSTable does not match its own digest; nothing of this \
                         table was placed (restore it from another snapshot)",
                    ));
                }
                verified += 1;
            }
            let is_data = sf.as_ref().is_some_and(|s| s.is_data());
            set_mode(&s, &c.name)?;
            staged.push((s, stem_key(&c.name), is_data));
        }

        // An SSTable whose Data.db is already in the live directory (same size and content,
        // under whatever generation Cassandra gave it) was loaded by an earlier run: it is not
        // placed again, so a rerun never loads a table twice.
        let mut already: BTreeSet<String> = BTreeSet::new();
        for (s, key, is_data) in &staged {
            if let (true, Some(key)) = (*is_data, key) {
                let sub = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                if has_data_content(&table_dir.join(sub), s.size, &s.blake3)? {
                    already.insert(key.clone());
                }
            }
        }

        // Never overwrite: an existing file of the same name must be identical.
        let mut present = 0;
        let mut to_link = Vec::new();
        for (s, key, is_data) in staged {
            if key.as_ref().is_some_and(|k| already.contains(k)) {
                present += 1;
                continue;
            }
            if s.dest.symlink_metadata().is_ok() {
                let same = fs::metadata(&s.dest).map(|m| m.len()).ok() == Some(s.size)
                    && blake3_file(&s.dest)? == s.blake3;
                if !same {
                    bail!(
                        "refusing to overwrite {} with the backed-up file of the same name: it \
                         exists with different content. Move it away (or restore into an empty \
                         table directory) and run the restore again; nothing of table {label} \
                         was placed",
                        s.dest.display()
                    );
                }
                present += 1;
            } else {
                to_link.push((s, key, is_data));
            }
        }
        let mut written = 0;
        let mut bytes = 0;
        let mut dirs_to_sync = BTreeSet::new();
        for (s, _, _) in &to_link {
            // link(2) fails when the name exists: an atomic rename that never replaces.
            fs::hard_link(&s.tmp, &s.dest).with_context(|| {
                format!(
                    "placing {} (refusing to replace a file that appeared meanwhile)",
                    s.dest.display()
                )
            })?;
            if let Some((uid, gid)) = owner {
                if std::os::unix::fs::chown(&s.dest, Some(uid), Some(gid)).is_err() {
                    chown_failed = true;
                }
            }
            written += 1;
            bytes += s.size;
            dirs_to_sync.insert(s.dest.parent().expect("parent").to_path_buf());
        }
        drop(cleanup); // removes the temporary names (the data stays under the final names)
        for d in &dirs_to_sync {
            fsync_dir(d)?;
        }

        let command = if cfg.use_import {
            format!(
                "nodetool import {} {} {}",
                tp.keyspace,
                tp.table,
                dest_dir.display()
            )
        } else {
            format!("nodetool refresh {} {}", tp.keyspace, tp.table)
        };
        // Journal what is placed before loading it: a rerun after the load ran but before its
        // proof was recorded sees the placed names gone (renamed by Cassandra).
        let mut rec = JournaledTable {
            dir: table_dir.clone(),
            placed: to_link.iter().map(|(s, _, _)| s.dest.clone()).collect(),
            generations: names.iter().map(|n| (n.clone(), rename(n))).collect(),
            loaded: false,
            command: command.clone(),
        };
        if let Some(j) = journal.as_deref_mut() {
            j.data.cassandra_tables.insert(label.clone(), rec.clone());
            j.save()?;
        }
        let (loaded_with, command) = if cfg.use_import {
            let dir = dest_dir.display().to_string();
            cfg.nodetool
                .run(&["import", &tp.keyspace, &tp.table, &dir])
                .with_context(|| format!("loading the restored SSTables of {label}"))?;
            (
                "import",
                format!("nodetool import {} {} {dir}", tp.keyspace, tp.table),
            )
        } else {
            cfg.nodetool
                .run(&["refresh", &tp.keyspace, &tp.table])
                .with_context(|| format!("loading the restored SSTables of {label}"))?;
            (
                "refresh",
                format!("nodetool refresh {} {}", tp.keyspace, tp.table),
            )
        };

        // Prove the load: Cassandra renames every SSTable it loads, so nothing placed may be
        // left under its placed name, and every placed Data.db must now be in the live
        // directory (by size and content).
        let left: Vec<String> = to_link
            .iter()
            .filter(|(s, _, _)| s.dest.symlink_metadata().is_ok())
            .map(|(s, _, _)| s.dest.display().to_string())
            .collect();
        if !left.is_empty() {
            bail!(
                "`{command}` succeeded, but Cassandra did not load {} of the {} files placed for \
                 {label} (they are still under their placed names: {}); the table is NOT \
                 restored. Check Cassandra's system.log for why (an SSTable version it cannot \
                 read, a wrong owner or mode, another data directory), then run the restore again",
                left.len(),
                to_link.len(),
                left.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        for (s, key, is_data) in &to_link {
            if !is_data {
                continue;
            }
            let sub = key
                .as_deref()
                .and_then(|k| k.rsplit_once('/'))
                .map(|(d, _)| d)
                .unwrap_or("");
            if !has_data_content(&table_dir.join(sub), s.size, &s.blake3)? {
                bail!(
                    "`{command}` succeeded, but the SSTable placed as {} is not in the live \
                     directory {} afterwards; the table {label} is NOT restored. Check that {} is \
                     the directory of the table the node serves and Cassandra's system.log, then \
                     run the restore again",
                    s.dest.display(),
                    table_dir.join(sub).display(),
                    table_dir.display()
                );
            }
        }
        if let Some(j) = journal.as_deref_mut() {
            rec.loaded = true;
            j.data.cassandra_tables.insert(label.clone(), rec);
            j.save()?;
        }
        if cfg.use_import {
            // The staging directory of this table is empty now (import moved everything).
            let _ = remove_empty_dirs(dest_dir);
        }
        report.tables.push(TableReport {
            keyspace: tp.keyspace.clone(),
            table: tp.table.clone(),
            dir: table_dir.clone(),
            files_written: written,
            files_present: present,
            bytes_written: bytes,
            digests_verified: verified,
            loaded_with: loaded_with.to_string(),
        });
    }
    if chown_failed {
        report.notes.push(format!(
            "some restored files could not be given to user {:?} (not running as root?): chown \
             them, or Cassandra may fail to read them",
            cfg.owner.as_deref().unwrap_or("")
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_vectors() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.value(), 0xCBF4_3926);
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.value(), 0xCBF4_3926);
        let mut a = Adler32::new();
        a.update(b"Wikipedia");
        assert_eq!(a.value(), 0x11E6_0398);
        let big = vec![0xffu8; 100_000];
        let mut a = Adler32::new();
        a.update(&big);
        // zlib: adler32 of 100000 x 0xff
        let (mut s1, mut s2) = (1u64, 0u64);
        for &b in &big {
            s1 = (s1 + b as u64) % 65521;
            s2 = (s2 + s1) % 65521;
        }
        assert_eq!(a.value() as u64, (s2 << 16) | s1);
        let mut s = Sha1::new();
        s.update(b"abc");
        assert_eq!(s.hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut s = Sha1::new();
        s.update(b"abcdbcdecdefdefgefghfghighijhi");
        s.update(b"jkijkljklmklmnlmnomnopnopq");
        assert_eq!(s.hex(), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        assert_eq!(
            Sha1::new().hex(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn parses_sstable_names_of_every_format() {
        let s = SstableFile::parse("md-12-big-Data.db").unwrap();
        assert_eq!((s.stem.as_str(), s.version.as_str()), ("md-12-big", "md"));
        assert_eq!(s.component, "Data.db");
        let s = SstableFile::parse("zstack_billing-usage-ka-3-Digest.sha1").unwrap();
        assert_eq!(s.stem, "zstack_billing-usage-ka-3");
        assert!(s.is_digest());
        assert_eq!(s.format, None);
        let s = SstableFile::parse("da-3gdd_0jkt_4dbtc2fbd6bzb3ekwo-bti-Partitions.db").unwrap();
        assert_eq!(s.format.as_deref(), Some("bti"));
        assert_eq!(s.generation, "3gdd_0jkt_4dbtc2fbd6bzb3ekwo");
        let s = SstableFile::parse("nb-5-big-SAI+aa+metrics+idx+Meta.db").unwrap();
        assert_eq!(s.component, "SAI+aa+metrics+idx+Meta.db");
        assert!(SstableFile::parse("manifest.json").is_none());
        assert!(SstableFile::parse("schema.cql").is_none());
        assert_eq!(
            split_table_dir("data_points-6b1bd4d0a7e011e5a5d1a9e6c2a50e1b"),
            ("data_points", Some("6b1bd4d0a7e011e5a5d1a9e6c2a50e1b"))
        );
        assert_eq!(split_table_dir("old_style"), ("old_style", None));
    }

    #[test]
    fn parses_digests() {
        let d = ExpectedDigest::parse("md-1-big-Digest.crc32", b"3421780262").unwrap();
        assert_eq!(d.algo, DigestAlgo::Crc32);
        let d = ExpectedDigest::parse("ks-t-ka-1-Digest.sha1", b"12345\n").unwrap();
        assert_eq!(d.algo, DigestAlgo::Adler32);
        let d = ExpectedDigest::parse(
            "ks-t-jb-1-Digest.sha1",
            b"A9993E364706816ABA3E25717850C26C9CD0D89D  ks-t-jb-1-Data.db\n",
        )
        .unwrap();
        assert_eq!(d.algo, DigestAlgo::Sha1);
        assert_eq!(d.value, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(ExpectedDigest::parse("md-1-big-Digest.crc32", b"garbage").is_err());
        assert!(ExpectedDigest::parse("md-1-big-Digest.crc32", b"99999999999").is_err());
    }

    #[test]
    fn splits_command_lines_and_masks_passwords() {
        assert_eq!(
            split_command_line(r#"/opt/c/bin/nodetool -Dx='a b' "q\"x""#),
            vec!["/opt/c/bin/nodetool", "-Dx=a b", "q\"x"]
        );
        let argv: Vec<String> = ["nodetool", "-u", "u", "-pw", "secret", "status"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let shown = display_argv(&argv);
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn keyspace_cql_statements_are_split_and_made_if_not_exists() {
        let text = "\nCREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', \
                    'replication_factor': '3'}  AND durable_writes = true;\n\n\
                    /* a; comment */\nCREATE TABLE ks.t (\n    k int PRIMARY KEY\n) WITH \
                    comment = 'it''s; here';\n-- done;\nCREATE CUSTOM INDEX i ON ks.t (k);\n\
                    CREATE TABLE IF NOT EXISTS ks.u (k int PRIMARY KEY);\n\
                    CREATE MATERIALIZED VIEW ks.v AS SELECT * FROM ks.t;\n";
        let stmts = split_cql_statements(text);
        assert_eq!(stmts.len(), 5, "{stmts:?}");
        assert!(stmts[1].ends_with("comment = 'it''s; here'"), "{stmts:?}");
        let script = keyspace_cql_script("ks", text).unwrap();
        assert!(
            script.contains(
                "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': \
                             'SimpleStrategy', 'replication_factor': '3'}"
            ),
            "{script}"
        );
        assert!(
            script.contains("CREATE TABLE IF NOT EXISTS ks.t (\n"),
            "{script}"
        );
        assert!(
            script.contains("CREATE CUSTOM INDEX IF NOT EXISTS i ON"),
            "{script}"
        );
        assert!(
            script.contains("CREATE TABLE IF NOT EXISTS ks.u ("),
            "{script}"
        );
        assert!(!script.contains("IF NOT EXISTS IF"), "{script}");
        assert!(
            script.contains("CREATE MATERIALIZED VIEW IF NOT EXISTS ks.v"),
            "{script}"
        );
        assert!(keyspace_cql_script("ks", "CREATE TABLE ks.t (k int PRIMARY KEY);").is_err());

        let open =
            || -> OpenFn<'static> { Box::new(|| Ok(Box::new(io::empty()) as Box<dyn Read>)) };
        let c = RestoreComponent::from_item_name("cassandra/ks/keyspace.cql", 1, open()).unwrap();
        assert_eq!((c.keyspace.as_str(), c.table.as_str()), ("ks", ""));
        assert_eq!(c.name, KEYSPACE_CQL);
        assert!(RestoreComponent::from_item_name("cassandra/ks/other", 1, open()).is_none());
    }

    #[test]
    fn releases_read_the_sstable_formats_cassandra_reads() {
        assert_eq!(release_reads(3, "ka"), Some(true));
        assert_eq!(release_reads(3, "md"), Some(true));
        assert_eq!(release_reads(3, "nb"), Some(false));
        assert_eq!(release_reads(4, "ka"), Some(false));
        assert_eq!(release_reads(4, "mc"), Some(true));
        assert_eq!(release_reads(4, "nb"), Some(true));
        assert_eq!(release_reads(4, "oa"), Some(false));
        assert_eq!(release_reads(5, "oa"), Some(true));
        assert_eq!(release_reads(5, "da"), Some(true));
        assert_eq!(release_reads(5, "la"), Some(false));
        assert_eq!(release_reads(9, "zz"), None);
        assert!(is_system_keyspace("system_schema") && !is_system_keyspace("kairosdb"));
    }

    #[test]
    fn refuses_unsafe_component_names() {
        assert!(check_relative_name("md-1-big-Data.db").is_ok());
        assert!(check_relative_name(".idx_host/md-1-big-Data.db").is_ok());
        assert!(check_relative_name("../x").is_err());
        assert!(check_relative_name("snapshots/x/md-1-big-Data.db").is_err());
        assert!(check_relative_name("sub/x").is_err());
        assert!(check_relative_name("/etc/passwd").is_err());
    }
}
