//! Broken trackers never stop a download that has other peer sources; the
//! user gets a warning. Each kind of breakage gets its own leecher, all
//! served by one seeder given with --peer.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const PIECE: u32 = 32 * 1024;

/// An HTTP "tracker" answering every request with `respond`'s bytes.
fn http_tracker(
    respond: impl Fn(u16) -> Vec<u8> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            h.fetch_add(1, Ordering::Relaxed);
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut req = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.read(&mut req);
                let _ = s.write_all(&respond(port));
            });
        }
    });
    (format!("http://127.0.0.1:{port}/announce"), hits)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A UDP "tracker" that answers each datagram with `respond` (or not).
fn udp_tracker(
    respond: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            h.fetch_add(1, Ordering::Relaxed);
            if let Some(r) = respond(&buf[..n]) {
                let _ = s.send_to(&r, from);
            }
        }
    });
    (format!("udp://127.0.0.1:{port}/announce"), hits)
}

#[test]
fn download_goes_on_whatever_the_tracker_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(
        &d.join("src"),
        &[("pack/a.bin", 300_000), ("pack/b.bin", 100_000)],
    );
    let plain = create_torrent(&d.join("src/pack"), &d.join("plain.torrent"), &[], PIECE);
    let port = free_port();
    let _seeder = Proc::spawn(
        &[
            "seed",
            plain.to_str().unwrap(),
            "--from",
            d.join("src").to_str().unwrap(),
            "--port",
            &port.to_string(),
            "--quiet",
        ],
        d,
        "seeder",
    );
    wait_listening(port);

    let huge = {
        let mut r =
            b"HTTP/1.1 200 OK\r\nContent-Length: 6000000\r\n\r\nd8:intervali60e5:peers6000000:"
                .to_vec();
        r.extend(vec![7u8; 6_000_000]);
        r
    };
    type Case = (
        &'static str,
        (String, Arc<AtomicUsize>),
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "HTTP 500",
            http_tracker(|_| {
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec()
            }),
            Some("announce failed"),
        ),
        (
            "invalid bencode",
            http_tracker(|_| ok(b"<html>not a tracker</html>")),
            Some("announce failed"),
        ),
        (
            "failure reason",
            http_tracker(|_| ok(b"d14:failure reason12:torrent gonee")),
            Some("torrent gone"),
        ),
        (
            "enormous response",
            http_tracker(move |_| huge.clone()),
            Some("announce failed"),
        ),
        (
            "redirect loop",
            http_tracker(|p| {
                format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{p}/announce\r\nContent-Length: 0\r\n\r\n").into_bytes()
            }),
            Some("announce failed"),
        ),
        (
            "garbage peers",
            http_tracker(|_| {
                ok(b"d8:intervali60e5:peers7:\x01\x02\x03\x04\x00\x00\x096:peers65:abcdee")
            }),
            None,
        ),
        (
            "dict peers with garbage entries",
            http_tracker(|_| {
                ok(b"d8:intervali60e5:peersld2:ip3:abc4:porti-1eei5eld2:ip9:127.0.0.14:porti0eeee")
            }),
            None,
        ),
        (
            "never answers (HTTP)",
            http_tracker(|_| {
                std::thread::sleep(Duration::from_secs(60));
                Vec::new()
            }),
            None,
        ),
        ("never answers (UDP)", udp_tracker(|_| None), None),
        (
            "wrong transaction id (UDP)",
            udp_tracker(|req| {
                let mut r = vec![0, 0, 0, 0];
                let tx = u32::from_be_bytes(req.get(12..16)?.try_into().ok()?);
                r.extend_from_slice(&tx.wrapping_add(1).to_be_bytes());
                r.extend_from_slice(&[1; 8]);
                Some(r)
            }),
            None,
        ),
        (
            "short packets (UDP)",
            udp_tracker(|_| Some(vec![0, 0, 0])),
            None,
        ),
    ];
    let mut runs = Vec::new();
    for (i, (name, (url, hits), warning)) in cases.into_iter().enumerate() {
        let t = create_torrent(
            &d.join("src/pack"),
            &d.join(format!("t{i}.torrent")),
            &[url],
            PIECE,
        );
        let out = d.join(format!("out{i}"));
        let p = Proc::spawn(
            &[
                "download",
                t.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--port",
                &free_port().to_string(),
                "--peer",
                &format!("127.0.0.1:{port}"),
            ],
            d,
            &format!("leecher{i}"),
        );
        runs.push((name, p, out, hits, warning));
    }
    for (name, mut p, out, hits, warning) in runs {
        // Bounded: a tracker that never answers must not hold up the exit.
        let status = p.wait(Duration::from_secs(40));
        assert!(status.success(), "{name}: {}", tail(&p.stderr(), 20));
        assert_same_tree(&d.join("src"), &out);
        assert!(
            hits.load(Ordering::Relaxed) > 0,
            "{name}: tracker never asked"
        );
        if let Some(w) = warning {
            assert!(
                p.stderr().contains(w),
                "{name}: no warning {w:?} in:\n{}",
                tail(&p.stderr(), 20)
            );
        }
    }
}
