//! One conformance suite for the `Store` contract (src/store/mod.rs), run against every
//! backend (restic's `internal/backend/test/suite.go` is the model): the local directory,
//! memory, and S3 on two real servers, Garage and moto (tests/s3_servers.rs), each in a
//! fresh prefix of a shared bucket.
//!
//! One promise depends on the server: an atomic `put_new` needs conditional writes
//! (`If-None-Match: *`), which moto (like AWS) honours and Garage silently ignores. For S3
//! the suite asserts what the store's probe (`S3::conditional_writes`) says, and checks
//! atomicity only where the probe says it is there.

use crate::s3_servers::{self, Server};
use blockvault::store::{LocalDir, Memory, Placed, Store, StoreError};
use std::sync::Arc;

/// Whether the backend's `put_new` is atomic against racing creators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutNew {
    Atomic,
    /// Check-then-write (S3 on a server that ignores `If-None-Match`): racing creators may
    /// all "win"; each write is still whole.
    NotAtomic,
}

/// Every promise of the `Store` trait, checked against one empty store.
pub async fn conformance(store: Arc<dyn Store>) {
    conformance_with(store, PutNew::Atomic).await
}

/// The suite, with `put_new` racing checked as `put_new` says.
pub async fn conformance_with(store: Arc<dyn Store>, put_new: PutNew) {
    let name = store.describe();
    let ctx = |what: &str| format!("{name}: {what}");

    // --- put, get, overwrite ---
    store.put("config", b"one".to_vec()).await.unwrap();
    assert_eq!(
        store.get("config").await.unwrap(),
        b"one",
        "{}",
        ctx("get after put")
    );
    store.put("config", b"two!".to_vec()).await.unwrap();
    assert_eq!(
        store.get("config").await.unwrap(),
        b"two!",
        "{}",
        ctx("put replaces an object")
    );
    store.put("empty", Vec::new()).await.unwrap();
    assert_eq!(
        store.get("empty").await.unwrap(),
        b"",
        "{}",
        ctx("empty object")
    );
    let big: Vec<u8> = (0..(5u32 << 20)).map(|i| (i * 7 + i / 251) as u8).collect();
    store.put("chunks/ab/big", big.clone()).await.unwrap();
    assert!(
        store.get("chunks/ab/big").await.unwrap() == big,
        "{}",
        ctx("a 5 MiB object round-trips")
    );

    // --- put_unsynced and sync: visible at once, and still there after a sync ---
    store
        .put_unsynced("chunks/ab/big", big.clone())
        .await
        .unwrap();
    assert!(
        store.get("chunks/ab/big").await.unwrap() == big,
        "{}",
        ctx("get after put_unsynced")
    );
    store.sync("chunks/").await.unwrap();
    store
        .sync("nothing/here/")
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", ctx("sync of a prefix that holds nothing")));
    assert!(
        store.get("chunks/ab/big").await.unwrap() == big,
        "{}",
        ctx("get after sync")
    );

    // --- put_unsynced_placed: the object is what follows its start, not the whole buffer ---
    let mut buf = vec![0xeeu8; 100];
    buf.extend_from_slice(&big);
    store
        .put_unsynced_placed("chunks/ab/placed", Placed::new(buf, 100))
        .await
        .unwrap();
    store.sync("chunks/").await.unwrap();
    assert!(
        store.get("chunks/ab/placed").await.unwrap() == big,
        "{}",
        ctx("a placed object round-trips without what lies before its start")
    );
    store.delete("chunks/ab/placed").await.unwrap();

    // --- put_new ---
    assert!(
        store
            .put_new("manifests/s/v1", b"first".to_vec())
            .await
            .unwrap(),
        "{}",
        ctx("put_new of a new name creates it")
    );
    assert!(
        !store
            .put_new("manifests/s/v1", b"second".to_vec())
            .await
            .unwrap(),
        "{}",
        ctx("put_new of an existing name says so")
    );
    assert_eq!(
        store.get("manifests/s/v1").await.unwrap(),
        b"first",
        "{}",
        ctx("put_new never replaces an object")
    );

    // put_new is atomic: of many racing writers exactly one wins, and its bytes are stored.
    // Where it is not (PutNew::NotAtomic), at least one wins and the object is one writer's
    // bytes, whole.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let st = store.clone();
        racers.spawn(async move { (i, st.put_new("race/once", vec![i; 4096]).await.unwrap()) });
    }
    let mut winners = Vec::new();
    while let Some(r) = racers.join_next().await {
        let (i, won) = r.unwrap();
        if won {
            winners.push(i);
        }
    }
    let stored = store.get("race/once").await.unwrap();
    match put_new {
        PutNew::Atomic => {
            assert_eq!(
                winners.len(),
                1,
                "{}",
                ctx(&format!("exactly one racing put_new wins, not {winners:?}"))
            );
            assert_eq!(
                stored,
                vec![winners[0]; 4096],
                "{}",
                ctx("the winner's bytes are stored whole")
            );
        }
        PutNew::NotAtomic => {
            assert!(!winners.is_empty(), "{}", ctx("some racing put_new wins"));
            assert!(
                stored.len() == 4096
                    && winners.contains(&stored[0])
                    && stored.iter().all(|&b| b == stored[0]),
                "{}",
                ctx("one winner's bytes are stored whole")
            );
        }
    }

    // --- get of a missing object ---
    for missing in ["nothing", "chunks/zz/none", "manifests/s/v2"] {
        let e = store.get(missing).await.unwrap_err();
        assert!(
            e.is_not_found(),
            "{}",
            ctx(&format!("get {missing} → NotFound, got {e:?}"))
        );
        assert!(
            e.to_string().contains(missing),
            "{}",
            ctx(&format!("the NotFound error names the key: {e}"))
        );
        let e = store.get_range(missing, 0, 10).await.unwrap_err();
        assert!(
            e.is_not_found(),
            "{}",
            ctx(&format!("get_range {missing} → NotFound"))
        );
    }

    // --- ranged reads ---
    store.put("range", b"0123456789".to_vec()).await.unwrap();
    let cases: [(u64, u64, &[u8]); 7] = [
        (0, 10, b"0123456789"),
        (0, 3, b"012"),
        (4, 3, b"456"),
        (8, 100, b"89"),
        (10, 5, b""),
        (1000, 5, b""),
        (3, 0, b""),
    ];
    for (off, len, want) in cases {
        assert_eq!(
            store.get_range("range", off, len).await.unwrap(),
            want,
            "{}",
            ctx(&format!("get_range(range, {off}, {len})"))
        );
    }
    assert!(
        store
            .get_range("chunks/ab/big", 3 << 20, 1 << 20)
            .await
            .unwrap()
            == big[3 << 20..4 << 20],
        "{}",
        ctx("get_range inside a large object")
    );

    // --- exists ---
    assert!(store.exists("config").await.unwrap(), "{}", ctx("exists"));
    assert!(
        store.exists("manifests/s/v1").await.unwrap(),
        "{}",
        ctx("exists nested")
    );
    assert!(
        !store.exists("nothing").await.unwrap(),
        "{}",
        ctx("!exists")
    );
    // A "directory" that holds objects is not itself an object.
    assert!(
        !store.exists("manifests/s").await.unwrap(),
        "{}",
        ctx("prefix is not an object")
    );
    assert!(
        !store.exists("manifests").await.unwrap(),
        "{}",
        ctx("prefix is not an object")
    );

    // --- list ---
    // More than 1000 keys (S3's page size), spread over many "directories", put in an order
    // that is not the sorted one.
    // Written 32 at a time, as the backup pipeline does.
    let mut expected: Vec<String> = Vec::new();
    let mut puts = tokio::task::JoinSet::new();
    for i in (0..1100u32).rev() {
        let h = format!("{:08x}", i.wrapping_mul(2_654_435_761));
        let key = format!("chunks/{}/{h}", &h[..2]);
        expected.push(key.clone());
        let st = store.clone();
        puts.spawn(async move { st.put(&key, vec![i as u8]).await.unwrap() });
        if puts.len() >= 32 {
            puts.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = puts.join_next().await {
        r.unwrap();
    }
    expected.sort();
    let listed = store.list("chunks/").await.unwrap();
    let mut want_all = expected.clone();
    want_all.push("chunks/ab/big".into());
    want_all.sort();
    assert_eq!(
        listed.len(),
        want_all.len(),
        "{}",
        ctx("list returns every key")
    );
    assert!(listed == want_all, "{}", ctx("list is sorted and complete"));
    // With sizes (what gc reports reclaiming): the same keys, each with its length.
    let sized = store.list_sizes("chunks/").await.unwrap();
    let names: Vec<&String> = sized.iter().map(|(k, _)| k).collect();
    assert!(
        names == listed.iter().collect::<Vec<_>>(),
        "{}",
        ctx("list_sizes names what list does")
    );
    let big_len = big.len() as u64;
    assert!(
        sized
            .iter()
            .all(|(k, n)| *n == if k == "chunks/ab/big" { big_len } else { 1 }),
        "{}",
        ctx("list_sizes gives each object's length")
    );

    // A prefix that ends inside a segment.
    let sub = store.list("chunks/a").await.unwrap();
    let want_sub: Vec<String> = want_all
        .iter()
        .filter(|k| k.starts_with("chunks/a"))
        .cloned()
        .collect();
    assert!(!want_sub.is_empty());
    assert_eq!(sub, want_sub, "{}", ctx("list of a partial-segment prefix"));

    // Keys that share a spelling with the prefix but are not under it.
    store.put("manifests/s2/v1", b"x".to_vec()).await.unwrap();
    store.put("manifests/s/v10", b"x".to_vec()).await.unwrap();
    store.put("manifests/s-v1", b"x".to_vec()).await.unwrap();
    store.put("manifestsX", b"x".to_vec()).await.unwrap();
    assert_eq!(
        store.list("manifests/s/").await.unwrap(),
        ["manifests/s/v1", "manifests/s/v10"],
        "{}",
        ctx("list returns nothing outside the prefix")
    );
    assert_eq!(
        store.list("manifests/s").await.unwrap(),
        [
            "manifests/s-v1",
            "manifests/s/v1",
            "manifests/s/v10",
            "manifests/s2/v1"
        ],
        "{}",
        ctx("list of a prefix that is not a whole segment")
    );
    assert_eq!(
        store.list("manifests/").await.unwrap().len(),
        4,
        "{}",
        ctx("list under manifests/")
    );
    assert!(
        store.list("no-such-prefix/").await.unwrap().is_empty(),
        "{}",
        ctx("list of an empty prefix")
    );
    // Names with dots, dashes and percent signs inside are ordinary keys.
    for k in [
        "keys/a.b",
        "keys/a-b_c",
        "current/tank%2Fvm",
        "locks/0123.lock",
    ] {
        store.put(k, b"x".to_vec()).await.unwrap();
    }
    assert_eq!(
        store.list("keys/").await.unwrap(),
        ["keys/a-b_c", "keys/a.b"],
        "{}",
        ctx("list ignores nothing it should return")
    );
    let everything = store.list("").await.unwrap();
    let mut sorted = everything.clone();
    sorted.sort();
    assert_eq!(
        everything,
        sorted,
        "{}",
        ctx("list of everything is sorted")
    );
    for k in [
        "config",
        "empty",
        "range",
        "race/once",
        "current/tank%2Fvm",
        "manifestsX",
    ] {
        assert!(
            everything.iter().any(|e| e == k),
            "{}",
            ctx(&format!("list(\"\") includes {k}"))
        );
    }
    assert_eq!(
        everything.len(),
        want_all.len() + 13,
        "{}",
        ctx("list(\"\") returns every object exactly once")
    );

    // --- delete ---
    store.delete("manifests/s/v1").await.unwrap();
    assert!(
        !store.exists("manifests/s/v1").await.unwrap(),
        "{}",
        ctx("deleted")
    );
    assert!(
        store
            .get("manifests/s/v1")
            .await
            .unwrap_err()
            .is_not_found(),
        "{}",
        ctx("get after delete → NotFound")
    );
    store
        .delete("manifests/s/v1")
        .await
        .expect("deleting a missing object is not an error");
    store
        .delete("never/existed")
        .await
        .expect("deleting a missing object is not an error");
    assert_eq!(
        store.list("manifests/s/").await.unwrap(),
        ["manifests/s/v10"],
        "{}",
        ctx("list after delete")
    );
    // A deleted name can be created again with put_new.
    assert!(
        store
            .put_new("manifests/s/v1", b"again".to_vec())
            .await
            .unwrap()
    );

    // --- invalid keys are refused by every operation and touch nothing ---
    let before = store.list("").await.unwrap();
    for bad in [
        "",
        "../x",
        "a/../b",
        "a//b",
        "/abs",
        "x/",
        ".tmp",
        "a/.tmp-1",
        ".",
        "a/./b",
        "nul\0byte",
    ] {
        let is_bad = |r: Result<(), StoreError>, op: &str| match r {
            Err(StoreError::BadKey { .. }) => {}
            other => panic!(
                "{}",
                ctx(&format!("{op}({bad:?}) should be BadKey, got {other:?}"))
            ),
        };
        is_bad(store.put(bad, b"x".to_vec()).await, "put");
        is_bad(store.put_new(bad, b"x".to_vec()).await.map(drop), "put_new");
        is_bad(store.get(bad).await.map(drop), "get");
        is_bad(store.get_range(bad, 0, 1).await.map(drop), "get_range");
        is_bad(store.exists(bad).await.map(drop), "exists");
        is_bad(store.delete(bad).await, "delete");
    }
    assert_eq!(
        store.list("").await.unwrap(),
        before,
        "{}",
        ctx("refused keys changed nothing")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_dir_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    conformance(Arc::new(LocalDir::new(&root))).await;

    // Nothing escaped the root, and no temporary file was left behind.
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, ["repo"], "objects only under the store's root");
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".tmp"),
                "temporary file left: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// Chunk-sized objects take the direct-write path (aligned pieces, the last one padded and cut
/// back): every length around its edges must come back byte for byte, through each way of
/// putting, on the disk and on tmpfs (which takes `O_DIRECT` only on newer kernels).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_dir_stores_every_length_whole() {
    let disk = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let roots = [Some(disk.path()), shm.as_ref().map(|d| d.path())];
    let lengths = [
        (256 << 10) - 1,
        256 << 10,
        (256 << 10) + 1,
        (1 << 20) + 4097,
        3 << 20,
        (4 << 20) + 40,
    ];
    for root in roots.into_iter().flatten() {
        let store = LocalDir::new(root);
        for (i, &len) in lengths.iter().enumerate() {
            let data: Vec<u8> = (0..len as u32).map(|b| (b * 31 + b / 4099) as u8).collect();
            let keys = [
                format!("chunks/0{i}/put"),
                format!("chunks/0{i}/unsynced"),
                format!("chunks/0{i}/new"),
                format!("chunks/0{i}/placed"),
            ];
            store.put(&keys[0], data.clone()).await.unwrap();
            store.put_unsynced(&keys[1], data.clone()).await.unwrap();
            assert!(store.put_new(&keys[2], data.clone()).await.unwrap());
            // At an aligned address, as a backup seals a chunk that compresses: its whole
            // blocks are written from where they lie, the last partial one through a copy.
            let mut buf = vec![0xeeu8; 4096 + len];
            let start = buf.as_ptr().align_offset(4096);
            buf[start..start + len].copy_from_slice(&data);
            buf.truncate(start + len);
            let back = store
                .put_unsynced_placed(&keys[3], Placed::new(buf, start))
                .await
                .unwrap();
            assert_eq!(back.len(), start + len, "the buffer comes back for reuse");
            store.sync("chunks/").await.unwrap();
            for key in &keys {
                let back = std::fs::read(root.join(key)).unwrap();
                assert!(
                    back == data,
                    "{key} of {len} bytes under {} came back as {} different bytes",
                    root.display(),
                    back.len()
                );
            }
        }
    }
}

/// A crash between writing a temporary file and renaming it leaves a hidden `.tmp-*` file:
/// listing must not report it, and it must not be mistaken for an object.
#[tokio::test]
async fn local_dir_ignores_leftover_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDir::new(dir.path());
    store.put("chunks/ab/abcd", b"data".to_vec()).await.unwrap();
    std::fs::write(dir.path().join("chunks/ab/.tmp-123-00ff"), b"half").unwrap();
    std::fs::write(dir.path().join(".tmp-9-1"), b"half").unwrap();
    assert_eq!(store.list("").await.unwrap(), ["chunks/ab/abcd"]);
    assert_eq!(store.list("chunks/ab/").await.unwrap(), ["chunks/ab/abcd"]);
    // And the object is readable by its plain path, as the format spec promises.
    assert_eq!(
        std::fs::read(dir.path().join("chunks/ab/abcd")).unwrap(),
        b"data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conforms() {
    conformance(Arc::new(Memory::new())).await;
}

/// Garage ignores `If-None-Match: *` (S3-TESTING.md): the probe must say so, and the rest of
/// the contract holds with check-then-write `put_new`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_on_garage_conforms() {
    s3_conforms(s3_servers::garage(), false).await;
}

/// moto honours conditional writes as AWS does: the probe says so, and 16 racing `put_new`
/// have exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_on_moto_conforms() {
    s3_conforms(s3_servers::moto(), true).await;
}

async fn s3_conforms(server: &'static Server, conditional: bool) {
    let prefix = server.fresh_prefix("conformance");
    // Neighbours whose names start like the prefix: the store must neither list nor touch
    // them.
    let client = server.client();
    let neighbours = [format!("{prefix}-sibling/config"), format!("{prefix}x")];
    for k in &neighbours {
        client
            .put_object()
            .bucket(&server.bucket)
            .key(k)
            .body(b"neighbour".to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let store = Arc::new(server.store(&prefix).await);
    let name = store.describe();
    assert!(
        name.contains(&server.bucket) && name.contains(&prefix) && name.contains(&server.endpoint),
        "describe() names bucket, prefix and endpoint: {name}"
    );
    assert_eq!(
        store.conditional_writes().await.unwrap(),
        conditional,
        "{name}: the conditional-write probe on {:?}",
        server.kind
    );
    // Every process asks the server again, whatever an earlier one learnt at this address:
    // a refusal of the existing probe object costs one PUT; a server that ignores the
    // condition accepts two in a row.
    let again = server.store(&prefix).await;
    assert_eq!(
        again.conditional_writes().await.unwrap(),
        conditional,
        "{name}: the probe of a later process on {:?}",
        server.kind
    );
    assert_eq!(
        again.requests().put,
        if conditional { 1 } else { 2 },
        "{name}: the probe's PUTs"
    );
    // The suite starts from an empty store; `store` keeps its answer.
    store.delete(blockvault::layout::PROBE).await.unwrap();
    let put_new = if conditional {
        PutNew::Atomic
    } else {
        PutNew::NotAtomic
    };
    let requests_before = store.requests();
    conformance_with(store.clone() as Arc<dyn Store>, put_new).await;
    let r = store.requests().since(requests_before);
    assert!(
        r.put >= 1100 && r.list >= 2 && r.get > 0 && r.head > 0 && r.delete > 0,
        "{name}: requests are counted by type: {r:?}"
    );

    // Everything the suite wrote is under the prefix, and the neighbours are untouched.
    let listed = prefix.clone();
    let all = tokio::task::spawn_blocking(move || {
        s3_servers::list_objects(&server.client(), &server.bucket, &listed)
    })
    .await
    .unwrap();
    let outside: Vec<_> = all
        .iter()
        .filter(|o| !o.key.starts_with('/'))
        .map(|o| o.key.clone())
        .collect();
    assert_eq!(
        outside,
        ["-sibling/config", "x"],
        "only the neighbours lie outside the prefix"
    );
}

/// A listing of `chunks/` longer than a page is made in ranges at once: on Garage, 6,000
/// chunk names and a few that are not chunks' come back complete, sorted and once each, as
/// one plain listing of the bucket says, in about as many requests as pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_listing_of_many_chunks_in_ranges_is_complete() {
    let server = s3_servers::garage();
    let prefix = server.fresh_prefix("ranges");
    let store = Arc::new(server.store(&prefix).await);
    let mut keys: Vec<String> = (0..6000u64)
        .map(|i| {
            let id = blake3::hash(&i.to_le_bytes()).to_hex();
            format!("chunks/{}/{id}", &id[..2])
        })
        .collect();
    // Names that sort between, before and after the chunks' and are kept all the same.
    keys.extend(
        [
            "chunks/ab/big",
            "chunks/AB/x",
            "chunks/0g/x",
            "chunks/zz",
            "chunks/ff/ffff",
        ]
        .map(String::from),
    );
    let mut puts = tokio::task::JoinSet::new();
    for key in keys.clone() {
        let st = store.clone();
        puts.spawn(async move { st.put(&key, key.as_bytes().to_vec()).await.unwrap() });
        if puts.len() >= 64 {
            puts.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = puts.join_next().await {
        r.unwrap();
    }
    keys.sort();

    let before = store.requests();
    let listed = store.list_sizes("chunks/").await.unwrap();
    let lists = store.requests().since(before).list;
    let names: Vec<&String> = listed.iter().map(|(k, _)| k).collect();
    assert!(
        names == keys.iter().collect::<Vec<_>>(),
        "{} keys listed, {} stored",
        names.len(),
        keys.len()
    );
    assert!(
        listed.iter().all(|(k, n)| *n == k.len() as u64),
        "each key with its size"
    );
    // 7 pages; each range may end with one page that reaches into the next.
    assert!((7..=14).contains(&lists), "{lists} LIST requests");

    let plain = tokio::task::spawn_blocking(move || {
        s3_servers::list_objects(
            &server.client(),
            &server.bucket,
            &format!("{prefix}/chunks/"),
        )
    })
    .await
    .unwrap();
    assert_eq!(plain.len(), keys.len(), "the bucket holds what was put");
}
