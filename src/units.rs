//! Sizes and durations for people: `1.5 GiB`, `3m07s`.

use std::time::Duration;

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

/// Time left or until a retry, as shoal writes it everywhere (bars,
/// `shoal list`, log lines, the web page): `42s`, `3m07s`, `2h05m`,
/// `3d04h`.
pub fn human_eta(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600)
    }
}

/// How long something took: `0.4s`, `42s`, `3m07s`, `2h05m09s`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m{:02}s", secs / 3600, secs % 3600 / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etas() {
        let eta = |s| human_eta(Duration::from_secs(s));
        assert_eq!(eta(0), "0s");
        assert_eq!(eta(59), "59s");
        assert_eq!(eta(120), "2m00s");
        assert_eq!(eta(3599), "59m59s");
        assert_eq!(eta(7509), "2h05m");
        assert_eq!(eta(3 * 86_400 + 4 * 3600 + 59), "3d04h");
    }
}
