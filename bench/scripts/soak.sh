#!/usr/bin/env bash
# The fault-injection soak (README "Soak"): builds shardlogd and shardlog-bench, then runs
# `shardlog-bench soak` with the arguments given. Loop mounts for disk faults need root;
# without them the soak skips disk faults and says so.
#
#   bench/scripts/soak.sh                       # 2 minutes, every fault kind, seed 1
#   bench/scripts/soak.sh --seed 7 --faults kill,stop,partition
#   bench/scripts/soak.sh --long                # the long run: 1000 faults, shorter holds
#
# Environment: SOAK_PROFILE (debug | release, default release), CARGO_TARGET_DIR.
# Exit status: the soak's (0: no violation; 1: violations or a failed run).
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/../.." && pwd -P)"
profile="${SOAK_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-$repo_root/target}"

args=()
for arg in "$@"; do
  if [ "$arg" = "--long" ]; then
    args+=(--max-faults 1000 --duration 86400 --hold-ms 200..1500 --gap-ms 100..600)
  else
    args+=("$arg")
  fi
done

build=(cargo build -p shardlog-net --bin shardlogd -p shardlog-bench)
[ "$profile" = release ] && build+=(--release)
(cd "$repo_root" && "${build[@]}") >&2

# Defaults the caller did not give.
given=" ${args[*]+"${args[*]}"} "
[[ "$given" == *" --dir"* ]] || args+=(--dir "$target/soak")
[[ "$given" == *" --shardlogd"* ]] || args+=(--shardlogd "$target/$profile/shardlogd")

exec "$target/$profile/shardlog-bench" soak "${args[@]}"
