# pipeline.sh — bash process-tree test program for ckpt's end-to-end tests
# (docs/design-process-trees.md §11.2, test 2a). Run as `bash pipeline.sh` in a scratch
# directory: it writes bg.txt there.
#
# A background job writes 50 lines to bg.txt, `sleep 0.1` between lines, through one fd kept
# open (not O_APPEND: a restarted job rewrites from its checkpointed offset). Meanwhile a
# pipeline — a subshell printing 250 items with `sleep 0.02` between, into awk, which prints
# a running sum and flushes every line — writes 250 lines; then `wait` for the job, and
# `sort -n bg.txt | awk` prints 50 lines and a total. Many short-lived children (seq, sleep,
# subshells) exist at any moment. Output: 301 lines, identical on every run; ~5-6 s.
set -u
# mawk fills its input buffer from a pipe before it processes a line (so the running sums would
# all come out at the end): `-W interactive` makes it read line by line. gawk needs nothing.
awk_line=(awk)
if awk -W version 2>/dev/null | grep -qi mawk; then awk_line=(awk -W interactive); fi
bg() {
    exec 3>bg.txt
    for i in $(seq 50); do
        printf '%d\n' $(( (i * 37) % 50 + 1000 )) >&3
        sleep 0.1
    done
    exec 3>&-
}
bg &
( for i in $(seq 250); do printf 'item %d %d\n' "$i" $(( i * i % 97 )); sleep 0.02; done ) |
    "${awk_line[@]}" '{ s += $3; printf "step %d item %d sum %d\n", NR, $2, s; fflush() }'
wait
sort -n bg.txt | awk '{ t += $1; printf "bg %d %d total %d\n", NR, $1, t; fflush() } END { print "done", NR, t }'
