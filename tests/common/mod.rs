//! Helpers shared by the end-to-end tests: run the real `mnbackup` binary, build trees, compare
//! them byte for byte and metadata for metadata.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mnbackup"))
}

/// Run mnbackup with a repository and arguments; returns the output.
pub fn mnb(repo: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .output()
        .expect("run mnbackup")
}

/// Run and require success.
pub fn ok(repo: &Path, args: &[&str]) -> Output {
    let out = mnb(repo, args);
    assert!(
        out.status.success(),
        "mnbackup {:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        args,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `list --json` parsed.
pub fn list(repo: &Path) -> Vec<serde_json::Value> {
    let out = ok(repo, &["--json", "list"]);
    serde_json::from_slice(&out.stdout).expect("list --json is JSON")
}

/// One entry of a tree as compared by the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        content: Vec<u8>,
        mode: u32,
        mtime: i64,
        mtime_ns: i64,
    },
    Dir {
        mode: u32,
    },
    Link {
        target: String,
    },
}

/// Read a whole tree (relative paths) with contents and metadata.
pub fn capture(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let node = if md.file_type().is_symlink() {
            Node::Link {
                target: fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            }
        } else if md.is_dir() {
            Node::Dir {
                mode: md.permissions().mode() & 0o7777,
            }
        } else {
            Node::File {
                content: fs::read(e.path()).unwrap(),
                mode: md.permissions().mode() & 0o7777,
                mtime: md.mtime(),
                mtime_ns: md.mtime_nsec(),
            }
        };
        out.insert(rel, node);
    }
    out
}

/// Assert two captured trees are equal, naming the first difference.
pub fn assert_same(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    let ek: Vec<_> = expected.keys().collect();
    let ak: Vec<_> = actual.keys().collect();
    assert_eq!(ek, ak, "the trees hold different paths");
    for (k, v) in expected {
        let a = &actual[k];
        if v != a {
            let short = |n: &Node| match n {
                Node::File {
                    content,
                    mode,
                    mtime,
                    mtime_ns,
                } => {
                    format!(
                        "file len {} blake3 {} mode {mode:o} mtime {mtime}.{mtime_ns}",
                        content.len(),
                        blake3::hash(content)
                    )
                }
                other => format!("{other:?}"),
            };
            panic!(
                "{k} differs:\n expected {}\n actual   {}",
                short(v),
                short(a)
            );
        }
    }
}

/// Deterministic pseudo-random generator (xorshift) so tests are reproducible.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Compressible, log-like text of about `len` bytes (like SQL dumps and config files).
pub fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "INSERT",
        "INTO",
        "VmInstanceEO",
        "VALUES",
        "Running",
        "Stopped",
        "host",
        "volume",
        "zstack",
        "uuid",
        "192.168.1.",
        "kvm",
        "ceph",
        "image",
        "2026-11-29",
        "NULL",
        "l3",
    ];
    let mut v = Vec::with_capacity(len + 64);
    while v.len() < len {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        v.extend_from_slice(w.as_bytes());
        v.extend_from_slice(format!("{:x}", rng.below(1 << 20)).as_bytes());
        v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    v.truncate(len);
    v
}

/// Snapshot ids from `list --json`, oldest first.
pub fn ids(repo: &Path) -> Vec<String> {
    list(repo)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// The passphrase every test repository is created with (the runners set MNBACKUP_PASSWORD).
pub const PASSWORD: &str = "mnbackup-test-passphrase";

/// Open a test repository through the library, unlocked with [`PASSWORD`] when encrypted.
pub fn open_lib(repo: &Path) -> mnbackup::repo::Repo {
    let mut r = mnbackup::repo::Repo::open(repo).expect("open the repository");
    if r.encrypted() {
        r.unlock(PASSWORD.as_bytes())
            .expect("unlock the repository");
    }
    r
}

/// [`open_lib`], or None when the repository does not open (a damaged marker, say).
pub fn try_open_lib(repo: &Path) -> Option<mnbackup::repo::Repo> {
    let mut r = mnbackup::repo::Repo::open(repo).ok()?;
    if r.encrypted() {
        r.unlock(PASSWORD.as_bytes()).ok()?;
    }
    Some(r)
}

/// The repository and key name of a manifest file `<repo>/snapshots/<id>.json`.
fn manifest_place(file: &Path) -> (PathBuf, String) {
    let repo = file.parent().unwrap().parent().unwrap().to_path_buf();
    let name = file.file_name().unwrap().to_str().unwrap();
    (repo, format!("snapshots/{name}"))
}

/// The JSON body of a manifest file of any format, when it opens (header checksum or
/// authentication tag good); the body is not validated.
pub fn manifest_body(file: &Path) -> Option<serde_json::Value> {
    let (repo, key) = manifest_place(file);
    let bytes = fs::read(file).ok()?;
    let r = try_open_lib(&repo)?;
    if r.config.version == 1 {
        let nl = bytes.iter().position(|&b| b == b'\n')?;
        return serde_json::from_slice(&bytes[nl + 1..]).ok();
    }
    serde_json::from_slice(&r.open_manifest_body(&key, &bytes).ok()?).ok()
}

/// Whether a manifest file loads as the repository loads it (opened and validated).
pub fn manifest_loads(file: &Path) -> bool {
    let (repo, key) = manifest_place(file);
    let bytes = fs::read(file).unwrap_or_default();
    try_open_lib(&repo).is_some_and(|r| r.decode_manifest_file(&key, &bytes).is_ok())
}

/// Write a manifest body with a valid header checksum (v1) or sealed with the repository's key
/// (v2), as someone with write access to the pool (and, for v2, the key) could.
pub fn write_manifest_body(file: &Path, v: &serde_json::Value) {
    let (repo, key) = manifest_place(file);
    let body = serde_json::to_vec(v).unwrap();
    let r = open_lib(&repo);
    let out = if r.config.version == 1 {
        let mut out = format!(
            "mnbackup-manifest v1 blake3={}\n",
            blake3::hash(&body).to_hex()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    } else {
        r.seal_manifest_body(&key, &body).unwrap()
    };
    fs::write(file, out).unwrap();
}

/// Edit a manifest's JSON body and write it back with a valid header checksum or seal, as
/// someone with write access to the pool (and the key) could. `id` None: the first manifest
/// file found.
pub fn forge_manifest(repo: &Path, id: Option<&str>, edit: impl FnOnce(&mut serde_json::Value)) {
    let f = match id {
        Some(id) => repo.join("snapshots").join(format!("{id}.json")),
        None => files_under(&repo.join("snapshots"))
            .into_iter()
            .next()
            .expect("a manifest"),
    };
    let mut v = manifest_body(&f).expect("a manifest that opens");
    edit(&mut v);
    write_manifest_body(&f, &v);
}

/// Whether the MariaDB server is installed; when it is not, the test is skipped with a message,
/// unless `MNBACKUP_REQUIRE_MARIADB` is set (then it fails).
pub fn require_mariadb() -> bool {
    if mnbackup_fixtures::mariadb::available() {
        return true;
    }
    assert!(
        std::env::var_os("MNBACKUP_REQUIRE_MARIADB").is_none(),
        "MNBACKUP_REQUIRE_MARIADB is set but MariaDB is not installed"
    );
    eprintln!("MariaDB server not installed; skipping");
    false
}

/// Wait for the next whole second plus a margin; that second (binlog timestamps have one-second
/// resolution, so a `--until` at it falls between transactions).
pub fn next_second() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let ms = 1000 - i64::from(now.timestamp_subsec_millis()) + 50;
    std::thread::sleep(std::time::Duration::from_millis(ms as u64));
    chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap()
}

/// SIGTERM a child and wait for it (at most 60 s).
pub fn term(mut c: std::process::Child) -> Output {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let t0 = std::time::Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the child did not stop on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    c.wait_with_output().unwrap()
}
