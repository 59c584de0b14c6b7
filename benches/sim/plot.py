#!/usr/bin/env python3
"""Reads the runs benches/sim/rows.sh kept (DIR/NAME/out.txt, meta.txt,
samples.csv), prints the table of docs/sim.md and writes DIR/ratio.svg
(T/T* against N, with the netns harness's figures of docs/swarm.md) and
DIR/availability.svg (pieces in the swarm over time). No dependencies."""
import csv
import math
import os
import re
import sys

# docs/swarm.md, shoal rows (T/T*), for comparison.
HARNESS = {"n5": 1.23, "n10": 1.32, "n20": 1.39, "n40": 1.47, "het10": 1.38,
           "het20": 1.93, "flash20": 1.52, "churn20": 1.52, "free20": 1.49,
           "super10": 1.40}


def parse(d):
    out = open(os.path.join(d, "out.txt")).read()
    meta = {}
    if os.path.exists(os.path.join(d, "meta.txt")):
        for line in open(os.path.join(d, "meta.txt")):
            k, _, v = line.partition(": ")
            meta[k] = v.strip()
    m = re.search(r"^sim: N=(\d+) T=(\S+)s T\*=(\S+)s ratio=(\S+) wall=(\S+)s$", out, re.M)
    if not m:
        return None
    r = {"N": int(m[1]), "T": m[2], "Tstar": m[3], "ratio": m[4], "wall": m[5]}
    r["args"] = meta.get("args", "")
    r["load"] = meta.get("load", "")
    c = re.search(r"^cpu (\S+) s", out, re.M)
    r["cpu"] = c[1] if c else ""
    dn = re.search(r"^leechers done (\d+)/(\d+)(?:; time min / median / max (\S+) / (\S+) / (\S+) s)?", out, re.M)
    r["done"] = f"{dn[1]}/{dn[2]}" if dn else ""
    r["median"] = dn[4] if dn and dn[4] else ""
    s = re.search(r"^seeder uploaded (\S+) F by (\S+) s", out, re.M)
    r["seedF"] = f"{s[1]} F at {s[2]} s" if s else "never all"
    f = re.search(r"free / contributor (\S+)\)", out, re.M)
    r["free"] = f[1] if f else ""
    dup = re.search(r"duplicate block bytes (\S+) %", out, re.M)
    r["dup"] = dup[1] if dup else ""
    return r


def table(dir_, names):
    print("| name | N | options | T | T* | T/T* | harness T/T* | median leecher | done | seeder up when all pieces out | dup blocks | cpu | wall | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = parse(os.path.join(dir_, n))
        if not r:
            continue
        h = HARNESS.get(n, "")
        extra = f" (free/contrib {r['free']})" if r["free"] else ""
        print(f"| {n} | {r['N']} | `{r['args']}` | {r['T']} s | {r['Tstar']} s | **{r['ratio']}**{extra} | {h} | "
              f"{r['median']} s | {r['done']} | {r['seedF']} | {r['dup']} % | {r['cpu']} s | {r['wall']} s | {r['load']} |")


def svg_frame(w, h, title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
            f'<rect width="{w}" height="{h}" fill="white"/>',
            f'<text x="{w/2}" y="18" text-anchor="middle" font-size="14">{title}</text>']


def ratio_svg(dir_, names):
    pts = []
    for n in names:
        r = parse(os.path.join(dir_, n))
        if r and re.fullmatch(r"n\d+(p256)?", n) and r["ratio"] != "inf":
            pts.append((r["N"], float(r["ratio"]), "p256" in n))
    harness = [(5, 1.23), (10, 1.32), (20, 1.39), (40, 1.47)]
    W, H, L, R, T, B = 640, 400, 60, 20, 30, 50
    xs = lambda n: L + (math.log10(n) - math.log10(4)) / (math.log10(6000) - math.log10(4)) * (W - L - R)
    ymax = max([2.0] + [p[1] + 0.1 for p in pts])
    ys = lambda v: T + (ymax - v) / (ymax - 1.0) * (H - T - B)
    o = svg_frame(W, H, "T / T* against N (16 MiB, seed 16 Mbit/s, leechers 8 Mbit/s)")
    for n in [5, 10, 20, 40, 100, 1000, 5000]:
        o.append(f'<line x1="{xs(n)}" y1="{T}" x2="{xs(n)}" y2="{H-B}" stroke="#eee"/>')
        o.append(f'<text x="{xs(n)}" y="{H-B+16}" text-anchor="middle">{n}</text>')
    v = 1.0
    while v <= ymax + 1e-9:
        o.append(f'<line x1="{L}" y1="{ys(v)}" x2="{W-R}" y2="{ys(v)}" stroke="#eee"/>')
        o.append(f'<text x="{L-6}" y="{ys(v)+4}" text-anchor="end">{v:.2f}</text>')
        v += 0.25
    o.append(f'<line x1="{L}" y1="{ys(1.25)}" x2="{W-R}" y2="{ys(1.25)}" stroke="#c00" stroke-dasharray="4 3"/>')
    o.append(f'<text x="{W-R}" y="{ys(1.25)-4}" text-anchor="end" fill="#c00">target 1.25</text>')
    o.append(f'<text x="{W/2}" y="{H-12}" text-anchor="middle">N (leechers, log scale)</text>')
    for (n, v) in harness:
        o.append(f'<rect x="{xs(n)-5}" y="{ys(v)-5}" width="10" height="10" fill="none" stroke="#d60" stroke-width="2"/>')
    line = " ".join(f"{xs(n)},{ys(v)}" for n, v, big in sorted(pts) if not big)
    o.append(f'<polyline points="{line}" fill="none" stroke="#06c" stroke-width="2"/>')
    for n, v, big in pts:
        fill = "white" if big else "#06c"
        o.append(f'<circle cx="{xs(n)}" cy="{ys(v)}" r="5" fill="{fill}" stroke="#06c" stroke-width="2"/>')
    o.append(f'<circle cx="{L+20}" cy="{T+20}" r="5" fill="#06c"/><text x="{L+32}" y="{T+24}">simulator, 16 KiB pieces</text>')
    o.append(f'<circle cx="{L+20}" cy="{T+40}" r="5" fill="white" stroke="#06c" stroke-width="2"/><text x="{L+32}" y="{T+44}">simulator, 256 KiB pieces</text>')
    o.append(f'<rect x="{L+15}" y="{T+55}" width="10" height="10" fill="none" stroke="#d60" stroke-width="2"/><text x="{L+32}" y="{T+64}">netns harness (docs/swarm.md)</text>')
    o.append("</svg>")
    open(os.path.join(dir_, "ratio.svg"), "w").write("\n".join(o))


def availability_svg(dir_, names):
    colors = ["#06c", "#d60", "#090", "#c0c", "#888", "#c00"]
    runs = []
    for n in names:
        f = os.path.join(dir_, n, "samples.csv")
        if os.path.exists(f):
            rows = list(csv.DictReader(open(f)))
            if rows:
                runs.append((n, rows))
    if not runs:
        return
    W, H, L, R, T, B = 640, 420, 60, 20, 30, 50
    # Runs that stall (the seeder left) go on to their timeout: show the
    # part where things happen.
    tmax = min(45.0, max(float(r[-1]["t"]) for _, r in runs))
    runs = [(n, [x for x in r if float(x["t"]) <= tmax]) for n, r in runs]
    xs = lambda t: L + t / tmax * (W - L - R)
    ys = lambda v: T + (1 - v) * (H - T - B)
    o = svg_frame(W, H, "Pieces among the leechers present: share that exists (solid), mean copies / N (dashed)")
    for k in range(0, 11):
        v = k / 10
        o.append(f'<line x1="{L}" y1="{ys(v)}" x2="{W-R}" y2="{ys(v)}" stroke="#eee"/>')
        o.append(f'<text x="{L-6}" y="{ys(v)+4}" text-anchor="end">{v:.1f}</text>')
    step = 5 if tmax <= 60 else 10
    t = 0
    while t <= tmax:
        o.append(f'<text x="{xs(t)}" y="{H-B+16}" text-anchor="middle">{t}</text>')
        t += step
    o.append(f'<text x="{W/2}" y="{H-12}" text-anchor="middle">virtual seconds</text>')
    for i, (n, rows) in enumerate(runs):
        c = colors[i % len(colors)]
        N = parse(os.path.join(dir_, n))["N"]
        exist = " ".join(f"{xs(float(r['t']))},{ys(float(r['exist']))}" for r in rows)
        mean = " ".join(f"{xs(float(r['t']))},{ys(min(1.0, float(r['mean']) / N))}" for r in rows)
        o.append(f'<polyline points="{exist}" fill="none" stroke="{c}" stroke-width="2"/>')
        o.append(f'<polyline points="{mean}" fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="5 3"/>')
        o.append(f'<line x1="{W-R-170}" y1="{T+15+16*i}" x2="{W-R-150}" y2="{T+15+16*i}" stroke="{c}" stroke-width="2"/>')
        o.append(f'<text x="{W-R-145}" y="{T+19+16*i}">{n}</text>')
    o.append("</svg>")
    open(os.path.join(dir_, "availability.svg"), "w").write("\n".join(o))


def main():
    dir_ = sys.argv[1] if len(sys.argv) > 1 else "docs/sim"
    order = ["n10", "n20", "n40", "n100", "n1000", "n1000p256", "n5000p256", "het10", "het20", "het100",
             "flash20", "flash100", "churn20", "churn100", "free20", "free100", "super10", "leaves10",
             "superleaves10", "leaves100", "superleaves100"]
    names = [n for n in order if os.path.exists(os.path.join(dir_, n, "out.txt"))]
    table(dir_, names)
    ratio_svg(dir_, names)
    availability_svg(dir_, [n for n in ["n100", "churn100", "leaves10", "superleaves10", "free100"] if n in names])


main()
