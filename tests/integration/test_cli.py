"""The starling command line: --help, bad keys, config file, STARLING_* env,
precedence flag > env > file, exit codes."""
import socket

import pytest

from harness import raw

pytestmark = pytest.mark.starling_only

KEYS = ["bind", "port", "log_level", "max_packet_size",
        "max_inflight_messages", "max_queued_messages", "queue_drop",
        "max_connections", "allow_zero_length_clientid", "retain_available",
        "max_keepalive", "connect_timeout", "max_topic_length",
        "max_topic_levels", "max_subscriptions", "receive_maximum",
        "max_topic_alias", "max_qos", "persistent_client_expiration",
        "max_session_expiry", "shared_subscription_strategy",
        "subscribe_deny"]


def test_help_lists_every_key(starling_run):
    r = starling_run("--help")
    assert r.returncode == 0
    missing = [k for k in KEYS if k not in r.stdout + r.stderr]
    assert not missing, f"--help does not mention {missing}"


def test_version(starling_run):
    r = starling_run("--version")
    assert r.returncode == 0
    assert (r.stdout + r.stderr).strip()


def test_unknown_flag_is_an_error(starling_run):
    r = starling_run("--no_such_key", "1", "--check-config")
    assert r.returncode == 1
    assert "no_such_key" in r.stderr + r.stdout


def test_bad_value_is_an_error(starling_run):
    r = starling_run("--max_packet_size", "abc", "--check-config")
    assert r.returncode == 1
    assert "max_packet_size" in r.stderr + r.stdout


def test_unknown_env_variable_is_an_error(starling_run):
    r = starling_run("--check-config", env={"STARLING_NO_SUCH_KEY": "1"})
    assert r.returncode == 1
    assert "STARLING_NO_SUCH_KEY" in r.stderr + r.stdout


def test_bad_config_file_line_named(starling_run, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("# comment\nport 1884\nmax_qos banana\n")
    r = starling_run("-c", str(conf), "--check-config")
    assert r.returncode == 1
    out = r.stderr + r.stdout
    assert "bad.conf" in out and "3" in out and "max_qos" in out


def test_check_config_ok(starling_run, tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text("port 1884\nmax_inflight_messages 50\n"
                    "queue_drop drop_oldest\n")
    r = starling_run("-c", str(conf), "--check-config")
    assert r.returncode == 0, r.stderr


def zero_id_accepted(b):
    with raw.RawClient(b.host, b.port) as r:
        return r.connect("", clean=True).rc == 0


def test_config_file_applies(broker_factory, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("allow_zero_length_clientid false\n")
    b = broker_factory(args=["-c", str(conf)])
    assert not zero_id_accepted(b)


def test_env_applies(broker_factory):
    b = broker_factory(env={"STARLING_ALLOW_ZERO_LENGTH_CLIENTID": "false"})
    assert not zero_id_accepted(b)


def test_flag_beats_env_beats_file(broker_factory, tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("allow_zero_length_clientid false\n")
    b = broker_factory(args=["-c", str(conf)],
                       env={"STARLING_ALLOW_ZERO_LENGTH_CLIENTID": "true"})
    assert zero_id_accepted(b)  # env over file
    b = broker_factory(args=["-c", str(conf)],
                       env={"STARLING_ALLOW_ZERO_LENGTH_CLIENTID": "true"},
                       allow_zero_length_clientid=False)
    assert not zero_id_accepted(b)  # flag over env


def test_port_in_use_is_a_runtime_failure(starling_run):
    extra = ["--http_port", "0"] if "http_port" in starling_run(
        "--help").stdout else []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = starling_run("--bind", "127.0.0.1", "--port", str(port), *extra)
    assert r.returncode == 2, r.stderr
    assert str(port) in r.stderr + r.stdout
