#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start_cluster.sh started (recorded in $UCGM_SLURM_DIR/started), and
# nothing else: a munged or SLURM that was already running when it started is left alone. Cancels the
# test cluster's remaining jobs first. Idempotent: with nothing recorded it does nothing.
set -euo pipefail

DIR=${UCGM_SLURM_DIR:-/tmp/ucgm-slurm}
STARTED="$DIR/started"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "stop_cluster: $*"; }

alive() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

# The recorded pid must still be the same program (pids are reused).
is_prog() { [ "$(cat "/proc/$1/comm" 2>/dev/null || true)" = "$2" ]; }

if [ ! -s "$STARTED" ]; then
  log "nothing recorded in $STARTED; nothing to stop"
  exit 0
fi

if grep -q '^slurmctld ' "$STARTED" && command -v scancel >/dev/null; then
  timeout 10 scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
fi

status=0
# Reverse order of starting: slurmd, slurmctld, munged.
while read -r prog pid; do
  [ -n "${pid:-}" ] || continue
  if ! alive "$pid" || ! is_prog "$pid" "$prog"; then
    log "$prog (pid $pid) is not running"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$prog (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  fi
  if alive "$pid"; then
    log "error: could not stop $prog (pid $pid)" >&2
    status=1
  else
    log "stopped $prog (pid $pid)"
  fi
done < <(tac "$STARTED")

[ $status -eq 0 ] && : >"$STARTED"
exit $status
