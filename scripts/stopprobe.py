#!/usr/bin/env python3
"""Graceful-stop probe (the prefork chapter's table): 40 busy keep-alive clients and 8
clients opening a connection per request against `iomodels serve MODEL`, then SIGNAL after
one second; prints what every client saw.

usage: scripts/stopprobe.py SIGNAL EXE MODEL [serve args...]"""
import os, signal, socket, subprocess, sys, threading, time
sig = getattr(signal, sys.argv[1]); exe = sys.argv[2]; model = sys.argv[3]; extra = sys.argv[4:]
port = 18000 + os.getpid() % 1000
srv = subprocess.Popen([exe, "serve", model, "--port", str(port), *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
for line in srv.stderr:
    if "listening" in line: break
threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
REQ = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
lock = threading.Lock(); out = {}
def bump(k):
    with lock: out[k] = out.get(k, 0) + 1
stop_at = [None]
def busy():
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(5)
    buf = b""
    while True:
        try:
            s.sendall(REQ)
        except OSError as e:
            bump("busy: send failed " + type(e).__name__); return
        try:
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    bump("busy: EOF with no answer (after stop)" if stop_at[0] else "busy: EOF before stop"); return
                buf += d
        except ConnectionResetError:
            bump("busy: reset"); return
        except socket.timeout:
            bump("busy: timeout"); return
        head, _, buf = buf.partition(b"\r\n\r\n")
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        while len(buf) < n: buf += s.recv(65536)
        buf = buf[n:]
        bump("answered")
        if b"connection: close" in head.lower():
            bump("busy: told close, ended cleanly"); s.close(); return
def fresh():
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
        except ConnectionRefusedError:
            bump("fresh: refused at connect"); return
        except socket.timeout:
            bump("fresh: connect timed out"); return
        try:
            s.settimeout(5); s.sendall(REQ); d = s.recv(65536)
            if d.startswith(b"HTTP/1.1 200"): bump("fresh: answered")
            else: bump("fresh: EOF with no answer")
        except ConnectionResetError: bump("fresh: reset after connect")
        except (socket.timeout, OSError) as e: bump("fresh: " + type(e).__name__)
        s.close()
        if stop_at[0] and time.time() - stop_at[0] > 4: return
ts = [threading.Thread(target=busy) for _ in range(40)] + [threading.Thread(target=fresh) for _ in range(8)]
for t in ts: t.start()
time.sleep(1.0)
stop_at[0] = time.time(); srv.send_signal(sig)
rc = srv.wait(timeout=30); took = time.time() - stop_at[0]
for t in ts: t.join(timeout=10)
print(f"{sys.argv[1]} {model} {' '.join(extra)}: exit {rc} after {took:.2f}s")
for k in sorted(out): print(f"  {k}: {out[k]}")
