//! Every storage backend passes the conformance suite (`store::conformance`): `LocalFs` on a
//! real temporary directory, the in-memory backend and the fault-injecting one. Then the use
//! cases over storage (forget, prune, verify, repair) against the in-memory backend, in
//! milliseconds.

use std::sync::Arc;

use mnbackup::error::{exit_code, EXIT_INTEGRITY};
use mnbackup::model::{ItemSink, ItemSpec, Manifest};
use mnbackup::ops::forget::{forget_locked, ForgetPlan};
use mnbackup::ops::progress::NoProgress;
use mnbackup::ops::prune::prune_locked;
use mnbackup::ops::repair::repair_locked;
use mnbackup::ops::verify::{verify, Subset};
use mnbackup::repo::codec::{CodecPolicy, SigCache};
use mnbackup::repo::reader::read_item;
use mnbackup::repo::writer::SnapshotWriter;
use mnbackup::repo::Repo;
use mnbackup::store::conformance;
use mnbackup::store::faulty::Faulty;
use mnbackup::store::local::LocalFs;
use mnbackup::store::mem::MemBackend;
use mnbackup::store::Backend;
use mnbackup_scheduler::KeepPolicy;

#[test]
fn local_fs_on_a_real_directory_conforms() {
    let t = tempfile::tempdir().unwrap();
    let b = LocalFs::new(t.path().join("repo"));
    b.create().unwrap();
    b.ensure_dir("tmp").unwrap();
    b.ensure_dir("locks").unwrap();
    conformance::run(&b);
    conformance::racing_put_if_absent(&b);
    // The suite's keys are real files under the root; no temporary file is left.
    assert!(t.path().join("repo/objects").is_dir());
    let temps: Vec<_> = std::fs::read_dir(t.path().join("repo/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

#[test]
fn the_in_memory_backend_conforms() {
    let m = MemBackend::new();
    conformance::run(&*m);
    conformance::racing_put_if_absent(&*m);
}

#[test]
fn the_faulty_backend_without_faults_conforms() {
    let f = Faulty::new(MemBackend::new());
    conformance::run(&*f);
    conformance::racing_put_if_absent(&*f);
    assert_eq!(f.fired(), 0);
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 97) as u8)
        .collect()
}

fn mem_repo(store: Arc<dyn Backend>) -> Repo {
    // Object files (not packs): the tests count and damage them one by one.
    let (mut repo, _) =
        Repo::init_with(store, mnbackup::repo::FORMAT_VERSION, None, false).unwrap();
    repo.config.chunk_min = 64;
    repo.config.chunk_avg = 256;
    repo.config.chunk_max = 1024;
    repo
}

fn snapshot(repo: &Repo, items: &[(&str, &[u8])]) -> Manifest {
    let w = SnapshotWriter::new(
        repo.clone(),
        CodecPolicy::default(),
        SigCache::default(),
        None,
        None,
    )
    .unwrap();
    for (name, bytes) in items {
        w.put_bytes(ItemSpec::content(*name, true), bytes).unwrap();
    }
    w.commit("host".into(), "test".into(), vec![]).unwrap()
}

fn objects(mem: &MemBackend) -> usize {
    mem.list("objects/").unwrap().len()
}

#[test]
fn forget_then_prune_remove_only_what_no_snapshot_needs() {
    let mem = MemBackend::new();
    let repo = mem_repo(mem.clone());
    let shared = data(4000, 1);
    let a = snapshot(
        &repo,
        &[("files/a", &shared), ("files/old", &data(4000, 7))],
    );
    let b = snapshot(&repo, &[("files/a", &shared)]);
    let before = objects(&mem);

    let ids = vec![a.id.clone()];
    let plan = ForgetPlan {
        snapshots: &ids,
        policy: KeepPolicy::default(),
        timezone: "UTC",
        dry_run: false,
        host: None,
        group_by: mnbackup::model::GroupBy::default(),
    };
    let (_kept, removed) = forget_locked(&repo, &plan).unwrap();
    assert_eq!(removed, vec![a.id.clone()]);
    assert_eq!(repo.snapshot_ids().unwrap(), vec![b.id.clone()]);
    assert_eq!(objects(&mem), before, "forget leaves the objects to prune");

    let dry = prune_locked(&repo, true).unwrap();
    assert!(dry.objects_removed > 0);
    assert_eq!(objects(&mem), before, "a dry run removes nothing");
    let r = prune_locked(&repo, false).unwrap();
    assert_eq!(r.objects_removed, dry.objects_removed);
    assert_eq!(objects(&mem), before - r.objects_removed);
    // What the kept snapshot needs is still there and reads back.
    assert_eq!(read_item(&repo, &b.items[0]).unwrap(), shared);
    let v = verify(&repo, true, Subset::All, u32::MAX, &NoProgress).unwrap();
    assert!(
        v.ok && v.missing.is_empty() && v.damaged.is_empty(),
        "{v:?}"
    );
}

#[test]
fn forget_by_policy_keeps_the_newest() {
    let repo = mem_repo(MemBackend::new());
    let _a = snapshot(&repo, &[("files/x", b"one")]);
    let b = snapshot(&repo, &[("files/x", b"two")]);
    let plan = ForgetPlan {
        snapshots: &[],
        policy: KeepPolicy {
            last: Some(1),
            ..Default::default()
        },
        timezone: "UTC",
        dry_run: false,
        host: None,
        group_by: mnbackup::model::GroupBy::default(),
    };
    let (kept, removed) = forget_locked(&repo, &plan).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0, b.id);
    assert_eq!(removed.len(), 1);
    assert_eq!(repo.snapshot_ids().unwrap(), vec![b.id]);
}

#[test]
fn verify_finds_a_damaged_object_and_repair_drops_the_item_it_held() {
    let mem = MemBackend::new();
    let repo = mem_repo(mem.clone());
    let m = snapshot(&repo, &[("files/a", &data(3000, 3)), ("files/b", b"small")]);
    let clean = verify(&repo, true, Subset::All, u32::MAX, &NoProgress).unwrap();
    assert!(clean.ok, "{clean:?}");

    // Damage one object of `files/a`.
    let obj = mem
        .list("objects/")
        .unwrap()
        .into_iter()
        .map(|(k, _size)| k)
        .find(|k| {
            let id = k.rsplit('/').next().unwrap();
            m.items[0]
                .pieces
                .iter()
                .any(|p| p.piece.data.object().0 == id)
        })
        .expect("an object of files/a");
    assert!(mem.tamper(&obj, |v| {
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
    }));

    let v = verify(&repo, true, Subset::All, u32::MAX, &NoProgress).unwrap();
    assert!(!v.ok);
    assert_eq!(v.exit_code, EXIT_INTEGRITY);
    assert_eq!(v.damaged.len(), 1, "{v:?}");
    let e = read_item(&repo, &m.items[0]).unwrap_err();
    assert_eq!(exit_code(&e), EXIT_INTEGRITY);

    let dry = repair_locked(&repo, true, &NoProgress).unwrap();
    assert_eq!(dry.items_lost[&m.id], vec!["files/a".to_string()]);
    assert!(mem.get(&obj, u64::MAX).is_ok(), "a dry run removes nothing");
    let r = repair_locked(&repo, false, &NoProgress).unwrap();
    assert_eq!(r.objects_removed.len(), 1);
    let after = repo.load_manifest(&m.id).unwrap();
    assert!(!after.complete);
    assert_eq!(after.items.len(), 1);
    assert_eq!(read_item(&repo, &after.items[0]).unwrap(), b"small");
    let v = verify(&repo, true, Subset::All, u32::MAX, &NoProgress).unwrap();
    assert!(v.damaged.is_empty() && v.missing.is_empty(), "{v:?}");
}
