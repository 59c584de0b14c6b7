#!/usr/bin/env python3
"""A small home router for port-mapping tests: a UPnP IGD (SSDP + device
description + WANIPConnection SOAP control) and a NAT-PMP server (RFC 6886;
a PCP request is answered "unsupported version", as RFC 6887 section 9 asks
of a NAT-PMP-only server). Every mapping it grants is a real nftables DNAT
rule in the namespace it runs in; deleting the mapping deletes the rule.

Run inside the router namespace by tests/portmap.rs:
  fake_router.py --lan IP --wan IP --table NAME --wan-if IF [--no-upnp]
                 [--no-pmp] [--hostile MODE] [--pmp-lifetime SECS]
                 [--slow-add SECS] [--pmp-port-offset N]
MODE (one): huge-desc, deep-desc, elsewhere, wrong-port, ssdp-flood,
pmp-wrong-source, junk-soap.
Each request is logged on stdout, one line each ("upnp AddPortMapping TCP
6881 -> 10.x.x.x:6881", "pmp map tcp ...", "nft add ...", "nft del ...").
"""

import argparse
import http.server
import re
import socket
import struct
import subprocess
import sys
import threading
import time

ARGS = None
LOCK = threading.Lock()
# Held across a whole add or delete (UPnP and NAT-PMP requests come at once).
MAP_LOCK = threading.RLock()
# (proto, external port) -> (client ip, internal port, nft handle)
MAPPINGS = {}
START = time.time()


def log(*a):
    with LOCK:
        print(*a, flush=True)


def nft_add(proto, ext, client, port):
    """Installs the DNAT rule; returns its handle."""
    cmd = ["nft", "--echo", "--handle", "add", "rule", "ip", ARGS.table, "prerouting",
           "iifname", ARGS.wan_if, proto, "dport", str(ext), "dnat", "to", f"{client}:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"# handle (\d+)", out.stdout)
    if out.returncode != 0 or not m:
        log("nft add failed:", out.stderr.strip())
        return None
    log(f"nft add {proto} {ext} -> {client}:{port} handle {m.group(1)}")
    return m.group(1)


def nft_del(handle):
    if handle is None:
        return
    subprocess.run(["nft", "delete", "rule", "ip", ARGS.table, "prerouting", "handle", handle],
                   capture_output=True)
    log(f"nft del handle {handle}")


def add_mapping(proto, ext, client, port):
    with MAP_LOCK:
        return add_mapping_locked(proto, ext, client, port)


def add_mapping_locked(proto, ext, client, port):
    with LOCK:
        old = MAPPINGS.get((proto, ext))
        renewal = bool(old and old[:2] == (client, port) and old[2] is not None)
        if not renewal:
            MAPPINGS.pop((proto, ext), None)
    if renewal:
        # The same mapping asked again: a renewal keeps its rule.
        log(f"nft keep {proto} {ext} handle {old[2]}")
        return True
    if old:
        nft_del(old[2])
    h = nft_add(proto, ext, client, port)
    if h is None:
        return False
    with LOCK:
        MAPPINGS[(proto, ext)] = (client, port, h)
    return True


def del_mapping(proto, ext):
    with MAP_LOCK:
        return del_mapping_locked(proto, ext)


def del_mapping_locked(proto, ext):
    with LOCK:
        old = MAPPINGS.pop((proto, ext), None)
    if old:
        nft_del(old[2])
    return old is not None


# ---------------------------------------------------------------- UPnP

SERVICE = "urn:schemas-upnp-org:service:WANIPConnection:1"


def description():
    if ARGS.hostile == "huge-desc":
        return "<?xml version=\"1.0\"?><root>" + "<x>junk</x>" * 300_000 + "</root>"
    if ARGS.hostile == "deep-desc":
        return "<?xml version=\"1.0\"?>" + "<a>" * 100_000 + "</a>" * 100_000
    dev = lambda t, inner: (f"<device><deviceType>urn:schemas-upnp-org:device:{t}:1</deviceType>"
                            f"<friendlyName>fake {t}</friendlyName>{inner}</device>")
    service = (f"<serviceList><service><serviceType>{SERVICE}</serviceType>"
               "<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>"
               "<SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL>"
               "<eventSubURL>/evt</eventSubURL></service></serviceList>")
    tree = dev("InternetGatewayDevice",
               "<deviceList>" + dev("WANDevice",
                                    "<deviceList>" + dev("WANConnectionDevice", service)
                                    + "</deviceList>") + "</deviceList>")
    return ("<?xml version=\"1.0\"?><root xmlns=\"urn:schemas-upnp-org:device-1-0\">"
            "<specVersion><major>1</major><minor>0</minor></specVersion>" + tree + "</root>")


def scpd():
    def action(name, args):
        a = "".join(f"<argument><name>{n}</name><direction>{d}</direction></argument>"
                    for n, d in args)
        return f"<action><name>{name}</name><argumentList>{a}</argumentList></action>"
    add_args = [("NewRemoteHost", "in"), ("NewExternalPort", "in"), ("NewProtocol", "in"),
                ("NewInternalPort", "in"), ("NewInternalClient", "in"), ("NewEnabled", "in"),
                ("NewPortMappingDescription", "in"), ("NewLeaseDuration", "in")]
    actions = [
        action("AddPortMapping", add_args),
        action("DeletePortMapping", [("NewRemoteHost", "in"), ("NewExternalPort", "in"),
                                     ("NewProtocol", "in")]),
        action("GetExternalIPAddress", [("NewExternalIPAddress", "out")]),
        action("GetGenericPortMappingEntry", [("NewPortMappingIndex", "in")]),
    ]
    return ("<?xml version=\"1.0\"?><scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">"
            "<actionList>" + "".join(actions) + "</actionList></scpd>")


def envelope(inner):
    return ("<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" "
            "s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>"
            + inner + "</s:Body></s:Envelope>")


def ok(action, fields=""):
    return 200, envelope(f"<u:{action}Response xmlns:u=\"{SERVICE}\">{fields}</u:{action}Response>")


def fault(code, desc):
    return 500, envelope(
        "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
        "<UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">"
        f"<errorCode>{code}</errorCode><errorDescription>{desc}</errorDescription>"
        "</UPnPError></detail></s:Fault>")


def arg(body, name):
    m = re.search(rf"<{name}>([^<]*)</{name}>", body)
    return m.group(1) if m else ""


def control(action, body, peer_ip):
    if ARGS.hostile == "junk-soap":
        return 200, "<" * 500_000
    if action == "GetExternalIPAddress":
        return ok(action, f"<NewExternalIPAddress>{ARGS.wan}</NewExternalIPAddress>")
    if action == "AddPortMapping":
        proto = arg(body, "NewProtocol").lower()
        ext, port = int(arg(body, "NewExternalPort") or 0), int(arg(body, "NewInternalPort") or 0)
        client = arg(body, "NewInternalClient")
        log(f"upnp AddPortMapping {proto.upper()} {ext} -> {client}:{port} "
            f"lease {arg(body, 'NewLeaseDuration')} from {peer_ip}")
        if proto not in ("tcp", "udp") or not ext or not port or client != peer_ip:
            return fault(402, "Invalid Args")
        time.sleep(ARGS.slow_add)
        if ARGS.hostile == "elsewhere":
            # Claims success, maps nothing for the asker: its table shows
            # the port going to another host.
            with LOCK:
                MAPPINGS[(proto, ext)] = ("10.99.99.99", port, None)
            return ok(action)
        if not add_mapping(proto, ext, client, port):
            return fault(501, "Action Failed")
        return ok(action)
    if action == "DeletePortMapping":
        proto = arg(body, "NewProtocol").lower()
        ext = int(arg(body, "NewExternalPort") or 0)
        log(f"upnp DeletePortMapping {proto.upper()} {ext}")
        if not del_mapping(proto, ext):
            return fault(714, "NoSuchEntryInArray")
        return ok(action)
    if action == "GetGenericPortMappingEntry":
        i = int(arg(body, "NewPortMappingIndex") or 0)
        with LOCK:
            entries = sorted(MAPPINGS.items())
        if i >= len(entries):
            return fault(713, "SpecifiedArrayIndexInvalid")
        (proto, ext), (client, port, _) = entries[i]
        if ARGS.hostile == "wrong-port":
            port += 1
        fields = (f"<NewRemoteHost></NewRemoteHost><NewExternalPort>{ext}</NewExternalPort>"
                  f"<NewProtocol>{proto.upper()}</NewProtocol><NewInternalPort>{port}</NewInternalPort>"
                  f"<NewInternalClient>{client}</NewInternalClient><NewEnabled>1</NewEnabled>"
                  "<NewPortMappingDescription>x</NewPortMappingDescription>"
                  "<NewLeaseDuration>0</NewLeaseDuration>")
        return ok(action, fields)
    return fault(401, "Invalid Action")


class Http(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/xml; charset=\"utf-8\"")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass

    def do_GET(self):
        log(f"http GET {self.path}")
        if self.path == "/desc.xml":
            self.reply(200, description())
        elif self.path == "/scpd.xml":
            self.reply(200, scpd())
        else:
            self.reply(404, "")

    def do_POST(self):
        n = min(int(self.headers.get("Content-Length", "0") or 0), 1 << 16)
        body = self.rfile.read(n).decode(errors="replace")
        action = (self.headers.get("SOAPAction", "") or "").strip('"').split("#")[-1]
        code, text = control(action, body, self.client_address[0])
        self.reply(code, text)


def ssdp(http_port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 1900))
    try:
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton(ARGS.lan))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    except OSError as e:
        log("ssdp: no multicast membership:", e)
    while True:
        data, peer = s.recvfrom(4096)
        text = data.decode(errors="replace")
        if not text.startswith("M-SEARCH"):
            continue
        st = re.search(r"(?im)^ST:\s*(.*)$", text)
        st = st.group(1).strip() if st else ""
        log(f"ssdp M-SEARCH {st} from {peer[0]}:{peer[1]}")
        junk = [b"HTTP/1.1 200 OK\r\n\r\n", b"\xff" * 40, b"LOCATION: ftp://x/\r\n",
                b"HTTP/1.1 200 OK\r\nLOCATION: http://10.99.99.99:1/x\r\n\r\n"]
        # A flood: 100 bad answers (few enough that the good one after
        # them still fits in the asker's socket buffer), the good one,
        # then 5000 more.
        flood = ARGS.hostile == "ssdp-flood"
        for i in range(100 if flood else 0):
            s.sendto(junk[i % len(junk)], peer)
        reply = ("HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
                 f"ST: {st}\r\nUSN: uuid:fake-router::{st}\r\nEXT:\r\nSERVER: fake/1 UPnP/1.1 fake/1\r\n"
                 f"LOCATION: http://{ARGS.lan}:{http_port}/desc.xml\r\n\r\n")
        s.sendto(reply.encode(), peer)
        for i in range(5000 if flood else 0):
            s.sendto(junk[i % len(junk)], peer)


# ------------------------------------------------------------- NAT-PMP

def pmp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ARGS.lan, 5351))
    # Replies in the hostile mode come from another port of the router:
    # a client must not take them.
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind((ARGS.lan, 0))
    while True:
        data, peer = s.recvfrom(1100)
        out = other if ARGS.hostile == "pmp-wrong-source" else s
        epoch = int(time.time() - START)
        if len(data) < 2:
            continue
        version, op = data[0], data[1]
        if version != 0:
            log(f"pmp version {version} op {op} from {peer[0]}: unsupported version")
            out.sendto(struct.pack("!BBHI", 0, op | 0x80, 1, epoch), peer)
            continue
        if op == 0 and len(data) == 2:
            log(f"pmp external address from {peer[0]}")
            out.sendto(struct.pack("!BBHI4s", 0, 128, 0, epoch, socket.inet_aton(ARGS.wan)), peer)
        elif op in (1, 2) and len(data) == 12:
            _, _, _, internal, ext, life = struct.unpack("!BBHHHI", data)
            proto = "udp" if op == 1 else "tcp"
            log(f"pmp map {proto} {internal} ext {ext} life {life} from {peer[0]}")
            if life == 0:
                for (p, e), (c, i, _) in list(MAPPINGS.items()):
                    if p == proto and c == peer[0] and (internal == 0 or i == internal):
                        del_mapping(p, e)
                out.sendto(struct.pack("!BBHIHHI", 0, op | 0x80, 0, epoch, internal, 0, 0), peer)
                continue
            ext = ext or internal
            if ext == internal:
                # Another port than asked (what a busy router does).
                ext += ARGS.pmp_port_offset
            code = 0 if add_mapping(proto, ext, peer[0], internal) else 3
            out.sendto(struct.pack("!BBHIHHI", 0, op | 0x80, code, epoch, internal, ext,
                                   min(life, ARGS.pmp_lifetime)), peer)
        else:
            out.sendto(struct.pack("!BBHI", 0, op | 0x80, 5, epoch), peer)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--lan", required=True)
    p.add_argument("--wan", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--wan-if", required=True)
    p.add_argument("--no-upnp", action="store_true")
    p.add_argument("--no-pmp", action="store_true")
    p.add_argument("--hostile", default="")
    p.add_argument("--pmp-lifetime", type=int, default=3600)
    p.add_argument("--pmp-port-offset", type=int, default=0)
    p.add_argument("--slow-add", type=float, default=0.0)
    ARGS = p.parse_args()
    threads = []
    if not ARGS.no_upnp:
        srv = http.server.ThreadingHTTPServer((ARGS.lan, 0), Http)
        threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        threads.append(threading.Thread(target=ssdp, args=(srv.server_address[1],), daemon=True))
    if not ARGS.no_pmp:
        threads.append(threading.Thread(target=pmp, daemon=True))
    for t in threads:
        t.start()
    log("ready")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
