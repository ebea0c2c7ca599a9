#!/usr/bin/env bash
# Stop the daemons tests/slurm/start_slurm.sh started, by the ids in their pid files.
# Leaves packages, configs and the accounting database in place, so the next start is fast.
set -uo pipefail

[[ $EUID -eq 0 ]] || { echo "stop_slurm.sh: needs root" >&2; exit 1; }
RUN=/run/slurm-test

stop_pidfile() {
    local pid
    [[ -s $1 ]] || return 0
    pid=$(<"$1")
    kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
        sleep 0.1
    done
    echo "stop_slurm.sh: $2 (pid $pid) did not stop within 10 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null
    rm -f "$1"
}

# Reverse start order: compute daemons first, the database last.
stop_pidfile "$RUN/slurmd.pid" slurmd
stop_pidfile "$RUN/slurmctld.pid" slurmctld
stop_pidfile "$RUN/slurmdbd.pid" slurmdbd
stop_pidfile /run/mysqld/mysqld.pid mariadb
stop_pidfile /run/munge/munged.pid munged
echo "stop_slurm.sh: stopped"
