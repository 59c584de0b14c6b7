#!/usr/bin/env python3
"""The swarm harness's report: reads one run's folder (benches/swarm/run.sh
writes it), prints the per-peer table and, last, the `swarm:` line; writes
report.md (the same as a Markdown table, with the summary) and swarm.svg.

    report.py WORKDIR [--partial]
    report.py --tstar BYTES N SEED_UP DOWN UP[,UP...] FREE   (prints T*)

Sources: l<i>.time (start, end, exit code), l<i>.killed / .restarted (churn),
l<i>.r<run>.json (shoal --json events), l<i>.r<run>.err (shoal's trace line
per verified piece, SHOAL_LOG=shoal::picker=trace), l<i>.r<run>.rusage
(/usr/bin/time: elapsed, user, sys, max RSS KiB), counters (sample.py: the
bridge ports' byte counters), seed.json.
"""
import json
import os
import re
import statistics
import sys
from datetime import datetime, timezone

MIB = 1 << 20


def bps(r):
    """tc rate -> bytes/s."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)(bit|bps)", r.lower())
    v = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
    return (v * 8 if m[3] == "bps" else v) / 8


def uplinks(n, up, free):
    ups = up.split(",")
    return [0.0 if i <= free else bps(ups[(i - 1) % len(ups)]) for i in range(1, n + 1)]


def tstar(F, n, seed_up, down, up, free):
    us, d = bps(seed_up), bps(down)
    return max(F / us, F / d, n * F / (us + sum(uplinks(n, up, free))))


if sys.argv[1] == "--tstar":
    a = sys.argv[2:]
    print(f"{tstar(int(a[0]), int(a[1]), a[2], a[3], a[4], int(a[5])):.3f}")
    sys.exit(0)

W = sys.argv[1]
# --partial: the run timed out; leechers still running have "timeout" as
# their exit code and the time of the timeout as their end.
partial = "--partial" in sys.argv[2:]


def path(name):
    return os.path.join(W, name)


def read(name, default=None):
    try:
        with open(path(name)) as f:
            return f.read()
    except OSError:
        return default


P = dict(line.split("=", 1) for line in read("params").splitlines())
client = P["client"]
F, N = int(P["size"]), int(P["leechers"])
free, churn = int(P["free"]), int(P["churn"])
t0 = float(read("t0"))
Ts = tstar(F, N, P["seed_up"], P["down"], P["up"], free)
ups = uplinks(N, P["up"], free)

hosts = {}  # name -> bridge port
for line in read("hosts").splitlines():
    name, port, ip, up, down = line.split()
    hosts[name] = port

# Byte counters: port -> [(t, rx, tx)]; rx at the bridge = the host's upload.
counters = {}
for line in (read("counters") or "").splitlines():
    t, port, rx, tx = line.split()
    counters.setdefault(port, []).append((float(t), int(rx), int(tx)))


def wire_at(port, t):
    """(up, down) bytes of a host's link by time t (linear between samples)."""
    s = counters.get(port, [])
    if not s:
        return (0, 0)
    base = s[0]
    if t <= base[0]:
        return (0, 0)
    for a, b in zip(s, s[1:]):
        if a[0] <= t <= b[0]:
            f = (t - a[0]) / (b[0] - a[0]) if b[0] > a[0] else 1
            return tuple(x + f * (y - x) - z for x, y, z in zip(a[1:], b[1:], base[1:]))
    return (s[-1][1] - base[1], s[-1][2] - base[2])


def events(name):
    out = []
    for line in (read(name) or "").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


TRACE = re.compile(r"^(\S+Z)\s+TRACE piece (\d+) verified")


def verified(name):
    """[(unix time, piece)] from a shoal run's trace lines."""
    out = []
    for line in (read(name) or "").splitlines():
        m = TRACE.match(line)
        if m:
            ts = datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            out.append((ts.timestamp(), int(m[2])))
    return out


peers = []
for i in range(1, N + 1):
    s, e, rc = read(f"l{i}.time").split()
    p = {
        "i": i,
        "start": float(s) - t0,
        "end": float(e) - t0,
        "rc": -1 if rc == "timeout" else int(rc),
        "role": "free rider" if i <= free else ("churned" if i > N - churn else "contributor"),
        "up_cap": ups[i - 1] if i > free else bps(P["up"].split(",")[(i - 1) % len(P["up"].split(","))]),
        "killed": float(read(f"l{i}.killed")) - t0 if read(f"l{i}.killed") else None,
        "restarted": float(read(f"l{i}.restarted")) - t0 if read(f"l{i}.restarted") else None,
    }
    runs = [r for r in (1, 2) if os.path.exists(path(f"l{i}.r{r}.rusage"))]
    p["runs"] = runs
    cpu, rss = 0.0, 0
    for r in runs:
        lines = read(f"l{i}.r{r}.rusage").strip().splitlines()
        if lines and len(lines[-1].split()) == 4:
            el, u, sy, m = lines[-1].split()
            cpu += float(u) + float(sy)
            rss = max(rss, int(m))
    p["cpu"], p["rss"] = cpu, rss
    up, down = wire_at(hosts[f"l{i}"], float(e) + 1)
    p["wire_up"], p["wire_down"] = up, down
    # shoal: piece data from the done events, progress, verified pieces per run.
    p["data_down"] = p["data_up"] = None
    p["progress"] = []  # (t, fraction)
    p["verified"] = {}
    p["resumed"] = 0
    if client == "shoal":
        dd = du = 0
        for r in runs:
            ev = events(f"l{i}.r{r}.json")
            for x in ev:
                if x["event"] == "done":
                    dd += x["downloaded"]
                    du += x["uploaded"]
                elif x["event"] == "progress" and x["piece_count"]:
                    p["progress"].append((x["ts"] - t0, x["pieces_have"] / x["piece_count"]))
                elif x["event"] == "resuming" and r == 2:
                    p["resumed"] = x["pieces_have"]
            p["verified"][r] = [(t - t0, k) for t, k in verified(f"l{i}.r{r}.err")]
        p["data_down"], p["data_up"] = dd, du
    peers.append(p)

first = min(p["start"] for p in peers)
last = max(p["end"] for p in peers)
T = last - first
cs = N * F / bps(P["seed_up"])

# Pieces through the swarm (shoal only): copies among the leechers present.
piece_count = None
seed_eff = None
timeline = []  # (t, share of pieces ever verified by a leecher, mean copies / N)
restart_refetched = {}
if client == "shoal":
    for p in peers:
        for x in events(f"l{p['i']}.r1.json"):
            if x["event"] == "progress" and x.get("piece_count"):
                piece_count = x["piece_count"]
                break
        if piece_count:
            break
if piece_count:
    allv = sorted((t, k) for p in peers for r in p["verified"] for t, k in p["verified"][r])
    # When every piece first existed once among the leechers.
    seen, t_cover = set(), None
    for t, k in allv:
        seen.add(k)
        if len(seen) == piece_count:
            t_cover = t
            break
    seed_port = hosts["seed"]
    if t_cover is not None:
        # The seeder's piece data by then: its wire bytes, scaled by the
        # ratio of piece data to wire bytes over its whole run.
        sev = [x for x in events("seed.json") if x["event"] in ("progress", "done")]
        wire_total = wire_at(seed_port, last + t0 + 1)[0]
        data_total = max([x["uploaded"] for x in sev] or [0])
        wire = wire_at(seed_port, t_cover + t0)[0]
        scale = data_total / wire_total if wire_total and data_total else 1.0
        seed_eff = {"t": t_cover, "bytes": wire * scale, "wire": wire, "scale": scale}
    # Availability over time.
    def present(p, t):
        if t < p["start"] or t > p["end"]:
            return False
        if p["killed"] is not None and p["killed"] <= t < (p["restarted"] or 1e9):
            return False
        return True

    import bisect

    times = {p["i"]: sorted(t for r in p["verified"] for t, _ in p["verified"][r]) for p in peers}
    firsts = {}
    for t, k in allv:
        firsts.setdefault(k, t)
    firsts = sorted(firsts.values())
    step = max(T / 200, 0.1)
    t = first
    while t <= last + step:
        held = sum(bisect.bisect_right(times[p["i"]], t) for p in peers if present(p, t))
        # (resumed pieces of a restarted peer count from their first run)
        timeline.append((t, bisect.bisect_right(firsts, t) / piece_count, held / piece_count / N))
        t += step
    for p in peers:
        if 2 in p["verified"]:
            before = {k for _, k in p["verified"][1]}
            again = {k for _, k in p["verified"][2]}
            restart_refetched[p["i"]] = (len(before), p["resumed"], len(before & again))


def fmt_rate(b):
    return f"{b * 8 / 1e6:g} Mbit/s"


rows = []
for p in peers:
    role = p["role"]
    if p["rc"] == -1:
        role += " (unfinished)"
    if p["killed"] is not None:
        role += f" (killed {p['killed']:.1f}s, back {p['restarted']:.1f}s)"
    rows.append([
        f"l{p['i']}", role, fmt_rate(p["up_cap"]), f"{p['start']:.2f}", f"{p['end']:.2f}",
        f"{p['wire_down'] / MIB:.2f}", f"{p['wire_up'] / MIB:.2f}",
        "-" if p["data_down"] is None else f"{p['data_down'] / MIB:.2f}",
        "-" if p["data_up"] is None else f"{p['data_up'] / MIB:.2f}",
        f"{p['cpu']:.2f}", f"{p['rss'] / 1024:.1f}",
    ])
head = ["peer", "role", "up cap", "start s", "done s", "down MiB (wire)", "up MiB (wire)",
        "down MiB (data)", "up MiB (data)", "CPU s", "max RSS MiB"]

summary = []
summary.append(f"F = {F / MIB:g} MiB, N = {N}, u_s = {P['seed_up']}, u_i = {P['up']}, d_i = {P['down']}, "
               f"join = {P['join']}, free riders = {free}, churned = {churn}"
               + (", seeder leaves after one copy" if P.get("seed_leaves") == "1" else "")
               + (", super-seeding" if P.get("super_seed") == "1" else "")
               + (", trackerless (DHT)" if P.get("trackerless") == "1" else "")
               + (", leechers stay once done" if P.get("linger") == "1" else "")
               + (f", seeder slots = {P['seed_slots']}" if P.get("seed_slots") else "")
               + (f", leecher slots = {P['leech_slots']}" if P.get("leech_slots") else "")
               + (f", upload paced at {P['pace']} of the link" if P.get("pace") else ""))
if partial:
    left = sum(1 for p in peers if p["rc"] == -1)
    summary.append(f"timed out after {T:.2f} s with {left} of {N} leechers unfinished (T* = {Ts:.2f} s)")
    if timeline:
        summary.append(f"pieces in the swarm at the end: {round(timeline[-1][1] * piece_count)} of {piece_count}")
else:
    summary.append(f"T = {T:.2f} s, T* = {Ts:.2f} s, T/T* = {T / Ts:.2f}, client-server N*F/u_s = {cs:.2f} s")
done_times = sorted(p["end"] - p["start"] for p in peers)
summary.append(f"leecher time (start -> done): min {done_times[0]:.2f} s, median {statistics.median(done_times):.2f} s, max {done_times[-1]:.2f} s")
cpus = [p["cpu"] for p in peers if p["cpu"]]
rsss = [p["rss"] / 1024 for p in peers if p["rss"]]
if cpus:
    summary.append(f"per leecher: CPU (user+sys) median {statistics.median(cpus):.2f} s, max {max(cpus):.2f} s; "
                   f"max RSS median {statistics.median(rsss):.1f} MiB, max {max(rsss):.1f} MiB")
if free:
    fr = [p["end"] - p["start"] for p in peers if p["role"] == "free rider"]
    co = [p["end"] - p["start"] for p in peers if p["role"] != "free rider"]
    fru = sum(p["data_up"] or 0 for p in peers if p["role"] == "free rider")
    summary.append(f"free riders: median {statistics.median(fr):.2f} s, contributors median {statistics.median(co):.2f} s "
                   f"(free riders / contributors = {statistics.median(fr) / statistics.median(co):.2f}); "
                   f"free riders uploaded {fru} bytes of piece data")
if seed_eff:
    summary.append(f"seeder upload before every piece existed once (at {seed_eff['t']:.2f} s): "
                   f"{seed_eff['bytes'] / MIB:.2f} MiB = {seed_eff['bytes'] / F:.2f} F "
                   f"(wire {seed_eff['wire'] / MIB:.2f} MiB x piece/wire {seed_eff['scale']:.3f})")
sw = wire_at(hosts["seed"], last + t0 + 1)[0]
summary.append(f"seeder uploaded in all (wire): {sw / MIB:.2f} MiB = {sw / F:.2f} F")
for i, (had, resumed, again) in restart_refetched.items():
    summary.append(f"l{i} restarted: {had} pieces verified before the kill, {resumed} found on disk at restart, "
                   f"{again} of those verified again after it")

widths = [max(len(h), *(len(r[c]) for r in rows)) for c, h in enumerate(head)]
print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
for r in rows:
    print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
for s in summary:
    print(s)

with open(path("report.md"), "w") as f:
    f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    for r in rows:
        f.write("| " + " | ".join(r) + " |\n")
    f.write("\n" + "\n".join(f"- {s}" for s in summary) + "\n")

# The plot: each leecher's share of the file over time (shoal: verified
# pieces; other clients: bytes down on the wire), and for shoal the pieces
# in the swarm (distinct, and mean copies per piece / N).
Wd, Hd, L, R, Tp, B = 760, 400, 60, 20, 30, 50
xmax = max(last, Ts + first) * 1.05


def X(t):
    return L + (Wd - L - R) * t / xmax


def Y(v):
    return Tp + (Hd - Tp - B) * (1 - v)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{Wd}" height="{Hd}" font-family="sans-serif" font-size="11">',
       f'<rect width="{Wd}" height="{Hd}" fill="white"/>',
       f'<text x="{L}" y="16" font-size="13">{client}{" over " + P["transport"] if client == "shoal" and "transport" in P else ""}: N={N}, F={F / MIB:g} MiB, '
       + (f"timed out at {T:.1f}s unfinished, T*={Ts:.1f}s" if partial else f"T={T:.1f}s, T*={Ts:.1f}s, T/T*={T / Ts:.2f}")
       + "</text>"]
for k in range(0, 11, 2):
    v = k / 10
    svg.append(f'<line x1="{L}" x2="{Wd - R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
    svg.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>')
tick = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200) if xmax / s <= 12)
t = 0
while t <= xmax:
    svg.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{Y(0):.1f}" y2="{Y(0) + 4:.1f}" stroke="black"/>')
    svg.append(f'<text x="{X(t):.1f}" y="{Y(0) + 16:.1f}" text-anchor="middle">{t:g}</text>')
    t += tick
svg.append(f'<text x="{(L + Wd - R) / 2}" y="{Hd - 12}" text-anchor="middle">seconds since the start</text>')
svg.append(f'<line x1="{L}" x2="{Wd - R}" y1="{Y(0):.1f}" y2="{Y(0):.1f}" stroke="black"/>')
svg.append(f'<line x1="{X(first + Ts):.1f}" x2="{X(first + Ts):.1f}" y1="{Y(1):.1f}" y2="{Y(0):.1f}" stroke="#888" stroke-dasharray="4 3"/>')
svg.append(f'<text x="{X(first + Ts) + 3:.1f}" y="{Y(1) + 10:.1f}" fill="#888">T*</text>')
colour = {"contributor": "#9aa", "free rider": "#e80", "churned": "#c22"}
for p in peers:
    if p["progress"]:
        pts = [(p["start"], 0.0)] + p["progress"]
        # The progress event is once a second: finish the line at the end.
        if p["rc"] == 0:
            pts.append((p["end"], 1.0))
    else:
        s = counters.get(hosts[f"l{p['i']}"], [])
        pts = [(t - t0, min(1.0, (tx - s[0][2]) / F)) for t, rx, tx in s if t - t0 <= p["end"] + 0.2] if s else []
    if pts:
        d = " ".join(f"{X(t):.1f},{Y(v):.1f}" for t, v in pts)
        svg.append(f'<polyline points="{d}" fill="none" stroke="{colour[p["role"]]}" stroke-width="1"/>')
if timeline:
    for idx, col, label in ((1, "#26c", "pieces in the swarm (distinct, share of all)"),
                            (2, "#2a4", "copies per piece among leechers / N")):
        d = " ".join(f"{X(t):.1f},{Y(v[idx - 1]):.1f}" for t, *v in timeline)
        svg.append(f'<polyline points="{d}" fill="none" stroke="{col}" stroke-width="2.5"/>')
if seed_eff:
    svg.append(f'<circle cx="{X(seed_eff["t"]):.1f}" cy="{Y(1):.1f}" r="4" fill="#26c"/>')
legend = [("#9aa", "leecher: share of the file it has" + (" (verified pieces)" if client == "shoal" else " (bytes down)"))]
if free:
    legend.append(("#e80", "free rider"))
if churn:
    legend.append(("#c22", "churned leecher (killed and restarted)"))
if timeline:
    legend += [("#26c", "pieces in the swarm, distinct (dot: all exist once)"), ("#2a4", "mean copies per piece among leechers / N")]
svg.append(f'<rect x="{Wd - R - 306}" y="{Tp + 1}" width="304" height="{15 * len(legend) + 6}" fill="white" fill-opacity="0.85" stroke="#ccc"/>')
for n, (col, text) in enumerate(legend):
    y = Tp + 14 + 15 * n
    svg.append(f'<line x1="{Wd - R - 300}" x2="{Wd - R - 280}" y1="{y - 4}" y2="{y - 4}" stroke="{col}" stroke-width="2.5"/>')
    svg.append(f'<text x="{Wd - R - 275}" y="{y}">{text}</text>')
svg.append("</svg>")
with open(path("swarm.svg"), "w") as f:
    f.write("\n".join(svg) + "\n")

if not partial:
    print(f"client-server time N*F/u_s = {cs:.2f}s")
    transport = P.get("transport", "tcp") if client == "shoal" else "tcp"
    print(f"swarm: client={client} N={N} T={T:.2f}s T*={Ts:.2f}s ratio={T / Ts:.2f} transport={transport}")
