#!/usr/bin/env python3
"""A small shop API for the detection test, run behind nginx with the module.

Usage: upstream.py PORT

The API's logins return a new token every time (and 401 when refused); the web login form at
/login answers a refused login with the form again and an error in the page, as web forms do; orders belong to users (403 for someone else's, 404 for
none); /api/flaky fails twice out of three; everything it does not know is a 404.
"""

import json
import secrets
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USERS = {
    "alice": ("wonderland", "customer"),
    "bob": ("builder", "customer"),
    "carol": ("c4r0l!", "customer"),
    "dave": ("d4v3-2026", "customer"),
    "erin": ("erin-passw0rd", "customer"),
    "frank": ("frank1984", "customer"),
    "grace": ("hopper", "customer"),
    "heidi": ("heidi#1", "customer"),
    "ivan": ("ivan-the-great", "customer"),
    "judy": ("judy123", "customer"),
    "root": ("admin-s3cr3t", "admin"),
}
# Credential-stuffing hits: leaked pairs that still work.
for i in range(12):
    USERS[f"leaked{i}@example.com"] = (f"Summer{i}!", "customer")
for i in range(14):
    USERS[f"colleague{i}"] = (f"office-{i}", "customer")

# Orders 1000-1999 exist; each user owns a few.
OWNERS = {}
for i, name in enumerate(sorted(USERS)):
    for k in range(4):
        OWNERS[1000 + i * 4 + k] = name

tokens = {}
flaky = {"n": 0}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def html(self, status, text, location=None):
        data = f"<!doctype html><title>Sign in</title>{text}".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        kind = self.headers.get("Content-Type", "")
        if "json" in kind:
            try:
                value = json.loads(raw or b"{}")
                return value if isinstance(value, dict) else {}
            except ValueError:
                return {}
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode("utf-8", "replace")).items()}

    def user(self, query, body):
        token = (
            query.get("token", [None])[0]
            or self.headers.get("X-Api-Token")
            or (body.get("hash") or {}).get("token")
        )
        with lock:
            return tokens.get(token)

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        body = self.body() if method in ("POST", "PUT", "PATCH") else {}
        parts = [p for p in path.split("/") if p]

        if path == "/login":
            form = '<form method="post"><input name="user"><input name="password" type="password"></form>'
            if method != "POST":
                return self.html(200, form)
            name, password = body.get("user"), body.get("password")
            if name in USERS and USERS[name][0] == password:
                return self.html(302, "", location="/shop/account.html")
            return self.html(200, "<p>invalid credentials</p>" + form)
        if path == "/api/login" and method == "POST":
            name, password = body.get("user"), body.get("password")
            if name in USERS and USERS[name][0] == password:
                token = secrets.token_hex(16)
                with lock:
                    tokens[token] = name
                return self.reply(200, {"hash": {"token": token}, "user": {"role": USERS[name][1]}})
            return self.reply(401, {"error": "invalid credentials"})
        if path == "/api/signup" and method == "POST":
            token = secrets.token_hex(16)
            with lock:
                tokens[token] = body.get("user") or "new"
            return self.reply(201, {"hash": {"token": token}, "user": {"role": "customer"}})
        if path == "/api/search":
            return self.reply(200, {"results": [], "q": query.get("q", [""])[0][:50]})
        if path == "/api/products":
            return self.reply(200, {"items": [{"id": i} for i in range(1, 21)]})
        if len(parts) == 3 and parts[:2] == ["api", "products"] and parts[2].isdigit():
            n = int(parts[2])
            return self.reply(200, {"id": n, "name": f"Item {n}"}) if 1 <= n <= 500 else self.reply(404, {"error": "no such product"})
        if path == "/api/flaky":
            with lock:
                flaky["n"] += 1
                fail = flaky["n"] % 3 != 0
            return self.reply(503, {"error": "try again"}) if fail else self.reply(200, {"ok": True})

        user = self.user(query, body)
        if path == "/api/account":
            return self.reply(200, {"user": user}) if user else self.reply(401, {"error": "login first"})
        if path.startswith("/api/dashboard/"):
            return self.reply(200, {"open": 3, "alerts": []}) if user else self.reply(401, {})
        if path == "/api/cart" or path == "/api/orders" or path.startswith("/api/billing/"):
            return self.reply(200 if method == "GET" else 201, {"ok": True}) if user else self.reply(401, {})
        if path.startswith("/api/sms/"):
            return self.reply(202, {"queued": True})
        if len(parts) == 3 and parts[:2] == ["api", "orders"] and parts[2].isdigit():
            if not user:
                return self.reply(401, {"error": "login first"})
            owner = OWNERS.get(int(parts[2]))
            if owner is None:
                return self.reply(404, {"error": "no such order"})
            return self.reply(200, {"id": parts[2]}) if owner == user else self.reply(403, {"error": "not yours"})
        if len(parts) == 4 and parts[:3] == ["api", "admin", "users"] and parts[3].isdigit():
            return self.reply(200, {"updated": parts[3]}) if user == "root" else self.reply(403, {})
        if path == "/api/admin/users":
            return self.reply(200, {"users": list(range(1, 200))}) if user == "root" else self.reply(403, {})
        return self.reply(404, {"error": "not found"})

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
