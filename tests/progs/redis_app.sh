# redis_app.sh — "a server and its client" test program for ckpt's end-to-end tests (issue 5).
# Usage: bash redis_app.sh [STEPS]   (default 200; run in a scratch directory).
#
# Starts redis-server (no persistence) on a free loopback port in the background and runs
# redis_client.py against it: STEPS rounds of SET/INCRBY/RPUSH/GET over one TCP connection,
# one line per round, then DBSIZE and SHUTDOWN NOSAVE; then reaps the server. Output: STEPS + 3
# lines, identical on every run; ~25 ms per round.
set -u
dir=$(cd "$(dirname "$0")" && pwd)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    --logfile "" --loglevel warning --dir . >/dev/null &
srv=$!
python3 "$dir/redis_client.py" "$port" "${1:-200}"
wait $srv
echo "server exit $?"
