#!/usr/bin/env bash
# Start a real SLURM with accounting on this machine, everything under STATE_DIR:
#   munged -> MariaDB -> slurmdbd -> slurmctld -> one slurmd per virtual node.
#
# Usage: start.sh STATE_DIR        then: export SLURM_CONF=STATE_DIR/etc/slurm.conf
#
# The machine is split into CTRAIN_SLURM_NODES (default 2) virtual nodes <host>-n1, <host>-n2, ...
# Each slurmd runs in its own UTS namespace (unshare --uts) under its node's host name, so a
# job of two nodes really gets two hosts as far as SLURM, submitit and the store's `host`
# column are concerned; they share the network, so jobs must use distinct ports per task.
# The node names resolve to 127.0.0.1 through NodeAddr only: nothing in /etc is touched.
#
# Idempotent: a daemon whose pid file names a live process is left alone. Needs root.
set -euo pipefail

STATE=$(realpath -m "${1:?usage: start.sh STATE_DIR}")
NODES=${CTRAIN_SLURM_NODES:-2}
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
CPUS_PER_NODE=$((CPUS / NODES))
MEM_PER_NODE=$((MEM_MB * 8 / 10 / NODES))
if ((CPUS_PER_NODE < 1)); then
  echo "start.sh: $CPUS CPUs cannot make $NODES nodes (set CTRAIN_SLURM_NODES lower)" >&2
  exit 1
fi
CTLD_PORT=${CTRAIN_SLURM_PORT:-16817}
DBD_PORT=$((CTLD_PORT + 1))
DB_PORT=$((CTLD_PORT + 2))
SLURMD_PORT=$((CTLD_PORT + 3)) # node i listens on SLURMD_PORT + i - 1
DB_PASSWORD=ctrain-dev
export PATH="$PATH:/usr/sbin:/sbin"

ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log
mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/munge" "$STATE/ctld" "$STATE/spool"
export SLURM_CONF=$ETC/slurm.conf
MUNGE_SOCKET=$RUN/munge/munge.socket

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "start.sh: timed out waiting for $what (logs in $LOG)" >&2
      exit 1
    fi
    sleep 0.2
  done
}

# munge: its own key; a 0700 socket directory fails, so 0755.
mkdir -p "$RUN/munge" && chmod 0755 "$RUN/munge"
if [[ ! -s $STATE/munge/munge.key ]]; then
  chmod 0700 "$STATE/munge"
  head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
  chmod 0400 "$STATE/munge/munge.key"
fi
if ! alive "$RUN/munged.pid"; then
  munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$STATE/munge/seed"
fi

# MariaDB for slurmdbd, as root (a pytest tmp dir is not traversable by the mysql user).
if [[ ! -d $STATE/mysql/mysql ]]; then
  mariadb-install-db --user=root --datadir="$STATE/mysql" \
    --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1
fi
if ! alive "$RUN/mariadbd.pid"; then
  setsid mariadbd --user=root --datadir="$STATE/mysql" --socket="$RUN/mysqld.sock" \
    --pid-file="$RUN/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --innodb-buffer-pool-size=128M --log-error="$LOG/mariadbd.log" </dev/null >/dev/null 2>&1 &
  wait_for 60 MariaDB mariadb --socket="$RUN/mysqld.sock" -e "SELECT 1"
fi
mariadb --socket="$RUN/mysqld.sock" -e "
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# Configuration, regenerated while the SLURM daemons are down (it follows the machine).
if ! alive "$RUN/slurmctld.pid"; then
  node_lines=""
  node_names=""
  for i in $(seq 1 "$NODES"); do
    node_lines+="NodeName=$HOST-n$i NodeHostname=$HOST-n$i NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + i - 1)) CPUs=$CPUS_PER_NODE Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS_PER_NODE ThreadsPerCore=1 RealMemory=$MEM_PER_NODE State=UNKNOWN"$'\n'
    node_names+="${node_names:+,}$HOST-n$i"
  done
  cat >"$ETC/slurm.conf" <<EOF
ClusterName=ctrain-dev
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
DefMemPerCPU=1000
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
${node_lines}PartitionName=debug Nodes=$node_names Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$HOST
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
  chmod 0600 "$ETC/slurmdbd.conf"
fi

if ! alive "$RUN/slurmdbd.pid"; then
  slurmdbd
  wait_for 30 slurmdbd bash -c "echo >/dev/tcp/127.0.0.1/$DBD_PORT"
fi
if ! alive "$RUN/slurmctld.pid"; then
  slurmctld -f "$SLURM_CONF"
  wait_for 30 slurmctld scontrol ping
fi
for i in $(seq 1 "$NODES"); do
  node=$HOST-n$i
  mkdir -p "$STATE/spool/$node"
  if ! alive "$RUN/slurmd-$node.pid"; then
    unshare --uts sh -c 'hostname "$1" && exec slurmd -f "$2" -N "$1"' slurmd "$node" "$SLURM_CONF"
  fi
done
wait_for 60 "$NODES idle nodes" sh -c "[ \$(sinfo -h -t idle -o '%D') = $NODES ]"
wait_for 60 "accounting (sacct)" sacct -n -X -S now
echo "export SLURM_CONF=$SLURM_CONF"
