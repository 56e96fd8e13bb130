//! A hung `nodetool` (or `cqlsh`) is killed after `[cassandra] command_timeout_seconds`, with
//! every process it started, and the error names the command. In a test binary of its own: the
//! timeout is process-wide.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use mnbackup::engines::cassandra::{backup, CassandraConfig, CommandLine};
use mnbackup::model::{ItemSink, ItemSpec};
use mnbackup_fixtures::cassandra as fx;

struct NullSink;
impl ItemSink for NullSink {
    fn put_reader(&self, _: ItemSpec, r: &mut dyn std::io::Read) -> anyhow::Result<()> {
        std::io::copy(r, &mut std::io::sink())?;
        Ok(())
    }
    fn put_entry(&self, _: ItemSpec) -> anyhow::Result<()> {
        Ok(())
    }
    fn set_source_info(&self, _: &str, _: serde_json::Value) {}
    fn gap(&self, _: mnbackup::model::Gap) {}
}

/// Processes whose environment names this data directory (the stand-in and its children).
fn processes_of(data: &Path) -> Vec<String> {
    let needle = format!("CASSANDRA_DATA={}", data.display());
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let Ok(env) = fs::read(p.join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            let cmd = fs::read(p.join("cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    out
}

#[test]
fn a_hung_nodetool_is_killed_after_its_timeout_with_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    fx::generate(&data, 50).unwrap();
    let cfg = CassandraConfig {
        data_dirs: vec![data.clone()],
        nodetool: CommandLine::Argv(vec![
            "env".into(),
            format!("CASSANDRA_DATA={}", data.display()),
            "NODETOOL_HANG=flush".into(),
            fx::nodetool_path().display().to_string(),
        ]),
        command_timeout_seconds: 2,
        ..Default::default()
    };
    let t0 = Instant::now();
    let err = backup(&cfg, "hang", &NullSink).unwrap_err();
    let took = t0.elapsed();
    let msg = format!("{err:#}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert!(
        msg.contains("flush kairosdb") && msg.contains("did not finish within 2s"),
        "{msg}"
    );
    assert!(msg.contains("command_timeout_seconds"), "{msg}");
    // The stand-in and the child it started are gone.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_of(&data), Vec::<String>::new());

    // A shutdown request (SIGTERM in the daemon) kills a hung command at once, long before
    // its timeout. (In the same test: the flag is process-wide.)
    let cfg = CassandraConfig {
        command_timeout_seconds: 600,
        ..cfg
    };
    let flag = mnbackup::engines::cassandra::cancel_commands_flag();
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let t0 = Instant::now();
    let err = backup(&cfg, "hang2", &NullSink).unwrap_err();
    setter.join().unwrap();
    flag.store(false, std::sync::atomic::Ordering::SeqCst);
    let msg = format!("{err:#}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        msg.contains("flush kairosdb") && msg.contains("shutdown request"),
        "{msg}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_of(&data), Vec::<String>::new());
}

#[test]
fn a_zero_timeout_is_a_configuration_error() {
    let cfg = CassandraConfig {
        command_timeout_seconds: 0,
        ..Default::default()
    };
    let err = cfg.validate().unwrap_err();
    assert!(
        format!("{err}").contains("command_timeout_seconds"),
        "{err}"
    );
}
