#!/usr/bin/env bash
# tuning/isolate-cpus.sh: print the kernel command line that isolates CPUs for busy-spin
# ringex processes (isolcpus, nohz_full, rcu_nocbs, irqaffinity), and how to install it.
# It writes nothing: changing the boot loader is left to the operator, so it needs no root.
#
# Usage: isolate-cpus.sh [--dry-run] --cpus LIST
#   --cpus LIST   the CPUs to isolate, kernel cpu-list syntax like 2-5 (never CPU 0)
#   --dry-run     accepted for symmetry with the other scripts; the output is the same
#
# Refuses when: the host has fewer than 4 online CPUs (checked first); a CPU in LIST does
# not exist; LIST contains CPU 0 (the kernel's housekeeping CPU); LIST would leave fewer
# than one housekeeping CPU.
# Exit: 0 printed, 1 refused, 2 bad usage. See tuning/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

CPUS_ARG=""
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --cpus) (($# >= 2)) || usage_error "--cpus needs a list"; CPUS_ARG="$2"; shift ;;
        --cpus=*) CPUS_ARG="${1#*=}" ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
[[ -n "$CPUS_ARG" ]] || usage_error "--cpus LIST is required (the CPUs of the busy-spin processes)"

guard_cpu_count                      # first
TARGETS="$(expand_cpulist "$CPUS_ARG")" || usage_error "not a cpu list: $CPUS_ARG"
[[ -n "$TARGETS" ]] || usage_error "empty cpu list"
if [[ " $TARGETS " == *" 0 "* ]]; then
    refuse "CPU 0 must not be isolated: it carries the kernel's timers, IRQs and housekeeping"
fi
guard_cpus_exist "--cpus" "$TARGETS"
HOUSEKEEPING=""
for c in $ONLINE_CPUS; do
    [[ " $TARGETS " == *" $c "* ]] || HOUSEKEEPING+="$c "
done
HOUSEKEEPING="${HOUSEKEEPING% }"
[[ -n "$HOUSEKEEPING" ]] || refuse "isolating every CPU leaves none for the kernel"

ISO="$(compress_cpulist "$TARGETS")"
HK="$(compress_cpulist "$HOUSEKEEPING")"

# SMT: an isolated CPU whose sibling stays with the scheduler shares its core with other work
for c in $TARGETS; do
    sib="$(cat "$CPU_DIR/cpu$c/topology/thread_siblings_list" 2>/dev/null || true)"
    [[ -z "$sib" ]] && continue
    for s in $(expand_cpulist "$sib" || true); do
        if [[ " $TARGETS " != *" $s "* ]]; then
            echo "note: CPU $c shares a core with CPU $s, which is not isolated; isolate whole cores" \
                "(or keep CPU $s idle) for busy-spin processes"
        fi
    done
done

PARAMS="isolcpus=managed_irq,domain,$ISO nohz_full=$ISO rcu_nocbs=$ISO irqaffinity=$HK"
cat <<MSG
Kernel command line to add (isolates CPUs $ISO; housekeeping CPUs $HK):

    $PARAMS

To install it (GRUB): append it to GRUB_CMDLINE_LINUX in /etc/default/grub, run
'update-grub' (Debian/Ubuntu) or 'grub2-mkconfig -o /boot/grub2/grub.cfg' (RHEL/Fedora),
and reboot. nohz_full needs a kernel built with CONFIG_NO_HZ_FULL. Afterwards
/sys/devices/system/cpu/isolated should read $ISO, and 'ringex tune check' should agree.
Pin the busy-spin processes to these CPUs, one per core, and the rest to $HK.
MSG
finish
