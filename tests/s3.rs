//! The binary against `s3://` repositories on real servers (tests/s3_servers.rs): Garage, the
//! production server that ignores conditional writes, for the end-to-end scenarios, request
//! counts, dry runs, errors and an outage; moto, which keeps storage classes as AWS does,
//! for storage classes. Everything is checked from the outside: restored bytes, the
//! `--json` summaries (their `requests` object), exit codes and error lines, and the objects
//! the bucket holds, listed with the SDK.

use crate::s3_servers::{self, Object, RestartableGarage, Server, garage, moto};
use crate::util::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A repository on a fresh prefix of `server`, initialised.
fn new_vault(server: &Server, what: &str, init: &[&str]) -> (Vault, String) {
    let (v, prefix) = server.vault(what);
    let mut args = vec!["init"];
    args.extend_from_slice(init);
    v.run(&args).ok();
    (v, prefix)
}

/// The chunk objects under a prefix.
fn chunk_objects(server: &Server, prefix: &str) -> Vec<Object> {
    server
        .objects(prefix)
        .into_iter()
        .filter(|o| o.key.starts_with("chunks/"))
        .collect()
}

/// The `requests` object of a summary: (put, get, head, list, delete).
#[track_caller]
fn requests(summary: &Value) -> (u64, u64, u64, u64, u64) {
    let r = &summary["requests"];
    (
        n(r, "put"),
        n(r, "get"),
        n(r, "head"),
        n(r, "list"),
        n(r, "delete"),
    )
}

/// Requests every locked run makes besides its data, on Garage (per type, at most): the lock
/// (HEAD + PUT, a LIST before and after, DELETE), the conditional-write probe (two PUTs of
/// the repository's probe object, which Garage accepts both times; once per process), and for a backup the parent (GET current,
/// GET manifest) and the commit (a HEAD of its own lock, still there; HEAD + PUT manifest and,
/// since Garage ignores conditional writes, a GET of it after a wait; GET + PUT current; one
/// more HEAD when a backup of the same series took this second's version name).
const OVERHEAD_PUT: u64 = 5;
const OVERHEAD_GET: u64 = 4;
const OVERHEAD_HEAD: u64 = 4;
const OVERHEAD_LIST: u64 = 2;
const OVERHEAD_DELETE: u64 = 1;

/// A backup made one PUT per new chunk, one HEAD per chunk that neither its parent nor an
/// earlier chunk of the run told it about (`asked`; the new chunks unless stated), and only
/// the fixed overhead besides: nothing per reused or zero chunk.
#[track_caller]
fn assert_backup_requests(summary: &Value) {
    assert_backup_requests_with(summary, n(summary, "chunks_new"), 0)
}

/// The same, when `asked` chunks were asked about with HEAD and `other_locks` lock objects of
/// other (or dead) runs lie in `locks/`: taking a lock reads each of them, before and after
/// writing its own.
#[track_caller]
fn assert_backup_requests_with(summary: &Value, asked: u64, other_locks: u64) {
    let new = n(summary, "chunks_new");
    let (put, get, head, list, delete) = requests(summary);
    assert!(
        (new..=new + OVERHEAD_PUT).contains(&put)
            && head <= asked + OVERHEAD_HEAD
            && get <= OVERHEAD_GET + 2 * other_locks
            && list <= OVERHEAD_LIST
            && delete <= OVERHEAD_DELETE,
        "requests in proportion to the {new} new chunks ({asked} asked about): {summary}"
    );
}

#[track_caller]
fn assert_counts_add_up(summary: &Value) {
    assert_eq!(
        n(summary, "chunks_new") + n(summary, "chunks_reused") + n(summary, "chunks_zero"),
        n(summary, "chunks"),
        "chunk counts do not add up: {summary}"
    );
}

/// The 4 MiB chunks touched by writes of `len` bytes at each offset.
fn chunks_touched(writes: &[(u64, u64)]) -> BTreeSet<u64> {
    writes
        .iter()
        .flat_map(|&(off, len)| off / CHUNK..=(off + len - 1) / CHUNK)
        .collect()
}

/// Waits until a running backup has stored at least `count` chunk objects beyond `before`.
fn wait_for_new_chunks(
    server: &Server,
    prefix: &str,
    child: &mut Child,
    before: usize,
    count: usize,
) -> usize {
    let started = Instant::now();
    loop {
        let now = chunk_objects(server, prefix).len() - before;
        if now >= count {
            return now;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before it stored {count} chunks");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk appeared within a minute"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A backup of `big` to series "disk" running in the background (4 chunks in flight, so that
/// it is still storing chunks when a test steps in).
fn big_backup(v: &Vault, big: &std::path::Path) -> Child {
    v.cmd(&["backup", "--name", "disk", "--in-flight", "4", s(big)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a backup")
}

/// Waits for a child with a deadline; kills it and panics when the deadline passes.
fn wait_with_deadline(child: &mut Child, what: &str, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The core engine's headline scenario on Garage: an ext4 image of real files backed up and
/// restored bit-exact; changed in a few chunks and backed up again, uploading exactly the
/// changed chunks (and asking the server about nothing else); both versions restored; and
/// the older one restored in place over the newer, downloading only the chunks that differ.
#[test]
fn garage_image_backup_incremental_and_in_place_restore() {
    let g = garage();
    let (v, prefix) = new_vault(g, "image", &[]);
    let tree = v.path("tree");
    copy_real_files(&tree, 20 * MIB, 0);
    let img = v.path("disk.img");
    make_ext4(&tree, &img, 48);

    let b1 = v.backup("disk", &[s(&img)]);
    assert_counts_add_up(&b1);
    assert_eq!(n(&b1, "chunks"), 12);
    assert!(n(&b1, "chunks_new") > 0, "{b1}");
    let stored1 = chunk_objects(g, &prefix).len() as u64;
    assert_eq!(stored1, n(&b1, "chunks_new"), "one object per new chunk");
    assert_backup_requests(&b1);
    let (put, _, head, _, _) = requests(&b1);
    assert!(
        put >= n(&b1, "chunks_new") + 2 && head >= n(&b1, "chunks_new"),
        "a first backup asks about and uploads each new chunk: {b1}"
    );

    let out1 = v.path("disk1.out");
    let r1 = v.restore("disk", &[s(&out1)]);
    assert_same_contents(&img, &out1);
    let (_, get, _, _, _) = requests(&r1);
    assert!(
        get >= n(&r1, "chunks_written") && get <= n(&r1, "chunks_written") + OVERHEAD_GET,
        "a restore downloads each stored chunk once: {r1}"
    );

    // Change the image the way a running system does: a few scattered writes.
    let img2 = v.path("disk2.img");
    fs::copy(&img, &img2).unwrap();
    let writes = [
        (CHUNK + 4096, 8192),
        (5 * CHUNK + 100, 1),
        (9 * CHUNK - 10, 20),
    ];
    for (i, &(off, len)) in writes.iter().enumerate() {
        scribble(&img2, off, len as usize, 100 + i as u64);
    }
    let changed = chunks_touched(&writes);
    assert_eq!(changed.len(), 4);

    let b2 = v.backup("disk", &[s(&img2)]);
    assert_counts_add_up(&b2);
    assert_eq!(b2["parent"], b1["version"], "{b2}");
    assert_eq!(
        n(&b2, "chunks_new"),
        changed.len() as u64,
        "exactly the changed chunks are new: {b2}"
    );
    assert_eq!(n(&b2, "bytes_new"), changed.len() as u64 * CHUNK, "{b2}");
    let k = changed.len() as u64;
    assert_backup_requests(&b2);
    assert_eq!(
        chunk_objects(g, &prefix).len() as u64,
        stored1 + k,
        "only the changed chunks were added"
    );

    let out2 = v.path("disk2.out");
    v.restore("disk", &[s(&out2)]);
    assert_same_contents(&img2, &out2);
    let again = v.path("disk1.again");
    v.restore("disk", &["--version", text(&b1, "version"), s(&again)]);
    assert_same_contents(&img, &again);

    // In place: the newer image becomes the older one; only the differing chunks are fetched
    // and written.
    let r = v.restore(
        "disk",
        &["--version", text(&b1, "version"), "--in-place", s(&out2)],
    );
    assert_same_contents(&img, &out2);
    assert_eq!(n(&r, "chunks_written"), k, "{r}");
    let (put, get, _, _, _) = requests(&r);
    assert!(
        get <= k + OVERHEAD_GET && put <= 3,
        "an in-place restore downloads only the chunks that differ (and writes only its lock \
         and the probe's object): {r}"
    );
}

/// Standard input on Garage: content-defined chunks, restored byte-exact to stdout; the same
/// stream again uploads no chunk.
#[test]
fn garage_stdin_stream_backup_and_restore() {
    let g = garage();
    let (v, prefix) = new_vault(g, "stdin", &[]);
    // 12 MiB, 8 MiB of other data, the same 12 MiB again: content-defined chunks (at most
    // 4 MiB) fall into step inside the repeat, which is then stored once.
    let a = random_bytes(21, 12 * MIB as usize);
    let mut data = a.clone();
    data.extend_from_slice(&random_bytes(22, 8 * MIB as usize));
    data.extend_from_slice(&a);

    let s1 = v
        .run_with_stdin(&["backup", "--json", "--name", "db", "-"], data.clone())
        .ok()
        .json();
    assert_eq!(text(&s1, "source_kind"), "stdin");
    assert_eq!(n(&s1, "size"), data.len() as u64);
    assert!(n(&s1, "chunks_reused") > 0, "the repeat is reused: {s1}");
    assert_eq!(chunk_objects(g, &prefix).len() as u64, n(&s1, "chunks_new"));

    let s2 = v
        .run_with_stdin(&["backup", "--json", "--name", "db", "-"], data.clone())
        .ok()
        .json();
    assert_eq!(n(&s2, "chunks_new"), 0, "{s2}");
    assert_backup_requests(&s2);

    let out = v.run(&["restore", "--name", "db", "-"]).ok();
    assert!(out.stdout == data, "restore to stdout is byte-exact");
    // The endpoint and region may come from the environment instead of the options.
    let by_env = vault_with(g, &prefix, |r| {
        r.args.clear();
        set_env(r, "AWS_ENDPOINT_URL", Some(&g.endpoint));
        set_env(r, "AWS_REGION", Some(g.region));
    });
    let out = by_env.run(&["restore", "--name", "db", "-"]).ok();
    assert!(
        out.stdout == data,
        "with AWS_ENDPOINT_URL and AWS_REGION too"
    );
    let out = v
        .run(&[
            "restore",
            "--name",
            "db",
            "--version",
            text(&s1, "version"),
            "-",
        ])
        .ok();
    assert!(out.stdout == data, "the first version too");
}

/// SIGKILL in the middle of a backup to Garage: nothing is committed, the earlier version
/// still restores, and the next run succeeds (the dead run's lock is recognised), uploads
/// only what is still missing, and restores bit-exact.
#[test]
fn garage_killed_backup_then_rerun() {
    let g = garage();
    let (v, prefix) = new_vault(g, "killed", &[]);
    let first = v.path("first.img");
    write_random_file(&first, 1, 24 * MIB);
    let b1 = v.backup("disk", &[s(&first)]);
    let before = chunk_objects(g, &prefix).len();
    assert_eq!(before, 6);

    let big = v.path("big.img");
    let size = 200 * MIB;
    write_random_file(&big, 2, size);
    let mut child = v
        .cmd(&["backup", "--name", "disk", "--in-flight", "4", s(&big)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stored = wait_for_new_chunks(g, &prefix, &mut child, before, 4);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the backup should have been killed mid-run, but it ended: {status}"
    );
    let stored = stored.max(chunk_objects(g, &prefix).len() - before);
    assert!(
        (stored as u64) < size / CHUNK,
        "the kill came before the end"
    );

    assert_eq!(v.versions("disk"), [text(&b1, "version")]);
    let out = v.path("first.out");
    v.restore("disk", &[s(&out)]);
    assert_same_contents(&first, &out);

    let b2 = v.backup("disk", &[s(&big)]);
    assert_counts_add_up(&b2);
    assert!(
        n(&b2, "chunks_reused") >= stored as u64,
        "{stored} chunks stored by the killed run are reused: {b2}"
    );
    assert_eq!(
        n(&b2, "bytes_new"),
        size - n(&b2, "chunks_reused") * CHUNK,
        "what the killed run stored is not uploaded again: {b2}"
    );
    // Every chunk is asked about: the parent shares none, and what the killed run stored is
    // known only to the server. The killed run's lock is still in locks/: recognised as
    // dead (this host, no such process), read at both of the lock's checks, and left there.
    let dead_locks = g
        .objects(&prefix)
        .iter()
        .filter(|o| o.key.starts_with("locks/"))
        .count() as u64;
    assert_eq!(dead_locks, 1, "the killed run's lock remains");
    assert_backup_requests_with(&b2, n(&b2, "chunks"), dead_locks);
    assert_eq!(
        chunk_objects(g, &prefix).len(),
        before + (size / CHUNK) as usize,
        "one object per distinct chunk, none twice"
    );
    let out2 = v.path("big.out");
    v.restore("disk", &[s(&out2)]);
    assert_same_contents(&big, &out2);
}

/// A backup to Garage stopped by SIGTERM (`systemctl stop`) removes its lock, which other hosts
/// sharing the bucket would otherwise honour for 30 minutes, and records nothing; gc then
/// sweeps what it stored.
#[test]
fn garage_stopped_backup_removes_its_lock() {
    let g = garage();
    let (v, prefix) = new_vault(g, "stopped", &[]);
    let big = v.path("big.img");
    write_random_file(&big, 3, 200 * MIB);
    let mut child = big_backup(&v, &big);
    let stored = wait_for_new_chunks(g, &prefix, &mut child, 0, 2);
    let locks = |g: &Server| {
        g.objects(&prefix)
            .iter()
            .filter(|o| o.key.starts_with("locks/"))
            .count()
    };
    assert_eq!(locks(g), 1, "a running backup holds one lock");
    send_signal(child.id(), "TERM");
    let status = wait_with_deadline(&mut child, "the stopped backup", Duration::from_secs(30));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("no version recorded"), "{stderr}");
    assert_eq!(
        locks(g),
        0,
        "the stopped backup left its lock in the bucket"
    );
    assert!(v.versions("disk").is_empty());
    let left = chunk_objects(g, &prefix).len();
    assert!(
        left >= stored && (left as u64) < 200 * MIB / CHUNK,
        "stopped part-way: {left} chunks stored"
    );
    let gc = v.run(&["gc", "--json"]).ok().json();
    assert_eq!(n(&gc, "chunks_deleted"), left as u64, "{gc}");
    assert!(chunk_objects(g, &prefix).is_empty());
}

/// What a run costs on a per-request bill. A 1 GiB image of pseudo-random data: the second
/// backup of it unchanged makes a handful of requests (parent pointer and manifest, new
/// manifest and pointer), no HEAD or PUT per chunk; with about 1% of it changed in scattered
/// places, as many PUTs as changed chunks plus manifest and pointer.
#[test]
fn garage_requests_in_proportion_to_change() {
    let g = garage();
    let (v, prefix) = new_vault(g, "requests", &[]);
    let img = v.path("big.img");
    let size = 1024 * MIB;
    let t = Instant::now();
    write_random_file(&img, 7, size);
    let write_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let b1 = v.backup("vm", &[s(&img)]);
    let first_secs = t.elapsed().as_secs_f64();
    assert_eq!(n(&b1, "chunks_new"), size / CHUNK, "{b1}");

    let t = Instant::now();
    let b2 = v.backup("vm", &[s(&img)]);
    let unchanged_secs = t.elapsed().as_secs_f64();
    assert_eq!(n(&b2, "chunks_new"), 0, "{b2}");
    assert_eq!(n(&b2, "chunks_reused"), size / CHUNK, "{b2}");
    let (put, get, head, list, delete) = requests(&b2);
    eprintln!("requests of an unchanged 1 GiB backup: {}", b2["requests"]);
    // What they are, on Garage (measured: 5 PUT, 4 GET, 3 HEAD, 2 LIST, 1 DELETE; see
    // OVERHEAD_PUT):
    // - the lock: HEAD + PUT (put_new without conditional writes), LIST before and after,
    //   DELETE at the end;
    // - the conditional-write probe: two PUTs of the probe object, which Garage accepts both
    //   times (a server honouring If-None-Match refuses the first, once the object exists);
    // - the parent: GET current, GET manifest;
    // - the commit: HEAD of the lock (still ours?), HEAD + PUT of the manifest, GET of it
    //   after a wait (no conditional writes), GET + PUT of current.
    // Opening the repository (GET config, LIST keys/, GET key) comes before and is not
    // counted in the summary.
    assert!(
        put <= OVERHEAD_PUT
            && get <= OVERHEAD_GET
            && head <= 3
            && list <= OVERHEAD_LIST
            && delete <= OVERHEAD_DELETE,
        "an unchanged image costs a handful of requests, not one per chunk: {}",
        b2["requests"]
    );

    // ~1% of the bytes, in 24 scattered writes of 448 KiB.
    let mut rng = Prng::new(8);
    let writes: Vec<(u64, u64)> = (0..24)
        .map(|_| ((rng.next_u64() % (size - 448 * 1024)) & !4095, 448 * 1024))
        .collect();
    for (i, &(off, len)) in writes.iter().enumerate() {
        scribble(&img, off, len as usize, 1000 + i as u64);
    }
    let changed = chunks_touched(&writes).len() as u64;
    let t = Instant::now();
    let b3 = v.backup("vm", &[s(&img)]);
    let changed_secs = t.elapsed().as_secs_f64();
    assert_eq!(n(&b3, "chunks_new"), changed, "{b3}");
    eprintln!(
        "requests of a 1 GiB backup with {changed} of 256 chunks changed: {}",
        b3["requests"]
    );
    assert_backup_requests(&b3);
    assert_eq!(
        chunk_objects(g, &prefix).len() as u64,
        size / CHUNK + changed
    );
    eprintln!(
        "1 GiB: writing {write_secs:.1} s, first backup {first_secs:.1} s, unchanged {unchanged_secs:.1} s, 1% changed {changed_secs:.1} s"
    );
}

/// `backup --dry-run` on S3 reads and chunks the source, asks the server what it has, and
/// writes nothing: no chunk, manifest, pointer or lock, every object as it was.
#[test]
fn garage_dry_run_writes_nothing() {
    let g = garage();
    let (v, prefix) = new_vault(g, "dry-run", &[]);
    let img = v.path("disk.img");
    write_random_file(&img, 31, 40 * MIB);
    let b1 = v.backup("disk", &[s(&img)]);
    scribble(&img, 3 * CHUNK + 5, 100, 32);
    scribble(&img, 7 * CHUNK, 1, 33);
    let fresh = v.path("fresh.img");
    write_random_file(&fresh, 34, 16 * MIB);

    let before = g.objects(&prefix);
    let d = v.backup("disk", &["--dry-run", s(&img)]);
    assert_eq!(d["dry_run"], true, "{d}");
    assert_eq!(text(&d, "version"), "", "{d}");
    assert_eq!(n(&d, "chunks_new"), 2, "{d}");
    assert_eq!(n(&d, "bytes_new"), 2 * CHUNK, "{d}");
    assert!(n(&d, "bytes_new_stored") >= 2 * CHUNK, "{d}");
    let (put, _, _, _, delete) = requests(&d);
    assert_eq!((put, delete), (0, 0), "{d}");

    let d = v.backup("other", &["--dry-run", s(&fresh)]);
    assert_eq!(n(&d, "chunks_new"), 4, "a new series with new data: {d}");
    let text_run = v
        .run(&["backup", "--name", "disk", "--dry-run", s(&img)])
        .ok()
        .stdout_text();
    assert!(
        text_run.contains("nothing was written") && text_run.contains("2 objects"),
        "the text summary says what would be uploaded: {text_run}"
    );
    assert_eq!(
        g.objects(&prefix),
        before,
        "a dry run leaves every object as it was"
    );
    assert_eq!(v.versions("disk"), [text(&b1, "version")]);
    assert!(v.versions("other").is_empty());
}

/// The probe object (format-spec, section 3) is all an init that failed midway may leave
/// behind: init accepts a prefix holding only it, and still refuses one holding a repository.
#[test]
fn garage_init_ignores_a_lone_probe_object() {
    let g = garage();
    let (v, prefix) = g.vault("lone-probe");
    let key = format!("{prefix}/probe/conditional-write");
    s3_servers::block_on(async {
        g.client()
            .put_object()
            .bucket(&g.bucket)
            .key(&key)
            .body(b"left by an earlier init".to_vec().into())
            .send()
            .await
            .map(drop)
            .map_err(|e| format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)))
    })
    .unwrap_or_else(|e| panic!("writing {key}: {e}"));
    v.run(&["init"]).ok();
    let img = v.path("disk.img");
    write_random_file(&img, 61, 2 * MIB);
    let b = v.backup("disk", &[s(&img)]);
    assert_eq!(v.versions("disk"), [text(&b, "version")]);
    v.run(&["init"])
        .error(1, &["already holds objects", &prefix]);
    let probes: Vec<_> = g
        .objects(&prefix)
        .into_iter()
        .filter(|o| o.key.starts_with("probe/"))
        .map(|o| o.key)
        .collect();
    assert_eq!(probes, ["probe/conditional-write"]);
}

/// Cold storage for chunk data only: with `backup --storage-class`, chunk objects are in that
/// class, and config, keys, manifests and current pointers stay STANDARD (moto keeps the
/// class as AWS does; Garage ignores it). The data restores.
#[test]
fn moto_backup_storage_class_applies_to_chunks_only() {
    let m = moto();
    let (v, prefix) = new_vault(m, "class-backup", &[]);
    let img = v.path("disk.img");
    write_random_file(&img, 41, 12 * MIB);
    v.backup("disk", &["--storage-class", "STANDARD_IA", s(&img)]);
    assert_storage_classes(m, &prefix, "STANDARD_IA", 3);
    let out = v.path("disk.out");
    v.restore("disk", &[s(&out)]);
    assert_same_contents(&img, &out);

    // An unknown class is refused before anything is written.
    let before = m.objects(&prefix);
    v.run(&[
        "backup",
        "--name",
        "disk",
        "--storage-class",
        "FROZEN",
        s(&img),
    ])
    .error(2, &["FROZEN", "STANDARD_IA"]);
    assert_eq!(m.objects(&prefix), before);
}

/// `init --storage-class` makes the class the repository's default for chunk data.
#[test]
fn moto_init_storage_class_is_the_repository_default() {
    let m = moto();
    let (v, prefix) = new_vault(m, "class-init", &["--storage-class", "STANDARD_IA"]);
    let img = v.path("disk.img");
    write_random_file(&img, 42, 12 * MIB);
    v.backup("disk", &[s(&img)]);
    assert_storage_classes(m, &prefix, "STANDARD_IA", 3);

    // An archive class, whose chunks no GET reads until they are thawed: said when chunks
    // go there, and a restore fails naming a chunk, writing no target.
    let (v, prefix) = new_vault(m, "class-archive", &["--storage-class", "DEEP_ARCHIVE"]);
    let run = v.run(&["backup", "--name", "disk", s(&img)]).ok();
    assert!(
        run.stderr.contains("storage class DEEP_ARCHIVE") && run.stderr.contains("thawed"),
        "{}",
        run.stderr
    );
    assert_storage_classes(m, &prefix, "DEEP_ARCHIVE", 3);
    let out = v.path("archived.out");
    let failed = v.run(&["restore", "--name", "disk", s(&out)]).error(
        1,
        &[
            "chunks/",
            "archive storage class",
            "restore (thaw) it through S3",
        ],
    );
    assert!(
        !failed.stderr.contains("access denied"),
        "{}",
        failed.stderr
    );
    assert!(!out.exists());
}

#[track_caller]
fn assert_storage_classes(server: &Server, prefix: &str, chunk_class: &str, chunks: usize) {
    let objects = server.objects(prefix);
    let (data, rest): (Vec<&Object>, Vec<&Object>) =
        objects.iter().partition(|o| o.key.starts_with("chunks/"));
    assert_eq!(data.len(), chunks, "{objects:?}");
    for o in &data {
        assert_eq!(o.storage_class, chunk_class, "chunk {}", o.key);
    }
    for top in ["config", "keys/", "manifests/", "current/"] {
        assert!(
            rest.iter().any(|o| o.key.starts_with(top)),
            "{top} is there: {objects:?}"
        );
    }
    for o in &rest {
        assert_eq!(o.storage_class, "STANDARD", "{} stays STANDARD", o.key);
    }
}

/// Runs `args` against a variant of `v`'s repository, expecting exit code 1 with one error
/// line naming every needle; returns the line and how long it took.
#[track_caller]
fn s3_error(v: &Vault, args: &[&str], needles: &[&str]) -> (String, Duration) {
    let t = Instant::now();
    let r = v.run(args).error(1, needles);
    (r.error_line().to_string(), t.elapsed())
}

/// A repository `Vault` on `server` with a changed remote.
fn vault_with(server: &Server, prefix: &str, change: impl FnOnce(&mut Remote)) -> Vault {
    let mut remote = server.remote(prefix);
    change(&mut remote);
    Vault::at(remote)
}

fn set_env(remote: &mut Remote, key: &str, value: Option<&str>) {
    remote.env.retain(|(k, _)| k != key);
    match value {
        Some(v) => remote.env.push((key.into(), v.into())),
        None => remote.env_remove.push(key.into()),
    }
}

/// Each way of not reaching the repository is one clear line, exit code 1, naming the bucket
/// and the endpoint: missing bucket, wrong credentials, unreachable endpoint, no credentials
/// at all, wrong region.
#[test]
fn s3_errors_are_one_clear_line() {
    let g = garage();
    let (v, prefix) = new_vault(g, "errors", &[]);
    let img = v.path("disk.img");
    write_random_file(&img, 51, 4 * MIB);
    v.backup("disk", &[s(&img)]);
    let endpoint = g.endpoint.as_str();
    let mut report = Vec::new();

    // A bucket that does not exist: init, list and backup.
    let nb = vault_with(g, "x", |r| {
        r.url = "s3://no-such-bucket-blockvault/x".into()
    });
    for args in [
        vec!["init"],
        vec!["list"],
        vec!["backup", "--name", "d", s(&img)],
    ] {
        let (line, took) = s3_error(
            &nb,
            &args,
            &["no-such-bucket-blockvault", endpoint, "does not exist"],
        );
        report.push(format!("missing bucket ({}): {took:.1?}: {line}", args[0]));
    }

    // Wrong secret, and a key the server does not know.
    for (what, key, secret) in [
        (
            "wrong secret",
            s3_servers::ACCESS_KEY,
            "not-the-right-secret-000",
        ),
        (
            "unknown key",
            "GKnot0a0known0key0id0000",
            s3_servers::SECRET_KEY,
        ),
    ] {
        let bad = vault_with(g, &prefix, |r| {
            set_env(r, "AWS_ACCESS_KEY_ID", Some(key));
            set_env(r, "AWS_SECRET_ACCESS_KEY", Some(secret));
        });
        let (line, took) = s3_error(
            &bad,
            &["list"],
            &["access denied", s3_servers::BUCKET, endpoint],
        );
        report.push(format!("{what}: {took:.1?}: {line}"));
    }

    // No credentials anywhere (no variables, no profile files, no instance metadata).
    let none = vault_with(g, &prefix, |r| {
        set_env(r, "AWS_ACCESS_KEY_ID", None);
        set_env(r, "AWS_SECRET_ACCESS_KEY", None);
    });
    let (line, took) = s3_error(
        &none,
        &["list"],
        &["credentials", s3_servers::BUCKET, endpoint],
    );
    report.push(format!("no credentials: {took:.1?}: {line}"));
    assert!(
        took < Duration::from_secs(10),
        "missing credentials fail fast"
    );

    // A region other than the server's.
    let wrong = vault_with(g, &prefix, |r| {
        r.args = vec![
            "--s3-endpoint".into(),
            endpoint.into(),
            "--s3-region".into(),
            "eu-west-3".into(),
        ];
    });
    let (line, took) = s3_error(&wrong, &["list"], &["region", s3_servers::BUCKET, endpoint]);
    report.push(format!("wrong region: {took:.1?}: {line}"));

    // Nothing listens at the endpoint: the SDK retries, then gives up with a clear line.
    let closed = format!("http://127.0.0.1:{}", s3_servers::closed_port());
    let unreachable = vault_with(g, &prefix, |r| {
        r.args = vec![
            "--s3-endpoint".into(),
            closed.clone(),
            "--s3-region".into(),
            s3_servers::GARAGE_REGION.into(),
        ];
    });
    let (line, took) = s3_error(
        &unreachable,
        &["list"],
        &["unreachable", s3_servers::BUCKET, &closed],
    );
    report.push(format!("unreachable endpoint: {took:.1?}: {line}"));
    eprintln!("{}", report.join("\n"));
    assert!(
        took < Duration::from_secs(90),
        "an unreachable endpoint is reported within 90 s, took {took:?}"
    );
}

/// The server dies (SIGKILL) in the middle of a backup and comes back a few seconds later on
/// the same ports and data: the run completes after retries or fails cleanly (non-zero, one
/// error line, no version); either way every earlier version restores bit-exact and the
/// next backup succeeds.
#[test]
fn garage_outage_mid_backup() {
    let server = RestartableGarage::start();
    let g = &server.server;
    let (v, prefix) = new_vault(g, "outage", &[]);
    let small = v.path("small.img");
    write_random_file(&small, 61, 16 * MIB);
    let b1 = v.backup("disk", &[s(&small)]);
    let before = chunk_objects(g, &prefix).len();

    let big = v.path("big.img");
    let size = 300 * MIB;
    write_random_file(&big, 62, size);
    let mut child = v
        .cmd(&[
            "backup",
            "--json",
            "--name",
            "disk",
            "--in-flight",
            "4",
            s(&big),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_new_chunks(g, &prefix, &mut child, before, 6);
    let t = Instant::now();
    server.kill();
    std::thread::sleep(Duration::from_secs(3));
    let ready = server.restart();
    let status = wait_with_deadline(
        &mut child,
        "the backup during the outage",
        Duration::from_secs(150),
    );
    let took = t.elapsed();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "outage: server back after {ready:?}; the backup ended {took:?} after the kill with {status}; stderr: {stderr}"
    );

    let versions = v.versions("disk");
    if status.success() {
        let b2: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
        assert_eq!(versions, [text(&b1, "version"), text(&b2, "version")]);
        let restored = v.path("big.out");
        v.restore("disk", &[s(&restored)]);
        assert_same_contents(&big, &restored);
    } else {
        assert_eq!(
            status.code(),
            Some(1),
            "a clean failure, not a crash: {stderr}"
        );
        let line = stderr.trim_end();
        assert!(
            line.starts_with("error: ") && !line.contains('\n') && !line.contains("panicked"),
            "one error line: {stderr}"
        );
        assert_eq!(versions, [text(&b1, "version")], "no version recorded");
    }

    // The repository checks clean, every earlier version restores, and a new backup succeeds
    // and restores.
    v.run(&["check"]).ok();
    let out1 = v.path("small.out");
    v.restore("disk", &["--version", text(&b1, "version"), s(&out1)]);
    assert_same_contents(&small, &out1);
    let b3 = v.backup("disk", &[s(&big)]);
    assert_counts_add_up(&b3);
    let out3 = v.path("big.again");
    v.restore("disk", &[s(&out3)]);
    assert_same_contents(&big, &out3);
    assert!(
        chunk_objects(g, &prefix).len() == before + (size / CHUNK) as usize,
        "one object per distinct chunk"
    );
}

/// A job file whose repository is on Garage, its passphrase from a command: backups land in
/// the bucket, retention prunes there, and the version restores bit-exact.
#[test]
fn garage_job_file_with_a_password_command() {
    let g = garage();
    let (v, prefix) = new_vault(g, "jobs", &[]);
    let remote = v.remote.clone().expect("an S3 vault");
    let image = v.path("disk.img");
    write_random_file(&image, 31, 10 * MIB);
    let pass = v.path("pass");
    fs::write(&pass, format!("{PASSWORD}\n")).expect("writing the passphrase file");
    let config = v.path("jobs.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nrepo = {:?}\ns3_endpoint = {:?}\ns3_region = {:?}\npassword_command = \"cat {}\"\n\n\
             [[job]]\nname = \"img\"\nsource = {{ file = {:?} }}\nkeep = {{ last = 1 }}\n",
            remote.url,
            g.endpoint,
            g.region,
            s(&pass),
            s(&image)
        ),
    )
    .expect("writing the job file");
    let run_once = || {
        let mut c = blockvault();
        for k in &remote.env_remove {
            c.env_remove(k);
        }
        c.envs(remote.env.iter().map(|(k, v)| (k, v)))
            .env_remove("BLOCKVAULT_PASSWORD")
            .args(["run", "--json", "--config", s(&config)]);
        run(&mut c, None).ok().json()
    };
    let first = run_once();
    assert_eq!(first["jobs"][0]["outcome"], "backed-up", "{first}");
    assert_eq!(
        chunk_objects(g, &prefix).len() as u64,
        n(&first["jobs"][0]["backup"], "chunks_new")
    );
    scribble(&image, 5 * MIB, 4096, 32);
    let second = run_once();
    let j = &second["jobs"][0];
    assert_eq!(n(&j["backup"], "chunks_new"), 1, "{second}");
    assert_eq!(
        j["prune"]["removed"],
        serde_json::json!([text(&first["jobs"][0]["backup"], "version")])
    );
    assert_eq!(v.versions("img"), [text(&j["backup"], "version")]);
    let out = v.path("restored");
    v.restore("img", &[s(&out)]);
    assert_same_contents(&image, &out);
}

/// Backups of one series that choose the same version name at once (two cron jobs, or two
/// hosts, in the same second; here the same --time): Garage ignores conditional writes, both
/// found the name free, and the later manifest replaced the earlier while both reported a
/// version. Each must end with a version of its own, every one listed and restorable, and a
/// backup whose manifest was replaced says so.
#[test]
fn garage_backups_racing_for_one_version_name_both_keep_theirs() {
    let g = garage();
    let (v, _) = new_vault(g, "same-name", &[]);
    let meet = v.path("barrier");
    std::fs::create_dir(&meet).expect("creating the barrier directory");
    let sources: Vec<_> = (0..3u64)
        .map(|i| {
            let p = v.path(&format!("src{i}"));
            write_random_file(&p, 60 + i, MIB);
            p
        })
        .collect();
    let children: Vec<_> = sources
        .iter()
        .map(|src| {
            v.cmd(&[
                "backup",
                "--json",
                "--name",
                "db",
                "--time",
                "2026-11-30T08:00:00Z",
                s(src),
            ])
            // None writes its manifest before all three have found the name free, however
            // slowly each starts.
            .env(
                "BLOCKVAULT_TEST_FAULTS",
                format!("only=manifests/,barrier=3,barrier-dir={}", s(&meet)),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a backup")
        })
        .collect();
    let mut made = Vec::new();
    let mut replaced = 0;
    for (child, src) in children.into_iter().zip(&sources) {
        let out = child.wait_with_output().expect("waiting for a backup");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        if stderr.contains("replaced this one's manifest") {
            replaced += 1;
        }
        let j: Value = serde_json::from_slice(&out.stdout).expect("backup JSON");
        made.push((text(&j, "version").to_string(), src));
    }
    let mut names: Vec<&str> = made.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "two backups reported one version: {made:?}");
    // Only the last of the three writes survives the first round.
    assert!(
        replaced >= 2,
        "{replaced} backups noticed their manifest replaced: {made:?}"
    );
    assert_eq!(v.versions("db").len(), 3);
    for (version, src) in &made {
        let out = v.path(&format!("{version}.out"));
        v.restore("db", &["--version", version, s(&out)]);
        assert_same_contents(src, &out);
    }
}

/// A stop signal ends a run whose requests hang (the server stopped answering) or retry (the
/// endpoint cannot be reached), where it waited for the SDK's timeouts and retries: ten
/// minutes for a hung server, half a minute for a closed port, past what a service manager
/// waits before SIGKILL. Exit 143, and no version recorded.
#[test]
fn garage_a_stop_ends_a_run_whose_requests_hang_or_retry() {
    let server = RestartableGarage::start();
    let g = &server.server;
    let (v, prefix) = new_vault(g, "stop-hang", &[]);
    let big = v.path("big.img");
    write_random_file(&big, 71, 200 * MIB);
    let mut child = big_backup(&v, &big);
    wait_for_new_chunks(g, &prefix, &mut child, 0, 2);
    server.pause();
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    send_signal(child.id(), "TERM");
    let status = wait_with_deadline(&mut child, "the stopped backup", Duration::from_secs(40));
    let took = t.elapsed();
    server.resume();
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(
        took < Duration::from_secs(20),
        "the stopped backup took {took:?} to end"
    );
    assert!(v.versions("disk").is_empty());

    // Nothing listens: every request is retried with backoff.
    let closed = format!("http://127.0.0.1:{}", s3_servers::closed_port());
    let unreachable = vault_with(g, &prefix, |r| {
        r.args = vec![
            "--s3-endpoint".into(),
            closed.clone(),
            "--s3-region".into(),
            s3_servers::GARAGE_REGION.into(),
        ];
    });
    let mut child = unreachable
        .cmd(&["backup", "--name", "disk", s(&big)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a backup");
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    send_signal(child.id(), "TERM");
    let status = wait_with_deadline(&mut child, "the stopped backup", Duration::from_secs(60));
    let took = t.elapsed();
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(
        took < Duration::from_secs(5),
        "the backup retrying an unreachable endpoint took {took:?} to stop"
    );
}
