//! What a person sees: the real binary in a real terminal (tmux), at 50,
//! 60, 80 and 120 columns. Bar lines must fit (a wrapped one shows up as a
//! line that is neither a bar nor a known message), the last screen must
//! be the summary with no stale bar, a swarm without peers must say why
//! rather than "endgame", Ctrl-C must leave a clean screen, log records
//! are one short line per cause, and a resize leaves no torn fragment.
//!
//! Needs tmux (`.ci/deps` installs it).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const NAME: &str = "pack";

/// A tmux server of our own (unique socket), killed when dropped.
struct Tmux {
    socket: String,
    width: usize,
    /// The server's socket file, removed with it (tmux leaves it behind).
    socket_path: Option<std::path::PathBuf>,
}

/// Output already on the terminal above the command, as a shell session
/// has (see `a_resize_leaves_no_torn_fragment`).
const SHELL_HISTORY: &str = "seq 1 40; ";

impl Tmux {
    /// Runs `cmd` in a detached `width`-column pane; the pane stays after
    /// it exits and shows `EXIT=<code>`. `SHOAL_LOG` is unset, as on a
    /// new user's machine (a command may set it for itself).
    fn start(width: usize, cmd: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "shoal-display-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut t = Tmux {
            socket,
            width,
            socket_path: None,
        };
        let script = format!("unset SHOAL_LOG; {cmd}; echo EXIT=$?; sleep 600");
        let o = t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            "24",
            // Loopback only, like every test that runs the binary.
            "-e",
            "SHOAL_NO_DHT=1",
            "-e",
            "SHOAL_NO_LSD=1",
            // bash, not dash: on Ctrl-C dash quits along with its child
            // even when the child handles the signal and exits normally,
            // and the pane (and server) would go with it.
            "bash",
            "-c",
            &script,
        ]);
        assert!(
            o.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = t.run(&["display-message", "-p", "#{socket_path}"]);
        let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
        t.socket_path = (!path.is_empty()).then(|| path.into());
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-u")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux not found (run .ci/deps)")
    }

    fn screen(&self) -> Vec<String> {
        let o = self.run(&["capture-pane", "-p"]);
        assert!(
            o.status.success(),
            "tmux capture-pane: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    fn keys(&self, k: &str) {
        self.run(&["send-keys", k]);
    }

    /// Makes the pane `width` columns wide.
    fn resize(&mut self, width: usize) {
        let o = self.run(&["resize-window", "-x", &width.to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        self.width = width;
    }

    /// Screens seen until one satisfies `done` (that one last).
    fn watch(&self, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<Vec<String>> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let s = self.screen();
            let last = done(&s);
            seen.push(s);
            if last {
                return seen;
            }
            assert!(
                start.elapsed() < limit,
                "{} columns: timed out; last screen:\n{}",
                self.width,
                seen.last().map(|s| s.join("\n")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `NN%` at the start of `s` (after spaces).
fn starts_with_percent(s: &str) -> bool {
    let s = s.trim_start();
    let digits = s.chars().take_while(char::is_ascii_digit).count();
    (1..=3).contains(&digits) && s[digits..].starts_with('%')
}

fn is_main_bar(l: &str) -> bool {
    l.strip_prefix(NAME)
        .is_some_and(|r| r.starts_with(' ') && starts_with_percent(r))
}

fn is_file_bar(l: &str) -> bool {
    l.starts_with("  ") && starts_with_percent(l)
}

fn exited(s: &[String]) -> bool {
    s.iter().any(|l| l.starts_with("EXIT="))
}

/// The run is over: its summary (or the shell's EXIT line) is up.
fn finished(s: &[String]) -> bool {
    exited(s) || s.iter().any(|l| l.starts_with(&format!("{NAME}: ")))
}

fn show(s: &[String]) -> String {
    s.join("\n")
}

/// While running, every line is a bar or a known message, and fits.
fn check_running(width: usize, screens: &[Vec<String>]) {
    for s in screens.iter().filter(|s| !finished(s)) {
        for l in s.iter().filter(|l| !l.is_empty()) {
            assert!(
                l.chars().count() <= width,
                "{width} columns: line too long:\n{}",
                show(s)
            );
            assert!(
                is_main_bar(l) || is_file_bar(l) || l.starts_with("listening on port "),
                "{width} columns: unexpected (wrapped?) line {l:?} in:\n{}",
                show(s)
            );
        }
        assert!(
            s.iter()
                .all(|l| !l.contains("endgame") || !l.contains("peers 0/")),
            "{width} columns: endgame without peers:\n{}",
            show(s)
        );
    }
}

/// The last screen: the summary, no bar left behind, and every line
/// (the "interrupted … resume" one too) within the width.
fn check_final(width: usize, s: &[String], out: &Path) {
    for l in s {
        assert!(
            l.chars().count() < width,
            "{width} columns: line too long: {l:?}\n{}",
            show(s)
        );
    }
    assert!(
        s.iter().all(|l| !is_main_bar(l) && !is_file_bar(l)),
        "{width} columns: a bar was left on the final screen:\n{}",
        show(s)
    );
    let summary = format!("{NAME}: ");
    assert!(
        s.iter()
            .any(|l| l.starts_with(&summary) && l.contains(" verified")),
        "{width} columns: no summary:\n{}",
        show(s)
    );
    let dest = out.join(NAME).display().to_string();
    assert!(
        show(s).replace('\n', "").contains(&dest),
        "{width} columns: summary lacks {dest}:\n{}",
        show(s)
    );
    assert_eq!(
        s.iter()
            .filter(|l| l.starts_with("listening on port "))
            .count(),
        1,
        "{width} columns:\n{}",
        show(s)
    );
}

struct Setup {
    dir: tempfile::TempDir,
    torrent: String,
    _seeder: Proc,
    seed_port: u16,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src").join(NAME),
        &[
            ("one.bin", 700_000),
            ("two.bin", 600_000),
            ("sub/three-with-a-longer-name-than-most.bin", 500_000),
            ("four.bin", 400_000),
        ],
    );
    let torrent = create_torrent(&d.join("src").join(NAME), &d.join("t.torrent"), &[], 16384);
    // Slow enough that bars stay up for a few seconds.
    let (seeder, seed_port) = seeder(
        d,
        &torrent,
        &d.join("src"),
        &["--quiet", "--upload-limit", "700000"],
    );
    Setup {
        torrent: torrent.display().to_string(),
        dir,
        _seeder: seeder,
        seed_port,
    }
}

fn download_cmd(s: &Setup, out: &Path, peer: &str) -> String {
    format!(
        "'{}' download '{}' -o '{}' --peer {peer}",
        shoal_bin(),
        s.torrent,
        out.display()
    )
}

/// A file line's path: what follows its bar and sizes.
fn file_path(l: &str) -> &str {
    let rest = l.rsplit_once(']').map_or(l, |(_, r)| r).trim_start();
    match rest.find("  ") {
        // Sizes ("448.0 KiB/1.4 MiB  "), then the path.
        Some(i) if rest[..i].contains('/') && rest[..i].contains('B') => rest[i..].trim_start(),
        _ => rest,
    }
}

#[test]
fn bars_fit_50_60_80_120_columns_and_leave_a_summary() {
    let s = setup();
    for width in [50, 60, 80, 120] {
        let out = s.dir.path().join(format!("out{width}"));
        let peer = format!("127.0.0.1:{}", s.seed_port);
        let t = Tmux::start(width, &download_cmd(&s, &out, &peer));
        let screens = t.watch(Duration::from_secs(60), exited);
        check_running(width, &screens);
        let bars: Vec<&Vec<String>> = screens
            .iter()
            .filter(|s| s.iter().any(|l| is_main_bar(l) && l.contains('[')))
            .collect();
        assert!(
            bars.len() >= 3,
            "{width} columns: bars seen on only {} screens",
            bars.len()
        );
        let files: Vec<&String> = screens
            .iter()
            .flatten()
            .filter(|l| is_file_bar(l))
            .collect();
        assert!(!files.is_empty(), "{width} columns: no file bar ever shown");
        // File lines name the file inside the torrent's folder, from its
        // start (cut in the middle, if at all), at 50 columns too.
        for l in &files {
            let path = file_path(l);
            assert!(
                !path.starts_with(NAME) && !path.starts_with('…'),
                "{width} columns: {l:?}"
            );
            assert!(
                ["one.bin", "two.bin", "four.bin", "sub/thr"]
                    .iter()
                    .any(|n| path.starts_with(n)),
                "{width} columns: no name in {l:?}"
            );
        }
        let last = screens.last().unwrap();
        assert!(
            last.iter().any(|l| l == "EXIT=0"),
            "{width} columns:\n{}",
            show(last)
        );
        check_final(width, last, &out);
        // Wide enough for everything: the rate and the peers are shown.
        if width == 120 {
            assert!(
                bars.iter()
                    .flat_map(|s| s.iter())
                    .any(|l| is_main_bar(l) && l.contains("peers 1/1") && l.contains("KiB/s")),
                "120 columns: no rate or peers in the bar"
            );
        }
        assert_same_tree(&s.dir.path().join("src"), &out);
    }
}

#[test]
fn no_peer_says_why_and_ctrl_c_leaves_a_clean_screen() {
    let s = setup();
    // No peer: the status says why, never "endgame".
    let out = s.dir.path().join("nopeer");
    let closed = format!("127.0.0.1:{}", free_port());
    let t = Tmux::start(80, &download_cmd(&s, &out, &closed));
    let screens = t.watch(Duration::from_secs(20), |sc| {
        sc.iter()
            .any(|l| is_main_bar(l) && l.contains("connection refused"))
    });
    // Past the first retry too: still no "endgame".
    std::thread::sleep(Duration::from_secs(2));
    let mut screens = screens;
    screens.push(t.screen());
    check_running(80, &screens);
    assert!(
        screens.iter().flatten().all(|l| !l.contains("endgame")),
        "endgame without peers"
    );
    t.keys("C-c");
    let screens = t.watch(Duration::from_secs(20), exited);
    let last = screens.last().unwrap();
    check_final(80, last, &out);
    assert!(
        last.iter().any(|l| l.starts_with("EXIT=") && l != "EXIT=0"),
        "{}",
        show(last)
    );
    drop(t);

    // Ctrl-C in the middle of a download, bars and all.
    let out = s.dir.path().join("interrupted");
    let peer = format!("127.0.0.1:{}", s.seed_port);
    let t = Tmux::start(60, &download_cmd(&s, &out, &peer));
    let screens = t.watch(Duration::from_secs(30), |sc| {
        sc.iter().any(|l| is_main_bar(l) && l.contains('[')) && sc.iter().any(|l| is_file_bar(l))
    });
    check_running(60, &screens);
    t.keys("C-c");
    let screens = t.watch(Duration::from_secs(20), exited);
    let last = screens.last().unwrap();
    check_final(60, last, &out);
    assert!(
        last.iter().all(|l| !l.contains("^C")),
        "echoed ^C left on screen:\n{}",
        show(last)
    );
}

/// A torrent whose only tracker refuses connections, and the command
/// that downloads it (DHT and local discovery off, no peer).
fn dead_tracker_torrent(d: &Path) -> (String, u16) {
    make_tree(&d.join("src").join(NAME), &[("one.bin", 100_000)]);
    let port = free_port();
    let dead = format!("http://127.0.0.1:{port}/announce");
    let torrent = create_torrent(
        &d.join("src").join(NAME),
        &d.join("t.torrent"),
        &[dead],
        16384,
    );
    let cmd = format!(
        "'{}' download '{}' -o '{}'",
        shoal_bin(),
        torrent.display(),
        d.join("out").display()
    );
    (cmd, port)
}

/// A tracker that refuses, tried again and again: on a terminal one short
/// line for the cause, its count going up, above a single bar, never
/// tracing's format; at every width it fits.
#[test]
fn tracker_failures_are_one_counted_line_above_the_bar() {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, port) = dead_tracker_torrent(dir.path());
    let cause = format!("tracker 127.0.0.1:{port}: connection refused");
    for width in [50, 60, 80, 120] {
        let t = Tmux::start(width, &cmd);
        // The first announce fails at once, the retry some 5 s later.
        let screens = t.watch(Duration::from_secs(30), |s| {
            s.iter().any(|l| l.contains("(2×), next try in")) && s.iter().any(|l| is_main_bar(l))
        });
        for s in &screens {
            assert!(
                s.iter().filter(|l| is_main_bar(l)).count() <= 1,
                "{width} columns: stale bar copies:\n{}",
                show(s)
            );
            for l in s.iter().filter(|l| !l.is_empty()) {
                assert!(l.chars().count() < width, "{width}: {l:?}\n{}", show(s));
                assert!(
                    is_main_bar(l)
                        || l.starts_with("listening on port ")
                        || l.starts_with("tracker 127.0.0.1:"),
                    "{width} columns: unexpected line {l:?}:\n{}",
                    show(s)
                );
                assert!(
                    !l.contains("WARN") && !l.contains("announce failed"),
                    "{l:?}"
                );
            }
        }
        let last = screens.last().unwrap();
        let notes: Vec<usize> = (0..last.len())
            .filter(|&i| last[i].starts_with("tracker 127.0.0.1:"))
            .collect();
        assert_eq!(notes.len(), 1, "{width} columns:\n{}", show(last));
        let note = &last[notes[0]];
        let bar_at = last.iter().position(|l| is_main_bar(l));
        assert!(
            bar_at > Some(notes[0]),
            "not above the bar:\n{}",
            show(last)
        );
        if width >= 80 {
            assert!(
                note.starts_with(&format!("{cause} (2×), next try in ")),
                "{note:?}"
            );
        } else {
            assert!(note.contains("(2×), next try in "), "{note:?}");
        }
        // Ctrl-C: the line stays, once, above the summary.
        t.keys("C-c");
        let screens = t.watch(Duration::from_secs(20), exited);
        let last = screens.last().unwrap();
        let notes: Vec<usize> = (0..last.len())
            .filter(|&i| last[i].starts_with("tracker 127.0.0.1:"))
            .collect();
        let summary = last
            .iter()
            .position(|l| l.starts_with(&format!("{NAME}: ")));
        assert_eq!(notes.len(), 1, "{width} columns:\n{}", show(last));
        assert!(summary > Some(notes[0]), "{width} columns:\n{}", show(last));
        assert!(last.iter().all(|l| !is_main_bar(l)), "{}", show(last));
    }
}

/// With `SHOAL_LOG`, tracing's full format stays (for a log file), and the
/// first failure is logged once, not twice: one record per announce.
#[test]
fn shoal_log_keeps_the_full_format_and_logs_a_failure_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, port) = dead_tracker_torrent(dir.path());
    let t = Tmux::start(120, &format!("SHOAL_LOG=info {cmd}"));
    let cause = format!("tracker 127.0.0.1:{port}: connection refused");
    let records = |s: &[String]| -> usize {
        s.iter()
            .filter(|l| (l.contains(" WARN ") || l.contains(" INFO ")) && l.contains(&cause))
            .count()
    };
    // Two announces (the second some 5 s after the first).
    let screens = t.watch(Duration::from_secs(30), |s| records(s) >= 2);
    let last = screens.last().unwrap();
    assert_eq!(records(last), 2, "{}", show(last));
    assert!(
        last.iter()
            .any(|l| l.contains(" WARN ") && l.contains("retry_in=")),
        "{}",
        show(last)
    );
    assert!(last.iter().any(|l| l.contains(" INFO ")), "{}", show(last));
}

/// Shrinking the terminal re-wraps the bars already drawn; the next frame
/// clears what they now take, leaving no torn piece of an old bar, and
/// growing it again brings none back.
///
/// The pane starts below some output, as a shell session is: in a fresh
/// pane whose bars sit on its first rows, tmux moves the rows a narrower
/// width adds above the cursor into its scrollback, which no program can
/// clear (they come back when the pane grows).
#[test]
fn a_resize_leaves_no_torn_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let (cmd, _) = dead_tracker_torrent(dir.path());
    for (from, to) in [(80, 50), (120, 60)] {
        let mut t = Tmux::start(from, &format!("{SHELL_HISTORY}{cmd}"));
        t.watch(Duration::from_secs(30), |s| {
            s.iter().any(|l| l.starts_with("tracker 127.0.0.1:"))
                && s.iter()
                    .any(|l| is_main_bar(l) && l.contains("unreachable"))
        });
        for width in [to, from] {
            t.resize(width);
            // The next frames are made for the new width. Waited for: a
            // whole frame, bar and note (a capture can fall between the
            // two writes of one frame).
            let screens = t.watch(Duration::from_secs(10), |s| {
                // Narrower: a bar that fits; wider again: one that
                // would not have fit the narrow width. It is the last
                // line (a re-wrapped old bar goes on below its start).
                let bar = s.iter().rev().find(|l| !l.is_empty());
                let fits = bar.is_some_and(|b| {
                    is_main_bar(b) && {
                        let n = b.chars().count();
                        n < width && (width == to || n >= to)
                    }
                });
                fits && s.iter().any(|l| l.starts_with("tracker 127.0.0.1:"))
            });
            let s = screens.last().unwrap().clone();
            let bars = s.iter().filter(|l| is_main_bar(l)).count();
            let notes = s
                .iter()
                .filter(|l| l.starts_with("tracker 127.0.0.1:"))
                .count();
            assert_eq!((bars, notes), (1, 1), "{from}→{width}:\n{}", show(&s));
            for l in &s {
                assert!(
                    l.chars().count() < width,
                    "{from}→{width}: {l:?}\n{}",
                    show(&s)
                );
                // A torn piece of a bar or of a note among the bars is
                // neither, and has a piece of their text.
                assert!(
                    l.is_empty()
                        || is_main_bar(l)
                        || l.starts_with("tracker 127.0.0.1:")
                        || l.starts_with("listening on port ")
                        || l.parse::<u32>().is_ok(),
                    "{from}→{width}: torn line {l:?}:\n{}",
                    show(&s)
                );
            }
        }
    }
}

/// A magnet's line while its metadata is fetched uses the whole width
/// (and no more), and Ctrl-C leaves no copy of it or of a log line.
#[test]
fn a_magnet_line_fits_and_goes() {
    let dead = free_port();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn=a-rather-long-name-for-this-magnet-link&x.pe=127.0.0.1:{dead}&tr=http://127.0.0.1:{dead}/announce",
        "5c50e53acf24aa22c62d147d7b638b6e599f9085"
    );
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!(
        "'{}' download '{magnet}' -o '{}'",
        shoal_bin(),
        dir.path().join("out").display()
    );
    for width in [60, 80, 120] {
        let t = Tmux::start(width, &cmd);
        let is_magnet = |l: &String| l.starts_with("a-rather") && l.contains("fetching metadata");
        let screens = t.watch(Duration::from_secs(30), |s| {
            s.iter().any(|l| is_magnet(l) && l.contains("known"))
                && s.iter().any(|l| l.starts_with("tracker 127.0.0.1:"))
        });
        for s in &screens {
            for l in s {
                assert!(l.chars().count() < width, "{width}: {l:?}\n{}", show(s));
            }
        }
        let line = screens
            .last()
            .unwrap()
            .iter()
            .find(|l| is_magnet(l))
            .unwrap()
            .clone();
        // Wide terminals show more, up to the width, not a fixed 80.
        if width == 120 {
            assert!(line.chars().count() > 80, "{line:?}");
            assert!(line.contains("(0 peers, 1 known)"), "{line:?}");
        }
        t.keys("C-c");
        let screens = t.watch(Duration::from_secs(20), exited);
        let last = screens.last().unwrap();
        assert!(last.iter().all(|l| !is_magnet(l)), "{}", show(last));
        assert_eq!(
            last.iter()
                .filter(|l| l.starts_with("tracker 127.0.0.1:"))
                .count(),
            1,
            "{}",
            show(last)
        );
        assert!(last.iter().any(|l| l == "EXIT=130"), "{}", show(last));
        for l in last {
            assert!(l.chars().count() < width, "{width}: {l:?}\n{}", show(last));
        }
    }
}

/// A seeder's line shows what it sent and its ratio; `--seed-time` says
/// how long it seeds.
#[test]
fn a_seed_shows_sent_and_ratio_and_for_how_long() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src").join(NAME), &[("one.bin", 300_000)]);
    let torrent = create_torrent(&d.join("src").join(NAME), &d.join("t.torrent"), &[], 16384);
    for width in [60, 80, 120] {
        let port = free_port();
        let cmd = format!(
            "'{}' seed '{}' --from '{}' --port {port} --seed-time 10m",
            shoal_bin(),
            torrent.display(),
            d.join("src").display()
        );
        let t = Tmux::start(width, &cmd);
        t.watch(Duration::from_secs(30), |s| {
            s.iter()
                .any(|l| l == &format!("{NAME}: seeding for 10m00s"))
        });
        let out = d.join(format!("leech{width}"));
        let mut leech = Proc::spawn(
            &[
                "download",
                torrent.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--peer",
                &format!("127.0.0.1:{port}"),
            ],
            d,
            &format!("leech{width}"),
        );
        assert!(
            leech.wait(Duration::from_secs(60)).success(),
            "{}",
            leech.stderr()
        );
        let screens = t.watch(Duration::from_secs(20), |s| {
            s.iter()
                .any(|l| is_main_bar(l) && l.contains("sent 293.0 KiB ratio 1.00"))
        });
        for s in &screens {
            for l in s {
                assert!(l.chars().count() < width, "{width}: {l:?}\n{}", show(s));
            }
        }
        t.keys("C-c");
        let screens = t.watch(Duration::from_secs(20), exited);
        let last = screens.last().unwrap();
        assert!(last.iter().any(|l| l == "EXIT=0"), "{}", show(last));
    }
}

/// Without a terminal there are no bars, but a seeder still says where it
/// listens (on stderr), and `--quiet` keeps it silent.
#[test]
fn without_a_terminal_the_port_is_still_told() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src").join(NAME), &[("one.bin", 100_000)]);
    let torrent = create_torrent(&d.join("src").join(NAME), &d.join("t.torrent"), &[], 16384);
    let (t, from) = (torrent.to_str().unwrap(), d.join("src"));
    for (quiet, name) in [(false, "plain"), (true, "quiet")] {
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec![
            "seed",
            t,
            "--from",
            from.to_str().unwrap(),
            "--port",
            &port_s,
        ];
        if quiet {
            args.push("--quiet");
        }
        let mut p = Proc::spawn(&args, d, name);
        wait_listening(port);
        std::thread::sleep(Duration::from_millis(300));
        p.stop();
        let said = p
            .stderr()
            .lines()
            .any(|l| l.starts_with(&format!("listening on port {port}: ")));
        assert_eq!(said, !quiet, "{name}: {}", p.stderr());
    }
}

/// `--seed-time` says how long it seeds (not "until Ctrl-C"), with or
/// without a terminal, and then ends by itself (exit 0).
#[test]
fn seed_time_says_for_how_long() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src").join(NAME), &[("one.bin", 100_000)]);
    let torrent = create_torrent(&d.join("src").join(NAME), &d.join("t.torrent"), &[], 16384);
    let mut p = Proc::spawn(
        &[
            "seed",
            torrent.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &free_port().to_string(),
            "--seed-time",
            "2s",
        ],
        d,
        "seed",
    );
    assert!(p.wait(Duration::from_secs(30)).success(), "{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.lines()
            .any(|l| l.ends_with(&format!("{NAME}: seeding for 2s"))),
        "{err}"
    );
    assert!(!err.contains("until Ctrl-C"), "{err}");
}

/// The README's first command, as a new user runs it (with this build's
/// binary for `target/release/shoal`, a free port for 6890 and a scratch
/// folder for /tmp/shoal-demo): the download shows a progress bar before
/// it completes, so the headline feature is seen.
#[test]
fn the_readme_first_command_shows_a_progress_bar() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let first = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.lines().next())
        .expect("a ```sh block in README.md");
    let cmd = first
        .strip_prefix("cargo build --release && ")
        .unwrap_or_else(|| panic!("the first command builds first: {first}"));
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("shoal-demo");
    let port = free_port().to_string();
    let cmd = cmd
        .replace("target/release/shoal", &format!("'{}'", shoal_bin()))
        .replace("6890", &port)
        .replace("/tmp/shoal-demo", &demo.display().to_string());
    let cmd = format!("cd '{}' && {cmd}", env!("CARGO_MANIFEST_DIR"));
    let t = Tmux::start(80, &cmd);
    // A bar part of the way: neither 0 % nor 100 %.
    let bar = |l: &String| {
        l.strip_prefix("sample ").is_some_and(|r| {
            let r = r.trim_start();
            starts_with_percent(r)
                && r.contains('[')
                && !r.starts_with("0%")
                && !r.starts_with("100%")
        })
    };
    let screens = t.watch(Duration::from_secs(60), exited);
    assert!(
        screens.iter().flatten().any(bar),
        "no progress bar seen; last screen:\n{}",
        show(screens.last().unwrap())
    );
    let last = screens.last().unwrap();
    assert!(last.iter().any(|l| l == "EXIT=0"), "{}", show(last));
    assert!(
        last.iter()
            .any(|l| l.starts_with("sample: 146.6 KiB of 146.6 KiB verified")),
        "{}",
        show(last)
    );
    assert_same_tree(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/sample")),
        &demo.join("sample"),
    );
}
