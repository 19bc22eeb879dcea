use super::{GlobalArgs, rfc3339, usage};
use crate::prune;
use crate::retention::{Decision, Hanoi, Policy, Within, parse_period};
use anyhow::Result;
use clap::Args;
use serde::Serialize;

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
    /// Keep every version made within DURATION before the newest one (y, m = months, w, d,
    /// h, largest first: 30d, 2w, 1y6m; there are no minutes).
    #[arg(long, value_name = "DURATION", value_parser = Within::parse)]
    pub keep_within: Option<Within>,
    /// Weighted random thinning (s3bdbk): remove versions at random, those crowded closest
    /// to their predecessor first, until N remain; never the oldest or newest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub keep_weighted: Option<u32>,
    /// The seed for --keep-weighted, to repeat a plan. Without it, one is taken from the
    /// series' stored versions (so a dry run and the real run after it make the same plan),
    /// and printed.
    #[arg(long, value_name = "S", requires = "keep_weighted")]
    pub seed: Option<u64>,
    /// Tower-of-Hanoi rotation (s3napback) with D discs: survivors 1, 2, 4, 8, … periods apart.
    #[arg(long, value_name = "D", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub hanoi: Option<u32>,
    /// With --hanoi: also keep, for ever, the disc each completed cycle retires.
    #[arg(long, requires = "hanoi")]
    pub archive_oldest: bool,
    /// With --hanoi: the rotation period (s3napback's Frequency): 1d, 12h, 1w, 30m.
    #[arg(long, value_name = "PERIOD", requires = "hanoi", default_value = "1d", value_parser = parse_period)]
    pub hanoi_every: i64,
    /// Print the plan and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    version: &'a str,
    time: String,
    action: &'static str,
    reasons: &'a [String],
}

/// `prune --json`: the plan, and what carrying it out did.
#[derive(Serialize)]
struct Report<'a> {
    series: &'a str,
    dry_run: bool,
    /// The seed of a weighted plan (`--seed` repeats it); null without --keep-weighted.
    seed: Option<u64>,
    plan: Vec<Row<'a>>,
    /// The versions removed: none in a dry run.
    removed: &'a [String],
    current_moved_to: Option<&'a str>,
    /// Requests made, by type: what the run cost on a store that bills per request.
    requests: crate::store::Requests,
}

/// Runs of at least this many neighbouring versions with the same action and reasons are
/// printed as one line: a long history's plan (hourly backups kept for a year are 8,760
/// versions) would otherwise bury the few versions a policy keeps among thousands of lines.
const RUN_SHOWN_AS_RANGE: usize = 4;

fn print_plan(series: &str, plan: &[Decision], seed: Option<u64>) {
    let kept = plan.iter().filter(|d| d.keep).count();
    outln!(
        "plan for series {series}: keep {kept}, remove {} of {}",
        plan.len() - kept,
        super::count(plan.len() as u64, "version")
    );
    if let Some(seed) = seed {
        outln!("weighted thinning used seed {seed} (repeat this plan with --seed {seed})");
    }
    let mut ranges = 0;
    for run in plan.chunk_by(|a, b| a.keep == b.keep && a.reasons == b.reasons) {
        let action = if run[0].keep { "keep" } else { "remove" };
        let reasons = run[0].reasons.join(", ");
        match run {
            [first, .., last] if run.len() >= RUN_SHOWN_AS_RANGE => {
                ranges += 1;
                outln!(
                    "{action:<6}  {} … {}  ({})  {reasons}",
                    first.version,
                    last.version,
                    super::count(run.len() as u64, "version"),
                );
            }
            _ => {
                for d in run {
                    outln!(
                        "{action:<6}  {:<22}  {:<20}  {reasons}",
                        d.version,
                        rfc3339(d.time)
                    );
                }
            }
        }
    }
    if ranges > 0 {
        outln!(
            "(runs of neighbouring versions with the same reasons are shown as ranges; --json lists each version)"
        );
    }
}

pub async fn run(g: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let policy = a.policy();
    if policy.is_empty() {
        return Err(usage(
            "no retention policy given: prune needs at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, --keep-weighted or --hanoi with a value above zero",
        ));
    }
    let repo = g.open().await?;
    let requests_before = repo.store().requests();
    let seed = match a.seed {
        Some(s) => prune::Seed::Given(s),
        None => prune::Seed::Stored { leaving_out: None },
    };
    let done = prune::apply(&repo, &a.name, &policy, seed, a.dry_run, None, |w| {
        eprintln!("warning: {w}")
    })
    .await?;
    if g.json {
        let (removed, moved) = match &done.removal {
            Some(r) => (&r.removed[..], r.current_moved_to.as_deref()),
            None => (&[][..], None),
        };
        return super::print_json(&Report {
            series: &a.name,
            dry_run: a.dry_run,
            seed: done.seed,
            plan: done
                .plan
                .iter()
                .map(|d| Row {
                    version: &d.version,
                    time: rfc3339(d.time),
                    action: if d.keep { "keep" } else { "remove" },
                    reasons: &d.reasons,
                })
                .collect(),
            removed,
            current_moved_to: moved,
            requests: repo.store().requests().since(requests_before),
        });
    }
    if g.quiet {
        return Ok(());
    }
    let requests = repo.store().requests().since(requests_before);
    print_plan(&a.name, &done.plan, done.seed);
    match done.removal {
        None => outln!("dry run: nothing was removed"),
        Some(r) => outln!(
            "removed {} of series {}{}",
            super::count(r.removed.len() as u64, "version"),
            a.name,
            match &r.current_moved_to {
                Some(v) => format!("; current is now {v}"),
                None => String::new(),
            }
        ),
    }
    if let Some(line) = super::requests_line(&requests) {
        outln!("{line}");
    }
    Ok(())
}
