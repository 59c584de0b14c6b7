//! `shoal man`: one manual page with every command and every option, the
//! exit codes and examples. clap_mangen alone renders the top command and
//! a list of `shoal-download(1)`-style pages that nobody installs, so the
//! commands' sections are put together here from its pieces.

use std::io::Write;

/// Exit codes, as README.md's table gives them.
const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success: a download complete, a seeder or service stopped with Ctrl-C or SIGTERM, a command done."),
    ("1", "Failure, with one line \"error: ...\" on standard error."),
    ("2", "Usage error: an unknown flag or a bad value (a bad --peer, --max-peers 0, a malformed magnet link, a magnet link given to seed)."),
    ("130, 143", "A download interrupted by Ctrl-C (SIGINT) or SIGTERM before it completed (128 + the signal's number); run the same command again to resume."),
    ("141", "Standard output's reader went away (shoal info x | head -1), as for a program killed by SIGPIPE."),
];

const EXAMPLES: &[(&str, &str)] = &[
    ("Download a torrent into the current folder, then stop:", "shoal download file.torrent"),
    ("Download from a magnet link, from a bare info-hash (peers from the DHT), or from a .torrent's URL:", "shoal download 'magnet:?xt=urn:btih:...' -o ~/Downloads\nshoal download c12fe1c06bba254a9dc9f519b335aa7c1367a88a\nshoal download https://example.org/file.torrent"),
    ("List a torrent's files, then download the first and the third:", "shoal download file.torrent --list\nshoal download file.torrent --select 0,2"),
    ("Seed data downloaded into ~/Downloads until it was sent twice:", "shoal seed file.torrent --from ~/Downloads --seed-ratio 2"),
    ("Check what is on disk:", "shoal verify file.torrent ~/Downloads"),
    ("Make a torrent of a folder:", "shoal create ./photos -t udp://tracker.example.org:1337/announce"),
    ("Run a service with a web page on http://127.0.0.1:3030/, and add to it:", "shoal serve --download-dir ~/Downloads &\nshoal add file.torrent 'magnet:?xt=urn:btih:...'\nshoal list"),
    ("Scripts: one JSON event per line instead of bars (docs/json.md):", "shoal download file.torrent --json --stall-timeout 300"),
];

/// Roff text for `s`: backslashes and hyphens escaped, no line taken
/// for a request.
fn text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The page of `cmd` (the built `shoal` command), in roff.
pub fn render(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("shoal {}", sub.get_name());
        writeln!(out, ".SS \"{}\"", text(&name))?;
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            writeln!(out, "{}", text(&about.to_string()))?;
        }
        let usage = sub.clone().render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ").trim();
        writeln!(out, ".PP\n.B \"{}\"", text(usage).replace('"', "\\(dq"))?;
        // clap_mangen's list of options, under this command's heading
        // rather than a section of its own.
        let mut options = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut options)?;
        let options = String::from_utf8_lossy(&options).replace(".SH OPTIONS\n", ".PP\n");
        out.extend_from_slice(options.as_bytes());
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (code, meaning) in EXIT_STATUS {
        writeln!(out, ".TP\n.B {}\n{}", text(code), text(meaning))?;
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    for (var, meaning) in [
        ("SHOAL_LOG", "Log filter (tracing's syntax, e.g. debug or shoal=debug); also turns the short log lines of a terminal into tracing's full format."),
        ("SHOAL_NO_DHT, SHOAL_NO_LSD", "Set to 1: as --no-dht and --no-lsd."),
        ("SHOAL_URL, SHOAL_TOKEN", "The service the client commands talk to, and its access token (--url, --token)."),
    ] {
        writeln!(out, ".TP\n.B {}\n{}", text(var), text(meaning))?;
    }
    writeln!(out, ".SH EXAMPLES")?;
    for (what, lines) in EXAMPLES {
        writeln!(out, ".PP\n{}\n.PP\n.RS 4\n.nf", text(what))?;
        for l in lines.lines() {
            writeln!(out, "{}", text(l))?;
        }
        writeln!(out, ".fi\n.RE")?;
    }
    writeln!(out, ".SH \"SEE ALSO\"")?;
    writeln!(
        out,
        "{}",
        text("README.md, docs/api.md (the service's HTTP API) and docs/json.md (--json events) in shoal's source.")
    )?;
    top.render_version_section(&mut out)?;
    Ok(out)
}
