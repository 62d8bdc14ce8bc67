//! Progress bars (indicatif) for long scans, drawn on stderr only when stderr is a
//! terminal, so pipes, scripts and tests see clean output.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `total` bytes labelled `what`; hidden unless stderr is a terminal.
#[must_use]
pub fn bytes_bar(total: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
        .map_or_else(
            |_| ProgressStyle::default_bar(),
            |style| style.progress_chars("=> "),
        );
    bar.set_style(style);
    bar.set_message(what);
    bar
}
