//! The terminal on stderr, where bars and messages go: its size, the one
//! [`MultiProgress`] everything is drawn through, lines printed above the
//! bars, and text fitted to the width (cut, or wrapped between words).
//!
//! Bars are drawn through [`Screen`], indicatif's terminal with one
//! addition: a terminal that gets narrower re-wraps ("reflows") the bar
//! lines already on it (tmux, VTE, kitty, iTerm2, Windows Terminal do), so
//! each takes more rows than indicatif counted, and its clearing of the
//! last frame left the top rows behind as a torn fragment. `Screen`
//! remembers the lines of the last frame and, when the width shrank,
//! clears the rows they now take.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, TermLike};
use unicode_width::UnicodeWidthStr;

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Columns and rows of the terminal on stderr, asked anew each time so a
/// resize takes effect at once; None when stderr is not a terminal.
fn size() -> Option<(usize, usize)> {
    #[cfg(unix)]
    {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize, which we own.
        let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return Some((ws.ws_col as usize, ws.ws_row.max(1) as usize));
        }
    }
    None
}

/// Columns of the terminal on stderr (80 when it is not one).
pub fn width() -> usize {
    size().map_or(80, |(w, _)| w)
}

/// Columns `s` takes on a terminal (wide characters count two).
pub fn width_of(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Characters of `s` from the front that fit in `n` columns.
fn take_cols(s: &str, n: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > n {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

/// Characters of `s` from the back that fit in `n` columns.
fn take_cols_back(s: &str, n: usize) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > n {
            break;
        }
        used += w;
        out.push(c);
    }
    out.into_iter().rev().collect()
}

/// `s` cut to `n` columns, with `…` where it was cut.
pub fn cut_end(s: &str, n: usize) -> String {
    if width_of(s) <= n {
        return s.to_string();
    }
    if n == 0 {
        return String::new();
    }
    let mut out = take_cols(s, n - 1);
    out.push('…');
    out
}

/// `s` cut to `n` columns in the middle, keeping its start and its end
/// (a path's first folder and its file name's ending both say something).
pub fn cut_middle(s: &str, n: usize) -> String {
    if width_of(s) <= n {
        return s.to_string();
    }
    if n < 5 {
        return cut_end(s, n);
    }
    let back = (n - 1) / 2;
    let front = n - 1 - back;
    format!("{}…{}", take_cols(s, front), take_cols_back(s, back))
}

/// `text` broken between words into lines of fewer than `width` columns
/// (a word longer than a line is cut); lines after the first are
/// indented by two spaces, so they read as one message.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let room = width.saturating_sub(1).max(10);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let indent = if lines.is_empty() { 0 } else { 2 };
        let sep = usize::from(!line.is_empty());
        if !line.is_empty() && indent + width_of(&line) + sep + width_of(word) > room {
            lines.push(std::mem::take(&mut line));
        }
        let indent = if lines.is_empty() { 0 } else { 2 };
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        if indent + width_of(&line) > room {
            line = cut_end(&line, room - indent);
        }
    }
    lines.push(line);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { l } else { format!("  {l}") })
        .collect()
}

/// indicatif's terminal on stderr, which also clears what a narrower
/// terminal re-wrapped (see the module's comment).
#[derive(Debug, Default)]
struct Screen(Mutex<Frame>);

/// The lines of the frame on screen, as written.
#[derive(Debug, Default)]
struct Frame {
    /// Columns of each line written since the frame began (the last one
    /// padded by indicatif to a whole number of rows).
    lines: Vec<usize>,
    /// The terminal's width when they were written.
    width: usize,
    /// A frame is being written (set by writes, cleared by the next move
    /// up, which begins clearing it).
    writing: bool,
    /// The move up that began clearing the frame: indicatif's rows less one.
    clearing: Option<usize>,
}

fn rows(cols: usize, width: usize) -> usize {
    cols.div_ceil(width.max(1)).max(1)
}

impl Screen {
    fn out(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().write_all(s.as_bytes())
    }

    fn frame(&self) -> std::sync::MutexGuard<'_, Frame> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows above the frame's first (as indicatif counts it) that its
    /// last `n` rows now take too, the terminal having re-wrapped them.
    /// The cursor sits after the last line's last column: re-wrapped, it
    /// lands on row `cols / width` of that line, which is a row of its own
    /// when the line fills its rows exactly (120 columns at 60).
    fn torn_rows(f: &Frame, n: usize, now: usize) -> usize {
        if now >= f.width || f.lines.is_empty() {
            return 0;
        }
        let (mut before, mut after) = (0, 0);
        for (i, &cols) in f.lines.iter().rev().enumerate() {
            if before >= n {
                break;
            }
            before += rows(cols, f.width);
            after += if i == 0 {
                cols / now.max(1) + 1
            } else {
                rows(cols, now)
            };
        }
        after.saturating_sub(before)
    }

    fn wrote(&self, cols: usize, newline: bool) {
        let mut f = self.frame();
        if !f.writing {
            f.writing = true;
            f.lines.clear();
            f.lines.push(0);
            f.width = width();
        }
        if let Some(last) = f.lines.last_mut() {
            *last += cols;
        }
        if newline {
            f.lines.push(0);
        }
    }
}

impl TermLike for Screen {
    fn width(&self) -> u16 {
        width().min(u16::MAX as usize) as u16
    }

    fn height(&self) -> u16 {
        size().map_or(24, |(_, h)| h).min(u16::MAX as usize) as u16
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        {
            let mut f = self.frame();
            if f.writing {
                f.writing = false;
                f.clearing = Some(n);
            }
        }
        if n > 0 {
            self.out(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.wrote(width_of(s), true);
        self.out(s)?;
        self.out("\n")
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.wrote(width_of(s), false);
        self.out(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        // The first clear of a frame: indicatif moved up over the rows it
        // counted; rows the terminal added by re-wrapping are cleared too.
        let torn = {
            let mut f = self.frame();
            match f.clearing.take() {
                Some(up) => {
                    let n = Self::torn_rows(&f, up + 1, width());
                    f.lines.clear();
                    n
                }
                None => 0,
            }
        };
        if torn > 0 {
            self.out(&format!("\x1b[{torn}A\r\x1b[J"))?;
        }
        self.out("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The one place bars are drawn; everything printed while bars are up
/// goes through it.
pub fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| {
        let target = if stderr_is_terminal() {
            ProgressDrawTarget::term_like_with_hz(Box::new(Screen::default()), 10)
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    })
}

/// Bars on screen now (log notes not counted): while there are any, log
/// notes are lines among them, updated in place.
static LIVE: AtomicUsize = AtomicUsize::new(0);

pub fn live() -> bool {
    LIVE.load(Ordering::SeqCst) > 0
}

/// Keeps log notes among the bars for as long as it lives, bars or not
/// yet: a run that shows bars holds one from its start, so a cause seen
/// just before its first bar is up (a tracker refusing at once) gets the
/// line its repeats are counted on, not a line of its own.
pub struct Live(());

impl Live {
    pub fn hold() -> Live {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Live(())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if LIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
            crate::face::log::settle();
        }
    }
}

/// Puts a bar on screen, below the ones there.
pub fn add(pb: ProgressBar) -> ProgressBar {
    LIVE.fetch_add(1, Ordering::SeqCst);
    multi().add(pb)
}

/// Clears a bar added with [`add`] and takes it off the screen; with the
/// last one, the log notes become ordinary lines.
pub fn remove(pb: &ProgressBar) {
    pb.finish_and_clear();
    multi().remove(pb);
    if LIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
        crate::face::log::settle();
    }
}

/// Writes `line` to stderr above the bars (if any); on a terminal broken
/// between words to fit its width.
pub fn say(line: &str) {
    let text = if stderr_is_terminal() {
        wrap(line, width()).join("\n")
    } else {
        line.to_string()
    };
    multi().suspend(|| {
        let _ = writeln!(std::io::stderr(), "{text}");
    });
}

/// Writes raw bytes (a formatted log record) to stderr above the bars.
pub fn say_raw(bytes: &[u8]) {
    multi().suspend(|| {
        let _ = std::io::stderr().write_all(bytes);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_and_wraps() {
        assert_eq!(cut_end("abcdef", 4), "abc…");
        assert_eq!(cut_end("abc", 4), "abc");
        assert_eq!(cut_middle("folder/some-long-name.bin", 12), "folder…e.bin");
        assert_eq!(width_of(&cut_middle("folder/some-long-name.bin", 12)), 12);
        // Wide characters count two columns.
        assert_eq!(width_of("日本"), 4);
        assert_eq!(cut_end("日本語のファイル", 7), "日本語…");
        let w = wrap(
            "interrupted with 3 of 80 pieces verified; run the same command again to resume",
            50,
        );
        assert!(w.len() == 2 && w.iter().all(|l| width_of(l) < 50), "{w:?}");
        assert!(w[1].starts_with("  ") && w[1].ends_with("resume"), "{w:?}");
        assert_eq!(wrap("short", 80), vec!["short"]);
    }

    #[test]
    fn rows_a_narrower_terminal_adds() {
        let f = Frame {
            lines: vec![30, 79, 80],
            width: 80,
            writing: false,
            clearing: None,
        };
        // Two bar rows (79 + the last, padded to 80) at 50 columns: 4 rows.
        assert_eq!(Screen::torn_rows(&f, 2, 50), 2);
        assert_eq!(Screen::torn_rows(&f, 2, 80), 0);
        assert_eq!(Screen::torn_rows(&f, 2, 120), 0);
        // At 40 the last line fills two rows exactly: the cursor is on a
        // third.
        assert_eq!(Screen::torn_rows(&f, 1, 40), 2);
        assert_eq!(Screen::torn_rows(&f, 2, 40), 3);
    }
}
