//! `[[copy]]` targets (issue 18 item 2): configuration errors are clear, `copy --to NAME` uses a
//! target's settings, and the daemon's `copy` job copies to a second local repository after the
//! snapshots, the copy restoring byte-exact; a failing copy job is a failure in `status`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .env("MNBACKUP_LOG", "warn")
        .output()
        .expect("run mnbackup")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("mnbackup.toml");
    fs::write(&p, text).unwrap();
    p
}

fn make_tree(root: &Path) {
    let mut rng = Rng(5);
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/a.conf"), text(&mut rng, 3000)).unwrap();
    fs::write(root.join("dump.sql"), text(&mut rng, 150_000)).unwrap();
}

/// `config check` on `text` fails with exit 2 and a message holding every one of `want`.
fn refused(text: &str, want: &[&str]) {
    let t = tempfile::tempdir().unwrap();
    let p = write_config(t.path(), text);
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{text}\n{e}");
    for w in want {
        assert!(e.contains(w), "{w:?} not in: {e}");
    }
}

#[test]
fn copy_target_configuration_errors_are_clear() {
    refused(
        "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\n[[copy]]\nname = \"off\"\nto = \"/srv/b\"\n",
        &["two [[copy]] targets are named \"off\""],
    );
    refused(
        "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nsnapshots = \"newest\"\n",
        &[
            "[[copy]] \"off\"",
            "snapshots = \"newest\"",
            "\"all\" or \"latest\"",
        ],
    );
    refused(
        "[[copy]]\nname = \"off\"\nto = \"gs://b/x\"\n",
        &["unknown scheme `gs://`", "s3://"],
    );
    refused(
        "[[copy]]\nname = \"off site\"\nto = \"/srv/a\"\n",
        &["name = \"off site\" is not usable"],
    );
    refused(
        "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nlimit_upload = 0\n",
        &["limit_upload = 0"],
    );
    refused("[[copy]]\nname = \"off\"\n", &["missing field `to`"]);
    refused(
        "[[copy]]\nname = \"off\"\nto = \"/srv/a\"\nkeep = 3\n",
        &["unknown field `keep`", "line 4"],
    );
    // A good one parses, with its own [copy.s3] section.
    let t = tempfile::tempdir().unwrap();
    let p = write_config(
        t.path(),
        "[[copy]]\nname = \"off\"\nto = \"s3://bkt/mnb\"\nsnapshots = \"latest\"\n\
         limit_upload = 2048\n[copy.s3]\nendpoint = \"http://127.0.0.1:9000\"\n",
    );
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("http://127.0.0.1:9000"),
        "{}",
        stdout(&o)
    );
    // A copy job naming no target, or taking no argument, stops the daemon before it starts.
    for (args, want) in [
        (
            "[\"elsewhere\"]",
            "names no [[copy]] target (configured: off)",
        ),
        ("[]", "takes one argument"),
    ] {
        let p = write_config(
            t.path(),
            &format!(
                "[repository]\npath = \"{}\"\n[[copy]]\nname = \"off\"\nto = \"/srv/a\"\n\
                 [[schedule]]\nname = \"c\"\ncron = \"@daily\"\njob = \"copy\"\nargs = {args}\n\
                 [daemon]\nstate_dir = \"{}\"\n",
                t.path().join("repo").display(),
                t.path().join("state").display()
            ),
        );
        let o = run(&["-c", p.to_str().unwrap(), "daemon"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{want:?} not in {}", stderr(&o));
    }
}

#[test]
fn copy_to_a_named_target_and_to_a_path() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    make_tree(&src);
    let repo = t.path().join("repo");
    let second = t.path().join("second");
    let third = t.path().join("third");
    ok(&repo, &["init"]);
    ok(&second, &["init"]);
    ok(&third, &["init"]);
    let s = src.to_str().unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    fs::write(src.join("etc/a.conf"), b"changed\n").unwrap();
    ok(&repo, &["snapshot", "--only-files", "--files", s]);
    let cfg = write_config(
        t.path(),
        &format!(
            "[repository]\npath = \"{}\"\n[[copy]]\nname = \"second\"\nto = \"{}\"\n\
             snapshots = \"latest\"\n",
            repo.display(),
            second.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let o = run(&["-c", c, "--json", "copy", "--to", "second"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = ids(&repo);
    // `snapshots = "latest"`: only the newest went.
    assert_eq!(ids(&second), vec![all[1].clone()]);
    // A path still works (every snapshot), and an unknown bare name is refused clearly.
    let o = run(&["-c", c, "copy", "--to", third.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&third), all);
    let o = run(&["-c", c, "copy", "--to", "thrid"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("names no [[copy]] target") && stderr(&o).contains("second"),
        "{}",
        stderr(&o)
    );
}

/// A running `mnbackup daemon`; killed on drop.
struct DaemonProc {
    child: Child,
    log: PathBuf,
}

impl DaemonProc {
    fn start(cfg: &Path, log: PathBuf) -> DaemonProc {
        let child = Command::new(bin())
            .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
            .arg("-c")
            .arg(cfg)
            .arg("daemon")
            .env_remove("MNBACKUP_CONFIG")
            .env_remove("MNBACKUP_REPO")
            .env("MNBACKUP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start mnbackup daemon");
        DaemonProc { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    check()
}

fn job<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["job"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn daemon_copy_job_fills_a_second_repository_that_restores_byte_exact() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("node");
    make_tree(&src);
    let repo = t.path().join("pool/repo");
    let second = t.path().join("offsite/repo");
    let gone = t.path().join("unmounted");
    fs::create_dir_all(&gone).unwrap();
    let state = t.path().join("state");
    ok(&repo, &["init"]);
    ok(&second, &["init"]);
    let cfg = write_config(
        t.path(),
        &format!(
            r#"
[repository]
path = "{repo}"

[[files]]
paths = ["{src}"]

[[copy]]
name = "offsite"
to = "{second}"

[[copy]]
name = "gone"
to = "{gone}"

[[schedule]]
name = "snap"
cron = "*/2 * * * * *"

[[schedule]]
name = "offsite-copy"
cron = "*/3 * * * * *"
job = "copy"
args = ["offsite"]

[[schedule]]
name = "gone-copy"
cron = "*/3 * * * * *"
job = "copy"
args = ["gone"]
retries = 0

[daemon]
timezone = "UTC"
state_dir = "{state}"
max_age_hours = 1
"#,
            repo = repo.display(),
            src = src.display(),
            second = second.display(),
            gone = gone.display(),
            state = state.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let d = DaemonProc::start(&cfg, t.path().join("daemon.log"));
    // The status while the daemon runs (stopping it may mark a job waiting its turn as
    // interrupted).
    let mut seen = serde_json::Value::Null;
    let done = wait_for(Duration::from_secs(60), || {
        let st = run(&["-c", c, "--json", "status"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&st.stdout) else {
            return false;
        };
        let gone_failed = job(&v, "gone-copy")["health"] == "failing"
            && job(&v, "gone-copy")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no mnbackup repository"));
        let copied = job(&v, "offsite-copy")["health"] == "fresh"
            && job(&v, "offsite-copy")["last_success_summary"]
                .as_str()
                .is_some_and(|s| s.contains("copied"));
        seen = v;
        copied && gone_failed && !ids(&second).is_empty()
    });
    assert!(
        done,
        "no copy and failed copy within 60 s; status: {seen}\ndaemon log:\n{}",
        d.log()
    );
    drop(d);
    let summary = job(&seen, "offsite-copy")["last_success_summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains(&second.display().to_string()), "{summary}");
    assert_eq!(seen["exit_code"], 2, "a failed copy is CRITICAL: {seen}");

    // After the daemon stopped, the failing copy is still a failure in status (exit 2).
    let o = run(&["-c", c, "status"]);
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("gone-copy"), "{}", stdout(&o));
    assert!(
        files_under(&gone).is_empty(),
        "nothing written to the unmounted pool"
    );

    // Every snapshot of the copy is one of the source's, and restores byte-exact.
    let copied = ids(&second);
    let source = ids(&repo);
    assert!(
        copied.iter().all(|id| source.contains(id)),
        "{copied:?} {source:?}"
    );
    ok(&second, &["verify", "--read-data"]);
    let expected = capture(&src);
    let id = copied.last().unwrap();
    let out = t.path().join("export");
    ok(&second, &["export", id, out.to_str().unwrap()]);
    let got = capture(&out.join("files").join(src.strip_prefix("/").unwrap()));
    assert_same(&expected, &got);
}
