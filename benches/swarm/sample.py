#!/usr/bin/env python3
"""Samples the byte counters of every port of the swarm's bridge.

    sample.py PID OUT [INTERVAL]

PID is a process inside the bridge's namespace (the harness starts a `sleep`
there); /proc/PID/net/dev lists that namespace's interfaces, so this runs in
the root namespace without entering any. A bridge port `bN` is the other end
of host N's link: what the port receives is the host's upload, what it sends
is the host's download. Writes `t port rx tx` lines (t: Unix time) until
PID is gone. The counters are whole frames, headers included, so they are a
little above the piece data a client reports; they are the same for every
client, which is why the harness uses them for aria2 and Transmission.
"""
import sys
import time

pid, out = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
with open(out, "w") as f:
    while True:
        try:
            with open(f"/proc/{pid}/net/dev") as d:
                lines = d.read().splitlines()[2:]
        except OSError:
            break
        t = time.time()
        for line in lines:
            name, rest = line.split(":", 1)
            name = name.strip()
            if name.startswith("b") and name[1:].isdigit():
                v = rest.split()
                f.write(f"{t:.3f} {name} {v[0]} {v[8]}\n")
        f.flush()
        time.sleep(interval)
