//! Terminal output: sizes, dates and progress bars. Bars are hidden when
//! stdout is not a terminal, so scripts and logs stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::metainfo::Metainfo;
use crate::torrent::Progress;

/// `1.5 GiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

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

/// A bytes bar drawn on stderr only when stdout is a terminal.
pub fn bytes_bar(total: u64, message: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if stdout_is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    pb
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
    out
}

/// How a running torrent reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// indicatif bars on a terminal.
    Bars,
    /// Newline-delimited JSON events on stdout.
    Json,
    /// Nothing while running (stdout is not a terminal, or --quiet).
    Silent,
}

impl Display {
    pub fn choose(json: bool, quiet: bool) -> Display {
        if json {
            Display::Json
        } else if quiet || !stdout_is_terminal() {
            Display::Silent
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

/// " (tracker 5, dht 30, pex 5)": where the connected peers came from.
pub fn peer_sources(p: &Progress) -> String {
    if p.peer_sources.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = p
        .peer_sources
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(" ({})", parts.join(", "))
}

pub fn progress_json(p: &Progress) -> serde_json::Value {
    serde_json::json!({
        "event": "progress",
        "state": p.state.label(),
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
        "hash_failures": p.hash_failures,
        "banned": p.banned,
    })
}

/// Follows the torrent's progress until aborted. Bars redraw at most ten
/// times a second; JSON prints a line a second and one per state change.
pub async fn show(meta: Arc<Metainfo>, mut rx: watch::Receiver<Progress>, display: Display) {
    match display {
        Display::Silent => std::future::pending::<()>().await,
        Display::Json => {
            let mut last_state = None;
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
                if last_state != Some(p.state) {
                    last_state = Some(p.state);
                    crate::outln!(
                        "{}",
                        serde_json::json!({"event": "state", "state": p.state.label()})
                    );
                }
                if ticked {
                    crate::outln!("{}", progress_json(&p));
                }
            }
        }
        Display::Bars => {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let main = multi.add(ProgressBar::new(meta.total_length));
            main.set_style(
                ProgressStyle::with_template("{prefix:>11} [{bar:40}] {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            main.set_prefix(crate::out::escape(&meta.name).into_owned());
            let mut file_bars: Vec<(usize, ProgressBar)> = Vec::new();
            loop {
                let p = rx.borrow_and_update().clone();
                main.set_position(p.have_bytes);
                main.set_message(format!(
                    "{} ↓ {}/s ↑ {}/s peers {}/{}{} eta {}",
                    p.state.label(),
                    human_bytes(p.down_rate),
                    human_bytes(p.up_rate),
                    p.peers,
                    p.known_peers,
                    peer_sources(&p),
                    eta(&p)
                ));
                if meta.multi_file {
                    update_file_bars(&meta, &p, &multi, &mut file_bars);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if rx.has_changed().is_err() {
                    break;
                }
            }
            let _ = multi.clear();
        }
    }
}

/// Bars for the files being filled in right now (at most five).
fn update_file_bars(
    meta: &Metainfo,
    p: &Progress,
    multi: &MultiProgress,
    bars: &mut Vec<(usize, ProgressBar)>,
) {
    bars.retain(|(i, bar)| {
        let done = p.file_done.get(*i).copied().unwrap_or(0);
        if done >= meta.files[*i].length {
            bar.finish_and_clear();
            multi.remove(bar);
            false
        } else {
            bar.set_position(done);
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
        let bar = multi.add(ProgressBar::new(f.length));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>11} [{bar:40}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix("file");
        bar.set_message(crate::out::escape(&f.path.display().to_string()).into_owned());
        bar.set_position(done);
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
}
