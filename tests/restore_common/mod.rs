//! Shared helpers of the restore and drill tests: a repository and a configuration pointing at
//! throwaway MariaDB servers, running the `mnbackup` binary, reading manifests, comparing rows.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mnbackup_fixtures::mariadb::TestServer;

#[path = "../common/mod.rs"]
pub mod common;

/// The databases of the ZStack-like fixture.
pub const DBS: [&str; 3] = ["zstack", "zstack_rest", "zstack_ui"];

/// A repository, a configuration and a journal in a temporary directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub cfg: PathBuf,
    pub journal: PathBuf,
}

impl Env {
    /// A fresh repository (initialised) and an empty configuration.
    pub fn new() -> Env {
        Self::new_with(&["init"])
    }

    /// [`Env::new`] with every object its own file (`init --no-packs`), for tests that damage
    /// object files.
    pub fn new_loose() -> Env {
        Self::new_with(&["init", "--no-packs"])
    }

    fn new_with(init: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("mnbackup-restore-test-")
            .tempdir()
            .unwrap();
        let repo = dir.path().join("repo");
        let cfg = dir.path().join("mnbackup.toml");
        let journal = dir.path().join("state").join("restore-journal.json");
        let e = Env {
            dir,
            repo,
            cfg,
            journal,
        };
        std::fs::write(&e.cfg, "").unwrap();
        e.ok(init);
        e
    }

    /// Write the configuration: `[mariadb]` on `server` (socket, root), `[[files]]` on `files`,
    /// plus `extra` TOML.
    pub fn config(&self, server: &TestServer, files: &[&Path], extra: &str) {
        let mut s = format!(
            "[repository]\ncache_dir = \"{}\"\n[daemon]\nstate_dir = \"{}\"\n[restore]\nservice_check = \"\"\n{extra}\n\
             [mariadb]\nsocket = \"{}\"\nuser = \"root\"\nworkers = 2\nsplit_rows = 300\n",
            self.dir.path().join("cache").display(),
            self.dir.path().join("state").display(),
            server.socket().display()
        );
        for f in files {
            s.push_str(&format!("[[files]]\npaths = [\"{}\"]\n", f.display()));
        }
        std::fs::write(&self.cfg, s).unwrap();
    }

    /// The command with `-r` and `-c`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mnbackup"));
        c.env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase");
        c.arg("-r")
            .arg(&self.repo)
            .arg("-c")
            .arg(&self.cfg)
            .args(args)
            .env_remove("MNBACKUP_CONFIG")
            .env("MNBACKUP_LOG", "warn,mnbackup_restore=info");
        c
    }

    /// Run mnbackup.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running mnbackup")
    }

    /// Run and require success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "mnbackup {args:?} failed ({:?}):\n{}",
            o.status.code(),
            text(&o)
        );
        o
    }

    /// Take a snapshot; returns its id.
    pub fn snapshot(&self) -> String {
        let o = self.ok(&["--json", "snapshot"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// `list --json`.
    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_slice(&self.ok(&["--json", "list"]).stdout).unwrap()
    }

    /// A snapshot's manifest body.
    pub fn manifest(&self, id: &str) -> serde_json::Value {
        common::manifest_body(&self.repo.join("snapshots").join(format!("{id}.json"))).unwrap()
    }

    /// Rewrite a manifest with a valid header (as someone with write access to the pool could).
    pub fn forge(&self, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
        common::forge_manifest(&self.repo, Some(id), edit);
    }
}

/// stdout and stderr of an output.
pub fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Generate the ZStack-like fixture on `s`.
pub fn generate(s: &TestServer, scale: f64, seed: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let g = rt
        .block_on(mnbackup_fixtures::zstack_db::generate(
            s.opts(),
            scale,
            seed,
        ))
        .unwrap();
    eprintln!(
        "generated {} rows at scale {scale} in {:.1}s",
        g.rows, g.seconds
    );
}

/// One churn step on `s`.
pub fn churn(s: &TestServer, seed: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(mnbackup_fixtures::zstack_db::churn(s.opts(), seed))
        .unwrap();
}

/// Base tables of the databases (`db.table`).
pub fn tables(s: &TestServer, dbs: &[&str]) -> Vec<String> {
    let list = dbs
        .iter()
        .map(|d| format!("'{d}'"))
        .collect::<Vec<_>>()
        .join(",");
    s.sql(&format!(
        "SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ({list}) AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
    ))
    .unwrap()
    .lines()
    .map(str::to_string)
    .collect()
}

/// Every row of every base table of `dbs` (as the client prints them, sorted), keyed by table
/// name without the database (so renamed copies compare).
pub fn all_rows(s: &TestServer, dbs: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (i, db) in dbs.iter().enumerate() {
        for t in tables(s, &[db]) {
            let (_, name) = t.split_once('.').unwrap();
            let text = s
                .sql(&format!(
                    "SET time_zone = '+00:00'; SELECT * FROM `{db}`.`{name}`"
                ))
                .unwrap();
            let mut rows: Vec<String> = text.lines().map(str::to_string).collect();
            rows.sort();
            out.insert(format!("{i}.{name}"), rows);
        }
    }
    out
}

/// Check every recorded fingerprint of snapshot `m` against `s`, with database renames.
pub fn check_fingerprints(
    s: &TestServer,
    m: &serde_json::Value,
    renames: &[(&str, &str)],
) -> usize {
    let fps = m["sources"]["mariadb"]["fingerprints"]
        .as_object()
        .unwrap()
        .clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let opts = s.opts();
    rt.block_on(async move {
        let mut c = mysql_async::Conn::new(opts).await.unwrap();
        for (k, v) in &fps {
            let (db, t) = k.split_once('.').unwrap();
            let db = renames
                .iter()
                .find(|r| r.0 == db)
                .map(|r| r.1)
                .unwrap_or(db);
            let got = mnbackup::engines::mariadb::fingerprint::table_fingerprint(&mut c, db, t)
                .await
                .unwrap();
            assert_eq!(
                got.rows,
                v["rows"].as_u64().unwrap(),
                "rows of {k} (in {db})"
            );
            assert_eq!(
                got.hash,
                v["hash"].as_str().unwrap(),
                "hash of {k} (in {db})"
            );
        }
        fps.len()
    })
}

/// Databases on `s` whose name starts with `prefix`.
pub fn databases_like(s: &TestServer, prefix: &str) -> Vec<String> {
    s.sql("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Skip (return true) when the MariaDB server is not installed.
pub fn skip() -> bool {
    if !mnbackup_fixtures::mariadb::available() {
        eprintln!("MariaDB server not installed; skipping");
        return true;
    }
    false
}

/// Every `fix` line of a `mnbackup check --json` report, in order.
pub fn check_fixes(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["fix"].as_array().cloned().unwrap_or_default())
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}
