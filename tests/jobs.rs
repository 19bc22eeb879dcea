//! `blockvault run --config`: job files with real sources (an image file, a loop device,
//! commands, a PostgreSQL server dumped with `pg_dump` and restored with `pg_restore`), the
//! schedule, retention after each backup, dry runs that write nothing, and job files with
//! mistakes refused before anything runs. ZFS jobs are in `zfs.rs`, beside the pools.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Writes a job file for `v`'s repository: the `[repository]` table, then `jobs`.
pub(crate) fn job_file(v: &Vault, jobs: &str) -> PathBuf {
    let pass = v.path("passphrase");
    fs::write(&pass, format!("{PASSWORD}\n")).expect("writing the passphrase file");
    let path = v.path("blockvault.toml");
    let text = format!(
        "[repository]\nrepo = {:?}\npassword_file = {:?}\n\n{jobs}",
        s(&v.repo),
        s(&pass)
    );
    fs::write(&path, text).expect("writing the job file");
    path
}

/// `blockvault run --json --config FILE args...`, with no passphrase in the environment: the
/// job file must say where it is.
pub(crate) fn run_jobs(config: &Path, args: &[&str]) -> Run {
    let mut c = blockvault();
    c.env_remove("BLOCKVAULT_PASSWORD")
        .args(["run", "--json", "--config", s(config)])
        .args(args);
    run(&mut c, None)
}

pub(crate) fn job<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["job"] == name))
        .unwrap_or_else(|| panic!("no job {name} in the report: {report}"))
}

/// Every file under `dir`, with its size: a repository that a dry run must leave as it was.
fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("reading a directory") {
            let e = e.expect("a directory entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_job_file_backs_up_files_devices_and_commands_and_keeps_going_past_a_failure() {
    let v = Vault::new();
    let image = v.path("disk.img");
    write_random_file(&image, 1, 9 * MIB);
    let device_image = v.path("device.img");
    write_random_file(&device_image, 2, 6 * MIB);
    let dev = LoopDevice::attach(&device_image);
    let config = job_file(
        &v,
        &format!(
            r#"
[defaults]
keep = {{ last = 2 }}

[[job]]
name = "image"
source = {{ file = {image:?} }}
every = "1d"
keep = {{ last = 2 }}

[[job]]
name = "device"
source = {{ file = {dev:?} }}

[[job]]
name = "broken"
source = {{ command = "echo half a dump; exit 3" }}

[[job]]
name = "notes"
source = {{ command = "printf 'job file test\n'" }}
"#,
            image = s(&image),
            dev = dev.path(),
        ),
    );

    // The failing command is reported, the others run, and the exit status says one failed.
    let first = run_jobs(&config, &[]).code(1);
    assert!(
        first.stderr.contains("1 of 4 jobs failed: broken"),
        "{}",
        first.stderr
    );
    let report = first.json();
    assert_eq!(report["failed"], 1);
    for name in ["image", "device", "notes"] {
        assert_eq!(job(&report, name)["outcome"], "backed-up", "{report}");
    }
    let broken = job(&report, "broken");
    assert_eq!(broken["outcome"], "failed");
    assert!(
        text(broken, "reason").contains("exit status: 3"),
        "{broken}"
    );
    assert!(
        v.versions("broken").is_empty(),
        "a failed command must not become a version"
    );
    assert_eq!(n(&job(&report, "image")["backup"], "size"), 9 * MIB);
    assert!(job(&report, "image")["next_due"].is_string());

    // What was stored comes back bit-exact, from the file and from the device.
    for (series, source) in [("image", image.clone()), ("device", device_image.clone())] {
        let out = v.path(&format!("{series}.restored"));
        v.restore(series, &[s(&out)]);
        assert_same_contents(&source, &out);
    }

    // A second run: the daily job is not due, the others run again; --force runs it.
    let second = run_jobs(&config, &["--job", "image", "--job", "device"])
        .ok()
        .json();
    let image_job = job(&second, "image");
    assert_eq!(image_job["outcome"], "skipped", "{second}");
    assert!(text(image_job, "reason").contains("not due until"));
    assert_eq!(job(&second, "device")["outcome"], "backed-up");
    assert_eq!(
        n(&job(&second, "device")["backup"], "bytes_new"),
        0,
        "an unchanged device stores nothing new"
    );
    let forced = run_jobs(&config, &["--job", "image", "--force"])
        .ok()
        .json();
    assert_eq!(job(&forced, "image")["outcome"], "backed-up");
    assert_eq!(v.versions("image").len(), 2);

    // keep = { last = 2 }, from [defaults]: the third version of the device prunes the first.
    let before = v.versions("device");
    assert_eq!(before.len(), 2);
    let third = run_jobs(&config, &["--job", "device"]).ok().json();
    let pruned = &job(&third, "device")["prune"];
    assert_eq!(pruned["removed"], serde_json::json!([before[0]]), "{third}");
    assert_eq!(pruned["kept"], 2);
    let after = v.versions("device");
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&before[0]));

    // A dry run reads the sources and shows the plan, and the repository stays as it was.
    scribble(&image, MIB, 4096, 3);
    let untouched = tree(&v.repo);
    let dry = run_jobs(
        &config,
        &["--dry-run", "--force", "--job", "image", "--job", "device"],
    )
    .ok()
    .json();
    assert_eq!(dry["dry_run"], true);
    let image_dry = job(&dry, "image");
    assert_eq!(image_dry["outcome"], "dry-run");
    assert_eq!(image_dry["backup"]["dry_run"], true);
    assert!(
        n(&image_dry["backup"], "chunks_new") >= 1,
        "the changed chunk would be uploaded: {image_dry}"
    );
    assert_eq!(
        image_dry["prune"]["removed"].as_array().map(Vec::len),
        Some(1),
        "with this run's version, last = 2 would remove the oldest: {image_dry}"
    );
    assert_eq!(
        tree(&v.repo),
        untouched,
        "a dry run wrote to the repository"
    );

    // The text report: a line per job with its outcome, then a count.
    let mut c = blockvault();
    c.env_remove("BLOCKVAULT_PASSWORD")
        .args(["run", "--config", s(&config), "--job", "notes"]);
    let text_run = run(&mut c, None).ok();
    let out = text_run.stdout_text();
    assert!(out.contains("[notes] backed up"), "{out}");
    assert!(out.contains("1 job: 1 backed up"), "{out}");
}

#[test]
fn a_job_file_with_mistakes_is_refused_before_anything_runs() {
    let v = Vault::new();
    let image = v.path("disk.img");
    write_random_file(&image, 4, MIB);
    let good = format!(
        "[[job]]\nname = \"image\"\nsource = {{ file = {:?} }}\n\n",
        s(&image)
    );
    let cases = [
        (
            "[[job]]\nname = \"pg\"\nsourc = { command = \"pg_dump app\" }\n",
            &[
                "line 11",
                "job \"pg\" (job 2)",
                "field `sourc`",
                "unknown field",
            ][..],
        ),
        (
            "[[job]]\nname = \"pg\"\nevery = \"1d\"\n",
            &["line 9", "job \"pg\" (job 2)", "missing field `source`"][..],
        ),
        (
            "[[job]]\nname = \"pg\"\nsource = { command = \"pg_dump app\" }\nevery = \"1 fortnight\"\n",
            &[
                "line 12",
                "job \"pg\" (job 2)",
                "field `every`",
                "the unit must be",
            ][..],
        ),
        (
            "[[job]]\nname = \"pg\"\nsource = { command = \"pg_dump app\" }\nkeep = { lats = 3 }\n",
            &["line 12", "job \"pg\"", "unknown field `lats`"][..],
        ),
    ];
    for (mistake, needles) in cases {
        let config = job_file(&v, &format!("{good}{mistake}"));
        let r = run_jobs(&config, &[]).code(2);
        for needle in needles {
            assert!(
                r.stderr.contains(needle),
                "the error should mention {needle:?}:\n{}",
                r.stderr
            );
        }
        assert!(r.stderr.contains(s(&config)), "{}", r.stderr);
        assert!(
            v.versions("image").is_empty(),
            "the good job ran although the file has a mistake"
        );
    }

    // A job that is not in the file, and a missing file.
    let config = job_file(&v, &good);
    run_jobs(&config, &["--job", "nope"]).error(2, &["no job \"nope\"", "image"]);
    run_jobs(&v.path("missing.toml"), &[]).error(1, &["cannot read the job file"]);

    // A second run of the same file while one is going does nothing.
    let held = fs::File::open(&config).expect("opening the job file");
    held.lock().expect("locking the job file");
    let busy = run_jobs(&config, &[]).error(1, &["still running"]);
    assert!(
        busy.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("still running")),
        "the JSON report says why nothing ran: {}",
        busy.stdout_text()
    );
    held.unlock().expect("unlocking the job file");
    run_jobs(&config, &[]).ok();
    assert_eq!(v.versions("image").len(), 1);

    // A file that names no secret leaves it to the environment or the command line.
    let bare = v.path("bare.toml");
    fs::write(
        &bare,
        format!("[repository]\nrepo = {:?}\n\n{good}", s(&v.repo)),
    )
    .expect("writing the job file");
    run(blockvault().args(["run", "--config", s(&bare)]), None).ok();
    let mut c = blockvault();
    c.env_remove("BLOCKVAULT_PASSWORD").args([
        "run",
        "--config",
        s(&bare),
        "--password-file",
        s(&v.path("passphrase")),
    ]);
    run(&mut c, None).ok();
    let mut c = blockvault();
    c.env_remove("BLOCKVAULT_PASSWORD")
        .args(["run", "--config", s(&bare)]);
    run(&mut c, None).error(1, &["no passphrase"]);
    assert_eq!(v.versions("image").len(), 3);
}

/// A throwaway PostgreSQL server of Debian's packages: a cluster in a temporary directory,
/// listening only on a Unix socket there, run as the `postgres` user; stopped when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|b| b.join("postgres").is_file())
                    .max()
            })
            .expect(
                "this test needs a PostgreSQL server (Debian: apt-get install postgresql); the project's test script installs it",
            );
        let dir = tempfile::Builder::new()
            .prefix("blockvault-pg-")
            .tempdir()
            .expect("creating a temporary directory");
        tool("chown", &["postgres:postgres", s(dir.path())]);
        let pg = Postgres { dir, bin };
        pg.as_postgres(
            "initdb",
            &["-A", "trust", "-U", "postgres", "-D", s(&pg.data())],
        );
        let opts = format!("-k {} -c listen_addresses=''", s(pg.dir.path()));
        pg.as_postgres(
            "pg_ctl",
            &[
                "-D",
                s(&pg.data()),
                "-o",
                &opts,
                "-l",
                s(&pg.dir.path().join("log")),
                "-w",
                "start",
            ],
        );
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["-u", "postgres", "--"];
        let path = self.bin.join(program);
        all.push(s(&path));
        all.extend_from_slice(args);
        tool("runuser", &all)
    }

    /// Connection options for the client programs (run as root, as user postgres).
    fn conn(&self) -> String {
        format!("-h {} -p 5432 -U postgres", s(self.dir.path()))
    }

    fn client(&self, program: &str) -> String {
        format!("{} {}", s(&self.bin.join(program)), self.conn())
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let r = run(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{} -X -At -v ON_ERROR_STOP=1 -d {db}",
                    self.client("psql")
                ))
                .stdin(Stdio::piped()),
            Some(sql.as_bytes().to_vec()),
        );
        assert_eq!(r.code, 0, "psql failed: {}", r.stderr);
        r.stdout_text()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", s(&self.data()), "-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_pg_dump_job_restores_into_a_second_database() {
    require_tool("runuser");
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE app;");
    pg.psql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(12,2), note bytea);
         INSERT INTO orders SELECT i, 'customer ' || (i % 97), i * 1.25, decode(md5(i::text), 'hex')
           FROM generate_series(1, 20000) i;
         CREATE INDEX ON orders (customer);
         CREATE VIEW big AS SELECT * FROM orders WHERE amount > 1000;",
    );
    let fingerprint = "SELECT count(*), md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o;
                       SELECT count(*) FROM big;";
    let expected = pg.psql("app", fingerprint);

    let v = Vault::new();
    let config = job_file(
        &v,
        &format!(
            "[[job]]\nname = \"pg\"\nsource = {{ command = \"{} -Fc app\" }}\nkeep = {{ last = 3 }}\n\n\
             [[job]]\nname = \"pg-missing\"\nsource = {{ command = \"{} -Fc no_such_database\" }}\n",
            pg.client("pg_dump"),
            pg.client("pg_dump"),
        ),
    );
    let report = run_jobs(&config, &[]).code(1).json();
    assert_eq!(job(&report, "pg")["outcome"], "backed-up", "{report}");
    assert_eq!(job(&report, "pg-missing")["outcome"], "failed");
    assert!(v.versions("pg-missing").is_empty());

    // Restore the dump into a second database through pg_restore, and compare.
    pg.psql("postgres", "CREATE DATABASE app2;");
    let restore = format!(
        "{} restore --repo {} --name pg - | {} -d app2 --exit-on-error",
        BIN,
        s(&v.repo),
        pg.client("pg_restore")
    );
    let r = run(
        Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail; {restore}"))
            .env("BLOCKVAULT_PASSWORD", PASSWORD),
        None,
    );
    assert_eq!(r.code, 0, "restore into pg_restore failed: {}", r.stderr);
    assert_eq!(pg.psql("app2", fingerprint), expected);
    assert!(expected.starts_with("20000|"), "{expected}");
}

/// No process whose command line contains `needle` (a sleep with a length no other test uses).
fn gone(needle: &str) -> bool {
    let out = Command::new("pgrep")
        .args(["-f", needle])
        .output()
        .expect("running pgrep");
    out.stdout.is_empty()
}

#[test]
fn a_job_that_runs_past_its_timeout_is_stopped_and_the_next_job_runs() {
    let v = Vault::new();
    // The shell starts a sleep and waits for it: killing only the shell would leave the sleep
    // holding the output pipe open, and the backup waiting for it.
    let after = v.path("after-the-sleep");
    let config = job_file(
        &v,
        &format!(
            r#"
[[job]]
name = "hung"
source = {{ command = "echo partial; sleep 301.7 & wait; touch {after}" }}
timeout = "2s"

[[job]]
name = "notes"
source = {{ command = "printf 'after the hung job\n'" }}
"#,
            after = s(&after),
        ),
    );
    let started = std::time::Instant::now();
    let r = run_jobs(&config, &[]).code(1);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(60),
        "the run waited {took:?} for a job with a 2 s timeout"
    );
    assert!(
        r.stderr.contains("1 of 2 jobs failed: hung"),
        "{}",
        r.stderr
    );
    let report = r.json();
    let hung = job(&report, "hung");
    assert_eq!(hung["outcome"], "failed", "{report}");
    assert!(
        text(hung, "reason").contains("ran longer than its timeout (2s) and was stopped"),
        "{hung}"
    );
    assert_eq!(job(&report, "notes")["outcome"], "backed-up", "{report}");
    assert!(
        v.versions("hung").is_empty(),
        "a stopped job recorded a version"
    );
    assert_eq!(v.versions("notes").len(), 1);
    assert!(
        gone("sleep 301.7"),
        "the command's sleep outlived the timeout"
    );
    assert!(!after.exists(), "the command ran on after it was stopped");
    // Its lock went with it: a gc (which needs the repository to itself) runs at once.
    v.run(&["gc"]).ok();

    // A mistaken timeout is refused with the file's line, before anything runs.
    let config = job_file(
        &v,
        "[[job]]\nname = \"notes\"\nsource = { command = \"true\" }\ntimeout = \"0s\"\n",
    );
    let refused = run_jobs(&config, &[]).code(2);
    for needle in ["line 8", "field `timeout`", "between 1s and 100 years"] {
        assert!(refused.stderr.contains(needle), "{}", refused.stderr);
    }
}

#[test]
fn backup_timeout_stops_a_stream_that_stalls() {
    let v = Vault::new();
    // Standard input that never ends: a producer that hangs with the pipe open.
    let mut c = v.cmd(&["backup", "--name", "stalled", "--timeout", "2s", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("starting blockvault");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    std::io::Write::write_all(&mut stdin, &[7u8; 100_000]).expect("feeding stdin");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for blockvault") {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("backup --timeout 2s still running after 60 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("reading stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the backup of standard input ran longer than its timeout (2s)")
            && stderr.contains("no version recorded"),
        "{stderr}"
    );
    assert!(v.versions("stalled").is_empty());
    let refused = v
        .run(&["backup", "--name", "x", "--timeout", "2 weeks", "-"])
        .code(2);
    assert!(
        refused.stderr.contains("--timeout") && refused.stderr.contains("the unit must be"),
        "{}",
        refused.stderr
    );
}

#[test]
fn an_interrupted_backup_takes_its_command_with_it() {
    let v = Vault::new();
    // With a timeout the command runs in a process group of its own (so that the timeout can
    // kill all of it), which the terminal's Ctrl-C no longer reaches: blockvault passes such
    // signals on.
    for (signal, number, sleep) in [("INT", 2, "sleep 310.1"), ("TERM", 15, "sleep 311.1")] {
        let args = [
            "backup",
            "--name",
            "interrupted",
            "--timeout",
            "1h",
            "--command",
            sleep,
        ];
        let mut c = v.cmd(&args);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().expect("starting blockvault");
        let only_the_sleep = format!("^{sleep}");
        let started = std::time::Instant::now();
        while gone(&only_the_sleep) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the command never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        send_signal(child.id(), signal);
        let status = child.wait().expect("waiting for blockvault");
        // Stopped cleanly (`signals`), with the shell's code for a process the signal ended.
        assert_eq!(status.code(), Some(128 + number), "{status}");
        let started = std::time::Instant::now();
        while !gone(&only_the_sleep) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "SIG{signal} to blockvault left its command running"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert!(v.versions("interrupted").is_empty());

    // Without a timeout the command stays in blockvault's process group, the terminal's
    // foreground one when run by hand, so that it can still ask for a password there.
    let sleep = "sleep 312.1";
    let mut c = v.cmd(&["backup", "--name", "prompting", "--command", sleep]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().expect("starting blockvault");
    let group_of = |pid: &str| {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name in brackets: state, parent, process group.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest.to_string());
        after.and_then(|rest| rest.split_whitespace().nth(2).map(str::to_string))
    };
    let started = std::time::Instant::now();
    let sleep_pid = loop {
        let out = Command::new("pgrep")
            .args(["-f", &format!("^{sleep}")])
            .output();
        let pids = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Ok(pid) = pids.as_deref()
            && !pid.is_empty()
        {
            break pid.to_string();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let ours = group_of(&child.id().to_string());
    let theirs = group_of(&sleep_pid);
    let _ = Command::new("kill").arg(&sleep_pid).status();
    let _ = child.wait();
    assert!(
        ours.is_some() && ours == theirs,
        "{ours:?} against {theirs:?}"
    );
}

/// A run whose repository does not open (a wrong passphrase here) still prints its JSON
/// report, each job failed with the reason, for monitoring that reads the report; the exit
/// code stays the wrong key's.
#[test]
fn a_run_that_cannot_open_the_repository_reports_in_json() {
    let v = Vault::new();
    let src = v.path("disk.img");
    write_random_file(&src, 5, 100_000);
    let config = job_file(
        &v,
        &format!(
            "[[job]]\nname = \"a\"\nsource = {{ file = {:?} }}\n\n[[job]]\nname = \"b\"\nsource = {{ file = {:?} }}\n",
            s(&src),
            s(&src)
        ),
    );
    fs::write(v.path("passphrase"), "not the passphrase\n").expect("writing a wrong passphrase");
    let r = run_jobs(&config, &[]).code(4);
    let report = r.json();
    assert_eq!(report["failed"], 2, "{report}");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong passphrase")),
        "{report}"
    );
    for name in ["a", "b"] {
        let j = job(&report, name);
        assert_eq!(j["outcome"], "failed", "{report}");
        assert!(
            j["reason"]
                .as_str()
                .is_some_and(|e| e.contains("the run could not start")),
            "{report}"
        );
    }
}
