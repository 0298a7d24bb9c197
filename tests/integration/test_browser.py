"""MQTT over WebSocket from a real browser: headless Chromium, driven by
Selenium, loads a page (served by a python http.server on a loopback port
of the test's own) whose script is a small MQTT 3.1.1 client written in
the page itself (CONNECT, SUBSCRIBE, PUBLISH, PINGREQ as binary frames; no
library). It connects over ws:// and wss://, subscribes, publishes to a
paho TCP subscriber and receives what a paho TCP publisher sends; the test
reads the page's progress from the DOM.

The broker only accepts the page's origin (ws_allowed_origins), as a site
serving such a page would configure it. For wss:// the browser is told to
ignore the test PKI's certificate (--ignore-certificate-errors).

Skipped only when Chromium, its driver or Selenium is missing (Debian:
chromium, chromium-driver; PyPI: selenium; scripts/deps test installs
them).
"""
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import HOST
from harness.broker import FreePort
from harness.client import Client
from harness.ports import free_port
from test_tls import pki  # noqa: F401 (the module's PKI)

pytestmark = pytest.mark.starling_only

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>starling ws test</title></head>
<body>
<div id="state">starting</div>
<div id="pong">no</div>
<ul id="messages"></ul>
<pre id="log"></pre>
<script>
"use strict";
const q = new URLSearchParams(location.search);
const url = q.get("url"), topic = q.get("topic"), cid = q.get("cid");
const $ = (id) => document.getElementById(id);
function log(s) { $("log").textContent += s + "\n"; }
function state(s) { $("state").textContent = s; log("state: " + s); }

const utf8 = new TextEncoder(), utf8d = new TextDecoder();
function str(s) {
  const b = utf8.encode(s);
  return [b.length >> 8, b.length & 255, ...b];
}
function packet(first, body) {
  const len = [];
  let n = body.length;
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 128;
    len.push(d);
  } while (n > 0);
  return new Uint8Array([first, ...len, ...body]);
}
const connect = () => packet(0x10, [...str("MQTT"), 4, 0x02, 0, 30,
                                    ...str(cid)]);
const subscribe = (id, filter) => packet(0x82, [id >> 8, id & 255,
                                                ...str(filter), 0]);
const publish = (t, text) => packet(0x30, [...str(t), ...utf8.encode(text)]);
const pingreq = () => new Uint8Array([0xc0, 0]);

let buf = new Uint8Array(0);
function take() {
  // one whole packet from buf, or null
  let mult = 1, len = 0, i = 1;
  for (;;) {
    if (i >= buf.length) return null;
    const b = buf[i++];
    len += (b & 127) * mult;
    mult *= 128;
    if (!(b & 128)) break;
  }
  if (buf.length < i + len) return null;
  const p = {type: buf[0] >> 4, body: buf.slice(i, i + len)};
  buf = buf.slice(i + len);
  return p;
}

const ws = new WebSocket(url, ["mqtt"]);
ws.binaryType = "arraybuffer";
ws.onopen = () => {
  state("open (" + ws.protocol + ")");
  ws.send(connect());
};
ws.onerror = () => log("error event");
ws.onclose = (e) => state("closed " + e.code);
ws.onmessage = (e) => {
  if (!(e.data instanceof ArrayBuffer)) {
    log("not binary");
    return;
  }
  const add = new Uint8Array(e.data);
  const all = new Uint8Array(buf.length + add.length);
  all.set(buf);
  all.set(add, buf.length);
  buf = all;
  for (let p = take(); p; p = take()) {
    if (p.type === 2) {              // CONNACK
      if (p.body[1] !== 0) { state("refused " + p.body[1]); return; }
      state("connected");
      ws.send(subscribe(1, topic + "/to-browser"));
    } else if (p.type === 9) {       // SUBACK
      state("subscribed");
      // a PUBLISH and a PINGREQ in one frame
      const a = publish(topic + "/from-browser", "hello from the browser");
      const b = pingreq();
      const both = new Uint8Array(a.length + b.length);
      both.set(a);
      both.set(b, a.length);
      ws.send(both);
    } else if (p.type === 13) {      // PINGRESP
      $("pong").textContent = "yes";
    } else if (p.type === 3) {       // PUBLISH (QoS 0)
      const tlen = p.body[0] << 8 | p.body[1];
      const t = utf8d.decode(p.body.slice(2, 2 + tlen));
      const li = document.createElement("li");
      li.textContent = t + " " + utf8d.decode(p.body.slice(2 + tlen));
      $("messages").appendChild(li);
    } else {
      log("packet type " + p.type);
    }
  }
};
</script>
</body></html>
"""


class PageServer:
    """The page on http://127.0.0.1:PORT/ (a thread of its own)."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/":
                    self.send_error(404)
                    return
                body = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.origin = f"http://{HOST}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def page_server():
    s = PageServer()
    yield s
    s.close()


def make_driver(ignore_cert_errors):
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium or chromedriver is not installed (Debian "
                    "packages chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--no-first-run",
              "--disable-extensions", "--window-size=800,600"):
        opts.add_argument(a)
    if ignore_cert_errors:
        opts.add_argument("--ignore-certificate-errors")
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                            options=opts)


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c._stop.set()
    for c in made:
        c.close()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_browser_pub_sub(broker_factory, pki, page_server, clients, topic,
                         scheme):
    b = broker_factory(ws_port=FreePort(), wss_port=FreePort(),
                       tls_cert_file=pki.server_pem,
                       tls_key_file=pki.server_key,
                       ws_allowed_origins=page_server.origin)
    port = b.ports["ws_port" if scheme == "ws" else "wss_port"]
    driver = make_driver(ignore_cert_errors=scheme == "wss")
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def text(el):
            return driver.find_element(By.ID, el).text

        def wait_for(cond, what, timeout=15):
            try:
                WebDriverWait(driver, timeout).until(lambda d: cond())
            except Exception:
                raise AssertionError(
                    f"{what}; page state {text('state')!r}, log:\n"
                    f"{driver.find_element(By.ID, 'log').text}\n"
                    f"broker log:\n{b.log_tail(30)}") from None

        listener = Client(b)
        clients.append(listener)
        listener.connect()
        listener.subscribe(f"{topic}/from-browser")

        cid = f"browser-{scheme}"
        driver.get(f"{page_server.origin}/?url={scheme}://{HOST}:{port}"
                   f"/mqtt&topic={topic}&cid={cid}")
        wait_for(lambda: text("state") == "subscribed",
                 "the page did not subscribe")
        assert b.wait_log(rf"client '{cid}' 127\.0\.0\.1:\d+ connected")

        m = listener.expect_message(timeout=10)
        assert (m.topic, m.payload) == (f"{topic}/from-browser",
                                        b"hello from the browser")
        wait_for(lambda: text("pong") == "yes", "no PINGRESP in the page")

        publisher = Client(b)
        clients.append(publisher)
        publisher.connect()
        publisher.publish(f"{topic}/to-browser", "hello browser ✓")
        want = f"{topic}/to-browser hello browser ✓"
        wait_for(lambda: want in text("messages"),
                 "the page did not receive the message")
    finally:
        driver.quit()


def test_browser_origin_refused(broker_factory, page_server):
    """A page from another origin cannot open the WebSocket (403)."""
    b = broker_factory(ws_port=FreePort(),
                       ws_allowed_origins=f"http://{HOST}:{free_port()}")
    driver = make_driver(ignore_cert_errors=False)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
        driver.get(f"{page_server.origin}/?url=ws://{HOST}:"
                   f"{b.ports['ws_port']}/mqtt&topic=t&cid=refused")
        WebDriverWait(driver, 15).until(
            lambda d: d.find_element(By.ID, "state").text.startswith(
                "closed"))
        assert driver.find_element(By.ID, "state").text == "closed 1006"
        assert b.wait_log(r"WebSocket upgrade from .* refused: 403 origin "
                          r"not allowed")
    finally:
        driver.quit()
