#!/usr/bin/env bash
# tuning/irq-affinity.sh: steer the network interfaces' IRQs onto housekeeping CPUs, off the
# CPUs where ringex processes busy-spin. For root, on a dedicated host.
#
# Usage: irq-affinity.sh [--dry-run] [--cpus LIST] [--iface NAME]...
#   --dry-run      print what would be written; write nothing (no root needed)
#   --cpus LIST    CPUs that should take the NIC IRQs, kernel cpu-list syntax like 0-1
#                  (default: the online CPUs that are not isolated)
#   --iface NAME   an interface to steer (repeatable; default: every interface backed by a
#                  device, lo left out)
#
# The IRQs of an interface are those its device lists in msi_irqs and the /proc/interrupts
# lines naming it (virtio-net: its virtioN device). Writes /proc/irq/N/smp_affinity_list.
# Not persistent, and irqbalance undoes it: stop irqbalance, or give it
# IRQBALANCE_BANNED_CPULIST=<busy CPUs>. Some kernel-managed IRQs reject the write; they are
# reported and the script exits 1.
#
# Refuses, changing nothing, when: the host has fewer than 4 online CPUs (checked first);
# a CPU in LIST does not exist; LIST includes an isolated CPU (that would send interrupts to
# the busy-spin CPUs); not root; an interface does not exist.
# Exit: 0 done, 1 refused (or some IRQs rejected the write), 2 bad usage. See tuning/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

CPUS_ARG=""
IFACES=()
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --cpus) (($# >= 2)) || usage_error "--cpus needs a list"; CPUS_ARG="$2"; shift ;;
        --cpus=*) CPUS_ARG="${1#*=}" ;;
        --iface) (($# >= 2)) || usage_error "--iface needs a name"; IFACES+=("$2"); shift ;;
        --iface=*) IFACES+=("${1#*=}") ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done

guard_cpu_count                      # first: before anything is written
ISOLATED="$(expand_cpulist "$(cat "$CPU_DIR/isolated" 2>/dev/null || true)" || true)"
if [[ -n "$CPUS_ARG" ]]; then
    TARGETS="$(expand_cpulist "$CPUS_ARG")" || usage_error "not a cpu list: $CPUS_ARG"
    [[ -n "$TARGETS" ]] || usage_error "empty cpu list"
    guard_cpus_exist "--cpus" "$TARGETS"
    for c in $TARGETS; do
        if [[ " $ISOLATED " == *" $c "* ]]; then
            refuse "--cpus includes isolated CPU $c: NIC interrupts belong on housekeeping CPUs"
        fi
    done
else
    TARGETS=""
    for c in $ONLINE_CPUS; do
        [[ " $ISOLATED " == *" $c "* ]] || TARGETS+="$c "
    done
    TARGETS="${TARGETS% }"
    [[ -n "$TARGETS" ]] || refuse "every online CPU is isolated: no housekeeping CPU to take the IRQs"
fi
guard_root
LIST="$(compress_cpulist "$TARGETS")"

NET="$SYS/class/net"
if ((${#IFACES[@]} == 0)); then
    for d in "$NET"/*; do
        name="${d##*/}"
        [[ "$name" == lo || ! -e "$d/device" ]] && continue
        IFACES+=("$name")
    done
fi
for i in "${IFACES[@]}"; do
    [[ -e "$NET/$i" ]] || refuse "no such network interface: $i"
done
((${#IFACES[@]})) || { echo "no network interfaces backed by a device: nothing to do"; finish; }

if grep -qx irqbalance "$PROC"/[0-9]*/comm 2>/dev/null; then
    echo "note: irqbalance is running and will rewrite these affinities; stop it" \
        "('systemctl stop irqbalance') or set IRQBALANCE_BANNED_CPULIST to the busy CPUs"
fi

# irqs_of IFACE -> IRQ numbers, one per line
irqs_of() {
    local iface="$1" dev real tok re
    local toks=("$iface") dirs=()
    dev="$NET/$iface/device"
    if [[ -e "$dev" ]]; then
        dirs+=("$dev")
        real="$(readlink -f "$dev" || echo "$dev")"
        if [[ "${real##*/}" == virtio* ]]; then
            toks+=("${real##*/}")
            dirs+=("${real%/*}")
        fi
    fi
    for d in "${dirs[@]}"; do
        for f in "$d"/msi_irqs/*; do
            [[ -e "$f" && "${f##*/}" =~ ^[0-9]+$ ]] && echo "${f##*/}"
        done
    done
    [[ -r "$PROC/interrupts" ]] || return 0
    for tok in "${toks[@]}"; do
        # escape regex metacharacters of the name (eth0.100) for awk
        # shellcheck disable=SC2001,SC2016
        re="$(sed 's/[.[\*^$()+?{|]/\\&/g' <<<"$tok")"
        awk -v re="(^|[^A-Za-z0-9_])${re}([^A-Za-z0-9]|\$)" '
            NR > 1 && $1 ~ /^[0-9]+:$/ {
                desc = $0; sub(/^[^:]*:/, "", desc)
                if (desc ~ re) { sub(/:$/, "", $1); print $1 }
            }' "$PROC/interrupts"
    done
}

FAILED=0
for iface in "${IFACES[@]}"; do
    irqs="$(irqs_of "$iface" | sort -n -u | tr '\n' ' ')"
    if [[ -z "${irqs// /}" ]]; then
        echo "$iface: no IRQs found"
        continue
    fi
    echo "$iface: IRQs $irqs-> CPUs $LIST"
    for irq in $irqs; do
        f="$PROC/irq/$irq/smp_affinity_list"
        if [[ ! -e "$f" ]]; then
            echo "IRQ $irq: $f missing; skipped"
            continue
        fi
        if [[ "$(expand_cpulist "$(cat "$f" 2>/dev/null)" 2>/dev/null || true)" == "$TARGETS" ]]; then
            echo "IRQ $irq: already on $LIST"
            continue
        fi
        if [[ $DRY_RUN -eq 1 ]]; then
            write_value "$LIST" "$f"
        elif ! write_value "$LIST" "$f" 2>/dev/null; then
            echo "IRQ $irq: the kernel rejected the write (a kernel-managed IRQ?)"
            FAILED=1
        fi
    done
done
if [[ $FAILED -eq 1 ]]; then
    echo "$PROG: some IRQs kept their affinity (see above)" >&2
    exit 1
fi
finish
