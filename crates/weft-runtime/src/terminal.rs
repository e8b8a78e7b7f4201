//! The terminal `weft dev` echoes task output on.
//!
//! Two things a task must not be able to do through it:
//!
//! - **Stall the runtime.** A terminal nobody reads (`weft dev | less`
//!   paused, Ctrl-S, a full pipe) blocks a `write`. Lines go through a
//!   bounded queue to a thread of their own; when the queue is full they
//!   are counted and dropped (they are still stored), and the terminal is
//!   told how many once it reads again.
//! - **Drive the terminal.** Escape sequences in task output could set the
//!   window title, write the clipboard (OSC 52), erase earlier lines, or
//!   print a fake `weft dev:` line after a `\r`. On a terminal every
//!   control character but the tab is shown escaped (`\x1b`), as
//!   journalctl does; the stored logs and `--json` keep the bytes.

use std::borrow::Cow;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Lines waiting for the terminal at most.
const QUEUE: usize = 4096;

/// Control characters shown escaped, so text can only be text.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push('\t'),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Standard output as the runtime echoes on it. Cheap to clone.
#[derive(Clone)]
pub struct Terminal {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    escape: bool,
}

impl Terminal {
    /// Echoes on standard output, from a thread of its own. Control
    /// characters are escaped when it is a terminal.
    pub fn stdout() -> Self {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("weft-terminal".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                while let Ok(first) = rx.recv() {
                    let mut out = stdout.lock();
                    let missed = lost.swap(0, Ordering::Relaxed);
                    if missed > 0 {
                        let _ = writeln!(
                            out,
                            "weft: {missed} lines of task output were not shown here (the terminal was not reading); they are stored"
                        );
                    }
                    let _ = writeln!(out, "{first}");
                    // Whatever else is queued, in one write burst.
                    while let Ok(more) = rx.try_recv() {
                        let _ = writeln!(out, "{more}");
                    }
                    let _ = out.flush();
                }
            })
            .expect("a thread for the terminal");
        Self {
            tx,
            dropped,
            escape: std::io::stdout().is_terminal(),
        }
    }

    /// Queues `prefix text` for the terminal; never blocks.
    pub fn line(&self, prefix: &str, text: &str) {
        let text = if self.escape {
            escape_controls(text)
        } else {
            Cow::Borrowed(text)
        };
        match self.tx.try_send(format!("{prefix} {text}")) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(escape_controls("plain\ttext é"), "plain\ttext é");
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07title"),
            "\\x1b]0;pwned\\x07title"
        );
        assert_eq!(
            escape_controls("ok\rweft dev: fake"),
            "ok\\x0dweft dev: fake"
        );
        assert_eq!(
            escape_controls("\x1b]52;c;Y2xpcA==\x07"),
            "\\x1b]52;c;Y2xpcA==\\x07"
        );
        assert_eq!(escape_controls("\u{9b}2J"), "\\u{9b}2J");
    }
}
