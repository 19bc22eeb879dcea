//! What a backup reads: a file, a block device, standard input, or a command's output.
//!
//! Opening a source decides how it is chunked (fixed for files and devices, content-defined
//! for streams) and what it must look like at the end: a file or device must not change size,
//! a command must exit 0. `finish` checks that after the last byte is read, so a source that
//! failed never becomes a version.

use crate::direct::DirectReads;
use crate::manifest::{SourceInfo, SourceKind};
use crate::sys::{self, Seek as Found};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The pipe buffer asked for on a stream source: fewer, larger reads (see `sys::grow_pipe`).
const PIPE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub enum SourceSpec {
    Path(PathBuf),
    Stdin,
    Command(String),
    /// `zfs send` run by blockvault itself (no shell): the program and its arguments.
    ZfsSend(Vec<String>),
}

impl SourceSpec {
    /// The source as an error message names it, before it is open.
    pub fn in_words(&self) -> String {
        match self {
            SourceSpec::Path(p) => p.display().to_string(),
            SourceSpec::Stdin => "standard input".into(),
            SourceSpec::Command(c) => format!("command `{c}`"),
            SourceSpec::ZfsSend(args) => format!("`{}`", args.join(" ")),
        }
    }
}

enum Finish {
    /// The size a file or device had when opened; it must still have it at the end.
    Sized {
        path: PathBuf,
        size: u64,
    },
    Child {
        command: String,
        child: Child,
        /// The child leads a process group of its own.
        own_group: bool,
        /// Dropped after the child is reaped, with the rest of the source.
        _signals: Option<sys::ForwardSignals>,
    },
    Stream,
}

pub struct OpenedSource {
    pub info: SourceInfo,
    pub reader: Box<dyn Read + Send>,
    /// Known for files and devices; None for streams.
    pub size: Option<u64>,
    /// Files and devices: the same open file as `reader`, for positional reads.
    file: Option<ByOffset>,
    finish: Finish,
}

/// A file or device read by offset; a block device around its page cache where it can be
/// ([`DirectReads`]).
pub struct ByOffset {
    pub file: File,
    direct: Option<DirectReads>,
    /// The source's name, for a warning.
    shown: String,
}

impl ByOffset {
    /// Whether chunks may be mapped instead of read: not while a block device is read
    /// directly, since a map reads its page cache.
    pub fn mappable(&self) -> bool {
        self.direct.is_none()
    }

    /// [`read_full_at`], directly from a block device until a direct read fails; then, and
    /// for files, through the page cache.
    pub fn read_full_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Some(d) = &mut self.direct {
            match d.read_full_at(buf, offset) {
                Ok(n) => return Ok(n),
                // An alignment the device refuses, or a real failure, which the ordinary
                // read reports again.
                Err(e) => {
                    self.direct = None;
                    eprintln!(
                        "warning: direct reads of block device {} failed ({e}); reading it through the page cache from here on, which a filesystem mounted on it may have left stale",
                        self.shown
                    );
                    let _ = sys::drop_cached(&self.file);
                }
            }
        }
        read_full_at(&self.file, buf, offset)
    }
}

/// The size of a regular file or block device, read from the open handle.
pub fn size_of(file: &mut File, path: &Path) -> Result<u64> {
    let meta = file
        .metadata()
        .with_context(|| format!("reading the metadata of {}", path.display()))?;
    if meta.file_type().is_block_device() {
        let size = file
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of block device {}", path.display()))?;
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("rewinding block device {}", path.display()))?;
        Ok(size)
    } else {
        Ok(meta.len())
    }
}

/// Opens a source. With `own_group`, a command runs as the leader of a process group of its
/// own, which [`OpenedSource::abandon`] kills whole (a timeout needs that); the price is that it
/// is no longer in the terminal's foreground group, so it cannot prompt there (a password, a
/// host key), and a stop signal sent to blockvault reaches it through blockvault instead
/// (`sys::ForwardSignals`).
pub fn open(spec: &SourceSpec, own_group: bool) -> Result<OpenedSource> {
    match spec {
        SourceSpec::Stdin => Ok(OpenedSource {
            // Not a pipe (a file, a terminal): nothing to grow, and nothing lost.
            reader: {
                let _ = sys::grow_pipe(io::stdin().as_fd(), PIPE_BYTES);
                Box::new(io::stdin())
            },
            info: SourceInfo {
                kind: SourceKind::Stdin,
                description: "-".into(),
            },
            size: None,
            file: None,
            finish: Finish::Stream,
        }),
        SourceSpec::Command(cmd) => spawn(shell(cmd), cmd.clone(), own_group),
        SourceSpec::ZfsSend(args) => {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (c, shown) = crate::zfs::cmd::command(&args);
            spawn(c, shown, own_group)
        }
        SourceSpec::Path(path) => {
            let mut file = File::open(path)
                .with_context(|| format!("cannot open source {}", path.display()))?;
            let meta = file
                .metadata()
                .with_context(|| format!("cannot read source {}", path.display()))?;
            let ft = meta.file_type();
            // Absolute, so that `list` and `show` say which file it was wherever they run;
            // links are kept (/dev/disk/by-id/... names a disk better than /dev/sdb does).
            let description = std::path::absolute(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string();
            if ft.is_dir() {
                bail!(
                    "source {} is a directory; back up a file, a block device, or a stream (e.g. --command 'tar -C {} -cf - .')",
                    path.display(),
                    path.display()
                );
            }
            if ft.is_block_device() {
                let mounts = crate::devices::mounts_on(meta.rdev());
                // Bind mounts list one filesystem many times: one warning says it.
                if let Some(m) = mounts.iter().find(|m| !m.read_only) {
                    eprintln!(
                        "warning: source {} is mounted read-write at {} (as {}): unless that filesystem is frozen (`fsfreeze -f {}`) or idle, the backup may hold a mix of old and new blocks; back up a snapshot, or freeze it for the backup",
                        path.display(),
                        m.at,
                        m.source,
                        m.at
                    );
                }
            }
            if ft.is_file() || ft.is_block_device() {
                let size = size_of(&mut file, path)?;
                let kind = if ft.is_block_device() {
                    SourceKind::BlockDevice
                } else {
                    SourceKind::File
                };
                let positional = ByOffset {
                    file: file
                        .try_clone()
                        .with_context(|| format!("cannot read source {}", path.display()))?,
                    direct: ft
                        .is_block_device()
                        .then(|| DirectReads::open(&file))
                        .flatten(),
                    shown: description.clone(),
                };
                if ft.is_block_device() && positional.direct.is_none() {
                    // Without direct reads, at least what can be dropped of the device's
                    // cache (`sys::drop_cached`) is read again from the disk.
                    let _ = sys::drop_cached(&file);
                }
                return Ok(OpenedSource {
                    info: SourceInfo { kind, description },
                    reader: Box::new(file),
                    size: Some(size),
                    file: Some(positional),
                    finish: Finish::Sized {
                        path: path.clone(),
                        size,
                    },
                });
            }
            // FIFOs, character devices, /dev/stdin: read as a stream.
            Ok(OpenedSource {
                info: SourceInfo {
                    kind: SourceKind::Stream,
                    description,
                },
                reader: Box::new(file),
                size: None,
                file: None,
                finish: Finish::Stream,
            })
        }
    }
}

/// The shell a `--command` (and a passphrase command) runs in: bash, found on PATH, with
/// `pipefail`, so that in `pg_dump db | gzip` a failing pg_dump fails the backup instead of
/// recording a cut dump (the pipeline's status would otherwise be gzip's); else `sh`, which
/// may not know `pipefail` (Debian's dash does not).
pub fn shell(cmd: &str) -> Command {
    let bash = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bash"))
            .find(|p| p.is_file())
    });
    let mut c = match bash {
        Some(bash) => {
            let mut c = Command::new(bash);
            c.args(["-o", "pipefail"]);
            c
        }
        None => Command::new("sh"),
    };
    c.arg("-c").arg(cmd);
    c
}

/// How a command failed, with a hint where pipefail is the likely reason: a stage killed by
/// SIGPIPE because a later one stopped reading early (`zcat x | head`).
fn command_failed(command: &str, status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let sigpipe =
        status.code() == Some(128 + libc::SIGPIPE) || status.signal() == Some(libc::SIGPIPE);
    let hint = if sigpipe {
        "; a stage of its pipeline was killed by SIGPIPE (a later one stopped reading early), which fails the command since it runs with pipefail: start it with `set +o pipefail;` if that is expected"
    } else {
        ""
    };
    format!("command `{command}` failed ({status}){hint}")
}

fn spawn(mut c: Command, shown: String, own_group: bool) -> Result<OpenedSource> {
    // The passphrases are ours, not the command's: in its environment they would reach every
    // program it runs (ssh's SendEnv, a crash dump).
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .env_remove("BLOCKVAULT_PASSWORD")
        .env_remove("BLOCKVAULT_NEW_PASSWORD");
    if own_group {
        c.process_group(0);
    }
    let mut child = c
        .spawn()
        .with_context(|| format!("starting command `{shown}`"))?;
    let Some(stdout) = child.stdout.take() else {
        bail!("command `{shown}`: no output pipe")
    };
    let _ = sys::grow_pipe(stdout.as_fd(), PIPE_BYTES);
    Ok(OpenedSource {
        info: SourceInfo {
            kind: SourceKind::Command,
            description: shown.clone(),
        },
        reader: Box::new(stdout),
        size: None,
        file: None,
        finish: Finish::Child {
            command: shown,
            _signals: own_group
                .then(|| sys::ForwardSignals::new(child.id()))
                .flatten(),
            own_group,
            child,
        },
    })
}

impl OpenedSource {
    /// Splits off the reader, so it can move to the reading thread while `finish` stays here.
    pub fn take_reader(&mut self) -> Box<dyn Read + Send> {
        std::mem::replace(&mut self.reader, Box::new(io::empty()))
    }

    /// For a file or device: the open file, for positional reads instead of `reader` (the two
    /// share one file offset, so use one or the other).
    pub fn take_file(&mut self) -> Option<ByOffset> {
        self.file.take()
    }

    /// Called after the last byte was read: fails if the source did not end the way a
    /// complete, consistent read ends.
    pub fn finish(mut self, bytes_read: u64) -> Result<()> {
        match std::mem::replace(&mut self.finish, Finish::Stream) {
            Finish::Stream => Ok(()),
            Finish::Sized { path, size } => {
                if bytes_read != size {
                    bail!(
                        "source {} changed size during the backup: it had {size} bytes, {bytes_read} were read; no version recorded",
                        path.display()
                    );
                }
                let mut f = File::open(&path)
                    .with_context(|| format!("reopening source {}", path.display()))?;
                let now = size_of(&mut f, &path)?;
                if now != size {
                    bail!(
                        "source {} changed size during the backup: {size} bytes when opened, {now} now; no version recorded",
                        path.display()
                    );
                }
                Ok(())
            }
            Finish::Child {
                command, mut child, ..
            } => {
                let status = child
                    .wait()
                    .with_context(|| format!("waiting for command `{command}`"))?;
                if !status.success() {
                    bail!("{}; no version recorded", command_failed(&command, status));
                }
                Ok(())
            }
        }
    }

    /// Why a run that failed while reading may really have failed: a command that already
    /// exited non-zero (`zfs send` of a missing snapshot ends its output early, and the
    /// stream then looks truncated). Waits briefly for a command that is still exiting.
    pub fn failure_note(&mut self) -> Option<String> {
        let Finish::Child {
            command,
            child,
            _signals,
            ..
        } = &mut self.finish
        else {
            return None;
        };
        let exited = exited_within(child, 20);
        if exited.is_some() {
            // Reaped: its group id may soon name someone else's, which no signal may reach.
            *_signals = None;
        }
        match exited {
            Some(status) if !status.success() => Some(command_failed(command, status)),
            _ => None,
        }
    }

    /// Stops a command source whose output is no longer wanted, with everything it started
    /// (its process group when it has one, else the tree of its descendants). The wait for it is bounded: a process stuck in
    /// the kernel ignores even SIGKILL, and the run must still end.
    pub fn abandon(mut self) {
        self.stop_child();
    }

    fn stop_child(&mut self) {
        if let Finish::Child {
            mut child,
            own_group,
            ..
        } = std::mem::replace(&mut self.finish, Finish::Stream)
        {
            // Not once it is reaped (`failure_note` may have): its number could be reused.
            if let Ok(None) = child.try_wait() {
                if own_group {
                    sys::kill_group(child.id());
                } else {
                    sys::kill_tree(child.id());
                }
            }
            exited_within(&mut child, 100);
        }
    }

    /// The process group a command source leads, to kill when it runs out of time.
    pub fn process_group(&self) -> Option<u32> {
        match &self.finish {
            Finish::Child {
                child,
                own_group: true,
                ..
            } => Some(child.id()),
            _ => None,
        }
    }
}

/// A source dropped on an error path (neither finished nor abandoned) still stops its command
/// and what it started: one that is not writing would otherwise never meet the closed pipe and
/// outlive the run.
impl Drop for OpenedSource {
    fn drop(&mut self) {
        self.stop_child();
    }
}

/// How `child` exited, waiting up to `tries` × 50 ms for it; None if it is still running (or
/// cannot be asked).
fn exited_within(child: &mut Child, tries: u32) -> Option<std::process::ExitStatus> {
    for _ in 0..tries {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Ok(Some(status)) => return Some(status),
            Err(_) => return None,
        }
    }
    None
}

/// Reads from `offset` until `buf` is full or the file ends; how much was read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where a file's holes are (`SEEK_DATA`/`SEEK_HOLE`), so that a chunk lying wholly in one is
/// known to be zeros without reading it: a sparse image's unused space costs neither reads
/// nor zero checks. Asked about ranges in ascending order, it makes about two calls per run
/// of data rather than one per chunk. A file that changes while it is read gets no more
/// promise than a plain read would give. Block devices report no holes.
pub struct Holes {
    file: File,
    /// [from, to): known to be a hole.
    hole: (u64, u64),
    /// [from, to): known to start with data at `from` and to have no hole before `to`.
    data: (u64, u64),
    /// The filesystem cannot say (or said something odd): read everything.
    off: bool,
}

impl Holes {
    /// `file` is borrowed for its descriptor's life: a duplicate is kept, whose offset the
    /// lookups move (positional reads do not use it).
    pub fn new(file: &File) -> io::Result<Holes> {
        Ok(Holes {
            file: file.try_clone()?,
            hole: (0, 0),
            data: (0, 0),
            off: false,
        })
    }

    /// True when `[start, end)` holds no data, so reads nothing but zeros.
    pub fn is_hole(&mut self, start: u64, end: u64) -> bool {
        if self.off || start >= end {
            return false;
        }
        if start >= self.hole.0 && end <= self.hole.1 {
            return true;
        }
        if start >= self.data.0 && start < self.data.1 {
            return false;
        }
        match sys::seek_data(&self.file, start) {
            Ok(Found::NoMoreData) => {
                self.hole = (start, u64::MAX);
                true
            }
            Ok(Found::At(d)) if d >= end => {
                self.hole = (start, d);
                true
            }
            Ok(Found::At(d)) if d >= start => {
                match sys::seek_hole(&self.file, d) {
                    Ok(Found::At(h)) if h > d => self.data = (d, h),
                    _ => self.off = true,
                }
                false
            }
            Ok(Found::At(_)) | Err(_) => {
                self.off = true;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Live (not zombie) processes whose process group is `pgid`.
    fn live_in_group(pgid: u32) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
            .filter(|stat| {
                // After the command name's closing parenthesis: state, ppid, pgrp.
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
            })
            .count()
    }

    fn command_pid(source: &OpenedSource) -> u32 {
        match &source.finish {
            Finish::Child { child, .. } => child.id(),
            _ => panic!("not a command source"),
        }
    }

    /// An error path drops the source without finishing it: a command that writes nothing
    /// never meets the closed pipe, so the drop must stop it, and with a group of its own,
    /// everything the shell started.
    #[test]
    fn a_dropped_command_source_stops_its_command() {
        let source =
            open(&SourceSpec::Command("sleep 60; echo late".into()), true).expect("starting sh");
        let pgid = source.process_group().expect("a group of its own");
        let t = Instant::now();
        while live_in_group(pgid) < 2 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live_in_group(pgid), 2, "sh and its sleep are running");
        drop(source);
        // The shell is reaped by the drop; its sleep, killed by the same signal, dies as soon
        // as the kernel gets round to it, which on a loaded machine is not at once.
        let t = Instant::now();
        while live_in_group(pgid) > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(live_in_group(pgid), 0, "the group is gone after the drop");

        let source =
            open(&SourceSpec::Command("exec sleep 60".into()), false).expect("starting sh");
        let pid = command_pid(&source);
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        drop(source);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the command was killed and reaped"
        );
    }
}
