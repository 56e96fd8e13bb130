use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

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

pub(crate) static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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
        let mut f = create_new(&path, 0o600)?;
        let guard = PrivateTempFile { path };
        f.write_all(content)
            .with_context(|| format!("writing {}", guard.path.display()))?;
        Ok(guard)
    }
}

/// Create `path`, which must not exist, with permission bits `mode`, for writing.
pub(crate) fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

impl Drop for PrivateTempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
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
