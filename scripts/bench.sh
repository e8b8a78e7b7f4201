#!/usr/bin/env bash
# weft's benchmark of record: weft and its peers in the same run, each
# figure and each ratio (BENCHMARKS.md keeps the results).
#
#   scripts/bench.sh [SECTION...]        default: etl fanout python dispatch
#
#   etl       customer ETL vs DuckDB (bench/customer_etl.sql, from PyPI),
#             alternating weft, DuckDB, weft, DuckDB; NAIVE=1 adds the
#             tutorial's design (`local --naive`, every shard reads all)
#   fanout    a Rust root fanning out to FANOUT no-op Rust children, at
#             --max-concurrent 1, 2, 4, 8
#   python    a Python parent (official SDK) fanning out to PY_CHILDREN
#             children, each its own process, with and without --prefork
#   dispatch  POST /v1/task-runs to result, 1,000 sequential no-op runs
#   typescript  the tutorial's 1,000-customer demo in TypeScript
#             (bench/typescript-etl on @renderinc/sdk 1.x, which
#             WEFT_TS_SDK_DIR must name: it is not on the npm registry) under
#             each start command: `npx tsx` as weft ran it before it found
#             npx's package once (`env npx ...`), `npx tsx` now, `node
#             --import tsx`, compiled `node dist/main.js`; and the Python
#             template's ETL on the same data (not in the default set)
#   s3        customer ETL on S3 (moto on loopback, from PyPI) next to the
#             local run, alternating; requests by kind and loopback bytes
#             (not in the default set: it holds the data in moto's memory)
#
# Environment: CUSTOMERS (1000000), SHARDS (auto: the pipeline's default,
# 10 or one per 96 MiB of input), ROUNDS (2), FANOUT (1000),
# PY_CHILDREN (100), BENCH_DATA (generated inputs are kept there:
# ~/.cache/weft/bench-data).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft/target}"
CUSTOMERS="${CUSTOMERS:-1000000}"; SHARDS="${SHARDS:-auto}"; ROUNDS="${ROUNDS:-2}"
shard_args=(); [ "$SHARDS" = auto ] || shard_args=(--shards "$SHARDS")
FANOUT="${FANOUT:-1000}"; PY_CHILDREN="${PY_CHILDREN:-100}"
BENCH_DATA="${BENCH_DATA:-$HOME/.cache/weft/bench-data}"
sections=("$@"); [ ${#sections[@]} -gt 0 ] || sections=(etl fanout python dispatch)

py=.venv/bin/python
if ! $py -c 'import render, duckdb, moto.server, boto3' 2>/dev/null; then
  echo "==> preparing .venv (render==1.5.0, duckdb, moto[server])"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check render==1.5.0 duckdb 'moto[server]'
fi
echo "==> building (release)"
cargo build --release --quiet -p weft-workflows-cli -p customer-etl -p weft-workflows --bins --examples
R="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%Y-%m-%d), duckdb $($py -c 'import duckdb; print(duckdb.__version__)')"

# timed OUT CMD...: runs CMD, prints "wall_s peak_MB" into OUT (peak: the
# largest process of its tree, from each one's VmHWM; see bench/peak_rss.py).
timed() {
  local out=$1; shift
  python3 bench/peak_rss.py "$out" "$@" >"$work/stdout" 2>"$work/stderr" ||
    { echo "failed: $*"; tail -20 "$work/stderr"; exit 1; }
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# serve PORT ARGS...: a release `weft dev` on PORT; waits until it serves.
serve() {
  local port=$1; shift
  "$R/weft" dev --quiet --port "$port" --db "$work/weft-$port.db" "$@" >"$work/serve-$port.log" 2>&1 &
  for _ in $(seq 300); do grep -q 'serving the Render Workflows API' "$work/serve-$port.log" && return; sleep 0.1; done
  echo "weft dev on $port did not start:"; cat "$work/serve-$port.log"; exit 1
}
stop() { pkill -f "weft dev --quiet --port $1 " || true; sleep 0.5; }

etl() {
  local data="$BENCH_DATA/c$CUSTOMERS"
  if [ ! -f "$data/support.csv" ]; then
    echo "==> generating $CUSTOMERS customers into $data"
    "$R/customer-etl" generate --out "$data" --customers "$CUSTOMERS" >/dev/null
  fi
  # Fair race: DuckDB's query writes weft's profile table byte for byte.
  local small="$BENCH_DATA/c2000"
  [ -f "$small/support.csv" ] || "$R/customer-etl" generate --out "$small" --customers 2000 >/dev/null 2>&1
  "$R/customer-etl" local --data-dir "$small" --out "$work/check" --shards 1 >/dev/null 2>&1
  $py bench/duckdb_etl.py "$small" "$work/check.csv" >/dev/null
  if cmp -s "$work/check/profiles/shard-00000.csv" "$work/check.csv"; then
    echo "check: DuckDB's profiles and weft's are identical at 2,000 customers"
  else
    echo "check FAILED: DuckDB's profiles differ from weft's at 2,000 customers"; exit 1
  fi
  echo
  echo "ETL, $CUSTOMERS customers ($(du -sm "$data" | cut -f1) MB of CSV), $SHARDS shards, CSV out"
  echo "| run | round | wall (s) | peak process (MB) |"
  echo "|---|---:|---:|---:|"
  : >"$work/weft.walls"; : >"$work/duck.walls"
  for round in $(seq "$ROUNDS"); do
    rm -rf "$work/out"
    timed "$work/t" "$R/customer-etl" run --data-dir "$data" --out "$work/out" "${shard_args[@]}"
    read -r wall mb <"$work/t"; echo "$wall" >>"$work/weft.walls"
    local shards; shards=$($py -c 'import json, sys; print(json.load(open(sys.argv[1]))["shards_processed"])' "$work/out/manifest.json")
    echo "| weft \`customer-etl run\` ($shards shards) | $round | $wall | $mb |"
    timed "$work/t" $py bench/duckdb_etl.py "$data" "$work/duck.csv"
    read -r wall mb <"$work/t"; echo "$wall" >>"$work/duck.walls"
    echo "| DuckDB (bench/customer_etl.sql) | $round | $wall | $mb |"
  done
  if [ "${NAIVE:-0}" = 1 ]; then
    rm -rf "$work/naive"
    timed "$work/t" "$R/customer-etl" local --naive --data-dir "$data" --out "$work/naive" "${shard_args[@]}"
    read -r wall mb <"$work/t"
    echo "| \`customer-etl local --naive\` (the tutorial's design) | 1 | $wall | $mb |"
    awk -v n="$wall" -v w="$(median <"$work/weft.walls")" 'BEGIN {printf "naive / weft: %.2f\n", n / w}'
  fi
  awk -v w="$(median <"$work/weft.walls")" -v d="$(median <"$work/duck.walls")" \
    'BEGIN {printf "weft / DuckDB (medians %.2f s, %.2f s): %.2f\n", w, d, w / d}'
}

# children_stats URL ROOT: per-child attempt time (claimed to reported) and
# queue wait, p50 and p99, from the run tree.
children_stats() {
  "$R/weft" runs tree "$2" --json --url "$1" | $py -c '
import json, sys
from datetime import datetime
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
runs = json.load(sys.stdin)[1:]
run = sorted((t(r["completedAt"]) - t(r["startedAt"])) * 1e3 for r in runs)
wait = sorted((t(r["attempts"][0]["startedAt"]) - t(r["attempts"][0]["enqueuedAt"])) * 1e3 for r in runs)
p = lambda xs, q: xs[min(len(xs) - 1, int(len(xs) * q))]
print(f"{p(run, .5):.1f} | {p(run, .99):.1f} | {p(wait, .5):.0f}")'
}

fanout() {
  echo
  echo "Rust fan-out: a root and $FANOUT no-op children (crates/weft/examples/fan_out), each its own process"
  echo "| --max-concurrent | wall (s) | per child (wall / N) | attempt p50 (ms) | attempt p99 (ms) | queue wait p50 (ms) |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for mc in 1 2 4 8; do
    serve 8471 --max-concurrent "$mc" -- "$R/examples/fan_out"
    "$R/weft" run fan_out "[10]" --url http://127.0.0.1:8471 >/dev/null 2>&1
    local t0 t1 root
    t0=$(date +%s.%N)
    root=$("$R/weft" run fan_out "[$FANOUT]" --json --url http://127.0.0.1:8471 2>/dev/null | $py -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" -v n="$FANOUT" -v mc="$mc" -v s="$(children_stats http://127.0.0.1:8471 "$root")" \
      'BEGIN {printf "| %d | %.2f | %.2f ms | %s |\n", mc, b - a, (b - a) * 1000 / n, s}'
    stop 8471
  done
}

python_fanout() {
  echo
  echo "Python fan-out: fan_out($PY_CHILDREN) of examples/python-app/app.py (official SDK), each child its own process"
  echo "| start | round | wall (s) |"
  echo "|---|---:|---:|"
  serve 8472 -- "$py" examples/python-app/app.py
  serve 8473 --prefork -- "$py" examples/python-app/app.py
  for port in 8472 8473; do "$R/weft" run fan_out "[2]" --url "http://127.0.0.1:$port" >/dev/null 2>&1; done
  : >"$work/plain.walls"; : >"$work/prefork.walls"
  for round in $(seq "$ROUNDS"); do
    for mode in plain prefork; do
      local port=8472; [ $mode = prefork ] && port=8473
      timed "$work/t" "$R/weft" run fan_out "[$PY_CHILDREN]" --url "http://127.0.0.1:$port"
      read -r wall _ <"$work/t"; echo "$wall" >>"$work/$mode.walls"
      echo "| $([ $mode = prefork ] && echo '`--prefork`' || echo 'a new interpreter per child') | $round | $wall |"
    done
  done
  awk -v p="$(median <"$work/prefork.walls")" -v n="$(median <"$work/plain.walls")" \
    'BEGIN {printf "prefork / new interpreter: %.2f\n", p / n}'
  stop 8472; stop 8473
}

# The ETL with its inputs, work files and outputs in a bucket of a moto S3
# server on loopback, next to the same run on the local disk. Requests are
# counted from moto's access log; bytes are the loopback interface's (both
# directions, with HTTP overhead, everything on lo during the run); moto's
# CPU time says how busy the server was.
s3() {
  local data="$BENCH_DATA/c$CUSTOMERS" port=8475
  if [ ! -f "$data/support.csv" ]; then
    echo "==> generating $CUSTOMERS customers into $data"
    "$R/customer-etl" generate --out "$data" --customers "$CUSTOMERS" >/dev/null
  fi
  .venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  local moto=$!
  for _ in $(seq 300); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  local endpoint="http://127.0.0.1:$port" client=pipelines/customer-etl/tests/s3_client.py
  # moto_cpu: the server's user + system CPU seconds so far.
  moto_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$moto/stat"; }
  local t0; t0=$(date +%s.%N)
  $py $client "$endpoint" put "$data" bench in
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "boto3 uploading the inputs: %.1f s; ", b - a}'
  t0=$(date +%s.%N)
  $py $client "$endpoint" get bench in "$work/download"
  awk -v a="$t0" -v b="$(date +%s.%N)" -v mb="$(du -sm "$data" | cut -f1)" \
    'BEGIN {printf "downloading them: %.1f s (%.0f MB/s)\n", b - a, mb / (b - a)}'
  rm -rf "$work/download"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_ENDPOINT_URL="$endpoint" AWS_ALLOW_HTTP=true
  echo
  echo "ETL, $CUSTOMERS customers ($(du -sm "$data" | cut -f1) MB of CSV), $SHARDS shards, CSV out: local disk vs S3 (moto on loopback)"
  echo "| run | round | wall (s) | plan / partition / shards / aggregate (s) | peak process (MB) | requests | loopback MB | moto CPU (s) |"
  echo "|---|---:|---:|---|---:|---|---:|---:|"
  : >"$work/local.walls"; : >"$work/s3.walls"
  steps() { $py -c 'import json, sys; t = json.load(sys.stdin)["timings"]; print(" / ".join(f"{t[k] / 1000:.1f}" for k in ("plan_ms", "partition_ms", "shards_ms", "aggregate_ms")))'; }
  for round in $(seq "$ROUNDS"); do
    rm -rf "$work/out"
    timed "$work/t" "$R/customer-etl" run --data-dir "$data" --out "$work/out" "${shard_args[@]}"
    read -r wall mb <"$work/t"; echo "$wall" >>"$work/local.walls"
    echo "| \`customer-etl run\`, local disk | $round | $wall | $(steps <"$work/out/manifest.json") | $mb | | | |"
    local lines bytes cpu
    lines=$(wc -l <"$work/moto.log"); bytes=$(cat /sys/class/net/lo/statistics/rx_bytes); cpu=$(moto_cpu)
    timed "$work/t" "$R/customer-etl" run --data-dir s3://bench/in --out "s3://bench/out" \
      "${shard_args[@]}" --state-dir "$work/state"
    read -r wall mb <"$work/t"; echo "$wall" >>"$work/s3.walls"
    local requests
    requests=$(tail -n +"$((lines + 1))" "$work/moto.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -o '"[A-Z][A-Z]* /' | tr -d '" /' |
      sort | uniq -c | sort -rn | awk '{printf "%s%s %s", sep, $1, $2; sep = ", "}')
    awk -v b0="$bytes" -v b1="$(cat /sys/class/net/lo/statistics/rx_bytes)" -v c0="$cpu" -v c1="$(moto_cpu)" \
      -v w="$wall" -v mb="$mb" -v r="$round" -v q="$requests" -v st="$($py $client "$endpoint" cat bench out/manifest.json | steps)" \
      'BEGIN {printf "| `customer-etl run`, s3:// to s3:// | %s | %s | %s | %s | %s | %.0f | %.1f |\n", r, w, st, mb, q, (b1 - b0) / 1e6, c1 - c0}'
  done
  unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL AWS_ALLOW_HTTP
  awk -v s="$(median <"$work/s3.walls")" -v l="$(median <"$work/local.walls")" \
    'BEGIN {printf "s3 / local (medians %.2f s, %.2f s): %.2f\n", s, l, s / l}'
  kill "$moto" 2>/dev/null || true
}

typescript() {
  echo
  local sdk="${WEFT_TS_SDK_DIR:?typescript: set WEFT_TS_SDK_DIR to a build of @renderinc/sdk 1.x (render-oss/sdk, folder typescript/)}"
  local app="$work/ts-etl" data="$work/ts-data"
  cp -r bench/typescript-etl "$app"
  cat >"$app/package.json" <<JSON
{"name": "ts-etl", "private": true, "type": "module",
 "dependencies": {"@renderinc/sdk": "file:$sdk", "tsx": "^4"},
 "devDependencies": {"typescript": "^5", "@types/node": "^20"}}
JSON
  (cd "$app" && npm install --no-audit --no-fund --silent && npx tsc)
  $py crates/weft-cli/templates/python-etl/generate_data.py 1000 --out "$data" >/dev/null
  cp crates/weft-cli/templates/python-etl/main.py "$app/etl.py"
  echo "TypeScript demo, 1,000 customers, 10 shards: \`weft run merge_customer_data\` to its result, on a server already up"
  echo "(node $(node --version), tsx $(cd "$app" && node -p 'require("tsx/package.json").version'))"
  echo
  echo "| start command | round | run (s) |"
  echo "|---|---|---|"
  local commands=("env npx tsx src/main.ts" "npx tsx src/main.ts" "node --import tsx src/main.ts" "node dist/main.js" "$PWD/$py etl.py")
  local round command port=8135
  for round in $(seq "$ROUNDS"); do
    for command in "${commands[@]}"; do
      port=$((port + 1))
      # shellcheck disable=SC2086 # the start command is split into words
      (cd "$app" && DATA_DIR="$data" OUT_DIR="$work/ts-out" serve "$port" -- $command)
      local t0 t1
      t0=$(date +%s.%N)
      "$R/weft" run merge_customer_data '[]' --url "http://127.0.0.1:$port" >"$work/ts-result" 2>&1 ||
        { echo "failed: $command"; cat "$work/ts-result" "$work/serve-$port.log"; exit 1; }
      t1=$(date +%s.%N)
      grep -q '"profiles_generated"' "$work/ts-result" || { echo "no result: $command"; cat "$work/ts-result"; exit 1; }
      pkill -f -- "--port $port " || true
      awk -v c="$command" -v r="$round" -v a="$t0" -v b="$t1" 'BEGIN {printf "| `%s` | %s | %.2f |\n", c, r, b - a}'
    done
  done
}

dispatch() {
  echo
  echo "Dispatch latency (cargo bench -p weft-workflows-cli --bench dispatch -- 1000)"
  cargo bench --quiet -p weft-workflows-cli --bench dispatch -- 1000 2>/dev/null
}

for section in "${sections[@]}"; do
  case "$section" in
    etl) etl ;;
    fanout) fanout ;;
    python) python_fanout ;;
    dispatch) dispatch ;;
    s3) s3 ;;
    typescript) typescript ;;
    *) echo "unknown section $section (etl, fanout, python, dispatch, s3, typescript)"; exit 2 ;;
  esac
done
