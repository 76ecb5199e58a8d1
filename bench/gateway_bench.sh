#!/usr/bin/env bash
# Gateway benchmark: tunegate (edge + server on one core) against Portkey's gateway on the same
# loopback fake upstream, with ../shared/bench (wrk + sendfile uploads).
#
#   bash bench/gateway_bench.sh                 # direct + portkey + tunegate, default scenarios
#   SCENARIOS=get_job,create_job CONC=1 SIZES= bash bench/gateway_bench.sh
#   TUNEGATE_MODE=split bash bench/gateway_bench.sh   # `tunegate server` + `tunegate edge`
#
# TUNEGATE_MODE=run (default): one `tunegate run` process, the edge calling the servicers through
# the in-process channel. split: two processes, the edge calling the server over gRPC.
#
# Chat relay (first streamed chunk, CPU per chunk, RSS on a 10 MB stream, non-streamed req/s) has
# its own script on the same fake upstream: .venv/bin/python bench/chat_bench.py (see its --help).
#
# Environment: everything ../shared/bench/run.sh reads (SCRATCH, DURATION, CONC, SCENARIOS, SIZES,
# REPEAT, GATEWAY_CPUS=1, ...). Results: $OUT (default bench/results/gateway-<time>.jsonl).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
SCRATCH="${SCRATCH:-${TMPDIR:-/tmp}/tunegate-bench}"
UPSTREAM_PORT="${UPSTREAM_PORT:-9100}"
GATEWAY_CPUS="${GATEWAY_CPUS-1}"
HTTP_PORT="${HTTP_PORT:-8790}"
GRPC_PORT="${GRPC_PORT:-50091}"
mkdir -p "$SCRATCH" "$HERE/results"
export OUT="${OUT:-$HERE/results/gateway-$(date +%Y%m%d-%H%M%S).jsonl}"

[ -x "$SCRATCH/venv/bin/python" ] || { python3 -m venv "$SCRATCH/venv" && "$SCRATCH/venv/bin/pip" install -q aiohttp uvloop; }

DATA_DIR="$(mktemp -d "$SCRATCH/tunegate-data-XXXX")"
cat >"$DATA_DIR/bench.toml" <<TOML
[server]
max_file_bytes = 2147483648

[edge]
max_file_bytes = 2147483648

[routing]
allowed_custom_hosts = ["127.0.0.1:$UPSTREAM_PORT"]
TOML

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT INT TERM

pin=(); [ -n "$GATEWAY_CPUS" ] && pin=(taskset -c "$GATEWAY_CPUS")
TUNEGATE="$ROOT/.venv/bin/tunegate"
common=(--config "$DATA_DIR/bench.toml" --data-dir "$DATA_DIR" --grpc-port "$GRPC_PORT" --log-level WARNING)
MODE="${TUNEGATE_MODE:-run}"
if [ "$MODE" = split ]; then
  "${pin[@]}" "$TUNEGATE" server "${common[@]}" >"$DATA_DIR/server.log" 2>&1 & PIDS+=($!)
  "${pin[@]}" "$TUNEGATE" edge "${common[@]}" --http-port "$HTTP_PORT" --grpc-target "127.0.0.1:$GRPC_PORT" \
    >"$DATA_DIR/edge.log" 2>&1 & PIDS+=($!)
else
  "${pin[@]}" "$TUNEGATE" run "${common[@]}" --http-port "$HTTP_PORT" >"$DATA_DIR/run.log" 2>&1 & PIDS+=($!)
fi
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" || { cat "$DATA_DIR"/*.log; exit 1; }
PID_ARGS=(); for p in "${PIDS[@]}"; do PID_ARGS+=(--pid "$p"); done
version="tunegate $(git -C "$ROOT" rev-parse --short HEAD) $MODE $(nproc) cpus pinned to ${GATEWAY_CPUS:-any}"

SCRATCH="$SCRATCH" UPSTREAM_PORT="$UPSTREAM_PORT" GATEWAY_CPUS="$GATEWAY_CPUS" bash "$SHARED/run.sh" direct portkey custom \
  --name tunegate --base-url "http://127.0.0.1:$HTTP_PORT/v1" \
  -H "x-portkey-provider: openai" -H "x-portkey-custom-host: http://127.0.0.1:$UPSTREAM_PORT/v1" \
  -H "Authorization: Bearer sk-fake" "${PID_ARGS[@]}" --note "$version"
