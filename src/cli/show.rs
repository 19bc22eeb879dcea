use super::{GlobalArgs, rfc3339};
use crate::chunker::Chunking;
use crate::zfs::ZfsFacts;
use crate::zfs::facts::hex_guid;
use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;
use std::collections::HashSet;

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The series whose version to show.
    #[arg(long)]
    pub name: String,
    /// Version name or a unique prefix of one, or @snapshot for a ZFS series; the current
    /// version if omitted.
    #[arg(long)]
    pub version: Option<String>,
}

pub async fn run(g: &GlobalArgs, a: ShowArgs) -> Result<()> {
    let repo = g.open().await?;
    let version = super::resolve_version(&repo, &a.name, a.version.as_deref(), false).await?;
    let (m, _) = repo.load_manifest(&a.name, &version).await?;
    // A damaged pointer is the pointer's problem, not this version's: say so and show it.
    let current = match repo.current(&a.name).await {
        Ok(p) => p.is_some_and(|p| p.version == version),
        Err(e) if crate::error::is_damage(&e) => {
            eprintln!("warning: {e:#}");
            false
        }
        Err(e) => return Err(e),
    };
    let data = m.chunks.data().count() as u64;
    let unique: HashSet<_> = m.chunks.data().map(|(id, _)| id).collect();
    let chunking = match m.chunking {
        Chunking::Fixed { size } => format!("fixed {}", HumanBytes(u64::from(size))),
        Chunking::Cdc { min, avg, max } => {
            format!(
                "content-defined (FastCDC) {} / {} / {}",
                HumanBytes(u64::from(min)),
                HumanBytes(u64::from(avg)),
                HumanBytes(u64::from(max))
            )
        }
    };
    let zfs = match ZfsFacts::from_extra(&m.extra) {
        Ok(Some(z)) => {
            let loaded =
                crate::prune::load_series(&repo, &a.name, |w| eprintln!("warning: {w}")).await?;
            let chain: Vec<String> = loaded
                .chain(&version)
                .iter()
                .map(|l| l.info.name.clone())
                .collect();
            Some(serde_json::json!({
                "snapshot": z.snapshot,
                "guid": hex_guid(z.guid),
                "base_guid": hex_guid(z.base_guid),
                "incremental": z.is_incremental(),
                "creation": rfc3339(i64::try_from(z.creation).unwrap_or(i64::MAX)),
                "compound": z.compound,
                "substreams": z.substreams,
                "snapshots": z.snapshots.iter().map(|(g, n)| serde_json::json!({"guid": hex_guid(*g), "name": n})).collect::<Vec<_>>(),
                "restorable": !chain.is_empty(),
                "chain": chain,
            }))
        }
        Ok(None) => None,
        Err(why) => {
            eprintln!("warning: version {version} has unreadable ZFS facts: {why}");
            None
        }
    };
    if g.json {
        return super::print_json(&serde_json::json!({
            "series": m.series,
            "version": m.version,
            "time": rfc3339(m.time),
            "host": m.host,
            "source_kind": m.source.kind.as_str(),
            "source": m.source.description,
            "size": m.size,
            "chunking": match m.chunking {
                Chunking::Fixed { size } => serde_json::json!({ "kind": "fixed", "size": size }),
                Chunking::Cdc { min, avg, max } => {
                    serde_json::json!({ "kind": "cdc", "min": min, "avg": avg, "max": max })
                }
            },
            "chunks": m.chunks.len(),
            "chunks_data": data,
            "chunks_zero": m.chunks.len() - data,
            "chunks_unique": unique.len(),
            "parent": m.parent,
            "current": current,
            "stats": m.stats,
            "zfs": zfs,
        }));
    }
    outln!("series:    {}", m.series);
    outln!(
        "version:   {}{}",
        m.version,
        if current { " (current)" } else { "" }
    );
    outln!("time:      {}", rfc3339(m.time));
    outln!("host:      {}", m.host);
    outln!(
        "source:    {} {}",
        m.source.kind.as_str(),
        m.source.description
    );
    outln!("size:      {} bytes ({})", m.size, HumanBytes(m.size));
    outln!("chunking:  {chunking}");
    outln!(
        "chunks:    {} ({} with data, {} unique, {} zero)",
        m.chunks.len(),
        data,
        unique.len(),
        m.chunks.len() - data
    );
    outln!("parent:    {}", m.parent.as_deref().unwrap_or("none"));
    if let Some(z) = &zfs {
        outln!(
            "zfs:       {} guid {}, {}",
            z["snapshot"].as_str().unwrap_or(""),
            z["guid"].as_str().unwrap_or(""),
            if z["incremental"].as_bool().unwrap_or(false) {
                format!(
                    "incremental from guid {}",
                    z["base_guid"].as_str().unwrap_or("")
                )
            } else {
                "full stream".to_string()
            }
        );
        let chain: Vec<&str> = z["chain"]
            .as_array()
            .map(|c| c.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if chain.is_empty() {
            outln!("restore:   NOT RESTORABLE: no stored chain of streams reaches its base");
        } else {
            outln!("restore:   replays {}", chain.join(" → "));
        }
    }
    let s = &m.stats;
    outln!(
        "backup:    {} new ({}, {} stored), {} reused, {} zero, {:.1} s",
        super::count(s.chunks_new, "chunk"),
        HumanBytes(s.bytes_new),
        HumanBytes(s.bytes_new_stored),
        s.chunks_reused,
        s.chunks_zero,
        s.duration_ms as f64 / 1000.0
    );
    Ok(())
}
