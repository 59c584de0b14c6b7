//! What a run shows: progress bars (hidden when stdout is not a
//! terminal, so scripts and logs stay clean) and `--json` events. Bars
//! are drawn through the terminal's one `MultiProgress`
//! ([`term::multi`]), which lifts them out of the way of anything printed
//! above them, so no stale copy is left behind; their lines are made in
//! `lines`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::face::lines::{file_line, main_line};
pub use crate::face::term::say;
use crate::face::term::{self, width_of};
use crate::metainfo::Metainfo;
use crate::torrent::{Progress, State};

pub use crate::units::{human_bytes, human_duration, human_eta};

/// Version of the `--json` event schema (docs/json.md); raised on any
/// change that could break a reader.
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
        term::width()
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
        return term::add(pb);
    }
    pb
}

/// A line among the bars whose text the caller sets (made for the width
/// with `lines`): a magnet's metadata fetch, say.
pub fn line_bar() -> ProgressBar {
    term::add(
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()).with_style(line_style()),
    )
}

/// Clears a bar and takes it off the screen.
pub fn remove(pb: &ProgressBar) {
    term::remove(pb);
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
    if stdout_is_terminal() {
        term::remove(&pb);
    }
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

/// How long a seed goes on: what `--seed-time` and `--seed-ratio` said.
#[derive(Clone, Copy, Debug, Default)]
pub struct SeedPlan {
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

impl SeedPlan {
    /// "for 6s", "until ratio 2.00", "for 1h00m or until ratio 2.00",
    /// "until Ctrl-C".
    pub fn until(&self) -> String {
        let time = self.time.map(|t| format!("for {}", human_eta(t)));
        let ratio = self.ratio.map(|r| format!("until ratio {r:.2}"));
        match (time, ratio) {
            (Some(t), Some(r)) => format!("{t} or {r}"),
            (Some(t), None) => t,
            (None, Some(r)) => r,
            (None, None) => "until Ctrl-C".into(),
        }
    }
}

/// The line said when seeding starts: after a download, or at once.
fn seeding_said(name: &str, plan: &SeedPlan, after_download: bool) -> String {
    let name = crate::out::escape(name);
    if after_download {
        format!("{name}: download complete, seeding {}", plan.until())
    } else {
        format!("{name}: seeding {}", plan.until())
    }
}

/// Follows the torrent's progress until its channel closes (the
/// coordinator is gone). Bars redraw ten times a second and clear at the
/// end; JSON prints a `progress` line a second, a `state` line when the
/// state or status changes and `seeding` when seeding starts.
pub async fn show(
    meta: Arc<Metainfo>,
    mut rx: watch::Receiver<Progress>,
    display: Display,
    plan: SeedPlan,
) {
    match display {
        Display::Silent => while rx.changed().await.is_ok() {},
        Display::Plain => {
            let mut last: Option<State> = None;
            loop {
                let now = rx.borrow_and_update().state;
                if now == State::Seeding && last != Some(State::Seeding) {
                    let after = last.is_some_and(|s| s != State::Checking);
                    say(&seeding_said(&meta.name, &plan, after));
                }
                last = Some(now);
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        Display::Json => show_json(&mut rx).await,
        Display::Bars => show_bars(&meta, &mut rx, &plan).await,
    }
}

async fn show_json(rx: &mut watch::Receiver<Progress>) {
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
            if p.state == State::Seeding && last.as_ref().map(|l| l.0) != Some(State::Seeding) {
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

/// Turns off the echo of keys while bars are up (see [`NoEcho`]), until
/// the guard is dropped. Needs a tokio runtime.
pub fn keys_unechoed() -> Option<impl Drop> {
    // Echo must come back, so a signal may not end us the default way
    // while it is off: with a handler installed (the session acts on it),
    // SIGINT and SIGTERM no longer kill outright.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(_), Ok(_)) => Some(NoEcho::new()),
            _ => None,
        }
    }
    #[cfg(not(unix))]
    None::<NoEcho>
}

async fn show_bars(meta: &Metainfo, rx: &mut watch::Receiver<Progress>, plan: &SeedPlan) {
    let _no_echo = keys_unechoed();
    let main = line_bar();
    let mut file_bars: Vec<(usize, ProgressBar)> = Vec::new();
    let mut last_state = None;
    let mut last_width = 0;
    loop {
        let p = rx.borrow_and_update().clone();
        if p.state == State::Seeding && last_state != Some(State::Seeding) {
            let after = last_state.is_some_and(|s| s != State::Checking);
            say(&seeding_said(&meta.name, plan, after));
        }
        last_state = Some(p.state);
        let width = term::width();
        if width != last_width {
            crate::face::log::refit(width);
            last_width = width;
        }
        main.set_message(main_line(&meta.name, &p, width));
        if meta.multi_file {
            update_file_bars(meta, &p, &mut file_bars, width);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if rx.has_changed().is_err() {
            break;
        }
    }
    for (_, b) in file_bars {
        term::remove(&b);
    }
    term::remove(&main);
}

/// A file's path inside the torrent's folder: every file line would
/// otherwise start with the same folder name.
fn inner_path(meta: &Metainfo, i: usize) -> String {
    let path = &meta.files[i].path;
    path.strip_prefix(&meta.name)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Bars for the files being filled in right now (at most five).
fn update_file_bars(
    meta: &Metainfo,
    p: &Progress,
    bars: &mut Vec<(usize, ProgressBar)>,
    width: usize,
) {
    bars.retain(|(i, bar)| {
        let done = p.file_done.get(*i).copied().unwrap_or(0);
        let f = &meta.files[*i];
        if done >= f.length {
            term::remove(bar);
            false
        } else {
            bar.set_message(file_line(&inner_path(meta, *i), done, f.length, width));
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
        let bar = line_bar();
        bar.set_message(file_line(&inner_path(meta, i), done, f.length, width));
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

    #[test]
    fn seeding_says_for_how_long() {
        let plan = SeedPlan {
            ratio: None,
            time: Some(Duration::from_secs(6)),
        };
        assert_eq!(seeding_said("pack", &plan, false), "pack: seeding for 6s");
        assert_eq!(
            seeding_said("pack", &SeedPlan::default(), true),
            "pack: download complete, seeding until Ctrl-C"
        );
        let both = SeedPlan {
            ratio: Some(2.0),
            time: Some(Duration::from_secs(5400)),
        };
        assert_eq!(both.until(), "for 1h30m or until ratio 2.00");
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
