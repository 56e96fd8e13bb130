//! Configuration: unknown keys named with their line, secrets masked, world-readable secrets
//! refused, the shipped ZStack example parses.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .env("MNBACKUP_PASSWORD", "mnbackup-test-passphrase")
        .args(args)
        .env_remove("MNBACKUP_CONFIG")
        .env_remove("MNBACKUP_REPO")
        .output()
        .unwrap()
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.toml");
    fs::write(
        &p,
        "[repository]\npath = \"/x\"\n\n[compression]\nlevel = 3\nlevle = 4\n",
    )
    .unwrap();
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("levle") && e.contains("line 6"), "{e}");
}

#[test]
fn secrets_are_masked_and_world_readable_secret_refused() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.toml");
    fs::write(
        &p,
        "[mariadb]\nhost = \"127.0.0.1\"\nuser = \"backup\"\npassword = \"s3cret-pw\"\n",
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("chmod 600"), "{e}");
    assert!(!e.contains("s3cret-pw"));
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(out.contains("********"), "{out}");
    let o = run(&["--json", "-c", p.to_str().unwrap(), "config", "check"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("s3cret-pw"));
}

#[test]
fn shipped_zstack_example_parses() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/zstack-node.example.toml");
    let o = run(&["-c", p, "config", "check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn duplicate_database_is_a_config_error() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.toml");
    fs::write(
        &p,
        "[repository]\npath = \"/nonexistent-pool\"\n\n[mariadb]\nhost = \"127.0.0.1\"\n\
         databases = [\"zstack\", \"zstack_rest\", \"zstack\"]\n",
    )
    .unwrap();
    for cmd in [&["config", "check"][..], &["snapshot"][..]] {
        let mut args = vec!["-c", p.to_str().unwrap()];
        args.extend_from_slice(cmd);
        let o = run(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {e}");
        assert!(
            e.contains("databases names \"zstack\" more than once"),
            "{cmd:?}: {e}"
        );
        assert!(!e.contains("unsafe"), "{cmd:?}: {e}");
    }
}

#[test]
fn cluster_nodes_come_from_zstacks_ha_configuration() {
    use mnbackup::config::Config;
    let ha = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/zstack-ha/ha.yaml");
    let cfg = |cluster: &str| format!("[repository]\npath = \"/x\"\n\n[cluster]\n{cluster}\n");
    let c = Config::parse(
        &cfg(&format!("node = \"172.20.0.12\"\nha_config = \"{ha}\"")),
        "t",
    )
    .unwrap();
    assert_eq!(c.cluster.unwrap().nodes, ["172.20.0.11", "172.20.0.12"]);
    // Nodes given in the configuration win over the HA configuration.
    let c = Config::parse(
        &cfg(&format!(
            "nodes = [\"mn1\", \"mn2\"]\nnode = \"mn1\"\nha_config = \"{ha}\""
        )),
        "t",
    )
    .unwrap();
    assert_eq!(c.cluster.unwrap().nodes, ["mn1", "mn2"]);
    // A node that is not in the HA configuration's list is refused, naming the way out.
    let e = Config::parse(&cfg(&format!("node = \"mn9\"\nha_config = \"{ha}\"")), "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not in nodes") && e.contains("172.20.0.11"),
        "{e}"
    );
    assert_eq!(
        mnbackup::config::ha_nodes("bridge: br_eth0\nhost_list: '10.0.0.1, 10.0.0.2'\n"),
        Some(vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()])
    );
    assert_eq!(mnbackup::config::ha_nodes("vip: 10.0.0.9\n"), None);
    // No nodes and no readable HA configuration: a usage error (exit 2) naming the file.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("c.toml");
    let missing = t.path().join("ha.yaml");
    fs::write(
        &p,
        cfg(&format!(
            "node = \"mn1\"\nha_config = \"{}\"",
            missing.display()
        )),
    )
    .unwrap();
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("[cluster] nodes is not set") && e.contains(&missing.display().to_string()),
        "{e}"
    );
    fs::write(&missing, "vip: 10.0.0.9\n").unwrap();
    let o = run(&["-c", p.to_str().unwrap(), "config", "check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no host_list"));
}
