"""The topic tree: building, parsing back, refusing what is not ours, subscriptions."""

from __future__ import annotations

import pytest

from wire import (PREFIX, Ack, Batch, Presence, ReplicaDelta, ReplicaSnapshot, SnapshotRequest, Table, Topic,
                  TopicKind, WireTopicError, acks_topic, batches_topic, deltas_topic, host_subscriptions,
                  is_site_id, parse_topic, presence_topic, shared, site_publish_topics, site_subscriptions,
                  snapshot_filter, snapshot_requests_topic, snapshot_topic, topic_of)

SITE = "SIM-077-001"


def test_the_tree():
    assert batches_topic(SITE) == "edgepos/v1/sites/SIM-077-001/batches"
    assert presence_topic(SITE) == "edgepos/v1/sites/SIM-077-001/presence"
    assert snapshot_requests_topic(SITE) == "edgepos/v1/sites/SIM-077-001/snapshot-requests"
    assert acks_topic(SITE) == "edgepos/v1/sites/SIM-077-001/acks"
    assert snapshot_topic(Table.STOP_LIST, 0) == "edgepos/v1/replica/stop_list/snapshot/0"
    assert snapshot_topic("fuel_cards", 12) == "edgepos/v1/replica/fuel_cards/snapshot/12"
    assert deltas_topic(Table.CLUB_ACCOUNTS) == "edgepos/v1/replica/club_accounts/deltas"
    assert snapshot_filter() == "edgepos/v1/replica/+/snapshot/+"
    assert snapshot_filter(Table.TARIFFS) == "edgepos/v1/replica/tariffs/snapshot/+"


def test_parse_gives_back_what_was_built():
    for make, kind in [(batches_topic, TopicKind.BATCHES), (presence_topic, TopicKind.PRESENCE),
                       (snapshot_requests_topic, TopicKind.SNAPSHOT_REQUESTS), (acks_topic, TopicKind.ACKS)]:
        t = make(SITE)
        assert parse_topic(t) == Topic(kind, site_id=SITE)
        assert str(parse_topic(t)) == t
    for table in Table:
        assert parse_topic(deltas_topic(table)) == Topic(TopicKind.DELTAS, table=table)
        assert parse_topic(snapshot_topic(table, 99_999)) == Topic(TopicKind.SNAPSHOT, table=table, part=99_999)
        assert str(parse_topic(snapshot_topic(table, 3))) == snapshot_topic(table, 3)


def test_qos_and_retain():
    assert all(k.qos == 1 for k in TopicKind)
    assert {k for k in TopicKind if k.retain} == {TopicKind.PRESENCE, TopicKind.SNAPSHOT}


def test_topic_of_every_message():
    assert topic_of(Batch(SITE, 1, (), 0)) == batches_topic(SITE)
    assert topic_of(Presence(SITE, True, 0, "1", {})) == presence_topic(SITE)
    assert topic_of(SnapshotRequest(SITE, Table.PRODUCTS, 0)) == snapshot_requests_topic(SITE)
    assert topic_of(Ack(SITE, 0)) == acks_topic(SITE)
    assert topic_of(ReplicaSnapshot(Table.PRODUCTS, 1, 2, 3, ())) == snapshot_topic(Table.PRODUCTS, 2)
    assert topic_of(ReplicaDelta(Table.PRODUCTS, 1, 2)) == deltas_topic(Table.PRODUCTS)
    with pytest.raises(WireTopicError, match="not a wire message"):
        topic_of("batch")  # type: ignore[arg-type]


@pytest.mark.parametrize("site", ["", "-lead", "a/b", "a+b", "#", "a b", "x" * 65, "$SYS", "é", None, 5])
def test_malformed_site_ids_make_no_topic(site):
    assert not is_site_id(site)
    with pytest.raises(WireTopicError, match="site id"):
        batches_topic(site)  # type: ignore[arg-type]


def test_site_ids_like_terminal_ids():
    from terminal.ids import IdError, check_name
    for s in ["SIM-077-001", "a", "A.b_c-9", "x" * 64, "", "_x", "x" * 65, "a:b", "a/b"]:
        try:
            check_name("site id", s)
            ok = True
        except IdError:
            ok = False
        assert is_site_id(s) == ok, s


@pytest.mark.parametrize("topic, words", [
    ("edgepos/v2/sites/S/batches", ["'v2'", "speaks v1"]),
    ("other/v1/sites/S/batches", ["not an edgepos topic"]),
    ("edgepos", ["not an edgepos topic"]),
    ("edgepos/v1/sites/S/batch", ["unknown site topic 'batch'"]),
    ("edgepos/v1/sites/+/batches", ["malformed site id '+'"]),
    ("edgepos/v1/sites/S/batches/extra", ["unknown edgepos topic"]),
    ("edgepos/v1/sites//batches", ["malformed site id ''"]),
    ("edgepos/v1/replica/cards/deltas", ["unknown replica table 'cards'"]),
    ("edgepos/v1/replica/stop_list/snapshot", ["unknown edgepos topic"]),
    ("edgepos/v1/replica/stop_list/snapshot/01", ["leading zeros"]),
    ("edgepos/v1/replica/stop_list/snapshot/-1", ["snapshot part"]),
    ("edgepos/v1/replica/stop_list/snapshot/100000", ["snapshot part"]),
    ("edgepos/v1/replica/stop_list/deltas/0", ["unknown edgepos topic"]),
    ("$share/host/edgepos/v1/sites/S/batches", ["not an edgepos topic"]),
    ("edgepos/v1/" + "x" * 300, ["311 characters"]),
])
def test_parse_refuses(topic, words):
    with pytest.raises(WireTopicError) as info:
        parse_topic(topic)
    for w in words:
        assert w in str(info.value)


def test_bad_arguments():
    with pytest.raises(WireTopicError, match="unknown replica table"):
        deltas_topic("cards")
    for part in (-1, 100_000, "1", 1.0, True):
        with pytest.raises(WireTopicError, match="snapshot part"):
            snapshot_topic(Table.STOP_LIST, part)  # type: ignore[arg-type]
    with pytest.raises(WireTopicError):
        parse_topic(None)  # type: ignore[arg-type]
    with pytest.raises(WireTopicError, match="group"):
        shared("x", "a/b")


def test_subscriptions():
    assert shared(f"{PREFIX}/sites/+/batches") == "$share/host/edgepos/v1/sites/+/batches"
    assert host_subscriptions() == (("$share/host/edgepos/v1/sites/+/batches", 1),
                                    ("$share/host/edgepos/v1/sites/+/presence", 1),
                                    ("$share/host/edgepos/v1/sites/+/snapshot-requests", 1))
    assert host_subscriptions("ingest")[0][0] == "$share/ingest/edgepos/v1/sites/+/batches"
    assert site_subscriptions(SITE) == ((acks_topic(SITE), 1), ("edgepos/v1/replica/+/deltas", 1))
    assert site_subscriptions(SITE, [Table.STOP_LIST]) == ((acks_topic(SITE), 1), (deltas_topic(Table.STOP_LIST), 1))
    assert site_publish_topics(SITE) == (batches_topic(SITE), presence_topic(SITE), snapshot_requests_topic(SITE))
