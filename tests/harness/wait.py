"""Waiting with deadlines: for a condition to hold, for a port to accept."""
import socket
import subprocess
import time

from harness import HOST


def poll(pred, timeout, step=0.05):
    """Call pred() every `step` seconds until it returns a true value or
    `timeout` seconds have passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def wait_until(pred, timeout, what, step=0.05):
    """Wait until pred() returns a true value (returned); AssertionError
    naming `what` after `timeout` seconds. `what` may be a function, called
    for the message only when the wait fails."""
    value = poll(pred, timeout, step)
    if not value:
        if callable(what):
            what = what()
        raise AssertionError(f"timed out after {timeout} s: {what}")
    return value


def wait_port(port, timeout, proc=None, host=HOST):
    """Wait until host:port accepts a TCP connection: True, or False once
    `timeout` passes or the process `proc` (a Popen, when given) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            pass
        if proc is None:
            time.sleep(0.02)
            continue
        try:  # waits on the process, returning early if it dies
            proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            pass
    return False
