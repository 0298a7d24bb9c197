"""
A scriptable HTTP auth / ACL / webhook endpoint for the black-box tests,
speaking the EMQX 5 HTTP authenticator contract that Starling's
auth_http_url and acl_http_url use.

    with AuthServer() as srv:
        srv.users["alice"] = User("pw", superuser=False, acl=[...])
        srv.auth_replies["slowpoke"] = Reply.allow(delay=3)   # scripted
        srv.acl_rules.append(("publish", "sensors/#", "allow"))
        broker = broker_factory(auth_http_url=srv.url("/auth"), ...)
        ...
        assert srv.count("/auth", username="alice") == 1

Paths: /auth (authentication), /acl (authorization), /hook (webhook
events, kept in srv.events); anything else is 404. Requests are recorded
(srv.requests) and counted. Each connection has its own thread (HTTP/1.1
keep-alive), so a delayed answer never holds up another connection.

Also runnable on its own for manual tests:
    python3 auth_server.py --port 8991 --user alice:pw --superuser root:pw
"""
import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


def topic_matches(filt, topic):
    """MQTT filter matching (+, #, and '$' topics not matched by leading
    wildcards)."""
    f, t = filt.split("/"), topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


class Reply:
    """One scripted answer: HTTP status, a JSON object or raw body bytes,
    a delay before answering, or a dropped connection (close=True)."""

    def __init__(self, status=200, obj=None, body=None, delay=0.0,
                 close=False):
        self.status = status
        self.obj = obj
        self.body = body
        self.delay = delay
        self.close = close

    @classmethod
    def allow(cls, superuser=False, acl=None, delay=0.0, **extra):
        obj = {"result": "allow", "is_superuser": superuser, **extra}
        if acl is not None:
            obj["acl"] = acl
        return cls(obj=obj, delay=delay)

    @classmethod
    def deny(cls, delay=0.0):
        return cls(obj={"result": "deny"}, delay=delay)

    @classmethod
    def ignore(cls, delay=0.0):
        return cls(obj={"result": "ignore"}, delay=delay)

    @classmethod
    def no_content(cls):
        return cls(status=204)

    @classmethod
    def status_only(cls, status):
        return cls(status=status, body=b"")

    @classmethod
    def garbage(cls):
        return cls(body=b"<html>surely not JSON")

    def payload(self):
        if self.body is not None:
            return self.body
        if self.obj is not None:
            return json.dumps(self.obj).encode()
        return b""


class User:
    """A user the /auth endpoint knows: the right password is allowed
    (with its superuser flag and ACL rules), a wrong one denied."""

    def __init__(self, password, superuser=False, acl=None):
        self.password = password
        self.superuser = superuser
        self.acl = acl


class AuthServer:
    def __init__(self, host="127.0.0.1", port=0):
        self.users = {}         # username -> User
        self.auth_replies = {}  # username -> Reply (before users)
        self.auth_default = Reply.ignore()
        self.acl_replies = {}   # topic -> Reply (before acl_rules)
        self.acl_rules = []     # (action|"all", filter, result), first wins
        self.acl_default = Reply.ignore()
        self.hook_statuses = []  # statuses for the next /hook POSTs
        self.requests = []      # (path, fields dict) in arrival order
        self.events = []        # webhook bodies
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = None

    # ------------------------------------------------------------ control

    @property
    def port(self):
        return self.httpd.server_address[1]

    def url(self, path="/auth", scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       name="auth-server", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread:
            self.thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ queries

    def count(self, path=None, **fields):
        """Requests to path (all paths when None) whose fields include
        the given ones (compared as strings)."""
        with self.lock:
            return sum(1 for p, f in self.requests
                       if (path is None or p == path) and all(
                           str(f.get(k)) == str(v) for k, v in fields.items()))

    def last(self, path):
        with self.lock:
            for p, f in reversed(self.requests):
                if p == path:
                    return f
        return None

    def wait_events(self, n, timeout=5.0, **fields):
        """Wait until n webhook events matching fields arrived; returns
        them (fewer on timeout)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = [e for e in self.events
                       if all(e.get(k) == v for k, v in fields.items())]
                left = deadline - time.monotonic()
                if len(got) >= n or left <= 0:
                    return got
                self.changed.wait(left)

    # ------------------------------------------------------------ answers

    def answer_auth(self, f):
        name = f.get("username") or ""
        if name in self.auth_replies:
            return self.auth_replies[name]
        user = self.users.get(name)
        if user is None:
            return self.auth_default
        if f.get("password") != user.password:
            return Reply.deny()
        return Reply.allow(user.superuser, user.acl)

    def answer_acl(self, f):
        topic = f.get("topic", "")
        if topic in self.acl_replies:
            return self.acl_replies[topic]
        for action, filt, result in self.acl_rules:
            if action in ("all", f.get("action")) and topic_matches(filt,
                                                                    topic):
                return Reply(obj={"result": result})
        return self.acl_default

    def answer_hook(self, f):
        with self.lock:
            status = self.hook_statuses.pop(0) if self.hook_statuses else 200
            if status < 300:
                self.events.append(f)
                self.changed.notify_all()
        return Reply.status_only(status)

    def answer(self, path, f):
        with self.changed:
            self.requests.append((path, f))
            self.changed.notify_all()
        if path == "/auth":
            return self.answer_auth(f)
        if path == "/acl":
            return self.answer_acl(f)
        if path == "/hook":
            return self.answer_hook(f)
        return Reply.status_only(404)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def log_message(self, *args):
                pass

            def fields(self):
                url = urlsplit(self.path)
                f = dict(parse_qsl(url.query, keep_blank_values=True))
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if raw:
                    try:
                        f.update(json.loads(raw))
                    except ValueError:
                        f["_raw"] = raw
                f["_headers"] = dict(self.headers)
                return url.path, f

            def handle_any(self):
                path, f = self.fields()
                r = server.answer(path, f)
                if r.delay:
                    time.sleep(r.delay)
                if r.close:
                    self.close_connection = True
                    return
                body = r.payload()
                self.send_response(r.status)
                if r.status != 204:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if r.status != 204:
                    self.wfile.write(body)

            do_GET = handle_any
            do_POST = handle_any

        return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8991)
    ap.add_argument("--user", action="append", default=[],
                    help="NAME:PASSWORD, allowed")
    ap.add_argument("--superuser", action="append", default=[],
                    help="NAME:PASSWORD, allowed as superuser")
    a = ap.parse_args()
    srv = AuthServer(port=a.port)
    for spec, su in [(u, False) for u in a.user] + [(u, True)
                                                   for u in a.superuser]:
        name, _, pw = spec.partition(":")
        srv.users[name] = User(pw, superuser=su)
    print(f"auth server on {srv.url('/auth')}, acl {srv.url('/acl')}, "
          f"webhooks {srv.url('/hook')}", flush=True)
    try:
        srv.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
