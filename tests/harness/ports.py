"""Free loopback ports."""
import random
import socket

from harness import HOST


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_pair(avoid=()):
    """A loopback port p such that p and p + 10000 (a cluster bus) are
    free, both below the ephemeral range: no outgoing connection or
    free_port() can take them while a server is down for a restart. p is
    neither in `avoid` nor 10000 away from a port in it."""
    top = min(ephemeral_low(), 65536) - 10001
    while True:
        p = random.randint(min(10000, top - 1000), top)
        if p in avoid or p + 10000 in avoid or p - 10000 in avoid:
            continue
        if _bindable(p) and _bindable(p + 10000):
            return p
