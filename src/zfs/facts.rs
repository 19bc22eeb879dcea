//! The facts about a ZFS send stream that a manifest records, in its `extra` map under
//! `zfs.*` keys (format-spec 6.4.1), so readers that predate ZFS support still decode it.
//!
//! A stream may carry several snapshots (`zfs send -R`, `-I`): the version stands for the
//! **top** dataset's last snapshot (the one named on the command line), and needs the base
//! of the top dataset's first incremental. Child datasets of a `-R` stream ride along.

use super::stream::StreamInfo;
use std::collections::BTreeMap;

pub const SNAPSHOT: &str = "zfs.snapshot";
pub const GUID: &str = "zfs.guid";
pub const BASE_GUID: &str = "zfs.base_guid";
pub const CREATION: &str = "zfs.creation";
pub const COMPOUND: &str = "zfs.compound";
pub const SUBSTREAMS: &str = "zfs.substreams";
pub const FEATURES: &str = "zfs.features";
pub const SNAPSHOTS: &str = "zfs.snapshots";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsFacts {
    /// `pool/fs@snap`: the snapshot this version brings a receiver to.
    pub snapshot: String,
    pub guid: u64,
    /// The GUID of the snapshot a receiver must already have; 0 for a full stream.
    pub base_guid: u64,
    /// The snapshot's creation time (Unix seconds), from its BEGIN record.
    pub creation: u64,
    /// `zfs send -R` or `-I`: a compound stream of several substreams.
    pub compound: bool,
    pub substreams: u32,
    /// Feature flags of the BEGIN records (OR of all substreams).
    pub features: u64,
    /// Every snapshot of the top dataset the stream brings, oldest first: (GUID, name).
    pub snapshots: Vec<(u64, String)>,
}

fn dataset_of(name: &str) -> &str {
    name.split_once('@').map_or(name, |(d, _)| d)
}

impl ZfsFacts {
    /// Whether a receiver needs an earlier snapshot to apply this stream.
    pub fn is_incremental(&self) -> bool {
        self.base_guid != 0
    }

    /// `@snap` of `pool/fs@snap`.
    pub fn short_name(&self) -> &str {
        self.snapshot
            .split_once('@')
            .map_or(self.snapshot.as_str(), |(_, s)| s)
    }

    pub fn dataset(&self) -> &str {
        dataset_of(&self.snapshot)
    }

    /// The facts of a validated stream. None when it holds no substream at all (a compound
    /// stream of nothing), which is not a snapshot anyone can restore.
    pub fn from_stream(info: &StreamInfo) -> Option<ZfsFacts> {
        let top = dataset_of(&info.toname);
        let mut own: Vec<_> = info
            .substreams
            .iter()
            .filter(|s| dataset_of(&s.toname) == top)
            .collect();
        if own.is_empty() {
            own = info.substreams.iter().collect();
        }
        let (first, last) = (own.first()?, own.last()?);
        Some(ZfsFacts {
            snapshot: last.toname.clone(),
            guid: last.toguid,
            base_guid: first.fromguid,
            creation: last.creation_time,
            compound: info.compound,
            substreams: u32::try_from(info.substreams.len()).unwrap_or(u32::MAX),
            features: info.substreams.iter().fold(0, |f, s| f | s.features),
            snapshots: own.iter().map(|s| (s.toguid, s.toname.clone())).collect(),
        })
    }

    pub fn to_extra(&self, extra: &mut BTreeMap<String, String>) {
        let mut put = |k: &str, v: String| {
            extra.insert(k.to_string(), v);
        };
        put(SNAPSHOT, self.snapshot.clone());
        put(GUID, hex_guid(self.guid));
        put(BASE_GUID, hex_guid(self.base_guid));
        put(CREATION, self.creation.to_string());
        put(COMPOUND, self.compound.to_string());
        put(SUBSTREAMS, self.substreams.to_string());
        put(FEATURES, format!("{:x}", self.features));
        put(
            SNAPSHOTS,
            self.snapshots
                .iter()
                .map(|(g, n)| format!("{} {n}", hex_guid(*g)))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }

    /// Ok(None) for a manifest that is not a ZFS stream; Err names the key that is wrong.
    pub fn from_extra(extra: &BTreeMap<String, String>) -> Result<Option<ZfsFacts>, String> {
        let Some(snapshot) = extra.get(SNAPSHOT) else {
            return Ok(None);
        };
        let get = |k: &str| extra.get(k).ok_or_else(|| format!("{k} is missing"));
        let guid = |k: &str| -> Result<u64, String> {
            let v = get(k)?;
            parse_guid(v).ok_or_else(|| format!("{k} {v:?} is not a 16-digit hex GUID"))
        };
        let num = |k: &str| -> Result<u64, String> {
            let v = get(k)?;
            v.parse()
                .map_err(|_| format!("{k} {v:?} is not a decimal number"))
        };
        let mut snapshots = Vec::new();
        for line in get(SNAPSHOTS)?.lines() {
            let parsed = line
                .split_once(' ')
                .and_then(|(g, n)| Some((parse_guid(g)?, n.to_string())));
            match parsed {
                Some(s) => snapshots.push(s),
                None => return Err(format!("{SNAPSHOTS} has a bad line {line:?}")),
            }
        }
        Ok(Some(ZfsFacts {
            snapshot: snapshot.clone(),
            guid: guid(GUID)?,
            base_guid: guid(BASE_GUID)?,
            creation: num(CREATION)?,
            compound: get(COMPOUND)? == "true",
            substreams: u32::try_from(num(SUBSTREAMS)?)
                .map_err(|_| format!("{SUBSTREAMS} is out of range"))?,
            features: u64::from_str_radix(get(FEATURES)?, 16)
                .map_err(|_| format!("{FEATURES} is not hex"))?,
            snapshots,
        }))
    }
}

/// GUIDs are shown as `zstream dump` shows them, zero-padded to 16 hex digits.
pub fn hex_guid(g: u64) -> String {
    format!("{g:016x}")
}

pub fn parse_guid(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::super::stream::Substream;
    use super::*;

    fn sub(name: &str, from: u64, to: u64) -> Substream {
        Substream {
            toname: name.into(),
            toguid: to,
            fromguid: from,
            creation_time: 1_700_000_000 + to,
            objset_type: 2,
            flags: 0,
            features: 4,
            big_endian: false,
            offset: 0,
            records: 2,
            per_record_checksums: false,
        }
    }

    #[test]
    fn a_replication_stream_stands_for_its_top_dataset() {
        // `zfs send -R -I @a tank/vm@c`: the child's substreams must not decide the base.
        let info = StreamInfo {
            compound: true,
            toname: "tank/vm@c".into(),
            big_endian: false,
            substreams: vec![
                sub("tank/vm@b", 0xa, 0xb),
                sub("tank/vm@c", 0xb, 0xc),
                sub("tank/vm/child@c", 0x1a, 0x1c),
            ],
            length: 1,
            records: 1,
        };
        let f = ZfsFacts::from_stream(&info).unwrap();
        assert_eq!((f.base_guid, f.guid), (0xa, 0xc));
        assert_eq!(f.snapshot, "tank/vm@c");
        assert_eq!(f.short_name(), "c");
        assert_eq!(f.substreams, 3);
        assert_eq!(f.snapshots.len(), 2);
        let mut extra = BTreeMap::new();
        f.to_extra(&mut extra);
        assert_eq!(extra[GUID], "000000000000000c");
        assert_eq!(ZfsFacts::from_extra(&extra), Ok(Some(f)));
    }

    #[test]
    fn damaged_facts_are_reported_not_guessed() {
        let f = ZfsFacts::from_stream(&StreamInfo {
            compound: false,
            toname: "p/fs@s".into(),
            big_endian: false,
            substreams: vec![sub("p/fs@s", 0, 7)],
            length: 1,
            records: 1,
        })
        .unwrap();
        let mut extra = BTreeMap::new();
        f.to_extra(&mut extra);
        extra.insert(BASE_GUID.into(), "xyz".into());
        assert!(
            ZfsFacts::from_extra(&extra)
                .unwrap_err()
                .contains(BASE_GUID)
        );
        assert_eq!(ZfsFacts::from_extra(&BTreeMap::new()), Ok(None));
    }
}
