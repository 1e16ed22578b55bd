//! Human and machine output: comfy-table on a terminal, stable JSON on stdout, progress on stderr.

use std::io::IsTerminal;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressStyle};

/// How a command prints its result: a human table, or stable JSON on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// How `verify` prints its report: the two formats every command has, JUnit XML for CI, or
/// SARIF for GitHub code scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Table,
    Json,
    Junit,
    Sarif,
}

/// A table with a header row, laid out for the terminal width.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// The width piped output keeps to (prose wraps; SQL, commands to paste and JSON are exempt).
pub const PIPED_WIDTH: usize = 100;

/// A table that keeps to [`PIPED_WIDTH`] when stdout is not a terminal (comfy-table has no width
/// to fit then, and would print every cell on one line).
pub fn fit(mut table: comfy_table::Table) -> comfy_table::Table {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        table.set_width(PIPED_WIDTH as u16);
    }
    table
}

/// Prose wrapped at word boundaries to [`PIPED_WIDTH`], continuation lines indented by two.
pub fn wrap(text: &str) -> String {
    let mut out = String::new();
    for (i, paragraph) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut width = 0;
        for word in paragraph.split(' ') {
            let len = word.chars().count();
            if width > 0 && width + 1 + len > PIPED_WIDTH {
                out.push_str("\n  ");
                width = 2;
            } else if width > 0 {
                out.push(' ');
                width += 1;
            }
            out.push_str(word);
            width += len;
        }
    }
    out
}

/// Print a JSON value to stdout, pretty and newline-terminated.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialise")
    );
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A progress bar for rows, with the rate (rows/s), on stderr; hidden when stderr is not a terminal.
pub fn rows_progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {human_pos}/{human_len} rows, {rate} rows/s ({eta} left)",
        )
        .expect("static template")
        // Whole rows per second: indicatif's {per_sec} prints four decimals.
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", indicatif::HumanCount(state.per_sec() as u64));
            },
        )
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Whether a human can answer a question: stdin and stderr are both terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}
