# counter.sh — deterministic bash test program for ckpt's end-to-end tests.
#
# Usage: bash counter.sh [STEPS [ITERS]]   (defaults: 300 steps, 2500 iterations per step)
#
# Builtins only: no child process, no `sleep`, no $(...). Each step runs ITERS
# rounds of integer arithmetic and array updates (that is the pacing), then
# prints "step N sum HEX" with echo. Identical output on every run.
steps=${1:-300}
iters=${2:-2500}
sum=7
declare -a arr
for ((i = 0; i < 64; i++)); do arr[i]=$((i * 2654435761 & 0xffffffff)); done
for ((step = 1; step <= steps; step++)); do
    for ((i = 0; i < iters; i++)); do
        ((sum = (sum * 31 + i + step) & 0xffffffff))
    done
    ((j = sum & 63))
    ((arr[j] = (arr[j] ^ sum) * 33 & 0xffffffff))
    ((sum ^= arr[(step * 7) & 63]))
    printf -v hex '%08x' "$sum"
    echo "step $step sum $hex"
done
