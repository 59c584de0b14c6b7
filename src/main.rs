//! The `shoal` command line: argument parsing over the library.
//! Exit codes: 0 success, 1 failure (one-line error on stderr), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use shoal::cli;

#[derive(Parser)]
#[command(name = "shoal", version, about = "A fast, correct BitTorrent client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a .torrent file or magnet link holds.
    Info {
        /// A .torrent file or a magnet: URI.
        torrent: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share.
        path: PathBuf,
        /// Where to write the torrent (default: <name>.torrent here).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Tracker announce URL; repeat for backup trackers (one tier each).
        #[arg(short = 't', long = "tracker")]
        trackers: Vec<String>,
        /// Piece length in bytes (power of two); chosen automatically if absent.
        #[arg(long)]
        piece_length: Option<u64>,
        /// Mark the torrent private (BEP 27: trackers only, no DHT/PEX).
        #[arg(long)]
        private: bool,
        /// A comment stored in the torrent.
        #[arg(long)]
        comment: Option<String>,
        /// Web seed URL (BEP 19); repeatable.
        #[arg(long = "web-seed")]
        web_seeds: Vec<String>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check data on disk against a torrent's piece hashes.
    Verify {
        torrent: PathBuf,
        /// The folder the data was downloaded into (as with `download -o DIR`).
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Info { torrent, json } => cli::info(&torrent, json),
        Command::Create {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            force,
        } => cli::create_cmd(cli::CreateArgs {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            force,
        }),
        Command::Verify { torrent, dir, json } => cli::verify(&torrent, &dir, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}
