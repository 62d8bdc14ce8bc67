#!/usr/bin/env bash
# Counts `shardlog consume --follow` processes that stop making progress (issue 9, item 6).
#
# Starts a one-node shardlogd (as scripts/run.sh does, on its own port and data directory),
# a topic of one partition, FOLLOWERS `shardlog consume --follow --partition 0 --from end`
# processes, and `shardlog-bench e2e` producing into the topic for DURATION seconds. Every
# second it samples each follower's output size; a follower whose output has not grown for
# STALL_S seconds while another follower has printed more counts as stalled. IDLE_S seconds
# after the producer stops (the followers idle at the tail meanwhile), every follower gets
# SIGTERM; one that has not exited STOP_S seconds later is counted as deaf to SIGTERM (then
# killed): a follower exits within one fetch (at most 500 ms) of SIGTERM unless its executor
# is stuck. RUNS repeats the whole thing.
#
#   bench/scripts/follow-stall.sh                 # 3 runs x 100 followers x 20 s
#   RUNS=5 FOLLOWERS=100 DURATION=20 bench/scripts/follow-stall.sh
#   KEEP_STALLED=1 bench/scripts/follow-stall.sh  # stop at the first stalled or deaf follower,
#                                                 # leave it (and the server) running, print pids
#
# Environment: RUNS (3), FOLLOWERS (100), DURATION (20), STALL_S (5), STOP_S (5), IDLE_S (10),
# PORT (24190), WORK_DIR (target/follow-stall), BIN (target/release), KEEP_STALLED (0),
# RECORD_SIZE (1024, bytes per record), SHARDLOGD_ARGS (extra shardlogd flags),
# E2E_ARGS (extra shardlog-bench e2e flags, e.g. "--rate 5000"; default: closed loop).
# Prints one line per run and a total; exit 0 when no follower stalled, 1 otherwise.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/../.." && pwd -P)"
runs="${RUNS:-3}"
followers="${FOLLOWERS:-100}"
duration="${DURATION:-20}"
stall_s="${STALL_S:-5}"
stop_s="${STOP_S:-5}"
idle_s="${IDLE_S:-10}"
port="${PORT:-24190}"
work="${WORK_DIR:-$repo_root/target/follow-stall}"
bin="${BIN:-$repo_root/target/release}"
keep_stalled="${KEEP_STALLED:-0}"
read -r -a e2e_args <<<"${E2E_ARGS:-}"
broker="127.0.0.1:$port"

server_pid=""
follower_pids=()
cleanup() {
  for pid in "${follower_pids[@]}"; do
    if [[ "$keep_stalled" != 1 ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  if [[ -n "$server_pid" && "$keep_stalled" != 1 ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for b in shardlogd shardlog shardlog-bench; do
  [[ -x "$bin/$b" ]] || { echo "follow-stall.sh: $bin/$b missing (cargo build --release)" >&2; exit 2; }
done

# glommio listeners use SO_REUSEPORT: a stale server on the port would share it silently.
if ss -Hltn "sport = :$port" | grep -q .; then
  echo "follow-stall.sh: something already listens on $broker" >&2
  exit 2
fi

total_stalled=0
total_deaf=0
for run in $(seq 1 "$runs"); do
  dir="$work/run-$run"
  rm -rf "$dir"
  mkdir -p "$dir/data" "$dir/out"
  "$bin/shardlogd" --data-dir "$dir/data" --listen "$broker" --kafka-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 ${SHARDLOGD_ARGS:-} 2>"$dir/server.log" &
  server_pid=$!
  for _ in $(seq 1 100); do
    grep -q "ready" "$dir/server.log" 2>/dev/null && break
    sleep 0.1
  done
  "$bin/shardlog" topic create --brokers "$broker" --partitions 1 t >/dev/null
  follower_pids=()
  for i in $(seq 1 "$followers"); do
    "$bin/shardlog" consume --brokers "$broker" --topic t --partition 0 --from end --follow \
      >>"$dir/out/$i" 2>"$dir/out/$i.err" &
    follower_pids+=("$!")
  done
  sleep 2
  "$bin/shardlog-bench" e2e --brokers "$broker" --topic t --partitions 1 \
    --duration "$duration" --record-size "${RECORD_SIZE:-1024}" ${e2e_args[@]+"${e2e_args[@]}"} >"$dir/e2e.log" 2>&1 &
  bench_pid=$!
  # Per follower: last size and the second it last grew.
  declare -A last_size=() last_growth=()
  declare -A stalled=()
  start=$SECONDS
  while kill -0 "$bench_pid" 2>/dev/null; do
    sleep 1
    now=$((SECONDS - start))
    max_size=0
    # Outputs are opened O_APPEND and emptied after each sample (one stat and one truncate
    # for all), so the disk never fills; last_size sums what the samples found.
    declare -A sample=()
    while read -r size name; do
      sample[${name##*/}]=$size
    done < <(cd "$dir/out" && stat -c '%s %n' $(seq 1 "$followers") 2>/dev/null || true)
    (cd "$dir/out" && truncate -s 0 $(seq 1 "$followers") 2>/dev/null || true)
    for i in $(seq 1 "$followers"); do
      size=${sample[$i]:-0}
      if ((size > 0)); then
        last_size[$i]=$((${last_size[$i]:-0} + size))
        last_growth[$i]=$now
      fi
      last_size[$i]=${last_size[$i]:-0}
      ((last_size[$i] > max_size)) && max_size=${last_size[$i]}
    done
    unset sample
    # Behind the others (so records were there for it) and silent for STALL_S seconds.
    for i in $(seq 1 "$followers"); do
      if ((now - ${last_growth[$i]:-0} >= stall_s && last_size[$i] < max_size)) \
        && [[ -z "${stalled[$i]:-}" ]]; then
        stalled[$i]=$now
        echo "run $run: follower $i (pid ${follower_pids[$((i - 1))]}) silent since ${last_growth[$i]:-0}s (now ${now}s, ${last_size[$i]} of $max_size bytes)" >&2
      fi
    done
  done
  wait "$bench_pid" || echo "run $run: shardlog-bench e2e failed (see $dir/e2e.log)" >&2
  # Idle followers long-poll the tail (a fetch every 500 ms each); a stall there shows as
  # deafness to the SIGTERM below.
  sleep "$idle_s"
  # A follower that stalled and later got going again still counts.
  n_stalled=${#stalled[@]}
  deaf=0
  kept=()
  for i in $(seq 1 "$followers"); do
    pid=${follower_pids[$((i - 1))]}
    if [[ "$keep_stalled" == 1 && -n "${stalled[$i]:-}" ]]; then
      kept+=("$pid")
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + stop_s))
  for i in $(seq 1 "$followers"); do
    pid=${follower_pids[$((i - 1))]}
    [[ "$keep_stalled" == 1 && -n "${stalled[$i]:-}" ]] && continue
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      deaf=$((deaf + 1))
      echo "run $run: follower $i (pid $pid) still running ${stop_s}s after SIGTERM" >&2
      if [[ "$keep_stalled" == 1 ]]; then
        kept+=("$pid")
        continue
      fi
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  follower_pids=()
  if [[ "$keep_stalled" == 1 && ${#kept[@]} -gt 0 ]]; then
    echo "run $run: kept stalled or deaf followers: ${kept[*]} (server pid $server_pid)"
    server_pid=""
    exit 1
  fi
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  rm -rf "$dir/data" "$dir/out"
  records=$(awk '/^  consume / {print $4 " records consumed by the bench, " $5 " records/s"}' "$dir/e2e.log")
  echo "run $run: $followers followers, $n_stalled stalled, $deaf deaf to SIGTERM ($records)"
  total_stalled=$((total_stalled + n_stalled))
  total_deaf=$((total_deaf + deaf))
  unset last_size last_growth stalled
done
echo "total: $runs runs x $followers followers: $total_stalled stalled, $total_deaf deaf to SIGTERM"
[[ $total_stalled == 0 && $total_deaf == 0 ]]
