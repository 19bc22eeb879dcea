//! Paper keys typed back by hand (`blockvault key recover`): any text. Must never panic; a
//! key that is accepted writes out to a paper key that reads back the same; every error
//! names a line that exists, and a "not a hex digit" error points at a character that is
//! not one.
#![no_main]
use blockvault::keys::{PaperError, paper_decode, paper_encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `key recover` refuses text that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    match paper_decode(text) {
        Ok(p) => {
            let written = paper_encode(&p.master, &p.repo_id);
            let again = match paper_decode(&written) {
                Ok(again) => again,
                Err(e) => panic!("our own paper key does not read back: {e}\n{}", *written),
            };
            assert_eq!(again.repo_id, p.repo_id);
            assert_eq!(*paper_encode(&again.master, &again.repo_id), *written);
        }
        Err(e) => {
            let line = match &e {
                PaperError::NotPaper { line }
                | PaperError::NewerVersion { line, .. }
                | PaperError::NotHex { line, .. }
                | PaperError::RepoIdLength { line, .. }
                | PaperError::KeyLineLength { line, .. }
                | PaperError::KeyLineCheck { line, .. }
                | PaperError::CheckLength { line, .. }
                | PaperError::Trailing { line }
                | PaperError::Unexpected { line, .. } => *line,
                PaperError::WholeCheck | PaperError::Missing(_) => return,
            };
            assert!(
                (1..=lines.len()).contains(&line),
                "{e}: the text has {} lines",
                lines.len()
            );
            if let PaperError::NotHex { column, .. } = e {
                let c = lines[line - 1].chars().nth(column.wrapping_sub(1));
                assert!(
                    c.is_some_and(|c| !c.is_ascii_hexdigit() && !c.is_whitespace()),
                    "{e}, but character {column} of {:?} is {c:?}",
                    lines[line - 1]
                );
            }
        }
    }
});
