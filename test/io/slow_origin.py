# An origin that reads slowly through a small receive window: it half-closes at once (nothing to
# send), then reads `chunk` bytes every `interval` seconds until the end, and prints how many bytes
# it read, their sha256 and how the stream ended. Node cannot set SO_RCVBUF on a listening socket;
# a small window keeps the bytes a proxy forwards in the proxy's own buffer, where a cut loses them.
import hashlib, socket, sys, time

chunk, interval = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket
srv.bind(('127.0.0.1', 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
conn.shutdown(socket.SHUT_WR)
h, n, how = hashlib.sha256(), 0, 'end'
try:
    while True:
        d = conn.recv(chunk)
        if not d:
            break
        h.update(d)
        n += len(d)
        time.sleep(interval)
except ConnectionResetError:
    how = 'ECONNRESET'
print(n, h.hexdigest(), how, flush=True)
