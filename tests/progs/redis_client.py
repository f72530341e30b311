"""redis_client.py PORT STEPS — the client half of redis_app.sh (see there): speaks RESP over a
plain socket (no redis module needed), one line per round, deterministic output."""
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
deadline = time.time() + 20
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("redis did not come up")
        time.sleep(0.05)
f = s.makefile("rb")
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    s.sendall(out)
def reply():
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"-", b":"):
        return rest.decode()
    if t == b"$":
        l = int(rest)
        if l < 0:
            return None
        data = f.read(l + 2)[:-2]
        return data.decode()
    raise SystemExit("bad reply %r" % line)
for i in range(1, n + 1):
    cmd("SET", "key:%d" % i, "v%d" % (i * i))
    cmd("INCRBY", "counter", i)
    cmd("RPUSH", "list", i)
    cmd("GET", "key:%d" % (i // 2 or 1))
    r = [reply() for _ in range(4)]
    print("step %d set=%s counter=%s llen=%s get=%s" % (i, r[0], r[1], r[2], r[3]), flush=True)
    time.sleep(0.02)
cmd("DBSIZE")
print("dbsize", reply(), flush=True)
cmd("SHUTDOWN", "NOSAVE")
print("shutdown", "closed" if f.readline() == b"" else "answered", flush=True)
