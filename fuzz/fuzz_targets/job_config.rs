//! A job file (`blockvault run --config`): any text. Must never panic; an accepted file has a
//! job, unique series names and a phase shorter than its period; every error names the file.
#![no_main]
use blockvault::jobs::parse;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(Path::new("/etc/blockvault.toml"), text) {
        Ok(c) => {
            assert!(!c.jobs.is_empty(), "a file without jobs was accepted");
            let names: HashSet<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
            assert_eq!(names.len(), c.jobs.len(), "two jobs share a series");
            for j in &c.jobs {
                if let Some(s) = j.schedule {
                    assert!(s.every > 0 && (0..s.every).contains(&s.phase), "{s:?}");
                    let t = i64::from(u32::from_le_bytes([1, 2, 3, 4]));
                    assert!(s.slot_start(t) <= t && t < s.next_due(t));
                }
            }
        }
        Err(e) => assert!(e.0.starts_with("/etc/blockvault.toml"), "{}", e.0),
    }
});
