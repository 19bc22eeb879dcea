//! Crash consistency and store faults (DESIGN.md promises 1, 4 and 5), with the real binary
//! on a real local-directory repository.
//!
//! Kills: backup, gc and prune are killed at every store operation in turn (`die-at=N`
//! dies before the N-th operation happens, `die-after=N` right after it; which of the two is
//! drawn per point from a seed, printed on failure), from a fresh copy of the same repository
//! each time. After every kill: `check` passes (unreferenced chunks are reported as a count,
//! not as damage), every version committed before restores bit-exact, and running the
//! operation again completes. Faults: random write, read and after-put failures and short
//! reads end each run with an error, record nothing that cannot be restored, and leave a
//! repository that checks clean.

use crate::util::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const SEED: u64 = 0x5eed_c4a5;

/// Restores `version` of `series` and compares it with `expected`.
#[track_caller]
fn assert_restores(v: &Vault, series: &str, version: &str, expected: &Path, why: &str) {
    let out = v.path(&format!("restored-{version}"));
    let _ = fs::remove_file(&out);
    let r = key_file_run(
        v,
        None,
        &["restore", "--name", series, "--version", version, s(&out)],
    );
    assert_eq!(
        r.code, 0,
        "{why}: restore of {version} failed: {}",
        r.stderr
    );
    assert_same_contents(expected, &out);
    fs::remove_file(&out).expect("removing a restored file");
}

#[track_caller]
fn assert_checks_clean(v: &Vault, why: &str) {
    let r = key_file_run(v, None, &["check", "--json"]);
    assert_eq!(
        r.code,
        0,
        "{why}: check failed:\n{}\n{}",
        r.stdout_text(),
        r.stderr
    );
}

fn versions(v: &Vault, series: &str) -> Vec<String> {
    let r = key_file_run(v, None, &["list", "--json"]).ok();
    r.json()
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["series"] == series)
                .map(|r| text(r, "version").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Cheap SplitMix64 draws for "before or after".
fn draw(seed: u64, i: u64) -> bool {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & 1 == 1
}

/// A copy of `base` to kill a run in: its repository, key file and source files.
fn fresh_copy(base: &Vault) -> Vault {
    let copy = Vault::uninitialised();
    copy_dir(&base.repo, &copy.repo);
    fs::copy(key_file(base), key_file(&copy)).expect("copying the key file");
    for entry in fs::read_dir(&base.work).expect("reading the scratch directory") {
        let e = entry.expect("a scratch entry");
        if e.file_type().expect("file type").is_file() {
            fs::copy(e.path(), copy.work.join(e.file_name())).expect("copying a source");
        }
    }
    copy
}

/// Runs `op` against a fresh copy of `base` killed at operation 1, 2, ... until a run
/// completes; after each kill, `after` checks the copy. Returns the number of kill points.
fn kill_everywhere(
    base: &Vault,
    op: impl Fn(&Vault) -> Vec<String>,
    mut after: impl FnMut(&Vault, &str),
) -> u64 {
    let mut point = 1u64;
    loop {
        let copy = fresh_copy(base);
        let before = draw(SEED, point);
        let plan = format!("{}={point}", if before { "die-at" } else { "die-after" });
        let args = op(&copy);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = key_file_run(&copy, Some(&plan), &args);
        let why = format!("{} killed with {plan} (seed {SEED:#x})", args.join(" "));
        if r.code == 0 {
            // Fewer operations than `point`: every point has been tried.
            after(&copy, &format!("{why}, which completed"));
            return point - 1;
        }
        assert_eq!(
            r.code, -1,
            "{why}: expected death by signal, got exit {}: {}",
            r.code, r.stderr
        );
        after(&copy, &why);
        point += 1;
        assert!(point < 10_000, "{why}: the operation never completes");
    }
}

/// Every store operation sleeps this long in the runs killed from outside, so that a run
/// lasts long enough (hundreds of milliseconds) for a delay to land inside it rather than
/// in process start-up.
const OUTSIDE_LATENCY: &str = "latency-ms=8";

/// How many runs of each operation `kill_from_outside` kills: `BLOCKVAULT_CRASH_KILLS`, or
/// 50, the floor (about a minute in a debug build; the abort-based tests above also
/// cover every store operation exactly).
fn crash_kills() -> usize {
    std::env::var("BLOCKVAULT_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// The seed of the kill delays: `BLOCKVAULT_CRASH_SEED`, or a new one each run (printed), so
/// that runs over time try different moments and a failing one can be repeated.
fn crash_seed() -> u64 {
    let seed = std::env::var("BLOCKVAULT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("SIGKILL delays from BLOCKVAULT_CRASH_SEED={seed}");
    seed
}

/// Runs `op` in fresh copies of `base` as child processes and SIGKILLs each from outside
/// after a pseudo-random delay, `kills` times; after each, `after` checks the copy. The
/// delays come from `BLOCKVAULT_CRASH_SEED` (printed; a fresh one per run when unset) and
/// spread over the length of one uncut run. Unlike `kill_everywhere`, the kill lands
/// wherever the process happens to be: inside a write, between two syscalls of one
/// operation, in a thread the store layer never sees. A seed therefore reproduces the
/// delays, not the exact instruction. Returns how many runs were killed before they ended,
/// and how many of those had already changed the repository (taken a lock, stored or
/// deleted something): the kills that land mid-operation.
fn kill_from_outside(
    base: &Vault,
    name: &str,
    seed: u64,
    op: impl Fn(&Vault) -> Vec<String>,
    mut after: impl FnMut(&Vault, &str),
) -> (usize, usize) {
    let kills = crash_kills();
    let mut rng = Prng::new(seed);

    // Uncut runs, to learn how long the operation takes: the shortest of three, since a run
    // slowed by a busy machine would put later kills after the end of faster runs.
    let mut span = Duration::MAX;
    for _ in 0..3 {
        let copy = fresh_copy(base);
        let args = op(&copy);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let r = key_file_run(&copy, Some(OUTSIDE_LATENCY), &args);
        span = span.min(started.elapsed());
        assert_eq!(r.code, 0, "{name}: the uncut run failed: {}", r.stderr);
    }

    let mut before = walk_names(&base.repo);
    before.sort();
    let (mut killed, mut changed) = (0, 0);
    for i in 0..kills {
        let copy = fresh_copy(base);
        let args = op(&copy);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // One kill in each of `kills` equal slices of the run, at a random point of its
        // slice: random moments, yet spread over the whole run whatever the seed.
        let at = (i as f64 + (rng.next_u64() % 1000) as f64 / 1000.0) / kills as f64;
        let delay = span.mul_f64(at);
        let why = format!(
            "{} killed from outside after {delay:?} of about {span:?} \
             (kill {i}, BLOCKVAULT_CRASH_SEED={seed})",
            args.join(" ")
        );
        let mut child = key_file_cmd(&copy, Some(OUTSIDE_LATENCY), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting blockvault");
        let started = Instant::now();
        while started.elapsed() < delay && child.try_wait().expect("polling the child").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SIGKILL: no handler, destructor or buffered write of the child runs after it.
        if child.try_wait().expect("polling the child").is_none() {
            child.kill().expect("sending SIGKILL");
        }
        let out = child.wait_with_output().expect("waiting for the child");
        match out.status.signal() {
            Some(9) => {
                killed += 1;
                let mut now = walk_names(&copy.repo);
                now.sort();
                if now != before {
                    changed += 1;
                }
            }
            _ => assert!(
                out.status.success(),
                "{why}: ended on its own, and failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
        after(&copy, &why);
    }
    eprintln!(
        "{name}: {killed} of {kills} runs killed before they ended, {changed} of them after \
         changing the repository (an uncut run took {span:?})"
    );
    (killed, changed)
}

/// Two versions of one 2 MiB source, the second with scattered changes.
fn vault_with_two_versions() -> (Vault, PathBuf, PathBuf) {
    let v = key_file_vault();
    let a = v.path("a.img");
    write_random_file(&a, 1, 2 * MIB);
    key_file_run(
        &v,
        None,
        &[
            "backup",
            "--name",
            "img",
            s(&a),
            "--time",
            "2026-11-01T00:00:00Z",
        ],
    )
    .ok();
    let b = v.path("b.img");
    fs::copy(&a, &b).expect("copying the source");
    // Scattered changes in 24 of the 32 chunks: a backup with many store operations.
    for i in 0..24u64 {
        scribble(&b, i * 87_000, 3_000, 10 + i);
    }
    (v, a, b)
}

/// A repository, the arguments of the operation to kill, and what must hold after a kill.
type Scenario = (
    Vault,
    Box<dyn Fn(&Vault) -> Vec<String>>,
    Box<dyn FnMut(&Vault, &str)>,
);

/// A second backup of a changed source: after a kill the first version restores, the
/// second is whole if it was recorded, a rerun records it, and gc leaves check clean.
fn backup_scenario() -> Scenario {
    let (v, a, _) = vault_with_two_versions();
    let first = versions(&v, "img");
    assert_eq!(first.len(), 1);
    let op = |copy: &Vault| {
        [
            "backup",
            "--name",
            "img",
            s(&copy.path("b.img")),
            "--time",
            "2026-11-02T00:00:00Z",
        ]
        .map(String::from)
        .to_vec()
    };
    let after = move |copy: &Vault, why: &str| {
        let b = copy.path("b.img");
        assert_checks_clean(copy, why);
        assert_restores(copy, "img", &first[0], &a, why);
        let now = versions(copy, "img");
        if now.len() == 2 {
            // Committed before the kill: it must be whole.
            assert_restores(copy, "img", &now[1], &b, why);
        } else {
            let r = key_file_run(copy, None, &["backup", "--name", "img", s(&b)]);
            assert_eq!(r.code, 0, "{why}: the rerun failed: {}", r.stderr);
            let now = versions(copy, "img");
            assert_restores(copy, "img", &now[1], &b, why);
        }
        let gc = key_file_run(copy, None, &["gc"]);
        assert_eq!(gc.code, 0, "{why}: gc after the kill failed: {}", gc.stderr);
        assert_checks_clean(copy, why);
    };
    (v, Box::new(op), Box::new(after))
}

/// gc with one forgotten version and a whole forgotten series to collect: after a kill the
/// kept version restores, and a rerun collects all the garbage.
fn gc_scenario() -> Scenario {
    let (v, _, b) = vault_with_two_versions();
    key_file_run(
        &v,
        None,
        &[
            "backup",
            "--name",
            "img",
            s(&b),
            "--time",
            "2026-11-02T00:00:00Z",
        ],
    )
    .ok();
    let vs = versions(&v, "img");
    key_file_run(&v, None, &["forget", "--name", "img", "--version", &vs[0]]).ok();
    // And a whole series of garbage: 32 more chunks for gc to delete.
    let other = v.path("other.img");
    write_random_file(&other, 77, 2 * MIB);
    key_file_run(&v, None, &["backup", "--name", "other", s(&other)]).ok();
    let o = versions(&v, "other");
    key_file_run(&v, None, &["forget", "--name", "other", "--version", &o[0]]).ok();
    let after = move |copy: &Vault, why: &str| {
        assert_checks_clean(copy, why);
        assert_restores(copy, "img", &vs[1], &b, why);
        let r = key_file_run(copy, None, &["gc", "--json"]);
        assert_eq!(r.code, 0, "{why}: gc rerun failed: {}", r.stderr);
        let c = key_file_run(copy, None, &["check", "--json"]).ok().json();
        assert_eq!(
            n(&c, "chunks_unreferenced"),
            0,
            "{why}: gc left garbage: {c}"
        );
        assert_restores(copy, "img", &vs[1], &b, why);
    };
    (v, Box::new(|_| vec!["gc".to_string()]), Box::new(after))
}

/// Prune of 28 daily versions down to the last two: after a kill whatever is left restores,
/// the two newest are always there, and a rerun finishes the job.
fn prune_scenario() -> Scenario {
    let v = key_file_vault();
    let mut sources = Vec::new();
    for day in 1..=28u64 {
        let src = v.path(&format!("d{day}.img"));
        write_random_file(&src, 100 + day, 64 * 1024);
        key_file_run(
            &v,
            None,
            &[
                "backup",
                "--name",
                "img",
                s(&src),
                "--time",
                &format!("2026-11-{day:02}T00:00:00Z"),
            ],
        )
        .ok();
        sources.push(src);
    }
    let all = versions(&v, "img");
    let op = |_: &Vault| {
        ["prune", "--name", "img", "--keep-last", "2"]
            .map(String::from)
            .to_vec()
    };
    let after = move |copy: &Vault, why: &str| {
        assert_checks_clean(copy, why);
        // Whatever survived is whole; the newest two always survive.
        let left = versions(copy, "img");
        assert!(
            left.ends_with(&all[26..]),
            "{why}: the kept versions went: {left:?}"
        );
        for v in &left {
            let i = all
                .iter()
                .position(|x| x == v)
                .expect("a version from before");
            assert_restores(copy, "img", v, &sources[i], why);
        }
        let r = key_file_run(copy, None, &["prune", "--name", "img", "--keep-last", "2"]);
        assert_eq!(r.code, 0, "{why}: prune rerun failed: {}", r.stderr);
        assert_eq!(versions(copy, "img"), all[26..].to_vec(), "{why}");
        // The current pointer names a version that exists: restore without --version works.
        let out = copy.path("current.img");
        let _ = fs::remove_file(&out);
        key_file_run(copy, None, &["restore", "--name", "img", s(&out)]).ok();
        assert_same_contents(&sources[27], &out);
    };
    (v, Box::new(op), Box::new(after))
}

#[test]
fn backup_killed_at_every_store_operation() {
    let (v, op, after) = backup_scenario();
    let points = kill_everywhere(&v, op, after);
    assert!(
        points >= 50,
        "only {points} kill points: the test proves too little"
    );
}

#[test]
fn gc_killed_at_every_store_operation() {
    let (v, op, after) = gc_scenario();
    let points = kill_everywhere(&v, op, after);
    assert!(points >= 50, "only {points} kill points");
}

#[test]
fn prune_killed_at_every_store_operation() {
    let (v, op, after) = prune_scenario();
    let points = kill_everywhere(&v, op, after);
    assert!(points >= 50, "only {points} kill points");
}

/// The same scenarios, each run killed by a real SIGKILL sent from outside at a random
/// moment. Most kills must land while the run is still going, and a good share after it
/// changed the repository, or the test proves little.
#[test]
fn backup_gc_and_prune_killed_from_outside_at_random_moments() {
    let seed = crash_seed();
    for (name, scenario) in [
        ("backup", backup_scenario as fn() -> Scenario),
        ("gc", gc_scenario),
        ("prune", prune_scenario),
    ] {
        let (v, op, after) = scenario();
        let kills = crash_kills();
        let (killed, changed) = kill_from_outside(&v, name, seed, op, after);
        assert!(
            killed * 2 >= kills && changed * 3 >= kills,
            "{name}: only {killed} of {kills} runs were killed before they ended, {changed} \
             mid-operation: the kills prove too little"
        );
    }
}

#[test]
fn store_faults_end_runs_cleanly_and_lose_nothing() {
    let (v, a, b) = vault_with_two_versions();
    let first = versions(&v, "img");
    for seed in 0..6u64 {
        for plan in [
            format!("fail-writes=0.05,seed={seed}"),
            format!("fail-after-put=0.1,seed={seed}"),
            format!("fail-reads=0.05,seed={seed}"),
        ] {
            let before = versions(&v, "img");
            let r = key_file_run(&v, Some(&plan), &["backup", "--name", "img", s(&b)]);
            let after = versions(&v, "img");
            if r.code != 0 {
                // 1 for a failed request; 5 when the failed read was of another run's
                // leftover lock, which then counts as held (format-spec 12).
                assert!(r.code == 1 || r.code == 5, "{plan}: {}", r.stderr);
                assert!(
                    r.stderr.contains("injected fault"),
                    "{plan}: the error should say what failed: {}",
                    r.stderr
                );
                // The manifest can land and the pointer's write then fail (or a write be
                // reported failed after it was stored): the run says it failed, yet the
                // version is there. It must then be whole, as any version is.
                assert!(
                    after.len() <= before.len() + 1,
                    "{plan}: a failed backup recorded two versions: {after:?}"
                );
                if after.len() > before.len() {
                    assert_restores(&v, "img", after.last().expect("a version"), &b, &plan);
                }
            } else {
                assert_eq!(after.len(), before.len() + 1);
                assert_restores(&v, "img", after.last().expect("a version"), &b, &plan);
            }
            assert_checks_clean(&v, &plan);
            assert_restores(&v, "img", &first[0], &a, &plan);
        }
    }
    // The manifest lands and every write of the pointer fails: the run fails, but says the
    // version was recorded and how to restore it, and it does restore by that name.
    let before = versions(&v, "img");
    let r = key_file_run(
        &v,
        Some("fail-writes=1,only=current/"),
        &["backup", "--name", "img", s(&b)],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let after = versions(&v, "img");
    assert_eq!(after.len(), before.len() + 1, "{}", r.stderr);
    let made = after
        .iter()
        .find(|x| !before.contains(x))
        .expect("the new version");
    assert!(
        r.stderr.contains(&format!(
            "version {made} of series \"img\" was recorded, but its current pointer was not moved"
        )) && r.stderr.contains(&format!("--version {made}")),
        "{}",
        r.stderr
    );
    assert_restores(&v, "img", made, &b, "pointer write failed");
    // A short read never becomes wrong bytes: restore fails with damage, writes no file.
    let out = v.path("short.img");
    let r = key_file_run(
        &v,
        Some("short-reads=1,only=chunks/"),
        &["restore", "--name", "img", "--version", &first[0], s(&out)],
    );
    assert_eq!(r.code, 3, "a short read is damage: {}", r.stderr);
    assert!(!out.exists(), "a failed restore left a file behind");
    // gc under failing writes stops with an error and deletes nothing that is referenced.
    for seed in 0..4u64 {
        let r = key_file_run(&v, Some(&format!("fail-writes=0.3,seed={seed}")), &["gc"]);
        assert!(r.code == 0 || r.code == 1, "gc: {}", r.stderr);
        assert_checks_clean(&v, "gc with failing deletes");
    }
    let vs = versions(&v, "img");
    assert_restores(&v, "img", &vs[0], &a, "after faults");
    // check under failing reads fails loudly rather than passing.
    let r = key_file_run(&v, Some("fail-reads=1"), &["check"]);
    assert_ne!(r.code, 0, "a check that could read nothing must not pass");
}

#[test]
fn a_full_disk_fails_the_backup_cleanly_and_space_freed_makes_it_work_again() {
    let scratch = Vault::uninitialised();
    let disk = Mount::tmpfs(scratch.root.path().join("disk"), "12m");
    let v = Vault {
        repo: disk.path.join("vault"),
        ..Vault::uninitialised()
    };
    let key = key_file(&v);
    v.run(&["init", "--key-file", s(&key), "--chunk-size", "256K"])
        .ok();
    let small = v.path("small.img");
    write_random_file(&small, 5, 3 * MIB);
    key_file_run(&v, None, &["backup", "--name", "img", s(&small)]).ok();
    let first = versions(&v, "img");

    // Random data does not compress: 16 MiB cannot fit in what is left of 12 MiB.
    let big = v.path("big.img");
    write_random_file(&big, 6, 16 * MIB);
    let r = key_file_run(&v, None, &["backup", "--name", "img", s(&big)]);
    assert_eq!(r.code, 1, "a full disk is a failure: {}", r.stderr);
    assert!(
        r.stderr.contains("No space left on device") && r.stderr.contains("no version recorded"),
        "the error should say the disk is full and that nothing was recorded: {}",
        r.stderr
    );
    assert_eq!(versions(&v, "img"), first, "no version may be recorded");
    assert_checks_clean(&v, "after a full disk");
    assert_restores(&v, "img", &first[0], &small, "after a full disk");
    // No hidden temporary files are left to eat the space.
    let hidden = walk_names(&v.repo)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .count();
    assert_eq!(hidden, 0, "temporary files were left behind");

    // gc frees the chunks the failed run stored; a backup that fits then works.
    key_file_run(&v, None, &["gc"]).ok();
    let mid = v.path("mid.img");
    write_random_file(&mid, 7, 4 * MIB);
    key_file_run(&v, None, &["backup", "--name", "img", s(&mid)]).ok();
    let now = versions(&v, "img");
    assert_eq!(now.len(), 2);
    assert_restores(&v, "img", &now[1], &mid, "after space was freed");
    assert_checks_clean(&v, "after space was freed");
    drop(v);
    drop(disk);
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("reading a directory").flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}
