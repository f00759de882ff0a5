#!/usr/bin/env bash
# Load benchmarks on loopback, written to BENCHMARKS.md.
#
# Builds examples/bench_server and runs it in five modes — no cache layer (the floor),
# MemoryStore, TieredStore (its memory tier in front of Redis), RedisStore, MemcachedStore —
# pinned to core 0, with wrk pinned to core 1. For each route
# (/hello 1 KiB, /big 64 KiB, /slow 50 ms + 1 KiB) it warms up, then measures requests/s,
# p50/p99 latency and the server's CPU time per request (utime+stime from /proc/PID/stat),
# and checks through /calls that the origin did not run during a measured cached run (every
# request a hit). A /slow run with a unique query per request measures misses, on RedisStore
# also with its fill locks off. Then redis-benchmark GET against the same redis-server, at the
# same concurrency, gives the Redis ceiling, and memcaslap gets (1 KiB values) against the same
# memcached the Memcached ceiling. Each run is repeated and the median kept; CPU time is split into user and system.
#
# Wall-clock CPU time on a shared VM moves from run to run by more than a hit costs, so the
# script also counts the server's user-space instructions per request under callgrind
# (valgrind), which are the same from run to run: the floor, memory and Redis hits, and misses.
#
# nginx's proxy_cache runs in the same rounds as the anchor for memory hits (`/hello`, `/big`):
# one nginx process pinned to core 0, in front of the floor's server.
#
# Environment: DURATION (s per run, default 6), CONNECTIONS (default 64), REPEAT (default 2),
# CALLGRIND (0 to skip the instruction counts). Loopback only; takes about five minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
CONNECTIONS=${CONNECTIONS:-64}
REPEAT=${REPEAT:-2}
CALLGRIND=${CALLGRIND:-1}
# System calls per request, where perf can count the tracepoint (no install: perf is tied to
# the kernel's version).
SYSCALLS=0
if command -v perf >/dev/null && perf stat -x, -e raw_syscalls:sys_enter true 2>&1 | grep -q '^[0-9]'; then
  SYSCALLS=1
fi
OUT=${OUT:-BENCHMARKS.md}
RAW=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RAW"' EXIT

install_missing() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-benchmark >/dev/null || missing+=(redis-tools)
  command -v memcached >/dev/null || missing+=(memcached)
  command -v memcaslap >/dev/null || missing+=(libmemcached-tools)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  if [ "$CALLGRIND" != 0 ] && ! command -v callgrind_control >/dev/null; then missing+=(valgrind); fi
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# User and system CPU ticks of a process, as "user system".
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

wait_for() {
  for _ in $(seq 1 100); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not up: $1" >&2
  return 1
}

install_missing
cargo build --release --features redis,metrics,memcached --example bench_server
SERVER=target/release/examples/bench_server

REDIS_PORT=$(free_port)
# redis-server is not pinned: in the RedisStore runs it shares the two cores with the server
# and wrk, as it would share a machine with its clients.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no >/dev/null &
REDIS_PID=$!
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

# memcached, unpinned as redis-server is; `-u` is required when run as root.
MEMCACHED_PORT=$(free_port)
memcached_user=()
[ "$(id -u)" -eq 0 ] && memcached_user=(-u root)
memcached "${memcached_user[@]}" -l 127.0.0.1 -p "$MEMCACHED_PORT" -m 512 >/dev/null 2>&1 &
MEMCACHED_PID=$!
export MEMCACHED="127.0.0.1:$MEMCACHED_PORT"
# memcaslap: gets only, 1 KiB values, 64-byte keys (a window of keys is set first).
cat >"$RAW/memcaslap.cfg" <<CFG
key
64 64 1
value
1024 1024 1
cmd
0 0.0
1 1.0
CFG

# A unique query per request. The nonce differs per run: the Redis store outlives a run, and
# wrk's random numbers repeat from run to run, so without it a later round would hit.
miss_script() {
  cat >"$RAW/miss.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/slow?miss=$1-" .. counter)
end
LUA
  echo "$RAW/miss.lua"
}

# One measured run: MODE PATH LABEL [wrk script]
measure() {
  local mode=$1 path=$2 label=$3 script=${4:-} port pid
  port=$(free_port)
  taskset -c 0 "$SERVER" "$mode" "127.0.0.1:$port" "redis://127.0.0.1:$REDIS_PORT" >/dev/null &
  pid=$!
  wait_for "http://127.0.0.1:$port/calls"
  local args=(-t1 "-c$CONNECTIONS" --latency)
  [ -n "$script" ] && args+=(-s "$script")
  # Warm-up: fills the cache (and the connections) before the measured run.
  taskset -c 1 wrk -t1 "-c$CONNECTIONS" -d2s "http://127.0.0.1:$port$path" >/dev/null
  local calls0 user0 sys0 calls1 user1 sys1 counter="" syscalls=""
  calls0=$(curl -s "http://127.0.0.1:$port/calls")
  if [ "$SYSCALLS" = 1 ]; then
    # The server's system calls during the measured run (a tracepoint: no PMU needed).
    perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$RAW/perf.txt" 2>/dev/null &
    counter=$!
    sleep 0.2
  fi
  read -r user0 sys0 < <(cpu_ticks "$pid")
  taskset -c 1 wrk "${args[@]}" "-d${DURATION}s" "http://127.0.0.1:$port$path" >"$RAW/wrk.txt"
  read -r user1 sys1 < <(cpu_ticks "$pid")
  if [ -n "$counter" ]; then
    kill -INT "$counter" 2>/dev/null || true
    wait "$counter" 2>/dev/null || true
    syscalls=$(awk -F, '/raw_syscalls:sys_enter/ {print $1}' "$RAW/perf.txt" 2>/dev/null || true)
  fi
  calls1=$(curl -s "http://127.0.0.1:$port/calls")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  record_run "$RAW/wrk.txt" "$mode" "$label" "$((user1 - user0))" "$((sys1 - sys0))" "$((calls1 - calls0))" "${syscalls:-}"
}

# One run's line in runs.tsv, from wrk's output: WRK_OUTPUT MODE LABEL USER_TICKS SYS_TICKS
# ORIGIN_CALLS SYSCALLS (empty when not counted).
record_run() {
  python3 - "$1" "$2" "$3" "$4" "$5" "$6" "$(getconf CLK_TCK)" "$7" >>"$RAW/runs.tsv" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
mode, label = sys.argv[2], sys.argv[3]
user, system, calls, hz = (int(v) for v in sys.argv[4:8])
syscalls = int(sys.argv[8]) if sys.argv[8].isdigit() else None
def micros(value):
    # wrk prints 512.00us, 1.20ms, 1.02s, 1.50m; anything else (nan) is not a number.
    match = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not match:
        return float("nan")
    number, unit = match.groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]
total = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def percentile(p):
    found = re.search(p + r"%\s+(\S+)", text)
    return micros(found.group(1)) if found else float("nan")
p50, p99 = percentile("50"), percentile("99")
errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|Socket errors:.*?timeout)\s*:?\s*(\d+)", text))
cpu = (user + system) / hz * 1e6 / total
user_cpu = user / hz * 1e6 / total
per_request = f"{syscalls / total:.2f}" if syscalls is not None else "nan"
print(f"{mode}\t{label}\t{rps:.0f}\t{p50:.0f}\t{p99:.0f}\t{cpu:.2f}\t{calls}\t{total}\t{errors}\t{user_cpu:.2f}\t{per_request}")
PY
}

# nginx's proxy_cache, the anchor a memory hit is held to: one nginx process (no master)
# pinned to core 0 as the server is, in front of the floor's server (unpinned: it answers
# only the warm-up's first request per route), its cache on disk as nginx keeps it (the
# page cache holds it). Measured as `measure` does: PATH LABEL.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
measure_nginx() {
  local path=$1 label=$2 port origin_port origin_pid pid dir
  port=$(free_port)
  origin_port=$(free_port)
  dir="$RAW/nginx-$label"
  mkdir -p "$dir/cache" "$dir/temp"
  "$SERVER" none "127.0.0.1:$origin_port" "redis://127.0.0.1:$REDIS_PORT" >/dev/null &
  origin_pid=$!
  wait_for "http://127.0.0.1:$origin_port/calls"
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/temp/body;
  proxy_temp_path $dir/temp/proxy;
  fastcgi_temp_path $dir/temp/fastcgi;
  uwsgi_temp_path $dir/temp/uwsgi;
  scgi_temp_path $dir/temp/scgi;
  proxy_cache_path $dir/cache levels=1:2 keys_zone=bench:16m max_size=1g inactive=10m use_temp_path=off;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 16; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      add_header X-Cache-Status \$upstream_cache_status;
    }
  }
}
CONF
  taskset -c 0 "$NGINX" -c "$dir/nginx.conf" -p "$dir" 2>>"$dir/error.log" &
  pid=$!
  wait_for "http://127.0.0.1:$port$path"
  taskset -c 1 wrk -t1 "-c$CONNECTIONS" -d2s "http://127.0.0.1:$port$path" >/dev/null
  local calls0 calls1 user0 sys0 user1 sys1
  calls0=$(curl -s "http://127.0.0.1:$origin_port/calls")
  read -r user0 sys0 < <(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 "-c$CONNECTIONS" --latency "-d${DURATION}s" "http://127.0.0.1:$port$path" >"$RAW/wrk.txt"
  read -r user1 sys1 < <(cpu_ticks "$pid")
  calls1=$(curl -s "http://127.0.0.1:$origin_port/calls")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$origin_pid"; wait "$origin_pid" 2>/dev/null || true
  record_run "$RAW/wrk.txt" nginx "$label" "$((user1 - user0))" "$((sys1 - sys0))" "$((calls1 - calls0))" ""
}

# Instructions per request in the server's user space: MODE PATH LABEL [misses]. The server
# runs under callgrind; its counters are zeroed after a warm-up and dumped after a measured
# run, whose requests wrk counts. With "misses", every request has a query of its own (the
# warm-up's differ from the measured run's).
count_instructions() {
  local mode=$1 path=$2 label=$3 misses=${4:-} port out requests
  local args=(-t1 -c16)
  port=$(free_port)
  out="$RAW/callgrind.$mode"
  rm -f "$out"*
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$SERVER" "$mode" "127.0.0.1:$port" "redis://127.0.0.1:$REDIS_PORT" >/dev/null 2>&1 &
  local pid=$!
  local up=0
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/calls" >/dev/null 2>&1 && { up=1; break; }
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    echo "callgrind: the server under valgrind did not come up" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  [ -n "$misses" ] && args+=(-s "$(miss_script "callgrind-$mode-warm-$$")")
  wrk "${args[@]}" -d2s "http://127.0.0.1:$port$path" >/dev/null
  [ -n "$misses" ] && args=(-t1 -c16 -s "$(miss_script "callgrind-$mode-$$")")
  # callgrind_control reaches a process blocked in a system call through ptrace (vgdb);
  # where that is refused it would wait for ever.
  if ! timeout 30 callgrind_control -z "$pid" >/dev/null; then
    echo "callgrind: could not zero the counters" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  requests=$(wrk "${args[@]}" -d3s "http://127.0.0.1:$port$path" | awk '/requests in/ {print $1}')
  timeout 30 callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # The one dump asked for (part 1) covers the measured run; its summary is the instructions
  # executed.
  printf '%s\t%s\t%s\t%s\n' "$mode" "$label" "$(awk '/^summary:/ {print $2}' "$out.1")" "$requests" >>"$RAW/instructions.tsv"
  # Kept for `callgrind_annotate --inclusive=yes target/callgrind.MODE.LABEL.out`: where the
  # instructions go.
  mkdir -p target && cp "$out.1" "target/callgrind.$mode.$label.out"
}

: >"$RAW/runs.tsv"
for round in $(seq 1 "$REPEAT"); do
  for mode in none memory tiered redis memcached; do
    for route in hello big slow; do
      echo "round $round: $mode /$route" >&2
      measure "$mode" "/$route" "$route"
    done
    echo "round $round: $mode /slow misses" >&2
    measure "$mode" "/slow" "slow-miss" "$(miss_script "$mode-$round-$$")"
  done
  for route in hello big; do
    echo "round $round: nginx proxy_cache /$route" >&2
    measure_nginx "/$route" "$route"
  done
  echo "round $round: redis without fill locks, /slow misses" >&2
  measure redis-nolocks "/slow" "slow-miss" "$(miss_script "nolocks-$round-$$")"
  redis-benchmark -p "$REDIS_PORT" -t get -d 1024 -c "$CONNECTIONS" -n 200000 -q \
    --csv 2>/dev/null | tail -n 1 >>"$RAW/redis-benchmark.csv"
  # The memcached ceiling: gets per second (TPS less the window's sets, over the run).
  timeout 60 taskset -c 1 memcaslap -s "$MEMCACHED" -T 1 -c "$CONNECTIONS" -w 1k -t "${DURATION}s" \
    -F "$RAW/memcaslap.cfg" 2>/dev/null |
    awk '/^cmd_get:/ {gets=$2} /^Run time:/ {sub("s", "", $3); print gets / $3}' >>"$RAW/memcaslap.txt" || true
done
# The raw runs stay for inspection (one line per run: mode, route, req/s, p50, p99, CPU/request,
# origin calls, requests, errors, user CPU/request).
mkdir -p target && cp "$RAW/runs.tsv" target/bench-runs.tsv
: >"$RAW/instructions.tsv"
if [ "$CALLGRIND" != 0 ]; then
  for mode in none memory tiered redis memcached; do
    for route in hello big; do
      echo "callgrind: $mode /$route" >&2
      count_instructions "$mode" "/$route" "$route" || echo "callgrind: $mode /$route not counted" >&2
    done
    echo "callgrind: $mode /slow misses" >&2
    count_instructions "$mode" /slow slow-miss misses ||
      echo "callgrind: $mode /slow misses not counted" >&2
  done
fi
kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
kill "$MEMCACHED_PID"; wait "$MEMCACHED_PID" 2>/dev/null || true
touch "$RAW/memcaslap.txt"
cp "$RAW/instructions.tsv" target/bench-instructions.tsv

python3 - "$RAW/runs.tsv" "$RAW/redis-benchmark.csv" "$OUT" "$DURATION" "$CONNECTIONS" "$REPEAT" "$RAW/instructions.tsv" "$RAW/memcaslap.txt" <<'PY'
import csv, platform, statistics, subprocess, sys, datetime
runs_path, rb_path, out, duration, connections, repeat, instructions_path, memcaslap_path = sys.argv[1:9]
rows = {}
for line in open(runs_path):
    mode, label, rps, p50, p99, cpu, calls, total, errors, user, syscalls = line.rstrip("\n").split("\t")
    rows.setdefault((mode, label), []).append(
        dict(rps=float(rps), p50=float(p50), p99=float(p99), cpu=float(cpu), calls=int(calls), total=int(total), errors=int(errors), user=float(user), syscalls=float(syscalls)))
instructions = {}
for line in open(instructions_path):
    mode, path, count, requests = line.rstrip("\n").split("\t")
    if count and requests and int(requests):
        instructions[(mode, path)] = int(count) / int(requests)
def med(key, mode, label):
    # A value wrk did not print (nan) does not count.
    values = [r[key] for r in rows[(mode, label)] if r[key] == r[key]]
    return statistics.median(values) if values else float("nan")
def paired(key, mode, label):
    # The ratio to the floor round by round (each round measures every mode once).
    pairs = zip(rows[(mode, label)], rows[("none", label)])
    return [m[key] / f[key] for m, f in pairs if f[key] == f[key] and m[key] == m[key] and f[key]]
rb = []
for line in open(rb_path):
    fields = next(csv.reader([line]))
    if fields and fields[0] == "GET":
        rb.append(float(fields[1]))
rb_rps = statistics.median(rb) if rb else float("nan")
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
lines = []
w = lines.append
w("# Benchmarks")
w("")
w(f"Measured by `scripts/bench.sh` on {datetime.date.today()}: {cpu_model}, {subprocess.getoutput('nproc')} cores, "
  f"Linux {platform.release()}. Server (`examples/bench_server`, one Tokio worker) pinned to core 0, "
  f"`wrk -t1 -c{connections} -d{duration}s --latency` pinned to core 1, loopback only; medians of {repeat} runs.")
w("")
w("CPU/request is the server's user+system time (from `/proc/PID/stat`) divided by the requests served; "
  "\"user\" is the user-space part of it (the rest is the kernel's: sockets, epoll). syscalls/request counts the "
  "server's system calls in the measured run (perf, tracepoint `raw_syscalls:sys_enter`).")
w("\"origin calls\" counts the handler runs during the measured run: 0 means every measured request was a hit. "
  "The vs-floor columns are ratios of the medians; the ratios round by round follow the tables.")
w("")
w("| mode | route | requests/s | p50 (µs) | p99 (µs) | CPU/request (µs) | of it user (µs) | syscalls/request | origin calls | vs floor: req/s | vs floor: CPU/request |")
w("|---|---|---|---|---|---|---|---|---|---|---|")
for label in ["hello", "big", "slow", "slow-miss"]:
    for mode in ["none", "memory", "tiered", "redis", "memcached", "nginx"]:
        if (mode, label) not in rows:
            continue
        rps, p50, p99, cpu, user, syscalls = (med(k, mode, label) for k in ["rps", "p50", "p99", "cpu", "user", "syscalls"])
        syscalls_text = "—" if syscalls != syscalls else f"{syscalls:.2f}"
        calls = max(r["calls"] for r in rows[(mode, label)])
        frps, fcpu = med("rps", "none", label), med("cpu", "none", label)
        ratio = "" if mode == "none" else f"{rps / frps:.2f}×"
        cratio = "" if mode == "none" else f"{cpu / fcpu:.2f}×"
        name = {"none": "no cache (floor)", "memory": "MemoryStore", "tiered": "TieredStore (L1 hits)", "redis": "RedisStore", "memcached": "MemcachedStore", "nginx": "nginx proxy_cache (hits)"}[mode]
        route = {"hello": "/hello 1 KiB", "big": "/big 64 KiB", "slow": "/slow 50 ms", "slow-miss": "/slow, every request a miss"}[label]
        calls_text = "—" if mode == "none" else str(calls)
        w(f"| {name} | {route} | {rps:,.0f} | {p50:,.0f} | {p99:,.0f} | {cpu:.2f} | {user:.2f} | {syscalls_text} | {calls_text} | {ratio} | {cratio} |")
w("")
if instructions:
    w("Instructions per request in the server's user space, counted by callgrind (`wrk -t1 -c16`, 3 s after a 2 s "
      "warm-up; the same from run to run, unlike CPU time):")
    w("")
    w("| route | no cache (floor) | MemoryStore | vs floor | TieredStore | vs floor | RedisStore | vs floor | MemcachedStore | vs floor |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    routes = {"hello": "/hello", "big": "/big", "slow-miss": "/slow, every request a miss"}
    for label, route in routes.items():
        floor = instructions.get(("none", label))
        if not floor:
            continue
        cells = [f"{floor:,.0f}"]
        for mode in ["memory", "tiered", "redis", "memcached"]:
            count = instructions.get((mode, label))
            cells += [f"{count:,.0f}", f"{count / floor:.2f}×"] if count else ["—", ""]
        w(f"| {route} | " + " | ".join(cells) + " |")
    w("")
    for label, path in [("hello", "/hello"), ("big", "/big")]:
        floor, hit = instructions.get(("none", label)), instructions.get(("memory", label))
        if floor and hit and ("none", label) in rows and med("user", "none", label) > 0:
            fcpu, fuser = med("cpu", "none", label), med("user", "none", label)
            # The hit's extra instructions at the floor's own user-space rate; the kernel's
            # share (sockets, epoll) is the same for both: the same syscalls for the same bytes.
            estimate = (fcpu + fuser * (hit / floor - 1)) / fcpu
            w(f"Memory hit `{path}`: {hit - floor:+,.0f} instructions per request over the floor. At the floor's "
              f"user-space rate ({floor / fuser:,.0f} instructions/µs in this run) that is {fuser * (hit / floor - 1):.2f} µs "
              f"on the floor's {fcpu:.2f} µs of CPU per request: **{estimate:.2f}×** the floor's CPU/request.")
    w("")
for label, route in [("hello", "/hello"), ("big", "/big")]:
    if ("memory", label) in rows and ("none", label) in rows:
        cpu_ratios, rps_ratios = paired("cpu", "memory", label), paired("rps", "memory", label)
        w(f"Memory hit `{route}`, round by round against the floor of the same round: CPU/request "
          f"{min(cpu_ratios):.2f}×–{max(cpu_ratios):.2f}×, requests/s {min(rps_ratios):.2f}×–{max(rps_ratios):.2f}×.")
w("")
for label, route in [("hello", "/hello"), ("big", "/big")]:
    if ("memory", label) in rows and ("nginx", label) in rows:
        pairs = zip(rows[("memory", label)], rows[("nginx", label)])
        ratios = [m["rps"] / n["rps"] for m, n in pairs if n["rps"]]
        w(f"Memory hit `{route}` against nginx `proxy_cache` hits in the same run (nginx pinned to core 0 as the "
          f"server is, one process): **{med('rps', 'memory', label) / med('rps', 'nginx', label):.2f}×** nginx's requests/s "
          f"(round by round {min(ratios):.2f}×–{max(ratios):.2f}×); CPU/request "
          f"{med('cpu', 'memory', label) / med('cpu', 'nginx', label):.2f}× nginx's.")
w("")
redis_hit = med("rps", "redis", "hello") if ("redis", "hello") in rows else float("nan")
w(f"`redis-benchmark -t get -d 1024 -c {connections}` against the same server, same run (neither pinned): "
  f"**{rb_rps:,.0f} requests/s**; a Redis hit through the layer over HTTP (`/hello`, 1 KiB): {redis_hit:,.0f} requests/s "
  f"= **{redis_hit / rb_rps:.2f}×** of it. The HTTP floor itself is {med('rps', 'none', 'hello') / rb_rps:.2f}× of it: every "
  f"Redis hit costs an HTTP exchange and a Redis exchange on the same two cores.")
w("")
memcaslap = [float(v) for v in open(memcaslap_path).read().split() if v]
if memcaslap and ("memcached", "hello") in rows:
    mc_rps, mc_hit = statistics.median(memcaslap), med("rps", "memcached", "hello")
    w(f"`memcaslap -T 1 -c {connections}` gets (1 KiB values) against the same memcached, same run (pinned to core 1, "
      f"memcached not pinned): **{mc_rps:,.0f} gets/s**; a memcached hit through the layer over HTTP (`/hello`, 1 KiB): "
      f"{mc_hit:,.0f} requests/s = **{mc_hit / mc_rps:.2f}×** of it.")
    w("")
miss_modes = {"memory": "MemoryStore", "tiered": "TieredStore", "redis": "RedisStore", "redis-nolocks": "RedisStore without fill locks (`fill_locks: false`)", "memcached": "MemcachedStore"}
miss_p50 = {m: med("p50", m, "slow-miss") for m in ["none", *miss_modes] if (m, "slow-miss") in rows}
if "none" in miss_p50:
    w("A miss over the origin's own time (p50 of `/slow` with a unique query per request, minus the floor's):")
    for mode, name in miss_modes.items():
        if mode in miss_p50:
            w(f"- {name}: {miss_p50[mode] - miss_p50['none']:+.0f} µs")
    w("")
w("Targets (issue: performance, round 2): a memory hit ≥ 1.1× nginx's requests/s on `/hello` and `/big`, ≤ floor + 2 500 "
  "instructions and ≤ 1.1× the floor's CPU/request; a Redis hit ≥ 0.5× redis-benchmark and ≤ 2× the floor's instructions; "
  "a Redis miss ≤ 6× the floor's instructions and ≤ one round trip + 150 µs over the origin's p50; a memcached hit "
  "≥ 0.5× memcaslap; a memory miss ≤ 2× the floor's instructions and ≤ +100 µs p50.")
w("")
w("Reproduce: `scripts/bench.sh` (installs wrk, redis, memcached, memcaslap, nginx and valgrind when missing); `DURATION`, `CONNECTIONS`, `REPEAT` "
  "to vary, `CALLGRIND=0` to skip the instruction counts. "
  "In-process numbers (no network): `cargo bench --bench hit`, `cargo bench --features redis --bench redis_hit`.")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
