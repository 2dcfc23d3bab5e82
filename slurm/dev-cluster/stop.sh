#!/usr/bin/env bash
# Stop the dev cluster that start.sh started under STATE_DIR: each daemon by its pid file, in
# the reverse order of starting, waiting for each to exit. Nothing else is touched, so other
# users' munge, MariaDB or SLURM on the same machine keep running. Idempotent.
set -euo pipefail

STATE=$(realpath -m "${1:?usage: stop.sh STATE_DIR}")
RUN=$STATE/run

stop() { # stop PID_FILE
  local pid_file=$1 pid
  [[ -s $pid_file ]] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pid_file"
}

shopt -s nullglob
for pid_file in "$RUN"/slurmd-*.pid; do
  stop "$pid_file"
done
stop "$RUN/slurmctld.pid"
stop "$RUN/slurmdbd.pid"
stop "$RUN/mariadbd.pid"
stop "$RUN/munged.pid"
echo "slurm dev cluster under $STATE stopped"
