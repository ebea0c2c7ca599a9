#!/usr/bin/env bash
# Start a single-node SLURM (slurmctld + slurmd + slurmdbd/mariadb accounting + munge) on
# localhost, with fake GPUs, so the Snakemake SLURM profile can be tested for real.
#
# Idempotent: a healthy running setup returns in well under a second; a stopped one restarts
# in a few seconds; a bare Debian machine installs the packages first (~25 s plus download).
# Needs root, apt-get and Debian bookworm's slurm 22.05 packages. Daemons run without systemd,
# so it also works in containers. Undo with tests/slurm/stop_slurm.sh.
#
# Environment knobs:
#   SLURM_TEST_GPUS   number of fake GPUs on the node (default 1)
#   SLURM_TEST_CPUS   CPUs the node advertises (default: nproc)
#   SLURM_TEST_SKIP_INSTALL=1   fail instead of running apt-get when packages are missing
#
# Exit status: 0 up; 3 cannot run here (not Linux/root, packages not installable), which
# tests/test_slurm.py turns into a skip; anything else is a real failure.
set -euo pipefail

CLUSTER=localcluster
ACCOUNT=dipddpm
NODE=localhost
GPUS=${SLURM_TEST_GPUS:-1}
# nproc would honour OMP_NUM_THREADS, which the tests set to 1.
CPUS=${SLURM_TEST_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
ETC=/etc/slurm
LOG=/var/log/slurm-test
SPOOL=/var/spool/slurm-test
RUN=/run/slurm-test
DB_PASS=slurm-test-only
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

die() { echo "start_slurm.sh: $*" >&2; exit 1; }
cannot_run() { echo "start_slurm.sh: $*" >&2; exit 3; }
log() { echo "start_slurm.sh: $*"; }

[[ $(uname -s) == Linux ]] || cannot_run "needs Linux"
[[ $EUID -eq 0 ]] || cannot_run "needs root (starts system daemons)"

# pid of a daemon from its pid file, empty when the file is missing or the process is gone.
live_pid() {
    local pid
    [[ -s $1 ]] || return 0
    pid=$(<"$1")
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what (logs: $LOG)"
        sleep 0.2
    done
}

install_packages() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ ${SLURM_TEST_SKIP_INSTALL:-0} == 1 ]] && cannot_run "missing packages: ${missing[*]}"
    command -v apt-get >/dev/null || cannot_run "missing packages ${missing[*]} and no apt-get"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || cannot_run "apt-get update failed (offline?)"
    # policy-rc.d keeps the package scripts from starting daemons we start ourselves below.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || { rm -f /usr/sbin/policy-rc.d; cannot_run "apt-get install ${missing[*]} failed"; }
    rm -f /usr/sbin/policy-rc.d
}

# write_if_changed PATH MODE: stdin -> PATH; returns 0 when the content changed.
write_if_changed() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 1
    fi
    install -m "$2" "$tmp" "$1"
    rm -f "$tmp"
    return 0
}

write_configs() {
    local changed=1 real_mem
    # Leave headroom so slurmd never finds less memory than advertised (node would drain).
    real_mem=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 9 / 10))
    mkdir -p "$ETC" "$LOG" "$SPOOL/ctld" "$SPOOL/d" "$RUN"

    write_if_changed "$ETC/slurm.conf" 644 <<EOF && changed=0
# Written by tests/slurm/start_slurm.sh: single-node test cluster, not for production.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# Containers have no writable cgroup tree: track processes without cgroups.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# cons_tres is what lets sbatch accept --gpus / --cpus-per-gpu.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
# The plugin labels each job with its rule in --comment; keep it for sacct.
AccountingStoreFlags=job_comment
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE CPUs=$CPUS RealMemory=$real_mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    {
        echo "# Fake GPUs: character devices (a regular file is rejected); no autodetection."
        echo "AutoDetect=off"
        for ((i = 0; i < GPUS; i++)); do
            echo "NodeName=$NODE Name=gpu File=/dev/slurm-fakegpu$i"
        done
    } | write_if_changed "$ETC/gres.conf" 644 && changed=0

    # slurmdbd refuses a config readable by others.
    write_if_changed "$ETC/slurmdbd.conf" 600 <<EOF && changed=0
AuthType=auth/munge
DbdHost=$NODE
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    return $changed
}

make_fake_gpus() {
    for ((i = 0; i < GPUS; i++)); do
        local dev=/dev/slurm-fakegpu$i
        [[ -c $dev ]] || { rm -f "$dev"; mknod -m 666 "$dev" c 1 3; }
    done
}

start_munge() {
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if [[ -z $(live_pid /run/munge/munged.pid) ]]; then
        runuser -u munge -- /usr/sbin/munged
    fi
    wait_for 10 munge bash -c 'munge -n | unmunge'
}

mariadb_up() { mariadb-admin --protocol=socket ping; }

start_mariadb() {
    mkdir -p /run/mysqld
    chown mysql:mysql /run/mysqld
    if ! mariadb_up >/dev/null 2>&1; then
        [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >/dev/null
        # Socket only: nothing outside this machine needs the database.
        nohup mariadbd --user=mysql --skip-networking \
            --pid-file=/run/mysqld/mysqld.pid >"$LOG/mariadb.log" 2>&1 &
        wait_for 30 mariadb mariadb_up
    fi
    mariadb --protocol=socket -e "
        CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start_slurmdbd() {
    [[ -n $(live_pid "$RUN/slurmdbd.pid") ]] || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
            description="dipddpm SLURM tests" >/dev/null
    fi
    if ! sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=user | grep -qx root; then
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    fi
}

node_ready() { sinfo -h -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)'; }

start_slurm_daemons() {
    [[ -n $(live_pid "$RUN/slurmctld.pid") ]] || slurmctld
    wait_for 30 slurmctld scontrol ping
    [[ -n $(live_pid "$RUN/slurmd.pid") ]] || slurmd -N "$NODE"
    # A node drained by an earlier crash comes back with RESUME.
    if sinfo -h -n "$NODE" -o %T | grep -Eq 'drain|down'; then
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true
    fi
    wait_for 30 "node $NODE to become idle" node_ready
}

stop_slurm_daemons() {
    local pid
    for name in slurmd slurmctld; do
        pid=$(live_pid "$RUN/$name.pid")
        if [[ -n $pid ]]; then
            kill "$pid"
            wait_for 15 "$name to stop" bash -c "! kill -0 $pid"
        fi
    done
}

main() {
    install_packages
    mkdir -p "$LOG"
    make_fake_gpus
    if write_configs; then
        log "configuration changed; restarting slurmctld and slurmd"
        stop_slurm_daemons
    elif [[ -n $(live_pid "$RUN/slurmctld.pid") ]] && node_ready \
        && sacct -n -X --starttime=now >/dev/null 2>&1; then
        log "already running"
        return 0
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm_daemons
    log "SLURM up: cluster $CLUSTER, node $NODE ($CPUS CPUs, $GPUS fake GPU), account $ACCOUNT"
}

main "$@"
