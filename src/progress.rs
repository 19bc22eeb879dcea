//! Progress on a terminal: a bar on stderr when stderr is a TTY, nothing otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub fn bar(total: Option<u64>, what: &str, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    // The summaries' units: sizes in binary (GiB), rates in MB/s.
    let template = if total.is_some() {
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {decimal_bytes_per_sec} eta {eta}"
    } else {
        "{msg} {binary_bytes} {decimal_bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    // Redrawn while nothing arrives too: a stalled producer shows its time passing.
    pb.enable_steady_tick(std::time::Duration::from_millis(500));
    pb
}

/// A reader that counts what it reads into a bar: a slow stream shows its progress as it
/// comes, not a chunk (megabytes) at a time.
pub struct Counting<R> {
    pub inner: R,
    pub bar: ProgressBar,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A bar that counts items (`chunks`) instead of bytes.
pub fn count_bar(total: u64, what: &str, unit: &str, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let template = format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}
