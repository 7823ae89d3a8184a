#!/bin/sh
# long-functions.sh - lists the functions of src/ longer than N lines
# (default 150), longest first: "LINES file:line name". A function starts at
# a line in column 0 that ends with "{" and has a "(" (kmseg's style: the
# opening brace on the signature's last line) and ends at the next "}" in
# column 0.
#   sh tools/long-functions.sh [N] [files...]
n=${1:-150}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- $(find src -name '*.c' | sort)
awk -v max="$n" '
    FNR == 1 { start = 0 }
    !start && /^[A-Za-z_].*\{$/ && !/^(typedef|struct|enum|union|static const|const)/ {
        start = FNR; sig = $0; file = FILENAME
        # the signature may begin on an earlier line
        if (sig !~ /\(/) sig = prev " " sig
        next
    }
    start && /^\}/ {
        len = FNR - start + 1
        if (len > max) {
            name = sig; sub(/\(.*/, "", name); sub(/.*[ *]/, "", name)
            printf "%d %s:%d %s\n", len, file, start, name
        }
        start = 0
    }
    { prev = $0 }
' "$@" | sort -rn
