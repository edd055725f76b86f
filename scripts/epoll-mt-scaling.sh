#!/usr/bin/env bash
# epoll-mt (one loop per CPU) against epoll-et (one loop), side by side, three rounds
# alternating, nothing pinned: the load generator shares the CPUs with the server, as
# it must on a two-core machine. Two paths: `/` (the load generator's own cost per
# request is as large as the server's, so it is the limit) and `/spin/US` (CPU work
# in the handler: the server is the limit, and a second loop can help).
#
#   scripts/epoll-mt-scaling.sh [SPIN_US] [ROUNDS]
#
# Prints one line per run and the medians, and writes them as Markdown to
# results/epoll-mt-scaling.md (the book includes it); needs python3 for the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
spin=${1:-50}
rounds=${2:-3}
cargo build --release -q
bin=target/release/iomodels
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

run() { # model path round
    local model=$1 path=$2 round=$3 port=$((20000 + RANDOM % 20000))
    $bin serve "$model" --port "$port" --threads 2 2>/dev/null >/dev/null &
    local pid=$!
    sleep 0.3
    local json="$out/$model-${path//\//_}-$round.json"
    $bin load --target "127.0.0.1:$port" --path "$path" --connections 20 \
        --warmup 1s --duration 5s --json "$json" >/dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$json" "$model" "$path" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:9} {sys.argv[3]:10} {r['throughput_rps']:10.0f} req/s  "
      f"p99 {r['latency_us']['p99']:6} us  load generator CPU {r['loadgen_cpu']:.2f}")
PY
}

report=results/epoll-mt-scaling.md
{
    echo "Made by \`scripts/epoll-mt-scaling.sh $spin $rounds\` on $(date -u +%Y-%m-%d) at commit"
    echo "\`$(git rev-parse --short HEAD)\`, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
    echo "nothing pinned; 20 connections, 1 s warm-up, 5 s measured per run."
    echo
    echo '```text'
} > "$out/report"
for path in / "/spin/$spin"; do
    for round in $(seq 1 "$rounds"); do
        for model in epoll-et epoll-mt; do
            run "$model" "$path" "$round"
        done
    done | tee "$out/lines"
    cat "$out/lines" >> "$out/report"
    python3 - "$out/lines" <<'PY' | tee -a "$out/report"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {m: statistics.median(float(r[2]) for r in rows if r[0] == m) for m in ("epoll-et", "epoll-mt")}
print(f"median {rows[0][1]}: epoll-et {med['epoll-et']:.0f}, epoll-mt {med['epoll-mt']:.0f} req/s, "
      f"ratio {med['epoll-mt'] / med['epoll-et']:.2f}")
PY
done
echo '```' >> "$out/report"
cp "$out/report" "$report"
echo "written to $report"
