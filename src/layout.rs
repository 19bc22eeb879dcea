//! Object names: where each kind of object lives in the store.
//!
//! ```text
//! config  keys/<key-id>  chunks/<2 hex>/<64 hex>  manifests/<series>/<version>
//! current/<series>  locks/<lock-id>  probe/conditional-write (S3 only)
//! quarantine/<object name>
//! ```
//! Series names are escaped into one path segment (`tank/vm` → `tank%2Fvm`) so that a
//! series name can never reach into another series' objects or climb out of the repository.

use crate::chunk_id::ChunkId;

pub const CONFIG: &str = "config";
pub const KEYS: &str = "keys/";
pub const CHUNKS: &str = "chunks/";
pub const MANIFESTS: &str = "manifests/";
pub const CURRENT: &str = "current/";
pub const LOCKS: &str = "locks/";
/// An object S3 stores create (and keep) to learn whether the server honours conditional
/// writes; readers ignore it, and init does not count it as content.
pub const PROBE: &str = "probe/conditional-write";
/// Where `check --repair` moves damaged objects: never read again by blockvault, kept for
/// whoever wants to know what went wrong or recover bytes by hand.
pub const QUARANTINE: &str = "quarantine/";

/// Where a damaged object named `name` is kept once moved aside.
pub fn quarantined(name: &str) -> String {
    format!("{QUARANTINE}{name}")
}

pub fn chunk(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{CHUNKS}{}/{hex}", &hex[..2])
}

pub fn manifest(series: &str, version: &str) -> String {
    format!("{MANIFESTS}{}/{version}", escape_series(series))
}

pub fn manifests_of(series: &str) -> String {
    format!("{MANIFESTS}{}/", escape_series(series))
}

pub fn current(series: &str) -> String {
    format!("{CURRENT}{}", escape_series(series))
}

pub fn lock(id: &str) -> String {
    format!("{LOCKS}{id}")
}

pub fn key(id: &str) -> String {
    format!("{KEYS}{id}")
}

/// Bytes kept as they are in an escaped series name; everything else becomes `%XX`.
fn plain(b: u8, first: bool) -> bool {
    b.is_ascii_alphanumeric() || b"_-@+=,:".contains(&b) || (b == b'.' && !first)
}

pub fn escape_series(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if plain(b, i == 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn unescape_series(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = escaped.get(i + 1..i + 3)?;
            // Two hex digits exactly: from_str_radix alone would take `+A`.
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a new series may be called, for messages that refuse a name.
const SERIES_RULE: &str = "a series name is one or more parts separated by single `/` (vm101, tank/vm-101), none of them empty, blank, `.` or `..`";

/// Whether a backup (or a job) may record a new version under this name: at most 200
/// bytes without control characters, made of `/`-separated parts none of which is empty,
/// blank, `.` or `..`. The escaping makes any name safe to store; these rules keep names that
/// read like paths unambiguous and visible in a listing (`" "`, `a//b`, `..`). Readers do not
/// apply them: a series stored under another name by an older blockvault stays readable.
pub fn validate_series(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("a series name cannot be empty: {SERIES_RULE}"));
    }
    if name.len() > 200 {
        return Err(format!("series name {name:?} is longer than 200 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("series name {name:?} contains control characters"));
    }
    if name.trim().is_empty() {
        return Err(format!("series name {name:?} is blank: {SERIES_RULE}"));
    }
    for part in name.split('/') {
        let why = match part {
            "" => "has an empty part (a leading, trailing or doubled `/`)",
            "." | ".." => "has a `.` or `..` part",
            p if p.trim().is_empty() => "has a blank part",
            _ => continue,
        };
        return Err(format!("series name {name:?} {why}: {SERIES_RULE}"));
    }
    Ok(())
}

/// Version names are made by blockvault (`2026-11-22T130507Z`, maybe with `-2`); anything
/// else under `manifests/` is not a version.
pub fn is_version_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        && !v.starts_with('.')
}

/// Orders version names by time, then by the `-N` suffix a same-second backup gets, so
/// `…Z-10` comes after `…Z-2` (plain string order would not).
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (&str, u64) {
        match v.rsplit_once("Z-") {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                (&v[..base.len() + 1], n.parse().unwrap_or(u64::MAX))
            }
            _ => (v, 1),
        }
    }
    key(a).cmp(&key(b))
}

/// Splits `manifests/<escaped series>/<version>` into its parts.
pub fn parse_manifest_key(key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(MANIFESTS)?;
    let (series, version) = rest.split_once('/')?;
    if version.contains('/') || !is_version_name(version) {
        return None;
    }
    let name = unescape_series(series)?;
    // Only the canonical spelling names a series: `%61` is not another way to write `a`.
    if escape_series(&name) != series {
        return None;
    }
    Some((name, version.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(manifest("tank/vm", "v1"), "manifests/tank%2Fvm/v1");
        assert_eq!(escape_series(".."), "%2E.");
        assert_eq!(escape_series("a b"), "a%20b");
        assert_eq!(
            parse_manifest_key("manifests/tank%2Fvm/v1"),
            Some(("tank/vm".into(), "v1".into()))
        );
        assert_eq!(parse_manifest_key("manifests/x/.tmp-1"), None);
        assert_eq!(parse_manifest_key("manifests/%61/v1"), None);
        let mut v = vec![
            "2026-11-22T130507Z-10",
            "2026-11-22T130508Z",
            "2026-11-22T130507Z-2",
            "2026-11-22T130507Z",
        ];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(
            v,
            [
                "2026-11-22T130507Z",
                "2026-11-22T130507Z-2",
                "2026-11-22T130507Z-10",
                "2026-11-22T130508Z"
            ]
        );
        let id = ChunkId([0xab; 32]);
        assert!(chunk(&id).starts_with("chunks/ab/abab"));
    }

    #[test]
    fn escapes_are_two_hex_digits() {
        assert_eq!(unescape_series("a%2Fb").as_deref(), Some("a/b"));
        for bad in ["%+A", "%-1", "% 1", "%2", "%zz"] {
            assert_eq!(unescape_series(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_series_names() {
        for ok in [
            "vm101",
            "tank/vm-101",
            "a b",
            "pg dump/main",
            ".hidden",
            "a/.b",
            "a..b",
            "é",
        ] {
            assert_eq!(validate_series(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("", "empty"),
            (" ", "blank"),
            ("\u{3000}", "blank"),
            ("a/", "empty part"),
            ("/abs", "empty part"),
            ("a//b", "empty part"),
            ("/", "empty part"),
            ("..", "`..`"),
            (".", "`.`"),
            ("a/../b", "`..`"),
            ("a/./b", "`.`"),
            ("a/ /b", "blank part"),
            ("a\nb", "control"),
        ] {
            let e = validate_series(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // Each refusal says what is allowed.
        let e = validate_series("a//b").expect_err("a//b");
        assert!(e.contains("separated by single `/`"), "{e}");
    }

    proptest! {
        #[test]
        fn escaping_round_trips_into_one_segment(name in "\\PC{1,40}") {
            let e = escape_series(&name);
            prop_assert!(!e.contains('/') && !e.starts_with('.'));
            prop_assert_eq!(unescape_series(&e), Some(name));
        }
    }
}
