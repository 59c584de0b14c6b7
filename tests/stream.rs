//! Streaming a file while it downloads (`GET …/files/{index}/stream`,
//! docs/api.md): ffmpeg makes a small MP4, a local shoal seeds it at a
//! limited rate, the service downloads it, and `ffprobe` reads the
//! stream URL and finds the video's duration while most of the file is
//! still missing; byte ranges (suffix ones too) answer exactly the file's
//! bytes; paused, it answers what it has and stops short at the first
//! piece it lacks. `shoal download --sequential` fills a file from its
//! start. Needs ffmpeg (`.ci/deps`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::service::*;
use common::*;
use serde_json::Value;

const TOKEN: &str = "stream-test-token";

fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A 60 s, 320x240 MP4 of about 9 MB (noise keeps it from compressing
/// to nothing), with its index first (`+faststart`), as players stream.
fn make_video(out: &Path) {
    let codec = if Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libx264"))
    {
        "libx264"
    } else {
        "mpeg4"
    };
    // ultrafast: the default preset takes a minute on a busy machine.
    let preset: &[&str] = if codec == "libx264" {
        &["-preset", "ultrafast"]
    } else {
        &[]
    };
    let o = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=60:size=320x240:rate=25",
            "-vf",
            "noise=alls=20:allf=t",
            "-c:v",
            codec,
            "-b:v",
            "1200k",
            "-movflags",
            "+faststart",
        ])
        .args(preset)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// ffprobe's duration of `url`, or its error; killed after two minutes.
fn ffprobe_duration(url: &str) -> Result<f64, String> {
    let mut child = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-rw_timeout",
            "90000000",
            "-headers",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("ffprobe did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    out.parse::<f64>()
        .map_err(|_| format!("ffprobe: {out:?} {}", String::from_utf8_lossy(&o.stderr)))
}

fn get(port: u16, path: &str, extra: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let auth = format!("Bearer {TOKEN}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    http(port, "GET", path, &headers, &[])
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn progress(port: u16, hash: &str) -> Value {
    let (s, _, b) = get(port, "/api/torrents", &[]);
    assert_eq!(s, 200);
    torrent_of(&serde_json::from_slice(&b).unwrap(), hash)
}

#[test]
fn ffprobe_reads_a_video_while_it_downloads_and_ranges_match_the_file() {
    assert!(
        have("ffmpeg") && have("ffprobe"),
        "ffmpeg and ffprobe are needed (.ci/deps installs them)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let film = src.join("film.mp4");
    let t0 = Instant::now();
    make_video(&film);
    eprintln!("ffmpeg made the video in {:?}", t0.elapsed());
    let data = std::fs::read(&film).unwrap();
    let len = data.len();
    let t = create_torrent(&film, &d.join("film.torrent"), &[], 32768);
    // 100 KB/s: the whole file takes about 90 s, so what ffprobe needs
    // must come first for it to finish early.
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet", "--upload-limit", "100k"]);
    let (state, dl) = (d.join("state"), d.join("dl"));
    let svc = serve(d, &state, &dl, &["--token", TOKEN], "serve");
    let port = svc.port;

    let h = hex::encode(info_hash(&t));
    let magnet = format!("magnet:?xt=urn:btih:{h}&dn=film.mp4&x.pe=127.0.0.1:{seed_port}");
    let body = serde_json::json!({ "magnet": magnet }).to_string();
    let auth = format!("Bearer {TOKEN}");
    let (s, _, b) = http(
        port,
        "POST",
        "/api/torrents",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let start = Instant::now();
    while progress(port, &h)["total"].as_u64().unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "no metadata");
        std::thread::sleep(Duration::from_millis(100));
    }
    let path = format!("/api/torrents/{h}/files/0/stream");

    // The same access rules as the rest of the API.
    let (s, _, _) = http(port, "GET", &path, &[], &[]);
    assert_eq!(s, 401);
    let (s, _, _) = http(
        port,
        "GET",
        &path,
        &[
            ("Authorization", auth.as_str()),
            ("Origin", "http://evil.example"),
        ],
        &[],
    );
    assert_eq!(s, 403);

    // HEAD: the headers, nothing read.
    let (s, head, body) = http(
        port,
        "HEAD",
        &path,
        &[("Authorization", auth.as_str())],
        &[],
    );
    assert_eq!(s, 200, "{head}");
    assert!(body.is_empty());
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    assert_eq!(header(&head, "content-length"), Some(&*len.to_string()));

    // ffprobe on the URL, while the download goes on.
    let url = format!("http://127.0.0.1:{port}{path}");
    let duration = ffprobe_duration(&url).unwrap();
    let t_now = progress(port, &h);
    let done = t_now["have_bytes"].as_u64().unwrap() as f64 / len as f64;
    eprintln!(
        "ffprobe: duration {duration} s with {:.1} % of {len} bytes downloaded ({} s)",
        done * 100.0,
        start.elapsed().as_secs()
    );
    assert!((duration - 60.0).abs() < 0.5, "duration {duration}");
    assert!(done < 0.2, "{:.1} % downloaded already", done * 100.0);

    // Ranges: exactly the file's bytes, with their Content-Range.
    for (range, a, b) in [
        ("bytes=0-99", 0, 99),
        ("bytes=-5000", len - 5000, len - 1),
        ("bytes=-1", len - 1, len - 1),
        ("bytes=4000000-4100000", 4_000_000, 4_100_000),
        ("bytes=6000000-6000000", 6_000_000, 6_000_000),
        (&format!("bytes={}-", len - 70_000), len - 70_000, len - 1),
        (
            &format!("bytes={}-{}", len - 3000, len + 5000),
            len - 3000,
            len - 1,
        ),
    ] {
        let t0 = Instant::now();
        let (s, head, body) = get(port, &path, &[("Range", range)]);
        eprintln!("{range}: {:?}", t0.elapsed());
        assert_eq!(s, 206, "{range}: {head}");
        assert_eq!(
            header(&head, "content-range"),
            Some(&*format!("bytes {a}-{b}/{len}")),
            "{range}"
        );
        assert!(body == data[a..=b], "{range}: {} bytes differ", body.len());
    }
    // Past the end, or backwards: 416 with the length.
    for range in [format!("bytes={len}-"), "bytes=9-3".to_string()] {
        let (s, head, _) = get(port, &path, &[("Range", &range)]);
        assert_eq!(s, 416, "{range}");
        assert_eq!(
            header(&head, "content-range"),
            Some(&*format!("bytes */{len}"))
        );
    }
    let (s, _, _) = get(port, &format!("/api/torrents/{h}/files/1/stream"), &[]);
    assert_eq!(s, 404);
    let t_end = progress(port, &h);
    eprintln!(
        "after the ranges: {:.1} % downloaded",
        t_end["have_bytes"].as_u64().unwrap() as f64 / len as f64 * 100.0
    );

    // Paused: what its run verified is still answered; the answer stops
    // short at the first piece it lacks, never with bytes not verified.
    let (s, _, _) = http(
        port,
        "POST",
        &format!("/api/torrents/{h}/pause"),
        &[("Authorization", auth.as_str())],
        &[],
    );
    assert_eq!(s, 200);
    let (s, _, body) = get(port, &path, &[("Range", "bytes=10-5009")]);
    assert_eq!(s, 206);
    assert!(body == data[10..5010]);
    let (s, head, body) = get(port, &path, &[]);
    assert_eq!(s, 200);
    assert_eq!(header(&head, "content-length"), Some(&*len.to_string()));
    assert!(
        body.len() < len,
        "a paused torrent at {} % sent it all",
        t_end["progress"]
    );
    assert!(
        body == data[..body.len()],
        "{} bytes sent differ",
        body.len()
    );
}

/// The pieces `shoal verify --json` finds good, as indexes.
fn good_pieces(torrent: &Path, dir: &Path) -> (Vec<usize>, usize) {
    let o = shoal(&[
        "verify",
        torrent.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let count = v["pieces"].as_u64().unwrap_or(0) as usize;
    let bits = hex::decode(v["have"].as_str().unwrap_or("")).unwrap_or_default();
    let good = (0..count)
        .filter(|i| bits.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
        .collect();
    (good, count)
}

/// `shoal download --sequential` asks for pieces in order: stopped part
/// way, what it has is the start of the file (a gap of a few pieces at
/// most, for blocks still in flight), where rarest first would have
/// scattered them.
#[test]
fn sequential_download_fills_the_file_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    make_tree(&src, &[("seq.bin", 2 << 20)]);
    let t = create_torrent(&src.join("seq.bin"), &d.join("seq.torrent"), &[], 16384);
    let (_seed, seed_port) = seeder(d, &t, &src, &["--quiet", "--upload-limit", "100k"]);
    let out = d.join("dl");
    let peer = format!("127.0.0.1:{seed_port}");
    let mut dl = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--sequential",
            "--quiet",
            "--peer",
            &peer,
        ],
        d,
        "download",
    );
    let start = Instant::now();
    loop {
        let (good, _) = good_pieces(&t, &out);
        if good.len() >= 24 {
            break;
        }
        assert!(
            dl.child.try_wait().unwrap().is_none(),
            "the download ended early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "only {} pieces after 90 s",
            good.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = dl.child.kill();
    let _ = dl.child.wait();
    let (good, count) = good_pieces(&t, &out);
    assert_eq!(count, 128);
    let last = *good.last().unwrap();
    let gaps = last + 1 - good.len();
    eprintln!(
        "sequential: {} of {count} pieces, the last {last}, {gaps} missing before it",
        good.len()
    );
    assert!(good.len() < count, "finished before it could be looked at");
    assert!(gaps <= 4, "pieces {good:?}");
}
