//! Helpers for the integration tests: run the real `blockvault` binary against a repository in
//! a temporary directory, make deterministic data, build ext4 images from real files with
//! `mke2fs -d`, and attach loop devices that are always detached again.
//!
//! Nothing here skips a test: a missing tool (`mke2fs`, `losetup`, ...) is a panic that says
//! what to install, because the test script installs them and a silently skipped test proves
//! nothing.

#![allow(dead_code)] // each test module uses a different subset

use serde_json::Value;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_blockvault");
pub const PASSWORD: &str = "integration test passphrase";
pub const MIB: u64 = 1 << 20;
/// The default fixed chunk size (src/chunker.rs); tests place damage relative to it.
pub const CHUNK: u64 = 4 * MIB;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The command line, for failure messages.
    pub what: String,
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "`{}` failed with exit code {}; stderr:\n{}",
            self.what, self.code, self.stderr
        );
        self
    }

    /// Asserts the exit code and returns self.
    #[track_caller]
    pub fn code(self, expected: i32) -> Run {
        assert_eq!(
            self.code, expected,
            "`{}`: expected exit code {expected}, got {}; stderr:\n{}",
            self.what, self.code, self.stderr
        );
        self
    }

    /// Asserts failure (any non-zero exit) and returns self.
    #[track_caller]
    pub fn fails(self) -> Run {
        assert_ne!(
            self.code,
            0,
            "`{}` should have failed but succeeded; stdout:\n{}",
            self.what,
            String::from_utf8_lossy(&self.stdout)
        );
        self
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}`: stdout is not JSON ({e}):\n{}",
                self.what,
                self.stdout_text()
            )
        })
    }

    /// Asserts that stderr is exactly one line, `error: ...`, with no panic, and returns it.
    #[track_caller]
    pub fn error_line(&self) -> &str {
        let text = self.stderr.strip_suffix('\n').unwrap_or(&self.stderr);
        assert!(
            !text.is_empty() && !text.contains('\n'),
            "`{}`: stderr should be one line, got:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            text.starts_with("error: "),
            "`{}`: stderr should start with \"error: \", got:\n{}",
            self.what,
            self.stderr
        );
        assert!(
            !text.contains("panicked"),
            "`{}` panicked: {text}",
            self.what
        );
        text
    }

    /// Asserts the exit code, a one-line error, and that the line contains every needle.
    #[track_caller]
    pub fn error(self, code: i32, needles: &[&str]) -> Run {
        let run = self.code(code);
        let line = run.error_line();
        for n in needles {
            assert!(
                line.contains(n),
                "`{}`: error line should mention {n:?}: {line}",
                run.what
            );
        }
        run
    }
}

/// The binary with a clean environment: the test passphrase set, no `BLOCKVAULT_REPO` from the
/// caller's shell, standard input empty, and the default action for the stop signals. A suite
/// started in the background by a script inherits SIGINT ignored (SIGHUP too under `nohup`),
/// which blockvault keeps, as shells expect of a background job, and the tests that stop runs
/// with those signals would then wait in vain.
pub fn blockvault() -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(BIN);
    c.env("BLOCKVAULT_PASSWORD", PASSWORD)
        .env_remove("BLOCKVAULT_REPO")
        .env_remove("BLOCKVAULT_LOCK_STALE_SECS")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec the child only calls signal(2), which is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTERM, libc::SIGQUIT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    c
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion, feeding `input` (if any) to its standard input from a thread so
/// that a child writing lots of output cannot deadlock against us.
pub fn run(cmd: &mut Command, input: Option<Vec<u8>>) -> Run {
    let what = describe(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let feeder = input.map(|data| {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        std::thread::spawn(move || {
            // The child may stop reading early (and fail); that is for the test to judge.
            let _ = stdin.write_all(&data);
        })
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
    if let Some(f) = feeder {
        let _ = f.join();
    }
    Run {
        what,
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// A repository in a temporary directory, with a scratch directory beside it for sources and
/// restore targets. Both disappear when the `Vault` is dropped. With `remote` set, the
/// repository is elsewhere (an `s3://` URL) and `repo` is unused.
pub struct Vault {
    pub root: tempfile::TempDir,
    pub repo: PathBuf,
    pub work: PathBuf,
    pub remote: Option<Remote>,
}

/// A repository that is not a local directory: its `--repo` URL, the options every command
/// needs to reach it (`--s3-endpoint`, `--s3-region`), and the environment (credentials).
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
}

impl Vault {
    /// A scratch area with no repository yet (`repo` does not exist).
    pub fn uninitialised() -> Vault {
        let root = tempfile::Builder::new()
            .prefix("blockvault-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let repo = root.path().join("vault");
        let work = root.path().join("work");
        fs::create_dir(&work).expect("creating the scratch directory");
        Vault {
            root,
            repo,
            work,
            remote: None,
        }
    }

    /// A scratch area and a repository at `remote`, not initialised yet.
    pub fn at(remote: Remote) -> Vault {
        Vault {
            remote: Some(remote),
            ..Vault::uninitialised()
        }
    }

    /// An encrypted repository opened by [`PASSWORD`].
    pub fn new() -> Vault {
        Vault::with_init(&[])
    }

    /// A repository made by `init` with these extra arguments.
    pub fn with_init(extra: &[&str]) -> Vault {
        let v = Vault::uninitialised();
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        v.run(&args).ok();
        v
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// `blockvault --repo <repo> args...`
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = blockvault();
        match &self.remote {
            None => c.arg("--repo").arg(&self.repo),
            Some(r) => {
                for k in &r.env_remove {
                    c.env_remove(k);
                }
                c.envs(r.env.iter().map(|(k, v)| (k, v)));
                c.arg("--repo").arg(&r.url).args(&r.args)
            }
        };
        c.args(args);
        c
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        run(&mut self.cmd(args), None)
    }

    pub fn run_with_stdin<S: AsRef<OsStr>>(&self, args: &[S], input: Vec<u8>) -> Run {
        run(&mut self.cmd(args), Some(input))
    }

    /// `backup --json --name <series> <args...>`, which must succeed; its summary.
    #[track_caller]
    pub fn backup(&self, series: &str, args: &[&str]) -> Value {
        let mut all = vec!["backup", "--json", "--name", series];
        all.extend_from_slice(args);
        self.run(&all).ok().json()
    }

    /// `restore --json --name <series> <args...>`, which must succeed; its summary.
    #[track_caller]
    pub fn restore(&self, series: &str, args: &[&str]) -> Value {
        let mut all = vec!["restore", "--json", "--name", series];
        all.extend_from_slice(args);
        self.run(&all).ok().json()
    }

    /// `list --json`: one object per version.
    #[track_caller]
    pub fn list(&self) -> Vec<Value> {
        match self.run(&["list", "--json"]).ok().json() {
            Value::Array(rows) => rows,
            other => panic!("list --json should print an array, got {other}"),
        }
    }

    /// The versions of one series, per `list --json`.
    #[track_caller]
    pub fn versions(&self, series: &str) -> Vec<String> {
        self.list()
            .iter()
            .filter(|r| r["series"] == series)
            .map(|r| r["version"].as_str().expect("version is text").to_string())
            .collect()
    }

    /// The store name (`chunks/ab/...`) of an object file of the repository.
    pub fn object_name(&self, file: &Path) -> String {
        file.strip_prefix(&self.repo)
            .unwrap_or_else(|_| panic!("{} is outside the repository", file.display()))
            .to_string_lossy()
            .into_owned()
    }

    /// Every chunk object file under `<repo>/chunks/` (not temporary files).
    pub fn chunk_objects(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(dirs) = fs::read_dir(self.repo.join("chunks")) else {
            return out;
        };
        for d in dirs.flatten() {
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                if name.len() == 64 && !name.to_string_lossy().starts_with('.') {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }

    /// The manifest object of a version (series names used in tests need no escaping).
    pub fn manifest_object(&self, series: &str, version: &str) -> PathBuf {
        self.repo.join("manifests").join(series).join(version)
    }
}

/// Reads a numeric field of a JSON summary.
#[track_caller]
pub fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("summary field {field:?} should be a number: {v}"))
}

#[track_caller]
pub fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field:?} should be text: {v}"))
}

/// Deterministic pseudo-random bytes (SplitMix64): the same seed gives the same data on every
/// machine, and it does not compress, so every chunk is a distinct object.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut words = buf.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Prng::new(seed).fill(&mut v);
    v
}

/// Creates (or replaces) `path` with `len` pseudo-random bytes, written in 1 MiB pieces.
pub fn write_random_file(path: &Path, seed: u64, len: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut rng = Prng::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("writing test data");
        left -= n as u64;
    }
    f.sync_all().expect("flushing test data");
}

/// Overwrites `len` bytes at `offset` of a file or block device with pseudo-random bytes,
/// and flushes them.
pub fn scribble(path: &Path, offset: u64, len: usize, seed: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {} for writing: {e}", path.display()));
    f.write_all_at(&random_bytes(seed, len), offset)
        .unwrap_or_else(|e| panic!("writing {} at {offset}: {e}", path.display()));
    f.sync_all().expect("flushing");
}

/// Reads a whole file or device in 1 MiB pieces, handing each to `f`.
fn read_pieces(path: &Path, mut f: impl FnMut(&[u8])) {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        f(&buf[..n]);
    }
}

/// A BLAKE3 digest of the whole contents, and the length.
pub fn digest(path: &Path) -> (blake3::Hash, u64) {
    let mut h = blake3::Hasher::new();
    let mut len = 0u64;
    read_pieces(path, |b| {
        h.update(b);
        len += b.len() as u64;
    });
    (h.finalize(), len)
}

/// Asserts that two files or devices hold the same bytes, naming the first offset that
/// differs.
#[track_caller]
pub fn assert_same_contents(expected: &Path, actual: &Path) {
    let mut a = File::open(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let mut b = File::open(actual).unwrap_or_else(|e| panic!("{}: {e}", actual.display()));
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut a, &mut ba);
        let nb = read_full(&mut b, &mut bb);
        if ba[..na] != bb[..nb] {
            let common = na.min(nb);
            let at = (0..common).find(|&i| ba[i] != bb[i]).unwrap_or(common);
            panic!(
                "{} and {} differ at byte {} (lengths of this piece {na} and {nb})",
                expected.display(),
                actual.display(),
                offset + at as u64
            );
        }
        if na == 0 {
            return;
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).expect("reading for comparison") {
            0 => break,
            n => got += n,
        }
    }
    got
}

/// Sends `signal` ("INT", "TERM", ...) to process `pid` with kill(1), which must succeed.
#[track_caller]
pub fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(
        sent.is_ok_and(|s| s.success()),
        "kill -{signal} {pid} failed"
    );
}

/// Panics, naming the package, if `tool` is not on PATH (or in /sbin, /usr/sbin).
pub fn require_tool(tool: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "this test needs `{tool}`, which is not installed (Debian: apt-get install {}); \
         the project's test script installs it",
        match tool {
            "mke2fs" | "debugfs" | "e2fsck" => "e2fsprogs",
            "losetup" | "setsid" => "util-linux",
            "tar" => "tar",
            other => other,
        }
    );
}

/// Runs a helper tool that must succeed; its stdout.
#[track_caller]
pub fn tool<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    require_tool(program);
    let r = run(Command::new(program).args(args).stdin(Stdio::null()), None);
    assert_eq!(
        r.code,
        0,
        "`{}` failed ({}):\n{}\n{}",
        r.what,
        r.code,
        r.stderr,
        r.stdout_text()
    );
    r.stdout_text()
}

/// Copies real files from the system (documentation, libraries, programs) into `dest`,
/// keeping their relative paths, until about `budget` bytes of 4 KiB blocks are used; the
/// first `skip` eligible files are passed over, so two calls with different `skip` give two
/// different trees. Returns the relative paths copied, in order.
pub fn copy_real_files(dest: &Path, budget: u64, skip: usize) -> Vec<PathBuf> {
    let mut copied = Vec::new();
    let mut used = 0u64;
    let mut seen = 0usize;
    for root in ["/usr/share/doc", "/usr/lib", "/usr/bin", "/usr/share"] {
        walk(Path::new(root), &mut |path, len| {
            // Skip empty files and very large ones: many files of ordinary sizes, as on a disk.
            if len == 0 || len > 8 * MIB {
                return true;
            }
            seen += 1;
            if seen <= skip {
                return true;
            }
            let blocks = len.div_ceil(4096) * 4096;
            if used + blocks > budget {
                return false;
            }
            let rel = path.strip_prefix("/").expect("absolute");
            let to = dest.join(rel);
            fs::create_dir_all(to.parent().expect("has a parent")).expect("creating dirs");
            if fs::copy(path, &to).is_ok() {
                used += blocks;
                copied.push(rel.to_path_buf());
            }
            true
        });
        if used + 64 * 1024 > budget {
            break;
        }
    }
    assert!(
        used > budget / 2,
        "found only {used} bytes of real files to copy (wanted about {budget})"
    );
    copied
}

/// Depth-first, sorted walk of regular files (symlinks not followed); `f` returns false to stop.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, u64) -> bool) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return true;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if !walk(&p, f) {
                return false;
            }
        } else if meta.is_file() && !f(&p, meta.len()) {
            return false;
        }
    }
    true
}

/// Builds an ext4 image of `size_mib` MiB holding the tree under `from`, with `mke2fs -d`.
pub fn make_ext4(from: &Path, image: &Path, size_mib: u64) {
    tool(
        "mke2fs",
        &[
            "-q",
            "-t",
            "ext4",
            "-d",
            s(from),
            "-F",
            s(image),
            &format!("{size_mib}M"),
        ],
    );
    // `mke2fs -d` can run out of space and still leave an image; make sure it is whole.
    fsck(image);
}

/// `e2fsck -fn`: asserts that the image is a consistent ext4 filesystem.
pub fn fsck(image: &Path) {
    tool("e2fsck", &["-f", "-n", s(image)]);
}

/// Extracts one file from an ext4 image with `debugfs -R dump`.
pub fn ext4_extract(image: &Path, inside: &Path, to: &Path) {
    let cmd = format!("dump /{} {}", inside.display(), to.display());
    tool("debugfs", &["-R", &cmd, s(image)]);
    assert!(
        to.exists(),
        "debugfs could not extract /{} from {}",
        inside.display(),
        image.display()
    );
}

/// A loop device over an image file, detached when dropped (even when the test panics).
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> LoopDevice {
        LoopDevice::attach_with(image, &[])
    }

    /// [`LoopDevice::attach`] with more options for losetup (`-r`: read-only).
    pub fn attach_with(image: &Path, options: &[&str]) -> LoopDevice {
        require_tool("losetup");
        // `-f --show` picks a free device and binds it in one step, so tests attaching
        // devices in parallel do not collide.
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(options);
        args.push(s(image));
        let out = tool("losetup", &args);
        let dev = out.trim();
        assert!(
            dev.starts_with("/dev/loop"),
            "losetup printed {dev:?}, not a loop device"
        );
        LoopDevice {
            path: PathBuf::from(dev),
        }
    }

    pub fn path(&self) -> &str {
        s(&self.path)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let status = Command::new("losetup")
            .arg("-d")
            .arg(&self.path)
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not detach loop device {} ({status:?})",
                self.path.display()
            );
        }
    }
}

/// Disk space a file really uses (`st_blocks` is in 512-byte units whatever the filesystem).
pub fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .blocks()
        * 512
}

/// Asserts that an RFC 3339 time is in UTC (ends in `Z`) and parses.
#[track_caller]
pub fn assert_utc_rfc3339(t: &str) {
    assert!(t.ends_with('Z'), "time {t:?} should be UTC, ending in Z");
    t.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("time {t:?} is not RFC 3339: {e}"));
}

/// Names in a directory (for "nothing was left behind" checks).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The key file of a repository made by [`key_file_vault`].
pub fn key_file(v: &Vault) -> PathBuf {
    v.root.path().join("key")
}

/// A repository opened by a key file (no Argon2 per process, for tests that run hundreds of
/// commands) with 64 KiB chunks, so small sources still make many chunks.
pub fn key_file_vault() -> Vault {
    let v = Vault::uninitialised();
    v.run(&[
        "init",
        "--key-file",
        s(&key_file(&v)),
        "--chunk-size",
        "64K",
    ])
    .ok();
    v
}

/// `blockvault --repo R --key-file K args...`, with a store fault plan
/// (`BLOCKVAULT_TEST_FAULTS`, src/store/fault.rs) if given.
pub fn key_file_cmd(v: &Vault, faults: Option<&str>, args: &[&str]) -> Command {
    let key = key_file(v);
    let mut all = vec!["--key-file", s(&key)];
    all.extend_from_slice(args);
    let mut c = v.cmd(&all);
    c.env_remove("BLOCKVAULT_PASSWORD");
    if let Some(f) = faults {
        c.env("BLOCKVAULT_TEST_FAULTS", f);
    }
    c
}

/// [`key_file_cmd`], run to completion.
pub fn key_file_run(v: &Vault, faults: Option<&str>, args: &[&str]) -> Run {
    run(&mut key_file_cmd(v, faults, args), None)
}

/// Copies a directory tree (a repository, to damage or kill in a copy).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("creating a directory");
    for e in fs::read_dir(from).expect("reading a directory") {
        let e = e.expect("reading a directory entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copying a file");
        }
    }
}

/// A filesystem mounted for a test, unmounted when dropped (even when the test panics).
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// A size-limited tmpfs at `path` (a full disk on demand).
    pub fn tmpfs(path: PathBuf, size: &str) -> Mount {
        fs::create_dir_all(&path).expect("creating a mount point");
        tool(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(&path),
            ],
        );
        Mount { path }
    }

    /// The filesystem on `device`, at `path`.
    pub fn device(device: &str, path: PathBuf) -> Mount {
        fs::create_dir_all(&path).expect("creating a mount point");
        tool("mount", &[device, s(&path)]);
        Mount { path }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.path)
            .stdin(Stdio::null())
            .status();
    }
}

/// `bzip2 -dc path`: the test send streams are stored compressed.
pub fn bunzip(path: &str) -> Vec<u8> {
    let out = Command::new("bzip2")
        .args(["-dc", path])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `bzip2 -dc {path}` (install bzip2): {e}"));
    assert!(
        out.status.success(),
        "bzip2 -dc {path} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
