//! The damage matrix (issue 6): every kind of stored object (config, key, chunk, manifest,
//! current pointer, lock) × every kind of damage (one flipped bit, truncation to half,
//! deletion, a swap with another object of the same kind, the same-named object from another
//! repository made by the same commands). For each combination that exists, `check` and
//! `restore` must notice, name the object (and the series, version and byte ranges it
//! affects), exit non-zero, never panic and never leave a target with wrong bytes;
//! `restore --allow-damage` must write zeros exactly where it says and the right bytes
//! elsewhere; versions the damage does not touch must still restore bit-exact.
//!
//! One fixture repository (key file, 64 KiB chunks, a few hundred KiB of data) is built per
//! test and copied afresh for every row, so each row damages a pristine repository.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Damage {
    /// One bit of the middle byte inverted.
    Flip,
    /// Cut to half its length.
    Truncate,
    Delete,
    /// Exchanged with another object of the same kind (contents swapped, names kept).
    Swap,
    /// Replaced by the object of the same name (or role) from another repository.
    Foreign,
}

use Damage::*;

const ALL: [Damage; 5] = [Flip, Truncate, Delete, Swap, Foreign];

/// The pristine repository, a second one made by the same commands, and what is in them.
struct Fixture {
    v: Vault,
    foreign: Vault,
    /// Series `sa`: version a1 (source a1), then a2 (source a2); series `sb`: vb (source b).
    a1: PathBuf,
    a2: PathBuf,
    b: PathBuf,
    va1: String,
    va2: String,
    vb: String,
    /// Store keys (`chunks/xx/...`) of the chunks each version brought in (no data is shared).
    chunks_a1: Vec<String>,
    chunks_b: Vec<String>,
}

fn key(v: &Vault) -> PathBuf {
    key_file(v)
}

/// `blockvault --key-file K args...`.
fn bv(v: &Vault, faults: Option<&str>, args: &[&str]) -> Run {
    let r = key_file_run(v, faults, args);
    assert!(
        !r.stderr.contains("panicked") && r.code != 101 && (r.code != -1 || faults.is_some()),
        "`{}` panicked or was killed (exit {}):\n{}",
        r.what,
        r.code,
        r.stderr
    );
    r
}

fn chunk_keys(v: &Vault) -> Vec<String> {
    v.chunk_objects()
        .iter()
        .map(|p| {
            p.strip_prefix(&v.repo)
                .expect("chunk under the repository")
                .display()
                .to_string()
        })
        .collect()
}

/// Builds one repository in `v` from sources in `work`; returns the three version names.
fn populate(v: &Vault, work: &Path) -> (String, String, String, Vec<String>, Vec<String>) {
    let key = key(v);
    v.run(&["init", "--key-file", s(&key), "--chunk-size", "64K"])
        .ok();
    let backup = |series: &str, src: &Path| -> String {
        let r = bv(v, None, &["backup", "--json", "--name", series, s(src)]).ok();
        text(&r.json(), "version").to_string()
    };
    let va1 = backup("sa", &work.join("a1"));
    let chunks_a1 = chunk_keys(v);
    let vb = backup("sb", &work.join("b"));
    let chunks_b: Vec<String> = chunk_keys(v)
        .into_iter()
        .filter(|c| !chunks_a1.contains(c))
        .collect();
    let va2 = backup("sa", &work.join("a2"));
    (va1, va2, vb, chunks_a1, chunks_b)
}

fn fixture() -> Fixture {
    let v = Vault::uninitialised();
    let (a1, a2, b) = (v.path("a1"), v.path("a2"), v.path("b"));
    // Not multiples of the chunk size: every version ends with a short chunk.
    write_random_file(&a1, 1, 300_000);
    write_random_file(&a2, 2, 280_000);
    write_random_file(&b, 3, 200_000);
    let (va1, va2, vb, chunks_a1, chunks_b) = populate(&v, &v.work);
    let foreign = Vault::uninitialised();
    populate(&foreign, &v.work);
    assert!(chunks_a1.len() >= 4 && chunks_b.len() >= 3);
    Fixture {
        v,
        foreign,
        a1,
        a2,
        b,
        va1,
        va2,
        vb,
        chunks_a1,
        chunks_b,
    }
}

fn copy_of(fx: &Fixture) -> Vault {
    let d = Vault::uninitialised();
    copy_dir(&fx.v.repo, &d.repo);
    fs::copy(key(&fx.v), key(&d)).expect("copying the key file");
    d
}

/// Applies `damage` to the object `name` of `d`; `other` is the object to swap with, and the
/// foreign object comes from `foreign_name` in the fixture's second repository.
fn apply(fx: &Fixture, d: &Vault, damage: Damage, name: &str, other: &str, foreign_name: &str) {
    let path = d.repo.join(name);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {name}: {e}"));
    match damage {
        Flip => {
            let mut b = bytes;
            let mid = b.len() / 2;
            b[mid] ^= 1;
            fs::write(&path, b).expect("writing");
        }
        Truncate => fs::write(&path, &bytes[..bytes.len() / 2]).expect("writing"),
        Delete => fs::remove_file(&path).expect("deleting"),
        Swap => {
            let o = d.repo.join(other);
            let theirs = fs::read(&o).expect("reading the other object");
            assert_ne!(bytes, theirs, "swapping {name} with an identical {other}");
            fs::write(&path, theirs).expect("writing");
            fs::write(&o, bytes).expect("writing");
        }
        Foreign => {
            let theirs = fs::read(fx.foreign.repo.join(foreign_name)).expect("reading foreign");
            assert_ne!(
                bytes, theirs,
                "the foreign {foreign_name} is identical to {name}"
            );
            fs::write(&path, theirs).expect("writing");
        }
    }
}

/// Asserts the exit code and that stderr and stdout together mention every needle.
#[track_caller]
fn says(r: &Run, code: i32, needles: &[&str], row: &str) {
    let all = format!("{}{}", r.stdout_text(), r.stderr);
    assert_eq!(
        r.code, code,
        "{row}: `{}` exit code {} (expected {code}):\n{all}",
        r.what, r.code
    );
    for n in needles {
        assert!(
            all.contains(n),
            "{row}: `{}` should mention {n:?}:\n{all}",
            r.what
        );
    }
}

/// A restore that must fail with `code` and leave no file at all in the scratch directory
/// (neither the target nor a partial file).
#[track_caller]
fn restore_fails(
    d: &Vault,
    series: &str,
    version: Option<&str>,
    code: i32,
    needles: &[&str],
    row: &str,
) {
    let out = d.path("out");
    let r = restore_to(d, series, version, &out);
    says(&r, code, needles, row);
    assert!(
        dir_names(&d.work).is_empty(),
        "{row}: a failed restore left {:?} behind",
        dir_names(&d.work)
    );
}

/// `restore --name SERIES [--version V] OUT` with the key file.
fn restore_to(d: &Vault, series: &str, version: Option<&str>, out: &Path) -> Run {
    let mut args = vec!["restore", "--name", series];
    if let Some(v) = version {
        args.extend(["--version", v]);
    }
    args.push(s(out));
    bv(d, None, &args)
}

/// A restore that must succeed bit-exact.
#[track_caller]
fn restores(d: &Vault, series: &str, version: Option<&str>, expected: &Path, row: &str) {
    let out = d.path("out");
    let r = restore_to(d, series, version, &out);
    says(&r, 0, &[], row);
    assert_same_contents(expected, &out);
    fs::remove_file(&out).expect("removing the restored file");
}

/// The damaged ranges a JSON report lists (restore's `damaged`, check's `problems`), sorted.
fn ranges_of(rows: &Value, field_ranges: bool) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for p in rows.as_array().expect("an array") {
        let object = p["object"].as_str().expect("object").to_string();
        if field_ranges {
            for r in p["ranges"].as_array().expect("ranges") {
                out.push((
                    object.clone(),
                    r[0].as_u64().unwrap(),
                    r[1].as_u64().unwrap(),
                ));
            }
        } else {
            out.push((object, n(p, "start"), n(p, "end")));
        }
    }
    out.sort_by_key(|r| (r.1, r.0.clone()));
    out
}

/// `restore --allow-damage` of a version with damaged chunks: exit 3, the target written,
/// zeros exactly in the ranges reported (which must be those `check --read-data` reported and
/// cover `objects`), the source's bytes everywhere else. Tried for a new file, in place over
/// a file of other bytes, and standard output.
#[track_caller]
fn allow_damage_restores(
    d: &Vault,
    series: &str,
    version: &str,
    source: &Path,
    objects: &[&str],
    row: &str,
) {
    let check = bv(
        d,
        None,
        &["check", "--json", "--read-data", "--name", series],
    );
    let expected_ranges: Vec<(String, u64, u64)> = ranges_of(&check.json()["problems"], true)
        .into_iter()
        .filter(|r| objects.contains(&r.0.as_str()))
        .collect();
    let mut want = fs::read(source).expect("reading the source");
    for (_, a, b) in &expected_ranges {
        want[*a as usize..*b as usize].fill(0);
    }
    let out = d.path("salvaged");
    let base = [
        "restore",
        "--json",
        "--allow-damage",
        "--name",
        series,
        "--version",
        version,
    ];
    let mut targets: Vec<(&str, Vec<&str>)> = vec![("new file", vec![s(&out)])];
    targets.push(("in place", vec!["--in-place", s(&out)]));
    targets.push(("stdout", vec!["-"]));
    for (what, extra) in targets {
        if what == "in place" {
            write_random_file(&out, 99, want.len() as u64);
        }
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().copied());
        let r = bv(d, None, &args);
        let row = format!("{row} (--allow-damage to {what})");
        says(&r, 3, &["holds zeros in"], &row);
        let summary: Value = if what == "stdout" {
            // The summary goes to stderr, before the error line.
            let json = r.stderr.rsplit_once("\nerror: ").expect("an error line").0;
            serde_json::from_str(json).expect("a JSON summary on stderr")
        } else {
            r.json()
        };
        let got = ranges_of(&summary["damaged"], false);
        assert_eq!(
            got, expected_ranges,
            "{row}: ranges reported by restore and check differ"
        );
        for o in objects {
            assert!(got.iter().any(|g| g.0 == *o), "{row}: {o} not reported");
        }
        let bytes = if what == "stdout" {
            r.stdout.clone()
        } else {
            fs::read(&out).expect("the salvaged file exists")
        };
        assert!(
            bytes == want,
            "{row}: wrong bytes outside the damaged ranges, or not zeros in them"
        );
    }
    fs::remove_file(&out).expect("removing the salvaged file");
    // Text mode: one line per range on stderr, naming the object and the bytes.
    let r = bv(
        d,
        None,
        &[
            "restore",
            "--allow-damage",
            "--name",
            series,
            "--version",
            version,
            s(&out),
        ],
    );
    for (o, a, b) in &expected_ranges {
        says(&r, 3, &[&format!("damaged: {o} bytes {a}..{b}")], row);
    }
    fs::remove_file(&out).expect("removing the salvaged file");
}

fn row_name(kind: &str, damage: Damage) -> String {
    format!("{kind} × {damage:?}")
}

/// Config: there is one per repository, so there is nothing of its kind to swap with. Damage
/// blocks every command (nothing can be read without it), so no version is "unaffected".
#[test]
fn damaged_config() {
    let fx = fixture();
    for damage in ALL {
        if damage == Swap {
            continue; // one config per repository
        }
        let row = row_name("config", damage);
        let d = copy_of(&fx);
        apply(&fx, &d, damage, "config", "", "config");
        let (code, needles): (i32, &[&str]) = match damage {
            Flip | Truncate => (3, &["config of the repository", "is damaged"]),
            // Without a config the directory is not a repository (exit 1, "failure"): from
            // the store alone, a deleted config looks like a wrong --repo.
            Delete => (1, &["no config object"]),
            // Another repository's config is intact but its key objects and ids are not
            // ours: the key file opens nothing, which is what a wrong key looks like (4).
            Foreign => (4, &["wrong passphrase or key file"]),
            Swap => unreachable!(),
        };
        says(&bv(&d, None, &["check"]), code, needles, &row);
        restore_fails(&d, "sa", Some(&fx.va1), code, needles, &row);
    }
}

/// Key objects: a reader treats every object under `keys/` as a key whatever its name, so
/// swapping two keys' names changes nothing (and a key-file repository has one key).
#[test]
fn damaged_key() {
    let fx = fixture();
    let keys = dir_names(&fx.v.repo.join("keys"));
    assert_eq!(keys.len(), 1);
    let name = format!("keys/{}", keys[0]);
    let theirs = format!("keys/{}", dir_names(&fx.foreign.repo.join("keys"))[0]);
    for damage in ALL {
        if damage == Swap {
            continue; // keys are found by listing, not by name
        }
        let row = row_name("key", damage);
        let d = copy_of(&fx);
        apply(&fx, &d, damage, &name, "", &theirs);
        let (code, needles): (i32, Vec<&str>) = match damage {
            // Damage, not a wrong passphrase: the damaged key may be the one it opens.
            // Another repository's key object fails its checksum here, which binds its name.
            Flip | Truncate | Foreign => {
                (3, vec![&name, "is damaged", "paper key", "no key object"])
            }
            Delete => (1, vec!["keys/ holds no key"]),
            Swap => unreachable!(),
        };
        says(&bv(&d, None, &["check"]), code, &needles, &row);
        restore_fails(&d, "sa", Some(&fx.va1), code, &needles, &row);
    }
}

/// Chunks: damage is found by `check --read-data` (plain `check` only lists objects, so it
/// sees deletion but not content); restore names the chunk and the byte range and writes
/// nothing; --allow-damage salvages the rest. The swap exchanges a chunk of a1 with one of b.
#[test]
fn damaged_chunk() {
    let fx = fixture();
    let mine = fx.chunks_a1[1].clone();
    let other = fx.chunks_b[0].clone();
    let theirs = chunk_keys(&fx.foreign)[0].clone();
    for damage in ALL {
        let row = row_name("chunk", damage);
        let d = copy_of(&fx);
        apply(&fx, &d, damage, &mine, &other, &theirs);
        // Chunk ids are keyed, so the other repository has no chunk of the same name: its
        // chunk of the same source is put under ours.
        let hit: Vec<(&str, &str, &Path, &str)> = if damage == Swap {
            vec![
                ("sa", &fx.va1, &fx.a1, &mine),
                ("sb", &fx.vb, &fx.b, &other),
            ]
        } else {
            vec![("sa", &fx.va1, &fx.a1, &mine)]
        };
        let plain = bv(&d, None, &["check"]);
        if damage == Delete {
            says(
                &plain,
                3,
                &[&mine, "series \"sa\" version", &fx.va1, "bytes "],
                &row,
            );
        } else {
            // Without --read-data, check lists chunk objects; it does not read them.
            says(&plain, 0, &["no damage found"], &row);
        }
        let full = bv(&d, None, &["check", "--read-data"]);
        for (series, version, _, object) in &hit {
            let at = format!("series {series:?} version {version}, bytes ");
            says(&full, 3, &[object, &at], &row);
        }
        for (series, version, source, object) in &hit {
            restore_fails(&d, series, Some(version), 3, &[object, "bytes "], &row);
            allow_damage_restores(&d, series, version, source, &[object], &row);
        }
        restores(&d, "sa", Some(&fx.va2), &fx.a2, &row);
        if damage != Swap {
            restores(&d, "sb", Some(&fx.vb), &fx.b, &row);
        }
    }
}

/// Manifests: the damaged version is named by check and refused by restore, even with
/// --allow-damage (no map to restore by). Deletion is shown for the newest version, which the
/// current pointer names: deleting an older version's manifest cannot be told from `forget`
/// (nothing else records that the version existed), so check cannot report it.
#[test]
fn damaged_manifest() {
    let fx = fixture();
    let m1 = format!("manifests/sa/{}", fx.va1);
    let m2 = format!("manifests/sa/{}", fx.va2);
    let foreign_v1 = &dir_names(&fx.foreign.repo.join("manifests/sa"))[0];
    let theirs = format!("manifests/sa/{foreign_v1}");
    for damage in ALL {
        let row = row_name("manifest", damage);
        let d = copy_of(&fx);
        let target = if damage == Delete { &m2 } else { &m1 };
        apply(&fx, &d, damage, target, &m2, &theirs);
        let check = bv(&d, None, &["check"]);
        match damage {
            Delete => {
                says(&check, 3, &["current/sa", &fx.va2, "does not exist"], &row);
                restore_fails(
                    &d,
                    "sa",
                    Some(&fx.va2),
                    1,
                    &["has no version", &fx.va2],
                    &row,
                );
                restores(&d, "sa", Some(&fx.va1), &fx.a1, &row);
            }
            _ => {
                let mut damaged = vec![(&m1, &fx.va1)];
                if damage == Swap {
                    damaged.push((&m2, &fx.va2));
                } else {
                    restores(&d, "sa", Some(&fx.va2), &fx.a2, &row);
                }
                for (object, version) in damaged {
                    let at = format!("series \"sa\" version {version}");
                    says(&check, 3, &[object, &at], &row);
                    restore_fails(&d, "sa", Some(version), 3, &[object, "is damaged"], &row);
                    let out = d.path("out");
                    let r = bv(
                        &d,
                        None,
                        &[
                            "restore",
                            "--allow-damage",
                            "--name",
                            "sa",
                            "--version",
                            version,
                            s(&out),
                        ],
                    );
                    says(&r, 3, &["--allow-damage cannot help", object], &row);
                    assert!(
                        !out.exists(),
                        "{row}: --allow-damage wrote a target without a manifest"
                    );
                }
            }
        }
        restores(&d, "sb", Some(&fx.vb), &fx.b, &row);
    }
}

/// Current pointers: check names the pointer and series; a restore that needs the pointer
/// (no --version) refuses, one with an explicit version is unaffected. The swap exchanges
/// `current/sa` with `current/sb`.
#[test]
fn damaged_pointer() {
    let fx = fixture();
    for damage in ALL {
        let row = row_name("current pointer", damage);
        let d = copy_of(&fx);
        apply(&fx, &d, damage, "current/sa", "current/sb", "current/sa");
        let check = bv(&d, None, &["check"]);
        if damage == Delete {
            // Not damage: without a pointer the newest manifest is the current version (a
            // pointer only records it), so check is clean and restore takes the newest.
            says(&check, 0, &["no damage found"], &row);
            restores(&d, "sa", None, &fx.a2, &row);
        } else {
            says(&check, 3, &["DAMAGED current/sa (series \"sa\")"], &row);
            restore_fails(
                &d,
                "sa",
                None,
                3,
                &["current pointer current/sa", "is damaged"],
                &row,
            );
            if damage == Swap {
                says(&check, 3, &["DAMAGED current/sb (series \"sb\")"], &row);
                restore_fails(&d, "sb", None, 3, &["current pointer current/sb"], &row);
            }
        }
        restores(&d, "sa", Some(&fx.va1), &fx.a1, &row);
        restores(&d, "sa", Some(&fx.va2), &fx.a2, &row);
        restores(&d, "sb", Some(&fx.vb), &fx.b, &row);
    }
}

/// Leaves the lock of a backup killed while holding it in `v`, and returns its store key.
fn leave_lock(v: &Vault, source: &Path) -> String {
    for n in 1..40 {
        let plan = format!("die-after={n}");
        let r = bv(v, Some(&plan), &["backup", "--name", "sc", s(source)]);
        let locks = dir_names(&v.repo.join("locks"));
        if let [lock] = locks.as_slice() {
            assert_ne!(r.code, 0, "the backup should have died");
            return format!("locks/{lock}");
        }
        assert!(locks.is_empty(), "{locks:?}");
        assert_ne!(
            r.code, 0,
            "the backup finished without ever holding its lock"
        );
    }
    panic!("no kill point left a lock behind");
}

/// Locks. A readable lock of a dead process on this host is stale and ignored. A lock that
/// cannot be opened (damaged, or another repository's) is treated as held by a live process
/// of a possibly newer client (format-spec section 12): every command, check and restore
/// included, is refused at once with exit 5, naming the lock object and saying to remove it if
/// no blockvault is running; it never goes stale, so it blocks until removed by hand. Locks
/// are found by listing and their names are random, so swapping two changes nothing.
#[test]
fn damaged_lock() {
    let fx = fixture();
    let pristine = copy_of(&fx);
    let lock = leave_lock(&pristine, &fx.b);
    let foreign = Vault::uninitialised();
    copy_dir(&fx.foreign.repo, &foreign.repo);
    fs::copy(key(&fx.foreign), key(&foreign)).expect("copying the key file");
    let theirs = leave_lock(&foreign, &fx.b);
    let out = pristine.path("out");
    for damage in ALL {
        if damage == Swap {
            continue; // found by listing, named at random: a swap is no change
        }
        let row = row_name("lock", damage);
        let d = Vault::uninitialised();
        copy_dir(&pristine.repo, &d.repo);
        fs::copy(key(&pristine), key(&d)).expect("copying the key file");
        if damage == Foreign {
            fs::write(
                d.repo.join(&lock),
                fs::read(foreign.repo.join(&theirs)).unwrap(),
            )
            .unwrap();
        } else {
            apply(&fx, &d, damage, &lock, "", "");
        }
        let commands: [Vec<&str>; 4] = [
            vec!["check"],
            vec!["restore", "--name", "sa", "--version", &fx.va1, s(&out)],
            vec!["backup", "--name", "sa", s(&fx.a1)],
            vec!["gc"],
        ];
        for args in &commands {
            let r = bv(&d, None, args);
            if damage == Delete {
                says(&r, 0, &[], &row);
            } else {
                says(
                    &r,
                    5,
                    &[
                        &lock,
                        "cannot be read",
                        "remove it if no blockvault is running",
                    ],
                    &row,
                );
            }
            let _ = fs::remove_file(&out);
        }
        if damage != Delete {
            // `unlock` keeps it unless told it may go; then it is all it takes.
            let kept = bv(&d, None, &["unlock"]);
            says(&kept, 0, &[], &row);
            assert!(
                kept.stdout_text().contains("kept unreadable lock")
                    && kept.stdout_text().contains("--unreadable removes it"),
                "{row}: {}",
                kept.stdout_text()
            );
            assert!(d.repo.join(&lock).exists(), "{row}: unlock removed it");
            says(&bv(&d, None, &["unlock", "--unreadable"]), 0, &[], &row);
            assert!(!d.repo.join(&lock).exists(), "{row}: still there");
            says(&bv(&d, None, &["check"]), 0, &["no damage found"], &row);
            restores(&d, "sa", Some(&fx.va1), &fx.a1, &row);
        }
    }
    // The undamaged stale lock is ignored by all, and `unlock` tidies it away.
    let row = "lock × none (stale)";
    says(
        &bv(&pristine, None, &["check"]),
        0,
        &["no damage found"],
        row,
    );
    restores(&pristine, "sa", Some(&fx.va1), &fx.a1, row);
    let tidy = bv(&pristine, None, &["unlock"]);
    says(&tidy, 0, &[], row);
    assert!(
        tidy.stdout_text().contains("removed stale shared lock"),
        "{}",
        tidy.stdout_text()
    );
    assert!(dir_names(&pristine.repo.join("locks")).is_empty());
}

/// A live lock (a backup waiting on its standard input) is kept by `unlock` and blocks gc;
/// `unlock --all` keeps it too while its process runs on this host. Removed all the same (by
/// `unlock --all` on another host), the backup must not commit: a gc may have deleted its
/// chunks meanwhile. It fails, and records nothing.
#[test]
fn unlock_keeps_live_locks() {
    use std::io::Write;
    let v = Vault::new();
    let mut child = v
        .cmd(&["backup", "--name", "waiting", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting a backup");
    let started = std::time::Instant::now();
    let locks = v.repo.join("locks");
    while !locks.exists() || dir_names(&locks).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the backup never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let listed = v.run(&["unlock", "--json"]).ok().json();
    assert_eq!(listed[0]["state"], "live", "{listed}");
    assert_eq!(listed[0]["removed"], false);
    assert!(text(&listed[0], "description").contains("backup of waiting"));
    v.run(&["gc"]).error(5, &["locked", "backup of waiting"]);
    let all = v.run(&["unlock", "--all"]).ok().stdout_text();
    assert!(all.contains("is running on this host"), "{all}");
    assert_eq!(
        dir_names(&locks).len(),
        1,
        "unlock --all removed a running backup's lock"
    );

    for name in dir_names(&locks) {
        fs::remove_file(locks.join(name)).expect("removing the lock");
    }
    let mut stdin = child.stdin.take().expect("the backup's standard input");
    stdin
        .write_all(&random_bytes(3, MIB as usize))
        .expect("feeding the backup");
    drop(stdin);
    let out = child.wait_with_output().expect("waiting for the backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("was removed while it ran"), "{stderr}");
    assert!(v.versions("waiting").is_empty());
    v.run(&["gc"]).ok();
}

/// With a stale limit below the usual two-minute heartbeat, heartbeats come often enough for
/// a backup that outlasts half the limit to commit (it failed, saying the repository was
/// locked by its own lock).
#[test]
fn a_low_stale_limit_still_lets_a_long_backup_commit() {
    let v = Vault::new();
    let mut c = v.cmd(&[
        "backup",
        "--json",
        "--name",
        "slow",
        "--command",
        "head -c 100000 /dev/urandom; sleep 7",
    ]);
    // Heartbeats every 3 s; the commit needs one within 6 s: it failed with 120 s.
    c.env("BLOCKVAULT_LOCK_STALE_SECS", "12");
    run(&mut c, None).ok();
    assert_eq!(v.versions("slow").len(), 1);
}

/// A ZFS stream with holes cannot be received: the combination is a usage error.
#[test]
fn allow_damage_refuses_zfs_receive() {
    let v = Vault::uninitialised();
    let r = v.run(&[
        "restore",
        "--allow-damage",
        "--zfs-receive",
        "tank/fs",
        "--name",
        "sa",
    ]);
    says(
        &r,
        2,
        &["--allow-damage", "--zfs-receive"],
        "--allow-damage --zfs-receive",
    );
}

/// The way back from a damaged or lost chunk: a plain backup trusts that the chunks of the
/// version before are stored, so it mends nothing; `check --read-data --repair` moves the
/// damaged object to quarantine/, and `backup --heal` stores both chunks again from the source, after which
/// every version, the oldest too, is whole.
#[test]
fn a_damaged_and_a_lost_chunk_are_healed() {
    let v = Vault::with_init(&["--chunk-size", "64KiB"]);
    let source = v.path("disk.img");
    write_random_file(&source, 7, 256 * 1024);
    let first = text(&v.backup("img", &[s(&source)]), "version").to_string();
    let objects = v.chunk_objects();
    assert_eq!(objects.len(), 4, "{objects:?}");
    scribble(&objects[0], 100, 16, 1);
    fs::remove_file(&objects[1]).expect("deleting a chunk object");

    let plain = v.backup("img", &[s(&source)]);
    assert_eq!(
        (n(&plain, "chunks_new"), n(&plain, "chunks_healed")),
        (0, 0),
        "a backup without --heal trusts the previous version's chunks"
    );
    let found = v.run(&["check", "--read-data"]).code(3);
    let line = found.error_line();
    assert!(
        line.contains("2 damaged versions") && line.contains("check --read-data --repair"),
        "{line}"
    );

    let damaged = fs::read(&objects[0]).expect("reading the damaged object");
    let repaired = v.run(&["check", "--read-data", "--repair"]).code(3);
    assert!(
        repaired
            .stdout_text()
            .contains("moved 1 damaged chunk to quarantine/ (--repair)"),
        "{}",
        repaired.stdout_text()
    );
    assert!(!objects[0].exists(), "the damaged object is still there");
    // Kept aside, byte for byte, for whoever wants to know what went wrong.
    let aside = v.repo.join("quarantine").join(
        objects[0]
            .strip_prefix(&v.repo)
            .expect("a chunk inside the repository"),
    );
    assert_eq!(fs::read(&aside).ok(), Some(damaged), "{}", aside.display());

    let healed = v.backup("img", &["--heal", s(&source)]);
    assert_eq!(
        (n(&healed, "chunks_new"), n(&healed, "chunks_healed")),
        (2, 2),
        "{healed}"
    );
    let clean = v.run(&["check", "--read-data"]).ok();
    assert!(
        clean.stdout_text().contains("no damage found"),
        "{}",
        clean.stdout_text()
    );
    let out = v.path("first.img");
    v.restore("img", &["--version", &first, s(&out)]);
    assert_same_contents(&source, &out);
}

/// `list` says what is wrong with a current pointer instead of showing no `*` and exiting 0:
/// one behind the newest version and a missing one are notes (restores still pick a version),
/// a damaged one, or one left without any version, is damage (exit 3).
#[test]
fn list_says_what_is_wrong_with_a_current_pointer() {
    let v = Vault::new();
    let source = v.path("small.img");
    write_random_file(&source, 3, 100_000);
    let older = text(&v.backup("a", &[s(&source)]), "version").to_string();
    let pointer = v.repo.join("current").join("a");
    let old_pointer = fs::read(&pointer).expect("reading the current pointer");
    let newest = text(&v.backup("a", &[s(&source)]), "version").to_string();
    let list = |code| v.run(&["list"]).code(code);

    fs::write(&pointer, &old_pointer).expect("putting the old pointer back");
    let behind = list(0);
    assert!(
        behind
            .stderr
            .contains(&format!("names version {older}, not the newest, {newest}")),
        "{}",
        behind.stderr
    );
    let checked = v.run(&["check"]).ok().stdout_text();
    assert!(
        checked.contains(&format!(
            "note: the current pointer of series \"a\" names version {older}, not the newest"
        )),
        "{checked}"
    );

    scribble(&pointer, 40, 4, 9);
    let damaged = list(3);
    assert!(
        damaged
            .stderr
            .contains("current pointer current/a of series \"a\" is damaged")
            && damaged.stdout_text().contains(&newest),
        "the damage is named and the versions still listed: {}{}",
        damaged.stdout_text(),
        damaged.stderr
    );

    fs::remove_file(&pointer).expect("deleting the current pointer");
    let missing = list(0);
    assert!(
        missing
            .stderr
            .contains(&format!("no current pointer (a first backup cut short after its manifest was written): restores without --version pick the newest version, {newest}")),
        "{}",
        missing.stderr
    );

    v.backup("a", &[s(&source)]);
    fs::remove_dir_all(v.repo.join("manifests")).expect("deleting every manifest");
    let orphan = list(3);
    assert!(
        orphan.stderr.contains("which has no version left"),
        "{}",
        orphan.stderr
    );
}

/// `--repair` deletes only what is proven bad: a chunk whose header says a newer format
/// version is unreadable here but may be readable by the blockvault that wrote it, so it is
/// reported and kept. `--repair` also needs the whole repository (no --name).
#[test]
fn repair_keeps_a_chunk_of_a_newer_format() {
    let v = Vault::with_init(&["--chunk-size", "64KiB"]);
    let source = v.path("disk.img");
    write_random_file(&source, 8, 128 * 1024);
    v.backup("img", &[s(&source)]);
    let newer = v.chunk_objects()[0].clone();
    let mut bytes = fs::read(&newer).expect("reading a chunk object");
    bytes[4] = 200; // the envelope's format version (format-spec: header)
    fs::write(&newer, &bytes).expect("writing the chunk object back");

    let r = v.run(&["check", "--read-data", "--repair"]).code(3);
    assert!(
        r.stdout_text()
            .contains("is newer than this blockvault understands")
            && !r.stdout_text().contains("deleted"),
        "{}",
        r.stdout_text()
    );
    assert!(newer.exists(), "--repair deleted a chunk of a newer format");
    assert!(
        !r.error_line().contains("--repair"),
        "suggests --repair for what it will not delete: {}",
        r.stderr
    );
    v.run(&["check", "--read-data", "--repair", "--name", "img"])
        .code(2);
}

/// `--repair` reads a damaged chunk a second time before it deletes it: a fault on the way
/// (here every chunk read has an even chance of coming back a byte short) must not cost a
/// good object. The fault plan's seed makes the sequence of reads the same every run: with
/// it, the first reads of two chunks come back short and their second reads whole.
#[test]
fn repair_keeps_a_chunk_that_reads_well_the_second_time() {
    let v = Vault::with_init(&["--chunk-size", "64KiB"]);
    let source = v.path("disk.img");
    write_random_file(&source, 11, 256 * 1024);
    v.backup("img", &[s(&source)]);
    let before = v.chunk_objects();
    assert_eq!(before.len(), 4);
    let flaky = |args: &[&str]| {
        let mut all = vec!["check", "--read-data", "--in-flight", "1"];
        all.extend_from_slice(args);
        let mut cmd = v.cmd(&all);
        cmd.env(
            "BLOCKVAULT_TEST_FAULTS",
            "short-reads=0.5,only=chunks/,seed=10",
        );
        run(&mut cmd, None)
    };
    // The plan does cut reads short: without --repair, they read as damage.
    let plain = flaky(&[]).code(3);
    assert!(
        plain.stdout_text().contains(": 2 damaged"),
        "{}",
        plain.stdout_text()
    );
    let repaired = flaky(&["--repair"]).ok();
    assert!(
        repaired.stdout_text().contains("no damage found"),
        "{}",
        repaired.stdout_text()
    );
    assert_eq!(v.chunk_objects(), before, "--repair deleted a good chunk");
    v.run(&["check", "--read-data"]).ok();
}

/// A current pointer whose manifest is gone: with no version left, a restore names the
/// missing manifest and exits 3 (it said the series had never been backed up, exit 1); with
/// an older version left, it says which version stands in, and restores that one.
#[test]
fn a_restore_names_the_manifest_its_current_pointer_lost() {
    let v = Vault::new();
    let first = v.path("first.img");
    write_random_file(&first, 81, 300_000);
    let only = text(&v.backup("one", &[s(&first)]), "version").to_string();
    fs::remove_file(v.repo.join("manifests/one").join(&only)).expect("removing the manifest");
    let r = v.run(&["restore", "--name", "one", s(&v.path("one.out"))]);
    r.error(
        3,
        &[
            &format!("manifests/one/{only}"),
            "series \"one\"",
            "is missing from the repository",
        ],
    );

    let older = text(&v.backup("two", &[s(&first)]), "version").to_string();
    let second = v.path("second.img");
    write_random_file(&second, 82, 300_000);
    let newer = text(
        &v.backup("two", &[s(&second), "--time", "2099-01-01T00:00:00Z"]),
        "version",
    )
    .to_string();
    fs::remove_file(v.repo.join("manifests/two").join(&newer)).expect("removing the manifest");
    let out = v.path("two.out");
    let r = v.run(&["restore", "--name", "two", s(&out)]).ok();
    assert!(
        r.stderr.contains(&format!("names version {newer}"))
            && r.stderr
                .contains(&format!("using the newest stored version, {older}")),
        "{}",
        r.stderr
    );
    assert_same_contents(&first, &out);
}

/// `list --json` gives null, not "" or 0, for what an unreadable manifest would have said.
#[test]
fn list_json_says_null_for_what_a_damaged_manifest_hides() {
    let v = Vault::new();
    let src = v.path("a.img");
    write_random_file(&src, 91, 200_000);
    let version = text(&v.backup("a", &[s(&src)]), "version").to_string();
    let manifest = v.repo.join("manifests/a").join(&version);
    let mut bytes = fs::read(&manifest).expect("the manifest");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&manifest, bytes).expect("damaging the manifest");
    let r = v.run(&["list", "--json"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let rows = r.json();
    let row = &rows[0];
    assert_eq!(row["version"], version.as_str(), "{rows}");
    assert!(row["damaged"].is_string(), "{rows}");
    for field in [
        "time",
        "size",
        "source_kind",
        "source",
        "host",
        "chunks",
        "bytes_new_stored",
        "parent",
    ] {
        assert_eq!(
            row.get(field),
            Some(&Value::Null),
            "{field} of a damaged manifest: {rows}"
        );
    }
    assert_eq!(row["restorable"], false, "{rows}");
}
