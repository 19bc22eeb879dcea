//! Which stored ZFS streams can be restored, and what each one needs: chains by GUID, never by
//! name (a snapshot destroyed and re-created under the same name is another snapshot).
//!
//! Every stored stream is an edge `base_guid → guid`. A version is **restorable** when a path
//! of stored, readable streams reaches it from a full stream (base 0). Its chain is the
//! shortest such path (ties go to the newest version, whose manifest was written last), and
//! what it **needs** is the version before it on that chain. Only a stream's final snapshot
//! counts as a base: an incremental on top of an intermediate snapshot of a `-I` stream would
//! need `zfs receive -F` to roll the target back, which a restore never does.
//!
//! This is pure: versions in, statuses out. `forget` and `prune` ask [`orphaned_by`] before
//! they remove anything (zfs2s3's rule, DESIGN.md promise 3), and `restore --zfs-receive`
//! replays [`Chains::chain`].

use super::ZfsFacts;
use std::collections::HashMap;

/// One version of a series, in version order (oldest first).
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub name: &'a str,
    /// None: not a ZFS stream, or a manifest that could not be read (see `readable`).
    pub zfs: Option<&'a ZfsFacts>,
    pub readable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not a ZFS stream: a block image or plain stream, restorable on its own.
    SelfContained,
    /// Its manifest could not be read, so nothing can be said or built on it.
    Unreadable,
    /// A full stream, or an incremental that a chain of stored streams reaches.
    Restorable,
    /// An incremental whose base no stored, restorable stream brings.
    Missing { base_guid: u64 },
}

#[derive(Debug, Clone)]
pub struct Chains {
    status: Vec<Status>,
    /// The version received just before this one on its chain.
    prev: Vec<Option<usize>>,
}

impl Chains {
    pub fn resolve(nodes: &[Node]) -> Chains {
        let n = nodes.len();
        let mut status = vec![Status::SelfContained; n];
        let mut prev = vec![None; n];
        let mut by_base: HashMap<u64, Vec<usize>> = HashMap::new();
        // The version a receiver reaching each GUID should come through, first found = shortest.
        let mut best: HashMap<u64, usize> = HashMap::new();
        let mut queue = std::collections::VecDeque::new();
        // Newest first, so that among equally short chains the newest version wins.
        for i in (0..n).rev() {
            let node = &nodes[i];
            let Some(z) = node.zfs.filter(|_| node.readable) else {
                if !node.readable {
                    status[i] = Status::Unreadable;
                }
                continue;
            };
            if z.base_guid == 0 {
                status[i] = Status::Restorable;
                if let std::collections::hash_map::Entry::Vacant(e) = best.entry(z.guid) {
                    e.insert(i);
                    queue.push_back(z.guid);
                }
            } else {
                status[i] = Status::Missing {
                    base_guid: z.base_guid,
                };
                by_base.entry(z.base_guid).or_default().push(i);
            }
        }
        while let Some(g) = queue.pop_front() {
            let Some(&from) = best.get(&g) else { continue };
            for &i in by_base.get(&g).map(Vec::as_slice).unwrap_or_default() {
                if status[i] == Status::Restorable || i == from {
                    continue;
                }
                status[i] = Status::Restorable;
                prev[i] = Some(from);
                let Some(z) = nodes[i].zfs else { continue };
                if let std::collections::hash_map::Entry::Vacant(e) = best.entry(z.guid) {
                    e.insert(i);
                    queue.push_back(z.guid);
                }
            }
        }
        Chains { status, prev }
    }

    pub fn status(&self, i: usize) -> &Status {
        &self.status[i]
    }

    pub fn is_restorable(&self, i: usize) -> bool {
        matches!(self.status[i], Status::SelfContained | Status::Restorable)
    }

    /// The version this one cannot be restored without, if any.
    pub fn needs(&self, i: usize) -> Option<usize> {
        self.prev[i]
    }

    /// The versions to receive, in order, ending with `i`; empty when `i` is not restorable.
    pub fn chain(&self, i: usize) -> Vec<usize> {
        if !self.is_restorable(i) {
            return Vec::new();
        }
        let mut out = vec![i];
        let mut at = i;
        while let Some(p) = self.prev[at] {
            // `prev` only ever points at a version reached earlier in the search, so this
            // ends; the bound is a guard, not a rule.
            if out.len() > self.prev.len() {
                break;
            }
            out.push(p);
            at = p;
        }
        out.reverse();
        out
    }
}

/// The versions that are restorable now but would not be once `remove` are gone (indices into
/// `nodes`, oldest first). Removing versions is refused while this is not empty.
pub fn orphaned_by(nodes: &[Node], remove: &[usize]) -> Vec<usize> {
    let before = Chains::resolve(nodes);
    let kept: Vec<usize> = (0..nodes.len()).filter(|i| !remove.contains(i)).collect();
    let after_nodes: Vec<Node> = kept.iter().map(|&i| nodes[i]).collect();
    let after = Chains::resolve(&after_nodes);
    kept.iter()
        .enumerate()
        .filter(|&(j, &i)| before.is_restorable(i) && !after.is_restorable(j))
        .map(|(_, &i)| i)
        .collect()
}

/// The base `--auto-incremental` sends from: of the snapshots the pool has before `target`
/// (`pool` oldest first), the newest one that a restorable stored version brings, matched by
/// GUID. Returns its position in `pool` and the stored version's index in `nodes`.
pub fn pick_base(
    nodes: &[Node],
    pool: &[super::cmd::Snapshot],
    target: &str,
) -> Option<(usize, usize)> {
    let end = pool.iter().position(|s| s.name == target)?;
    let chains = Chains::resolve(nodes);
    let mut stored: HashMap<u64, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Some(z) = n.zfs
            && chains.status(i) == &Status::Restorable
        {
            // Later (newer) versions overwrite: the newest copy is the one to build on.
            stored.insert(z.guid, i);
        }
    }
    pool[..end]
        .iter()
        .enumerate()
        .rev()
        .find_map(|(p, s)| stored.get(&s.guid).map(|&i| (p, i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(base: u64, guid: u64) -> ZfsFacts {
        ZfsFacts {
            snapshot: format!("tank/vm@s{guid}"),
            guid,
            base_guid: base,
            creation: guid,
            compound: false,
            substreams: 1,
            features: 0,
            snapshots: vec![(guid, format!("tank/vm@s{guid}"))],
        }
    }

    fn nodes<'a>(names: &'a [String], f: &'a [Option<ZfsFacts>]) -> Vec<Node<'a>> {
        names
            .iter()
            .zip(f)
            .map(|(n, z)| Node {
                name: n,
                zfs: z.as_ref(),
                readable: true,
            })
            .collect()
    }

    #[test]
    fn a_chain_is_replayed_from_its_full_stream() {
        let names: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
        let f = vec![
            Some(facts(0, 1)),
            Some(facts(1, 2)),
            Some(facts(2, 3)),
            Some(facts(9, 4)),
        ];
        let ns = nodes(&names, &f);
        let c = Chains::resolve(&ns);
        assert_eq!(c.chain(2), vec![0, 1, 2]);
        assert_eq!(c.needs(2), Some(1));
        assert_eq!(c.needs(0), None);
        assert_eq!(c.status(3), &Status::Missing { base_guid: 9 });
        assert!(c.chain(3).is_empty());
        // Removing the middle orphans the last; removing the unrestorable one orphans nothing.
        assert_eq!(orphaned_by(&ns, &[1]), vec![2]);
        assert_eq!(orphaned_by(&ns, &[0]), vec![1, 2]);
        assert!(orphaned_by(&ns, &[3]).is_empty());
        assert!(orphaned_by(&ns, &[2]).is_empty());
    }

    #[test]
    fn a_second_copy_of_a_base_lets_either_go_but_not_both() {
        // Two full sends of the same snapshot (GUID 1), then an incremental on it.
        let names: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
        let f = vec![Some(facts(0, 1)), Some(facts(0, 1)), Some(facts(1, 2))];
        let ns = nodes(&names, &f);
        let c = Chains::resolve(&ns);
        assert_eq!(c.chain(2), vec![1, 2], "the newest of equal chains");
        assert!(orphaned_by(&ns, &[0]).is_empty());
        assert!(orphaned_by(&ns, &[1]).is_empty());
        assert_eq!(orphaned_by(&ns, &[0, 1]), vec![2]);
    }

    #[test]
    fn the_shortest_chain_wins_and_plain_versions_stand_alone() {
        // v0 full(1), v1 1→2, v2 2→3, v3 full(2) (a later full send of snapshot 2), v4 block image.
        let names: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
        let f = vec![
            Some(facts(0, 1)),
            Some(facts(1, 2)),
            Some(facts(2, 3)),
            Some(facts(0, 2)),
            None,
        ];
        let ns = nodes(&names, &f);
        let c = Chains::resolve(&ns);
        assert_eq!(c.chain(2), vec![3, 2]);
        assert_eq!(c.status(4), &Status::SelfContained);
        assert_eq!(c.chain(4), vec![4]);
        assert!(orphaned_by(&ns, &[0, 1]).is_empty());
        assert_eq!(orphaned_by(&ns, &[1, 3]), vec![2]);
    }

    #[test]
    fn auto_incremental_builds_on_the_newest_snapshot_both_sides_have() {
        use super::super::cmd::Snapshot;
        let snap = |n: &str, g: u64| Snapshot {
            name: format!("tank/vm@{n}"),
            guid: g,
        };
        let names: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
        let f = vec![Some(facts(0, 1)), Some(facts(1, 2)), Some(facts(2, 3))];
        let ns = nodes(&names, &f);
        // The pool still has 1 and 2, and 3 under a name that now means another snapshot.
        let pool = vec![snap("a", 1), snap("b", 2), snap("c", 33), snap("d", 4)];
        assert_eq!(pick_base(&ns, &pool, "tank/vm@d"), Some((1, 1)));
        assert_eq!(pick_base(&ns, &pool, "tank/vm@b"), Some((0, 0)));
        assert_eq!(pick_base(&ns, &pool, "tank/vm@a"), None);
        assert_eq!(pick_base(&ns, &pool, "tank/vm@zz"), None);
        let other = vec![snap("x", 7), snap("d", 4)];
        assert_eq!(
            pick_base(&ns, &other, "tank/vm@d"),
            None,
            "nothing in common: full"
        );
    }

    #[test]
    fn unreadable_versions_carry_nothing_and_cycles_end() {
        let names: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
        let f = vec![Some(facts(0, 1)), Some(facts(1, 2)), Some(facts(2, 1))];
        let mut ns = nodes(&names, &f);
        let c = Chains::resolve(&ns);
        // v2 brings GUID 1 again from 2: reachable, and the walk back still ends.
        assert_eq!(c.chain(2), vec![0, 1, 2]);
        ns[0].readable = false;
        ns[0].zfs = None;
        let c = Chains::resolve(&ns);
        assert_eq!(c.status(0), &Status::Unreadable);
        assert_eq!(c.status(1), &Status::Missing { base_guid: 1 });
        assert_eq!(c.status(2), &Status::Missing { base_guid: 2 });
    }
}
