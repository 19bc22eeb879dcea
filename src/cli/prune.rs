use super::{GlobalArgs, rfc3339};
use crate::format::lock::LockMode;
use crate::lock::LockGuard;
use crate::prune;
use crate::retention::{self, DAY, Decision, Hanoi, Policy, VersionInfo, Within};
use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;
use std::collections::HashSet;

/// Policies combine: a version is kept when any of them keeps it. The newest version, and any
/// version a kept one needs, are always kept. Calendar periods are in UTC.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The series to prune.
    #[arg(long)]
    pub name: String,
    /// Keep the N newest versions.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest version of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest version of each of the N most recent days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest version of each of the N most recent ISO weeks that have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest version of each of the N most recent months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest version of each of the N most recent years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every version made within DURATION before the newest one (y, m = months, d, h:
    /// 30d, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = Within::parse)]
    pub keep_within: Option<Within>,
    /// Weighted random thinning (s3bdbk): remove versions at random, those crowded closest
    /// to their predecessor first, until N remain; never the oldest or newest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub keep_weighted: Option<u32>,
    /// The seed for --keep-weighted, to repeat a plan; a random one is chosen and printed
    /// otherwise.
    #[arg(long, value_name = "S", requires = "keep_weighted")]
    pub seed: Option<u64>,
    /// Tower-of-Hanoi rotation (s3napback) with D discs: survivors 1, 2, 4, 8, … periods apart.
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub hanoi: Option<u32>,
    /// With --hanoi: also keep, for ever, the disc each completed cycle retires.
    #[arg(long, requires = "hanoi")]
    pub archive_oldest: bool,
    /// With --hanoi: the rotation period (s3napback's Frequency): 1d, 12h, 1w.
    #[arg(long, value_name = "PERIOD", requires = "hanoi", default_value = "1d", value_parser = parse_period)]
    pub hanoi_every: i64,
    /// Print the plan and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// A fixed length of time in seconds: a number with unit h, d or w.
fn parse_period(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a period (try 1d, 12h or 1w)"))?;
    let secs = match unit {
        "h" => 3600,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return Err(format!("{s:?}: the unit must be h, d or w")),
    };
    match n.checked_mul(secs) {
        Some(p) if n > 0 && p <= 100 * 365 * DAY => Ok(p),
        _ => Err(format!("{s:?}: a period must be between 1h and 100 years")),
    }
}

impl PruneArgs {
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or(0),
            hourly: self.keep_hourly.unwrap_or(0),
            daily: self.keep_daily.unwrap_or(0),
            weekly: self.keep_weekly.unwrap_or(0),
            monthly: self.keep_monthly.unwrap_or(0),
            yearly: self.keep_yearly.unwrap_or(0),
            within: self.keep_within,
            weighted: self.keep_weighted,
            hanoi: self.hanoi.map(|discs| Hanoi {
                discs,
                archive_oldest: self.archive_oldest,
                period_secs: self.hanoi_every,
            }),
        }
    }
}

#[derive(Serialize)]
struct Row<'a> {
    series: &'a str,
    version: &'a str,
    time: String,
    action: &'static str,
    reasons: &'a [String],
}

fn print_plan(g: &GlobalArgs, series: &str, plan: &[Decision], seed: Option<u64>) -> Result<()> {
    if g.json {
        let rows: Vec<Row> = plan
            .iter()
            .map(|d| Row {
                series,
                version: &d.version,
                time: rfc3339(d.time),
                action: if d.keep { "keep" } else { "remove" },
                reasons: &d.reasons,
            })
            .collect();
        super::print_json(&rows)?;
        if let Some(seed) = seed {
            eprintln!("weighted thinning used seed {seed} (repeat this plan with --seed {seed})");
        }
        return Ok(());
    }
    if g.quiet {
        return Ok(());
    }
    let kept = plan.iter().filter(|d| d.keep).count();
    println!(
        "plan for series {series}: keep {kept}, remove {} of {} versions",
        plan.len() - kept,
        plan.len()
    );
    if let Some(seed) = seed {
        println!("weighted thinning used seed {seed} (repeat this plan with --seed {seed})");
    }
    for d in plan {
        println!(
            "{:<6}  {:<22}  {:<20}  {}",
            if d.keep { "keep" } else { "remove" },
            d.version,
            rfc3339(d.time),
            d.reasons.join(", ")
        );
    }
    Ok(())
}

pub async fn run(g: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let policy = a.policy();
    if policy.is_empty() {
        bail!(
            "no retention policy given: prune needs at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, --keep-weighted or --hanoi with a value above zero"
        );
    }
    let seed = match (a.keep_weighted, a.seed) {
        (Some(_), None) => Some(rand::random::<u64>()),
        _ => None,
    };
    let repo = g.open().await?;
    // Resolving reports an unknown series with the names that do exist.
    repo.resolve_version(&a.name, None).await?;
    // A dry run writes nothing, not even a lock (as backup --dry-run).
    let lock = if a.dry_run {
        None
    } else {
        Some(LockGuard::acquire(&repo, LockMode::Shared, &format!("prune of {}", a.name)).await?)
    };
    let result = async {
        let series = prune::load_series(&repo, &a.name, |w| eprintln!("warning: {w}")).await?;
        let history = series.infos();
        let plan = retention::plan(&history, &policy, a.seed.or(seed).unwrap_or(0));
        print_plan(g, &a.name, &plan, seed)?;
        if a.dry_run {
            if !g.quiet && !g.json {
                println!("dry run: nothing was removed");
            }
            return Ok(());
        }
        let remove: Vec<String> = plan
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.version.clone())
            .collect();
        // The planner keeps every base a kept version needs; this re-check over the chains
        // themselves is the last line of DESIGN.md promise 3, so a planner bug cannot orphan
        // an incremental.
        let orphaned = series.orphaned_by(&remove);
        if !orphaned.is_empty() {
            bail!(
                "internal error: the plan would leave {} of series {} unrestorable; nothing was removed",
                orphaned.join(", "),
                a.name
            );
        }
        let removed: HashSet<&str> = remove.iter().map(String::as_str).collect();
        let survivors: Vec<VersionInfo> = history
            .into_iter()
            .filter(|v| !removed.contains(v.name.as_str()))
            .collect();
        let done = prune::remove_versions(&repo, &a.name, &remove, &survivors).await?;
        if !g.quiet && !g.json {
            println!(
                "removed {} versions of series {}{}",
                done.removed.len(),
                a.name,
                match &done.current_moved_to {
                    Some(v) => format!("; current is now {v}"),
                    None => String::new(),
                }
            );
        }
        Ok(())
    }
    .await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}
