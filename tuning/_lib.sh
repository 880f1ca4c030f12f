# shellcheck shell=bash
# tuning/_lib.sh: shared guards and helpers for the ringex tuning scripts. Sourced, never run.
#
# Conventions every script follows:
#   --dry-run   print what would be written, write nothing; needs no root. The guards still
#               run: a guard that would stop the real run prints "a real run would refuse: ..."
#               and the dry run then exits 1 after printing its plan.
#   exit 0      done (or a clean dry run)
#   exit 1      refused (or a dry run that a real run would refuse); nothing was written
#   exit 2      bad usage
# Guard order in a real run: CPU count (>= RINGEX_MIN_CPUS, 4) first, before anything else is
# looked at or written; then the target CPUs exist; then root; then script-specific checks.
#
# RINGEX_TUNING_ROOT (test hook, default empty): read and write sys/ and proc/ under this
# directory instead of /, so tests can run the scripts against a fake tree.

RINGEX_MIN_CPUS=4
ROOT_DIR="${RINGEX_TUNING_ROOT:-}"
SYS="$ROOT_DIR/sys"
# shellcheck disable=SC2034  # used by the scripts that source this file
PROC="$ROOT_DIR/proc"
CPU_DIR="$SYS/devices/system/cpu"
PROG="$(basename "$0")"
DRY_RUN=0
WOULD_REFUSE=0

usage_error() {
    echo "$PROG: $*" >&2
    echo "try '$PROG --help'" >&2
    exit 2
}

# refuse MESSAGE: stop a real run (exit 1); note it in a dry run and carry on printing the plan.
refuse() {
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "dry-run: a real run would refuse: $*"
        WOULD_REFUSE=1
    else
        echo "$PROG: refusing: $*" >&2
        echo "$PROG: nothing was changed" >&2
        exit 1
    fi
}

note() { echo "$PROG: $*" >&2; }

# expand_cpulist "0-3,8" -> "0 1 2 3 8" on stdout; returns 1 on a malformed list.
expand_cpulist() {
    local list="$1" part lo hi c out=() parts=()
    [[ -z "$list" ]] && return 0
    IFS=',' read -r -a parts <<<"$list"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=$((10#${BASH_REMATCH[1]})); hi=$((10#${BASH_REMATCH[2]}))
            ((lo <= hi)) || return 1
            for ((c = lo; c <= hi; c++)); do out+=("$c"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$((10#$part))")
        else
            return 1
        fi
    done
    printf '%s\n' "${out[@]}" | sort -n -u | tr '\n' ' ' | sed 's/ $//'
}

# compress_cpulist "0 1 2 5" -> "0-2,5" (kernel cpu-list syntax; input sorted)
compress_cpulist() {
    local prev="" start="" res="" c
    for c in $1; do
        if [[ -n "$prev" && $c -eq $((prev + 1)) ]]; then prev=$c; continue; fi
        if [[ -n "$start" ]]; then
            if [[ $start == "$prev" ]]; then res+="$start,"; else res+="$start-$prev,"; fi
        fi
        start=$c; prev=$c
    done
    if [[ -n "$start" ]]; then
        if [[ $start == "$prev" ]]; then res+="$start"; else res+="$start-$prev"; fi
    fi
    echo "$res"
}

# online_cpus -> "0 1 2 ..." (from sysfs online, else the cpuN directories); empty if unknown.
online_cpus() {
    local online
    if online="$(cat "$CPU_DIR/online" 2>/dev/null)" && [[ -n "$online" ]]; then
        expand_cpulist "$online"
        return
    fi
    local d out=()
    for d in "$CPU_DIR"/cpu[0-9]*; do
        [[ -d "$d" ]] && out+=("${d##*/cpu}")
    done
    ((${#out[@]})) && printf '%s\n' "${out[@]}" | sort -n | tr '\n' ' ' | sed 's/ $//'
    return 0
}

# guard_cpu_count: the first guard of every script. Refuses below RINGEX_MIN_CPUS online CPUs.
guard_cpu_count() {
    local cpus n
    cpus="$(online_cpus)" || cpus=""
    n=$(wc -w <<<"$cpus")
    if [[ -z "$cpus" ]]; then
        refuse "cannot count the online CPUs ($CPU_DIR/online unreadable)"
    elif ((n < RINGEX_MIN_CPUS)); then
        refuse "this host has $n online CPUs; these settings are for dedicated hosts with at least" \
            "$RINGEX_MIN_CPUS (on a small host run the composed topology with backoff idle strategies)"
    fi
    ONLINE_CPUS="$cpus"
}

# guard_cpus_exist "LIST-NAME" "2 3": refuses when a target CPU is not online.
guard_cpus_exist() {
    local what="$1" cpus="$2" c missing=()
    for c in $cpus; do
        [[ " $ONLINE_CPUS " == *" $c "* ]] || missing+=("$c")
    done
    if ((${#missing[@]})); then
        refuse "$what names CPU(s) ${missing[*]}, which do not exist or are offline (online: ${ONLINE_CPUS:-unknown})"
    fi
}

# guard_root: real runs need root; a dry run does not.
guard_root() {
    if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
        refuse "must run as root (uid 0); this is uid $EUID (try --dry-run to see the plan)"
    fi
}

# write_value VALUE FILE: the only way the scripts change the host.
write_value() {
    local value="$1" file="$2"
    if [[ $DRY_RUN -eq 1 ]]; then
        echo "would write '$value' to $file"
    else
        echo "writing '$value' to $file"
        printf '%s\n' "$value" >"$file"
    fi
}

# finish: a dry run that a real run would refuse exits 1.
finish() {
    if [[ $DRY_RUN -eq 1 && $WOULD_REFUSE -eq 1 ]]; then
        echo "dry-run: nothing written; a real run would refuse (see above)"
        exit 1
    fi
    [[ $DRY_RUN -eq 1 ]] && echo "dry-run: nothing written"
    exit 0
}
