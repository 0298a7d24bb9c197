#!/usr/bin/env python3
"""
auth_service.py - an example authentication / authorization / webhook
service for Starling (auth_http_url, acl_http_url, webhook_url), Python
standard library only.

Users and rules come from a JSON file (see users.json), re-read when it
changes:

  {"users": {
     "alice": {"password": "plain text (demo only)"},
     "bob":   {"password_hash": "$7$101$...",        (mosquitto_passwd)
               "superuser": false,
               "acl": [{"permission": "allow", "action": "all",
                        "topic": "bob/#"}]}},
   "acl": [{"permission": "allow", "action": "subscribe",
            "topic": "public/#", "username": "*"}],
   "unknown_users": "ignore"}

Endpoints (JSON bodies, or the same fields in a GET query string):
  POST /mqtt/auth     {"clientid", "username", "password", ...}
        -> {"result": "allow", "is_superuser": bool, "acl": [...]}
           {"result": "deny"} (wrong password)
           {"result": unknown_users} (user not in the file)
  POST /mqtt/acl      {"action", "topic", "clientid", "username", ...}
        -> the first matching rule of "acl" ({"result": "allow"|"deny"}),
           else {"result": "ignore"}
  POST /mqtt/webhook  an event; logged on stdout
  GET  /health        200

The per-user "acl" lists are sent with the CONNECT answer (EMQX 5.8
format) so the broker authorizes without calling /mqtt/acl for them.

Usage: auth_service.py [--port 8991] [--file users.json]
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


def check_hash(stored, password):
    """mosquitto_passwd hashes: $7$ITER$SALT$HASH (PBKDF2-SHA512) or
    $6$SALT$HASH (SHA512(password + salt))."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            salt = base64.b64decode(parts[3])
            want = base64.b64decode(parts[4])
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt,
                                      int(parts[2]))
        elif len(parts) == 4 and parts[1] == "6":
            salt = base64.b64decode(parts[2])
            want = base64.b64decode(parts[3])
            got = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def topic_matches(filt, topic):
    f, t = filt.split("/"), topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


class Store:
    """The JSON file, re-read when its modification time changes."""

    def __init__(self, path):
        self.path = path
        self.mtime = None
        self.data = {}
        self.lock = threading.Lock()

    def get(self):
        with self.lock:
            try:
                mtime = os.stat(self.path).st_mtime
                if mtime != self.mtime:
                    with open(self.path) as f:
                        self.data = json.load(f)
                    self.mtime = mtime
                    print(f"loaded {self.path}: "
                          f"{len(self.data.get('users', {}))} users",
                          flush=True)
            except (OSError, ValueError) as e:
                print(f"cannot load {self.path}: {e}", file=sys.stderr,
                      flush=True)
            return self.data


def authenticate(data, req):
    user = data.get("users", {}).get(req.get("username") or "")
    if user is None:
        return {"result": data.get("unknown_users", "ignore")}
    password = req.get("password") or ""
    if "password_hash" in user:
        ok = check_hash(user["password_hash"], password)
    else:
        ok = hmac.compare_digest(str(user.get("password", "")).encode(),
                                 password.encode())
    if not ok:
        return {"result": "deny"}
    reply = {"result": "allow",
             "is_superuser": bool(user.get("superuser", False))}
    if "acl" in user:
        reply["acl"] = user["acl"]
    return reply


def authorize(data, req):
    action = req.get("action")
    topic = req.get("topic", "")
    for rule in data.get("acl", []):
        who = rule.get("username", "*")
        if who != "*" and who != req.get("username"):
            continue
        if rule.get("action", "all") not in ("all", action):
            continue
        filt = rule.get("topic", "#")
        filt = filt.replace("${username}", req.get("username") or "")
        filt = filt.replace("${clientid}", req.get("clientid") or "")
        if topic_matches(filt, topic):
            return {"result": rule.get("permission", "deny")}
    return {"result": "ignore"}


def make_handler(store):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def request_fields(self):
            url = urlsplit(self.path)
            fields = dict(parse_qsl(url.query, keep_blank_values=True))
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                try:
                    fields.update(json.loads(self.rfile.read(n)))
                except ValueError:
                    return url.path, None
            return url.path, fields

        def reply(self, status, obj=None):
            body = json.dumps(obj).encode() if obj is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def handle_any(self):
            path, req = self.request_fields()
            if req is None:
                self.reply(400, {"error": "bad JSON"})
            elif path == "/health":
                self.reply(200, {"status": "ok"})
            elif path == "/mqtt/auth":
                self.reply(200, authenticate(store.get(), req))
            elif path == "/mqtt/acl":
                self.reply(200, authorize(store.get(), req))
            elif path == "/mqtt/webhook":
                print("event " + json.dumps(req), flush=True)
                self.reply(204)
            else:
                self.reply(404, {"error": "not found"})

        do_GET = handle_any
        do_POST = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser(description="Starling example auth service")
    ap.add_argument("--port", type=int, default=8991)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--file", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "users.json"))
    a = ap.parse_args()
    store = Store(a.file)
    store.get()
    httpd = ThreadingHTTPServer((a.bind, a.port), make_handler(store))
    httpd.daemon_threads = True
    print(f"auth service on {a.bind}:{a.port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
