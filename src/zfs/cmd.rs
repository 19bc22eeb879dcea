//! The `zfs` commands blockvault runs: `send` (a backup source), `list` and `get` (which
//! snapshots a pool has, and their GUIDs), and `receive` (a restore target).
//!
//! Only options that both OpenZFS and the older zfs-fuse understand are used: `zfs list` has
//! no `-p` and no `guid` column on zfs-fuse, so GUIDs come from one `zfs get -Hp` over the
//! listed names. `BLOCKVAULT_ZFS` names another `zfs` binary.

use anyhow::{Context, Result, anyhow, bail};
use std::process::{Command, Output, Stdio};

pub fn zfs_program() -> String {
    std::env::var("BLOCKVAULT_ZFS").unwrap_or_else(|_| "zfs".to_string())
}

/// A `zfs` command line, for running and for messages.
pub fn command(args: &[&str]) -> (Command, String) {
    let program = zfs_program();
    let mut c = Command::new(&program);
    c.args(args);
    (c, format!("{program} {}", args.join(" ")))
}

fn run(args: &[&str]) -> Result<Output> {
    let (mut c, shown) = command(args);
    c.stdin(Stdio::null()).output().with_context(|| {
        format!("cannot run `{shown}` (is ZFS installed? BLOCKVAULT_ZFS names another zfs command)")
    })
}

fn stderr_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `pool/fs@snap`
    pub name: String,
    pub guid: u64,
}

impl Snapshot {
    pub fn short_name(&self) -> &str {
        self.name.split_once('@').map_or("", |(_, s)| s)
    }
}

/// Whether a dataset (file system or volume) exists.
pub fn dataset_exists(dataset: &str) -> Result<bool> {
    Ok(run(&["list", "-H", "-o", "name", dataset])?
        .status
        .success())
}

/// The snapshots of `dataset` (not of its children), oldest first, with their GUIDs.
pub fn snapshots(dataset: &str) -> Result<Vec<Snapshot>> {
    let listed = run(&[
        "list",
        "-H",
        "-t",
        "snapshot",
        "-o",
        "name",
        "-s",
        "createtxg",
        "-r",
        "-d",
        "1",
        dataset,
    ])?;
    if !listed.status.success() {
        bail!(
            "cannot list the snapshots of {dataset}: {}",
            stderr_line(&listed)
        );
    }
    let prefix = format!("{dataset}@");
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix))
        .map(String::from)
        .collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["get", "-H", "-p", "-o", "name,value", "guid"];
    args.extend(names.iter().map(String::as_str));
    let got = run(&args)?;
    if !got.status.success() {
        bail!(
            "cannot read the GUIDs of the snapshots of {dataset}: {}",
            stderr_line(&got)
        );
    }
    let text = String::from_utf8_lossy(&got.stdout);
    let mut guids = std::collections::HashMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once('\t') else {
            continue;
        };
        let guid: u64 = value
            .trim()
            .parse()
            .map_err(|_| anyhow!("`zfs get -Hp guid {name}` printed {value:?}, not a GUID"))?;
        guids.insert(name.to_string(), guid);
    }
    names
        .into_iter()
        .map(|name| {
            let guid = *guids
                .get(&name)
                .ok_or_else(|| anyhow!("`zfs get guid` said nothing about {name}"))?;
            Ok(Snapshot { name, guid })
        })
        .collect()
}

/// `zfs snapshot NAME`; with `recursive`, of every descendant dataset too, atomically (`-r`).
pub fn create_snapshot(name: &str, recursive: bool) -> Result<()> {
    on_snapshot("snapshot", "take", name, recursive)
}

/// `zfs destroy NAME` of one snapshot (never a dataset: the name must hold an `@`); with
/// `recursive`, the snapshot of that name of every descendant too (`-r`).
pub fn destroy_snapshot(name: &str, recursive: bool) -> Result<()> {
    on_snapshot("destroy", "destroy", name, recursive)
}

/// `zfs VERB [-r] NAME` for a name that must be a snapshot's; the error says what could not
/// be done (`doing`) to which snapshot, with zfs's own words.
fn on_snapshot(verb: &str, doing: &str, name: &str, recursive: bool) -> Result<()> {
    split_snapshot(name)?;
    let out = if recursive {
        run(&[verb, "-r", name])?
    } else {
        run(&[verb, name])?
    };
    if !out.status.success() {
        bail!("cannot {doing} snapshot {name}: {}", stderr_line(&out));
    }
    Ok(())
}

/// One file system of a tree, as `zfs list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSystem {
    pub name: String,
    pub mounted: bool,
    /// `canmount=on` and a mountpoint of its own (not `none` or `legacy`): what `zfs
    /// receive` would mount.
    pub mountable: bool,
}

/// `dataset` and its descendant file systems; empty when `dataset` does not exist.
pub fn file_systems(dataset: &str) -> Result<Vec<FileSystem>> {
    if !dataset_exists(dataset)? {
        return Ok(Vec::new());
    }
    let listed = run(&[
        "list",
        "-H",
        "-r",
        "-t",
        "filesystem",
        "-o",
        "name,mounted,canmount,mountpoint",
        dataset,
    ])?;
    if !listed.status.success() {
        bail!(
            "cannot list the file systems under {dataset}: {}",
            stderr_line(&listed)
        );
    }
    Ok(String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            let [name, mounted, canmount, mountpoint] = fields[..] else {
                return None;
            };
            Some(FileSystem {
                name: name.to_string(),
                mounted: mounted == "yes",
                mountable: canmount == "on" && !["none", "legacy", "-"].contains(&mountpoint),
            })
        })
        .collect())
}

/// Mounts the file systems of `dataset`'s tree that `zfs receive` would have mounted had it
/// not been told `-u`: mountable ones, not mounted, except those in `before` (the tree as it
/// was) that were unmounted then: a replica kept unmounted stays so.
pub fn mount_received(dataset: &str, before: &[FileSystem]) -> Result<()> {
    for fs in file_systems(dataset)? {
        let kept_unmounted = before.iter().any(|b| b.name == fs.name && !b.mounted);
        if fs.mounted || !fs.mountable || kept_unmounted {
            continue;
        }
        let out = run(&["mount", &fs.name])?;
        if !out.status.success() {
            bail!("cannot mount {}: {}", fs.name, stderr_line(&out));
        }
    }
    Ok(())
}

/// `zfs send` of `snapshot`, incremental from `from` (`@snap`, or a full `pool/fs@snap`);
/// with `recursive`, a replication stream (`-R`) of the dataset and its descendants.
pub fn send_args(snapshot: &str, from: Option<&str>, recursive: bool) -> Vec<String> {
    let mut a = vec!["send".to_string()];
    if recursive {
        a.push("-R".into());
    }
    if let Some(f) = from {
        a.push("-i".into());
        a.push(f.into());
    }
    a.push(snapshot.into());
    a
}

/// Splits `pool/fs@snap` into its dataset and snapshot name, refusing anything else.
pub fn split_snapshot(name: &str) -> Result<(&str, &str)> {
    match name.split_once('@') {
        Some((d, s)) if !d.is_empty() && !s.is_empty() && !s.contains('@') => Ok((d, s)),
        _ => bail!("{name:?} is not a snapshot name: expected pool/dataset@snapshot"),
    }
}
