//! One convention everywhere (issue 19, part 6), against the real binary:
//! files are numbered from 0 by `--list`, `--select` and `shoal info`;
//! `download` takes what `add` takes (a URL, a bare info-hash); `seed`
//! pointed at the content folder says what to type; `shoal man` has every
//! option, the exit codes and examples and names no page that does not
//! exist; no `.lock` is left after a run; `shoal info` on a v2-only
//! torrent lists only its files and their size; a peer that drops a
//! plain handshake "may require encryption"; one of a thing is singular.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn shoal(args: &[&str]) -> Output {
    Command::new(shoal_bin())
        .args(args)
        .env("SHOAL_NO_DHT", "1")
        .env("SHOAL_NO_LSD", "1")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A three-file torrent of `d/src/pack`.
fn pack(d: &Path) -> std::path::PathBuf {
    make_tree(
        &d.join("src/pack"),
        &[("a.bin", 40_000), ("sub/b.bin", 30_000), ("c.bin", 20_000)],
    );
    create_torrent(&d.join("src/pack"), &d.join("pack.torrent"), &[], 16384)
}

#[test]
fn files_are_numbered_from_0_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let t = pack(dir.path());
    let t = t.to_str().unwrap();
    let list = text(&shoal(&["download", t, "--list"]).stdout);
    let numbered = |out: &str| -> Vec<(String, String)> {
        out.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[0].parse::<usize>().is_ok())
                    .then(|| (f[0].to_string(), f[f.len() - 1].to_string()))
            })
            .collect()
    };
    let from_list = numbered(&list);
    let want: Vec<(String, String)> = ["pack/a.bin", "pack/c.bin", "pack/sub/b.bin"]
        .iter()
        .enumerate()
        .map(|(i, p)| (i.to_string(), p.to_string()))
        .collect();
    assert_eq!(from_list, want, "{list}");
    let info = text(&shoal(&["info", t]).stdout);
    assert_eq!(numbered(&info), want, "{info}");
    let v: serde_json::Value =
        serde_json::from_slice(&shoal(&["info", "--json", t]).stdout).unwrap();
    for f in v["files"].as_array().unwrap() {
        let n = f["index"].as_u64().unwrap() as usize;
        assert_eq!(f["path"], want[n].1.as_str(), "{v}");
    }
    // The last number is 2, and --select says so.
    let o = shoal(&["download", t, "-o", "/nonexistent", "--select", "3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("files are 0 to 2"),
        "{}",
        text(&o.stderr)
    );
    // And `shoal add --only` takes the same numbers (its parsing; the
    // service's use of them is in tests/service.rs).
    let o = shoal(&["add", "--url", "http://127.0.0.1:1", "--only", "0,2-x", t]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// `download` takes an http(s) URL of a .torrent and a bare info-hash, as
/// `shoal add` does; neither leaves a `.lock` behind.
#[test]
fn download_takes_a_url_and_a_bare_info_hash() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = pack(d);
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let peer = format!("127.0.0.1:{port}");
    let web = HttpServer::serve("/pack.torrent", std::fs::read(&t).unwrap());
    let url = web.url("/pack.torrent");
    let hash = hex::encode(info_hash(&t));
    for (name, source) in [("url", url.as_str()), ("hash", hash.as_str())] {
        let out = d.join(name);
        let mut p = Proc::spawn(
            &[
                "download",
                source,
                "-o",
                out.to_str().unwrap(),
                "--peer",
                &peer,
                "--json",
            ],
            d,
            name,
        );
        assert!(
            p.wait(Duration::from_secs(60)).success(),
            "{name}: {}",
            p.stderr()
        );
        assert_eq!(p.done_event()["complete"], true, "{name}");
        assert_same_tree(&d.join("src"), &out);
        let left: Vec<String> = std::fs::read_dir(out.join(".shoal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{name}: {left:?} left behind");
    }
    // A URL that is not there: one line, exit 1.
    let o = shoal(&[
        "download",
        &format!("http://127.0.0.1:{}/none.torrent", web.port),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("HTTP 404"), "{}", text(&o.stderr));
}

/// `seed --from` the content folder itself says which folder to give,
/// as `verify` does.
#[test]
fn seed_pointed_at_the_content_folder_says_what_to_type() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = pack(d);
    let content = d.join("src/pack");
    let o = shoal(&[
        "seed",
        t.to_str().unwrap(),
        "--from",
        content.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "shoal seed TORRENT --from {}",
            d.join("src").display()
        )),
        "{err}"
    );
}

/// Every option of every command is on the one page, with the exit
/// codes and examples, and no `shoal-download(1)`-style page is named.
#[test]
fn the_man_page_has_every_option_and_no_missing_page() {
    let o = shoal(&["man"]);
    assert!(o.status.success());
    let page = text(&o.stdout).replace("\\-", "-");
    let help = text(&shoal(&["--help"]).stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 12, "{help}");
    for c in &commands {
        assert!(
            page.contains(&format!(".SS \"shoal {c}\"")),
            "no section for {c}"
        );
        let sub = text(&shoal(&[c, "--help"]).stdout);
        for word in sub.split_whitespace() {
            let flag = word.trim_end_matches(',');
            if flag.starts_with("--")
                && flag.len() > 2
                && flag
                    .chars()
                    .skip(2)
                    .all(|ch| ch.is_ascii_lowercase() || ch == '-')
            {
                assert!(
                    page.contains(flag),
                    "shoal {c} {flag} is not in the man page"
                );
            }
        }
    }
    for section in [".SH \"EXIT STATUS\"", ".SH EXAMPLES", ".SH ENVIRONMENT"] {
        assert!(page.contains(section), "{section}");
    }
    for code in ["0", "1", "2", "130, 143", "141"] {
        assert!(page.contains(&format!(".B {code}\n")), "exit code {code}");
    }
    assert!(page.contains("shoal download file.torrent --select 0,2"));
    let missing = page
        .split(|c: char| c.is_whitespace())
        .find(|w| w.starts_with("shoal-") && w.contains("(1)"));
    assert_eq!(missing, None, "names a page that does not exist");
}

/// A v2-only torrent's pads are not in it: `shoal info` lists its files
/// only, and its size is theirs, not the padded total.
#[test]
fn info_of_a_v2_torrent_lists_its_files_and_their_size() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/libtorrent-test-torrents/v2_multiple_files.torrent"
    );
    let o = shoal(&["info", fixture]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains(".pad/"), "{out}");
    // 3,145,728,600 bytes of content (padded to pieces: 3,147,825,152).
    assert!(out.contains("(3145728600 bytes)"), "{out}");
    let v: serde_json::Value =
        serde_json::from_slice(&shoal(&["info", "--json", fixture]).stdout).unwrap();
    assert_eq!(v["total_size"], 3_145_728_600u64, "{v}");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{v}");
    let sum: u64 = files.iter().map(|f| f["size"].as_u64().unwrap()).sum();
    assert_eq!(sum, 3_145_728_600, "{v}");
    // One made here: 100,000 + 50,000 bytes, padded to 16 KiB pieces.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("v2"), &[("a.bin", 100_000), ("b.bin", 50_000)]);
    let t = d.join("v2.torrent");
    let c = shoal(&[
        "create",
        d.join("v2").to_str().unwrap(),
        "-o",
        t.to_str().unwrap(),
        "--v2",
        "--piece-length",
        "16384",
    ]);
    assert!(c.status.success(), "{}", text(&c.stderr));
    let out = text(&shoal(&["info", t.to_str().unwrap()]).stdout);
    assert!(
        out.contains("(150000 bytes)") && !out.contains(".pad"),
        "{out}"
    );
}

/// A peer that closes the connection at our plain-text handshake: with
/// `--encryption plain` the status (and the stall error) says it may
/// require encryption.
#[test]
fn a_peer_dropping_a_plain_handshake_may_require_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = pack(d);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let dropper = std::thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut hs = [0u8; 68];
                    let _ = s.read_exact(&mut hs);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let mut p = Proc::spawn(
        &[
            "download",
            t.to_str().unwrap(),
            "-o",
            d.join("out").to_str().unwrap(),
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--encryption",
            "plain",
            "--json",
            "--stall-timeout",
            "2",
        ],
        d,
        "plain",
    );
    let status = p.wait(Duration::from_secs(30));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dropper.join().unwrap();
    assert_eq!(status.code(), Some(1), "{}", p.stderr());
    let err = last_event(&p.stdout(), "error").expect("an error event");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "peer 127.0.0.1:{port}: dropped our plain-text handshake (it may require encryption)"
        )),
        "{msg}"
    );
}

/// One of a thing is singular: "1 file" in what a magnet's metadata
/// brought, "1 piece" in what `verify` counts.
#[test]
fn one_is_singular() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"), &[("one.bin", 10_000)]);
    let t = create_torrent(&d.join("src/one.bin"), &d.join("one.torrent"), &[], 16384);
    let v = shoal(&[
        "verify",
        t.to_str().unwrap(),
        d.join("src").to_str().unwrap(),
    ]);
    assert!(v.status.success());
    assert!(
        text(&v.stdout).contains("1 piece: 1 good"),
        "{}",
        text(&v.stdout)
    );
    let (_seed, port) = seeder(d, &t, &d.join("src"), &["--quiet"]);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{port}",
        hex::encode(info_hash(&t))
    );
    let o = shoal(&["download", &magnet, "-o", d.join("out").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("metadata: one.bin (9.8 KiB, 1 file) from the swarm"),
        "{err}"
    );
}
