//! Stop signals, with the real binary on a real local-directory repository. The first SIGINT,
//! SIGTERM or SIGHUP stops a backup, restore, check or job run where it is: exit 128 + the
//! signal's number, its lock removed, no version recorded, a partial restore target deleted.
//! A second signal ends the process at once. (SIGKILL and crashes: `crash`.)

use crate::util::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Store latency that makes a run last long enough to be stopped in its middle.
const SLOW: &str = "latency-ms=40";

fn send(child: &Child, signal: &str) {
    send_signal(child.id(), signal);
}

#[track_caller]
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The child's exit status and stderr; fails if it takes longer than `limit` to end, or if
/// something it started holds its stderr open that long after.
#[track_caller]
fn ended_within(mut child: Child, limit: Duration) -> (ExitStatus, String) {
    let started = Instant::now();
    while child.try_wait().expect("polling blockvault").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("blockvault went on for {limit:?} after the stop signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child
        .wait_with_output()
        .expect("collecting blockvault's output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        started.elapsed() < limit,
        "a process blockvault started outlived it by {:?}, holding its stderr: {stderr}",
        started.elapsed()
    );
    (out.status, stderr)
}

fn locks(v: &Vault) -> Vec<String> {
    dir_names(&v.repo.join("locks"))
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting blockvault")
}

/// A process that exists and is not a zombie.
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.starts_with(" Z"))
    })
}

/// What a stopped backup of [`backup_with_sleeper`] leaves: the command's child gone, no
/// version, no lock.
#[track_caller]
fn stopped_cleanly(v: &Vault, sleeper: &str) {
    wait_until(
        "the command's child to end",
        Duration::from_secs(10),
        || !alive(sleeper),
    );
    assert!(
        v.versions("db").is_empty(),
        "a stopped backup recorded a version"
    );
    assert_eq!(locks(v), Vec::<String>::new(), "the lock was left behind");
}

/// A backup of series "db" with `options` from a command that runs `output`, then starts a
/// child that writes nothing for a minute, and waits for it. Returns once the child is there,
/// with its pid.
fn backup_with_sleeper(v: &Vault, options: &[&str], output: &str) -> (Child, String) {
    let pid_file = v.path("sleeper.pid");
    let command = format!("{output}; sleep 60 & echo $! > {}; wait", s(&pid_file));
    let mut args = vec!["backup", "--name", "db"];
    args.extend(options);
    args.extend(["--command", &command]);
    let child = spawn(v.cmd(&args));
    let mut pid = String::new();
    wait_until(
        "the command to start its sleeper",
        Duration::from_secs(60),
        || {
            pid = fs::read_to_string(&pid_file).unwrap_or_default();
            pid.ends_with('\n')
        },
    );
    (child, pid.trim().to_string())
}

#[test]
fn a_stopped_backup_records_nothing_removes_its_lock_and_stops_its_command() {
    let v = Vault::new();
    // Output, then a child that writes nothing and would hold the pipe open for a minute.
    // `--timeout` runs the command in a process group of its own, which a stop kills.
    let (child, sleeper) =
        backup_with_sleeper(&v, &["--timeout", "1h"], "head -c 3000000 /dev/urandom");
    assert_eq!(locks(&v).len(), 1, "a running backup holds a lock");
    send(&child, "INT");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "SIGINT is exit 130: {stderr}");
    for needle in [
        "stopping and cleaning up",
        "interrupted by SIGINT",
        "no version recorded",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    stopped_cleanly(&v, &sleeper);
    // What the stopped run stored is only unreferenced chunks, and the next run works.
    v.run(&["check"]).ok();
    let source = v.path("small.img");
    write_random_file(&source, 1, 100_000);
    v.backup("db", &[s(&source)]);
    assert_eq!(v.versions("db").len(), 1);
}

#[test]
fn a_stop_while_the_command_finishes_kills_what_it_left_running() {
    // The command's output has ended, and blockvault waits for it to exit: the group is
    // killed all the same, though its background job ignores the SIGINT passed on to it.
    let v = Vault::new();
    let (child, sleeper) = backup_with_sleeper(
        &v,
        &["--timeout", "1h"],
        "head -c 100000 /dev/urandom; exec >/dev/null",
    );
    std::thread::sleep(Duration::from_millis(300));
    send(&child, "INT");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("SIGKILL"),
        "the kill that blockvault itself sent is no news: {stderr}"
    );
    stopped_cleanly(&v, &sleeper);
}

#[test]
fn a_stop_reaches_what_a_command_without_a_group_of_its_own_started() {
    // Without `--timeout` the command shares blockvault's process group, and a SIGTERM sent
    // to blockvault alone (`kill PID`, a supervisor that signals one process) reaches none of
    // it: blockvault kills the shell and everything below it.
    let v = Vault::new();
    let (child, sleeper) = backup_with_sleeper(&v, &[], "head -c 3000000 /dev/urandom");
    send(&child, "TERM");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "SIGTERM is exit 143: {stderr}");
    stopped_cleanly(&v, &sleeper);
}

#[test]
fn a_stopped_stream_backup_does_not_record_what_it_read_before() {
    // The producer is not signalled (only blockvault is) and goes on to end its stream
    // normally: what came before the signal must not become a version.
    let v = Vault::new();
    let mut cmd = v.cmd(&["backup", "--name", "piped", "-"]);
    cmd.stdin(Stdio::piped());
    let mut child = spawn(cmd);
    let mut stdin = child.stdin.take().expect("blockvault's stdin");
    use std::io::Write;
    stdin
        .write_all(&random_bytes(2, 2_000_000))
        .expect("feeding blockvault");
    wait_until(
        "the backup to take its lock",
        Duration::from_secs(60),
        || !locks(&v).is_empty(),
    );
    send(&child, "TERM");
    // The rest of the stream, and its end, come after the signal.
    let _ = stdin.write_all(&random_bytes(3, 500_000));
    drop(stdin);
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "SIGTERM is exit 143: {stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM") && stderr.contains("no version recorded"),
        "{stderr}"
    );
    assert!(
        v.versions("piped").is_empty(),
        "a stopped backup recorded a version"
    );
    assert!(locks(&v).is_empty(), "the lock was left behind");
}

/// A FIFO nobody writes to blocks the backup in open(2): it still honours --timeout, and a
/// stop signal ends it cleanly, where it waited for ever and only a second signal (leaving its
/// lock behind) ended it.
#[test]
fn a_fifo_without_a_writer_honours_the_timeout_and_a_stop() {
    let v = Vault::new();
    let fifo = v.path("fifo");
    tool("mkfifo", &[s(&fifo)]);
    let timed = spawn(v.cmd(&["backup", "--name", "fifo", "--timeout", "2s", s(&fifo)]));
    let (status, stderr) = ended_within(timed, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not open within the timeout (2s)")
            && stderr.contains(&format!("source {} did not open", s(&fifo)))
            && stderr.contains("no version recorded"),
        "{stderr}"
    );
    assert!(locks(&v).is_empty(), "the lock was left behind");

    let child = spawn(v.cmd(&["backup", "--name", "fifo", s(&fifo)]));
    wait_until(
        "the backup to take its lock",
        Duration::from_secs(60),
        || !locks(&v).is_empty(),
    );
    send(&child, "TERM");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(locks(&v).is_empty(), "the lock was left behind");
    assert!(v.versions("fifo").is_empty());
}

/// A repository with one 8 MiB version of 64 KiB chunks (128 of them), and the source it came
/// from.
fn vault_with_a_version() -> (Vault, std::path::PathBuf) {
    let v = Vault::with_init(&["--chunk-size", "64K"]);
    let source = v.path("disk.img");
    write_random_file(&source, 7, 8 << 20);
    v.backup("disk", &[s(&source)]);
    (v, source)
}

/// A restore of it that takes at least 32 × 40 ms: 4 chunks at a time.
fn slow_restore(v: &Vault, args: &[&str]) -> Child {
    let mut all = vec!["restore", "--name", "disk", "--in-flight", "4"];
    all.extend_from_slice(args);
    let mut cmd = v.cmd(&all);
    cmd.env("BLOCKVAULT_TEST_FAULTS", SLOW);
    spawn(cmd)
}

#[test]
fn a_stopped_restore_deletes_its_partial_file_and_one_in_place_says_how_to_finish() {
    let (v, source) = vault_with_a_version();

    // To a new file: nothing is left, neither the target nor its partial file.
    let target = v.path("restored.img");
    let partial = v.path(".restored.img.blockvault-partial");
    let child = slow_restore(&v, &[s(&target)]);
    wait_until("the partial file", Duration::from_secs(60), || {
        partial.exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    send(&child, "TERM");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM") && stderr.contains("is deleted"),
        "{stderr}"
    );
    assert!(!partial.exists(), "the partial file was left behind");
    assert!(!target.exists(), "a stopped restore created its target");
    assert!(locks(&v).is_empty(), "the lock was left behind");

    // In place: the target is part old, part new; the message says so, and a second restore
    // in place finishes the job.
    let in_place = v.path("in-place.img");
    write_random_file(&in_place, 8, 8 << 20);
    let before = digest(&in_place);
    let child = slow_restore(&v, &["--in-place", s(&in_place)]);
    wait_until(
        "the first chunk written in place",
        Duration::from_secs(60),
        || digest(&in_place) != before,
    );
    send(&child, "HUP");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(129), "SIGHUP is exit 129: {stderr}");
    assert!(
        stderr.contains("interrupted by SIGHUP")
            && stderr.contains("restore in place again to finish"),
        "{stderr}"
    );
    assert!(locks(&v).is_empty(), "the lock was left behind");
    assert_ne!(
        digest(&in_place),
        digest(&source),
        "the restore finished before the stop"
    );
    v.restore("disk", &["--in-place", s(&in_place)]);
    assert_same_contents(&source, &in_place);
}

#[test]
fn a_restore_to_a_reader_that_stalls_stops_all_the_same() {
    let (v, _) = vault_with_a_version();
    // 4 chunks of 64 KiB: all fetched and handed to the writer, which is stuck on the full
    // pipe with the last of them.
    let small = v.path("small.img");
    write_random_file(&small, 11, 256 << 10);
    v.backup("small", &[s(&small)]);
    for (series, size) in [("disk", "8 MiB"), ("small", "256 KiB")] {
        let mut cmd = v.cmd(&["restore", "--name", series, "-"]);
        // A pipe that nobody reads: the version does not fit, so the restore blocks on it.
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("starting blockvault");
        wait_until(
            "the restore to take its lock",
            Duration::from_secs(60),
            || !locks(&v).is_empty(),
        );
        std::thread::sleep(Duration::from_millis(500));
        send(&child, "TERM");
        let (status, stderr) = ended_within(child, Duration::from_secs(10));
        assert_eq!(status.code(), Some(143), "{size}: {stderr}");
        assert!(
            stderr.contains("the output is incomplete")
                && stderr.contains("interrupted by SIGTERM"),
            "{size}: {stderr}"
        );
        assert!(locks(&v).is_empty(), "{size}: the lock was left behind");
    }
}

#[test]
fn a_check_stops_while_it_reads_manifests() {
    let (v, _) = vault_with_a_version();
    // Every store operation takes 300 ms: the stop comes while the manifest is read.
    let mut cmd = v.cmd(&["check"]);
    cmd.env("BLOCKVAULT_TEST_FAULTS", "latency-ms=300");
    let child = spawn(cmd);
    wait_until(
        "the check to take its lock",
        Duration::from_secs(60),
        || !locks(&v).is_empty(),
    );
    send(&child, "TERM");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(143),
        "a stopped check ran to the end: {stderr}"
    );
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(locks(&v).is_empty(), "the lock was left behind");
}

#[test]
fn a_second_stop_signal_ends_the_process_at_once() {
    let (v, _) = vault_with_a_version();
    // Every store operation of this check takes 400 ms, the removal of its lock included, so
    // it is still cleaning up when the second signal comes.
    let mut cmd = v.cmd(&["check", "--read-data"]);
    cmd.env("BLOCKVAULT_TEST_FAULTS", "latency-ms=400");
    let child = spawn(cmd);
    wait_until(
        "the check to take its lock",
        Duration::from_secs(60),
        || !locks(&v).is_empty(),
    );
    send(&child, "INT");
    std::thread::sleep(Duration::from_millis(100));
    send(&child, "INT");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(
        status.signal(),
        Some(2),
        "the second SIGINT did not end it at once: {status:?} {stderr}"
    );
    assert_eq!(
        locks(&v).len(),
        1,
        "killed at once, it cannot remove its lock"
    );
    // What `unlock` is for: the holder is gone.
    v.run(&["unlock"]).ok();
    assert!(locks(&v).is_empty());
    v.run(&["check"]).ok();
}

#[test]
fn a_stopped_job_run_starts_no_further_job() {
    let v = Vault::new();
    let jobs = v.path("jobs.toml");
    let pid_file = v.path("first.pid");
    fs::write(
        &jobs,
        format!(
            "[repository]\nrepo = \"{}\"\n\n[[job]]\nname = \"first\"\nsource = {{ command = \"head -c 100000 /dev/urandom; echo $$ > {}; sleep 60\" }}\ntimeout = \"1h\"\n\n[[job]]\nname = \"second\"\nsource = {{ command = \"echo second\" }}\n",
            s(&v.repo),
            s(&pid_file)
        ),
    )
    .expect("writing the job file");
    let child = spawn(v.cmd(&["run", "--config", s(&jobs)]));
    wait_until("the first job's command", Duration::from_secs(60), || {
        fs::read_to_string(&pid_file).is_ok_and(|p| p.ends_with('\n'))
    });
    send(&child, "TERM");
    let (status, stderr) = ended_within(child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains("interrupted by SIGTERM") && stderr.contains("jobs not run: second"),
        "{stderr}"
    );
    assert!(v.list().is_empty(), "a stopped run recorded a version");
    assert!(locks(&v).is_empty(), "the lock was left behind");
}
