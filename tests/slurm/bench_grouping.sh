#!/usr/bin/env bash
# Measure what one sbatch job costs beyond its compute: N trivial jobs submitted one by one
# versus the same N jobs packed into one SLURM job with a Snakemake group.
#
#   bash tests/slurm/start_slurm.sh && bash tests/slurm/bench_grouping.sh [N]
#
# Prints Snakemake wall time and the summed SLURM elapsed time (sacct) per variant.
set -euo pipefail

N=${1:-10}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SNAKEMAKE=${SNAKEMAKE:-$REPO/.venv/bin/snakemake}
WORK=$(mktemp -d /tmp/slurm-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS=1

cat >"$WORK/Snakefile" <<EOF
rule all:
    input: expand("out/{i}.txt", i=range($N))

rule trivial:
    output: "out/{i}.txt"
    shell: "echo {wildcards.i} > {output}"
EOF

run_variant() {
    local name=$1
    shift
    rm -rf "$WORK/out" "$WORK/.snakemake"
    local start end
    start=$(date +%s.%N)
    (cd "$WORK" && "$SNAKEMAKE" --workflow-profile "$REPO/workflow/profiles/slurm" \
        --slurm-init-seconds-before-status-checks 1 --seconds-between-status-checks 1 \
        --slurm-jobname-prefix "bench_$name" "$@" >"$WORK/$name.log" 2>&1) \
        || { tail -30 "$WORK/$name.log"; exit 1; }
    end=$(date +%s.%N)
    local jobs elapsed
    jobs=$(grep -c "submitted with SLURM jobid" "$WORK/$name.log")
    # Job names are <prefix>_<run uuid>; sum ElapsedRaw (seconds) of this run's jobs.
    elapsed=$(sacct -X -n -P --name "$(grep -o "bench_${name}_[0-9a-f-]*" "$WORK/$name.log" \
        | head -1)" -o ElapsedRaw | awk '{s += $1} END {print s}')
    printf '%-10s sbatch jobs: %3d  wall: %6.1f s  summed SLURM elapsed: %4d s\n' \
        "$name" "$jobs" "$(echo "$end - $start" | bc)" "$elapsed"
}

echo "$N trivial jobs on $(env -u OMP_NUM_THREADS nproc) CPUs ($(sinfo -h -o %N) / slurm $(sinfo -V | cut -d' ' -f2))"
run_variant ungrouped
run_variant grouped --groups trivial=cells --group-components cells="$N" --cores 2 --resources mem_mb=8000
