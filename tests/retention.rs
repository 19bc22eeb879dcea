//! prune, forget and check from the outside: the real binary against local-directory
//! repositories, histories made with `backup --time`, damage made by editing object files.

use crate::util::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// A series of versions, each of different content (10 MiB: chunks of 4, 4 and 2 MiB), made
/// at the given times; returns (version name, source file) oldest first.
fn history(v: &Vault, series: &str, times: &[&str]) -> Vec<(String, PathBuf)> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let src = v.path(&format!("{series}-{i}.img"));
            write_random_file(&src, 1000 + i as u64, 10 * MIB);
            let b = v.backup(series, &[s(&src), "--time", t]);
            (text(&b, "version").to_string(), src)
        })
        .collect()
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// (version, action, reasons) from `prune --json`.
fn plan_rows(run: Run) -> Vec<(String, String, Vec<String>)> {
    array(run.ok().json()["plan"].clone())
        .iter()
        .map(|r| {
            (
                text(r, "version").to_string(),
                text(r, "action").to_string(),
                r["reasons"]
                    .as_array()
                    .expect("reasons is an array")
                    .iter()
                    .map(|x| x.as_str().expect("a reason is text").to_string())
                    .collect(),
            )
        })
        .collect()
}

#[track_caller]
fn current_of(v: &Vault, series: &str) -> String {
    let rows = v.list();
    let cur: Vec<&Value> = rows
        .iter()
        .filter(|r| r["series"] == series && r["current"] == true)
        .collect();
    assert_eq!(cur.len(), 1, "one current version of {series}: {rows:?}");
    text(cur[0], "version").to_string()
}

#[track_caller]
fn restores_bit_exact(v: &Vault, series: &str, version: &str, source: &std::path::Path) {
    let out = v.path(&format!("restored-{version}"));
    v.restore(series, &["--version", version, s(&out)]);
    assert_same_contents(source, &out);
    fs::remove_file(&out).unwrap();
}

/// The first command: a dry run prints the plan (keep/remove with reasons) and
/// deletes nothing; the same prune without --dry-run removes exactly the planned versions,
/// leaves every chunk for gc, and every kept version still restores bit-exact.
#[test]
fn prune_dry_run_then_prune() {
    let v = Vault::new();
    let h = history(
        &v,
        "vm101",
        &[
            "2026-01-01T03:00:00Z",
            "2026-01-01T15:00:00Z",
            "2026-01-02T03:00:00Z",
            "2026-01-03T03:00:00Z",
            "2026-01-10T03:00:00Z",
            "2026-01-11T03:00:00Z",
        ],
    );
    let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
    let chunks_before = v.chunk_objects();
    let policy = ["--keep-daily", "3", "--keep-last", "1"];

    let mut args = vec!["prune", "--json", "--name", "vm101", "--dry-run"];
    args.extend_from_slice(&policy);
    let plan = plan_rows(v.run(&args));
    let expected: Vec<(&str, &str, Vec<&str>)> = vec![
        (names[0], "remove", vec!["no policy keeps it"]),
        (names[1], "remove", vec!["no policy keeps it"]),
        (names[2], "remove", vec!["no policy keeps it"]),
        (names[3], "keep", vec!["daily 2026-01-03"]),
        (names[4], "keep", vec!["daily 2026-01-10"]),
        (
            names[5],
            "keep",
            vec!["newest version", "last 1", "daily 2026-01-11"],
        ),
    ];
    assert_eq!(plan.len(), expected.len());
    for (got, want) in plan.iter().zip(&expected) {
        assert_eq!(got.0, want.0);
        assert_eq!(got.1, want.1, "{got:?}");
        assert_eq!(got.2, want.2, "{got:?}");
    }
    // The text plan says the same, one line per version.
    let mut args = vec!["prune", "--name", "vm101", "--dry-run"];
    args.extend_from_slice(&policy);
    let out = v.run(&args).ok().stdout_text();
    assert!(out.contains("keep 3, remove 3 of 6 versions"), "{out}");
    assert!(out.contains("dry run: nothing was removed"), "{out}");
    for (name, action, _) in &expected {
        assert!(
            out.lines()
                .any(|l| l.starts_with(action) && l.contains(name)),
            "no {action} line for {name}:\n{out}"
        );
    }
    // Nothing was deleted.
    assert_eq!(v.versions("vm101"), names);
    assert_eq!(v.chunk_objects(), chunks_before);
    assert!(dir_names(&v.repo.join("locks")).is_empty(), "no lock left");

    // Carried out.
    let mut args = vec!["prune", "--name", "vm101"];
    args.extend_from_slice(&policy);
    let out = v.run(&args).ok().stdout_text();
    assert!(out.contains("removed 3 versions of series vm101"), "{out}");
    assert_eq!(v.versions("vm101"), &names[3..]);
    for (name, _) in &h[..3] {
        assert!(!v.manifest_object("vm101", name).exists());
    }
    assert_eq!(
        v.chunk_objects(),
        chunks_before,
        "chunks are gc's to delete"
    );
    assert_eq!(current_of(&v, "vm101"), names[5]);
    for (name, src) in &h[3..] {
        restores_bit_exact(&v, "vm101", name, src);
    }
    v.run(&["check", "--read-data"]).ok();
    // Pruning again with the same policy removes nothing more.
    let plan = plan_rows(v.run(&["prune", "--json", "--name", "vm101", "--keep-daily", "3"]));
    assert!(plan.iter().all(|(_, a, _)| a == "keep"), "{plan:?}");
}

/// A long history's plan: the versions kept stand out, the run of removed ones between them
/// is one line (both ends named), --json still lists every version, and both say what the
/// run cost in requests.
#[test]
fn a_long_plan_shows_runs_as_ranges() {
    let v = Vault::new();
    let src = v.path("small.img");
    write_random_file(&src, 7, 64 << 10);
    let names: Vec<String> = (0..12)
        .map(|h| {
            let b = v.backup(
                "hourly",
                &[s(&src), "--time", &format!("2026-03-01T{h:02}:00:00Z")],
            );
            text(&b, "version").to_string()
        })
        .collect();
    let policy = ["prune", "--name", "hourly", "--keep-last", "2"];
    let out = v
        .run(&[&policy[..], &["--dry-run"]].concat())
        .ok()
        .stdout_text();
    assert!(out.contains("keep 2, remove 10 of 12 versions"), "{out}");
    let removes: Vec<&str> = out.lines().filter(|l| l.starts_with("remove")).collect();
    assert_eq!(removes.len(), 1, "one line for the run of removals:\n{out}");
    for part in [
        names[0].as_str(),
        &names[9],
        "(10 versions)",
        "no policy keeps it",
    ] {
        assert!(removes[0].contains(part), "{part} not in {:?}", removes[0]);
    }
    let keeps: Vec<&str> = out.lines().filter(|l| l.starts_with("keep ")).collect();
    assert_eq!(keeps.len(), 2, "{out}");
    assert!(
        keeps[0].contains(&names[10]) && keeps[1].contains(&names[11]),
        "{out}"
    );
    assert!(out.contains("--json lists each version"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("requests: ")),
        "{out}"
    );

    let dry = v
        .run(&[&policy[..], &["--dry-run", "--json"]].concat())
        .ok()
        .json();
    assert_eq!(array(dry["plan"].clone()).len(), 12, "{dry}");
    assert!(dry["requests"]["list"].as_u64() >= Some(1), "{dry}");
    assert_eq!(
        dry["requests"]["delete"], 0,
        "a dry run deletes nothing: {dry}"
    );
    let done = v.run(&[&policy[..], &["--json"]].concat()).ok().json();
    assert_eq!(array(done["removed"].clone()).len(), 10, "{done}");
    assert!(done["requests"]["delete"].as_u64() >= Some(10), "{done}");
    assert_eq!(v.versions("hourly"), &names[10..]);
}

/// prune keeps the version the current pointer names, whatever the policy: it may lag the
/// newest by time (an older pointer object put back here by hand; a backup whose pointer
/// write failed; a ZFS snapshot recorded after a newer one, in `zfs.rs`), and removing it
/// could remove the newest data. (`forget` moves the pointer off a version it removes.)
#[test]
fn prune_keeps_the_version_the_current_pointer_names() {
    let v = Vault::new();
    let h = history(&v, "db", &["2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z"]);
    let pointer = v.repo.join("current").join("db");
    let old_pointer = fs::read(&pointer).unwrap();
    let src = v.path("db-2.img");
    write_random_file(&src, 1002, 10 * MIB);
    let third = text(
        &v.backup("db", &[s(&src), "--time", "2026-02-03T00:00:00Z"]),
        "version",
    )
    .to_string();
    fs::write(&pointer, &old_pointer).unwrap();
    assert_eq!(current_of(&v, "db"), h[1].0);

    let plan = plan_rows(v.run(&["prune", "--json", "--name", "db", "--keep-last", "1"]));
    let removed: Vec<&str> = plan
        .iter()
        .filter(|(_, a, _)| a == "remove")
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert_eq!(removed, [h[0].0.as_str()]);
    let kept = plan
        .iter()
        .find(|(n, _, _)| *n == h[1].0)
        .expect("the current version is in the plan");
    assert_eq!(kept.2, ["current version"], "{plan:?}");
    assert_eq!(v.versions("db"), [h[1].0.clone(), third]);
    assert_eq!(current_of(&v, "db"), h[1].0);
    v.run(&["check"]).ok();
}

#[test]
fn forget_removes_one_version_and_moves_the_pointer() {
    let v = Vault::new();
    let h = history(
        &v,
        "vm7",
        &[
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-03-03T00:00:00Z",
        ],
    );
    let names: Vec<String> = h.iter().map(|(n, _)| n.clone()).collect();
    // A prefix is not enough to remove something; an unknown version names what exists.
    let prefix = &names[1][..12];
    v.run(&["forget", "--name", "vm7", "--version", prefix])
        .error(1, &["prefix", &names[1]]);
    v.run(&["forget", "--name", "vm7", "--version", "2027-01-01T000000Z"])
        .error(1, &["no version", &names[0]]);
    assert_eq!(v.versions("vm7"), names);

    // The middle one: the pointer stays.
    let out = v
        .run(&["forget", "--name", "vm7", "--version", &names[1]])
        .ok()
        .stdout_text();
    assert!(
        out.contains(&format!("removed version {}", names[1])) && out.contains(" DELETE"),
        "{out}"
    );
    assert_eq!(v.versions("vm7"), [names[0].clone(), names[2].clone()]);
    assert_eq!(current_of(&v, "vm7"), names[2]);
    // The current one: the pointer moves to the newest remaining version.
    let j = v
        .run(&["forget", "--json", "--name", "vm7", "--version", &names[2]])
        .ok()
        .json();
    assert_eq!(j["current_moved_to"], names[0].as_str());
    assert!(j["requests"]["delete"].as_u64() >= Some(1), "{j}");
    assert_eq!(current_of(&v, "vm7"), names[0]);
    restores_bit_exact(&v, "vm7", &names[0], &h[0].1);
    v.run(&["check", "--read-data"]).ok();
    // The last one: the series and its pointer are gone.
    v.run(&["forget", "--name", "vm7", "--version", &names[0]])
        .ok();
    assert!(v.list().is_empty());
    assert!(!v.repo.join("current").join("vm7").exists());
    v.run(&["check"]).ok();
}

#[test]
fn prune_needs_a_policy_and_prints_its_seed() {
    let v = Vault::new();
    let h = history(
        &v,
        "s",
        &[
            "2026-04-01T00:00:00Z",
            "2026-04-02T00:00:00Z",
            "2026-04-02T01:00:00Z",
            "2026-04-03T00:00:00Z",
            "2026-04-04T00:00:00Z",
        ],
    );
    v.run(&["prune", "--name", "s"])
        .error(2, &["no retention policy"]);
    v.run(&["prune", "--name", "s", "--keep-last", "0"])
        .error(2, &["no retention policy"]);
    assert_eq!(v.run(&["prune", "--name", "s", "--seed", "1"]).code, 2);
    assert_eq!(
        v.run(&["prune", "--name", "s", "--keep-weighted", "1"])
            .code,
        2
    );
    v.run(&["prune", "--name", "nope", "--keep-last", "1"])
        .error(1, &["nope", "not found"]);

    // Without --seed a seed is chosen and printed; passing it back repeats the plan.
    let out = v
        .run(&["prune", "--name", "s", "--keep-weighted", "3", "--dry-run"])
        .ok()
        .stdout_text();
    let seed = out
        .split("--seed ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no seed printed:\n{out}"))
        .to_string();
    let again = v
        .run(&[
            "prune",
            "--name",
            "s",
            "--keep-weighted",
            "3",
            "--dry-run",
            "--seed",
            &seed,
        ])
        .ok()
        .stdout_text();
    let plan_lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("keep") || l.starts_with("remove"))
            .map(String::from)
            .collect()
    };
    assert_eq!(plan_lines(&out), plan_lines(&again));
    // Without --seed, the seed comes from the stored versions: a dry run and the real run
    // after it make the same plan, and --json says which seed and whether anything went.
    let weighted = ["prune", "--json", "--name", "s", "--keep-weighted", "3"];
    let dry = v.run(&[&weighted[..], &["--dry-run"]].concat()).ok().json();
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(dry["seed"].to_string(), seed, "{dry}");
    assert_eq!(array(dry["removed"].clone()).len(), 0, "{dry}");
    let real = v.run(&weighted);
    let real_json = real.json();
    assert_eq!(real_json["dry_run"], false, "{real_json}");
    assert_eq!(
        real_json["plan"], dry["plan"],
        "the real run followed another plan"
    );
    let gone: Vec<String> = array(real_json["removed"].clone())
        .iter()
        .map(|x| x.as_str().expect("a version name").to_string())
        .collect();
    let plan = plan_rows(real);
    let planned: Vec<String> = plan
        .iter()
        .filter(|(_, a, _)| a == "remove")
        .map(|(n, _, _)| n.clone())
        .collect();
    assert_eq!(gone, planned);
    // The hour-apart pair is by far the densest gap: its newer half goes first.
    let removed: Vec<&(String, String, Vec<String>)> =
        plan.iter().filter(|(_, a, _)| a == "remove").collect();
    assert_eq!(removed.len(), 2, "{plan:?}");
    assert!(removed[0].2[0].starts_with("weighted: removed"), "{plan:?}");
    assert_eq!(v.versions("s").len(), 3);
    assert_eq!(v.versions("s")[0], h[0].0, "never the oldest");
    assert_eq!(v.versions("s")[2], h[4].0, "never the newest");
}

/// One problem of `check --json`.
fn problems(run: &Run) -> Vec<Value> {
    array(run.json()["problems"].clone())
}

#[track_caller]
fn ranges(p: &Value) -> Vec<(u64, u64)> {
    p["ranges"]
        .as_array()
        .expect("ranges is an array")
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect()
}

/// check names a deleted chunk, a flipped byte in a chunk (only with --read-data) and a
/// truncated manifest: the object, the series, the version and the byte ranges, exit 3. The
/// byte ranges are checked against an oracle (the chunk that only the second version has
/// covers its bytes 4..8 MiB) and against what restore reports for the same damage.
#[test]
fn check_finds_and_names_damage() {
    let v = Vault::new();
    let src1 = v.path("one.img");
    write_random_file(&src1, 1, 10 * MIB);
    let v1 = text(
        &v.backup("vm101", &[s(&src1), "--time", "2026-05-01T00:00:00Z"]),
        "version",
    )
    .to_string();
    let v1_chunks: BTreeSet<PathBuf> = v.chunk_objects().into_iter().collect();
    assert_eq!(v1_chunks.len(), 3);
    // The second version differs only inside its second chunk (bytes 4..8 MiB).
    let src2 = v.path("two.img");
    fs::copy(&src1, &src2).unwrap();
    scribble(&src2, 5 * MIB, 4096, 9);
    let v2 = text(
        &v.backup("vm101", &[s(&src2), "--time", "2026-05-02T00:00:00Z"]),
        "version",
    )
    .to_string();
    let only_v2: Vec<PathBuf> = v
        .chunk_objects()
        .into_iter()
        .filter(|p| !v1_chunks.contains(p))
        .collect();
    assert_eq!(only_v2.len(), 1);
    let name_of = |p: &PathBuf| v.object_name(p);

    // Healthy.
    let ok = v.run(&["check", "--json"]).ok().json();
    assert_eq!(n(&ok, "versions"), 2);
    assert_eq!(n(&ok, "chunks_referenced"), 4);
    assert_eq!(n(&ok, "chunks_missing"), 0);
    let ok = v.run(&["check", "--read-data", "--json"]).ok().json();
    assert_eq!(n(&ok, "chunks_read"), 4);
    let text_out = v.run(&["check"]).ok().stdout_text();
    assert!(text_out.contains("no damage found"), "{text_out}");

    // 1. A deleted chunk.
    let victim = &only_v2[0];
    let victim_name = name_of(victim);
    let good = fs::read(victim).unwrap();
    fs::remove_file(victim).unwrap();
    let r = v.run(&["check", "--json"]).code(3);
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(text(&p[0], "kind"), "chunk_missing");
    assert_eq!(text(&p[0], "object"), victim_name);
    assert_eq!(text(&p[0], "series"), "vm101");
    assert_eq!(text(&p[0], "version"), v2);
    assert_eq!(ranges(&p[0]), [(4 * MIB, 8 * MIB)]);
    assert_eq!(
        r.json()["damaged_versions"],
        serde_json::json!([format!("vm101 {v2}")])
    );
    // In text: the report on stdout, one error line naming the damaged version.
    let r = v
        .run(&["check"])
        .error(3, &["damaged", &format!("vm101 {v2}")]);
    let out = r.stdout_text();
    assert!(
        out.contains(&format!(
            "DAMAGED {victim_name} (series \"vm101\" version {v2}, bytes 4194304..8388608)"
        )),
        "{out}"
    );
    fs::write(victim, &good).unwrap();
    v.run(&["check"]).ok();

    // 2. A flipped byte in a chunk: invisible to the structure check, found by --read-data.
    let victim = v1_chunks.iter().next().unwrap();
    let victim_name = name_of(victim);
    let good = fs::read(victim).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    fs::write(victim, &bad).unwrap();
    v.run(&["check"]).ok();
    let r = v.run(&["check", "--read-data", "--json"]).code(3);
    let p = problems(&r);
    assert!(!p.is_empty());
    let mut versions_named = BTreeSet::new();
    for p in &p {
        assert_eq!(text(p, "kind"), "chunk_damaged");
        assert_eq!(text(p, "object"), victim_name);
        assert_eq!(text(p, "series"), "vm101");
        assert!(text(p, "reason").contains("authentication failed"), "{p}");
        let version = text(p, "version").to_string();
        // Restore reports the same object and the same byte range for the same damage.
        let rs = ranges(p);
        assert_eq!(rs.len(), 1, "{p}");
        let (a, b) = rs[0];
        assert_eq!(a % CHUNK, 0);
        let out = v.path("out.img");
        v.run(&["restore", "--name", "vm101", "--version", &version, s(&out)])
            .error(3, &[&victim_name, &format!("bytes {a}..{b}")]);
        versions_named.insert(version);
    }
    let json = r.json();
    let damaged: Vec<String> = array(json["damaged_versions"].clone())
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        damaged,
        versions_named
            .iter()
            .map(|x| format!("vm101 {x}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(n(&json, "chunks_damaged"), 1);
    fs::write(victim, &good).unwrap();
    v.run(&["check", "--read-data"]).ok();

    // 3. A truncated manifest: that version is damaged, the other is not.
    let manifest = v.manifest_object("vm101", &v1);
    let whole = fs::read(&manifest).unwrap();
    fs::write(&manifest, &whole[..whole.len() / 2]).unwrap();
    let r = v.run(&["check", "--json"]).code(3);
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(text(&p[0], "kind"), "manifest");
    assert_eq!(text(&p[0], "object"), format!("manifests/vm101/{v1}"));
    assert_eq!(text(&p[0], "version"), v1);
    assert_eq!(
        r.json()["damaged_versions"],
        serde_json::json!([format!("vm101 {v1}")])
    );
    v.run(&["check"]).error(3, &[&format!("vm101 {v1}")]);
    fs::write(&manifest, &whole).unwrap();

    // 4. A current pointer naming a version that is gone.
    fs::remove_file(v.manifest_object("vm101", &v2)).unwrap();
    let r = v.run(&["check", "--json"]).code(3);
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(text(&p[0], "kind"), "current");
    assert_eq!(text(&p[0], "object"), "current/vm101");
    assert!(text(&p[0], "reason").contains(&v2), "{p:?}");

    // A subset: the seed picks the chunks, so the same seed reads the same number.
    let a = v
        .run(&[
            "check",
            "--read-data",
            "--subset",
            "50%",
            "--seed",
            "5",
            "--json",
        ])
        .code(3)
        .json();
    assert_eq!(n(&a, "seed"), 5);
    assert_eq!(n(&a, "chunks_read"), 2, "half of v1's 3 chunks, rounded up");
}

/// A version whose manifest is damaged is still planned for (by the time in its name), with a
/// warning naming it, and can be pruned; the healthy versions are untouched.
#[test]
fn prune_plans_for_a_damaged_version_by_its_name() {
    let v = Vault::new();
    let h = history(&v, "d", &["2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"]);
    let manifest = v.manifest_object("d", &h[0].0);
    let whole = fs::read(&manifest).unwrap();
    fs::write(&manifest, &whole[..whole.len() - 3]).unwrap();
    let r = v
        .run(&[
            "prune",
            "--json",
            "--name",
            "d",
            "--keep-daily",
            "5",
            "--dry-run",
        ])
        .ok();
    assert!(
        r.stderr.contains(&format!("manifests/d/{}", h[0].0)),
        "{}",
        r.stderr
    );
    let plan = plan_rows(r);
    assert_eq!(plan[0].0, h[0].0);
    assert_eq!(plan[0].2, ["daily 2026-06-01"]);
    v.run(&["prune", "--name", "d", "--keep-last", "1"]).ok();
    assert_eq!(v.versions("d"), [h[1].0.clone()]);
    restores_bit_exact(&v, "d", &h[1].0, &h[1].1);
    v.run(&["check", "--read-data"]).ok();
}

/// A job with weighted thinning: its dry run shows the versions the real run then removes.
/// Both take the seed from the versions stored before the run (the real run's own new
/// version left out), where each used to draw a random seed and remove others.
#[test]
fn a_weighted_job_removes_what_its_dry_run_showed() {
    let v = Vault::new();
    let times: Vec<String> = (1..=9)
        .map(|d| format!("2026-0{}-0{}T00:00:00Z", 1 + d % 3, d))
        .collect();
    let times: Vec<&str> = times.iter().map(String::as_str).collect();
    let mut times = times;
    times.sort();
    history(&v, "w", &times);
    let src = v.path("w-now.img");
    write_random_file(&src, 77, MIB);
    let config = crate::jobs::job_file(
        &v,
        &format!(
            "[[job]]\nname = \"w\"\nsource = {{ file = {:?} }}\nkeep = {{ weighted = 4 }}\n",
            s(&src)
        ),
    );
    let dry = crate::jobs::run_jobs(&config, &["--dry-run", "--force"])
        .ok()
        .json();
    let dry = &crate::jobs::job(&dry, "w")["prune"];
    let planned = array(dry["removed"].clone());
    assert_eq!(
        planned.len(),
        6,
        "9 stored and this run's, thinned to 4: {dry}"
    );
    let real = crate::jobs::run_jobs(&config, &["--force"]).ok().json();
    let real = &crate::jobs::job(&real, "w")["prune"];
    assert_eq!(real["seed"], dry["seed"], "{real}");
    assert_eq!(
        real["removed"], dry["removed"],
        "the real run removed others"
    );
    assert_eq!(v.versions("w").len(), 4);
}

/// Backups every other day, under a Tower-of-Hanoi rotation with a period of one day, all
/// land on one disc: the rotation would keep only the newest. prune refuses, says why and
/// how to set the period, and removes nothing; with the period set to two days it rotates.
#[test]
fn a_hanoi_period_that_skips_discs_is_refused() {
    let v = Vault::new();
    let times: Vec<String> = (0..6)
        .map(|i| format!("2026-01-{:02}T03:00:00Z", 1 + 2 * i))
        .collect();
    let times: Vec<&str> = times.iter().map(String::as_str).collect();
    history(&v, "vm", &times);
    v.run(&["prune", "--name", "vm", "--hanoi", "5"]).error(
        1,
        &["fall on disc 0", "--hanoi-every", "nothing was removed"],
    );
    assert_eq!(v.versions("vm").len(), 6);
    let plan = plan_rows(v.run(&[
        "prune",
        "--json",
        "--name",
        "vm",
        "--hanoi",
        "3",
        "--hanoi-every",
        "2d",
        "--dry-run",
    ]));
    // Periods of two days from the epoch: the 5th, 9th and 11th each hold a disc.
    let kept: Vec<&str> = plan
        .iter()
        .filter(|(_, a, _)| a == "keep")
        .map(|(n, _, _)| n.as_str())
        .collect();
    assert_eq!(
        kept,
        [
            "2026-01-05T030000Z",
            "2026-01-09T030000Z",
            "2026-01-11T030000Z"
        ],
        "{plan:?}"
    );
}

/// Issue 7: check's memory follows the distinct chunks, not the chunk references of every
/// version. Eight versions of a sparse 4 GiB image at 64 KiB chunks name 65,536 chunks each,
/// some 2.7 MB of chunk list per manifest in memory. A check that kept every manifest until
/// the end (as it did) peaked 19–21 MB above the same check of the first version alone; one
/// that keeps only each manifest's distinct chunks stays within 3 MB of it. `--in-flight 1`
/// reads one manifest at a time, so the bound does not depend on how many overlap.
#[test]
fn check_memory_does_not_grow_with_the_versions_it_reads() {
    const BLOCK: usize = 64 << 10;
    let v = key_file_vault();
    let img = v.path("sparse.img");
    fs::File::create(&img).unwrap().set_len(4 << 30).unwrap();
    let peak = || {
        let r = key_file_run(&v, None, &["check", "--json", "--in-flight", "1"])
            .ok()
            .json();
        (n(&r, "peak_rss_bytes"), n(&r, "versions"))
    };
    // Each version changes one block somewhere else, so each has a chunk of its own.
    let backup = |i: u64| {
        scribble(&img, i * 509 * BLOCK as u64, BLOCK, 70 + i);
        let time = format!("2026-03-{:02}T00:00:00Z", i + 1);
        let args = [
            "backup",
            "--json",
            "--name",
            "big",
            s(&img),
            "--time",
            &time,
        ];
        key_file_run(&v, None, &args).ok();
    };
    backup(0);
    let (one, versions) = peak();
    assert_eq!(versions, 1);
    for i in 1..8 {
        backup(i);
    }
    let (eight, versions) = peak();
    assert_eq!(versions, 8);
    assert!(
        eight < one + 8 * MIB,
        "check of 8 versions peaked at {eight} bytes, {} MiB more than of 1 version ({one}): it holds every manifest",
        (eight.saturating_sub(one)) / MIB
    );
}

/// A bad chunk as check reports it in one version: series, version, object, byte ranges.
type BadRow = (String, String, String, Vec<(u64, u64)>);

/// Bad chunks are mapped back to every version (of every series) that names them, with one
/// range per place each version names them, across many versions read at once or one at a
/// time; versions that do not name them stay clean. The oracle is where the test put the
/// blocks. (check reads manifests twice when something is bad: once for the chunk set, again
/// for byte ranges.)
#[test]
fn check_maps_bad_chunks_to_every_version_and_range() {
    const BLOCK: u64 = 64 << 10;
    let v = key_file_vault();
    let bv = |args: &[&str]| key_file_run(&v, None, args);
    // Backs `data` up as series `name` at `time`: the version's name.
    let backup_at = |name: &str, file: &str, data: &[u8], time: &str| {
        let src = v.path(file);
        fs::write(&src, data).unwrap();
        let r = bv(&["backup", "--json", "--name", name, s(&src), "--time", time]).ok();
        text(&r.json(), "version").to_string()
    };
    let block = |seed: u64| random_bytes(seed, BLOCK as usize);
    let (a, b, c) = (block(1), block(2), block(3));
    // Objects are named by keyed hashes, so each chunk's object is found as the one a backup
    // of that chunk alone adds; those backups make the series "probe", which shares them.
    let mut probe_versions = Vec::new();
    let mut objects = Vec::new();
    for (i, data) in [&a, &b, &c].into_iter().enumerate() {
        let before: BTreeSet<PathBuf> = v.chunk_objects().into_iter().collect();
        let time = format!("2026-04-0{}T00:00:00Z", i + 1);
        probe_versions.push(backup_at("probe", &format!("probe{i}.img"), data, &time));
        let new: Vec<PathBuf> = v
            .chunk_objects()
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(new.len(), 1, "{new:?}");
        objects.push(new[0].clone());
    }
    let name_of = |p: &PathBuf| v.object_name(p);
    let names: Vec<String> = objects.iter().map(name_of).collect();
    // Where versions of "img" (16 blocks each, the rest shared filler) put A (0), B (1), C (2).
    let layouts: [&[(usize, u64)]; 5] = [
        &[(0, 0)],
        &[(0, 3), (1, 5)],
        &[(0, 3), (0, 9), (1, 5), (1, 6)],
        &[(2, 15)],
        &[],
    ];
    let pieces = [&a, &b, &c];
    let mut img_versions = Vec::new();
    for (i, layout) in layouts.iter().enumerate() {
        let mut data: Vec<u8> = (0..16).flat_map(|j| block(100 + j)).collect();
        for &(which, at) in *layout {
            let at = (at * BLOCK) as usize;
            data[at..at + BLOCK as usize].copy_from_slice(pieces[which]);
        }
        let time = format!("2026-05-0{}T00:00:00Z", i + 1);
        img_versions.push(backup_at("img", &format!("img{i}.img"), &data, &time));
    }
    // What check must report for the chunks in `bad`: (series, version, object, ranges).
    let expected = |bad: &[usize]| {
        let mut rows = BTreeSet::new();
        for &which in bad {
            rows.insert((
                "probe".to_string(),
                probe_versions[which].clone(),
                names[which].clone(),
                vec![(0, BLOCK)],
            ));
            for (i, layout) in layouts.iter().enumerate() {
                let ranges: Vec<(u64, u64)> = layout
                    .iter()
                    .filter(|(w, _)| *w == which)
                    .map(|(_, at)| (at * BLOCK, (at + 1) * BLOCK))
                    .collect();
                if !ranges.is_empty() {
                    rows.insert((
                        "img".to_string(),
                        img_versions[i].clone(),
                        names[which].clone(),
                        ranges,
                    ));
                }
            }
        }
        rows
    };
    let reported = |r: &Run, kind: &str| {
        let mut rows = BTreeSet::new();
        for p in problems(r) {
            assert_eq!(text(&p, "kind"), kind, "{p}");
            rows.insert((
                text(&p, "series").to_string(),
                text(&p, "version").to_string(),
                text(&p, "object").to_string(),
                ranges(&p),
            ));
        }
        rows
    };
    let damaged_versions = |r: &Run, rows: &BTreeSet<BadRow>| {
        let listed: Vec<String> = array(r.json()["damaged_versions"].clone())
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = rows.iter().map(|(s, v, _, _)| format!("{s} {v}")).collect();
        assert_eq!(listed, want.into_iter().collect::<Vec<_>>());
    };

    // A and B lost: found by the structure check.
    let saved: Vec<Vec<u8>> = objects.iter().map(|p| fs::read(p).unwrap()).collect();
    fs::remove_file(&objects[0]).unwrap();
    fs::remove_file(&objects[1]).unwrap();
    let one_at_a_time = bv(&["check", "--json", "--in-flight", "1"]).code(3);
    let many_at_once = bv(&["check", "--json", "--in-flight", "8"]).code(3);
    let want = expected(&[0, 1]);
    assert_eq!(reported(&one_at_a_time, "chunk_missing"), want);
    damaged_versions(&one_at_a_time, &want);
    assert_eq!(
        problems(&one_at_a_time),
        problems(&many_at_once),
        "the same problems in the same order however many manifests are read at once"
    );
    // Scoped to one series, only its versions are named.
    let scoped = bv(&["check", "--json", "--name", "img"]).code(3);
    let want_img: BTreeSet<_> = want.iter().filter(|r| r.0 == "img").cloned().collect();
    assert_eq!(reported(&scoped, "chunk_missing"), want_img);
    fs::write(&objects[0], &saved[0]).unwrap();
    fs::write(&objects[1], &saved[1]).unwrap();

    // C damaged: found by --read-data, in the probe version and the one image version.
    let mut bad = saved[2].clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    fs::write(&objects[2], &bad).unwrap();
    bv(&["check"]).ok();
    let r = bv(&["check", "--json", "--read-data"]).code(3);
    let want = expected(&[2]);
    assert_eq!(reported(&r, "chunk_damaged"), want);
    damaged_versions(&r, &want);
    assert_eq!(n(&r.json(), "chunks_damaged"), 1);
    fs::write(&objects[2], &saved[2]).unwrap();
    bv(&["check", "--read-data"]).ok();
}
