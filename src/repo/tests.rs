//! Storage-core tests against the in-memory (and faulty) backend: codec, writer, prune-style
//! sweeps, verify-style reads, locks and leftovers, in milliseconds.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::exit_code;
use crate::model::{ItemSink, ItemSource, ItemSpec, Manifest};
use crate::repo::codec::{CodecPolicy, SigCache};
use crate::repo::reader::{read_item, ItemReader};
use crate::repo::writer::SnapshotWriter;
use crate::store::faulty::{Fault, FaultKind, Faulty, Op};
use crate::store::mem::MemBackend;

fn small_repo(store: Arc<dyn Backend>) -> Repo {
    let (mut repo, warning) = Repo::init_with(store, FORMAT_VERSION, None, false).unwrap();
    assert!(warning.is_none());
    // Small pieces, so a few KiB make several.
    repo.config.chunk_min = 64;
    repo.config.chunk_avg = 256;
    repo.config.chunk_max = 1024;
    repo
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 97) as u8)
        .collect()
}

fn writer(repo: &Repo) -> SnapshotWriter {
    SnapshotWriter::new(
        repo.clone(),
        CodecPolicy::default(),
        SigCache::default(),
        None,
        None,
    )
    .unwrap()
}

fn snapshot(repo: &Repo, parent: Option<Manifest>, items: &[(&str, &[u8])]) -> Manifest {
    let w = SnapshotWriter::new(
        repo.clone(),
        CodecPolicy::default(),
        SigCache::default(),
        parent,
        None,
    )
    .unwrap();
    for (name, bytes) in items {
        w.put_bytes(ItemSpec::content(*name, true), bytes).unwrap();
    }
    w.commit("host".into(), "test".into(), vec![]).unwrap()
}

#[test]
fn init_open_and_marker_round_trip_on_memory() {
    let store = MemBackend::new();
    let repo = small_repo(store.clone());
    let again = Repo::open_on(store.clone()).unwrap();
    assert_eq!(again.config.id, repo.config.id);
    assert_eq!(
        exit_code(&Repo::init_on(store).unwrap_err()),
        crate::error::EXIT_USAGE
    );
    let empty = MemBackend::new();
    assert_eq!(
        exit_code(&Repo::open_on(empty).unwrap_err()),
        crate::error::EXIT_NO_REPO
    );
}

#[test]
fn writer_codec_and_reader_round_trip_with_deltas() {
    let repo = small_repo(MemBackend::new());
    let a = data(20_000, 1);
    let m1 = snapshot(&repo, None, &[("files/a", &a), ("files/empty", b"")]);
    let mut b = a.clone();
    b[5000] ^= 0xff;
    let m2 = snapshot(&repo, Some(m1.clone()), &[("files/a", &b)]);
    assert!(m2.stats.pieces_unchanged > 0, "{:?}", m2.stats);
    assert!(m2.stats.bytes_added < m1.stats.bytes_added);
    let item = crate::repo::reader::find_item(&m2, "files/a").unwrap();
    assert_eq!(read_item(&repo, item).unwrap(), b);
    let mut out = Vec::new();
    repo.open_item(item).unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b);
    assert_eq!(
        repo.snapshot_ids().unwrap(),
        vec![m1.id.clone(), m2.id.clone()]
    );
    assert_eq!(repo.load_manifest(&m1.id).unwrap(), m1);
    assert_eq!(repo.resolve("latest").unwrap(), m2.id);
}

use std::io::Read;

#[test]
fn a_damaged_object_is_an_integrity_error_naming_the_item_never_wrong_bytes() {
    let store = MemBackend::new();
    let repo = small_repo(store.clone());
    let m = snapshot(&repo, None, &[("files/x", &data(5000, 7))]);
    let item = &m.items[0];
    let obj = item.pieces[0].piece.data.object().0.to_string();
    let key = objects::object_key(&obj).unwrap();
    assert!(store.tamper(&key, |b| {
        let n = b.len() - 1;
        b[n] ^= 1;
    }));
    let e = read_item(&repo, item).unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_INTEGRITY, "{e:#}");
    let mut r = ItemReader::new(&repo, item);
    let mut sink = Vec::new();
    assert!(r.read_to_end(&mut sink).is_err());
    assert_eq!(
        exit_code(&r.take_error().unwrap()),
        crate::error::EXIT_INTEGRITY
    );
    assert!(!repo.object_good(&obj, store.stat(&key).unwrap().size));
    // The next snapshot of the same content writes the object again.
    repo.rewrite.lock().unwrap().insert(obj.clone());
    repo.mark_damaged(&obj).unwrap();
    assert!(repo.damaged_objects().unwrap().contains(&obj));
    let m2 = snapshot(&repo, Some(m.clone()), &[("files/x", &data(5000, 7))]);
    assert_eq!(read_item(&repo, &m2.items[0]).unwrap(), data(5000, 7));
}

#[test]
fn sweeping_unreferenced_objects_keeps_every_delta_base() {
    let repo = small_repo(MemBackend::new());
    let a = data(30_000, 3);
    let m1 = snapshot(&repo, None, &[("f", &a)]);
    let mut b = a.clone();
    b[100] ^= 1;
    b[20_000] ^= 1;
    let m2 = snapshot(&repo, Some(m1.clone()), &[("f", &b)]);
    repo.remove_manifest(&m1.id).unwrap();
    let keep = Repo::referenced_objects([&m2]);
    let mut removed = 0;
    for (id, _) in repo.all_objects().unwrap() {
        if !keep.contains(&id) {
            assert!(repo.delete_object(&id).unwrap());
            removed += 1;
        }
    }
    assert!(!repo.delete_object(&"0".repeat(64)).unwrap());
    // Every piece of m2 still reconstructs (bases of its deltas were kept).
    assert_eq!(read_item(&repo, &m2.items[0]).unwrap(), b);
    let _ = removed;
}

#[test]
fn an_aborted_snapshot_keeps_its_objects_for_prune_and_leftovers_are_cleaned() {
    let store = MemBackend::new();
    let repo = small_repo(store.clone());
    let w = writer(&repo);
    w.put_bytes(ItemSpec::content("f", false), &data(4000, 9))
        .unwrap();
    let written = repo.all_objects().unwrap();
    assert!(!written.is_empty());
    // Another writer may reference them: abort removes only its in-progress record.
    assert_eq!(w.abort().unwrap(), written.len());
    assert_eq!(repo.all_objects().unwrap(), written);
    assert!(store.list("tmp/").unwrap().is_empty());
    // Prune (mark and sweep under the exclusive lock) removes them.
    let r = crate::ops::prune::prune_locked(&repo, false).unwrap();
    assert_eq!(r.objects_removed, written.len());
    assert!(repo.all_objects().unwrap().is_empty());

    // An interrupted run (never committed nor aborted): its record names its objects.
    let w = writer(&repo);
    w.put_bytes(ItemSpec::content("g", false), &data(4000, 11))
        .unwrap();
    std::mem::forget(w);
    store.put_replace("tmp/junk.tmp", b"partial").unwrap();
    let (files, _) = repo.clean_leftovers().unwrap();
    assert!(files >= 3, "{files}");
    assert!(repo.all_objects().unwrap().is_empty());
    assert!(store.list("tmp/").unwrap().is_empty());
}

#[test]
fn a_full_store_mid_snapshot_is_exit_7_and_nothing_is_committed() {
    let mem = MemBackend::new();
    let faulty = Faulty::new(mem.clone());
    let repo = small_repo(faulty.clone());
    faulty.inject(
        Fault::new(Op::Put, FaultKind::NoSpace)
            .on_keys("objects/")
            .after(2),
    );
    let w = writer(&repo);
    let e = w
        .put_bytes(ItemSpec::content("f", true), &data(20_000, 5))
        .unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_NO_SPACE, "{e:#}");
    assert!(w.pool_failed());
    w.abort().unwrap();
    assert!(repo.snapshot_ids().unwrap().is_empty());
    // Only temporary files of the failed writes may remain (prune removes them).
    let left = mem.list("tmp/").unwrap();
    assert!(left.iter().all(|(k, _)| k.ends_with(".tmp")), "{left:?}");
}

#[test]
fn a_missing_object_is_found_missing() {
    let mem = MemBackend::new();
    let faulty = Faulty::new(mem.clone());
    let repo = small_repo(faulty.clone());
    let m = snapshot(&repo, None, &[("f", &data(3000, 2))]);
    faulty.inject(Fault::new(Op::Get, FaultKind::NotFound).on_keys("objects/"));
    let e = read_item(&repo, &m.items[0]).unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_INTEGRITY);
    assert!(format!("{e:#}").contains("missing"), "{e:#}");
}

#[test]
fn locks_conflict_stale_ones_are_removed_and_release_on_drop() {
    let repo = small_repo(MemBackend::new());
    let shared = repo.lock(false, "verify", Duration::ZERO).unwrap();
    let shared2 = repo.lock(false, "export", Duration::ZERO).unwrap();
    let e = repo
        .lock(true, "prune", Duration::ZERO)
        .err()
        .expect("an exclusive lock beside shared ones");
    assert_eq!(exit_code(&e), crate::error::EXIT_LOCKED);
    drop(shared);
    drop(shared2);
    let ex = repo.lock(true, "prune", Duration::ZERO).unwrap();
    assert_eq!(lock::list_locks(repo.store()).unwrap().len(), 1);
    drop(ex);
    assert!(lock::list_locks(repo.store()).unwrap().is_empty());
    // A lock whose heartbeat is old is stale: it blocks nobody and unlock removes it.
    let mut old = lock::LockInfo {
        host: "elsewhere".into(),
        pid: 1,
        exclusive: true,
        command: "snapshot".into(),
        started: Utc::now(),
        heartbeat: Utc::now() - chrono::Duration::hours(2),
        boot_id: None,
        proc_start: None,
        kind: String::new(),
    };
    repo.store()
        .put_replace("locks/old.json", &serde_json::to_vec(&old).unwrap())
        .unwrap();
    drop(repo.lock(true, "prune", Duration::ZERO).unwrap());
    old.heartbeat = Utc::now();
    repo.store()
        .put_replace("locks/live.json", &serde_json::to_vec(&old).unwrap())
        .unwrap();
    assert!(repo.lock(false, "verify", Duration::ZERO).is_err());
    let removed = repo.remove_locks(false).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].0, "locks/old.json");
}

#[test]
fn a_reading_lock_on_a_full_store_proceeds_without_a_file() {
    let mem = MemBackend::new();
    let faulty = Faulty::new(mem.clone());
    let repo = small_repo(faulty.clone());
    faulty.inject(Fault::new(Op::Put, FaultKind::NoSpace).on_keys("locks/"));
    let l = repo.lock(false, "verify", Duration::ZERO).unwrap();
    assert!(mem.list("locks/").unwrap().is_empty());
    drop(l);
    let e = repo.lock(true, "snapshot", Duration::ZERO).err().unwrap();
    assert_eq!(exit_code(&e), crate::error::EXIT_NO_SPACE);
    // A writer's shared lock never goes without its file: prune must see it.
    let e = repo.lock_writer("snapshot", Duration::ZERO).err().unwrap();
    assert_eq!(exit_code(&e), crate::error::EXIT_NO_SPACE);
}

/// Issue 17 item 4: writers share the repository with each other and with readers; the
/// exclusive lock (prune) excludes them, and they exclude it.
#[test]
fn writers_share_and_prune_excludes_them() {
    let repo = small_repo(MemBackend::new());
    let w1 = repo.lock_writer("snapshot", Duration::ZERO).unwrap();
    let w2 = repo.lock_writer("snapshot", Duration::ZERO).unwrap();
    let r = repo.lock(false, "verify", Duration::ZERO).unwrap();
    assert!(!w1.info().exclusive && w1.key().is_some() && w2.key().is_some());
    let e = repo.lock(true, "prune", Duration::ZERO).err().unwrap();
    assert_eq!(exit_code(&e), crate::error::EXIT_LOCKED);
    drop((w1, w2, r));
    let p = repo.lock(true, "prune", Duration::ZERO).unwrap();
    let e = repo.lock_writer("snapshot", Duration::ZERO).err().unwrap();
    assert_eq!(exit_code(&e), crate::error::EXIT_LOCKED);
    drop(p);
}

#[test]
fn manifests_and_markers_keep_format_v1_bytes() {
    let store = MemBackend::new();
    let (mut repo, _) = Repo::init_v1_on(store.clone()).unwrap();
    repo.config.chunk_min = 64;
    repo.config.chunk_avg = 256;
    repo.config.chunk_max = 1024;
    let m = snapshot(&repo, None, &[("f", b"hello")]);
    let bytes = store
        .get(&format!("snapshots/{}.json", m.id), 1 << 20)
        .unwrap();
    assert_eq!(bytes, encode_manifest(&m).unwrap());
    assert!(bytes.starts_with(b"mnbackup-manifest v1 blake3="));
    let marker = store.get(MARKER, 1 << 16).unwrap();
    assert_eq!(decode_marker(&marker).unwrap().id, repo.config.id);
    let obj = store.list("objects/").unwrap();
    for (k, _) in obj {
        let b = store.get(&k, 1 << 20).unwrap();
        assert_eq!(&b[..5], b"MNBO\x01");
        assert_eq!(
            k.rsplit('/').next().unwrap(),
            blake3::hash(&b).to_hex().as_str()
        );
    }
}

/// Issue 17 item 4: while a writer that may still run (its in-progress record names a lock
/// file that is there, even with a stale heartbeat) exists, prune keeps every object modified
/// after that writer started; once the writer is gone, its unreferenced objects go.
#[test]
fn prune_keeps_the_objects_of_a_live_writer_and_removes_a_dead_ones() {
    let store = MemBackend::new();
    let repo = small_repo(store.clone());
    let kept = snapshot(&repo, None, &[("a", &data(3000, 1))]);
    // A writer of another host whose heartbeat is old (prune can take its exclusive lock), but
    // whose lock file is still there: it may come back.
    let w = writer(&repo);
    let other = lock::LockInfo {
        host: "node-b".into(),
        pid: 1,
        exclusive: false,
        command: "snapshot".into(),
        started: Utc::now() - chrono::Duration::minutes(1),
        heartbeat: Utc::now() - chrono::Duration::hours(2),
        boot_id: None,
        proc_start: None,
        kind: String::new(),
    };
    store
        .put_replace("locks/node-b.json", &serde_json::to_vec(&other).unwrap())
        .unwrap();
    // Bind the record to node-b's lock (as its writer would have).
    let record = format!("tmp/inprogress-{}", w.id);
    store.append(&record, b"lock locks/node-b.json\n").unwrap();
    w.put_bytes(ItemSpec::content("b", false), &data(4000, 7))
        .unwrap();
    let before = repo.all_objects().unwrap().len();
    let ex = repo.lock(true, "prune", Duration::ZERO).unwrap();
    let r = crate::ops::prune::prune_locked(&repo, false).unwrap();
    drop(ex);
    assert_eq!(r.objects_removed, 0, "{r:?}");
    assert_eq!(repo.all_objects().unwrap().len(), before);
    assert!(store.stat(&record).is_ok(), "a live record is kept");
    // The writer is gone (its lock removed by `unlock`): the next prune removes its objects.
    store.delete("locks/node-b.json").unwrap();
    let r = crate::ops::prune::prune_locked(&repo, false).unwrap();
    assert!(
        r.objects_removed + r.leftovers_removed as usize > 1,
        "{r:?}"
    );
    let left: std::collections::HashSet<String> = repo
        .all_objects()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, Repo::referenced_objects([&kept]));
    assert!(store.stat(&record).is_err());
    assert_eq!(read_item(&repo, &kept.items[0]).unwrap(), data(3000, 1));
    std::mem::forget(w);
}

/// Issue 17 item 3: manifests record their components; older ones derive them from the items.
#[test]
fn manifests_record_their_series() {
    let repo = small_repo(MemBackend::new());
    let w = writer(&repo);
    w.component("files");
    w.put_bytes(ItemSpec::content("files/x", false), b"x")
        .unwrap();
    let m = w.commit("node-a".into(), "manual".into(), vec![]).unwrap();
    assert_eq!(m.components, vec!["files".to_string()]);
    let back = repo.load_manifest(&m.id).unwrap();
    assert_eq!(back.host(), "node-a");
    let mut old = back.clone();
    old.components.clear();
    assert_eq!(old.components(), ["files".to_string()].into());
    assert!(old.same_series("node-a", &["files".to_string()].into()));
    assert!(!old.same_series("node-b", &["files".to_string()].into()));
}

#[test]
fn a_manifest_is_never_written_over_and_a_retried_commit_of_the_same_bytes_is_fine() {
    let store = MemBackend::new();
    let repo = small_repo(store.clone());
    let m = snapshot(&repo, None, &[("a", &data(3000, 1))]);
    let key = format!("snapshots/{}.json", m.id);
    let stored = store.get(&key, u64::MAX).unwrap();
    // The same bytes again (a retried request whose first attempt landed): fine.
    repo.commit_manifest(&m).unwrap();
    // Another manifest under that id: refused, the stored one untouched.
    let mut other = m.clone();
    other.tags.push("forged".into());
    let e = repo.commit_manifest(&other).unwrap_err();
    assert!(format!("{e:#}").contains("never written over"), "{e:#}");
    assert_eq!(store.get(&key, u64::MAX).unwrap(), stored);
    // A second `init` on the same store (two racing inits) does not replace the marker.
    let marker = store.get(MARKER, u64::MAX).unwrap();
    assert!(Repo::init_on(store.clone()).is_err());
    assert_eq!(store.get(MARKER, u64::MAX).unwrap(), marker);
    // `repair` rewrites a manifest on purpose.
    repo.replace_manifest(&other).unwrap();
    assert_eq!(repo.load_manifest(&m.id).unwrap().tags, other.tags);
}

#[test]
fn forget_locks_share_with_writers_only() {
    use lock::Kind;
    let repo = small_repo(MemBackend::new());
    let w = Duration::ZERO;
    let writer = repo.lock_kind(Kind::Writer, "snapshot", w).unwrap();
    let forget = repo.lock_kind(Kind::Forget, "forget", w).unwrap();
    let writer2 = repo.lock_kind(Kind::Writer, "snapshot", w).unwrap();
    for (kind, cmd) in [
        (Kind::Forget, "forget"),
        (Kind::Reader, "verify"),
        (Kind::Exclusive, "prune"),
    ] {
        let e = repo.lock_kind(kind, cmd, w).err().expect("blocked");
        assert_eq!(exit_code(&e), crate::error::EXIT_LOCKED, "{cmd}");
    }
    drop((writer, writer2, forget));
    let reader = repo.lock_kind(Kind::Reader, "verify", w).unwrap();
    assert!(repo.lock_kind(Kind::Forget, "forget", w).is_err());
    assert!(repo.lock_kind(Kind::Writer, "snapshot", w).is_ok());
    drop(reader);
    assert_eq!(lock::list_locks(repo.store()).unwrap().len(), 0);
}

fn packed_repo(store: Arc<dyn Backend>) -> Repo {
    let (mut repo, _) = Repo::init_with(store, FORMAT_VERSION, None, true).unwrap();
    repo.config.chunk_min = 64;
    repo.config.chunk_avg = 256;
    repo.config.chunk_max = 1024;
    repo
}

/// Packs: small objects go into one pack (plus its index) flushed at commit; read back through
/// a fresh handle, through the trailer when the index file is lost; deduplicated; the marker
/// field is absent for a repository without packs.
#[test]
fn small_objects_are_packed_and_read_back() {
    let store = MemBackend::new();
    let repo = packed_repo(store.clone());
    let a = data(20_000, 1);
    let m = snapshot(&repo, None, &[("a", &a), ("b", b"bee")]);
    assert!(store.list("objects/").unwrap().is_empty());
    let packs = store.list("packs/").unwrap();
    assert_eq!(packs.len(), 1, "{packs:?}");
    assert_eq!(store.list("index/").unwrap().len(), 1);
    let n = Repo::referenced_objects([&m]).len();
    assert!(n > 10, "{n}");
    assert_eq!(repo.all_objects().unwrap().len(), n);
    let fresh = Repo::open_on(store.clone()).unwrap();
    assert!(fresh.packs_enabled());
    assert_eq!(read_item(&fresh, &m.items[0]).unwrap(), a);
    // The index file is lost: the trailer serves.
    let idx = store.list("index/").unwrap()[0].0.clone();
    store.delete(&idx).unwrap();
    let mut fresh = Repo::open_on(store.clone()).unwrap();
    fresh.config = repo.config.clone();
    assert_eq!(read_item(&fresh, &m.items[0]).unwrap(), a);
    assert_eq!(fresh.all_objects().unwrap().len(), n);
    // The same content again adds nothing.
    let m2 = snapshot(&fresh, Some(m.clone()), &[("a", &a), ("c", &a)]);
    assert_eq!(m2.stats.objects_added, 0, "{:?}", m2.stats);
    assert_eq!(store.list("packs/").unwrap().len(), 1);
    // No `packs` in a marker without packs (the first release's marker stays byte-identical).
    let loose = MemBackend::new();
    let _ = small_repo(loose.clone());
    let marker = String::from_utf8(loose.get(MARKER, 1 << 16).unwrap()).unwrap();
    assert!(!marker.contains("packs"), "{marker}");
    assert!(Repo::open_on(loose).unwrap().config.packs.eq(&false));
}

#[test]
fn pack_index_round_trips_and_refuses_damage() {
    use packs::{decode_index, encode_index, PackEntry};
    let e = vec![
        PackEntry {
            id: "a".repeat(64),
            ty: ObjectType::Full,
            offset: 0,
            len: 10,
        },
        PackEntry {
            id: "b".repeat(64),
            ty: ObjectType::Signature,
            offset: 10,
            len: 5,
        },
    ];
    let text = encode_index(&e);
    assert_eq!(decode_index(&text, Some(15)).unwrap(), e);
    assert!(decode_index(&text, Some(14)).is_err(), "past the end");
    let mut bad = text.clone();
    let k = bad.len() - 3;
    bad[k] = b'9';
    assert!(decode_index(&bad, None).is_err(), "checksum");
    let hostile = encode_index(&[PackEntry {
        id: "../../etc/passwd".into(),
        ty: ObjectType::Full,
        offset: 0,
        len: 1,
    }]);
    assert!(decode_index(&hostile, None).is_err());
}

/// Prune rewrites a mostly unused pack (the live objects move to a new pack, the old pack and
/// index go) and removes a wholly unused one; what is kept still reads.
#[test]
fn prune_rewrites_and_removes_packs() {
    let store = MemBackend::new();
    let repo = packed_repo(store.clone());
    let keep = data(2_000, 3);
    let m1 = snapshot(&repo, None, &[("k", &keep), ("gone", &data(30_000, 4))]);
    let m2 = snapshot(&repo, None, &[("k", &keep)]);
    let m3 = snapshot(&repo, None, &[("only3", &data(5_000, 5))]);
    assert_eq!(store.list("packs/").unwrap().len(), 2, "m2 added nothing");
    repo.remove_manifest(&m1.id).unwrap();
    repo.remove_manifest(&m3.id).unwrap();
    let ex = repo.lock(true, "prune", Duration::ZERO).unwrap();
    let r = crate::ops::prune::prune_locked(&repo, false).unwrap();
    drop(ex);
    assert_eq!((r.packs_removed, r.packs_repacked), (1, 1), "{r:?}");
    assert_eq!(store.list("packs/").unwrap().len(), 1);
    assert_eq!(store.list("index/").unwrap().len(), 1);
    let fresh = Repo::open_on(store.clone()).unwrap();
    let left: std::collections::HashSet<String> = fresh
        .all_objects()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, Repo::referenced_objects([&m2]));
    assert_eq!(read_item(&fresh, &m2.items[0]).unwrap(), keep);
}

/// Format v2 encrypted: nothing plain in the store; the tag and the passphrase are checked; a
/// manifest under another snapshot's name is refused.
#[test]
fn format_v2_seals_objects_and_manifests() {
    let store = MemBackend::new();
    let (repo, _) = Repo::init_with(store.clone(), FORMAT_VERSION, Some(b"pw"), true).unwrap();
    let secret = b"top secret top secret top secret top secret";
    let m = snapshot(&repo, None, &[("f", secret)]);
    for (k, _) in store.list("").unwrap() {
        let b = store.get(&k, 1 << 20).unwrap();
        assert!(
            !b.windows(10).any(|w| w == &secret[..10]),
            "{k} holds the secret"
        );
    }
    let mk = format!("snapshots/{}.json", m.id);
    assert!(store.get(&mk, 1 << 20).unwrap().starts_with(b"MNBM\x02X"));
    let mut other = Repo::open_on(store.clone()).unwrap();
    let e = other.load_manifest(&m.id).unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_KEY, "{e:#}");
    let e = other.unlock(b"wrong").unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_KEY, "{e:#}");
    other.unlock(b"pw").unwrap();
    assert_eq!(other.load_manifest(&m.id).unwrap(), m);
    let item = &m.items[0];
    let got = read_item(&other, item).unwrap();
    assert_eq!(got, secret);
    // A second snapshot's name on the first's manifest: the tag (key name in the AAD) refuses it.
    let m2 = snapshot(&repo, None, &[("f", b"other")]);
    let first = store.get(&mk, 1 << 20).unwrap();
    store
        .put_replace(&format!("snapshots/{}.json", m2.id), &first)
        .unwrap();
    let e = other.load_manifest(&m2.id).unwrap_err();
    assert_eq!(exit_code(&e), crate::error::EXIT_INTEGRITY, "{e:#}");
    // Keys: the last one is never removed; an added one opens.
    let id2 = repo.add_key(b"two").unwrap();
    let mut third = Repo::open_on(store.clone()).unwrap();
    assert_eq!(third.unlock(b"two").unwrap(), id2);
    let first_key = repo.key_id.clone().unwrap();
    repo.remove_key(&first_key).unwrap();
    assert!(repo.remove_key(&id2).is_err());
    assert_eq!(
        exit_code(&Repo::open_on(store).unwrap().unlock(b"pw").unwrap_err()),
        crate::error::EXIT_KEY
    );
}
