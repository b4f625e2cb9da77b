#!/usr/bin/env bash
# Per-function instructions per unit of work from two callgrind profiles of the same program
# that differ only in how much work they did (as benches/http.sh and
# benches/core-instructions.sh write them):
#
#   benches/cg-per-unit.sh SMALL.out LARGE.out UNITS [self|inclusive] [TOP]
#
# prints the TOP (30) functions by (Ir(LARGE) - Ir(SMALL)) / UNITS, inclusive by default,
# with source paths stripped. Start-up cancels out, as in the totals.
set -euo pipefail
small=$1 large=$2 units=$3 mode=${4:-inclusive} top=${5:-30}
incl=yes; [[ $mode == self ]] && incl=no
ann() { callgrind_annotate --auto=no --inclusive=$incl --threshold=100 "$1" 2>/dev/null; }
awk -v units="$units" -v top="$top" -v incl="$incl" '
  # Lines look like "  1,234 (12.34%)  /path/file.rs:crate::function [/path/binary]".
  /^ *[0-9,]+ \( *[0-9.]+%\)  / {
    ir = $1; gsub(",", "", ir); ir += 0
    fn = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\)  /, "", fn); sub(/ \[[^]]*\]$/, "", fn)
    # Drop the source file. One function can appear once per source file it has code from
    # (inlining): self costs add up; an inclusive cost is the largest of its entries.
    sub(/^[^:]*:/, "", fn)
    if (FILENAME == "-") { if (incl == "no") big[fn] += ir; else if (ir > big[fn]) big[fn] = ir }
    else { if (incl == "no") small[fn] += ir; else if (ir > small[fn]) small[fn] = ir }
  }
  END {
    for (fn in big) { d = (big[fn] - small[fn]) / units; if (d >= 0.5) printf "%10.1f  %s\n", d, fn }
  }' <(ann "$small") - < <(ann "$large") | sort -rn | head -n "$top"
