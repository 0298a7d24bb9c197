import time, uuid, threading
from conftest import wait_route, standalone_url
from test_sessions import persistent, cid_for

def test_diag(cluster_factory, redis_standalone, client_factory, topic):
    cl = cluster_factory(standalone_url(redis_standalone))
    a, b, c = cl
    cid1, cid2 = cid_for("s1"), cid_for("s2")
    s1 = persistent(client_factory, a, cid1, "311")
    s2 = persistent(client_factory, b, cid2, "311")
    for s in (s1, s2):
        assert s.subscribe(topic, 1) == [1]
    pub = client_factory(c, cid_for("p"), clean_session=False)
    wait_route(pub, s1, topic, qos=1)
    wait_route(pub, s2, topic, qos=1)
    n = 0
    def burst(k):
        nonlocal n
        for i in range(k):
            pub.publish(topic, f"m{n}".encode(), qos=1); n += 1
    burst(50)
    a.kill()
    s1.close()
    s1b = persistent(client_factory, b, cid1, "311")
    burst(50)
    a.restart()
    burst(100)
    time.sleep(2)
    for name, s in (("s1", s1b), ("s2", s2)):
        got = [m.payload for m in s.drain()]
        want = [f"m{i}".encode() for i in range(50 if name == "s1" else 0, n)]
        missing = [w for w in want if w not in got]
        print("MISSING", name, len(missing), missing[:20])
    print(a.log_tail(10)); print(b.log_tail(10)); print(c.log_tail(10))
