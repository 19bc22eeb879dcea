//! Repository locks: shared for backups and restores, exclusive for garbage collection.
//!
//! A lock is an object under `locks/` with a heartbeat. Acquiring writes our lock, then lists
//! again: if a conflicting live lock is there (one that appeared while we wrote ours), we
//! remove ours and fail, naming the holder. Two racing processes may both back off; neither
//! can proceed believing it is alone. A lock whose heartbeat is older than the stale limit,
//! or whose holder is a dead process on this host, is ignored.
//!
//! A command that only reads (restore, check: [`Access::ReadOnly`]) goes on without a lock
//! when the store refuses to write one for lack of permission (read-only media, a directory
//! it may not write, read-only S3 credentials), after a warning: recovering from such a copy
//! must not need write access. What it gives up is gc's respect: a gc started meanwhile by a
//! client that can write does not see it, and may delete chunks it is about to read, which it
//! then reports as missing (never as other data). It still refuses to start while a live gc
//! lock is there, since listing needs no write.

use crate::error::Error;
use crate::format::lock::{LockInfo, LockMode};
use crate::format::{Kind, encode};
use crate::layout;
use crate::objects;
use crate::repo::{Repo, hostname, now_unix};
use crate::seal;
use anyhow::Result;
use rand::RngCore;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A lock without a heartbeat for this long is stale. Heartbeats come every
/// [`heartbeat_interval`], so a live holder is never this far behind.
pub const DEFAULT_STALE_SECS: i64 = 30 * 60;
pub const HEARTBEAT_SECS: u64 = 120;

/// Every `HEARTBEAT_SECS`, or a quarter of the stale limit when that is shorter: a holder must
/// beat well within half the limit to commit (`ensure_fresh`), however low the limit is set.
fn heartbeat_interval() -> Duration {
    Duration::from_secs(
        u64::try_from(stale_secs() / 4)
            .unwrap_or(1)
            .clamp(1, HEARTBEAT_SECS),
    )
}

/// What the command taking a lock will do to the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// It writes (backup, prune, forget, gc, key, ...): without its lock it must not run.
    #[default]
    ReadWrite,
    /// It only reads (restore, check): where the store refuses to write its lock, it runs
    /// without one (see the module doc).
    ReadOnly,
}

/// A lock taken, or, for a reader in a repository that refuses writes, the note that none is.
pub struct LockGuard {
    repo: Arc<Repo>,
    held: Option<Held>,
}

struct Held {
    name: String,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Unix seconds of the last heartbeat the store accepted.
    last_beat: Arc<AtomicI64>,
    /// Set when a heartbeat found the lock gone (`unlock --all` elsewhere): it is not put
    /// back, since a gc may already have run believing nobody held it.
    removed: Arc<std::sync::atomic::AtomicBool>,
    /// Asks the heartbeat to end between beats, never in the middle of one.
    stop: Arc<tokio::sync::Notify>,
}

/// The stale limit `BLOCKVAULT_LOCK_STALE_SECS` sets: whole seconds above zero, else an
/// error naming it. A limit of zero or below would make every other host's live lock stale,
/// and gc delete what their backups store; a value that silently meant the default would hide
/// a typo.
pub fn stale_secs_from_env() -> Result<i64, String> {
    match std::env::var("BLOCKVAULT_LOCK_STALE_SECS") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_STALE_SECS),
        Err(std::env::VarError::NotUnicode(v)) => Err(format!(
            "BLOCKVAULT_LOCK_STALE_SECS={v:?} is not a number of seconds"
        )),
        Ok(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "BLOCKVAULT_LOCK_STALE_SECS={v:?} must be a whole number of seconds above zero (the default is {DEFAULT_STALE_SECS}); every host sharing the repository must use the same value"
            )),
        },
    }
}

fn stale_secs() -> i64 {
    // The CLI refuses a bad value before it opens a repository (`stale_secs_from_env`); a
    // library caller that set one gets the default.
    stale_secs_from_env().unwrap_or(DEFAULT_STALE_SECS)
}

/// This host as its locks name it: the host name, then what tells this machine and process
/// namespace from another with the same name (a cloned VM, a container): the kernel's boot id
/// and the pid namespace. A lock is judged by its pid only where all of it matches; a pid
/// seen from another machine or namespace says nothing about the holder.
pub fn lock_host() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().replace('-', ""))
        .ok()
        .filter(|b| b.len() >= 16);
    let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok().and_then(|l| {
        let l = l.to_string_lossy().into_owned();
        l.strip_prefix("pid:[")?
            .strip_suffix(']')
            .map(str::to_string)
    });
    match (boot, pid_ns) {
        (Some(b), Some(ns)) => {
            let boot: String = b.chars().take(16).collect();
            format!("{} [boot {boot}, pid-ns {ns}]", hostname())
        }
        // Without them this host cannot tell itself from another of the same name.
        _ => hostname(),
    }
}

/// How long without a heartbeat makes a lock stale: no run still going is older than that
/// without a heartbeat newer.
pub fn stale_limit() -> Duration {
    Duration::from_secs(u64::try_from(stale_secs()).unwrap_or(0))
}

/// Whether the lock's holder is another process running on this host. Then it is no leftover,
/// whatever anyone says: removing its lock would let a gc delete what it is writing.
pub fn held_by_running_process_here(info: &LockInfo) -> bool {
    holder_here(info, &lock_host()) == Some(true)
}

/// For a lock taken on this host by another process: whether that process still runs. None
/// for a lock of another host, or of this process. A process with the holder's pid that
/// started after the lock was taken is not the holder (pids are reused).
fn holder_here(info: &LockInfo, host: &str) -> Option<bool> {
    // A bare host name (an older client's lock, or a host that cannot name its boot) could
    // be any machine of that name.
    if info.host != host || !host.ends_with(']') || info.pid == std::process::id() {
        return None;
    }
    if !crate::sys::process_exists(info.pid) {
        return Some(false);
    }
    // A second of slack: both times are rounded down to whole seconds.
    Some(crate::sys::process_started(info.pid).is_none_or(|t| t <= info.created + 1))
}

fn is_stale(info: &LockInfo, now: i64, host: &str) -> bool {
    // Saturating: the heartbeat is whatever the lock object says, i64::MIN included. One in
    // the future is live, since another host's clock may run ahead (format-spec 12).
    if now.saturating_sub(info.heartbeat) > stale_secs() {
        return true;
    }
    holder_here(info, host) == Some(false)
}

fn mode_word(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "shared",
        LockMode::Exclusive => "exclusive",
    }
}

fn describe(info: &LockInfo, name: &str) -> String {
    let mode = mode_word(info.mode);
    let since = jiff::Timestamp::from_second(info.created)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let ahead = info.heartbeat.saturating_sub(now_unix());
    // Such a lock never goes stale here: whoever meets it needs to know why.
    let future = if ahead > FUTURE_NOTED {
        format!(
            "; its last heartbeat is {ahead} s in the future (that host's clock runs ahead, or the lock was planted: `unlock --all` removes it once no run holds it)"
        )
    } else {
        String::new()
    };
    format!(
        "{mode} lock {name} held by {} on host {} (pid {}) since {since}{future}",
        info.purpose, info.host, info.pid
    )
}

/// A heartbeat further ahead of this host's clock than this is pointed out: more than clocks
/// kept in step drift apart.
const FUTURE_NOTED: i64 = 60;

/// What a lock object says, as far as this process can tell.
#[derive(Debug, Clone)]
pub enum LockState {
    Live(LockInfo),
    /// No heartbeat within the stale limit, or its process on this host is gone.
    Stale(LockInfo),
    /// It cannot be opened: damaged, another repository's, or a newer client's.
    Unreadable(String),
}

#[derive(Debug, Clone)]
pub struct LockEntry {
    pub name: String,
    pub state: LockState,
}

impl LockEntry {
    /// The lock in words: its mode, holder, host, pid and age, or why it cannot be read.
    pub fn describe(&self) -> String {
        match &self.state {
            LockState::Live(i) | LockState::Stale(i) => describe(i, &self.name),
            LockState::Unreadable(why) => format!("lock {} cannot be read ({why})", self.name),
        }
    }
}

/// Every lock object but `skip`, read and judged.
pub async fn list(repo: &Repo, skip: Option<&str>) -> Result<Vec<LockEntry>> {
    let now = now_unix();
    let host = lock_host();
    let mut out = Vec::new();
    for name in repo.store().list(layout::LOCKS).await? {
        if Some(name.as_str()) == skip {
            continue;
        }
        let bytes = match repo.store().get(&name).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let state = match objects::lock(repo.keys.seal.as_ref(), &name, &bytes) {
            Ok(i) if is_stale(&i, now, &host) => LockState::Stale(i),
            Ok(i) => LockState::Live(i),
            Err(e) => LockState::Unreadable(e.to_string()),
        };
        out.push(LockEntry { name, state });
    }
    Ok(out)
}

/// The lock that would keep `mode` from being taken now, in words; for a dry run, which
/// takes none.
pub async fn would_block(repo: &Repo, mode: LockMode) -> Result<Option<String>> {
    conflict(repo, mode, None).await
}

/// The first live lock (other than `ours`) that conflicts with taking `mode`.
async fn conflict(repo: &Repo, mode: LockMode, ours: Option<&str>) -> Result<Option<String>> {
    for e in list(repo, ours).await? {
        match &e.state {
            // An unreadable lock may be a live one from a newer client: respect it.
            LockState::Unreadable(_) => {
                return Ok(Some(format!(
                    "{}; remove it if no blockvault is running (`blockvault unlock --unreadable`)",
                    e.describe()
                )));
            }
            LockState::Stale(_) => {}
            LockState::Live(info) => {
                if mode == LockMode::Exclusive || info.mode == LockMode::Exclusive {
                    return Ok(Some(e.describe()));
                }
            }
        }
    }
    Ok(None)
}

fn seal_lock(repo: &Repo, name: &str, info: &LockInfo) -> Vec<u8> {
    seal::seal(
        Kind::Lock,
        repo.keys.seal.as_ref(),
        name,
        &encode(info),
        None,
    )
}

impl LockGuard {
    pub async fn acquire(repo: &Arc<Repo>, mode: LockMode, purpose: &str) -> Result<LockGuard> {
        if let Some(holder) = conflict(repo, mode, None).await? {
            return Err(Error::Locked {
                repo: repo.location(),
                holder,
            }
            .into());
        }
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        let name = layout::lock(&hex::encode(id));
        let now = now_unix();
        let info = LockInfo {
            mode,
            host: lock_host(),
            pid: std::process::id(),
            purpose: purpose.into(),
            created: now,
            heartbeat: now,
        };
        match repo
            .store()
            .put_new(&name, seal_lock(repo, &name, &info))
            .await
        {
            Ok(_) => {}
            Err(e) if repo.access() == Access::ReadOnly && e.refuses_writes() => {
                eprintln!(
                    "warning: {purpose} goes on without a lock: the repository refuses writes ({e}). A gc run meanwhile by a client that can write would not see it, and could delete chunks it still has to read (they would be reported missing)"
                );
                return Ok(LockGuard {
                    repo: repo.clone(),
                    held: None,
                });
            }
            Err(e) => {
                let which = match mode {
                    LockMode::Shared => "a shared",
                    LockMode::Exclusive => "the exclusive",
                };
                return Err(
                    anyhow::Error::new(e).context(format!("taking {which} lock for {purpose}"))
                );
            }
        }
        if let Some(holder) = conflict(repo, mode, Some(&name)).await? {
            let _ = repo.store().delete(&name).await;
            return Err(Error::Locked {
                repo: repo.location(),
                holder,
            }
            .into());
        }
        let last_beat = Arc::new(AtomicI64::new(now));
        let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(tokio::sync::Notify::new());
        let heartbeat = {
            let repo = repo.clone();
            let name = name.clone();
            let last_beat = last_beat.clone();
            let removed = removed.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut info = info;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(heartbeat_interval()) => {}
                        _ = stop.notified() => return,
                    }
                    if let Ok(false) = repo.store().exists(&name).await {
                        removed.store(true, Ordering::Relaxed);
                        return;
                    }
                    info.heartbeat = now_unix();
                    // A missed heartbeat only brings staleness closer; the next one may succeed.
                    if repo
                        .store()
                        .put(&name, seal_lock(&repo, &name, &info))
                        .await
                        .is_ok()
                    {
                        last_beat.store(info.heartbeat, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(LockGuard {
            repo: repo.clone(),
            held: Some(Held {
                name,
                heartbeat,
                last_beat,
                removed,
                stop,
            }),
        })
    }

    /// Fails if our lock may have looked stale to others, or was not there for them: no
    /// heartbeat reached the store for half the stale limit, or the lock was removed
    /// (`unlock --all`). A backup checks this before committing its manifest, so a gc that
    /// ran past this lock (and may have swept chunks this backup reuses) never sees a manifest
    /// appear that references them.
    pub async fn ensure_fresh(&self) -> Result<()> {
        // Only readers go without a lock, and they commit nothing; a writer that got here
        // without one must not commit either.
        let Some(held) = &self.held else {
            return Err(Error::Locked {
                repo: self.repo.location(),
                holder: "this process holds no lock of its own; nothing was committed".into(),
            }
            .into());
        };
        let gone = held.removed.load(Ordering::Relaxed)
            || matches!(self.repo.store().exists(&held.name).await, Ok(false));
        if gone {
            return Err(Error::Locked {
                repo: self.repo.location(),
                holder: format!(
                    "this process's own lock {} was removed while it ran (`unlock --all`?), so a gc may have deleted chunks it relies on; nothing was committed",
                    held.name
                ),
            }
            .into());
        }
        let since = now_unix() - held.last_beat.load(Ordering::Relaxed);
        if since > stale_secs() / 2 {
            return Err(Error::Locked {
                repo: self.repo.location(),
                holder: format!(
                    "this process's own lock {} had no accepted heartbeat for {since} s, so another process may have judged it stale; nothing was committed",
                    held.name
                ),
            }
            .into());
        }
        Ok(())
    }

    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            // A beat under way is let finish before the delete: aborted, its write could still
            // land after it (a blocking thread, a PUT the server already has) and leave a
            // fresh lock behind for the stale limit. Bounded, as a hung store must not keep
            // the process from ending.
            held.stop.notify_one();
            let mut heartbeat = held.heartbeat;
            if tokio::time::timeout(Duration::from_secs(10), &mut heartbeat)
                .await
                .is_err()
            {
                heartbeat.abort();
            }
            // A lock left behind by a failed delete goes stale by itself.
            let _ = self.repo.store().delete(&held.name).await;
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            held.heartbeat.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(heartbeat: i64) -> LockInfo {
        LockInfo {
            mode: LockMode::Exclusive,
            host: "elsewhere".into(),
            pid: 1,
            purpose: "gc".into(),
            created: 0,
            heartbeat,
        }
    }

    #[test]
    fn a_reused_pid_is_not_the_holder() {
        let host = lock_host();
        assert!(
            host.ends_with(']'),
            "this host cannot name its boot: {host}"
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("starting sleep");
        let mut info = lock(now_unix());
        info.host = host.clone();
        info.pid = child.id();
        info.created = now_unix();
        assert_eq!(holder_here(&info, &host), Some(true));
        // Taken long before that process started: its pid was reused, the holder is gone.
        info.created = 1_000_000_000;
        assert_eq!(holder_here(&info, &host), Some(false));
        assert!(is_stale(&info, now_unix(), &host));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(holder_here(&info, &host), Some(false));
    }

    #[test]
    fn heartbeats_from_any_time_are_judged_without_overflow() {
        let now = 1_800_000_000;
        assert!(is_stale(&lock(i64::MIN), now, "here"));
        assert!(is_stale(&lock(now - stale_secs() - 1), now, "here"));
        assert!(!is_stale(&lock(now), now, "here"));
        // Another host's clock ahead of ours: live, and said to be ahead when shown.
        assert!(!is_stale(&lock(i64::MAX), now, "here"));
        assert!(describe(&lock(i64::MAX), "locks/x").contains("in the future"));
        assert!(!describe(&lock(now_unix()), "locks/x").contains("in the future"));
    }
}
