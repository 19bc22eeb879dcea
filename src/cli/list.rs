use super::{GlobalArgs, rfc3339};
use crate::error::Error;
use crate::error::is_damage;
use crate::layout;
use crate::repo::Repo;
use crate::zfs::facts::hex_guid;
use crate::zfs::{Chains, ZfsFacts, chain::Node};
use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this series.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Serialize, Default)]
pub struct VersionRow {
    pub series: String,
    pub version: String,
    pub time: String,
    pub size: u64,
    pub current: bool,
    pub source_kind: &'static str,
    pub source: String,
    pub host: String,
    pub chunks: u64,
    pub bytes_new_stored: u64,
    /// The version this backup compared its chunks against (null for a first backup, or
    /// when the manifest is unreadable).
    pub parent: Option<String>,
    /// Why the manifest could not be read; the fields after `current` are then null in JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// The manifest could not be read at all (not only its ZFS facts).
    #[serde(skip)]
    pub unreadable: bool,
    /// Whether a restore of this version can succeed with what is stored: false for a
    /// damaged manifest, and for a ZFS incremental that no chain of stored streams reaches.
    pub restorable: bool,
    /// ZFS send streams: the snapshot (pool/fs@snap), its GUID, and the GUID of the snapshot
    /// it is incremental from ("0000000000000000" for a full stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_guid: Option<String>,
    /// The version this one is restored on top of (its ZFS base), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
}

/// What is wrong with a series' current pointer, said on stderr beside the list. Damage
/// (unreadable, missing, naming no version) makes `list` exit 3; a pointer behind the newest
/// version is only a note: a backup whose pointer write failed leaves it so until the next.
pub struct PointerNote {
    pub message: String,
    pub damage: bool,
}

fn pointer_note(
    series: &str,
    pointer: Result<Option<String>, String>,
    versions: &[VersionRow],
) -> Option<PointerNote> {
    let newest = versions.last()?;
    let newest = &newest.version;
    let (message, damage) = match pointer {
        Err(why) => (
            format!(
                "{why}: restores without --version fail until the next backup of the series rewrites it"
            ),
            true,
        ),
        Ok(None) => (
            format!(
                "series {series:?} has no current pointer (a first backup cut short after its manifest was written): restores without --version pick the newest version, {newest}"
            ),
            false,
        ),
        Ok(Some(p)) if !versions.iter().any(|r| r.version == p) => (
            format!(
                "the current pointer of series {series:?} names version {p}, which does not exist: restores without --version pick the newest version, {newest}"
            ),
            true,
        ),
        Ok(Some(p)) if p != *newest => (crate::repo::lagging_pointer(series, &p, newest), false),
        Ok(Some(_)) => return None,
    };
    Some(PointerNote { message, damage })
}

pub async fn rows(repo: &Repo, only: Option<&str>) -> Result<(Vec<VersionRow>, Vec<PointerNote>)> {
    let series = match only {
        Some(s) => {
            // Resolving reports an unknown series with the names that do exist.
            repo.resolve_version(s, None).await?;
            vec![s.to_string()]
        }
        None => repo.list_series().await?,
    };
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for s in series {
        let first = rows.len();
        let mut facts: Vec<Option<ZfsFacts>> = Vec::new();
        // The versions before the pointer: a forget moves the pointer before it deletes the
        // manifest, so a pointer read after the listing names a listed version.
        let versions = repo.list_versions(&s).await?;
        let pointer = match repo.current(&s).await {
            Ok(p) => Ok(p.map(|p| p.version)),
            Err(e) if is_damage(&e) => Err(format!("{e:#}")),
            Err(e) => return Err(e),
        };
        // A backup writes its manifest before moving the pointer: one that did both since
        // the listing leaves a pointer to a version that is new, not missing.
        let raced = match &pointer {
            Ok(Some(p)) if !versions.contains(p) => repo.list_versions(&s).await?.contains(p),
            _ => false,
        };
        let current = pointer.as_ref().ok().cloned().flatten();
        for v in versions {
            let is_current = current.as_deref() == Some(v.as_str());
            let m = match repo.load_manifest(&s, &v).await {
                Ok((m, _)) => m,
                // One damaged manifest must not hide every healthy version from the user.
                Err(e) if is_damage(&e) => {
                    rows.push(VersionRow {
                        series: s.clone(),
                        version: v,
                        current: is_current,
                        damaged: Some(format!("{e:#}")),
                        unreadable: true,
                        ..VersionRow::default()
                    });
                    facts.push(None);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (zfs, bad_zfs) = match ZfsFacts::from_extra(&m.extra) {
                Ok(z) => (z, None),
                Err(why) => (None, Some(format!("its ZFS facts are unreadable: {why}"))),
            };
            rows.push(VersionRow {
                current: is_current,
                series: s.clone(),
                version: v,
                time: rfc3339(m.time),
                size: m.size,
                source_kind: m.source.kind.as_str(),
                source: m.source.description,
                host: m.host,
                chunks: m.chunks.len(),
                bytes_new_stored: m.stats.bytes_new_stored,
                parent: m.parent,
                damaged: bad_zfs,
                unreadable: false,
                restorable: false,
                snapshot: zfs.as_ref().map(|z| z.snapshot.clone()),
                guid: zfs.as_ref().map(|z| hex_guid(z.guid)),
                base_guid: zfs.as_ref().map(|z| hex_guid(z.base_guid)),
                needs: None,
            });
            facts.push(zfs);
        }
        let these = &mut rows[first..];
        let nodes: Vec<Node> = these
            .iter()
            .zip(&facts)
            .map(|(r, z)| Node {
                name: &r.version,
                zfs: z.as_ref(),
                readable: r.damaged.is_none(),
            })
            .collect();
        let chains = Chains::resolve(&nodes);
        let needs: Vec<Option<String>> = (0..these.len())
            .map(|i| chains.needs(i).map(|p| these[p].version.clone()))
            .collect();
        let restorable: Vec<bool> = (0..these.len()).map(|i| chains.is_restorable(i)).collect();
        drop(nodes);
        for ((r, n), ok) in these.iter_mut().zip(needs).zip(restorable) {
            r.needs = n;
            r.restorable = ok && r.damaged.is_none();
        }
        if !raced {
            notes.extend(pointer_note(&s, pointer, &rows[first..]));
        }
    }
    if only.is_none() {
        // A pointer whose series has no manifest left: every version of it is gone.
        for key in repo.store().list(layout::CURRENT).await? {
            if let Some(s) = key
                .strip_prefix(layout::CURRENT)
                .and_then(layout::unescape_series)
                .filter(|s| layout::current(s) == key && !rows.iter().any(|r| r.series == *s))
            {
                notes.push(PointerNote {
                    message: format!("{key} is the current pointer of series {s:?}, which has no version left: its manifests are gone"),
                    damage: true,
                });
            }
        }
    }
    Ok((rows, notes))
}

/// Exit 3 after listing when any version or current pointer could not be read.
fn verdict(rows: &[VersionRow], notes: &[PointerNote]) -> Result<()> {
    for n in notes {
        eprintln!(
            "{}: {}",
            if n.damage { "damaged" } else { "note" },
            n.message
        );
    }
    let damaged: Vec<String> = rows
        .iter()
        .filter(|r| r.damaged.is_some())
        .map(|r| format!("{} {}", r.series, r.version))
        .collect();
    let pointers = notes.iter().filter(|n| n.damage).count();
    let what = match damaged.as_slice() {
        [] if pointers == 0 => return Ok(()),
        [] => String::new(),
        [one] => format!("the manifest of {one} is damaged"),
        many => format!(
            "the manifests of {} versions ({}) are damaged",
            many.len(),
            many.join(", ")
        ),
    };
    let pointers = match pointers {
        0 => String::new(),
        1 => "a current pointer is wrong".to_string(),
        n => format!("{n} current pointers are wrong"),
    };
    let both = if what.is_empty() || pointers.is_empty() {
        ""
    } else {
        "; "
    };
    Err(Error::DamageFound(format!(
        "{what}{both}{pointers} (see the list above; `blockvault check` tells more)"
    ))
    .into())
}

pub async fn run(g: &GlobalArgs, a: ListArgs) -> Result<()> {
    let repo = g.open().await?;
    let (rows, notes) = rows(&repo, a.name.as_deref()).await?;
    if g.json {
        // What an unreadable manifest would have said is unknown: null, not "" or 0.
        let mut out = serde_json::to_value(&rows)?;
        if let Some(items) = out.as_array_mut() {
            for (row, item) in rows.iter().zip(items) {
                if !row.unreadable {
                    continue;
                }
                for field in [
                    "time",
                    "size",
                    "source_kind",
                    "source",
                    "host",
                    "chunks",
                    "bytes_new_stored",
                ] {
                    if let Some(value) = item.get_mut(field) {
                        *value = serde_json::Value::Null;
                    }
                }
            }
        }
        super::print_json(&out)?;
        return verdict(&rows, &notes);
    }
    if rows.is_empty() {
        outln!("no backups yet in {}", repo.location());
        return verdict(&rows, &notes);
    }
    let w = rows
        .iter()
        .map(|r| r.series.len())
        .max()
        .unwrap_or(6)
        .max(6);
    // "2026-11-30T042255Z-11 *": a suffix and the mark can pass the usual 22 columns.
    let vw = rows
        .iter()
        .map(|r| r.version.len() + if r.current { 2 } else { 0 })
        .max()
        .unwrap_or(22)
        .max(22);
    outln!(
        "{:<w$}  {:<vw$}  {:<20}  {:>10}  SOURCE",
        "SERIES",
        "VERSION",
        "TIME",
        "SIZE"
    );
    for r in &rows {
        let v = if r.current {
            format!("{} *", r.version)
        } else {
            r.version.clone()
        };
        match &r.damaged {
            Some(why) => outln!("{:<w$}  {v:<vw$}  DAMAGED: {why}", r.series),
            None => match (&r.snapshot, &r.guid, &r.base_guid) {
                (Some(snap), Some(guid), Some(base)) => outln!(
                    "{:<w$}  {v:<vw$}  {:<20}  {:>10}  zfs {snap} guid {guid} {}{}",
                    r.series,
                    r.time,
                    HumanBytes(r.size).to_string(),
                    match &r.needs {
                        _ if base.bytes().all(|b| b == b'0') => "full".to_string(),
                        Some(n) => format!("incremental from guid {base} (needs {n})"),
                        None => format!("incremental from guid {base}"),
                    },
                    if r.restorable {
                        ""
                    } else {
                        "  NOT RESTORABLE: its base is not stored"
                    }
                ),
                _ => outln!(
                    "{:<w$}  {v:<vw$}  {:<20}  {:>10}  {} {}",
                    r.series,
                    r.time,
                    HumanBytes(r.size).to_string(),
                    r.source_kind,
                    r.source
                ),
            },
        }
    }
    outln!("(* = current version of the series)");
    verdict(&rows, &notes)
}
