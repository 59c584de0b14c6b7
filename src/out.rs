//! The one way text reaches the user's terminal or pipe.
//!
//! Torrent files and trackers are written by strangers: a comment, a file
//! name or a `failure reason` holding ESC, BEL or CR could rewrite the
//! screen, retitle the terminal or hide a line, so [`escape`] is applied to
//! every such text before it is printed. Standard output is written through
//! [`line`] (the [`outln!`](crate::outln) macro) so that a reader that went
//! away (`shoal info x | head -1`) or a full disk never ends in a panic.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{ErrorKind, Write};

/// Exit status when stdout's reader has gone: what a shell reports for a
/// program killed by SIGPIPE (128 + 13), so `set -o pipefail` scripts see
/// shoal as they see `cat`. Rust ignores SIGPIPE, so we say it ourselves.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// Control characters (C0, DEL, C1) as visible escapes (`\x1b`, `\r`, ...);
/// everything else, non-ASCII text included, unchanged. Borrowed when
/// there is nothing to escape, which is nearly always.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Writes one line to stdout. A closed pipe ends the process quietly with
/// [`EXIT_BROKEN_PIPE`]; any other write error (e.g. `/dev/full`) ends it
/// with one line on stderr and status 1: output that cannot be delivered
/// makes the rest of the command pointless.
pub fn line(args: fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let result = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = result {
        fail(&e);
    }
}

/// Writes bytes made by a library that prints on its own (shell
/// completions, the man page), with [`line`]'s error handling.
pub fn bytes(b: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(b).and_then(|()| stdout.flush()) {
        fail(&e);
    }
}

fn fail(e: &std::io::Error) -> ! {
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(EXIT_BROKEN_PIPE);
    }
    let _ = writeln!(std::io::stderr(), "error: stdout: {e}");
    std::process::exit(1);
}

/// `println!` that survives a closed pipe or a full disk (see [`line`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_only() {
        assert!(matches!(escape("plain é ✓"), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\x1b[2Jb\x07c\rd\ne\u{9b}f\x7f"),
            "a\\x1b[2Jb\\x07c\\rd\\ne\\x9bf\\x7f"
        );
    }
}
