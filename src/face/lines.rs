//! The lines the bars show, each made for the terminal's width: a narrow
//! terminal drops the less important fields instead of wrapping, and a
//! name is cut where it loses least. Pure: the width is a parameter.

use crate::face::term::{cut_end, cut_middle, width_of};
use crate::torrent::{Progress, State};
use crate::units::human_bytes;

/// "1 peer", "3 peers".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
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

/// Columns inside a bar's brackets at `width`: a quarter of the terminal
/// (12 to 42 columns with the brackets), the same on every line.
fn bar_inner(width: usize) -> usize {
    (width.saturating_sub(1) / 4).clamp(12, 42) - 2
}

/// A field of a bar line that is shown only if there is room.
struct Opt {
    /// Place on the line (fields are shown sorted by it).
    order: u8,
    text: String,
    /// Columns below which the field is dropped rather than cut; 0: never cut.
    min: usize,
}

fn opt(order: u8, text: String) -> Opt {
    Opt {
        order,
        text,
        min: 0,
    }
}

/// The bar's place among the optional fields; if its usual width does not
/// fit when its turn comes, 12 columns.
const BAR: &str = "\u{0}bar";

/// A line that fits `width` columns: `fixed` fields always (cut if they
/// must), then `optional` ones in order of importance while they fit.
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
    let usual = bar_inner(width + 1);
    for o in optional {
        let room = width.saturating_sub(used + 1);
        if o.text == BAR {
            let inner = if room >= usual + 2 { usual } else { 10 };
            if room >= inner + 2 {
                bar_at = Some((o.order, inner));
                used += inner + 3;
            }
            continue;
        }
        let text = if width_of(&o.text) <= room {
            o.text
        } else if o.min > 0 && room >= o.min {
            cut_end(&o.text, room)
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

/// Time left at the current download rate, as every ETA is written.
fn eta(p: &Progress) -> String {
    let left = p.total.saturating_sub(p.have_bytes);
    if left == 0 {
        return "-".into();
    }
    if p.down_rate == 0 {
        return "∞".into();
    }
    // Rounded up: "0s" is for when it is done.
    crate::units::human_eta(std::time::Duration::from_secs(left.div_ceil(p.down_rate)))
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

/// Copies of the torrent sent: what `--seed-ratio` counts.
pub fn ratio(uploaded: u64, total: u64) -> f64 {
    uploaded as f64 / total.max(1) as f64
}

/// The torrent's line: name and percent always, then as room allows its
/// status, a bar, download rate, eta, sizes, peers, upload rate and where
/// the peers came from. A seed shows what it sent and its ratio instead
/// of what it no longer receives.
pub fn main_line(name: &str, p: &Progress, width: usize) -> String {
    // Names and a tracker's words are a stranger's: no control characters.
    let name = cut_end(&crate::out::escape(name), 24.min(width / 4).max(4));
    let status = Opt {
        order: 9,
        text: crate::out::escape(&p.status).into_owned(),
        min: 12,
    };
    // A status that explains (why there are no peers) comes first; the
    // plain state name ("downloading") only if there is room left.
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
        // What it sent and its ratio matter more to a seed than its rate
        // this second: at 60 columns the rate gives way first.
        let sent = opt(
            5,
            format!(
                "sent {} ratio {:.2}",
                human_bytes(p.uploaded),
                ratio(p.uploaded, p.total)
            ),
        );
        fields.extend([sent, up, peers, bar, sizes]);
    } else if explains && p.down_rate == 0 {
        // Nothing comes in and the status says why: a rate of 0 and an
        // ETA of ∞ would only take its room.
        fields.extend([bar, sizes, peers, up]);
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

/// A file's line: its percent, its path inside the torrent's folder, and
/// as room allows a bar and its sizes. The path goes before the sizes: at
/// 60 columns a name says more than "448.0 KiB/1.4 MiB". What is shown
/// depends on the width only, so the lines of all files stay aligned. A
/// long path is cut in the middle, keeping where it starts and how it ends.
pub fn file_line(path: &str, done: u64, len: u64, width: usize) -> String {
    /// Columns a path gets at least before the bar or the sizes do.
    const PATH: usize = 20;
    let path = crate::out::escape(path);
    let room = width.saturating_sub(1);
    let mut line = format!("  {}", percent(done, len));
    let bar_w = bar_inner(width) + 2;
    // Padded, so the paths of all file lines start in one column.
    let sizes = format!("{:>10}/{:<10}", human_bytes(done), human_bytes(len));
    let mut used = width_of(&line) + 1;
    if room >= used + bar_w + 1 + PATH {
        line.push(' ');
        line.push_str(&bar(done, len, bar_w - 2));
        used += bar_w + 1;
    }
    if room >= used + width_of(&sizes) + 1 + PATH {
        line.push(' ');
        line.push_str(&sizes);
        used += width_of(&sizes) + 1;
    }
    let shown = cut_middle(&path, room.saturating_sub(used));
    if !shown.is_empty() {
        line.push(' ');
        line.push_str(&shown);
    }
    line
}

/// A magnet's line while its metadata is fetched: the name, what is
/// going on, the peers, and the last failure as room allows.
pub fn magnet_line(
    label: &str,
    connected: usize,
    known: usize,
    last_error: Option<&str>,
    width: usize,
) -> String {
    let label = cut_end(&crate::out::escape(label), 24.min(width / 3).max(4));
    let mut optional = vec![opt(
        2,
        format!(
            "({}, {} known)",
            plural(connected as u64, "peer", "peers"),
            known
        ),
    )];
    if let Some(e) = last_error {
        optional.push(Opt {
            order: 3,
            text: format!("- {}", crate::out::escape(e)),
            min: 14,
        });
    }
    fit(
        width,
        vec![(0, format!("{label}:")), (1, "fetching metadata".into())],
        optional,
        (0, 0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for width in [20, 40, 50, 60, 80, 120, 200] {
            let l = main_line("display-test", &p, width);
            assert!(width_of(&l) < width, "{width}: {l:?}");
            assert!(l.starts_with("disp"), "{width}: {l:?}");
            let f = file_line("some/folder/with/a/long/file-name.bin", 500, 1000, width);
            assert!(width_of(&f) < width, "{width}: {f:?}");
            assert!(f.starts_with("   50%"), "{width}: {f:?}");
            let m = magnet_line(
                "a-long-magnet-name",
                1,
                3,
                Some("127.0.0.1:1: connect: refused"),
                width,
            );
            assert!(width_of(&m) < width, "{width}: {m:?}");
        }
        let wide = main_line("display-test", &p, 120);
        for field in [
            "[",
            "3.0 MiB/5.0 MiB",
            "800.0 KiB/s",
            "↑ 0 B/s",
            "peers 1/1",
            "eta 3s",
            "downloading",
        ] {
            assert!(wide.contains(field), "{field} missing: {wide:?}");
        }
        let narrow = main_line("display-test", &p, 60);
        assert!(
            narrow.contains("800.0 KiB/s") && narrow.contains('['),
            "{narrow:?}"
        );
        let m = magnet_line("pack", 1, 3, None, 80);
        assert_eq!(m, "pack: fetching metadata (1 peer, 3 known)");
    }

    /// File names keep their start and their end, and still show at 50
    /// columns, where the sizes give way first.
    #[test]
    fn file_names_are_cut_in_the_middle() {
        let path = "sub/three-with-a-longer-name-than-most.bin";
        let f = file_line(path, 500, 1000, 80);
        assert!(
            f.contains("sub/thr") && f.ends_with("most.bin") && f.contains('…'),
            "{f:?}"
        );
        assert!(f.contains("500 B/1000 B"), "{f:?}");
        let f = file_line(path, 500, 1000, 50);
        assert!(f.contains('[') && !f.contains("KiB"), "{f:?}");
        assert!(f.contains("sub/") && f.ends_with(".bin"), "{f:?}");
        let f = file_line(path, 500, 1000, 120);
        assert!(f.ends_with(path) && f.contains("500 B/1000 B"), "{f:?}");
        // Short or long, the paths of one width start in one column.
        let short = file_line("one.bin", 500, 1000, 50);
        let long = file_line(path, 500, 1000, 50);
        assert_eq!(
            short.find("one.bin"),
            long.find("sub/"),
            "{short:?} {long:?}"
        );
    }

    /// A seed shows what it sends, what it sent and its ratio, not an ETA
    /// or what it no longer receives.
    #[test]
    fn a_seed_shows_its_upload_and_ratio() {
        let mut p = progress(5 << 20, "seeding", State::Seeding);
        p.up_rate = 300 << 10;
        p.uploaded = 15 << 19;
        for width in [60, 80, 120] {
            let l = main_line("display-test", &p, width);
            assert!(l.contains("seeding"), "{width}: {l:?}");
            assert!(l.contains("sent 7.5 MiB ratio 1.50"), "{width}: {l:?}");
            assert!(width < 80 || l.contains("↑ 300.0 KiB/s"), "{width}: {l:?}");
            assert!(!l.contains("eta") && !l.contains('↓'), "{l:?}");
        }
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
    fn plurals() {
        assert_eq!(plural(1, "peer", "peers"), "1 peer");
        assert_eq!(plural(0, "file", "files"), "0 files");
        assert_eq!(plural(3, "piece", "pieces"), "3 pieces");
    }
}
