//! Plain aligned tables for people; scripts use `--json`.

use std::io::IsTerminal as _;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn print(header: &[&str], rows: &[Vec<String>]) {
    // Cells hold what tasks wrote (names, errors): escaped on a terminal.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| shown(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Text from tasks as a terminal should show it: control characters
/// escaped (a task's output could otherwise set the title, write the
/// clipboard or fake a line). Left as it is when not printing to a
/// terminal, and in `--json`.
///
/// Everything the CLI prints that a task or an app chose (task names,
/// inputs, results, errors, output) goes through this or [`shown_err`]:
/// one way for all of it.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    shown_on(text, std::io::stdout().is_terminal())
}

/// [`shown`], for standard error.
pub fn shown_err(text: &str) -> std::borrow::Cow<'_, str> {
    shown_on(text, std::io::stderr().is_terminal())
}

fn shown_on(text: &str, terminal: bool) -> std::borrow::Cow<'_, str> {
    if terminal {
        weft_runtime::escape_controls(text)
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}
