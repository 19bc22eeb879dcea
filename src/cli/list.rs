use super::{GlobalArgs, rfc3339};
use crate::repo::Repo;
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

#[derive(Serialize)]
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
}

pub async fn rows(repo: &Repo, only: Option<&str>) -> Result<Vec<VersionRow>> {
    let series = match only {
        Some(s) => {
            // Resolving reports an unknown series with the names that do exist.
            repo.resolve_version(s, None).await?;
            vec![s.to_string()]
        }
        None => repo.list_series().await?,
    };
    let mut rows = Vec::new();
    for s in series {
        let current = repo.current(&s).await?.map(|p| p.version);
        for v in repo.list_versions(&s).await? {
            let (m, _) = repo.load_manifest(&s, &v).await?;
            rows.push(VersionRow {
                current: current.as_deref() == Some(v.as_str()),
                series: s.clone(),
                version: v,
                time: rfc3339(m.time),
                size: m.size,
                source_kind: m.source.kind.as_str(),
                source: m.source.description,
                host: m.host,
                chunks: m.chunks.len() as u64,
                bytes_new_stored: m.stats.bytes_new_stored,
            });
        }
    }
    Ok(rows)
}

pub async fn run(g: &GlobalArgs, a: ListArgs) -> Result<()> {
    let repo = g.open().await?;
    let rows = rows(&repo, a.name.as_deref()).await?;
    if g.json {
        return super::print_json(&rows);
    }
    if rows.is_empty() {
        println!("no backups yet in {}", repo.location());
        return Ok(());
    }
    let w = rows
        .iter()
        .map(|r| r.series.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<w$}  {:<22}  {:<20}  {:>10}  SOURCE",
        "SERIES", "VERSION", "TIME", "SIZE"
    );
    for r in &rows {
        let v = if r.current {
            format!("{} *", r.version)
        } else {
            r.version.clone()
        };
        println!(
            "{:<w$}  {:<22}  {:<20}  {:>10}  {} {}",
            r.series,
            v,
            r.time,
            HumanBytes(r.size).to_string(),
            r.source_kind,
            r.source
        );
    }
    println!("(* = current version of the series)");
    Ok(())
}
