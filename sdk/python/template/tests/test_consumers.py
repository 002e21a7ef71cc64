"""Tests of {{name}}, without a server: run them from the project folder with
``python -m unittest discover -s tests`` (the SDK must be importable: see README.md)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from consumer_host import User  # noqa: E402
from consumer_host.testing import Hub, WebsocketCommunicator  # noqa: E402
from consumers import RoomConsumer  # noqa: E402

ANN = User("0a2d5e4c8b7f4d1e9c3b6a5f4e3d2c1b", "Ann", "ann@example.org")
BOB = User("c189712e871d45de8f111a3b1de97c30", "Bob", "bob@example.org")


class RoomConsumerTests(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.hub = Hub()  # the host: groups, per-connection state, a SQLite database

    def client(self, user, room="lobby"):
        return WebsocketCommunicator(RoomConsumer, f"/ws/{room}/", route="ws/<room>/", user=user, hub=self.hub)

    async def test_an_anonymous_client_is_refused(self):
        connected, _ = await self.client(None).connect()
        self.assertFalse(connected)

    async def test_a_room_hears_its_messages(self):
        ann, bob, elsewhere = self.client(ANN), self.client(BOB), self.client(BOB, room="other")
        for client in (ann, bob, elsewhere):
            connected, _ = await client.connect()
            self.assertTrue(connected)
        await ann.send_json_to({"text": "hello"})
        self.assertEqual(await ann.receive_json_from(), {"text": "hello", "from": "Ann"})
        self.assertEqual(await bob.receive_json_from(), {"text": "hello", "from": "Ann"})
        self.assertTrue(await elsewhere.receive_nothing())
        self.assertEqual(ann.state["sent"], 1)  # kept by the host between events

    async def test_a_bad_message_gets_an_error(self):
        ann = self.client(ANN)
        await ann.connect()
        await ann.send_json_to({"txt": "typo"})
        self.assertEqual(await ann.receive_json_from(), {"error": 'send {"text": "..."}'})

    async def test_disconnect_leaves_the_room(self):
        ann, bob = self.client(ANN), self.client(BOB)
        await ann.connect()
        await bob.connect()
        await bob.disconnect()
        await ann.send_json_to({"text": "anyone?"})
        self.assertEqual((await ann.receive_json_from())["text"], "anyone?")
        self.assertTrue(await bob.receive_nothing())


if __name__ == "__main__":
    unittest.main()
