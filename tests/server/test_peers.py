"""server/peers.py on its own: messages between the workers of one machine."""

import asyncio

from stonechat.server.peers import PeerBus


def test_a_publish_before_the_bus_is_open_is_dropped_and_leaves_no_stuck_peer(tmp_path):
    """A worker may publish while it is still starting (before ``open``): the message has
    nobody to go to yet, and the peer must not be left 'connecting' for good."""
    received: list[bytes] = []

    async def main() -> None:
        first, second = PeerBus(str(tmp_path), 0, 2), PeerBus(str(tmp_path), 1, 2)
        first.publish(b"too early")  # no loop yet: dropped, no task, no exception
        assert not first.peers[0].connecting and not first.connects
        await second.open(received.append)
        await first.open(lambda data: None)
        for _ in range(200):
            first.publish(b"hello")
            if received:
                break
            await asyncio.sleep(0.01)
        first.close()
        second.close()

    asyncio.run(main())
    assert received and set(received) == {b"hello"}
