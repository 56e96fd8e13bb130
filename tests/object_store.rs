//! Object-storage repositories against a real S3-protocol server on loopback: moto's server
//! (`pip install 'moto[server]'`, done by fixtures/test-all.sh), started by each test on a free
//! port. Missing `moto_server` fails the tests (it never skips them).
//!
//! moto (5.1) supports what the backend relies on: `If-None-Match: *` on PutObject (412 when
//! the key exists), ListObjectsV2 with `max-keys` / continuation tokens (paged), ranged GETs.
//! Its listing is read-after-write consistent, so lagging listings are tested with the faulty
//! backend instead (src/store/conformance.rs).
//!
//! One thing moto does not do as S3 does: its `If-None-Match: *` is a check, then a put
//! (`moto/s3/responses.py`, `put_object`: `get_object(...) is not None` → 412, else
//! `put_object`), with no lock, while `moto_server` serves requests on threads. Two racing
//! conditional PUTs can both succeed there; on S3 exactly one does. The racing test therefore
//! runs against a moto that serves one request at a time ([`Moto::start_serial`]), which makes
//! its conditional PUT atomic as S3's is; every other test uses the threaded server.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mnbackup::config::ObjectStoreConfig;
use mnbackup::store::object::ObjectStore;
use mnbackup::store::{conformance, Backend};

/// A moto server on loopback, killed on drop; its request log is kept to count requests.
struct Moto {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        Moto::start_with(false)
    }

    /// moto serving one request at a time (werkzeug's single-threaded server, HTTP/1.0): its
    /// conditional PUT is then atomic, as S3's is (see the module doc).
    fn start_serial() -> Moto {
        Moto::start_with(true)
    }

    fn start_with(serial: bool) -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("moto.log");
        let mut cmd = if serial {
            let mut c = Command::new("python3");
            c.args([
                "-c",
                "import sys\n\
                 from werkzeug.serving import run_simple\n\
                 from moto.moto_server.werkzeug_app import DomainDispatcherApplication, \
                 create_backend_app\n\
                 run_simple('127.0.0.1', int(sys.argv[1]), \
                 DomainDispatcherApplication(create_backend_app), threaded=False)",
                &port.to_string(),
            ])
            .env("MOTO_PORT", port.to_string());
            c
        } else {
            let mut c = Command::new("moto_server");
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect(
                "moto_server is needed by the object-storage tests: \
                 python3 -m pip install 'moto[server]' (fixtures/test-all.sh does it)",
            );
        let m = Moto {
            child,
            port,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "moto did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        m
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn make_bucket(&self, name: &str) {
        ureq::put(&format!("{}/{name}", self.endpoint()))
            .send_empty()
            .expect("creating a bucket");
    }

    /// Successful PUT requests so far whose path contains `text`.
    fn puts(&self, text: &str) -> usize {
        let f = std::fs::File::open(&self.log).unwrap();
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("\"PUT /") && l.contains(text) && l.contains("\" 200 "))
            .count()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_config(m: &Moto, dir: &Path) -> ObjectStoreConfig {
    let secret = dir.join("s3-secret");
    std::fs::write(&secret, "testing-secret\n").unwrap();
    ObjectStoreConfig {
        endpoint: Some(m.endpoint()),
        access_key_id: Some("testing".into()),
        secret_access_key_file: Some(secret),
        retries: 2,
        ..Default::default()
    }
}

#[test]
fn conformance_against_moto_with_and_without_conditional_put() {
    let m = Moto::start_serial();
    m.make_bucket("conf");
    let t = tempfile::tempdir().unwrap();
    let mut c = s3_config(&m, t.path());
    let s = ObjectStore::open("s3://conf/a", &c).unwrap();
    assert!(
        s.conditional_put(),
        "opendal's s3 service offers if_not_exists"
    );
    conformance::run(&s);
    conformance::racing_put_if_absent(&s);
    // The same against the fallback (HEAD + PUT + read-after-write).
    c.conditional_put = Some(false);
    let s = ObjectStore::open("s3://conf/b", &c).unwrap();
    conformance::run(&s);
    // Through the registry (with the retrying decorator), on a prefix of its own.
    let b = mnbackup::store::open_with("s3://conf/c/", &c).unwrap();
    conformance::run(&*b);
    conformance::racing_put_if_absent(&*b);
    assert_eq!(b.location(), "s3://conf/c");
    // The conditional put really is one: moto answered 412 (kept the first value).
    assert!(!s.put_if_absent("objects/ab/one", b"other").unwrap());
}

#[test]
fn listing_is_paged() {
    let m = Moto::start();
    m.make_bucket("paged");
    let t = tempfile::tempdir().unwrap();
    let s = ObjectStore::open("s3://paged/r", &s3_config(&m, t.path())).unwrap();
    for i in 0..1203 {
        s.put_replace(&format!("objects/{:02x}/{i:05}", i % 7), b"x")
            .unwrap();
    }
    let all = s.list("objects/").unwrap();
    assert_eq!(all.len(), 1203);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    // More than one page was asked for.
    let lists = std::fs::read_to_string(&m.log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"GET /paged") && l.contains("list-type=2"))
        .count();
    assert!(lists >= 2, "{lists} listing requests");
}

#[test]
fn a_missing_bucket_or_server_is_an_error_not_a_hang() {
    let m = Moto::start();
    let t = tempfile::tempdir().unwrap();
    let s = ObjectStore::open("s3://nobucket/r", &s3_config(&m, t.path())).unwrap();
    assert!(s.get("mnbackup-repo.json", 100).is_err());
    let mut c = s3_config(&m, t.path());
    c.endpoint = Some("http://127.0.0.1:9".into());
    c.retries = 1;
    let b = mnbackup::store::open_with("s3://x/r", &c).unwrap();
    let e = b.stat("k").unwrap_err();
    assert!(
        matches!(e, mnbackup::store::StoreError::Transient(_)),
        "a refused connection is transient: {e:?}"
    );
}

fn run(cfg: &Path, repo: &str, args: &[&str]) -> Output {
    Command::new(common::bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-c")
        .arg(cfg)
        .args(["-r", repo])
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env("MNBACKUP_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(cfg: &Path, repo: &str, args: &[&str]) -> String {
    let o = run(cfg, repo, args);
    assert!(
        o.status.success(),
        "mnbackup -r {repo} {args:?} failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.lines().last().unwrap()).unwrap()
}

#[test]
fn copy_to_s3_then_lose_the_pool_and_restore_from_the_bucket() {
    let m = Moto::start();
    m.make_bucket("offsite");
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(&m, t.path());
    let pool = t.path().join("pool");
    let pool_s = pool.to_str().unwrap();
    let url = "s3://offsite/node1";
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| i.wrapping_mul(7919).to_le_bytes())
        .collect();
    std::fs::write(src.join("etc/big.bin"), &big).unwrap();
    std::fs::write(src.join("etc/small.conf"), b"a = 1\n").unwrap();
    let src_s = src.to_str().unwrap();

    ok(&cfg, pool_s, &["init"]);
    ok(&cfg, pool_s, &["snapshot", "--files", src_s]);
    ok(&cfg, url, &["init", "--no-packs"]);
    let r1 = json(&ok(&cfg, pool_s, &["--json", "copy", "--to", url]));
    assert_eq!(r1["copied"].as_array().unwrap().len(), 1, "{r1}");
    let sent1 = r1["objects_sent"].as_u64().unwrap();
    assert!(sent1 > 0);
    assert_eq!(
        m.puts("/offsite/node1/objects/") as u64,
        sent1,
        "one PUT per object"
    );

    // A second snapshot with a small change: the second copy sends only its new objects.
    std::fs::write(src.join("etc/small.conf"), b"a = 2\n").unwrap();
    ok(&cfg, pool_s, &["snapshot", "--files", src_s]);
    let r2 = json(&ok(&cfg, pool_s, &["--json", "copy", "--to", url]));
    assert_eq!(r2["copied"].as_array().unwrap().len(), 1, "{r2}");
    assert_eq!(r2["already_there"].as_array().unwrap().len(), 1, "{r2}");
    let sent2 = r2["objects_sent"].as_u64().unwrap();
    assert!(
        sent2 >= 1 && sent2 < sent1,
        "{sent2} new objects of {sent1}"
    );
    assert!(r2["bytes_sent"].as_u64().unwrap() < 100_000, "{r2}");
    assert_eq!(m.puts("/offsite/node1/objects/") as u64, sent1 + sent2);
    // Nothing left to send.
    let r3 = json(&ok(&cfg, pool_s, &["--json", "copy", "--to", url]));
    assert_eq!(r3["objects_sent"].as_u64(), Some(0), "{r3}");

    // The site is lost: only the bucket remains.
    std::fs::remove_dir_all(&pool).unwrap();
    let list = ok(&cfg, url, &["--json", "list"]);
    assert!(list.matches("\"id\"").count() >= 2, "{list}");
    ok(&cfg, url, &["verify", "--read-data"]);
    let out = t.path().join("out");
    ok(&cfg, url, &["export", "latest", out.to_str().unwrap()]);
    let got = walkdir::WalkDir::new(&out)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_name() == "big.bin")
        .expect("big.bin exported");
    assert!(std::fs::read(got.path()).unwrap() == big, "big.bin differs");
}

/// A config file whose `[repository.s3]` reaches moto.
fn write_config(m: &Moto, dir: &Path) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, "testing-secret\n").unwrap();
    let cfg = dir.join("mnbackup.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.s3]\nendpoint = \"{}\"\naccess_key_id = \"testing\"\n\
             secret_access_key_file = \"{}\"\n",
            m.endpoint(),
            secret.display()
        ),
    )
    .unwrap();
    cfg
}

/// A config file for moto and a local pool with `files` small random files, snapshotted.
fn pool_with_files(m: &Moto, dir: &Path, files: usize, size: usize) -> (PathBuf, PathBuf) {
    let cfg = write_config(m, dir);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        let data: Vec<u8> = (0..size).map(|_| rand_byte()).collect();
        std::fs::write(src.join(format!("f{i:04}")), data).unwrap();
    }
    let pool = dir.join("pool");
    ok(&cfg, pool.to_str().unwrap(), &["init"]);
    ok(
        &cfg,
        pool.to_str().unwrap(),
        &["snapshot", "--files", src.to_str().unwrap()],
    );
    (cfg, pool)
}

fn rand_byte() -> u8 {
    use std::cell::Cell;
    thread_local!(static X: Cell<u64> = const { Cell::new(0x2545_f491_4f6c_dd1d) });
    X.with(|x| {
        let mut v = x.get();
        v ^= v << 13;
        v ^= v >> 7;
        v ^= v << 17;
        x.set(v);
        (v >> 24) as u8
    })
}

#[test]
fn a_copy_killed_midway_resumes_without_sending_an_object_twice() {
    let m = Moto::start();
    m.make_bucket("resume");
    let t = tempfile::tempdir().unwrap();
    let (cfg, pool) = pool_with_files(&m, t.path(), 120, 40_000);
    let url = "s3://resume/r";
    ok(&cfg, url, &["init", "--no-packs"]);
    let mut child = Command::new(common::bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .arg("-c")
        .arg(&cfg)
        .args(["-q", "-r", pool.to_str().unwrap(), "copy", "--to", url])
        .args(["--limit-upload", "1024"])
        .env_remove("MNBACKUP_CONFIG")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let before = m.puts("/resume/r/objects/");
    assert!(
        before > 0,
        "the first copy sent something before it was killed"
    );
    assert_eq!(
        m.puts("/resume/r/snapshots/"),
        0,
        "no manifest before every object"
    );
    let r = json(&ok(
        &cfg,
        pool.to_str().unwrap(),
        &["--json", "copy", "--to", url],
    ));
    assert_eq!(r["copied"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(
        r["objects_present"].as_u64().unwrap() as usize,
        before,
        "{r}"
    );
    // Every object key was PUT exactly once over both runs.
    let log = std::fs::read_to_string(&m.log).unwrap();
    let mut keys: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"PUT /resume/r/objects/") && l.contains("\" 200 "))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/resume/")))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "an object was sent twice");
    assert_eq!(
        n as u64,
        before as u64 + r["objects_sent"].as_u64().unwrap()
    );
    ok(&cfg, url, &["verify", "--read-data"]);
}

/// `--limit-upload 2048` (issue 18) holds the average rate within 10%. A limit can only be held
/// where the copy without one is faster: a debug build copying into moto on a loaded 2-core
/// machine sends ~1.8 MiB/s. So an unlimited copy of the same snapshot measures that capacity
/// first, and the limit tested is 2048 KiB/s or a third of the capacity, whichever is lower
/// (printed, so a run shows which was tested).
#[test]
fn limit_upload_holds_the_average_rate() {
    let m = Moto::start();
    m.make_bucket("rate");
    let t = tempfile::tempdir().unwrap();
    // 10 MiB in 256 objects: about 5 s at 2048 KiB/s.
    let (cfg, pool) = pool_with_files(&m, t.path(), 256, 40 * 1024);
    let url = "s3://rate/r";
    ok(&cfg, url, &["init"]);
    ok(&cfg, "s3://rate/free", &["init"]);
    let free = json(&ok(
        &cfg,
        pool.to_str().unwrap(),
        &["--json", "copy", "--to", "s3://rate/free"],
    ));
    let capacity = free["bytes_sent"].as_f64().unwrap() / free["send_seconds"].as_f64().unwrap();
    let limit_kib = ((capacity / 3.0 / 1024.0) as u64).clamp(64, 2048);
    eprintln!(
        "copy without a limit: {:.0} KiB/s; testing --limit-upload {limit_kib}",
        capacity / 1024.0
    );
    let r = json(&ok(
        &cfg,
        pool.to_str().unwrap(),
        &[
            "--json",
            "copy",
            "--to",
            url,
            "--limit-upload",
            &limit_kib.to_string(),
        ],
    ));
    assert_eq!(r["bytes_sent"], free["bytes_sent"], "{r}");
    let rate = r["bytes_sent"].as_f64().unwrap() / r["send_seconds"].as_f64().unwrap();
    let want = limit_kib as f64 * 1024.0;
    assert!(
        (rate - want).abs() / want < 0.10,
        "{rate:.0} B/s, want {want} ± 10% (capacity {capacity:.0} B/s; {r})"
    );
}
