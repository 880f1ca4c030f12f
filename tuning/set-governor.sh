#!/usr/bin/env bash
# tuning/set-governor.sh: set the CPU frequency governor (default: performance) so the clock
# does not drop while ringex agents spin or wait. For root, on a dedicated host.
#
# Usage: set-governor.sh [--dry-run] [--governor NAME] [--cpus LIST]
#   --dry-run        print what would be written; write nothing (no root needed)
#   --governor NAME  governor to set (default: performance); must be listed in the CPU's
#                    scaling_available_governors
#   --cpus LIST      CPUs to set, kernel cpu-list syntax like 2-5,8 (default: every online CPU)
#
# Writes /sys/devices/system/cpu/cpuN/cpufreq/scaling_governor. Not persistent: run it at
# boot (a systemd oneshot unit) or use your distribution's cpupower/tuned instead.
#
# Refuses, changing nothing, when: the host has fewer than 4 online CPUs (checked first);
# a target CPU does not exist; not root; a target CPU has no cpufreq (VMs: the hypervisor
# owns the frequency); the governor is not available.
# Exit: 0 done, 1 refused, 2 bad usage. See tuning/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

GOVERNOR=performance
CPUS_ARG=""
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --governor) (($# >= 2)) || usage_error "--governor needs a name"; GOVERNOR="$2"; shift ;;
        --governor=*) GOVERNOR="${1#*=}" ;;
        --cpus) (($# >= 2)) || usage_error "--cpus needs a list"; CPUS_ARG="$2"; shift ;;
        --cpus=*) CPUS_ARG="${1#*=}" ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
[[ $GOVERNOR =~ ^[a-z_]+$ ]] || usage_error "not a governor name: $GOVERNOR"

guard_cpu_count                      # first: before anything is written
if [[ -n "$CPUS_ARG" ]]; then
    TARGETS="$(expand_cpulist "$CPUS_ARG")" || usage_error "not a cpu list: $CPUS_ARG"
    [[ -n "$TARGETS" ]] || usage_error "empty cpu list"
    guard_cpus_exist "--cpus" "$TARGETS"
else
    TARGETS="$ONLINE_CPUS"
fi
guard_root

for c in $TARGETS; do
    gov_file="$CPU_DIR/cpu$c/cpufreq/scaling_governor"
    if [[ ! -e "$gov_file" ]]; then
        refuse "CPU $c has no cpufreq ($gov_file missing): on a VM the hypervisor owns the frequency; nothing to set"
        continue
    fi
    avail_file="$CPU_DIR/cpu$c/cpufreq/scaling_available_governors"
    if [[ -r "$avail_file" ]] && [[ " $(cat "$avail_file") " != *" $GOVERNOR "* ]]; then
        refuse "CPU $c does not offer governor '$GOVERNOR' (available: $(cat "$avail_file"))"
    fi
done

for c in $TARGETS; do
    gov_file="$CPU_DIR/cpu$c/cpufreq/scaling_governor"
    [[ -e "$gov_file" ]] || continue
    current="$(cat "$gov_file" 2>/dev/null || echo unknown)"
    if [[ "$current" == "$GOVERNOR" ]]; then
        echo "CPU $c: already $GOVERNOR"
    else
        write_value "$GOVERNOR" "$gov_file"
    fi
done
finish
