//! Log records as a person on a terminal reads them: one short line per
//! cause, its repeats counted on that line ("tracker 10.0.0.1:6969:
//! connection refused (3×), next try in 2m00s") instead of a new line of
//! tracing's format (timestamp, level, `key=value`) each time.
//!
//! Warnings and errors are shown; an info record is shown only as a
//! repeat of a cause already shown (code logs a cause's first occurrence
//! as a warning and its repeats as info, so a log file is not flooded
//! either). While bars are up, the lines of the last few causes sit above
//! them and are updated in place; when the bars go they stay as ordinary
//! lines. Without bars (`shoal serve`, a piped stdout) a cause is printed
//! once, then again at its 10th, 100th… time. `SHOAL_LOG`, or a stderr that
//! is not a terminal, keeps tracing's full format instead (main.rs).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::Context;

use crate::face::term;

/// Causes shown above the bars at once; older ones become ordinary lines.
const LIVE_NOTES: usize = 4;
/// Causes whose count is remembered; past that the oldest are forgotten.
const REMEMBERED: usize = 1000;

/// The `tracing` layer that turns records into notes.
pub struct HumanLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for HumanLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let mut text = f.message;
        for (k, v) in f.others {
            text.push_str(&format!(" ({k}: {v})"));
        }
        note(*event.metadata().level(), &text, f.retry_in);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    /// `retry_in = SECONDS`: when the failing thing is tried again.
    retry_in: Option<u64>,
    others: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "retry_in" {
            self.retry_in = Some(value);
        } else {
            self.others
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.others
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

/// One cause: its text, how often it happened, its last retry time, and
/// its line among the bars while it has one.
struct Note {
    text: String,
    count: u64,
    retry_in: Option<u64>,
    bar: Option<ProgressBar>,
}

impl Note {
    /// The line at `width` columns: the text is cut, the count and the
    /// retry time are kept.
    fn line(&self, width: usize) -> String {
        let mut tail = String::new();
        if self.count > 1 {
            tail.push_str(&format!(" ({}×)", self.count));
        }
        if let Some(s) = self.retry_in {
            tail.push_str(&format!(
                ", next try in {}",
                crate::units::human_eta(std::time::Duration::from_secs(s))
            ));
        }
        let room = width.saturating_sub(1 + term::width_of(&tail)).max(12);
        format!("{}{tail}", term::cut_end(&self.text, room))
    }

    /// The whole line, for a place where it may wrap.
    fn full(&self) -> String {
        self.line(usize::MAX / 2)
    }
}

#[derive(Default)]
struct Notes {
    /// Causes with a line among the bars, oldest first.
    live: Vec<Note>,
    /// How often each cause happened, and its order of first sight.
    counts: HashMap<String, u64>,
}

fn notes() -> MutexGuard<'static, Notes> {
    static NOTES: OnceLock<Mutex<Notes>> = OnceLock::new();
    NOTES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn note_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Records one occurrence of `text` at `level` and shows it as the module
/// says.
pub fn note(level: Level, text: &str, retry_in: Option<u64>) {
    let text = crate::out::escape(text).replace('\n', " ");
    let mut n = notes();
    let seen = n.counts.get(&text).copied();
    // Info: only the repeat of a cause already shown.
    if level > Level::WARN && seen.is_none() {
        return;
    }
    if seen.is_none() && n.counts.len() >= REMEMBERED {
        n.counts.clear();
    }
    let count = seen.unwrap_or(0) + 1;
    n.counts.insert(text.clone(), count);
    let width = term::width();
    if !term::live() {
        if count == 1 || is_power_of_ten(count) {
            let shown = Note {
                text,
                count,
                retry_in,
                bar: None,
            };
            term::say(&shown.full());
        }
        return;
    }
    if let Some(note) = n.live.iter_mut().find(|x| x.text == text) {
        note.count = count;
        note.retry_in = retry_in;
        if let Some(bar) = &note.bar {
            bar.set_message(note.line(width));
        }
        return;
    }
    let mut note = Note {
        text,
        count,
        retry_in,
        bar: None,
    };
    // Hidden until it is among the bars: a new bar draws on stderr by
    // itself, and its first message must be drawn by them.
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden())
        .with_style(note_style());
    let bar = term::multi().insert(n.live.len(), bar);
    bar.set_message(note.line(width));
    note.bar = Some(bar);
    n.live.push(note);
    if n.live.len() > LIVE_NOTES {
        let old = n.live.remove(0);
        retire(old, false);
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Takes a note's line from among the bars and prints it above them for
/// good; once the run is `over`, without a next try that will not come.
fn retire(mut note: Note, over: bool) {
    if let Some(bar) = &note.bar {
        bar.finish_and_clear();
        term::multi().remove(bar);
    }
    if over {
        note.retry_in = None;
    }
    term::say(&note.full());
}

/// Fits the notes among the bars to the terminal's width again (after a
/// resize).
pub fn refit(width: usize) {
    let n = notes();
    for note in &n.live {
        if let Some(bar) = &note.bar {
            bar.set_message(note.line(width));
        }
    }
}

/// The bars are gone: the notes among them become ordinary lines.
pub fn settle() {
    let mut n = notes();
    for note in std::mem::take(&mut n.live) {
        retire(note, true);
    }
}

/// A `tracing` writer for the full format that prints each record above
/// the bars.
pub struct LogWriter;

/// One log record, written out when tracing drops it.
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            term::say_raw(&self.0);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_keeps_its_count_and_retry_when_cut() {
        let n = Note {
            text: "tracker 127.0.0.1:41235: connection refused".into(),
            count: 3,
            retry_in: Some(120),
            bar: None,
        };
        assert_eq!(
            n.full(),
            "tracker 127.0.0.1:41235: connection refused (3×), next try in 2m00s"
        );
        let l = n.line(50);
        assert!(term::width_of(&l) < 50, "{l:?}");
        assert!(l.starts_with("tracker 127") && l.ends_with("(3×), next try in 2m00s"));
        assert!(is_power_of_ten(1) && is_power_of_ten(100) && !is_power_of_ten(20));
    }
}
