//! The conformance suite every [`Backend`] passes (as restic's `internal/backend/test`): call
//! [`run`] on an empty store. It panics with a message naming the broken promise.

use super::{Backend, StoreError};

/// Run every check on `b`, which must be empty (it is left with a few keys).
pub fn run(b: &dyn Backend) {
    put_if_absent_keeps_the_first(b);
    put_replace_replaces(b);
    get_honours_the_limit_and_ranges(b);
    stat_and_not_found(b);
    list_is_recursive_sorted_and_prefixed(b);
    delete_removes(b);
    append_creates_and_extends(b);
    bad_keys_are_refused(b);
}

fn put_if_absent_keeps_the_first(b: &dyn Backend) {
    assert!(b.put_if_absent("objects/ab/one", b"first").unwrap());
    assert!(
        !b.put_if_absent("objects/ab/one", b"second").unwrap(),
        "put_if_absent wrote over an existing key"
    );
    assert_eq!(b.get("objects/ab/one", 100).unwrap(), b"first");
    assert!(b.put_if_absent("objects/ab/empty", b"").unwrap());
    assert_eq!(b.get("objects/ab/empty", 0).unwrap(), b"");
}

/// Racing writers of one key with different bytes: exactly one wins and the stored value is
/// that winner's, whole. For backends whose "put if absent" is atomic (a local directory, memory,
/// an object store with conditional PUT; not the HEAD + PUT fallback).
pub fn racing_put_if_absent(b: &dyn Backend) {
    const WRITERS: usize = 8;
    for round in 0..4 {
        let key = format!("snapshots/race-{round}.json");
        let value = |i: usize| -> Vec<u8> {
            // Different lengths and contents: a mix of two values would show.
            vec![b'a' + i as u8; 1000 + 4096 * i]
        };
        let barrier = std::sync::Barrier::new(WRITERS);
        let won: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..WRITERS)
                .map(|i| {
                    let barrier = &barrier;
                    let v = value(i);
                    let key = &key;
                    s.spawn(move || {
                        barrier.wait();
                        b.put_if_absent(key, &v)
                            .expect("put_if_absent failed in a race")
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..WRITERS).filter(|i| won[*i]).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} writers of one key all reported success",
            winners.len()
        );
        let stored = b.get(&key, u64::MAX).unwrap();
        assert_eq!(
            stored,
            value(winners[0]),
            "round {round}: the stored value is not the winner's whole value"
        );
    }
}

fn put_replace_replaces(b: &dyn Backend) {
    b.put_replace("snapshots/s1.json", b"v1").unwrap();
    b.put_replace("snapshots/s1.json", b"version two").unwrap();
    assert_eq!(b.get("snapshots/s1.json", 100).unwrap(), b"version two");
    // A key in a "directory" that does not exist yet.
    b.put_replace("new/deep/key", b"x").unwrap();
    assert_eq!(b.get("new/deep/key", 1).unwrap(), b"x");
}

fn get_honours_the_limit_and_ranges(b: &dyn Backend) {
    let data: Vec<u8> = (0..=255u8).collect();
    b.put_replace("objects/cd/range", &data).unwrap();
    assert!(
        matches!(b.get("objects/cd/range", 255), Err(StoreError::Refused(_))),
        "a value over the limit was not refused"
    );
    assert_eq!(b.get("objects/cd/range", 256).unwrap(), data);
    assert_eq!(
        b.get_range("objects/cd/range", 10, 5).unwrap(),
        &data[10..15]
    );
    assert_eq!(
        b.get_range("objects/cd/range", 250, 100).unwrap(),
        &data[250..]
    );
    assert!(b
        .get_range("objects/cd/range", 1000, 10)
        .unwrap()
        .is_empty());
}

fn stat_and_not_found(b: &dyn Backend) {
    let m = b.stat("objects/ab/one").unwrap();
    assert_eq!(m.size, 5);
    let before = m.identity;
    b.put_replace("objects/ab/one", b"12345").unwrap();
    let after = b.stat("objects/ab/one").unwrap().identity;
    if before.is_some() {
        assert_ne!(before, after, "a rewrite kept the same identity");
    }
    for r in [
        b.stat("objects/ab/none").map(|_| ()),
        b.get("objects/ab/none", 10).map(|_| ()),
        b.get_range("objects/ab/none", 0, 1).map(|_| ()),
        b.delete("objects/ab/none"),
    ] {
        assert!(
            matches!(r, Err(StoreError::NotFound(_))),
            "a missing key gave {r:?}"
        );
    }
}

fn list_is_recursive_sorted_and_prefixed(b: &dyn Backend) {
    let all = b.list("objects/").unwrap();
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["objects/ab/empty", "objects/ab/one", "objects/cd/range"]
    );
    assert_eq!(all[2].1, 256);
    let some: Vec<String> = b
        .list("objects/ab/o")
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(some, ["objects/ab/one"]);
    assert!(b.list("nothing/").unwrap().is_empty());
    assert!(b.list("").unwrap().len() >= 5);
}

fn delete_removes(b: &dyn Backend) {
    b.delete("objects/ab/empty").unwrap();
    assert!(b.stat("objects/ab/empty").unwrap_err().is_not_found());
    assert!(b.put_if_absent("objects/ab/empty", b"again").unwrap());
}

fn append_creates_and_extends(b: &dyn Backend) {
    b.append("tmp/record", b"a\n").unwrap();
    b.append("tmp/record", b"b\n").unwrap();
    assert_eq!(b.get("tmp/record", 100).unwrap(), b"a\nb\n");
}

fn bad_keys_are_refused(b: &dyn Backend) {
    for k in ["../escape", "/abs", "a//b", ""] {
        assert!(b.put_replace(k, b"x").is_err(), "key {k:?} was accepted");
        assert!(b.get(k, 10).is_err(), "key {k:?} was read");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::faulty::{Fault, FaultKind, Faulty, Op};
    use super::super::local::LocalFs;
    use super::super::mem::MemBackend;
    use super::super::{Backend, StoreError};

    fn local() -> (tempfile::TempDir, LocalFs) {
        let t = tempfile::tempdir().unwrap();
        let b = LocalFs::new(t.path().join("repo"));
        b.create().unwrap();
        b.ensure_dir("tmp").unwrap();
        b.ensure_dir("locks").unwrap();
        (t, b)
    }

    // The suite itself runs for every backend in tests/backend_conformance.rs.

    #[test]
    fn retrying_over_transient_faults_conforms() {
        use super::super::retry::{Policy, Retrying};
        use std::time::Duration;
        let f = Faulty::new(MemBackend::new());
        // Every operation fails transiently twice in a row now and then.
        for (op, skip) in [
            (Op::Put, 3),
            (Op::Get, 2),
            (Op::Stat, 4),
            (Op::List, 1),
            (Op::Delete, 0),
        ] {
            f.inject(Fault::new(op, FaultKind::Transient).after(skip).times(2));
        }
        let policy = Policy {
            retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let r = Retrying::new(f.clone(), policy);
        super::run(&*r);
        // Every injected fault was retried, and the suite above still passed.
        assert!(f.fired() >= 8, "{}", f.fired());
        assert_eq!(r.retried(), f.fired());
        // More failures than retries: the error is still Transient, after retries + 1 attempts.
        f.inject(Fault::new(Op::Get, FaultKind::Transient));
        let before = f.fired();
        assert!(matches!(
            r.get("objects/cd/range", 999),
            Err(StoreError::Transient(_))
        ));
        assert_eq!(f.fired() - before, 4);
        // Permanent errors are not retried.
        f.clear();
        f.inject(Fault::new(Op::Stat, FaultKind::Permanent));
        assert!(matches!(
            r.stat("objects/cd/range"),
            Err(StoreError::Permanent(_))
        ));
        assert_eq!(f.fired(), 1);
    }

    #[test]
    fn faulty_listing_lags_and_put_if_absent_stays_right() {
        let f = Faulty::new(MemBackend::new());
        f.lag_listing(2);
        f.put_replace("objects/a", b"1").unwrap();
        f.put_replace("objects/b", b"2").unwrap();
        f.put_replace("objects/c", b"3").unwrap();
        let keys: Vec<String> = f
            .list("objects/")
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            keys,
            ["objects/a"],
            "the two newest keys are not listed yet"
        );
        // A writer trusting the listing tries again: the store keeps the first value.
        assert!(!f.put_if_absent("objects/c", b"3").unwrap());
        f.lag_listing(0);
        assert_eq!(f.list("objects/").unwrap().len(), 3);
        assert_eq!(f.puts(), 4);
    }

    #[test]
    fn faulty_injects_on_chosen_ops_keys_and_calls() {
        let f = Faulty::new(MemBackend::new());
        f.inject(
            Fault::new(Op::Put, FaultKind::NoSpace)
                .on_keys("objects/")
                .after(2)
                .times(1),
        );
        f.put_replace("objects/a", b"1").unwrap();
        f.put_replace("snapshots/x", b"1").unwrap();
        f.put_replace("objects/b", b"1").unwrap();
        assert!(matches!(
            f.put_replace("objects/c", b"1"),
            Err(StoreError::NoSpace(_))
        ));
        f.put_replace("objects/d", b"1").unwrap();
        assert_eq!(f.fired(), 1);
        f.inject(Fault::new(Op::Get, FaultKind::Transient));
        assert!(matches!(
            f.get("objects/a", 9),
            Err(StoreError::Transient(_))
        ));
        f.clear();
        f.inject(Fault::new(Op::Put, FaultKind::Torn));
        assert!(f.put_replace("objects/t", b"abcdef").is_err());
        f.clear();
        assert_eq!(
            f.get("objects/t", 9).unwrap(),
            b"abc",
            "a torn write leaves a prefix"
        );
        f.inject(Fault::new(Op::Stat, FaultKind::NotFound).on_keys("objects/a"));
        assert!(f.stat("objects/a").unwrap_err().is_not_found());
        f.stat("objects/b").unwrap();
    }

    #[test]
    fn local_fs_refuses_links_fifos_and_keeps_lock_temporaries_in_locks() {
        let (t, b) = local();
        let root = t.path().join("repo");
        std::fs::write(t.path().join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), root.join("link")).unwrap();
        assert!(matches!(b.get("link", 100), Err(StoreError::Refused(_))));
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(b.get("fifo", 100), Err(StoreError::Refused(_))));
        // Listed (not followed), and deleting removes the link, not its target.
        let keys: Vec<String> = b.list("").unwrap().into_iter().map(|e| e.0).collect();
        assert!(keys.contains(&"link".to_string()), "{keys:?}");
        b.delete("link").unwrap();
        assert!(t.path().join("outside").exists());
        std::fs::remove_dir(root.join("tmp")).unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("tmp")).unwrap();
        assert!(matches!(b.check_dir("tmp"), Err(StoreError::Refused(_))));
        // A lock is written through locks/ itself, never tmp/.
        std::fs::remove_file(root.join("tmp")).unwrap();
        b.put_replace("locks/h-1.json", b"{}").unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("tmp")).is_err(),
            "a lock write made tmp/"
        );
        // Any other write makes the missing tmp/ again (a real, private directory) and goes on.
        b.put_replace("objects/ab/x", b"{}").unwrap();
        let md = std::fs::symlink_metadata(root.join("tmp")).unwrap();
        assert!(md.file_type().is_dir());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
            0o700
        );
        assert_eq!(b.get("objects/ab/x", 100).unwrap(), b"{}");
        let b2: Arc<dyn Backend> = Arc::new(b);
        assert_eq!(b2.list("locks/").unwrap().len(), 1);
    }
}
