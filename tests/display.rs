//! What a person sees: the real binary in a real terminal (tmux), at 60,
//! 80 and 120 columns. Bar lines must fit (a wrapped one shows up as a
//! line that is neither a bar nor a known message), the last screen must
//! be the summary with no stale bar, a swarm without peers must say why
//! rather than "endgame", and Ctrl-C must leave a clean screen.
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

impl Tmux {
    /// Runs `cmd` in a detached `width`-column pane; the pane stays after
    /// it exits and shows `EXIT=<code>`.
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
        let script = format!("{cmd}; echo EXIT=$?; sleep 600");
        let o = t.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            "24",
            "-e",
            "SHOAL_LOG=warn",
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

/// The last screen: the summary, no bar left behind.
fn check_final(width: usize, s: &[String], out: &Path) {
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

#[test]
fn bars_fit_60_80_120_columns_and_leave_a_summary() {
    let s = setup();
    for width in [60, 80, 120] {
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
        assert!(
            screens.iter().flatten().any(|l| is_file_bar(l)),
            "{width} columns: no file bar ever shown"
        );
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

/// Log lines (a tracker that refuses) print above the bar, and the bar is
/// never left behind in copies.
#[test]
fn log_lines_go_above_a_single_bar() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src").join(NAME), &[("one.bin", 100_000)]);
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let torrent = create_torrent(
        &d.join("src").join(NAME),
        &d.join("t.torrent"),
        &[dead],
        16384,
    );
    let out = d.join("out");
    // A failing tracker warns once; each retry is logged at info.
    let cmd = format!(
        "SHOAL_LOG=info '{}' download '{}' -o '{}'",
        shoal_bin(),
        torrent.display(),
        out.display()
    );
    let t = Tmux::start(80, &cmd);
    // The first announce fails at once (a warning and an info line), the
    // retry some 5 s later (another info line): by then the bar is up,
    // and the log line must go above it.
    let mut screens = t.watch(Duration::from_secs(20), |s| {
        s.iter().filter(|l| l.contains("announce failed")).count() >= 3
    });
    screens.extend(t.watch(Duration::from_secs(5), |s| {
        s.iter()
            .any(|l| is_main_bar(l) && l.contains("connection refused"))
    }));
    for s in &screens {
        let bars = s.iter().filter(|l| is_main_bar(l)).count();
        assert!(bars <= 1, "stale bar copies:\n{}", show(s));
    }
    let last = screens.last().unwrap();
    let bar_at = last.iter().position(|l| is_main_bar(l));
    let log_at = last.iter().rposition(|l| l.contains("announce failed"));
    assert!(
        bar_at.is_some() && log_at < bar_at,
        "the bar is not below the log lines:\n{}",
        show(last)
    );
    assert!(
        last.iter()
            .any(|l| is_main_bar(l) && l.contains("connection refused")),
        "the bar does not say why:\n{}",
        show(last)
    );
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
            .any(|l| l.starts_with(&format!("listening on port {port} (")));
        assert_eq!(said, !quiet, "{name}: {}", p.stderr());
    }
}
