#!/usr/bin/env python3
# faultproxy.py - a fault-injecting HTTP proxy for the ocifs integration tests.
# Python 3 standard library only.
#
# Usage:
#   faultproxy.py --port PORT --log FILE [--upstream http://127.0.0.1:REGPORT]
#                 [--rules FILE] [--upstream-auth USER:PASS]
#
# Listens on 127.0.0.1:PORT (HTTP/1.1, keep-alive, one thread per connection)
# and prints "listening PORT" once ready. SIGTERM exits. Per request:
#   reverse    origin-form target ("GET /v2/...") -> forwarded to --upstream,
#              Host rewritten, rules applied; an absolute Location pointing at
#              the upstream is rewritten to point at the proxy.
#   forward    absolute-form target ("GET http://h:p/x") -> forwarded to h:p.
#   connect    "CONNECT h:p" -> raw TCP tunnel.
#   elsewhere  "GET /elsewhere/REST" -> upstream "/REST" (same query, client's
#              Range kept), with Basic --upstream-auth, never the client's
#              Authorization: a stand-in for a redirect-target blob store.
# Bodies are streamed in 64 KiB pieces.
#
# Log: one JSON object per line appended to FILE once a request is done:
#   {"method", "target", "mode", "host", "range", "auth" (bool), "status",
#    "bytes" (body bytes sent to the client), "rule" (id or null),
#    "t" (when the request came, seconds since the epoch),
#    "together" (answers that sent their last piece at once with this one,
#    itself included, under a "jitter" with "together"; else null)}
#
# Rules (reverse mode only): FILE holds a JSON array, re-read on every
# request (replace it atomically with mv; missing/empty = no rules, bad JSON
# = warning on stderr and no rules). The first rule that matches and has uses
# left is applied, one per request. Keys:
#   "id"      string, required; use counts are kept per id for the process.
#   "match"   regex searched in path+query, required.
#   "method"  optional exact method.
#   "times"   number of requests the rule applies to (default: unlimited).
#   "elsewhere"  true: the rule applies to "/elsewhere/" requests (the
#             stand-in blob store) instead, and only "status" acts there.
# and exactly one action:
#   "status": N [, "headers": {...}] [, "body": "..."]   answer directly
#   "cut_after": N      forward, send headers + N body bytes, then close
#   "add_headers": {}   forward, adding these response headers
#   "redirect": "BASE"  answer 307, Location: BASE + path+query
#   "corrupt": true     forward, first body byte xor 0xff
#   "flip_at": N        forward, body byte N xor 0xff
#   "reset_after": N    forward, send headers + N body bytes, then reset (RST)
#   "length": N         forward, declaring Content-Length: N whatever the body
#                       is; the connection closes after the body
#   "length_plus": N    forward, declaring N bytes more than the upstream's
#                       Content-Length; the connection closes after the body:
#                       the client takes every byte, then the transfer fails
#   "drip": BYTES       forward, BYTES of body a tenth of a second
#   "stall_after": N    forward, send headers + N body bytes, then send
#                       nothing more, the connection open, until the client
#                       closes it (at most 10 minutes)
#   "trail": TEXT       forward, then, a fifth of a second after the body,
#                       send TEXT on the connection, which stays open: the
#                       next request on it reads TEXT before its answer
#   "delay": SECONDS    sleep, then forward normally
#   "hold": PATH        wait until the file PATH exists (at most 10 minutes),
#                       then forward normally: the test says when; with
#                       "came": PATH2, the file PATH2 is made first: the
#                       test knows the request is held
# and, alone or with one of the forwarding actions above:
#   "jitter": {"seed": S, "piece": BYTES, "pause": SECONDS, "together": SECONDS}
#                       the headers and then each piece of the body (1 to
#                       BYTES bytes, a write each, TCP_NODELAY) go after no
#                       pause (3 times in 8), a yield (3 in 8) or a sleep of
#                       up to SECONDS (2 in 8): drawn from S and the number of
#                       the request, so that a seed replays what it can. With
#                       "together", requests for one target in flight at once
#                       (from when they come) hold their answer's last piece
#                       until all of them are there (or that long), then send
#                       it at once (half of them, drawn, hold their whole body
#                       and send it in one write): transfers of one resource
#                       that end together, as behind a buffering hop
# "redirect" to the proxy's own address loops; "status": 401 with a
# WWW-Authenticate header and no "times" loops challenges.
# Example: [{"id":"busy","match":"/blobs/","status":503,"times":2},
#           {"id":"cut","match":"/blobs/","method":"GET","cut_after":1000}]

import argparse
import base64
import http.client
import http.server
import json
import os
import random
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse

CHUNK = 64 * 1024
HOP = {"connection", "proxy-connection", "keep-alive", "te", "trailer",
       "transfer-encoding", "upgrade", "proxy-authorization",
       "proxy-authenticate", "expect", "content-length"}

ARGS = None
UPSTREAM = None  # urllib.parse.SplitResult of --upstream
LOG_LOCK = threading.Lock()
LOG_FILE = None
COUNT_LOCK = threading.Lock()
COUNTS = {}
SERIAL = 0  # requests seen, for the jitter's random numbers (under COUNT_LOCK)


def load_rules():
    if not ARGS.rules:
        return []
    try:
        with open(ARGS.rules, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    if not text.strip():
        return []
    try:
        rules = json.loads(text)
        if not isinstance(rules, list):
            raise ValueError("not a JSON array")
        return rules
    except ValueError as e:
        print("faultproxy: bad rules file %s: %s" % (ARGS.rules, e),
              file=sys.stderr, flush=True)
        return []


def pick_rule(method, target, elsewhere=False):
    """First matching rule with uses left; its use is counted here."""
    for r in load_rules():
        try:
            if bool(r.get("elsewhere")) != elsewhere:
                continue
            if r.get("method") and r["method"] != method:
                continue
            if not re.search(r["match"], target):
                continue
            rid = r["id"]
        except (KeyError, TypeError, AttributeError, re.error) as e:
            print("faultproxy: bad rule %r: %s" % (r, e), file=sys.stderr,
                  flush=True)
            continue
        with COUNT_LOCK:
            used = COUNTS.get(rid, 0)
            if r.get("times") is not None and used >= r["times"]:
                continue
            COUNTS[rid] = used + 1
        return r
    return None


def hop_headers(headers):
    """Names of hop-by-hop headers, including those listed in Connection."""
    names = set(HOP)
    for v in headers.get_all("Connection") or []:
        names.update(t.strip().lower() for t in v.split(",") if t.strip())
    return names


# "together": per target, [answers in flight, holding their last piece, round,
# {round: how many it let go}]
ENDS = threading.Condition()
ENDS_BY_TARGET = {}


class Jitter:
    """The pauses and piece sizes of one response (a rule's "jitter")."""

    def __init__(self, spec, target):
        global SERIAL
        with COUNT_LOCK:
            SERIAL += 1
            n = SERIAL
        self.rng = random.Random("%s:%d" % (spec.get("seed", 0), n))
        self.piece = max(int(spec.get("piece", CHUNK)), 1)
        self.most = float(spec.get("pause", 0.001))
        self.together = spec.get("together")
        # half the answers that end together come whole, in one write
        self.burst = bool(self.together) and self.rng.randrange(2) == 0
        self.target = target
        if self.together:
            with ENDS:
                ENDS_BY_TARGET.setdefault(target, [0, 0, 0, {}])[0] += 1
        self.group = None  # answers that ended with this one

    @staticmethod
    def release(st):
        """Let the holders go when every answer in flight holds. Under ENDS."""
        if st[1] and st[1] >= st[0]:
            st[3][st[2]] = st[1]
            st[1] = 0
            st[2] += 1
            ENDS.notify_all()

    def last_piece(self):
        """Wait for the other answers for the target to reach their last piece."""
        if not self.together:
            return
        with ENDS:
            st = ENDS_BY_TARGET[self.target]
            st[1] += 1
            rnd = st[2]
            self.release(st)
            deadline = time.monotonic() + float(self.together)
            while st[2] == rnd:
                left = deadline - time.monotonic()
                if left <= 0:
                    st[1] -= 1
                    break
                ENDS.wait(left)
            self.group = st[3].get(rnd, 1)

    def done(self):
        if not self.together:
            return
        with ENDS:
            st = ENDS_BY_TARGET[self.target]
            st[0] -= 1
            if st[0] == 0:
                del ENDS_BY_TARGET[self.target]
            else:
                self.release(st)

    def pause(self):
        r = self.rng.randrange(8)
        if r < 3:
            return
        time.sleep(0 if r < 6 else self.rng.uniform(0, self.most))

    def size(self):
        return self.rng.randint(1, self.piece)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def dispatch(self):
        self.status, self.sent, self.rule, self.together = 0, 0, None, None
        self.jitter = None
        self.t0 = time.time()
        scheme = urllib.parse.urlsplit(self.path).scheme.lower()
        if self.command == "CONNECT":
            self.mode = "connect"
        elif scheme in ("http", "https"):
            self.mode = "forward"
        elif self.path.startswith("/elsewhere/"):
            self.mode = "elsewhere"
        else:
            self.mode = "reverse"
        try:
            getattr(self, "do_" + self.mode)()
        except (OSError, http.client.HTTPException) as e:
            self.close_connection = True
            if not self.status:  # nothing sent yet: tell the client
                try:
                    self.answer(502, {}, ("faultproxy: %s\n" % e).encode())
                except OSError:
                    pass
        finally:
            if self.jitter:
                self.jitter.done()
                self.together = self.jitter.group
            self.write_log()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = \
        do_OPTIONS = do_CONNECT = dispatch

    def write_log(self):
        h = self.headers
        rec = {"method": self.command, "target": self.path, "mode": self.mode,
               "host": h.get("Host"), "range": h.get("Range"),
               "auth": h.get("Authorization") is not None,
               "status": self.status, "bytes": self.sent,
               "rule": self.rule.get("id") if self.rule else None,
               "t": round(self.t0, 3), "together": self.together}
        with LOG_LOCK:
            LOG_FILE.write(json.dumps(rec) + "\n")
            LOG_FILE.flush()

    # ---- request body -------------------------------------------------
    def body_pieces(self):
        """Yield the client's request body (Content-Length or chunked)."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size > 0:
                    data = self.rfile.read(min(size, CHUNK))
                    if not data:
                        raise ConnectionError("client closed mid-chunk")
                    size -= len(data)
                    yield data
                self.rfile.readline(65537)  # CRLF after the chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise ConnectionError("client closed mid-body")
                left -= len(data)
                yield data

    def drain_body(self):
        for _ in self.body_pieces():
            pass

    # ---- responses -----------------------------------------------------
    def answer(self, status, headers, body=b""):
        self.status = status
        self.send_response_only(status)
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.sent += len(body)

    def forward(self, netloc, path, headers, https=False, rewrite_location=False,
                send_body=True):
        """Send the request to netloc and stream the answer back."""
        rule = self.rule or {}
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = cls(netloc, timeout=120, blocksize=CHUNK)
        try:
            chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            length = self.headers.get("Content-Length")
            conn.putrequest(self.command, path, skip_host=True,
                            skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            body = None
            if send_body and chunked_in:
                conn.putheader("Transfer-Encoding", "chunked")
                body = self.body_pieces()
            elif send_body and length is not None:
                conn.putheader("Content-Length", length)
                body = self.body_pieces()
            else:
                self.drain_body()
            conn.endheaders(body, encode_chunked=body is not None and chunked_in)
            resp = conn.getresponse()
            self.relay_response(resp, rule, rewrite_location)
        finally:
            conn.close()

    def relay_response(self, resp, rule, rewrite_location):
        self.status = resp.status
        self.send_response_only(resp.status, resp.reason)
        skip = hop_headers(resp.msg)
        for k, v in resp.msg.items():
            if k.lower() in skip:
                continue
            if rewrite_location and k.lower() == "location":
                u = urllib.parse.urlsplit(v)
                if u.netloc == UPSTREAM.netloc:
                    v = u._replace(scheme="http",
                                   netloc="127.0.0.1:%d" % ARGS.port).geturl()
            self.send_header(k, v)
        for k, v in (rule.get("add_headers") or {}).items():
            self.send_header(k, str(v))
        no_body = (self.command == "HEAD" or resp.status in (204, 304)
                   or resp.status < 200)
        length = resp.getheader("Content-Length")
        lie = False
        if rule.get("length") is not None and not no_body:
            length, lie = str(rule["length"]), True
        elif rule.get("length_plus") is not None and not no_body and length is not None:
            length, lie = str(int(length) + int(rule["length_plus"])), True
        chunked_out = not no_body and not lie and (length is None or resp.chunked)
        jitter = self.jitter
        if jitter:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            jitter.pause()
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        body_len = resp.getheader("Content-Length")
        body_len = int(body_len) if body_len is not None else None
        cut = rule.get("cut_after")
        reset = rule.get("reset_after")
        if reset is not None:
            cut = reset
        flip = bool(rule.get("corrupt"))
        flip_at = rule.get("flip_at")
        drip = rule.get("drip")
        stall = rule.get("stall_after")
        if stall is not None:
            cut = stall
        held = []  # a burst's pieces, until its last one
        while not no_body:
            data = resp.read(jitter.size() if jitter else drip or CHUNK)
            if not data:
                break
            if flip:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
                flip = False
            if flip_at is not None and self.sent <= flip_at < self.sent + len(data):
                i = flip_at - self.sent
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
            if cut is not None:
                data = data[:max(cut - self.sent, 0)]
            last = (jitter is not None and body_len is not None
                    and self.sent + len(data) >= body_len)
            if last:
                jitter.last_piece()
            if data:
                held.append(b"%x\r\n%s\r\n" % (len(data), data)
                            if chunked_out else data)
                self.sent += len(data)
                if last or not (jitter and jitter.burst):
                    self.wfile.write(b"".join(held))
                    held = []
            if cut is not None and self.sent >= cut:
                break
            if drip:
                self.wfile.flush()
                time.sleep(0.1)
            if jitter and not held:
                jitter.pause()
        if held:
            self.wfile.write(b"".join(held))
        if stall is not None:
            # silence, the connection up, until the client gives up on it
            self.wfile.flush()
            select.select([self.connection], [], [], 600)
        if reset is not None:
            # an abortive close: the client sees ECONNRESET, not an end
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        elif cut is not None or lie:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.connection.close()
        elif chunked_out:
            self.wfile.write(b"0\r\n\r\n")
        if rule.get("trail") is not None and not no_body:
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(rule["trail"].encode())

    def client_headers(self, host):
        skip = hop_headers(self.headers) | {"host"}
        out = [("Host", host)] if host else []
        out += [(k, v) for k, v in self.headers.items() if k.lower() not in skip]
        return out

    # ---- modes -----------------------------------------------------------
    def do_reverse(self):
        if UPSTREAM is None:
            self.drain_body()
            return self.answer(502, {}, b"faultproxy: no --upstream\n")
        r = self.rule = pick_rule(self.command, self.path)
        if r is not None and "status" in r:
            self.drain_body()
            body = str(r.get("body", "")).encode()
            return self.answer(int(r["status"]), r.get("headers") or {}, body)
        if r is not None and "redirect" in r:
            self.drain_body()
            return self.answer(307, {"Location": r["redirect"] + self.path})
        if r is not None and "delay" in r:
            time.sleep(float(r["delay"]))
        if r is not None and "hold" in r:
            if r.get("came"):
                open(r["came"], "a").close()
            end = time.monotonic() + 600
            while not os.path.exists(r["hold"]) and time.monotonic() < end:
                time.sleep(0.05)
        if r is not None and r.get("jitter") is not None:
            self.jitter = Jitter(r["jitter"], self.path)
        self.forward(UPSTREAM.netloc, self.path,
                     self.client_headers(UPSTREAM.netloc),
                     https=UPSTREAM.scheme == "https", rewrite_location=True)

    def do_forward(self):
        u = urllib.parse.urlsplit(self.path)
        path = urllib.parse.urlunsplit(("", "", u.path or "/", u.query, ""))
        self.forward(u.netloc, path, self.client_headers(u.netloc),
                     https=u.scheme.lower() == "https")

    def do_elsewhere(self):
        if UPSTREAM is None:
            self.drain_body()
            return self.answer(502, {}, b"faultproxy: no --upstream\n")
        r = self.rule = pick_rule(self.command, self.path, elsewhere=True)
        if r is not None and "status" in r:
            self.drain_body()
            body = str(r.get("body", "")).encode()
            return self.answer(int(r["status"]), r.get("headers") or {}, body)
        path = self.path[len("/elsewhere"):]
        headers = [("Host", UPSTREAM.netloc)]
        if self.headers.get("Range"):
            headers.append(("Range", self.headers["Range"]))
        if ARGS.upstream_auth:
            cred = base64.b64encode(ARGS.upstream_auth.encode()).decode()
            headers.append(("Authorization", "Basic " + cred))
        self.forward(UPSTREAM.netloc, path, headers,
                     https=UPSTREAM.scheme == "https", send_body=False)

    def do_connect(self):
        host, _, port = self.path.rpartition(":")
        try:
            up = socket.create_connection((host.strip("[]"), int(port)), 30)
        except (OSError, ValueError) as e:
            self.close_connection = True
            return self.answer(502, {"Connection": "close"},
                               ("faultproxy: %s\n" % e).encode())
        self.close_connection = True
        self.status = 200
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        up.settimeout(None)
        cli = self.connection
        try:
            while True:
                ready, _, _ = select.select([cli, up], [], [])
                for s in ready:
                    data = s.recv(CHUNK)
                    if not data:
                        return
                    (up if s is cli else cli).sendall(data)
                    if s is up:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            up.close()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def process_request_thread(self, request, client_address):
        # Only the main thread takes SIGTERM, so it interrupts serve_forever.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        super().process_request_thread(request, client_address)


def main():
    global ARGS, LOG_FILE, UPSTREAM
    p = argparse.ArgumentParser(description="fault-injecting HTTP proxy")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--upstream")
    p.add_argument("--rules")
    p.add_argument("--upstream-auth")
    ARGS = p.parse_args()
    UPSTREAM = urllib.parse.urlsplit(ARGS.upstream) if ARGS.upstream else None
    LOG_FILE = open(ARGS.log, "a", encoding="utf-8")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    srv = Server(("127.0.0.1", ARGS.port), Handler)
    print("listening %d" % ARGS.port, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
