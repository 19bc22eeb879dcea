//! ZFS end to end, with real `zfs send` and `zfs receive` from zfs-fuse: pools on image files,
//! datasets of real files, snapshots, chains of full and incremental streams (also `-R` and
//! `-I` compound streams), restores replayed into fresh datasets and compared with `diff -r`,
//! damaged streams refused, and chains that `forget` will not break.
//!
//! The zfs-fuse daemon is started by the first test that needs it and stopped when the last
//! one is done (a daemon that was already running is used and left alone). Each test has its
//! own pool on an image file in its own temporary directory, destroyed afterwards.
//!
//! The tests take turns with the daemon: two of them creating datasets at the same moment
//! once left zfs-fuse 0.7 wedged for good (both `zfs create` stuck on the new mounts' first
//! `getattr`, every later `zpool` call unanswered), and a hung suite is worse than a slower one.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many tests hold the daemon, and the daemon if we started it.
static DAEMON: Mutex<(usize, Option<Child>)> = Mutex::new((0, None));
static POOLS: AtomicUsize = AtomicUsize::new(0);
/// Held by each test's [`Pool`] from creation to destruction: one test at a time uses zfs-fuse.
static TURN: Mutex<()> = Mutex::new(());

fn zpool_answers() -> bool {
    Command::new("zpool")
        .arg("list")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn daemon_acquire() {
    require_tool("zfs-fuse");
    let mut d = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    d.0 += 1;
    if d.0 > 1 || zpool_answers() {
        return;
    }
    let child = Command::new("zfs-fuse")
        .args(["--no-daemon", "--no-kstat-mount"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting zfs-fuse");
    d.1 = Some(child);
    let started = Instant::now();
    while !zpool_answers() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "zfs-fuse did not answer `zpool list` within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn daemon_release() {
    let mut d = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    d.0 -= 1;
    if d.0 == 0
        && let Some(mut child) = d.1.take()
    {
        // SIGTERM lets zfs-fuse unmount and export cleanly.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A pool on an image file, destroyed when dropped.
struct Pool {
    name: String,
    mnt: PathBuf,
    /// Released after `drop` has destroyed the pool.
    _turn: MutexGuard<'static, ()>,
}

impl Pool {
    fn new(v: &Vault) -> Pool {
        // A test that failed while holding its turn poisons the lock; the next may still go.
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        daemon_acquire();
        let name = format!(
            "bvt{}x{}",
            std::process::id(),
            POOLS.fetch_add(1, Ordering::SeqCst)
        );
        let image = v.path(&format!("{name}.img"));
        let mnt = v.path(&format!("{name}-mnt"));
        tool("truncate", &["-s", "256M", s(&image)]);
        // Not in zfs-fuse's cache file: a pool whose image is gone would linger there as
        // FAULTED in every later `zpool list`.
        tool(
            "zpool",
            &[
                "create",
                "-o",
                "cachefile=none",
                "-m",
                s(&mnt),
                &name,
                s(&image),
            ],
        );
        Pool {
            name,
            mnt,
            _turn: turn,
        }
    }

    /// `pool/child`
    fn ds(&self, child: &str) -> String {
        format!("{}/{child}", self.name)
    }

    fn mountpoint(&self, child: &str) -> PathBuf {
        self.mnt.join(child)
    }

    fn guid(&self, snapshot: &str) -> String {
        let dec = tool("zfs", &["get", "-H", "-p", "-o", "value", "guid", snapshot]);
        let g: u64 = dec.trim().parse().expect("zfs get guid prints a number");
        format!("{g:016x}")
    }

    fn snapshots(&self, ds: &str) -> Vec<String> {
        tool(
            "zfs",
            &[
                "list",
                "-H",
                "-t",
                "snapshot",
                "-o",
                "name",
                "-s",
                "createtxg",
                "-r",
                ds,
            ],
        )
        .lines()
        .map(String::from)
        .collect()
    }

    fn send(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("zfs")
            .arg("send")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running zfs send");
        assert!(out.status.success(), "zfs send {args:?} failed");
        out.stdout
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // zfs-fuse answers "pool is busy" for a moment after its datasets were last used.
        for _ in 0..50 {
            let destroyed = Command::new("zpool")
                .args(["destroy", "-f", &self.name])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if destroyed {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon_release();
    }
}

/// A dataset of real files with three snapshots: @a, @b (files added and one changed), @c
/// (a file removed, one appended to).
fn dataset_with_history(pool: &Pool, child: &str) -> String {
    let ds = pool.ds(child);
    tool("zfs", &["create", &ds]);
    let root = pool.mountpoint(child);
    copy_real_files(&root.join("first"), 6 * MIB, 0);
    tool("zfs", &["snapshot", &format!("{ds}@a")]);
    copy_real_files(&root.join("second"), 3 * MIB, 400);
    write_random_file(&root.join("changed.bin"), 7, 300_000);
    tool("zfs", &["snapshot", &format!("{ds}@b")]);
    fs::remove_dir_all(root.join("first")).expect("removing a directory on the pool");
    scribble(&root.join("changed.bin"), 4096, 20_000, 8);
    tool("zfs", &["snapshot", &format!("{ds}@c")]);
    ds
}

#[track_caller]
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("running diff");
    assert!(
        out.status.success(),
        "diff -r {} {} found differences:\n{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn rows_of(v: &Vault, series: &str) -> Vec<Value> {
    v.list()
        .into_iter()
        .filter(|r| r["series"] == series)
        .collect()
}

#[test]
fn zfs_chain_backup_list_forget_and_replayed_restore() {
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "vm");
    let (ga, gb, gc) = (
        pool.guid(&format!("{ds}@a")),
        pool.guid(&format!("{ds}@b")),
        pool.guid(&format!("{ds}@c")),
    );

    // Full, explicit incremental, then auto-incremental (which must pick @b). The series is
    // named after the dataset.
    let full = v
        .run(&["backup", "--json", "--zfs", &format!("{ds}@a")])
        .ok()
        .json();
    assert_eq!(full["series"], ds.as_str());
    assert_eq!(full["zfs"]["guid"], ga.as_str());
    assert_eq!(full["zfs"]["incremental"], false);
    let inc = v
        .run(&[
            "backup",
            "--json",
            "--zfs",
            &format!("{ds}@b"),
            "--from",
            "@a",
        ])
        .ok()
        .json();
    assert_eq!(inc["zfs"]["base_guid"], ga.as_str());
    let auto = v
        .run(&["backup", "--zfs", &format!("{ds}@c"), "--auto-incremental"])
        .ok();
    assert!(
        auto.stdout_text()
            .contains(&format!("incremental from {ds}@b")),
        "auto-incremental should build on @b:\n{}",
        auto.stdout_text()
    );

    let rows = rows_of(&v, &ds);
    assert_eq!(rows.len(), 3);
    let by_snap = |snap: &str| -> &Value {
        rows.iter()
            .find(|r| r["snapshot"] == format!("{ds}@{snap}").as_str())
            .unwrap_or_else(|| panic!("no version of @{snap} in {rows:?}"))
    };
    assert_eq!(by_snap("a")["base_guid"], "0000000000000000");
    assert_eq!(by_snap("b")["base_guid"], ga.as_str());
    assert_eq!(by_snap("c")["guid"], gc.as_str());
    assert_eq!(by_snap("c")["base_guid"], gb.as_str());
    assert_eq!(by_snap("c")["needs"], by_snap("b")["version"]);
    assert!(rows.iter().all(|r| r["restorable"] == true), "{rows:?}");
    let version_a = text(by_snap("a"), "version").to_string();

    // The chain is replayed, one receive per stream, into a new dataset.
    let target = pool.ds("restored");
    let r = v
        .run(&[
            "restore",
            "--json",
            "--name",
            &ds,
            "--version",
            "@c",
            "--zfs-receive",
            &target,
        ])
        .ok()
        .json();
    assert_eq!(r["received"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(
        pool.snapshots(&target),
        ["a", "b", "c"].map(|s| format!("{target}@{s}"))
    );
    assert_eq!(pool.guid(&format!("{target}@c")), gc);
    assert_same_tree(&pool.mountpoint("vm"), &pool.mountpoint("restored"));

    // One stored stream to stdout is the stream `zfs send` made, byte for byte.
    let out = v
        .run(&["restore", "--name", &ds, "--version", "@b", "-"])
        .ok();
    assert_eq!(out.stdout, pool.send(&["-i", "@a", &format!("{ds}@b")]));

    // Forgetting the base of the chain is refused, naming what it would orphan.
    let refused = v
        .run(&["forget", "--name", &ds, "--version", &version_a])
        .error(1, &["needed to restore", "--force"]);
    for needed in ["b", "c"] {
        assert!(
            refused.stderr.contains(text(by_snap(needed), "version")),
            "the refusal should name the version of @{needed}: {}",
            refused.stderr
        );
    }
    assert_eq!(rows_of(&v, &ds).len(), 3, "nothing was removed");
    // Pruning to the newest version keeps the whole chain, with the reason.
    let plan = v
        .run(&["prune", "--name", &ds, "--keep-last", "1", "--dry-run"])
        .ok()
        .stdout_text();
    assert!(
        plan.contains("keep 3, remove 0") && plan.contains("needed by"),
        "{plan}"
    );

    // A second full send of @a is the stream already stored: it stores nothing and records
    // nothing (a copy made later would pass for the newest version), and @c stays current.
    let again = v
        .run(&["backup", "--json", "--zfs", &format!("{ds}@a")])
        .ok()
        .json();
    assert_eq!(again["recorded"], false, "{again}");
    assert_eq!(text(&again, "version"), version_a, "{again}");
    assert_eq!(n(&again, "chunks_new"), 0, "{again}");
    assert_eq!(rows_of(&v, &ds).len(), 3);
    let target2 = pool.ds("restored2");
    v.run(&["restore", "--name", &ds, "--zfs-receive", &target2])
        .ok();
    assert_same_tree(&pool.mountpoint("vm"), &pool.mountpoint("restored2"));

    // A forced forget of the middle says what it destroyed, and `list` shows it.
    let version_b = text(by_snap("b"), "version").to_string();
    let forced = v
        .run(&["forget", "--name", &ds, "--version", "@b", "--force"])
        .ok();
    assert!(
        forced.stderr.contains("can no longer be restored"),
        "{}",
        forced.stderr
    );
    let rows = rows_of(&v, &ds);
    assert!(!rows.iter().any(|r| r["version"] == version_b.as_str()));
    let c = rows
        .iter()
        .find(|r| r["snapshot"] == format!("{ds}@c").as_str())
        .expect("@c is still listed");
    assert_eq!(c["restorable"], false);
    v.run(&[
        "restore",
        "--name",
        &ds,
        "--version",
        "@c",
        "--zfs-receive",
        &pool.ds("r3"),
    ])
    .error(1, &["cannot be restored", &gb]);
    let r3 = Command::new("zfs")
        .args(["list", &pool.ds("r3")])
        .output()
        .expect("running zfs list");
    assert!(
        !r3.status.success(),
        "a refused restore must not create its target"
    );
    // `check` reports the broken chain (every object is intact, but @c cannot be restored).
    let checked = v.run(&["check"]).code(3);
    let said = format!("{}{}", checked.stdout_text(), checked.stderr);
    assert!(
        said.contains("incremental ZFS stream") && said.contains(&gb),
        "check should name the missing base: {said}"
    );
}

#[test]
fn compound_streams_from_stdin_and_commands_restore_as_a_chain() {
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "fs");
    // A full `-R` stream (all three snapshots) through --command, then nothing more is needed.
    v.backup("rep", &["--command", &format!("zfs send -R {ds}@b")]);
    // `-R -I @b ..@c` from stdin is recognised as ZFS without being told.
    let stream = pool.send(&["-R", "-I", "@b", &format!("{ds}@c")]);
    let s = v
        .run_with_stdin(&["backup", "--json", "--name", "rep", "-"], stream)
        .ok()
        .json();
    assert_eq!(s["zfs"]["compound"], true, "{s}");
    assert_eq!(
        s["zfs"]["base_guid"],
        pool.guid(&format!("{ds}@b")).as_str()
    );
    let rows = rows_of(&v, "rep");
    assert!(rows.iter().all(|r| r["restorable"] == true), "{rows:?}");

    let target = pool.ds("back");
    v.run(&["restore", "--name", "rep", "--zfs-receive", &target])
        .ok();
    assert_eq!(
        pool.snapshots(&target),
        ["a", "b", "c"].map(|s| format!("{target}@{s}"))
    );
    assert_same_tree(&pool.mountpoint("fs"), &pool.mountpoint("back"));

    // A target that already has @b (received above, then rolled back) receives only what is
    // after it.
    tool("zfs", &["rollback", "-r", &format!("{target}@b")]);
    let r = v
        .run(&[
            "restore",
            "--json",
            "--name",
            "rep",
            "--zfs-receive",
            &target,
        ])
        .ok()
        .json();
    assert_eq!(r["skipped"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["received"].as_array().map(Vec::len), Some(1), "{r}");
    assert_same_tree(&pool.mountpoint("fs"), &pool.mountpoint("back"));
}

#[test]
fn damaged_truncated_and_padded_streams_are_refused_at_backup() {
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "d");
    let good = pool.send(&[&format!("{ds}@a")]);
    assert!(good.len() > 100_000, "the stream should hold real data");

    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x10;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1000);
    let mut padded = good.clone();
    padded.extend_from_slice(b"trailing garbage");

    for (what, bytes, needle) in [
        ("a flipped bit", flipped, "checksum"),
        ("a truncation", truncated, "ends"),
        ("trailing bytes", padded, "final end"),
    ] {
        let r = v
            .run_with_stdin(&["backup", "--name", "bad", "-"], bytes)
            .error(1, &["ZFS send stream", "no version recorded"]);
        assert!(
            r.stderr.to_lowercase().contains(needle),
            "{what}: the error should say {needle:?}: {}",
            r.stderr
        );
    }
    // `zfs send` of a snapshot that does not exist fails the backup and says so.
    v.run(&["backup", "--zfs", &format!("{ds}@nosuch")]).fails();
    assert!(
        v.list().is_empty(),
        "no version may be recorded by a failed backup: {:?}",
        v.list()
    );
    // The intact stream goes in, and out again unchanged.
    v.run_with_stdin(&["backup", "--name", "good", "-"], good.clone())
        .ok();
    let out = v.run(&["restore", "--name", "good", "-"]).ok();
    assert!(
        out.stdout == good,
        "the stored stream must come back byte for byte"
    );
}

#[test]
fn a_damaged_chunk_stops_the_chain_before_the_damaged_stream() {
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "z");
    v.run(&["backup", "--zfs", &format!("{ds}@a")]).ok();
    let before: std::collections::HashSet<PathBuf> = v.chunk_objects().into_iter().collect();
    v.run(&["backup", "--zfs", &format!("{ds}@b"), "--from", "@a"])
        .ok();
    let new: Vec<PathBuf> = v
        .chunk_objects()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new.is_empty(), "the incremental stored chunks of its own");
    let victim = &new[0];
    let mut bytes = fs::read(victim).expect("reading a chunk object");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(victim, bytes).expect("damaging a chunk object");

    let target = pool.ds("r");
    v.run(&["restore", "--name", &ds, "--zfs-receive", &target])
        .error(3, &["damaged"]);
    // The full stream was received; the damaged incremental left nothing behind.
    assert_eq!(pool.snapshots(&target), [format!("{target}@a")]);
    v.run(&["check", "--read-data"]).code(3);
}

/// Healing a full stream: sent again from its snapshot, it is the same stream, so it stores
/// the lost chunks and records no second version, which, made later, would have become the
/// current version and, for prune, the newest, ahead of the snapshots after it. A snapshot
/// created before the current one's never becomes current.
#[test]
fn a_full_stream_sent_again_heals_its_chunks_without_a_second_version() {
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "h");
    v.run(&["backup", "--zfs", &format!("{ds}@a")]).ok();
    let full: Vec<PathBuf> = v.chunk_objects();
    v.run(&["backup", "--zfs", &format!("{ds}@c"), "--from", "@a"])
        .ok();
    // Creation times are in seconds: @d is surely created after @a, @b and @c.
    std::thread::sleep(Duration::from_millis(1100));
    write_random_file(&pool.mountpoint("h").join("later.bin"), 9, 50_000);
    tool("zfs", &["snapshot", &format!("{ds}@d")]);
    v.run(&["backup", "--zfs", &format!("{ds}@d"), "--from", "@c"])
        .ok();
    let versions = v.versions(&ds);
    assert_eq!(versions.len(), 3);
    let current = || {
        rows_of(&v, &ds)
            .into_iter()
            .find(|r| r["current"] == true)
            .map(|r| r["snapshot"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(current(), Some(format!("{ds}@d")));

    fs::remove_file(&full[0]).expect("losing a chunk of the full stream");
    // The incrementals received on the damaged full cannot be restored either.
    let report = v.run(&["check", "--json"]).code(3).json();
    assert_eq!(
        report["damaged_versions"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert!(
        report.to_string().contains(&format!(
            "it is received on version {}, which is damaged",
            versions[0]
        )),
        "{report}"
    );
    let healed = v.backup(&ds, &["--heal", "--zfs", &format!("{ds}@a")]);
    assert_eq!(healed["recorded"], false, "{healed}");
    assert_eq!(text(&healed, "version"), versions[0], "{healed}");
    assert!(n(&healed, "chunks_new") >= 1, "{healed}");
    assert_eq!(v.versions(&ds), versions, "a second version was recorded");
    assert_eq!(current(), Some(format!("{ds}@d")));
    v.run(&["check", "--read-data"]).ok();

    // @b was never stored: recorded, but created before @d, it does not become current.
    let older = v.backup(&ds, &["--zfs", &format!("{ds}@b"), "--from", "@a"]);
    assert_eq!(
        (older["recorded"].clone(), older["current"].clone()),
        (Value::Bool(true), Value::Bool(false)),
        "{older}"
    );
    assert_eq!(current(), Some(format!("{ds}@d")));
    // Newest by its backup time, @b is older by its snapshot: a prune that keeps one version
    // keeps @d, by that rule and not only as the current version, and removes @b.
    let plan = v
        .run(&[
            "prune",
            "--json",
            "--name",
            &ds,
            "--keep-last",
            "1",
            "--dry-run",
        ])
        .ok()
        .json();
    let of_d = plan["plan"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["version"] == versions[2].as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(of_d["action"], "keep", "{plan}");
    assert!(of_d.to_string().contains("last 1"), "{plan}");
    let of_b = plan["plan"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["version"] == text(&older, "version"))
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(of_b["action"], "remove", "{plan}");
    let target = pool.ds("r");
    v.run(&["restore", "--name", &ds, "--zfs-receive", &target])
        .ok();
    assert_same_tree(&pool.mountpoint("h"), &pool.mountpoint("r"));
}

#[test]
fn zfs_chain_on_garage_s3() {
    let g = crate::s3_servers::garage();
    let (v, _prefix) = g.vault("zfs");
    v.run(&["init"]).ok();
    let pool = Pool::new(&v);
    let ds = dataset_with_history(&pool, "s3fs");
    v.run(&["backup", "--zfs", &format!("{ds}@a")]).ok();
    for snap in ["b", "c"] {
        v.run(&[
            "backup",
            "--zfs",
            &format!("{ds}@{snap}"),
            "--auto-incremental",
        ])
        .ok();
    }
    let rows = rows_of(&v, &ds);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows.iter()
            .filter(|r| r["base_guid"] == "0000000000000000")
            .count(),
        1,
        "one full stream, then incrementals: {rows:?}"
    );
    let target = pool.ds("from-s3");
    v.run(&["restore", "--name", &ds, "--zfs-receive", &target])
        .ok();
    assert_same_tree(&pool.mountpoint("s3fs"), &pool.mountpoint("from-s3"));
    v.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_zfs_job_takes_snapshots_sends_incrementals_and_a_full_every_third_run() {
    use crate::jobs::{job, job_file, run_jobs};
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = pool.ds("home");
    tool("zfs", &["create", &ds]);
    let root = pool.mountpoint("home");
    copy_real_files(&root.join("first"), 4 * MIB, 0);
    // A snapshot of the user's own: the job must never destroy it.
    let mine = format!("{ds}@mine");
    tool("zfs", &["snapshot", &mine]);
    let config = job_file(
        &v,
        &format!("[[job]]\nname = {ds:?}\nsource = {{ zfs = {ds:?}, full_every = 3 }}\n"),
    );

    let mut taken = Vec::new();
    let mut kinds = Vec::new();
    for run in 0..4 {
        if run > 0 {
            write_random_file(&root.join(format!("run{run}.bin")), run, 200_000);
        }
        let report = run_jobs(&config, &[]).ok().json();
        let j = job(&report, &ds);
        assert_eq!(j["outcome"], "backed-up", "{report}");
        let snap = text(j, "snapshot_taken").to_string();
        assert!(
            snap.starts_with(&format!("{ds}@blockvault-")),
            "snapshot name {snap}"
        );
        assert_eq!(j["backup"]["zfs"]["snapshot"], snap.as_str());
        kinds.push(j["backup"]["zfs"]["incremental"] == true);
        // Only the newest snapshot the job took stays (keep_snapshots = 1); the user's stays.
        let destroyed: Vec<String> = j["snapshots_destroyed"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            destroyed,
            taken.last().cloned().into_iter().collect::<Vec<_>>()
        );
        assert_eq!(pool.snapshots(&ds), vec![mine.clone(), snap.clone()]);
        taken.push(snap);
    }
    // full, incremental, incremental, then full again: full_every = 3.
    assert_eq!(kinds, [false, true, true, false]);

    // A dry run says what it would send and takes no snapshot.
    let dry = run_jobs(&config, &["--dry-run"]).ok().json();
    let j = job(&dry, &ds);
    assert_eq!(j["outcome"], "dry-run");
    assert!(
        text(j, "reason").contains("incremental from the snapshot stored as version"),
        "{j}"
    );
    assert_eq!(pool.snapshots(&ds).len(), 2, "a dry run took a snapshot");
    assert_eq!(rows_of(&v, &ds).len(), 4);

    // The newest version replays into a fresh dataset equal to the source.
    let target = pool.ds("restored");
    v.run(&["restore", "--json", "--name", &ds, "--zfs-receive", &target])
        .ok();
    assert_same_tree(&root, &pool.mountpoint("restored"));

    // A job for a dataset that does not exist fails and says which.
    let missing = pool.ds("nope");
    let config = job_file(
        &v,
        &format!("[[job]]\nname = \"nope\"\nsource = {{ zfs = {missing:?} }}\n"),
    );
    let r = run_jobs(&config, &[]).code(1);
    assert!(
        r.stderr.contains("1 of 1 jobs failed: nope"),
        "{}",
        r.stderr
    );
    assert!(text(job(&r.json(), "nope"), "reason").contains(&missing));
}

/// `recursive = true`: a job snapshots a dataset and its children at once (`-r`), sends a
/// replication stream (`zfs send -R`, incremental on the second run), destroys its older
/// snapshots on every dataset, and the chain restores the whole tree.
#[test]
fn a_recursive_zfs_job_backs_up_and_restores_a_dataset_tree() {
    use crate::jobs::{job, job_file, run_jobs};
    let v = Vault::new();
    let pool = Pool::new(&v);
    let ds = pool.ds("vms");
    let child = pool.ds("vms/disk1");
    tool("zfs", &["create", &ds]);
    tool("zfs", &["create", &child]);
    copy_real_files(&pool.mountpoint("vms").join("top"), 2 * MIB, 0);
    copy_real_files(&pool.mountpoint("vms/disk1").join("inner"), 2 * MIB, 1);
    let config = job_file(
        &v,
        &format!("[[job]]\nname = \"vms\"\nsource = {{ zfs = {ds:?}, recursive = true }}\n"),
    );

    for run in 0..2 {
        if run > 0 {
            write_random_file(
                &pool.mountpoint("vms/disk1").join("changed.bin"),
                9,
                300_000,
            );
        }
        let report = run_jobs(&config, &[]).ok().json();
        let j = job(&report, "vms");
        assert_eq!(j["outcome"], "backed-up", "{report}");
        let snap = text(j, "snapshot_taken").to_string();
        assert_eq!(
            j["backup"]["zfs"]["compound"], true,
            "a replication stream: {j}"
        );
        assert_eq!(j["backup"]["zfs"]["incremental"], run > 0, "{j}");
        assert_eq!(
            j["backup"]["zfs"]["substreams"], 2,
            "one substream for the dataset, one for its child: {j}"
        );
        let short = snap
            .split_once('@')
            .map(|(_, s)| s.to_string())
            .unwrap_or_default();
        // Only this run's snapshot stays, on the dataset and on its child.
        assert_eq!(
            pool.snapshots(&ds),
            [format!("{ds}@{short}"), format!("{child}@{short}")],
            "run {run}"
        );
    }

    // `restore --json --name vms --zfs-receive TARGET [more]`.
    let receive = |target: &str, more: &[&str]| {
        let mut args = vec![
            "restore",
            "--json",
            "--name",
            "vms",
            "--zfs-receive",
            target,
        ];
        args.extend_from_slice(more);
        v.run(&args)
    };
    let target = pool.ds("restored");
    let r = receive(&target, &[]).ok().json();
    assert_eq!(r["received"].as_array().map(Vec::len), Some(2), "{r}");
    assert_same_tree(&pool.mountpoint("vms"), &pool.mountpoint("restored"));
    assert_same_tree(
        &pool.mountpoint("vms/disk1"),
        &pool.mountpoint("restored/disk1"),
    );
    assert!(
        pool.mountpoint("restored/disk1")
            .join("changed.bin")
            .is_file(),
        "the child's change came with the incremental"
    );

    // A third run, and the restored tree catches up with only the new stream. Mounted, its
    // child touched the parent: zfs refuses the incremental, and --force rolls back first.
    write_random_file(&pool.mountpoint("vms").join("later.bin"), 10, 100_000);
    let report = run_jobs(&config, &["--force"]).ok().json();
    assert_eq!(job(&report, "vms")["outcome"], "backed-up", "{report}");
    receive(&target, &[]).error(
        1,
        &["has been modified", "restore --force rolls the target back"],
    );
    let r = receive(&target, &["--force"]).ok().json();
    assert_eq!(r["skipped"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(r["received"].as_array().map(Vec::len), Some(1), "{r}");
    assert_same_tree(&pool.mountpoint("vms"), &pool.mountpoint("restored"));

    // A replica kept unmounted stays unmounted when it catches up.
    tool("zfs", &["unmount", &format!("{target}/disk1")]);
    tool("zfs", &["unmount", &target]);
    write_random_file(&pool.mountpoint("vms").join("last.bin"), 11, 100_000);
    run_jobs(&config, &["--force"]).ok();
    receive(&target, &["--force"]).ok();
    let mounted = tool("zfs", &["get", "-H", "-o", "value", "mounted", &target]);
    assert_eq!(mounted.trim(), "no", "the replica was mounted");

    // A child created after the base snapshot: sent whole in the next incremental, and a
    // fresh restore of the chain brings all three.
    let late = pool.ds("vms/disk2");
    tool("zfs", &["create", &late]);
    copy_real_files(&pool.mountpoint("vms/disk2").join("new"), MIB, 2);
    let report = run_jobs(&config, &["--force"]).ok().json();
    let j = job(&report, "vms");
    assert_eq!(j["backup"]["zfs"]["incremental"], true, "{j}");
    assert_eq!(
        j["backup"]["zfs"]["substreams"], 3,
        "the new child comes whole inside the incremental: {j}"
    );
    let fresh = pool.ds("fresh");
    receive(&fresh, &[]).ok();
    for (a, b) in [
        ("vms", "fresh"),
        ("vms/disk1", "fresh/disk1"),
        ("vms/disk2", "fresh/disk2"),
    ] {
        assert_same_tree(&pool.mountpoint(a), &pool.mountpoint(b));
    }

    // The same from the command line: `backup --zfs SNAP --recursive` sends -R.
    let newest = pool.snapshots(&ds)[0].clone();
    let b = v
        .run(&["backup", "--json", "--zfs", &newest, "--recursive"])
        .ok()
        .json();
    assert_eq!(b["zfs"]["compound"], true, "{b}");
    assert_eq!(b["zfs"]["incremental"], false, "{b}");

    // recursive belongs to zfs sources; --recursive needs --zfs.
    let bad = job_file(
        &v,
        "[[job]]\nname = \"f\"\nsource = { file = \"/etc/hostname\", recursive = true }\n",
    );
    let e = run_jobs(&bad, &[]).code(2);
    assert!(
        e.stderr.contains("apply to zfs sources only"),
        "{}",
        e.stderr
    );
    v.run(&["backup", "--name", "x", "--recursive", "-"])
        .error(2, &["--recursive need --zfs"]);
}
