#!/usr/bin/env python3
"""`benches/scale.sh --service N`: N torrents in one `shoal serve`, on loopback.

99 % of the torrents are complete on disk (seeding once added), 1 % are
downloaded from local `shoal seed` processes found through a tiny HTTP
tracker this script runs. Every torrent has 1-20 small files. The service
runs with `ulimit -n 1024` (soft and hard). Prints one Markdown table:
add time, time to all seeding, peak RSS, idle CPU, GET /api/torrents
latency, open descriptors, restart to all seeding (and bytes hashed at
the restart), and transmission-daemon's RSS, add and start time holding
the same torrents (its data: the same folder, complete by then).

Usage: benches/scale_service.py SHOAL_BINARY N
Every process it starts is stopped and its temporary folder removed on
exit, Ctrl-C and SIGTERM included.
"""
import ctypes
import hashlib
import http.client
import http.server
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

PIECE = 16384
IDLE_SECONDS = 20
LIST_REQUESTS = 100
WAIT = 900  # seconds, at most, for any phase

procs = []


def bencode(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, (bytes, str)):
        b = x.encode() if isinstance(x, str) else x
        return b"%d:%s" % (len(b), b)
    if isinstance(x, list):
        return b"l" + b"".join(bencode(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(x))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def make_torrent(i, root, announce, rng):
    """Files of torrent i under root/name; returns (name, torrent bytes, info-hash)."""
    name = "t%05d" % i
    nfiles = rng.randint(1, 20)
    sizes = [rng.randint(1024, 16384) for _ in range(nfiles)]
    blob = bytearray()
    if nfiles == 1:
        data = rng.randbytes(sizes[0])
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        blob += data
        info = {"name": name, "length": sizes[0]}
    else:
        os.makedirs(os.path.join(root, name))
        files = []
        for k, size in enumerate(sizes):
            data = rng.randbytes(size)
            with open(os.path.join(root, name, "f%02d.bin" % k), "wb") as f:
                f.write(data)
            blob += data
            files.append({"length": size, "path": ["f%02d.bin" % k]})
        info = {"name": name, "files": files}
    info["piece length"] = PIECE
    info["pieces"] = b"".join(
        hashlib.sha1(blob[o:o + PIECE]).digest() for o in range(0, len(blob), PIECE))
    ih = hashlib.sha1(bencode(info)).digest()
    return name, bencode({"announce": announce, "info": info}), ih


class Tracker(http.server.ThreadingHTTPServer):
    """Answers every announce: the downloading torrents get their seeder,
    the others no peers; counts announces per second."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), TrackerHandler)
        self.seeders = {}  # info-hash -> port
        self.times = []

    def handle_error(self, request, client_address):
        pass  # a client that gave up on its announce (it says so itself)


class TrackerHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        q = urllib.parse.urlsplit(self.path).query
        ih = b""
        for part in q.split("&"):
            if part.startswith("info_hash="):
                ih = urllib.parse.unquote_to_bytes(part[len("info_hash="):])
        self.server.times.append(time.monotonic())
        port = self.server.seeders.get(ih)
        peers = b"" if port is None else socket.inet_aton("127.0.0.1") + port.to_bytes(2, "big")
        body = bencode({"interval": 1800, "peers": peers})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start(cmd, nofile=None, **kw):
    def limit():
        os.setsid()
        # Killed with us even if this script dies without its cleanup (SIGKILL).
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    p = subprocess.Popen(cmd, preexec_fn=limit, **kw)
    procs.append(p)
    return p


def stop(p, timeout=30):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(what, cond, timeout=WAIT, every=0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise SystemExit("timed out waiting for " + what)


def api(port, method, path, body=None, ctype=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def torrents(port):
    try:
        st, body = api(port, "GET", "/api/torrents")
    except OSError:
        return None
    return json.loads(body) if st == 200 else None


def states(port):
    ts = torrents(port)
    if ts is None:
        return {}
    out = {}
    for t in ts:
        out[t["state"]] = out.get(t["state"], 0) + 1
    return out


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def idle_cpu(pid, seconds=IDLE_SECONDS):
    hz = os.sysconf("SC_CLK_TCK")
    a, t0 = cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)
    b, t1 = cpu_ticks(pid), time.monotonic()
    return 100.0 * (b - a) / hz / (t1 - t0)


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def metric(port, name):
    try:
        st, body = api(port, "GET", "/metrics")
    except OSError:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def serve(shoal, work, api_port, peer_port, log):
    env = dict(os.environ, SHOAL_NO_PORT_MAPPING="1",
               SHOAL_LOG=os.environ.get("SHOAL_LOG", "shoal=info"))
    return start([shoal, "serve", "--listen", "127.0.0.1:%d" % api_port,
                  "--download-dir", os.path.join(work, "data"),
                  "--state-dir", os.path.join(work, "state"),
                  "--port", str(peer_port), "--no-dht", "--no-lsd", "--no-holepunch"],
                 nofile=1024, env=env, stdout=log, stderr=subprocess.STDOUT)


def transmission(work, names, n):
    """transmission-daemon holding the same torrents over the same (now
    complete) data: add time, time until all are verified and complete,
    peak RSS, idle CPU."""
    if not shutil.which("transmission-daemon"):
        return None
    conf = os.path.join(work, "tr")
    os.makedirs(conf)
    rpc = free_port()
    with open(os.path.join(conf, "settings.json"), "w") as f:
        json.dump({
            "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "rpc-bind-address": "127.0.0.1", "rpc-port": rpc,
            "rpc-authentication-required": False, "rpc-whitelist": "127.0.0.1",
            "rpc-whitelist-enabled": True, "rpc-host-whitelist-enabled": False,
            "peer-port": free_port(), "peer-port-random-on-start": False,
            "port-forwarding-enabled": False, "dht-enabled": False, "lpd-enabled": False,
            "pex-enabled": False, "utp-enabled": False, "encryption": 0,
            "rename-partial-files": False, "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False, "download-dir": os.path.join(work, "data"),
            "message-level": 1, "download-queue-enabled": False, "seed-queue-enabled": False,
        }, f)
    log = open(os.path.join(work, "tr.log"), "w")
    d = start(["transmission-daemon", "-f", "-g", conf], nofile=1024,
              stdout=log, stderr=subprocess.STDOUT)
    remote = ["transmission-remote", "127.0.0.1:%d" % rpc]

    def ready():
        return subprocess.run(remote + ["-l"], capture_output=True).returncode == 0
    wait_for("transmission-daemon", ready, 60)
    t0 = time.monotonic()
    files = [os.path.join(work, "torrents", nm + ".torrent") for nm in names]
    for k in range(0, len(files), 50):
        subprocess.run(remote + ["-w", os.path.join(work, "data")] + sum(
            (["-a", f] for f in files[k:k + 50]), []), capture_output=True, check=True)
    added = time.monotonic() - t0

    def all_done():
        out = subprocess.run(remote + ["-l"], capture_output=True, text=True).stdout
        rows = [ln for ln in out.splitlines()[1:] if not ln.startswith("Sum:")]
        done = [ln for ln in rows if " 100% " in ln and "Verif" not in ln and "Will Verify" not in ln]
        return len(rows) == n and len(done) == n
    wait_for("transmission: all complete", all_done, WAIT, 0.5)
    complete = time.monotonic() - t0
    time.sleep(3)
    cpu = idle_cpu(d.pid)
    rss = status_kib(d.pid, "VmHWM") / 1024
    nfd = fds(d.pid)
    stop(d)
    return added, complete, rss, cpu, nfd


def main():
    shoal, n = sys.argv[1], int(sys.argv[2])
    work = tempfile.mkdtemp(prefix="shoal-scale-svc.")
    try:
        run(shoal, n, work)
    finally:
        for p in procs:
            try:
                stop(p, 10)
            except Exception:
                pass
        if os.environ.get("SCALE_KEEP"):
            print("# kept " + work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(shoal, n, work):
    rng = random.Random(24)
    tracker = Tracker()
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    announce = "http://127.0.0.1:%d/announce" % tracker.server_address[1]
    for d in ("data", "seed", "torrents", "state"):
        os.makedirs(os.path.join(work, d))
    downloading = max(1, n // 100)
    names, seeds = [], []
    t = time.monotonic()
    for i in range(n):
        # Every 100th is downloaded: its data goes to the seeder's folder.
        dl = i % 100 == 50 or (n < 100 and i == 0)
        root = os.path.join(work, "seed" if dl else "data")
        name, meta, ih = make_torrent(i, root, announce, rng)
        path = os.path.join(work, "torrents", name + ".torrent")
        with open(path, "wb") as f:
            f.write(meta)
        names.append(name)
        if dl:
            seeds.append((path, ih))
    gen = time.monotonic() - t
    env = dict(os.environ, SHOAL_NO_PORT_MAPPING="1")
    devnull = subprocess.DEVNULL
    for path, ih in seeds:
        p = free_port()
        tracker.seeders[ih] = p
        start([shoal, "seed", path, "--from", os.path.join(work, "seed"), "--port", str(p),
               "--no-dht", "--no-lsd", "--quiet"], env=env, stdout=devnull, stderr=devnull)
    print("# %d torrents (%d downloading) generated in %.1f s under %s" %
          (n, len(seeds), gen, work), file=sys.stderr)

    api_port, peer_port = free_port(), free_port()
    log = open(os.path.join(work, "serve.log"), "w")
    svc = serve(shoal, work, api_port, peer_port, log)
    wait_for("the API", lambda: torrents(api_port) is not None, 60)
    rows = []
    t0 = time.monotonic()
    for name in names:
        with open(os.path.join(work, "torrents", name + ".torrent"), "rb") as f:
            st, body = api(api_port, "POST", "/api/torrents", f.read(), "application/x-bittorrent")
        if st != 201:
            raise SystemExit("add %s: %d %s" % (name, st, body[:200]))
    add = time.monotonic() - t0
    wait_for("all seeding", lambda: states(api_port).get("seeding") == n)
    all_seeding = time.monotonic() - t0
    announces_first = len(tracker.times)
    rows.append(("add %d torrents through the API (total)" % n, "%.1f s" % add, "≤ 60 s"))
    rows.append(("add → all %d seeding (%d downloaded)" % (n, len(seeds)), "%.1f s" % all_seeding, ""))
    # The seeds spread their first announce over up to 20 s after their add.
    time.sleep(25)
    print("# idle: measuring pid %d for %d s" % (svc.pid, IDLE_SECONDS), file=sys.stderr, flush=True)
    cpu = idle_cpu(svc.pid)
    lat = []
    for _ in range(LIST_REQUESTS):
        a = time.monotonic()
        st, body = api(api_port, "GET", "/api/torrents")
        lat.append((time.monotonic() - a) * 1000)
        assert st == 200
    list_kib = len(body) / 1024
    rss = status_kib(svc.pid, "VmHWM") / 1024
    rss_now = status_kib(svc.pid, "VmRSS") / 1024
    nfd = fds(svc.pid)
    tr_times = sorted(tracker.times)
    burst = 0
    j = 0
    for k, x in enumerate(tr_times):
        while tr_times[j] < x - 1.0:
            j += 1
        burst = max(burst, k - j + 1)
    rows.append(("peak RSS (VmHWM) / RSS when idle", "%.0f / %.0f MiB" % (rss, rss_now), "≤ 150 MiB"))
    rows.append(("idle CPU over %d s" % IDLE_SECONDS, "%.2f %% of a core" % cpu, "≤ 2 %"))
    rows.append(("GET /api/torrents p50 / p95 (%d requests, %.0f KiB)" % (LIST_REQUESTS, list_kib),
                 "%.1f / %.1f ms" % (percentile(lat, 50), percentile(lat, 95)), "p95 ≤ 50 ms"))
    rows.append(("open descriptors (ulimit -n 1024)", "%d" % nfd, "< 1024"))
    rows.append(("tracker announces: total / most in one second", "%d / %d" % (len(tr_times), burst), ""))

    # Restart: stopped cleanly, started again, until all seed again.
    t0 = time.monotonic()
    stop(svc, 120)
    stopped = time.monotonic() - t0
    t0 = time.monotonic()
    svc = serve(shoal, work, api_port, peer_port, log)
    wait_for("all seeding after the restart", lambda: states(api_port).get("seeding") == n)
    restart = time.monotonic() - t0
    hashed = metric(api_port, "shoal_checked_bytes_total")
    resumed = metric(api_port, "shoal_fast_resumed_total")
    rows.append(("stop (SIGTERM → exit)", "%.1f s" % stopped, ""))
    rows.append(("restart → all seeding", "%.1f s" % restart, "≤ 10 s"))
    rows.append(("bytes hashed at the restart / fast-resumed torrents",
                 "%s / %s" % (hashed, resumed), "0 / %d" % n))
    rows.append(("peak RSS after the restart", "%.0f MiB" % (status_kib(svc.pid, "VmHWM") / 1024), ""))
    stop(svc, 120)
    for p in procs:
        stop(p, 10)

    tr = None if os.environ.get("SCALE_NO_TRANSMISSION") else transmission(work, names, n)
    if tr:
        added, complete, trss, tcpu, tfd = tr
        rows.append(("transmission-daemon 3.00: add %d (transmission-remote)" % n, "%.1f s" % added, ""))
        rows.append(("transmission-daemon: add → all verified and complete", "%.1f s" % complete, ""))
        rows.append(("transmission-daemon: peak RSS / idle CPU / descriptors",
                     "%.0f MiB / %.2f %% / %d" % (trss, tcpu, tfd), ""))
    else:
        rows.append(("transmission-daemon", "skipped or not installed", ""))
    print("| %d torrents in one service | measured | target |" % n)
    print("|---|---|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)


def interrupted(sig, frame):
    raise SystemExit("interrupted by signal %d" % sig)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    main()
