#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) with corpora seeded from
# fixtures/, then prints each target's executions and any crash found.
# Needs cargo-fuzz (cargo install cargo-fuzz); the stable toolchain is
# allowed nightly flags through RUSTC_BOOTSTRAP, as cargo fuzz needs them.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
export RUSTC_BOOTSTRAP=1
targets=(metainfo wire tracker_http tracker_udp magnet mse ut_metadata utp)

mkdir -p corpus/{metainfo,wire,tracker_http,tracker_udp,magnet,mse,ut_metadata,utp}
cp ../fixtures/*.torrent ../fixtures/libtorrent-test-torrents/*.torrent corpus/metainfo/ 2>/dev/null || true
if [ -d ../../shared/corpus ]; then
  find ../../shared/corpus -name '*.torrent' -exec cp {} corpus/metainfo/ \; 2>/dev/null || true
fi
printf '\x00\x00\x00\x05\x04\x00\x00\x00\x07' > corpus/wire/have
printf '\x00\x00\x00\x0d\x06\x00\x00\x00\x01\x00\x00\x40\x00\x00\x00\x40\x00' > corpus/wire/request
printf '\x00\x00\x00\x1a\x14\x00d1:md11:ut_metadatai1ee1:pi6881ee' > corpus/wire/ext
printf '\x00\x00\x00\x31\x15rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x03' > corpus/wire/hash_request
printf '\x00\x00\x00\x51\x16rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh' > corpus/wire/hashes
printf '\x13BitTorrent protocol\x00\x00\x00\x00\x00\x10\x00\x05aaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbb' > corpus/wire/handshake
printf 'd8:intervali1800e5:peers6:\x7f\x00\x00\x01\x1a\xe1e' > corpus/tracker_http/compact
printf 'd8:intervali60e5:peersld2:ip9:127.0.0.14:porti6881eee6:peers618:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1a\xe1e' > corpus/tracker_http/dict
printf 'd14:failure reason4:nopee' > corpus/tracker_http/failure
printf '\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07\x08\x00\x00\x00\x01\x00\x00\x00\x02\x7f\x00\x00\x01\x1a\xe1' > corpus/tracker_udp/announce
printf '\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01' > corpus/tracker_udp/connect
printf 'magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=x&tr=udp://t:1&x.pe=127.0.0.1:1' > corpus/magnet/hex
printf 'magnet:?xt=urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK&ws=http://w/' > corpus/magnet/b32
printf 'magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e&dn=v2' > corpus/magnet/btmh
printf 'Z%.0s' $(seq 700) > corpus/mse/junk
printf 'd8:msg_typei1e5:piecei0e10:total_sizei5eehello' > corpus/ut_metadata/data
printf 'd8:msg_typei0e5:piecei0ee' > corpus/ut_metadata/request
printf 'd5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x02e' > corpus/ut_metadata/pex
# uTP datagrams (source byte, length byte, packet): a SYN, a STATE with a
# selective ACK, a DATA packet, a DHT query.
printf '\x01\x14\x41\x00\x30\x39\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\xfd\x00\x00' > corpus/utp/syn
printf '\x02\x1a\x21\x01\x30\x3a\x00\x00\x00\x01\x00\x00\x00\x05\x00\x10\x00\x00\x00\x07\xff\xfe\x00\x04\x0f\x00\x00\x80' > corpus/utp/sack
printf '\x03\x18\x01\x00\x30\x3a\x00\x00\x00\x01\x00\x00\x00\x05\x00\x10\x00\x00\xff\xff\x00\x07data' > corpus/utp/data
printf '\x04\x38d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe' > corpus/utp/dht

for t in "${targets[@]}"; do
  cargo fuzz build -O "$t" >/dev/null 2>&1
  echo "== $t: ${secs}s"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
    > "fuzz-$t.log" 2>&1 || echo "   $t: CRASH (see fuzz/fuzz-$t.log and fuzz/artifacts/$t/)"
  grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "fuzz-$t.log" | sed 's/^/   /' || true
  ls "artifacts/$t" 2>/dev/null | sed 's/^/   artifact: /' || true
done
