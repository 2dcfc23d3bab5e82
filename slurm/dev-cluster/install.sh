#!/usr/bin/env bash
# Install the Debian packages of a real SLURM with accounting (munge, MariaDB, slurmdbd,
# slurmctld, slurmd). Needs root and apt; does nothing when every daemon is already installed.
# No daemon is started here (these machines have no systemd): start.sh starts them by hand.
set -euo pipefail

daemons=(munged mariadbd slurmdbd slurmctld slurmd sbatch sacct)
missing=0
for daemon in "${daemons[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$daemon" >/dev/null 2>&1 || missing=1
done
if [[ $missing == 0 ]]; then
  echo "slurm dev cluster: packages already installed"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "slurm dev cluster: install.sh needs root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq slurm-wlm munge mariadb-server slurmdbd >/dev/null
echo "slurm dev cluster: installed $(slurmd -V)"
