//! The swarm simulator (issue 22): many real torrent cores in one
//! process, on virtual time, over a modelled network. Run it through
//! `bash benches/sim/run.sh --peers N [options]`; docs/sim.md has the
//! model and the figures. Its last line:
//! `sim: N=… T=…s T*=…s ratio=… wall=…s`.

mod net;
mod scenario;
mod swarm;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant as WallClock;

use clap::Parser;

use scenario::{Join, Params, Report};
use swarm::Swarm;

/// Rates are in bits a second (k, M, G suffixes), sizes in bytes (KiB,
/// MiB suffixes); the defaults are the netns harness's (docs/swarm.md).
#[derive(Parser, Debug)]
#[command(name = "sim", about = "A swarm of shoal cores on virtual time")]
struct Args {
    /// Leechers (the one seeder comes on top).
    #[arg(long, default_value_t = 10)]
    peers: usize,
    /// Seeds every random choice of the run and of its cores.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "16MiB")]
    size: String,
    #[arg(long, default_value = "16KiB")]
    piece: String,
    #[arg(long, default_value = "16M")]
    seed_up: String,
    /// Leecher uplinks, given in turn (e.g. 4M,8M,16M).
    #[arg(long, default_value = "8M")]
    up: String,
    #[arg(long, default_value = "100M")]
    down: String,
    /// Round-trip time between hosts, ms, given in turn per leecher.
    #[arg(long, default_value = "1")]
    rtt_ms: String,
    /// Packet loss on every host's access link (0..1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Wait behind a full uplink, ms (the harness's tbf queue).
    #[arg(long, default_value_t = 200.0)]
    queue_ms: f64,
    /// Share of each link lost to headers and ACKs.
    #[arg(long, default_value_t = 0.06)]
    overhead: f64,
    /// all | flash | staggered
    #[arg(long, default_value = "all")]
    join: String,
    /// Seconds between joins (staggered) or the window (flash, default 1).
    #[arg(long)]
    stagger: Option<f64>,
    /// Leechers killed at --churn-at and back --churn-down s later.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Share of the leechers churned (0.5: half), instead of --churn.
    #[arg(long)]
    churn_share: Option<f64>,
    #[arg(long)]
    churn_at: Option<f64>,
    #[arg(long, default_value_t = 2.0)]
    churn_down: f64,
    #[arg(long, default_value_t = 0)]
    free_riders: usize,
    /// Share of the leechers that free-ride, instead of --free-riders.
    #[arg(long)]
    free_share: Option<f64>,
    /// The seeder leaves once it uploaded one copy.
    #[arg(long)]
    seed_leaves: bool,
    #[arg(long)]
    super_seed: bool,
    /// Leechers keep seeding until the end.
    #[arg(long)]
    linger: bool,
    #[arg(long, default_value_t = 50)]
    max_peers: usize,
    /// Virtual seconds before giving up (default 60 + 10·T*).
    #[arg(long, default_value_t = 0.0)]
    timeout: f64,
    /// Step of the network model, ms.
    #[arg(long, default_value_t = 5.0)]
    dt_ms: f64,
    /// Hash every piece (SHA-1) instead of trusting it.
    #[arg(long)]
    verify: bool,
    /// Write samples.csv and times.csv here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// "16M" → 16e6, "16MiB" → 16·2^20.
fn amount(s: &str) -> f64 {
    let s = s.trim();
    let (num, mult) = [
        ("KiB", 1024.0),
        ("MiB", 1048576.0),
        ("GiB", 1073741824.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1.0));
    num.parse::<f64>()
        .unwrap_or_else(|_| panic!("not a number: {s}"))
        * mult
}

fn params(a: &Args) -> Params {
    let list = |s: &str| s.split(',').map(amount).collect::<Vec<f64>>();
    let share = |s: Option<f64>, k: usize| s.map_or(k, |s| (s * a.peers as f64).round() as usize);
    Params {
        peers: a.peers,
        seed: a.seed,
        size: amount(&a.size) as u64,
        piece: amount(&a.piece) as u64,
        seed_up: amount(&a.seed_up),
        up: list(&a.up),
        down: amount(&a.down),
        rtt_ms: list(&a.rtt_ms),
        loss: a.loss,
        queue_ms: a.queue_ms,
        overhead: a.overhead,
        join: match a.join.as_str() {
            "flash" => Join::Flash(a.stagger.unwrap_or(1.0)),
            "staggered" => Join::Staggered(a.stagger.unwrap_or(1.0)),
            _ => Join::All,
        },
        churn: share(a.churn_share, a.churn),
        churn_at: a.churn_at,
        churn_down: a.churn_down,
        free_riders: share(a.free_share, a.free_riders),
        seed_leaves: a.seed_leaves,
        super_seed: a.super_seed,
        linger: a.linger,
        max_peers: a.max_peers,
        timeout: a.timeout,
        dt: a.dt_ms / 1000.0,
        verify: a.verify,
        ..Params::default()
    }
}

fn write_csv(dir: &PathBuf, r: &Report) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::File::create(dir.join("samples.csv"))?;
    writeln!(f, "t,min_leechers,min_all,mean,exist,leechers,done")?;
    for s in &r.samples {
        writeln!(
            f,
            "{:.3},{},{},{:.3},{:.4},{},{}",
            s.t, s.min_leechers, s.min_all, s.mean, s.exist, s.leechers, s.done
        )?;
    }
    let mut f = std::fs::File::create(dir.join("times.csv"))?;
    writeln!(f, "leecher_time")?;
    for t in &r.times {
        writeln!(f, "{t:.3}")?;
    }
    Ok(())
}

/// CPU time of this process so far: the wall time on a loaded machine
/// says little.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn main() {
    let a = Args::parse();
    let p = params(&a);
    eprintln!("sim: {p:?}");
    let wall = WallClock::now();
    let r = Swarm::new(p.clone()).run();
    let wall = wall.elapsed().as_secs_f64();
    if let Some(dir) = &a.out {
        if let Err(e) = write_csv(dir, &r) {
            eprintln!("sim: writing {}: {e}", dir.display());
        }
    }
    let mut times = r.times.clone();
    times.sort_by(f64::total_cmp);
    if let (Some(lo), Some(hi)) = (times.first(), times.last()) {
        println!(
            "leechers done {}/{}; time min / median / max {lo:.2} / {:.2} / {hi:.2} s",
            r.done,
            r.n,
            times[times.len() / 2]
        );
    } else {
        println!("leechers done 0/{}", r.n);
    }
    match r.seed_up_at_all {
        Some((f, t)) => println!(
            "seeder uploaded {f:.2} F by {t:.2} s, when every piece first existed among the leechers ({:.2} F in all)",
            r.seed_uploaded
        ),
        None => println!(
            "not every piece ever existed among the leechers (seeder uploaded {:.2} F)",
            r.seed_uploaded
        ),
    }
    if let (Some(fr), Some(co)) = (r.free_rider_median, r.contributor_median) {
        println!(
            "free riders median {fr:.2} s, contributors {co:.2} s (free / contributor {:.2})",
            fr / co
        );
    }
    println!(
        "pieces verified twice: {}; duplicate block bytes {:.3} % of {} received; lowest availability with the seeder present {}",
        r.pieces_twice,
        100.0 * r.dup_bytes as f64 / r.bytes.max(1) as f64,
        r.bytes,
        r.min_all_with_seeder
    );
    println!(
        "events {}, steps {}, rate computations {}",
        r.events, r.steps, r.recomputes
    );
    println!("cpu {:.2} s (user + sys)", cpu_secs());
    let t = r.t.map_or("inf".to_string(), |t| format!("{t:.2}"));
    let ratio =
        r.t.map_or("inf".to_string(), |t| format!("{:.3}", t / r.t_star));
    println!(
        "sim: N={} T={t}s T*={:.2}s ratio={ratio} wall={wall:.2}s",
        r.n, r.t_star
    );
}
