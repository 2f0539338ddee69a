"""Message ids: 128 random bits in every runtime, reproducible from the seed in simulation."""

from __future__ import annotations

import re

from fedbus.runtime.ids import MESSAGE_ID_BITS, MessageIds
from fedbus.runtime.simulation import simulate
from tests.conftest import RunFederation
from tests.runtime.test_simulation import Answerer, Asker

HEX_ID = re.compile(r"[0-9a-f]{32}")


def test_ids_are_128_bits_as_32_hex_characters() -> None:
    assert MESSAGE_ID_BITS == 128
    for ids in (MessageIds(), MessageIds(seed=5)):
        drawn = [ids.next() for _ in range(1000)]
        assert all(HEX_ID.fullmatch(message_id) for message_id in drawn)
        assert len(set(drawn)) == len(drawn)
        # All 128 bits vary: every hex digit position takes more than one value.
        assert all(len({message_id[i] for message_id in drawn}) > 1 for i in range(32))


def test_deployment_ids_do_not_repeat_across_sources() -> None:
    first, second = MessageIds(), MessageIds()
    assert {first.next() for _ in range(100)}.isdisjoint(second.next() for _ in range(100))


def test_simulation_ids_follow_the_seed() -> None:
    def draw(seed: int) -> list[str]:
        ids = MessageIds(seed)
        return [ids.next() for _ in range(10)]

    assert draw(3) == draw(3)
    assert set(draw(3)).isdisjoint(draw(4))


def test_a_simulation_seed_gives_its_ids() -> None:
    def ids(seed: int) -> list[str]:
        result = simulate(Asker([1, 2]), [Answerer(), Answerer()], seed=seed)
        return [entry.metadata.message_id for entry in result.trace]

    assert ids(1) == ids(1)
    assert set(ids(1)).isdisjoint(ids(2))


def test_every_runtime_stamps_random_ids(federation: RunFederation) -> None:
    server, clients = Asker([1, 2]), [Answerer(), Answerer()]
    federation(server, clients)
    requests = [message.metadata for client in clients for message in client.seen]
    replies = [message.metadata for _, message in server.answers]
    assert len(requests) == len(replies) == 2
    sent = [metadata.message_id for metadata in requests + replies]
    assert all(HEX_ID.fullmatch(message_id) for message_id in sent)
    assert len(set(sent)) == len(sent)
    assert {reply.reply_to_message_id for reply in replies} == {
        request.message_id for request in requests
    }
