//! Restore of a ZFS series into `zfs receive`: the chain that leads to a version (a full
//! stream, then each incremental in order), one `zfs receive` per stream.
//!
//! Streams are never concatenated: `cat full incr | zfs receive` applies only the first one
//! and says nothing. Before each incremental the target's newest snapshot must be the
//! stream's base (by GUID), and every stream is validated again as it is written, so a
//! stream that does not check out is cut off before its END record and `zfs receive`
//! discards it: the target keeps the snapshots already received and nothing half-applied.
//!
//! A target that exists already is continued from: when its newest snapshot is on the
//! chain, only the streams after it are received (catching up a replica).

use crate::error::Error;
use crate::format::lock::LockMode;
use crate::lock::LockGuard;
use crate::progress;
use crate::prune::{self, Series};
use crate::repo::Repo;
use crate::restore::{RestoreOptions, to_writer};
use crate::zfs::cmd::{self, Snapshot};
use crate::zfs::facts::hex_guid;
use crate::zfs::stream::StreamParser;
use crate::zfs::{Status, ZfsFacts};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::io::{self, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

/// Validates a ZFS stream on its way out: each buffer goes to the parser before it is
/// written, so the bytes that make a stream invalid (a bad checksum in END, trailing bytes)
/// never reach the receiver.
pub struct Validating<W: Write> {
    inner: W,
    parser: StreamParser,
    what: String,
}

impl<W: Write> Validating<W> {
    pub fn new(inner: W, what: String) -> Self {
        Validating {
            inner,
            parser: StreamParser::new(true),
            what,
        }
    }

    fn invalid(&self, e: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a valid ZFS send stream: {e}", self.what),
        )
    }
}

impl<W: Write> Write for Validating<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.parser.feed(buf).map_err(|e| self.invalid(e))?;
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    /// The end of the stream (the restore calls it once, after the last byte).
    fn flush(&mut self) -> io::Result<()> {
        match self.parser.finish() {
            Ok(Some(_)) => self.inner.flush(),
            Ok(None) => Err(self.invalid("it is not a ZFS stream at all")),
            Err(e) => Err(self.invalid(e)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub version: String,
    pub snapshot: String,
    pub guid: String,
    pub bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceiveSummary {
    pub series: String,
    pub version: String,
    pub target: String,
    /// Versions whose snapshots the target already had.
    pub skipped: Vec<String>,
    pub received: Vec<Received>,
    pub seconds: f64,
}

pub async fn receive(
    repo: Arc<Repo>,
    series: &str,
    version: &str,
    target: &str,
    opts: RestoreOptions,
) -> Result<ReceiveSummary> {
    let lock = LockGuard::acquire(
        &repo,
        LockMode::Shared,
        &format!("restore of {series} {version} into zfs receive {target}"),
    )
    .await?;
    let result = run(&repo, series, version, target, &opts).await;
    lock.release().await;
    result
}

fn newest(target: &str) -> Result<Option<Snapshot>> {
    Ok(cmd::snapshots(target)?.pop())
}

async fn run(
    repo: &Arc<Repo>,
    series: &str,
    version: &str,
    target: &str,
    opts: &RestoreOptions,
) -> Result<ReceiveSummary> {
    let started = Instant::now();
    let loaded = prune::load_series(repo, series, |w| eprintln!("warning: {w}")).await?;
    let chain = restore_chain(&loaded, version)?;
    let mut start = 0;
    let mut skipped = Vec::new();
    if cmd::dataset_exists(target)? {
        let have = newest(target)?;
        let at = have
            .as_ref()
            .and_then(|h| chain.iter().position(|(_, z)| z.guid == h.guid));
        match (at, have) {
            (Some(k), _) => {
                start = k + 1;
                skipped = chain[..start].iter().map(|(v, _)| v.clone()).collect();
            }
            (None, Some(h)) => bail!(
                "target {target} exists and its newest snapshot {} (guid {}) is not on the chain of version {version} of series {series:?}: receive into a new dataset, or roll the target back to a snapshot on the chain",
                h.name,
                hex_guid(h.guid)
            ),
            (None, None) => bail!(
                "target {target} exists and has no snapshot: a full stream would need it destroyed first; receive into a new dataset"
            ),
        }
    }
    let mut received = Vec::new();
    let before = cmd::file_systems(target)?;
    let replayed = replay(repo, series, &chain[start..], target, opts, &mut received).await;
    // Every stream is received unmounted (`-u`): a replication stream's child, mounted,
    // touches its parent (the mountpoint's lookup), and the next incremental would find the
    // parent modified since its snapshot. What was received is mounted at the end, also
    // when a later stream failed.
    let mounted = if received.is_empty() {
        Ok(())
    } else {
        cmd::mount_received(target, &before)
    };
    match (replayed, mounted) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(e)) => {
            return Err(e.context(format!(
                "{} stream(s) of series {series:?} were received into {target}, but not all of it could be mounted",
                received.len()
            )));
        }
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(m)) => {
            eprintln!("warning: mounting what was received into {target} failed too: {m:#}");
            return Err(e);
        }
    }
    Ok(ReceiveSummary {
        series: series.to_string(),
        version: version.to_string(),
        target: target.to_string(),
        skipped,
        received,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Receives `chain` into `target` in order, each stream only on top of its base; what was
/// received goes into `received`, whatever happens after.
async fn replay(
    repo: &Arc<Repo>,
    series: &str,
    chain: &[(String, ZfsFacts)],
    target: &str,
    opts: &RestoreOptions,
    received: &mut Vec<Received>,
) -> Result<()> {
    for (v, z) in chain {
        if z.is_incremental() {
            let have = newest(target)?;
            if have.as_ref().map(|h| h.guid) != Some(z.base_guid) {
                bail!(
                    "before receiving version {v} ({}): it needs {target}'s newest snapshot to have guid {}, but it is {}; nothing more was received",
                    z.snapshot,
                    hex_guid(z.base_guid),
                    have.map_or("missing".to_string(), |h| format!(
                        "{} (guid {})",
                        h.name,
                        hex_guid(h.guid)
                    ))
                );
            }
        }
        received.push(receive_one(repo, series, v, z, target, opts).await?);
        let have = newest(target)?;
        if have.as_ref().map(|h| h.guid) != Some(z.guid) {
            bail!(
                "zfs receive of version {v} into {target} succeeded but the newest snapshot there is not {} (guid {}); stopping",
                z.snapshot,
                hex_guid(z.guid)
            );
        }
    }
    Ok(())
}

/// The versions to replay for `version`, with their facts, oldest first.
pub fn restore_chain(loaded: &Series, version: &str) -> Result<Vec<(String, ZfsFacts)>> {
    let series = &loaded.name;
    match loaded.status(version) {
        None => bail!("series {series:?} has no version {version}"),
        Some(Status::SelfContained) => bail!(
            "version {version} of series {series:?} is not a ZFS send stream: restore it to a file, a device or standard output"
        ),
        Some(Status::Unreadable) => {
            bail!("version {version} of series {series:?} cannot be read; see `blockvault check`")
        }
        Some(Status::Missing { base_guid }) => bail!(
            "version {version} of series {series:?} cannot be restored: it is an incremental stream from snapshot GUID {}, and no restorable version of the series brings that snapshot",
            hex_guid(*base_guid)
        ),
        Some(Status::Restorable) => {}
    }
    loaded
        .chain(version)
        .into_iter()
        .map(|l| {
            l.zfs
                .clone()
                .map(|z| (l.info.name.clone(), z))
                .ok_or_else(|| {
                    anyhow!(
                        "internal error: version {} on a chain has no ZFS facts",
                        l.info.name
                    )
                })
        })
        .collect()
}

async fn receive_one(
    repo: &Arc<Repo>,
    series: &str,
    version: &str,
    z: &ZfsFacts,
    target: &str,
    opts: &RestoreOptions,
) -> Result<Received> {
    let started = Instant::now();
    let (m, _) = repo.load_manifest(series, version).await?;
    let m = Arc::new(m);
    let (mut c, shown) = if opts.zfs_rollback {
        cmd::command(&["receive", "-u", "-F", target])
    } else {
        cmd::command(&["receive", "-u", target])
    };
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    // Its complaints become part of our one-line error (or a warning when it succeeds); read
    // on a thread so that a chatty receiver cannot block on a full pipe.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut text);
            text
        })
    });
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("`{shown}`: no input pipe"))?;
    let pb = progress::bar(
        Some(m.size),
        &format!("receive {} ({version})", z.snapshot),
        opts.progress,
    );
    let what = format!("version {version} of series {series:?}");
    let (fetched, written) = to_writer(repo, &m, opts, &pb, Validating::new(stdin, what)).await;
    pb.finish_and_clear();
    // The pipe is closed (the writer thread owned it): the receiver sees the end, or the cut.
    // After a stop signal the writer may still hold it, stuck on a receiver that stalls, and
    // the receiver may take long to finish: it is stopped instead, which discards the stream.
    let status = loop {
        if crate::sys::stop_asked().is_some() {
            let _ = child.kill();
        }
        match child
            .try_wait()
            .with_context(|| format!("waiting for `{shown}`"))?
        {
            Some(status) => break status,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let said = stderr
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let hint = if said.contains("has been modified") && !opts.zfs_rollback {
        " (restore --force rolls the target back to its newest snapshot first, dropping what changed there since: zfs receive -F)"
    } else {
        ""
    };
    let said = if said.is_empty() {
        "it printed nothing".to_string()
    } else {
        format!("it said: {said}{hint}")
    };
    if let Err(e) = fetched {
        return Err(e.context(format!(
            "restoring version {version} ({}) into {target}: the stream was cut off, so zfs receive discarded it",
            z.snapshot
        )));
    }
    match written {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(Error::Damaged {
                what: format!("version {version} of series {series:?}"),
                source: crate::format::FormatError::Payload(format!(
                    "{e}; the stream was cut off before its end, so zfs receive discarded it"
                )),
            }
            .into());
        }
        Err(e) if !status.success() || e.kind() == io::ErrorKind::BrokenPipe => bail!(
            "`{shown}` of version {version} ({}) failed ({status}); {said}",
            z.snapshot
        ),
        Err(e) => return Err(anyhow!(e).context(format!("writing to `{shown}`"))),
        Ok(_) if !status.success() => bail!(
            "`{shown}` of version {version} ({}) failed ({status}); {said}",
            z.snapshot
        ),
        Ok(_) => {}
    }
    Ok(Received {
        version: version.to_string(),
        snapshot: z.snapshot.clone(),
        guid: hex_guid(z.guid),
        bytes: m.size,
        seconds: started.elapsed().as_secs_f64(),
    })
}
