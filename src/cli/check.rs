use super::GlobalArgs;
use crate::check::{
    self, CheckOptions, CheckReport, DEFAULT_IN_FLIGHT, DEFAULT_IN_FLIGHT_LOCAL, Subset,
};
use crate::error::Error;
use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;

/// Exits 3 when anything is damaged, naming each damaged version and the byte ranges affected.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only this series (its manifests, pointer and chunks).
    #[arg(long)]
    pub name: Option<String>,
    /// Also fetch every referenced chunk, authenticate it and re-hash its content.
    #[arg(long)]
    pub read_data: bool,
    /// With --read-data: only this share of the chunks, chosen at random (e.g. 10%).
    #[arg(long, value_name = "PERCENT", requires = "read_data", value_parser = parse_percent)]
    pub subset: Option<f64>,
    /// With --subset: choose the chunks by this seed (the same seed picks the same chunks);
    /// a random one is used and printed otherwise.
    #[arg(long, value_name = "S", requires = "subset")]
    pub seed: Option<u64>,
    /// Objects fetched at once [default: 8 from a local directory, 16 from S3].
    #[arg(long, value_name = "N", value_parser = super::parse_in_flight)]
    pub in_flight: Option<usize>,
    /// With --read-data: move the chunks found damaged to quarantine/ (each is read twice
    /// first), so that `backup --heal` of a source that still holds their data stores them
    /// again.
    /// Needs the exclusive lock, as gc, and the whole repository: a chunk is shared by every
    /// series that holds its data.
    #[arg(long, requires = "read_data", conflicts_with = "name")]
    pub repair: bool,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let n: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (try 10%)"))?;
    if n.is_finite() && n > 0.0 && n <= 100.0 {
        Ok(n)
    } else {
        Err(format!(
            "{s:?}: the subset must be above 0% and at most 100%"
        ))
    }
}

fn ranges(r: &[(u64, u64)]) -> String {
    let shown: Vec<String> = r.iter().take(8).map(|(a, b)| format!("{a}..{b}")).collect();
    let more = if r.len() > 8 {
        format!(" and {} more ranges", r.len() - 8)
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

fn print_text(r: &CheckReport) {
    for p in &r.problems {
        let at = match &p.version {
            Some(v) => format!("series {:?} version {v}", p.series),
            None => format!("series {:?}", p.series),
        };
        let bytes = if p.ranges.is_empty() {
            String::new()
        } else {
            format!(", bytes {}", ranges(&p.ranges))
        };
        outln!("DAMAGED {} ({at}{bytes}): {}", p.object, p.reason);
    }
    for n in &r.notes {
        outln!("note: {n}");
    }
    outln!(
        "checked {} series, {}: {} referenced, {} stored ({} missing, {} not referenced) in {:.1} s{}",
        r.series,
        super::count(r.versions, "version"),
        super::count(r.chunks_referenced, "chunk"),
        r.chunks_stored,
        r.chunks_missing,
        r.chunks_unreferenced,
        r.seconds,
        super::peak_memory(r.peak_rss_bytes)
    );
    if r.read_data {
        let subset = match (r.subset_percent, r.seed) {
            (Some(p), Some(seed)) if p < 100.0 => format!(" ({p}% subset, seed {seed})"),
            _ => String::new(),
        };
        outln!(
            "read {} ({}, {}){subset}: {} damaged",
            super::count(r.chunks_read, "chunk"),
            HumanBytes(r.bytes_read),
            super::rate(r.mb_per_s),
            r.chunks_damaged
        );
    }
    if let Some(line) = super::requests_line(&r.requests) {
        outln!("{line}");
    }
    if r.chunks_quarantined > 0 {
        outln!(
            "moved {} to {} (--repair); `backup --heal` of each damaged series, from a source that still holds the data, stores them again; delete {} yourself once you no longer need them",
            super::count(r.chunks_quarantined, "damaged chunk"),
            crate::layout::QUARANTINE,
            crate::layout::QUARANTINE
        );
    }
    if r.is_ok() {
        outln!("no damage found");
    } else if !r.damaged_versions.is_empty() {
        outln!(
            "{}: {}",
            super::count(r.damaged_versions.len() as u64, "damaged version"),
            crate::error::listed(&r.damaged_versions, 20)
        );
    }
}

pub async fn run(g: &GlobalArgs, a: CheckArgs) -> Result<()> {
    let repo = g.open().await?;
    if let Some(s) = &a.name {
        // Reports an unknown series with the names that do exist.
        repo.resolve_version(s, None).await?;
    }
    let read_data = a.read_data.then(|| Subset {
        percent: a.subset.unwrap_or(100.0),
        seed: a.seed.unwrap_or_else(rand::random),
    });
    let location = repo.location();
    let local = repo.store().is_local();
    let report = check::check(
        repo,
        CheckOptions {
            only: a.name.clone(),
            read_data,
            in_flight: a.in_flight.unwrap_or(if local {
                DEFAULT_IN_FLIGHT_LOCAL
            } else {
                DEFAULT_IN_FLIGHT
            }),
            repair: a.repair,
            progress: g.progress(),
        },
    )
    .await?;
    if g.json {
        super::print_json(&report)?;
    } else if !g.quiet {
        print_text(&report);
    }
    if report.is_ok() {
        return Ok(());
    }
    let versions = match report.damaged_versions.len() {
        0 => String::new(),
        n => format!(
            "; {n} damaged version{}: {}",
            if n == 1 { "" } else { "s" },
            crate::error::listed(&report.damaged_versions, 10)
        ),
    };
    let repair = if report.chunks_repairable > 0 {
        "; `check --read-data --repair` moves damaged chunks aside, and then `backup --heal` stores them again"
    } else if report.chunks_missing + report.chunks_quarantined > 0 {
        "; `backup --heal` of a source that still holds the data stores missing chunks again"
    } else {
        ""
    };
    Err(Error::DamageFound(format!(
        "the repository at {location} is damaged: {} found{versions} (see the report above){repair}",
        super::count(report.problems.len() as u64, "problem")
    ))
    .into())
}
