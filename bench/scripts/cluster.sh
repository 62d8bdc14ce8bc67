#!/usr/bin/env bash
# A local shardlogd cluster on 127.0.0.1, for trying cluster mode and for tests that
# inject faults (kill, pause) into one node at a time.
#
#   bench/scripts/cluster.sh start N      launch nodes 0..N-1, wait until every one is
#                                         ready, print the brokers list on stdout
#   bench/scripts/cluster.sh stop         SIGTERM every node (SIGKILL after 15 s)
#   bench/scripts/cluster.sh kill ID      SIGKILL one node
#   bench/scripts/cluster.sh pause ID     SIGSTOP one node
#   bench/scripts/cluster.sh resume ID    SIGCONT one node
#   bench/scripts/cluster.sh restart ID   start a node that is down again, wait until ready
#   bench/scripts/cluster.sh status       one line per node: id, port, pid, state
#   bench/scripts/cluster.sh brokers      print the brokers list (HOST:PORT,...)
#
# Environment:
#   CLUSTER_DIR        where everything lives (default target/cluster)
#   CLUSTER_BASE_PORT  node i listens for clients on 127.0.0.1:BASE+i (default 19100) and
#                      for its peers on 127.0.0.1:BASE+100+i
#   SHARDLOGD          the binary (default $CARGO_TARGET_DIR/release/shardlogd, target/ if
#                      unset; built with cargo when missing)
#   CLUSTER_ARGS       extra shardlogd flags for every node, split on whitespace
#                      (e.g. "--flush always --shards 2")
# Relative CLUSTER_DIR and SHARDLOGD are taken from the current directory; the defaults
# are under the repository root. `start` remembers the node count, port, binary and args
# in $CLUSTER_DIR/cluster.env; the other commands read them from there (the environment
# no longer matters to them). Node i keeps its data in $CLUSTER_DIR/node-i/data, appends
# its stderr to $CLUSTER_DIR/node-i/log and its pid is in $CLUSTER_DIR/node-i/pid. The
# nodes prove who they are to each other with the secret in $CLUSTER_DIR/cluster.secret
# (made by the first start, readable by this user only). Data survives stop and start;
# remove $CLUSTER_DIR to begin empty.
#
# A pid counts only while /proc says that process is shardlogd on this node's data
# directory, so a stale pid file never gets an unrelated process signalled.
#
# Exit codes: 0 ok, 1 failure (a node did not come up, a node in the wrong state, no
# cluster), 2 usage.
set -euo pipefail

readonly READY_LINE="shardlogd ready: listening on "
readonly READY_TIMEOUT_S=30
readonly STOP_TIMEOUT_S=15
readonly HOST=127.0.0.1

readonly SYNOPSIS="usage: cluster.sh start N | stop | kill ID | pause ID | resume ID | restart ID | status | brokers"

usage() {
  echo "$SYNOPSIS"
  cat <<'EOF'

  start N      launch nodes 0..N-1 in the background, wait (30 s) until each is ready
               (its ready line, then /v1/ready: registered with the controller),
               print the brokers list (127.0.0.1:PORT,...) on stdout
  stop         SIGTERM every node, wait; SIGKILL what still runs after 15 s
  kill ID      SIGKILL node ID
  pause ID     SIGSTOP node ID
  resume ID    SIGCONT node ID
  restart ID   start node ID again (it must be down) with the same args; wait until ready
  status       one line per node: id, port, pid, state (running, paused, stopped)
  brokers      print the brokers list

environment: CLUSTER_DIR (target/cluster), CLUSTER_BASE_PORT (19100; node i listens on
BASE+i for clients, BASE+100+i for peers), SHARDLOGD (target/release/shardlogd, built if
missing), CLUSTER_ARGS (extra
shardlogd flags for every node, e.g. "--flush always --shards 2")
exit codes: 0 ok, 1 failure, 2 usage
EOF
}

usage_error() {
  echo "cluster.sh: $*" >&2
  echo "$SYNOPSIS (--help for more)" >&2
  exit 2
}

fail() {
  echo "cluster.sh: $*" >&2
  exit 1
}

caller_dir="$PWD"
repo_root="$(cd "$(dirname "$0")/../.." && pwd -P)"

# An absolute path: relative ones are taken from $2.
absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$2/$1" ;;
  esac
}

if [ -n "${CLUSTER_DIR:-}" ]; then
  cluster_dir="$(absolute "$CLUSTER_DIR" "$caller_dir")"
else
  cluster_dir="$repo_root/target/cluster"
fi
# One spelling of the directory, whatever the current directory or symlinks: node_pid
# matches it against the --data-dir a process runs with.
canonical_cluster_dir() {
  cluster_dir="$(cd "$cluster_dir" && pwd -P)"
  cluster_env="$cluster_dir/cluster.env"
}
cluster_env="$cluster_dir/cluster.env"
if [ -d "$cluster_dir" ]; then canonical_cluster_dir; fi

# Set by load_cluster (from cluster.env) or by cmd_start.
nodes=""
base_port=""
shardlogd=""
cluster_args=""
extra_args=()

load_cluster() {
  [ -f "$cluster_env" ] || fail "no cluster in $cluster_dir (run: cluster.sh start N)"
  local CLUSTER_NODES="" CLUSTER_BASE_PORT="" SHARDLOGD="" CLUSTER_ARGS=""
  # shellcheck source=/dev/null
  . "$cluster_env"
  nodes="$CLUSTER_NODES"
  base_port="$CLUSTER_BASE_PORT"
  shardlogd="$SHARDLOGD"
  cluster_args="$CLUSTER_ARGS"
  is_count "$nodes" || fail "$cluster_env: bad CLUSTER_NODES '$nodes'"
  is_count "$base_port" || fail "$cluster_env: bad CLUSTER_BASE_PORT '$base_port'"
  read -r -a extra_args <<<"$cluster_args"
}

save_cluster() {
  mkdir -p "$cluster_dir"
  {
    echo "# written by cluster.sh start; read by its other commands"
    printf 'CLUSTER_NODES=%q\n' "$nodes"
    printf 'CLUSTER_BASE_PORT=%q\n' "$base_port"
    printf 'SHARDLOGD=%q\n' "$shardlogd"
    printf 'CLUSTER_ARGS=%q\n' "$cluster_args"
  } >"$cluster_env.tmp"
  mv "$cluster_env.tmp" "$cluster_env"
}

# A positive decimal number without leading zeros.
is_count() {
  [[ "$1" =~ ^[1-9][0-9]{0,5}$ ]]
}

node_dir() { printf '%s/node-%s\n' "$cluster_dir" "$1"; }
node_port() { echo $((base_port + $1)); }
# Where node $1's peer listener is: only nodes connect there.
peer_port() { echo $((base_port + 100 + $1)); }
# Where node $1's Kafka listener is.
kafka_port() { echo $((base_port + 200 + $1)); }
# Where node $1's admin HTTP listener (/metrics, /v1/health, /v1/ready) is.
admin_port() { echo $((base_port + 300 + $1)); }
secret_file() { printf '%s/cluster.secret\n' "$cluster_dir"; }

# Every node's address, comma-separated, each prefixed with "$1" (a format taking the id),
# its port from the function named $2.
node_list() {
  local i list=""
  for ((i = 0; i < nodes; i++)); do
    # shellcheck disable=SC2059 # the prefix is a format on purpose
    list="${list:+$list,}$(printf "$1" "$i")$HOST:$("$2" "$i")"
  done
  echo "$list"
}

brokers_list() { node_list "" node_port; }
peers_list() { node_list "%s=" peer_port; }

# The cluster secret, made once: 48 random bytes, base64, readable by this user only.
ensure_secret() {
  local file
  file="$(secret_file)"
  [ -s "$file" ] && return 0
  (umask 077 && head -c 48 /dev/urandom | base64 >"$file.tmp" && mv "$file.tmp" "$file")
}

# The node id argument: a number below the node count.
node_id_arg() {
  [[ "$1" =~ ^(0|[1-9][0-9]*)$ ]] || usage_error "node id '$1' is not a number"
  [ "$1" -lt "$nodes" ] || usage_error "node id $1: the cluster has nodes 0 to $((nodes - 1))"
  echo "$1"
}

# The one-letter state of PID from /proc/PID/stat (empty if there is no such process).
proc_state() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  # Field 2 is "(comm)" and comm may hold spaces: the state follows the last ')'.
  stat="${stat##*) }"
  echo "${stat%% *}"
}

# Whether PID exists and has not exited (a zombie has: nobody may have reaped it yet).
pid_alive() {
  case "$(proc_state "$1")" in
    "" | Z | X | x) return 1 ;;
    *) return 0 ;;
  esac
}

# The pid in node $1's pid file, as written (not checked).
pid_file_pid() {
  local pid_file
  pid_file="$(node_dir "$1")/pid"
  [ -f "$pid_file" ] || return 0
  cat "$pid_file"
}

# The pid of node $1 if that process is alive (not a zombie) and is shardlogd on this
# node's data directory; nothing otherwise.
node_pid() {
  local pid cmdline
  pid="$(pid_file_pid "$1")"
  [[ "$pid" =~ ^[1-9][0-9]*$ ]] || return 0
  pid_alive "$pid" || return 0
  cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 0
  grep -qxF -- "$(node_dir "$1")/data" <<<"$cmdline" || return 0
  echo "$pid"
}

# running, paused or stopped.
node_state() {
  local pid
  pid="$(node_pid "$1")"
  if [ -z "$pid" ]; then
    echo stopped
    return
  fi
  case "$(proc_state "$pid")" in
    T | t) echo paused ;;
    *) echo running ;;
  esac
}

# Launches node $1 in its own session (so it outlives this script and a Ctrl-C here),
# appending to its log. Prints the log's size before the launch: the ready line must
# come after it.
launch_node() {
  local id="$1" dir log offset pid
  dir="$(node_dir "$id")"
  log="$dir/log"
  mkdir -p "$dir/data"
  touch "$log"
  offset="$(wc -c <"$log")"
  echo "== cluster.sh: node $id starting at $(date '+%Y-%m-%d %H:%M:%S')" >>"$log"
  # A background job of a script is never a process group leader, so setsid execs rather
  # than forks, and $! is shardlogd's pid. NO_COLOR: the log is a file, read with grep.
  NO_COLOR=1 setsid nohup "$shardlogd" \
    --node-id "$id" \
    --listen "$HOST:$(node_port "$id")" \
    --kafka-listen "$HOST:$(kafka_port "$id")" \
    --admin-listen "$HOST:$(admin_port "$id")" \
    --data-dir "$dir/data" \
    --peers "$(peers_list)" \
    --cluster-secret-file "$(secret_file)" \
    "${extra_args[@]}" \
    </dev/null >>"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$dir/pid"
  echo "$offset"
}

# Waits until every node in $1 (space-separated "id:log_offset" pairs) printed its ready
# line after its offset. On a timeout or an exit, prints the node's log tail, stops the
# nodes of $1 and fails.
wait_ready() {
  local pending=() still=() entry deadline id offset log
  read -r -a pending <<<"$1"
  deadline=$((SECONDS + READY_TIMEOUT_S))
  while [ ${#pending[@]} -gt 0 ]; do
    still=()
    for entry in "${pending[@]}"; do
      id="${entry%%:*}"
      offset="${entry#*:}"
      log="$(node_dir "$id")/log"
      # Not `grep -q`: it would exit at the match and, with more than a pipe's worth of
      # log after it, `tail` would die of SIGPIPE and fail the pipeline (pipefail).
      # Ready: the listeners are open (the ready line) and the controller has registered
      # this run (/v1/ready), so a previous run no longer counts as live.
      if tail -c "+$((offset + 1))" "$log" | grep -F "$READY_LINE" >/dev/null &&
        admin_ready "$id"; then
        echo "cluster.sh: node $id ready on $HOST:$(node_port "$id") (pid $(node_pid "$id"))" >&2
        continue
      fi
      # Not node_pid: until setsid and nohup have exec'd, the process is not shardlogd yet.
      if ! pid_alive "$(pid_file_pid "$id")"; then
        start_failed "$1" "$id" "node $id exited before it was ready"
      elif [ "$SECONDS" -ge "$deadline" ]; then
        start_failed "$1" "$id" "node $id not ready after ${READY_TIMEOUT_S} s"
      fi
      still+=("$entry")
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -eq 0 ] || sleep 0.1
  done
}

# Whether node $1's /v1/ready answers 200 (bash's /dev/tcp: no curl needed). A node
# whose admin port refuses connections has no admin listener (shardlogd opens it before
# printing its ready line): its ready line is all there is to wait for.
admin_ready() {
  local status=""
  if ! { exec 3<>"/dev/tcp/$HOST/$(admin_port "$1")"; } 2>/dev/null; then
    return 0
  fi
  {
    printf 'GET /v1/ready HTTP/1.1\r\nHost: cluster.sh\r\n\r\n' >&3 &&
      read -r -t 2 _ status _ <&3
  } 2>/dev/null || true
  exec 3>&-
  [ "$status" = 200 ]
}

start_failed() {
  local entries=() ids=() id="$2" why="$3" entry
  read -r -a entries <<<"$1"
  {
    echo "cluster.sh: $why; the end of $(node_dir "$id")/log:"
    tail -n 30 "$(node_dir "$id")/log" | sed 's/^/    /'
    echo "cluster.sh: stopping the nodes this command started"
  } >&2
  for entry in "${entries[@]}"; do
    ids+=("${entry%%:*}")
  done
  stop_nodes "${ids[@]}"
  exit 1
}

# SIGTERM the nodes given (SIGCONT too, so a paused one sees it), wait for them to exit,
# SIGKILL whatever still runs after STOP_TIMEOUT_S.
stop_nodes() {
  local id pid deadline left
  for id in "$@"; do
    pid="$(node_pid "$id")"
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  while :; do
    left=()
    for id in "$@"; do
      [ -z "$(node_pid "$id")" ] || left+=("$id")
    done
    [ ${#left[@]} -gt 0 ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || break
    sleep 0.1
  done
  for id in "${left[@]}"; do
    pid="$(node_pid "$id")"
    [ -n "$pid" ] || continue
    echo "cluster.sh: node $id (pid $pid) still up after ${STOP_TIMEOUT_S} s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_state "$id" stopped
  done
}

# Waits (up to 5 s) until node $1 is in state $2.
wait_state() {
  local i
  for ((i = 0; i < 50; i++)); do
    [ "$(node_state "$1")" != "$2" ] || return 0
    sleep 0.1
  done
  fail "node $1 is $(node_state "$1"), not $2, 5 s after the signal"
}

# The binary to run: $SHARDLOGD, else the release build, built if missing.
resolve_binary() {
  if [ -n "${SHARDLOGD:-}" ]; then
    shardlogd="$(absolute "$SHARDLOGD" "$caller_dir")"
    [ -x "$shardlogd" ] || fail "SHARDLOGD=$SHARDLOGD: no executable there"
    return
  fi
  local target
  target="$(absolute "${CARGO_TARGET_DIR:-target}" "$repo_root")"
  shardlogd="$target/release/shardlogd"
  if [ ! -x "$shardlogd" ]; then
    echo "cluster.sh: building $shardlogd" >&2
    (cd "$repo_root" && cargo build --release -p shardlog-net --bin shardlogd) >&2 ||
      fail "cargo build failed"
  fi
  [ -x "$shardlogd" ] || fail "$shardlogd missing after the build"
}

cmd_start() {
  [ $# -eq 1 ] || usage_error "start takes the node count"
  is_count "$1" || usage_error "node count '$1' is not a positive number"
  local id launched="" offset
  if [ -f "$cluster_env" ]; then
    load_cluster
    for ((id = 0; id < nodes; id++)); do
      [ "$(node_state "$id")" = stopped ] ||
        fail "node $id of the cluster in $cluster_dir is up (pid $(node_pid "$id")); run: cluster.sh stop"
    done
  fi
  nodes="$1"
  base_port="${CLUSTER_BASE_PORT:-19100}"
  is_count "$base_port" || usage_error "CLUSTER_BASE_PORT '$base_port' is not a port"
  [ $((base_port + 100 + nodes - 1)) -le 65535 ] ||
    usage_error "ports $base_port to $((base_port + 100 + nodes - 1)) go past 65535"
  cluster_args="${CLUSTER_ARGS:-}"
  read -r -a extra_args <<<"$cluster_args"
  resolve_binary
  mkdir -p "$cluster_dir"
  canonical_cluster_dir
  save_cluster
  ensure_secret
  for ((id = 0; id < nodes; id++)); do
    offset="$(launch_node "$id")"
    launched="$launched $id:$offset"
  done
  wait_ready "$launched"
  brokers_list
}

cmd_restart() {
  local id pid offset
  id="$(node_id_arg "$@")"
  pid="$(node_pid "$id")"
  [ -z "$pid" ] || fail "node $id is $(node_state "$id") (pid $pid); kill or stop it first"
  [ -x "$shardlogd" ] || fail "$shardlogd (from $cluster_env) is missing"
  wait_port_free "$id"
  offset="$(launch_node "$id")"
  wait_ready "$id:$offset"
}

# A killed node's ports may accept connections for a few ms after its process is gone
# (the kernel tears its io_uring down late); shardlogd refuses a port where something
# answers. Waits up to 2 s for each to go quiet.
wait_port_free() {
  local port tries
  for port in "$(node_port "$1")" "$(peer_port "$1")" "$(kafka_port "$1")" "$(admin_port "$1")"; do
    tries=0
    while (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; do
      tries=$((tries + 1))
      [ "$tries" -lt 200 ] || fail "port $port still answers; is another server on it?"
      sleep 0.01
    done
  done
}

# Sends signal $1 to node $2 and waits until it is in state $3.
signal_node() {
  local signal="$1" id="$2" want="$3" pid
  pid="$(node_pid "$id")"
  [ -n "$pid" ] || fail "node $id is not running"
  kill "-$signal" "$pid"
  wait_state "$id" "$want"
  echo "cluster.sh: node $id (pid $pid): SIG$signal, now $want" >&2
}

cmd_status() {
  local id pid
  printf 'node\tport\tpid\tstate\n'
  for ((id = 0; id < nodes; id++)); do
    pid="$(node_pid "$id")"
    printf '%s\t%s\t%s\t%s\n' "$id" "$(node_port "$id")" "${pid:--}" "$(node_state "$id")"
  done
}

main() {
  [ $# -ge 1 ] || usage_error "no command"
  local command="$1" id ids=()
  shift
  case "$command" in
    kill | pause | resume | restart)
      [ $# -eq 1 ] || usage_error "$command takes one node id"
      ;;
  esac
  case "$command" in
    -h | --help | help)
      usage
      ;;
    start)
      cmd_start "$@"
      ;;
    stop)
      [ $# -eq 0 ] || usage_error "stop takes no arguments"
      if [ ! -f "$cluster_env" ]; then
        echo "cluster.sh: no cluster in $cluster_dir; nothing to stop" >&2
        return 0
      fi
      load_cluster
      for ((id = 0; id < nodes; id++)); do
        [ -z "$(node_pid "$id")" ] || ids+=("$id")
      done
      if [ ${#ids[@]} -eq 0 ]; then
        echo "cluster.sh: no node of $cluster_dir is up" >&2
        return 0
      fi
      stop_nodes "${ids[@]}"
      echo "cluster.sh: stopped node(s) ${ids[*]}" >&2
      ;;
    kill)
      load_cluster
      id="$(node_id_arg "$@")"
      signal_node KILL "$id" stopped
      ;;
    pause)
      load_cluster
      id="$(node_id_arg "$@")"
      signal_node STOP "$id" paused
      ;;
    resume)
      load_cluster
      id="$(node_id_arg "$@")"
      [ "$(node_state "$id")" = paused ] || fail "node $id is $(node_state "$id"), not paused"
      signal_node CONT "$id" running
      ;;
    restart)
      load_cluster
      cmd_restart "$@"
      ;;
    status)
      [ $# -eq 0 ] || usage_error "status takes no arguments"
      load_cluster
      cmd_status
      ;;
    brokers)
      [ $# -eq 0 ] || usage_error "brokers takes no arguments"
      load_cluster
      brokers_list
      ;;
    *)
      usage_error "unknown command '$command'"
      ;;
  esac
}

main "$@"
