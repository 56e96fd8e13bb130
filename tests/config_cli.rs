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
