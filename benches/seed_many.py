#!/usr/bin/env python3
"""One `shoal seed` serving N leechers on loopback (issue 24).

    python3 benches/seed_many.py SHOAL_BIN [N] [SECONDS]

The leechers are this script's own: N asyncio connections that handshake,
say they are interested, and while unchoked keep 32 requests of 16 KiB in
flight, a random piece at a time, its blocks in order (they never finish, so the seeder keeps serving
and choking among them as it would a swarm of new downloaders). The
seeder runs with --max-peers N+10. The script measures the seeder's RSS
idle (no peers) and with all N connected, its CPU time (utime+stime from
/proc) over a window of SECONDS while they download, and the bytes they
received in it, and prints one table: RSS per connected peer and CPU per
GiB served. Everything binds 127.0.0.1; the seeder runs in a session of its
own and is killed, and the scratch folder removed, on exit or Ctrl-C.
"""

import asyncio
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

BLOCK = 16384
IN_FLIGHT = 32
HZ = os.sysconf("SC_CLK_TCK")


def bdecode_info_span(b):
    """(start, end) of the bencoded `info` value in a .torrent."""

    def skip(i):
        c = b[i : i + 1]
        if c == b"i":
            return b.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while b[i : i + 1] != b"e":
                i = skip(i)
            return i + 1
        colon = b.index(b":", i)
        return colon + 1 + int(b[i:colon])

    assert b[:1] == b"d"
    i = 1
    while b[i : i + 1] != b"e":
        key_end = skip(i)
        colon = b.index(b":", i)
        key = b[colon + 1 : key_end]
        val_end = skip(key_end)
        if key == b"info":
            return key_end, val_end
        i = val_end
    raise ValueError("no info dictionary")


def proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stats:
    def __init__(self):
        self.received = 0
        self.connected = 0
        self.unchoked = 0
        self.failed = 0


async def leecher(port, info_hash, pieces, piece_len, stats, stop):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        stats.failed += 1
        return
    try:
        peer_id = b"-PY0001-" + os.urandom(12)
        w.write(b"\x13BitTorrent protocol" + bytes(8) + info_hash + peer_id)
        w.write(struct.pack(">IB", 1, 2))  # interested
        await w.drain()
        await r.readexactly(68)
        stats.connected += 1
        choked, out = True, 0
        piece, block = random.randrange(pieces), 0

        def ask():
            # A piece at a time, its blocks in order, as downloaders ask.
            nonlocal out, piece, block
            while not choked and out < IN_FLIGHT:
                if block * BLOCK >= piece_len:
                    piece, block = random.randrange(pieces), 0
                w.write(struct.pack(">IBIII", 13, 6, piece, block * BLOCK, BLOCK))
                block += 1
                out += 1

        while not stop.is_set():
            head = await r.readexactly(4)
            (n,) = struct.unpack(">I", head)
            if n == 0:
                continue
            body = await r.readexactly(n)
            kind = body[0]
            if kind == 0:  # choke: what was asked is dropped
                if not choked:
                    stats.unchoked -= 1
                choked, out = True, 0
            elif kind == 1:
                if choked:
                    stats.unchoked += 1
                choked = False
                ask()
            elif kind == 7:
                stats.received += n - 9
                out = max(0, out - 1)
                ask()
            await w.drain()
    except (OSError, asyncio.IncompleteReadError):
        stats.failed += 1
    finally:
        w.close()


async def run(shoal, n, seconds):
    work = tempfile.mkdtemp(prefix="shoal-seedmany.")
    seeder = None
    try:
        data = os.path.join(work, "data")
        os.makedirs(data)
        with open(os.path.join(data, "blob.bin"), "wb") as f:
            f.write(os.urandom(64 << 20))
        torrent = os.path.join(work, "blob.torrent")
        subprocess.run(
            [shoal, "create", os.path.join(data, "blob.bin"), "-o", torrent,
             "--piece-length", "256k"],
            check=True, stdout=subprocess.DEVNULL,
        )
        raw = open(torrent, "rb").read()
        a, b = bdecode_info_span(raw)
        info_hash = hashlib.sha1(raw[a:b]).digest()
        piece_len, pieces = 256 << 10, (64 << 20) // (256 << 10)
        port = free_port()
        env = dict(os.environ, SHOAL_NO_DHT="1", SHOAL_NO_LSD="1",
                   SHOAL_NO_PORT_MAPPING="1", SHOAL_NO_HOLEPUNCH="1")
        seeder = subprocess.Popen(
            [shoal, "seed", torrent, "--from", data, "--port", str(port),
             "--max-peers", str(n + 10), "--transport", "tcp", "-q",
             "--state-dir", os.path.join(work, "state")],
            env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "seed.err"), "w"),
        )
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or seeder.poll() is not None:
                    sys.exit("the seeder did not start")
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        idle_rss = rss_kib(seeder.pid)

        stats, stop = Stats(), asyncio.Event()
        tasks = [asyncio.create_task(leecher(port, info_hash, pieces, piece_len, stats, stop))
                 for _ in range(n)]
        t0 = time.time()
        while stats.connected + stats.failed < n and time.time() - t0 < 30:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # past the first choke round
        cpu0, got0, w0 = proc_stat(seeder.pid), stats.received, time.time()
        peak = rss_kib(seeder.pid)
        while time.time() - w0 < seconds:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_kib(seeder.pid))
        cpu1, got1, w1 = proc_stat(seeder.pid), stats.received, time.time()
        busy_rss = rss_kib(seeder.pid)
        connected = stats.connected - stats.failed
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        served = got1 - got0
        gib = served / 2**30
        rows = [
            ("leechers connected (asked)", f"{connected} ({n})"),
            ("unchoked at the end of the window", f"{stats.unchoked}"),
            ("seeder RSS idle, no peers", f"{idle_rss / 1024:.1f} MiB"),
            ("seeder RSS with them (end / peak)", f"{busy_rss / 1024:.1f} / {peak / 1024:.1f} MiB"),
            ("RSS per connected peer", f"{(peak - idle_rss) / max(connected, 1):.1f} KiB"),
            (f"served in {w1 - w0:.1f} s", f"{served / 2**20:.0f} MiB ({served / (w1 - w0) / 1e6:.0f} MB/s)"),
            ("seeder CPU in that window", f"{cpu1 - cpu0:.2f} s"),
            ("seeder CPU per GiB served", f"{(cpu1 - cpu0) / gib:.2f} s" if gib > 0 else "nothing served"),
        ]
        print(f"| one shoal seeder, {n} leechers, loopback | |")
        print("|---|---:|")
        for k, v in rows:
            print(f"| {k} | {v} |")
    finally:
        if seeder is not None and seeder.poll() is None:
            os.killpg(seeder.pid, signal.SIGKILL)
            seeder.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    shoal = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        asyncio.run(run(shoal, n, seconds))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
