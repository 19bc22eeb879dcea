//! Garbage collection: it deletes exactly the chunks no version references, never one that a
//! finished or running backup needs, and it stays out of the way of backups (and they of it)
//! through the lock protocol.

use crate::util::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn gc_json(v: &Vault, args: &[&str]) -> Value {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    v.run(&all).ok().json()
}

/// gc reads the versions of every series from one listing of manifests/: one LIST request per
/// series (403 for 400 series) was the cost on S3 before.
#[test]
fn gc_lists_the_manifests_once_however_many_series() {
    let v = Vault::new();
    for i in 0..6 {
        v.run_with_stdin(&["backup", "--name", &format!("s{i}"), "-"], vec![i; 1000])
            .ok();
    }
    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "series"), 6, "{g}");
    // The lock's two, manifests/ once, chunks/ once.
    assert!(n(&g["requests"], "list") <= 4, "{g}");

    // Every text summary says what the run cost, as the README promises.
    let requests = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("requests: ") && l.contains(" LIST, "))
            .map(String::from)
    };
    for args in [&["gc"][..], &["check"], &["check", "--read-data"]] {
        let out = v.run(args).ok().stdout_text();
        assert!(requests(&out).is_some(), "{args:?}:\n{out}");
    }
    let restored = v.path("s1.out");
    let r = v.run(&["restore", "--name", "s1", s(&restored)]).ok();
    assert!(requests(&r.stderr).is_some(), "restore:\n{}", r.stderr);
}

#[test]
fn gc_deletes_exactly_the_chunks_no_version_references() {
    let v = Vault::new();
    let (a, b) = (v.path("a"), v.path("b"));
    write_random_file(&a, 1, 20 * MIB);
    write_random_file(&b, 2, 20 * MIB);
    let va = v.backup("vm", &[s(&a)]);
    let vb = v.backup("vm", &[s(&b), "--time", "2030-01-01T00:00:00Z"]);
    assert_eq!(v.chunk_objects().len(), 10);

    // Nothing is garbage while both versions exist.
    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "chunks_deleted"), 0, "{g}");
    assert_eq!(v.chunk_objects().len(), 10);

    v.run(&["forget", "--name", "vm", "--version", text(&va, "version")])
        .ok();
    let dry = gc_json(&v, &["--dry-run"]);
    assert_eq!(
        (
            n(&dry, "chunks_deleted"),
            n(&dry, "bytes_deleted") >= 20 * MIB
        ),
        (5, true),
        "{dry}"
    );
    assert_eq!(v.chunk_objects().len(), 10, "a dry run deletes nothing");

    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "chunks_deleted"), 5, "{g}");
    assert_eq!(v.chunk_objects().len(), 5);
    assert!(
        v.repo
            .join("locks")
            .read_dir()
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "gc released its lock"
    );
    let out = v.path("b.out");
    v.restore("vm", &["--version", text(&vb, "version"), s(&out)]);
    assert_same_contents(&b, &out);
    assert_eq!(
        n(&gc_json(&v, &[]), "chunks_deleted"),
        0,
        "a second gc finds nothing"
    );
}

#[test]
fn gc_is_refused_while_a_backup_runs_and_a_backup_while_gc_would() {
    let v = Vault::new();
    let first = v.path("first");
    write_random_file(&first, 3, 6 * MIB);
    v.backup("vm", &[s(&first)]);
    // A backup reading from a pipe we hold open: it holds its shared lock until we close it.
    let mut child = v
        .cmd(&["backup", "--name", "stream", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&random_bytes(4, 3 * MIB as usize)).unwrap();
    let started = Instant::now();
    while v
        .repo
        .join("locks")
        .read_dir()
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the backup never took its lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = v.run(&["gc"]);
    refused.error(5, &["locked", "backup of stream"]);
    // Another machine or container with the same host name sees no process with the
    // backup's pid; the lock is live all the same (it was taken for stale, and gc deleted
    // what the backup had stored).
    require_tool("unshare");
    let inner = v.cmd(&["gc"]);
    let mut elsewhere = Command::new("unshare");
    elsewhere
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, val) in inner.get_envs() {
        match val {
            Some(x) => elsewhere.env(k, x),
            None => elsewhere.env_remove(k),
        };
    }
    run(&mut elsewhere, None).error(5, &["locked", "backup of stream"]);
    // A stale limit that would make every live lock stale, or a typo, is refused.
    for bad in ["-1", "0", "1h", ""] {
        let mut c = v.cmd(&["gc"]);
        c.env("BLOCKVAULT_LOCK_STALE_SECS", bad);
        run(&mut c, None).error(2, &["BLOCKVAULT_LOCK_STALE_SECS", "above zero"]);
    }
    // A dry run takes no lock, so it runs, but says a real gc would not.
    let dry = gc_json(&v, &["--dry-run"]);
    assert!(
        dry["blocked_by"]
            .as_str()
            .is_some_and(|b| b.contains("backup of stream")),
        "{dry}"
    );
    stdin.write_all(&random_bytes(5, MIB as usize)).unwrap();
    drop(stdin);
    assert!(
        child.wait().unwrap().success(),
        "the backup finished despite the gc attempt"
    );
    // With the backup done, gc runs, and every version is intact.
    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "versions"), 2, "{g}");
    assert_eq!(n(&g, "chunks_deleted"), 0, "{g}");
    v.run(&["check", "--read-data"]).ok();
}

#[test]
fn leftovers_of_a_killed_backup_are_collected_and_nothing_else() {
    let v = Vault::new();
    let kept = v.path("kept");
    write_random_file(&kept, 6, 8 * MIB);
    let kv = v.backup("vm", &[s(&kept)]);
    let big = v.path("big");
    write_random_file(&big, 7, 200 * MIB);
    let before = v.chunk_objects().len();
    let mut child = v
        .cmd(&["backup", "--name", "vm", s(&big)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while v.chunk_objects().len() < before + 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be killed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let leftovers = v.chunk_objects().len() - before;
    // The dead process's lock is on this host and its pid is gone: it does not block gc.
    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "chunks_deleted"), leftovers as u64, "{g}");
    assert_eq!(v.chunk_objects().len(), before);
    let out = v.path("kept.out");
    v.restore("vm", &["--version", text(&kv, "version"), s(&out)]);
    assert_same_contents(&kept, &out);
    v.run(&["check", "--read-data"]).ok();
}

/// Temporary files of writes cut short (by a crash, a kill or a stop) are hidden from every
/// listing; gc removes those older than the lock's stale limit, and only those.
#[test]
fn gc_removes_temporary_files_that_writes_cut_short_left_behind() {
    let v = Vault::new();
    let source = v.path("disk");
    write_random_file(&source, 9, 8 * MIB);
    let b = v.backup("vm", &[s(&source)]);
    let chunk = v.chunk_objects()[0].clone();
    let dir = chunk.parent().expect("a chunk's directory");
    let plant = |dir: &std::path::Path, name: &str, bytes: usize, hours_old: u64| {
        let path = dir.join(name);
        let f = std::fs::File::create(&path).expect("planting a temporary file");
        (&f).write_all(&vec![7u8; bytes]).expect("writing it");
        let when = std::time::SystemTime::now() - Duration::from_secs(hours_old * 3600);
        f.set_modified(when).expect("dating it");
        path
    };
    let old_chunk = plant(dir, ".tmp-4242-00000000000000aa", 100_000, 2);
    let old_manifest = plant(
        &v.repo.join("manifests"),
        ".tmp-4242-00000000000000bb",
        500,
        5,
    );
    // Younger than the stale limit: possibly a write still going on.
    let young = plant(dir, ".tmp-4243-00000000000000cc", 300, 0);
    // A directory of such a name is not a leftover of ours: only files are.
    std::fs::create_dir(dir.join(".tmp-dir")).expect("a hidden directory");

    let dry = gc_json(&v, &["--dry-run"]);
    assert_eq!(n(&dry, "leftovers_deleted"), 2, "{dry}");
    assert_eq!(n(&dry, "leftover_bytes_deleted"), 100_500, "{dry}");
    assert!(
        old_chunk.exists() && old_manifest.exists(),
        "a dry run deleted"
    );

    let g = gc_json(&v, &[]);
    assert_eq!(n(&g, "leftovers_deleted"), 2, "{g}");
    assert_eq!(n(&g, "chunks_deleted"), 0, "{g}");
    assert!(!old_chunk.exists() && !old_manifest.exists(), "left behind");
    assert!(
        young.exists(),
        "a young temporary file may belong to a running write"
    );
    assert!(dir.join(".tmp-dir").is_dir());
    let said = v.run(&["gc"]).ok().stdout_text();
    assert!(
        !said.contains("temporary files"),
        "nothing left to say: {said}"
    );
    let out = v.path("disk.out");
    v.restore("vm", &["--version", text(&b, "version"), s(&out)]);
    assert_same_contents(&source, &out);
}

/// Backups in other processes while gc runs again and again: whichever gets the lock first
/// goes, the other is refused (exit 5) and tries again; afterwards every version restores
/// bit-exact. A gc that deleted a chunk a running backup had decided to reuse would show up
/// here as a version that fails to restore.
#[test]
fn backups_in_other_processes_while_gc_runs_repeatedly() {
    let v = Vault::new();
    // Sources that share chunks with each other, so reuse decisions happen all the time.
    let base = random_bytes(8, 24 * MIB as usize);
    let mut sources = Vec::new();
    for i in 0..6u64 {
        let mut data = base.clone();
        let at = (i as usize * 4 * MIB as usize) % data.len();
        data[at..at + 4096].copy_from_slice(&random_bytes(100 + i, 4096));
        let p = v.path(&format!("src-{i}"));
        std::fs::write(&p, &data).unwrap();
        sources.push(p);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let made: Vec<(String, std::path::PathBuf)> = std::thread::scope(|scope| {
        let backups = scope.spawn(|| {
            let mut made = Vec::new();
            for (i, p) in sources.iter().enumerate() {
                let time = format!("2030-01-01T00:00:{i:02}Z");
                let started = Instant::now();
                loop {
                    let r = v.run(&["backup", "--json", "--name", "vm", s(p), "--time", &time]);
                    if r.code == 5 {
                        assert!(
                            started.elapsed() < Duration::from_secs(120),
                            "the backup never got the lock"
                        );
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    let summary = r.ok().json();
                    made.push((text(&summary, "version").to_string(), p.clone()));
                    break;
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            made
        });
        let mut gc_runs = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let r = v.run(&["gc", "--json"]);
            assert!(
                r.code == 0 || r.code == 5,
                "gc either runs or is refused: {r:?}"
            );
            gc_runs += usize::from(r.code == 0);
        }
        assert!(gc_runs > 0, "gc never got a turn");
        backups.join().unwrap()
    });
    assert_eq!(made.len(), 6);
    v.run(&["gc"]).ok();
    for (version, source) in &made {
        let out = v.path(&format!("{version}.out"));
        v.restore("vm", &["--version", version, s(&out)]);
        assert_same_contents(source, &out);
    }
}
