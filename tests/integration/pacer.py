#!/usr/bin/env python3
# pacer.py - a TCP proxy whose every client connection the kernel paces at
# RATE bytes per second (SO_MAX_PACING_RATE): a link that caps each
# connection, with no burst at the start of each request (nginx's limit_rate
# allows one second's worth per request, so short range requests pass it
# almost uncapped). Bytes move with splice(2), never through this process.
#
#   pacer.py --port PORT --upstream HOST:PORT --rate BYTES_PER_SECOND
#
# Prints "listening PORT" once ready. SIGTERM exits.
import argparse
import fcntl
import os
import socket
import sys
import threading

SO_MAX_PACING_RATE = 47
F_SETPIPE_SZ = 1031
PIPE = 1 << 20


def pump(src, dst):
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE)
    except OSError:
        pass
    try:
        while True:
            n = os.splice(src.fileno(), w, PIPE)
            if n == 0:
                break
            while n > 0:
                n -= os.splice(r, dst.fileno(), n)
    except OSError:
        pass
    finally:
        os.close(r)
        os.close(w)
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client, upstream, rate):
    try:
        up = socket.create_connection(upstream)
    except OSError:
        client.close()
        return
    client.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, rate)
    for s in (client, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=pump, args=(client, up), daemon=True)
    t.start()
    pump(up, client)
    t.join()
    client.close()
    up.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--rate", type=int, required=True)
    a = p.parse_args()
    host, port = a.upstream.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(128)
    print("listening", a.port, flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c, (host, int(port)), a.rate), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
