//! Terminal output: sizes, dates, progress bars and `--json` events. Bars
//! are hidden when stdout is not a terminal, so scripts and logs stay
//! clean. Everything written to stderr while bars are up (log lines,
//! notices) goes through one [`MultiProgress`], which lifts the bars out
//! of the way and redraws them below, so no stale copy is left behind.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::metainfo::Metainfo;
use crate::torrent::{Progress, State};

/// Version of the `--json` event schema (docs/json.md); raised on any
/// change that could break a reader.
pub use crate::units::{human_bytes, human_duration};

pub const JSON_VERSION: u64 = 1;

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), valid for any i64 day count we see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The one place bars are drawn; log lines and notices are printed
/// through it.
fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)))
}

/// Writes a line to stderr above the bars (if any).
pub fn say(line: &str) {
    multi().suspend(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
}

/// A `tracing` writer that prints each log record above the bars.
pub struct LogWriter;

/// One log record, written out when tracing drops it.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
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
        if self.0.is_empty() {
            return;
        }
        multi().suspend(|| {
            let _ = std::io::stderr().write_all(&self.0);
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// Seconds since the Unix epoch, with a fraction.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The event as a JSON object with the fields every event carries.
pub fn event_json(event: &str, fields: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "event": event,
        "version": JSON_VERSION,
        "ts": (unix_now() * 1000.0).round() / 1000.0,
    });
    if let (Some(out), serde_json::Value::Object(more)) = (v.as_object_mut(), fields) {
        out.extend(more);
    }
    v
}

/// `parts` (each with the separator that goes before it) on as few lines
/// as fit the terminal, breaking only between parts: a summary that wraps
/// mid-word is hard to read.
pub fn join_to_fit(parts: &[(&str, String)]) -> String {
    let width = if stdout_is_terminal() {
        term_width()
    } else {
        usize::MAX
    };
    let mut out = String::new();
    let mut line = 0;
    for (sep, p) in parts {
        let w = width_of(sep) + width_of(p);
        if line > 0 && line + w >= width {
            out.push('\n');
            out.push_str(p);
            line = width_of(p);
        } else {
            out.push_str(sep);
            out.push_str(p);
            line += w;
        }
    }
    out
}

/// Runs `work` (the check of what is on disk) while a `checking` event
/// reports the `done` counter at once and then every second: a check of a
/// big folder must not leave a script reading `--json` in the dark.
pub fn with_counter_events<T>(total: u64, work: impl FnOnce(&AtomicU64) -> T) -> T {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let report = |n: u64| {
        emit(
            "checking",
            serde_json::json!({"checked_bytes": n, "total": total}),
        )
    };
    std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            report(0);
            loop {
                std::thread::park_timeout(Duration::from_secs(1));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                report(done.load(Ordering::Relaxed));
            }
        });
        let out = work(&done);
        stop.store(true, Ordering::Relaxed);
        ticker.thread().unpark();
        out
    })
}

/// Prints one `--json` event line on stdout.
pub fn emit(event: &str, fields: serde_json::Value) {
    crate::outln!("{}", event_json(event, fields));
}

/// Tells the user something once: a JSON event, a line above the bars, or
/// (silent) a log record.
pub fn report(display: Display, event: &str, fields: serde_json::Value, line: &str) {
    match display {
        Display::Json => emit(event, fields),
        Display::Bars | Display::Plain => say(line),
        Display::Silent => tracing::info!("{line}"),
    }
}

/// A bytes bar drawn on stderr only when stdout is a terminal. It fills
/// the terminal's width (`wide_bar`), whatever that is at each redraw.
pub fn bytes_bar(total: u64, message: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    pb.set_style(
        ProgressStyle::with_template("{msg} {percent:>3}% [{wide_bar}] {done}/{all} {rate}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "done",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_bytes(s.pos()));
                },
            )
            .with_key(
                "all",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&human_bytes(s.len().unwrap_or(0)));
                },
            )
            .with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}/s", human_bytes(s.per_sec() as u64));
                },
            )
            .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    if stdout_is_terminal() {
        return multi().add(pb);
    }
    pb
}

/// A spinner with a message (a magnet's metadata fetch), drawn with the
/// bars so log lines go above it.
pub fn spinner() -> ProgressBar {
    let pb = multi().add(ProgressBar::new_spinner());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A spinner's message cut to the terminal's width.
pub fn fit_spinner(msg: &str) -> String {
    cut_end(msg, term_width().saturating_sub(3))
}

/// Clears a bar and takes it off the screen.
pub fn remove(pb: &ProgressBar) {
    pb.finish_and_clear();
    multi().remove(pb);
}

/// Runs `work` while a bar follows the `done` counter.
pub fn with_counter_bar<T>(total: u64, message: &str, work: impl FnOnce(&AtomicU64) -> T) -> T {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let pb = bytes_bar(total, message);
    let out = std::thread::scope(|s| {
        let ticker = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                pb.set_position(done.load(Ordering::Relaxed));
                std::thread::park_timeout(Duration::from_millis(100));
            }
        });
        let out = work(&done);
        stop.store(true, Ordering::Relaxed);
        // Wake the ticker now rather than at its next tick: a quick job
        // must not pay up to 100 ms for the bar.
        ticker.thread().unpark();
        out
    });
    pb.finish_and_clear();
    multi().remove(&pb);
    out
}

/// How a running torrent reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// indicatif bars on a terminal.
    Bars,
    /// Newline-delimited JSON events on stdout.
    Json,
    /// No bars (stdout is not a terminal), but what is said once (where
    /// it listens, resuming, seeding) goes to stderr: a seeder started
    /// with its output in a file still tells its port.
    Plain,
    /// Nothing but errors (--quiet).
    Silent,
}

impl Display {
    pub fn choose(json: bool, quiet: bool) -> Display {
        if json {
            Display::Json
        } else if quiet {
            Display::Silent
        } else if !stdout_is_terminal() {
            Display::Plain
        } else {
            Display::Bars
        }
    }
}

fn eta(p: &Progress) -> String {
    let left = p.total.saturating_sub(p.have_bytes);
    if left == 0 {
        return "-".into();
    }
    if p.down_rate == 0 {
        return "∞".into();
    }
    let s = left / p.down_rate;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// " (tracker 5, dht 30, pex 5; utp 28, tcp 12)": where the connected
/// peers came from, then what their connections run over.
pub fn peer_sources(p: &Progress) -> String {
    if p.peer_sources.is_empty() {
        return String::new();
    }
    let list = |m: &std::collections::BTreeMap<&'static str, usize>| -> String {
        let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        parts.join(", ")
    };
    if p.peer_transports.is_empty() {
        format!(" ({})", list(&p.peer_sources))
    } else {
        // uTP first: it is what most of a swarm prefers.
        let mut t = p.peer_transports.clone();
        let utp = t.remove("utp").map(|n| format!("utp {n}"));
        let rest = list(&t);
        let transports: Vec<String> = utp
            .into_iter()
            .chain((!rest.is_empty()).then_some(rest))
            .collect();
        format!(" ({}; {})", list(&p.peer_sources), transports.join(", "))
    }
}

pub fn progress_json(p: &Progress) -> serde_json::Value {
    event_json(
        "progress",
        serde_json::json!({
            "state": p.state.label(),
            "status": p.status,
            "have_bytes": p.have_bytes,
            "total": p.total,
            "pieces_have": p.pieces_have,
            "piece_count": p.piece_count,
            "down_rate": p.down_rate,
            "up_rate": p.up_rate,
            "downloaded": p.downloaded,
            "uploaded": p.uploaded,
            "peers": p.peers,
            "known_peers": p.known_peers,
            "peer_sources": p.peer_sources,
            "peer_transports": p.peer_transports,
            "hash_failures": p.hash_failures,
            "banned": p.banned,
        }),
    )
}

/// Columns of the terminal on stderr (where bars go), asked anew at each
/// redraw so a resize takes effect at once.
pub fn term_width() -> usize {
    #[cfg(unix)]
    {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a winsize, which we own.
        let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_col > 0 {
            return ws.ws_col as usize;
        }
    }
    80
}

fn width_of(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to `n` columns, with `…` where it was cut.
fn cut_end(s: &str, n: usize) -> String {
    if width_of(s) <= n {
        return s.to_string();
    }
    if n == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(n - 1).collect();
    out.push('…');
    out
}

/// `s` cut to `n` columns from the left, keeping its end (a file name
/// matters more than its folders).
fn cut_start(s: &str, n: usize) -> String {
    let w = width_of(s);
    if w <= n {
        return s.to_string();
    }
    if n == 0 {
        return String::new();
    }
    let mut out = String::from("…");
    out.extend(s.chars().skip(w - (n - 1)));
    out
}

fn bar(done: u64, total: u64, inner: usize) -> String {
    let filled = if total == 0 {
        inner
    } else {
        ((done as u128 * inner as u128) / total as u128) as usize
    };
    let mut s = String::with_capacity(inner + 2);
    s.push('[');
    for i in 0..inner {
        s.push(if i < filled {
            '='
        } else if i == filled {
            '>'
        } else {
            ' '
        });
    }
    s.push(']');
    s
}

fn percent(done: u64, total: u64) -> String {
    // An empty torrent or file is complete.
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    format!("{pct:>3}%")
}

/// A field of a bar line that is shown only if there is room.
struct Opt {
    /// Place on the line (fields are shown sorted by it).
    order: u8,
    text: String,
    /// Columns below which the field is dropped rather than cut; 0: never cut.
    min: usize,
    /// Cut from the left (paths keep their file name).
    cut_left: bool,
}

fn opt(order: u8, text: String) -> Opt {
    Opt {
        order,
        text,
        min: 0,
        cut_left: false,
    }
}

/// The bar's place among the optional fields. Its width depends on the
/// terminal's only (a quarter of it, 12 to 42 columns), so the bars of
/// all lines are alike whatever else fits; if that much does not fit when
/// its turn comes, 12.
const BAR: &str = "\u{0}bar";

/// A line that fits `width` columns: `fixed` fields always (cut if they
/// must), then `optional` ones in order of importance while they fit.
/// Narrow terminals thus drop the least important fields instead of
/// wrapping the line.
fn fit(width: usize, fixed: Vec<(u8, String)>, optional: Vec<Opt>, bar_for: (u64, u64)) -> String {
    // The last column stays empty: a line that fills it makes some
    // terminals wrap the cursor, and the next redraw lands one line low.
    let width = width.saturating_sub(1);
    let mut parts: Vec<(u8, String)> = Vec::new();
    let mut used = 0;
    for (order, text) in fixed {
        let sep = usize::from(!parts.is_empty());
        let text = cut_end(&text, width.saturating_sub(used + sep));
        used += sep + width_of(&text);
        parts.push((order, text));
    }
    let mut bar_at = None;
    let bar_inner = (width / 4).clamp(12, 42) - 2;
    for o in optional {
        let room = width.saturating_sub(used + 1);
        if o.text == BAR {
            let inner = if room >= bar_inner + 2 { bar_inner } else { 10 };
            if room >= inner + 2 {
                bar_at = Some((o.order, inner));
                used += inner + 3;
            }
            continue;
        }
        let text = if width_of(&o.text) <= room {
            o.text
        } else if o.min > 0 && room >= o.min {
            if o.cut_left {
                cut_start(&o.text, room)
            } else {
                cut_end(&o.text, room)
            }
        } else {
            continue;
        };
        used += 1 + width_of(&text);
        parts.push((o.order, text));
    }
    if let Some((order, inner)) = bar_at {
        parts.push((order, bar(bar_for.0, bar_for.1, inner)));
    }
    parts.sort_by_key(|(o, _)| *o);
    let line: Vec<String> = parts.into_iter().map(|(_, t)| t).collect();
    line.join(" ")
}

/// The torrent's line: name and percent always, then as room allows its
/// status, a bar, download rate, eta, sizes, peers, upload rate and where
/// the peers came from.
pub fn main_line(name: &str, p: &Progress, width: usize) -> String {
    // Names and a tracker's words are a stranger's: no control characters.
    let name = cut_end(&crate::out::escape(name), 24.min(width / 4).max(4));
    let status = Opt {
        order: 9,
        text: crate::out::escape(&p.status).into_owned(),
        min: 12,
        cut_left: false,
    };
    // A status that explains (why there are no peers) comes first; the
    // plain state name ("downloading") only if there is room left. A seed
    // has nothing left to receive: its state, upload rate and peers matter.
    let seeding = matches!(p.state, State::Seeding | State::Done);
    let explains = seeding || p.status != p.state.label();
    let mut fields = Vec::with_capacity(8);
    let mut status = Some(status);
    if explains {
        fields.extend(status.take());
    }
    let bar = opt(2, BAR.into());
    let down = opt(4, format!("↓ {:>10}/s", human_bytes(p.down_rate)));
    let up = opt(5, format!("↑ {}/s", human_bytes(p.up_rate)));
    let peers = opt(6, format!("peers {}/{}", p.peers, p.known_peers));
    let sizes = opt(
        3,
        format!("{}/{}", human_bytes(p.have_bytes), human_bytes(p.total)),
    );
    if seeding {
        fields.extend([up, peers, bar, sizes]);
    } else {
        fields.extend([
            bar,
            down,
            opt(8, format!("eta {}", eta(p))),
            sizes,
            peers,
            up,
        ]);
    }
    let sources = peer_sources(p);
    if !sources.is_empty() {
        fields.push(opt(7, sources.trim_start().to_string()));
    }
    fields.extend(status);
    fit(
        width,
        vec![(0, name), (1, percent(p.have_bytes, p.total))],
        fields,
        (p.have_bytes, p.total),
    )
}

/// A file's line: indented percent, then its path (cut from the left), a
/// bar and sizes as room allows.
pub fn file_line(path: &str, done: u64, len: u64, width: usize) -> String {
    fit(
        width,
        vec![(0, format!("  {}", percent(done, len)))],
        vec![
            opt(2, BAR.into()),
            // Padded, so the paths of all file lines start in one column.
            opt(
                3,
                format!("{:>10}/{:<10}", human_bytes(done), human_bytes(len)),
            ),
            Opt {
                order: 4,
                text: crate::out::escape(path).into_owned(),
                min: 8,
                cut_left: true,
            },
        ],
        (done, len),
    )
}

/// Keeps the terminal from echoing keys while bars are up, restoring it
/// when dropped. indicatif leaves the cursor at the right edge after the
/// last bar; an echoed `^C` (or any key) wraps it to the next line, and
/// the final clear then starts a line too low and leaves a bar behind.
pub(crate) struct NoEcho(Option<libc::termios>);

/// Whether we own the terminal on stdin now. Only the foreground job may
/// change its settings: a background one (`shoal download … &`) would be
/// stopped by SIGTTOU, and must leave the shell's settings alone anyway.
#[cfg(unix)]
fn foreground() -> bool {
    // SAFETY: plain queries on our own stdin and process group.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

impl NoEcho {
    pub(crate) fn new() -> NoEcho {
        #[cfg(unix)]
        {
            let fd = libc::STDIN_FILENO;
            // SAFETY: termios is plain data, filled in by tcgetattr.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            if foreground() && unsafe { libc::tcgetattr(fd, &mut t) } == 0 {
                let saved = t;
                t.c_lflag &= !(libc::ECHO | libc::ECHOCTL);
                if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } == 0 {
                    return NoEcho(Some(saved));
                }
            }
        }
        NoEcho(None)
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // Sent to the background meanwhile (Ctrl-Z, bg): the shell has
        // put its own settings back, and ours would stop us (SIGTTOU).
        #[cfg(unix)]
        if let Some(t) = self.0.take().filter(|_| foreground()) {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
    }
}

fn line_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// Follows the torrent's progress until its channel closes (the
/// coordinator is gone). Bars redraw ten times a second and clear at the
/// end; JSON prints a `progress` line a second, a `state` line when the
/// state or status changes and `seeding` when seeding starts.
pub async fn show(meta: Arc<Metainfo>, mut rx: watch::Receiver<Progress>, display: Display) {
    match display {
        Display::Silent => while rx.changed().await.is_ok() {},
        Display::Plain => {
            let mut last = rx.borrow_and_update().state;
            while rx.changed().await.is_ok() {
                let now = rx.borrow_and_update().state;
                if now == State::Seeding && last != State::Seeding {
                    say(&format!(
                        "{}: download complete, seeding until Ctrl-C",
                        crate::out::escape(&meta.name)
                    ));
                }
                last = now;
            }
        }
        Display::Json => {
            let mut last: Option<(State, String)> = None;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                let ticked = tokio::select! {
                    _ = tick.tick() => true,
                    r = rx.changed() => {
                        if r.is_err() {
                            return;
                        }
                        false
                    }
                };
                let p = rx.borrow_and_update().clone();
                let now = (p.state, p.status.clone());
                if last.as_ref() != Some(&now) {
                    if p.state == State::Seeding
                        && last.as_ref().map(|l| l.0) != Some(State::Seeding)
                    {
                        emit(
                            "seeding",
                            serde_json::json!({"have_bytes": p.have_bytes, "total": p.total}),
                        );
                    }
                    emit(
                        "state",
                        serde_json::json!({"state": p.state.label(), "status": p.status}),
                    );
                    last = Some(now);
                }
                if ticked {
                    crate::outln!("{}", progress_json(&p));
                }
            }
        }
        Display::Bars => {
            // Echo must come back, so a signal may not end us the default
            // way while it is off: with a handler installed (the session
            // acts on it), SIGINT and SIGTERM no longer kill outright.
            #[cfg(unix)]
            let handlers = {
                use tokio::signal::unix::{signal, SignalKind};
                (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                )
            };
            #[cfg(unix)]
            let _no_echo = match handlers {
                (Ok(_), Ok(_)) => Some(NoEcho::new()),
                _ => None,
            };
            let multi = multi();
            let main = multi.add(ProgressBar::new_spinner());
            main.set_style(line_style());
            let mut file_bars: Vec<(usize, ProgressBar)> = Vec::new();
            let mut last_state = None;
            loop {
                let p = rx.borrow_and_update().clone();
                if p.state == State::Seeding
                    && last_state.is_some_and(|s| s != State::Seeding && s != State::Checking)
                {
                    say(&format!(
                        "{}: download complete, seeding until Ctrl-C",
                        crate::out::escape(&meta.name)
                    ));
                }
                last_state = Some(p.state);
                let width = term_width();
                main.set_message(main_line(&meta.name, &p, width));
                if meta.multi_file {
                    update_file_bars(&meta, &p, multi, &mut file_bars, width);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if rx.has_changed().is_err() {
                    break;
                }
            }
            for (_, b) in file_bars {
                b.finish_and_clear();
                multi.remove(&b);
            }
            main.finish_and_clear();
            multi.remove(&main);
        }
    }
}

/// Bars for the files being filled in right now (at most five).
fn update_file_bars(
    meta: &Metainfo,
    p: &Progress,
    multi: &MultiProgress,
    bars: &mut Vec<(usize, ProgressBar)>,
    width: usize,
) {
    bars.retain(|(i, bar)| {
        let done = p.file_done.get(*i).copied().unwrap_or(0);
        let f = &meta.files[*i];
        if done >= f.length {
            bar.finish_and_clear();
            multi.remove(bar);
            false
        } else {
            bar.set_message(file_line(
                &f.path.display().to_string(),
                done,
                f.length,
                width,
            ));
            true
        }
    });
    for (i, f) in meta.files.iter().enumerate() {
        if bars.len() >= 5 {
            break;
        }
        let done = p.file_done.get(i).copied().unwrap_or(0);
        if !f.is_data() || done == 0 || done >= f.length || bars.iter().any(|(j, _)| *j == i) {
            continue;
        }
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(line_style());
        bar.set_message(file_line(
            &f.path.display().to_string(),
            done,
            f.length,
            width,
        ));
        bars.push((i, bar));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_dates() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(format_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_date(1_234_567), "1970-01-15 06:56:07 UTC");
        assert_eq!(format_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_date(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    fn progress(have: u64, status: &str, state: State) -> Progress {
        Progress {
            state,
            status: status.into(),
            total: 5 << 20,
            have_bytes: have,
            piece_count: 80,
            down_rate: 800 << 10,
            peers: 1,
            known_peers: 1,
            ..Default::default()
        }
    }

    /// Every line fits, narrow ones drop fields rather than wrap, and
    /// wide ones show everything.
    #[test]
    fn lines_fit_the_width() {
        let p = progress(3 << 20, "downloading", State::Downloading);
        for width in [20, 40, 60, 80, 120, 200] {
            let l = main_line("display-test", &p, width);
            assert!(width_of(&l) < width, "{width}: {l:?}");
            assert!(l.starts_with("disp"), "{width}: {l:?}");
            let f = file_line("some/folder/with/a/long/file-name.bin", 500, 1000, width);
            assert!(width_of(&f) < width, "{width}: {f:?}");
            assert!(f.starts_with("   50%"), "{width}: {f:?}");
        }
        let wide = main_line("display-test", &p, 120);
        for field in [
            "[",
            "3.0 MiB/5.0 MiB",
            "800.0 KiB/s",
            "↑ 0 B/s",
            "peers 1/1",
            "eta 2s",
            "downloading",
        ] {
            assert!(wide.contains(field), "{field} missing: {wide:?}");
        }
        let narrow = main_line("display-test", &p, 60);
        assert!(
            narrow.contains("800.0 KiB/s") && narrow.contains('['),
            "{narrow:?}"
        );
        let f = file_line("some/folder/with/a/long/file-name.bin", 500, 1000, 60);
        assert!(f.ends_with("file-name.bin") && f.contains('…'), "{f:?}");
    }

    /// A seed shows what it sends, not an ETA or what it no longer receives.
    #[test]
    fn a_seed_shows_its_upload() {
        let mut p = progress(5 << 20, "seeding", State::Seeding);
        p.up_rate = 300 << 10;
        let l = main_line("display-test", &p, 60);
        assert!(
            l.contains("seeding") && l.contains("↑ 300.0 KiB/s"),
            "{l:?}"
        );
        assert!(!l.contains("eta") && !l.contains('↓'), "{l:?}");
    }

    /// Why nothing moves is worth more than a bar at 0 %.
    #[test]
    fn an_explaining_status_comes_first() {
        let why = "peer 127.0.0.1:9: connection refused, retry in 10s";
        let p = progress(0, why, State::Connecting);
        let l = main_line("display-test", &p, 80);
        assert!(l.ends_with(why), "{l:?}");
        let l = main_line("display-test", &p, 60);
        assert!(l.contains("connection refused"), "{l:?}");
    }

    #[test]
    fn durations_and_events() {
        assert_eq!(human_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(human_duration(Duration::from_secs(7509)), "2h05m09s");
        let v = event_json("x", serde_json::json!({"a": 1}));
        assert_eq!(v["event"], "x");
        assert_eq!(v["version"], JSON_VERSION);
        assert_eq!(v["a"], 1);
        assert!(v["ts"].as_f64().is_some_and(|t| t > 1.6e9), "{v}");
    }
}
