//! What the command line accepts and what it refuses: repositories that refuse writes (read
//! only media, a directory the user may not write, read-only S3 credentials), values that are
//! wrong on their face (exit 2, nothing created), and series names.

use crate::s3_servers::{block_on, garage};
use crate::util::*;
use blockvault::keys::Secret;
use blockvault::repo::Repo;
use blockvault::store::LocalDir;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The uid and gid of `nobody`. The read-only tests are run as root and become `nobody` to
/// meet a repository they may not write; as anyone else they would prove nothing, so they
/// fail here instead.
fn nobody() -> (u32, u32) {
    assert_eq!(
        tool("id", &["-u"]).trim(),
        "0",
        "this test must run as root: it drops to the user nobody to meet a repository that refuses writes"
    );
    let id = |flag: &str| -> u32 {
        let out = tool("id", &[flag, "nobody"]);
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("`id {flag} nobody` said {out:?}: {e}"))
    };
    (id("-u"), id("-g"))
}

/// `cmd` run as nobody.
fn as_nobody(cmd: &mut Command) -> Run {
    let (uid, gid) = nobody();
    cmd.uid(uid).gid(gid);
    run(cmd, None)
}

/// Makes `v`'s repository belong to nobody and lose every write permission, as a user
/// reports it (`chown -R nobody ro; chmod -R a-w ro`); nobody may use the scratch directory.
/// Then proves that nobody can read the repository and cannot write it.
fn make_read_only_for_nobody(v: &Vault) {
    let repo = s(&v.repo);
    tool("chmod", &["0755", s(v.root.path())]);
    tool("chown", &["-R", "nobody", repo]);
    tool("chmod", &["-R", "a-w", repo]);
    tool("chown", &["-R", "nobody", s(&v.work)]);
    let probe = as_nobody(Command::new("sh").args([
        "-c",
        "cat \"$1/config\" >/dev/null && ! touch \"$1/locks-probe\" 2>/dev/null && ! mkdir \"$1/locks/x\" 2>/dev/null",
        "sh",
        repo,
    ]));
    assert_eq!(
        probe.code, 0,
        "as nobody the repository should be readable and refuse writes: {}",
        probe.stderr
    );
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect()
}

/// Regression: restore and check of a repository its user may not write failed with
/// `error: locks/67d3… in local directory ../ro: Permission denied (os error 13)`, so a copy
/// on read-only media could not be restored. Now they go on without a lock, saying once why
/// and what it risks; the commands that write still fail, saying they were taking a lock.
#[test]
fn a_repository_that_refuses_writes_is_restored_and_checked_without_a_lock() {
    let v = Vault::new();
    let src = v.path("disk.img");
    write_random_file(&src, 31, 3 * MIB);
    let first = text(
        &v.backup("disk", &[s(&src), "--time", "2026-01-01T00:00:00Z"]),
        "version",
    )
    .to_string();
    v.backup("disk", &[s(&src), "--time", "2026-01-02T00:00:00Z"]);
    make_read_only_for_nobody(&v);

    let out = v.path("restored.img");
    let r = as_nobody(&mut v.cmd(&["restore", "--name", "disk", s(&out)])).ok();
    assert_same_contents(&src, &out);
    let w = warnings(&r.stderr);
    assert_eq!(w.len(), 1, "one warning, got:\n{}", r.stderr);
    for needle in [
        "without a lock",
        "refuses writes",
        "Permission denied",
        "gc run meanwhile",
        "could delete chunks",
    ] {
        assert!(
            w[0].contains(needle),
            "the warning should say {needle:?}: {}",
            w[0]
        );
    }
    let salvaged = v.path("salvaged.img");
    as_nobody(&mut v.cmd(&["restore", "--name", "disk", "--allow-damage", s(&salvaged)])).ok();
    assert_same_contents(&src, &salvaged);
    for args in [&["check"][..], &["check", "--read-data"][..]] {
        let r = as_nobody(&mut v.cmd(args)).ok();
        assert_eq!(warnings(&r.stderr).len(), 1, "{args:?}:\n{}", r.stderr);
        assert!(
            r.stdout_text().contains("checked 1 series, 2 versions"),
            "{}",
            r.stdout_text()
        );
    }
    as_nobody(&mut v.cmd(&["list"])).ok();

    // Everything that writes fails as before, and says what it was doing.
    as_nobody(&mut v.cmd(&["backup", "--name", "disk", s(&src)])).error(
        1,
        &[
            "taking a shared lock for backup of disk",
            "Permission denied",
        ],
    );
    as_nobody(&mut v.cmd(&["gc"])).error(
        1,
        &["taking the exclusive lock for gc", "Permission denied"],
    );
    as_nobody(&mut v.cmd(&["prune", "--name", "disk", "--keep-last", "1"])).error(
        1,
        &[
            "taking a shared lock for prune of disk",
            "Permission denied",
        ],
    );
    as_nobody(&mut v.cmd(&["forget", "--name", "disk", "--version", &first])).error(
        1,
        &[
            "taking a shared lock for forget of disk",
            "Permission denied",
        ],
    );
    let pass = v.path("new-pass");
    fs::write(&pass, "another passphrase\n").expect("writing a password file");
    as_nobody(&mut v.cmd(&["key", "add", "--new-password-file", s(&pass)]))
        .error(1, &["Permission denied"]);
    assert_eq!(v.versions("disk").len(), 2);

    // Disaster recovery proper: a damaged chunk on the read-only copy is reported as damage
    // (exit 3), and --allow-damage still writes what can be verified.
    let chunk = &v.chunk_objects()[0];
    scribble(chunk, 100, 16, 7);
    as_nobody(&mut v.cmd(&["check", "--read-data"])).code(3);
    let partial = v.path("partial.img");
    let r = as_nobody(&mut v.cmd(&["restore", "--name", "disk", "--allow-damage", s(&partial)]))
        .code(3);
    assert!(r.stderr.contains("damaged"), "{}", r.stderr);
    assert_eq!(fs::metadata(&partial).map(|m| m.len()).ok(), Some(3 * MIB));
}

/// The same on S3, with credentials that may read the bucket and not write it: the lock's
/// write is answered AccessDenied.
#[test]
fn read_only_s3_credentials_restore_and_check_without_a_lock() {
    let server = garage();
    let (v, _) = server.vault("read-only");
    v.run(&["init"]).ok();
    let src = v.path("disk.img");
    write_random_file(&src, 32, 2 * MIB);
    v.backup("disk", &[s(&src)]);
    let (id, secret) = server.read_only_key();
    let read_only = |args: &[&str]| {
        let mut c = v.cmd(args);
        c.env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret);
        run(&mut c, None)
    };
    let out = v.path("restored.img");
    let r = read_only(&["restore", "--name", "disk", s(&out)]).ok();
    assert_same_contents(&src, &out);
    let w = warnings(&r.stderr);
    assert_eq!(w.len(), 1, "{}", r.stderr);
    assert!(
        w[0].contains("without a lock") && w[0].contains("access denied"),
        "{}",
        w[0]
    );
    let r = read_only(&["check", "--read-data"]).ok();
    assert_eq!(warnings(&r.stderr).len(), 1, "{}", r.stderr);
    read_only(&["backup", "--name", "disk", s(&src)]).error(
        1,
        &["taking a shared lock for backup of disk", "access denied"],
    );
}

/// Regression: `init --repo ''` (or `BLOCKVAULT_REPO=`) took the empty path for the current
/// directory, failed with a blank path in its message, exited 1 and left `keys/` behind.
#[test]
fn an_empty_repository_is_a_usage_error_and_creates_nothing() {
    let v = Vault::uninitialised();
    let mut typed = blockvault();
    typed.args(["init", "--repo", ""]).current_dir(&v.work);
    let mut env = blockvault();
    env.arg("init")
        .env("BLOCKVAULT_REPO", "")
        .current_dir(&v.work);
    let mut blank = blockvault();
    blank.args(["list", "--repo", "  "]).current_dir(&v.work);
    for mut cmd in [typed, env, blank] {
        let r = run(&mut cmd, None).code(2);
        assert!(
            r.stderr.starts_with("error: ") && r.stderr.contains("the repository is empty"),
            "{}",
            r.stderr
        );
        assert_eq!(dir_names(&v.work), Vec::<String>::new(), "{}", r.what);
    }
    // A URL that is not s3:// (or s3:// in capitals) was taken as a relative directory:
    // `init` created `S3:` in the working directory and reported success.
    for (repo, says) in [
        ("S3://bucket/p", "written s3:// (lower case)"),
        ("https://bucket.example/p", "not https://"),
    ] {
        let mut cmd = blockvault();
        cmd.args(["init", "--repo", repo]).current_dir(&v.work);
        let r = run(&mut cmd, None).code(2);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert_eq!(dir_names(&v.work), Vec::<String>::new(), "{repo}");
    }
}

/// Regression: these exited 1 while README says a command line that is not understood exits
/// 2 (as `--keep-weighted 0` and `--timeout 0s` already did), and `init --compression 0`
/// left an empty repository directory behind.
#[test]
fn values_wrong_on_their_face_exit_2_and_create_nothing() {
    let v = Vault::uninitialised();
    let repo = s(&v.repo);
    for (args, says) in [
        (
            &["init", "--repo", repo, "--compression", "0"][..],
            "--compression",
        ),
        (
            &["init", "--repo", repo, "--compression", "20"][..],
            "--compression",
        ),
        (
            &["init", "--repo", repo, "--chunk-size", "1000"][..],
            "must be a multiple of 4 KiB",
        ),
        (
            &["prune", "--repo", repo, "--name", "x"][..],
            "no retention policy",
        ),
        (
            &["prune", "--repo", repo, "--name", "x", "--keep-last", "0"][..],
            "no retention policy",
        ),
        (&["list"][..], "no repository given"),
        (
            &["gc", "--repo", repo, "--in-flight", "0"][..],
            "must be at least 1",
        ),
        (
            &["key", "export", "--repo", repo, "--json"][..],
            "no --json form",
        ),
        // S3: refused before any request, where they were "unreachable after 10 tries".
        (&["list", "--repo", "s3://"][..], "names no bucket"),
        (&["list", "--repo", "s3:///p"][..], "names no bucket"),
        (
            &[
                "list",
                "--repo",
                "s3://b/p",
                "--s3-endpoint",
                "127.0.0.1:3900",
            ][..],
            "needs http:// or https://",
        ),
        (
            &["list", "--repo", "s3://b/p", "--s3-endpoint", ""][..],
            "needs http:// or https://",
        ),
        (
            &["list", "--repo", "s3://b/p", "--s3-endpoint", "ftp://h:1"][..],
            "needs http:// or https://",
        ),
        (
            &[
                "list",
                "--repo",
                "s3://b/p",
                "--s3-endpoint",
                "http://:3900",
            ][..],
            "names no host",
        ),
        (
            &[
                "backup",
                "--repo",
                "s3://b/p",
                "--name",
                "x",
                "--storage-class",
                "bogus",
                "-",
            ][..],
            "unknown storage class",
        ),
    ] {
        let r = run(blockvault().args(args).current_dir(&v.work), None).code(2);
        let first = r.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: ") && first.contains(says),
            "`{}` should say {says:?}: {}",
            r.what,
            r.stderr
        );
        assert!(!v.repo.exists(), "`{}` created {repo}", r.what);
        assert_eq!(dir_names(&v.work), Vec::<String>::new(), "{}", r.what);
    }
}

/// An endpoint URL with credentials or a token in it is refused without printing them.
#[test]
fn an_endpoint_holding_secrets_is_refused_unprinted() {
    for endpoint in [
        "http://user:SECRETPW@127.0.0.1:3900",
        "https://127.0.0.1:3900/?token=SECRETTOK",
        "user:SECRETPW@127.0.0.1:3900",
    ] {
        let r = run(
            blockvault().args(["list", "--repo", "s3://b/p", "--s3-endpoint", endpoint]),
            None,
        )
        .code(2);
        let leaks = |t: &str| t.contains("SECRETPW") || t.contains("SECRETTOK");
        assert!(!leaks(&r.stderr), "{}", r.stderr);
        let mut c = blockvault();
        c.args(["list", "--repo", "s3://b/p"])
            .env("AWS_ENDPOINT_URL", endpoint);
        let r = run(&mut c, None).code(2);
        assert!(
            r.stderr.contains("AWS_ENDPOINT_URL") && !leaks(&r.stderr),
            "{}",
            r.stderr
        );
    }
}

/// A failed init leaves nothing that makes the next one say "already exists": here it has
/// no passphrase to seal the key with.
#[test]
fn an_init_that_fails_leaves_no_directory() {
    let v = Vault::uninitialised();
    let r = run(
        blockvault()
            .env_remove("BLOCKVAULT_PASSWORD")
            .args(["init", "--repo", s(&v.repo)]),
        None,
    );
    r.error(1, &["no passphrase"]);
    assert!(
        !v.repo.exists(),
        "the failed init left {}",
        v.repo.display()
    );
    v.run(&["init"]).ok();
}

/// Regression: `" "`, `"a/"`, `"a//b"`, `".."` and `"/abs"` were accepted as series names
/// (`" "` then showed as a blank cell in `list`). New backups and jobs refuse them, saying
/// what a name may be; a series that an older blockvault stored under such a name stays
/// readable: list, show, restore and check of it work as before.
#[test]
fn odd_series_names_are_refused_for_new_backups_and_stay_readable() {
    let v = Vault::new();
    let src = v.path("disk.img");
    write_random_file(&src, 33, MIB);
    for name in [" ", "a/", "a//b", "..", "/abs", "a/./b", "a/ /b"] {
        v.run(&["backup", "--name", name, s(&src)])
            .error(2, &["series name", "separated by single `/`"]);
    }
    assert!(v.list().is_empty(), "a refused backup recorded a version");
    v.backup("tank/vm-101", &[s(&src)]);
    v.backup("a b", &[s(&src)]);

    let config = v.path("jobs.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nrepo = \"{}\"\n\n[[job]]\nname = \"db/\"\nsource = {{ file = \"{}\" }}\n",
            s(&v.repo),
            s(&src)
        ),
    )
    .expect("writing the job file");
    let r = run(blockvault().args(["run", "--config", s(&config)]), None).code(2);
    assert!(
        r.stderr
            .contains("job \"db/\" (job 1), field `name`: series name \"db/\" has an empty part"),
        "{}",
        r.stderr
    );

    // What an older blockvault wrote: the same version under each odd name.
    let version = v.versions("tank/vm-101").remove(0);
    let odd = [" ", "a//b", "..", "/abs"];
    plant_series(&v.repo, "tank/vm-101", &version, &odd);
    let listed: Vec<String> = v
        .list()
        .iter()
        .map(|r| text(r, "series").to_string())
        .collect();
    for name in odd {
        assert!(
            listed.iter().any(|s| s == name),
            "{name:?} not listed: {listed:?}"
        );
        v.run(&["show", "--name", name]).ok();
        let out = v.path("out.img");
        let _ = fs::remove_file(&out);
        v.restore(name, &[s(&out)]);
        assert_same_contents(&src, &out);
    }
    let r = v.run(&["check", "--read-data"]).ok();
    assert!(
        r.stdout_text().contains("checked 6 series"),
        "{}",
        r.stdout_text()
    );
    v.run(&["prune", "--name", " ", "--keep-last", "1"]).ok();
    v.run(&["forget", "--name", "..", "--version", &version])
        .ok();
    assert!(
        v.versions("..").is_empty(),
        "forget of series \"..\" removed nothing"
    );
}

/// Stores version `version` of `from` again as the current version of each series in `to`,
/// through the library, which (unlike `backup`) does not judge names.
fn plant_series(repo: &Path, from: &str, version: &str, to: &[&str]) {
    block_on(async {
        let store = Arc::new(LocalDir::new(repo));
        let repo = Repo::open(store, || {
            Ok(Secret::Passphrase(Zeroizing::new(PASSWORD.to_string())))
        })
        .await
        .expect("opening the test repository");
        let (m, _) = repo
            .load_manifest(from, version)
            .await
            .expect("loading the manifest");
        for name in to {
            let mut copy = m.clone();
            copy.series = name.to_string();
            let (claim, digest) = repo.save_manifest(&copy).await.expect("storing a manifest");
            assert_eq!(
                claim,
                blockvault::store::Claim::Created,
                "the version name is free in a new series"
            );
            repo.set_current(name, version, digest)
                .await
                .expect("setting a current pointer");
        }
    });
}

/// `--storage-class` means nothing for a local directory: said, not silently dropped.
#[test]
fn a_storage_class_for_a_local_directory_is_said_to_be_ignored() {
    let v = Vault::new();
    let src = v.path("disk.img");
    write_random_file(&src, 2, 100_000);
    let r = v
        .run(&[
            "backup",
            "--name",
            "d",
            "--storage-class",
            "GLACIER",
            s(&src),
        ])
        .ok();
    assert!(
        r.stderr
            .contains("--storage-class GLACIER is for S3 repositories")
            && r.stderr.contains("(ignored)"),
        "{}",
        r.stderr
    );
    let r = v
        .run(&[
            "list",
            "--s3-endpoint",
            "http://127.0.0.1:3900",
            "--s3-region",
            "garage",
        ])
        .ok();
    for option in ["--s3-endpoint", "--s3-region"] {
        assert!(
            r.stderr
                .contains(&format!("{option} is for S3 repositories")),
            "{}",
            r.stderr
        );
    }
    // init says the same of all three.
    let fresh = Vault::uninitialised();
    let r = fresh
        .run(&[
            "init",
            "--storage-class",
            "GLACIER",
            "--s3-endpoint",
            "http://127.0.0.1:3900",
            "--s3-region",
            "garage",
        ])
        .ok();
    for option in ["--storage-class GLACIER", "--s3-endpoint", "--s3-region"] {
        assert!(
            r.stderr
                .contains(&format!("{option} is for S3 repositories")),
            "{}",
            r.stderr
        );
    }
}

/// A version recorded with a `--time` in the future would shadow every real backup until
/// then: the backup warns. One recorded before the current version says it does not become
/// current.
#[test]
fn a_backup_time_in_the_future_or_before_the_current_version_is_said() {
    let v = Vault::new();
    let src = v.path("disk.img");
    write_random_file(&src, 4, 100_000);
    let future = v
        .run(&[
            "backup",
            "--name",
            "d",
            "--time",
            "2099-01-01T00:00:00Z",
            s(&src),
        ])
        .ok();
    assert!(
        future.stderr.contains("is in the future"),
        "{}",
        future.stderr
    );
    let now = v.run(&["backup", "--name", "d", s(&src)]).ok();
    assert!(
        now.stdout_text()
            .contains("older than the series' current version"),
        "{}",
        now.stdout_text()
    );
    let json = v.backup("d", &[s(&src)]);
    assert_eq!(json["current"], false, "{json}");
}

/// Runs `args` with standard output closed before anything is written to it: the exit code
/// and stderr.
fn closed_stdout(v: &Vault, args: &[&str]) -> (Option<i32>, String) {
    let mut child = v
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting blockvault");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waiting for blockvault");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Standard output closed by its reader (`| head`) before a command prints: the command's
/// work stands and its exit code says so. println! panicked there, exit 101, after a backup
/// had been recorded.
#[test]
fn a_closed_standard_output_is_no_failure() {
    let v = Vault::new();
    let src = v.path("a.img");
    write_random_file(&src, 5, 100_000);
    for args in [
        &["backup", "--name", "a", s(&src)][..],
        &["backup", "--json", "--name", "a", s(&src)][..],
        &["list"][..],
        &["show", "--name", "a"][..],
        &["prune", "--json", "--name", "a", "--keep-last", "1"][..],
    ] {
        let (code, stderr) = closed_stdout(&v, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert_eq!(
        v.versions("a").len(),
        1,
        "prune kept one of the two backups"
    );
    // A restore to standard output whose reader goes away is no failure either, but it is
    // said: the reader may have died halfway (`| psql` on an error). (The version's 100,000
    // bytes are more than a pipe holds, so the write does meet the closed end.)
    let (code, stderr) = closed_stdout(&v, &["restore", "--name", "a", "-"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("closed it before the end"), "{stderr}");
    // A write that fails otherwise (a full disk under `> file`) is a failure, not dropped.
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("opening /dev/full");
    let out = v
        .cmd(&["list", "--json"])
        .stdout(full)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("running blockvault");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
}
