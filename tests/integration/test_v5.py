"""Basic MQTT 5 behaviour through paho (the v3 suites cover the core)."""
import paho.mqtt.subscribeoptions as so


def test_v5_connect_and_pubsub(client_factory, topic):
    sub = client_factory(protocol="5")
    assert sub.subscribe(topic, 1) == [1]
    pub = client_factory(protocol="5")
    pub.publish(topic, b"five", qos=1)
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"five", 1)


def test_v5_and_v3_interoperate(client_factory, topic):
    sub5 = client_factory(protocol="5")
    sub5.subscribe(topic, 2)
    sub3 = client_factory(protocol="311")
    sub3.subscribe(topic, 2)
    client_factory(protocol="31").publish(topic, b"mixed", qos=2)
    assert sub5.expect_message().payload == b"mixed"
    assert sub3.expect_message().payload == b"mixed"


def test_v5_no_local(client_factory, topic):
    c = client_factory(protocol="5")
    c.subscribe([(topic, so.SubscribeOptions(qos=1, noLocal=True)),
                 (topic + "/end", so.SubscribeOptions(qos=2))])
    c.publish(topic, b"mine", qos=1)
    client_factory(protocol="5").publish(topic + "/end", b"end", qos=2)
    assert c.expect_message().topic == topic + "/end"


def test_v5_retain_as_published(client_factory, topic):
    c = client_factory(protocol="5")
    c.subscribe([(topic, so.SubscribeOptions(qos=1, retainAsPublished=True))])
    client_factory().publish(topic, b"kept", qos=1, retain=True)
    m = c.expect_message()
    assert (m.payload, m.retain) == (b"kept", True)


def test_v5_retain_handling_do_not_send(client_factory, topic):
    client_factory().publish(topic, b"old", qos=1, retain=True)
    c = client_factory(protocol="5")
    c.subscribe([(topic, so.SubscribeOptions(
        qos=1, retainHandling=so.SubscribeOptions.RETAIN_DO_NOT_SEND)),
        (topic + "/end", so.SubscribeOptions(qos=2))])
    client_factory().publish(topic + "/end", b"end", qos=2)
    assert c.expect_message().topic == topic + "/end"
