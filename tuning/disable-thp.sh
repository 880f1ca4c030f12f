#!/usr/bin/env bash
# tuning/disable-thp.sh: turn transparent huge pages off (or to madvise), so khugepaged and
# fault-time compaction cannot stall the hot path. For root, on a dedicated host.
#
# Usage: disable-thp.sh [--dry-run] [--mode never|madvise]
#   --dry-run      print what would be written; write nothing (no root needed)
#   --mode MODE    never (default) or madvise, written to both
#                  /sys/kernel/mm/transparent_hugepage/enabled and .../defrag
#
# Not persistent: to keep it across reboots add transparent_hugepage=never (or madvise) to
# the kernel command line.
#
# Refuses, changing nothing, when: the host has fewer than 4 online CPUs (checked first);
# not root; the THP files are missing or do not offer MODE.
# Exit: 0 done, 1 refused, 2 bad usage. See tuning/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"

MODE=never
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --mode) (($# >= 2)) || usage_error "--mode needs never or madvise"; MODE="$2"; shift ;;
        --mode=*) MODE="${1#*=}" ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
[[ $MODE == never || $MODE == madvise ]] || usage_error "--mode must be never or madvise, not '$MODE'"

guard_cpu_count                      # first: before anything is written
guard_root

THP="$SYS/kernel/mm/transparent_hugepage"
for name in enabled defrag; do
    f="$THP/$name"
    if [[ ! -r "$f" ]]; then
        refuse "$f is missing: this kernel has no transparent huge pages to turn off"
        continue
    fi
    choices="$(cat "$f")"
    if [[ " ${choices//[\[\]]/} " != *" $MODE "* ]]; then
        refuse "$f does not offer '$MODE' (it offers: $choices)"
    fi
done

for name in enabled defrag; do
    f="$THP/$name"
    [[ -r "$f" ]] || continue
    current="$(sed -n 's/.*\[\([^]]*\)\].*/\1/p' "$f")"
    if [[ "$current" == "$MODE" ]]; then
        echo "$name: already $MODE"
    else
        write_value "$MODE" "$f"
    fi
done
finish
