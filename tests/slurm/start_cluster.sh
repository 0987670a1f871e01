#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py and CI.
#
#   sudo bash tests/slurm/start_cluster.sh      # install if needed, start, wait until the node is idle
#   sudo bash tests/slurm/stop_cluster.sh       # stop only the daemons this script started
#
# Debian/Ubuntu packages (slurmctld slurmd slurm-client munge), no systemd needed. The node is this
# machine as "localhost", its topology from `slurmd -C`, about 80% of its memory (more drains the node),
# one partition "debug" and fake GPUs (gres gpu, type "fake", device files /dev/null, /dev/zero, ...) so
# that GPU jobs (--gpus=fake:1, --gpus=1, --gres=gpu:1) are accepted; jobs see CUDA_VISIBLE_DEVICES. No slurmdbd: accounting is off, so `sacct` does
# not work and the Snakemake profile polls with `squeue` (MinJobAge=300 keeps finished jobs visible).
#
# Idempotent: a cluster that already answers (ours or someone else's) is left alone. Everything this
# script starts is recorded in $UCGM_SLURM_DIR/started (default /tmp/ucgm-slurm) for stop_cluster.sh.
# Environment: UCGM_SLURM_DIR (state, spool, logs, pid files), UCGM_SLURM_MEM_FRACTION (default 0.8),
# UCGM_SLURM_GPUS (fake GPUs on the node, 1-4, default 2: one per core here, so as many one-GPU jobs run
# side by side as a local run on 2 cores runs),
# UCGM_SLURM_FORCE=1 to replace an /etc/slurm/slurm.conf that this script did not write (kept as .bak).
set -euo pipefail

DIR=${UCGM_SLURM_DIR:-/tmp/ucgm-slurm}
MEM_FRACTION=${UCGM_SLURM_MEM_FRACTION:-0.8}
GPUS=${UCGM_SLURM_GPUS:-2}
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
MARKER="# written by ucgm tests/slurm/start_cluster.sh"
STARTED="$DIR/started"

die() { echo "start_cluster: error: $*" >&2; exit 1; }
log() { echo "start_cluster: $*"; }

# A process is alive if it exists and is not a zombie (killed daemons linger as zombies for a moment).
alive() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1 || true; }

# munge's client retries for seconds when no daemon listens: look for the socket first.
munge_answers() {
  [ -S /run/munge/munge.socket.2 ] && timeout 10 sh -c 'munge -n | unmunge' >/dev/null 2>&1
}

cluster_answers() { command -v sinfo >/dev/null && timeout 5 sinfo -h >/dev/null 2>&1; }

dump_logs() {
  for f in "$DIR"/log/slurmctld.log "$DIR"/log/slurmd.log; do
    [ -f "$f" ] && { echo "---- last lines of $f" >&2; tail -n 25 "$f" >&2; }
  done
  return 0
}

# ---- already up? ------------------------------------------------------------------------------------
# (sinfo takes seconds to give up when no slurmctld listens: skip it when the configuration is ours and
# our slurmctld is not running)
ours_down=0
if [ -f "$CONF" ] && grep -qF "$MARKER" "$CONF" && ! alive "$(cat "$DIR/run/slurmctld.pid" 2>/dev/null || true)"; then
  ours_down=1
fi
if [ $ours_down = 0 ] && cluster_answers; then
  state=$(node_state)
  case "$state" in
    idle|mixed|allocated|completing)
      log "a SLURM cluster already answers (node localhost: $state); nothing to start"
      exit 0 ;;
  esac
fi

case "$GPUS" in 1|2|3|4) ;; *) die "UCGM_SLURM_GPUS must be 1 to 4, not '$GPUS'" ;; esac
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages, writes /etc/slurm and starts daemons)"

# ---- packages -----------------------------------------------------------------------------------------
need=()
for b in slurmctld slurmd sinfo munged; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || need+=("$b")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install slurmctld slurmd slurm-client munge"
  log "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; then
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null \
      || die "apt-get install slurmctld slurmd slurm-client munge failed"
  fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$DIR"/{state,spool,log,run}
touch "$STARTED"

# ---- munge --------------------------------------------------------------------------------------------
if munge_answers; then
  log "munged already answers; not starting another"
else
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  rm -f /run/munge/munged.pid
  # munged daemonises itself and writes /run/munge/munged.pid
  runuser -u munge -- munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do
    munge_answers && break
    sleep 0.1
  done
  munge_answers || die "munged started but does not answer (see /var/log/munge/munged.log)"
  echo "munged $(cat /run/munge/munged.pid)" >>"$STARTED"
  log "munged started (pid $(cat /run/munge/munged.pid))"
fi

# ---- slurm.conf and gres.conf -------------------------------------------------------------------------
mkdir -p /etc/slurm
for f in "$CONF" "$GRES_CONF"; do
  if [ -f "$f" ] && ! grep -qF "$MARKER" "$f"; then
    if [ "${UCGM_SLURM_FORCE:-0}" = 1 ]; then
      cp -p "$f" "$f.bak"
      log "replacing $f (kept as $f.bak)"
    else
      die "$f exists and was not written by this script; set UCGM_SLURM_FORCE=1 to replace it (a .bak is kept)"
    fi
  fi
done

# Topology from slurmd -C: "NodeName=... CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
hw=$(slurmd -C 2>/dev/null | head -n1) || true
[ -n "$hw" ] || die "slurmd -C printed nothing"
topology=$(echo "$hw" | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
total_mem=$(echo "$hw" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
[ -n "$total_mem" ] || die "no RealMemory in: $hw"
real_mem=$(awk -v m="$total_mem" -v f="$MEM_FRACTION" 'BEGIN { printf "%d", m * f }')

cat >"$CONF" <<EOF
$MARKER
# Single-node test cluster: this machine as "localhost", no slurmdbd, one fake GPU.
ClusterName=ucgm-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
ReturnToService=2
SchedulerType=sched/backfill
# Finished jobs stay visible to squeue for 5 minutes: the Snakemake profile polls with squeue.
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 ${topology}RealMemory=$real_mem Gres=gpu:fake:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

# GPUs without a GPU: SLURM only needs one distinct device file per GPU to hand out (without gres.conf
# the node drains, without GresTypes GPU jobs are refused).
devices=(/dev/null /dev/zero /dev/full /dev/random)
{
  echo "$MARKER"
  for dev in "${devices[@]:0:$GPUS}"; do
    echo "NodeName=localhost Name=gpu Type=fake File=$dev"
  done
} >"$GRES_CONF"
log "wrote $CONF (localhost: ${topology}RealMemory=$real_mem of $total_mem MB, gres gpu:fake:$GPUS)"

# ---- daemons ------------------------------------------------------------------------------------------
pid_of() { [ -f "$DIR/run/$1.pid" ] && cat "$DIR/run/$1.pid" || true; }

ctld=$(pid_of slurmctld)
if alive "$ctld"; then
  log "slurmctld already running (pid $ctld)"
else
  # A drained node stays drained across restarts until the state folder is wiped.
  rm -rf "${DIR:?}/state" && mkdir -p "$DIR/state"
  slurmctld -c -f "$CONF" || { dump_logs; die "slurmctld did not start"; }
  for _ in $(seq 50); do alive "$(pid_of slurmctld)" && break; sleep 0.1; done
  alive "$(pid_of slurmctld)" || { dump_logs; die "slurmctld exited; see $DIR/log/slurmctld.log"; }
  echo "slurmctld $(pid_of slurmctld)" >>"$STARTED"
  log "slurmctld started (pid $(pid_of slurmctld))"
fi

slurmd_pid=$(pid_of slurmd)
if alive "$slurmd_pid"; then
  log "slurmd already running (pid $slurmd_pid)"
else
  slurmd -N localhost -f "$CONF" || { dump_logs; die "slurmd did not start"; }
  for _ in $(seq 50); do alive "$(pid_of slurmd)" && break; sleep 0.1; done
  alive "$(pid_of slurmd)" || { dump_logs; die "slurmd exited; see $DIR/log/slurmd.log"; }
  echo "slurmd $(pid_of slurmd)" >>"$STARTED"
  log "slurmd started (pid $(pid_of slurmd))"
fi

# ---- wait until the node is idle ----------------------------------------------------------------------
state=""
resumed=0
for _ in $(seq 300); do
  state=$(node_state)
  [ "$state" = idle ] && break
  case "$state" in
    drain*|down*)  # left over from an earlier run of our daemons: put the node back once
      if [ $resumed = 0 ]; then
        log "node localhost is $state; resuming it"
        scontrol update NodeName=localhost State=RESUME || true
        resumed=1
      fi ;;
  esac
  sleep 0.1
done
if [ "$state" != idle ]; then
  scontrol show node localhost >&2 || true
  dump_logs
  die "node localhost is '${state:-not answering}' after 30 s, not idle"
fi
log "cluster up: $(sinfo -h -N -o '%N %P %T cpus=%c mem=%m gres=%G')"
