"""The reference ChatConsumer, ported with only its imports and its ORM call
changed, through the harness. ``test_component`` runs these same tests on the
built component."""

import asyncio
import unittest

import support  # noqa: F401  (import paths)
from support import ANN, BOB, EVE, ROOM, chat_hub, chat_message

from consumer_host.testing import ConsumerTrapped, WebsocketCommunicator
from consumers import ChatConsumer

ROUTE = "ws/<room_name>/"


class ChatTests(unittest.IsolatedAsyncioTestCase):
    consumer = ChatConsumer

    async def asyncSetUp(self):
        # A component event takes milliseconds; asyncio's debug mode (on in
        # these tests) would report each test's run as a slow callback.
        asyncio.get_running_loop().slow_callback_duration = 5

    def setUp(self):
        self.hub = chat_hub()

    def client(self, user, room=ROOM, **kwargs):
        return WebsocketCommunicator(self.consumer, f"/ws/{room}/?token=secret", route=ROUTE, user=user,
                                     hub=self.hub, **kwargs)

    async def connected(self, user):
        communicator = self.client(user)
        connected, subprotocol = await communicator.connect()
        self.assertTrue(connected)
        self.assertIsNone(subprotocol)
        return communicator

    def messages(self):
        return self.hub.db.execute(
            "SELECT body, conversation_id, created_by_id, sent_to_id, id, created_at "
            "FROM chat_conversationmessage ORDER BY rowid").fetchall()

    async def test_connect_joins_the_room_group(self):
        ann = await self.connected(ANN)
        self.assertEqual(self.hub.members(f"chat_{ROOM}"), [ann.connection_id])
        # What websocket_connect set on self is kept for later events.
        self.assertEqual(ann.state, {"room_name": ROOM, "room_group_name": f"chat_{ROOM}"})
        self.assertTrue(await ann.receive_nothing())

    async def test_a_message_reaches_every_member_and_is_saved(self):
        ann, bob = await self.connected(ANN), await self.connected(BOB)
        await ann.send_json_to(chat_message("Hi Bob"))
        self.assertEqual(await ann.receive_json_from(), {"body": "Hi Bob", "name": "Ann"})
        self.assertEqual(await bob.receive_json_from(), {"body": "Hi Bob", "name": "Ann"})
        self.assertTrue(await ann.receive_nothing())
        self.assertTrue(await bob.receive_nothing())
        [(body, conversation, author, recipient, message_id, created_at)] = self.messages()
        self.assertEqual(body, "Hi Bob")
        self.assertEqual(conversation, ROOM.replace("-", ""))  # the host normalises UUIDs
        self.assertEqual(author, ANN.id)
        self.assertEqual(recipient, BOB.id)
        self.assertRegex(message_id, r"^[0-9a-f]{12}7[0-9a-f]{19}$")  # filled by the host: UUID v7
        self.assertRegex(created_at, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")

    async def test_messages_keep_their_order(self):
        ann, bob = await self.connected(ANN), await self.connected(BOB)
        for i in range(5):
            await (ann if i % 2 else bob).send_json_to(chat_message(f"m{i}", sent_to=BOB if i % 2 else ANN))
        bodies = [(await ann.receive_json_from())["body"] for _ in range(5)]
        self.assertEqual(bodies, [f"m{i}" for i in range(5)])
        self.assertEqual([(await bob.receive_json_from())["body"] for _ in range(5)], bodies)
        self.assertEqual([row[0] for row in self.messages()], bodies)

    async def test_other_rooms_do_not_hear_it(self):
        ann = await self.connected(ANN)
        elsewhere = self.client(EVE, room="11111111-2222-3333-4444-555555555555")
        self.assertEqual(await elsewhere.connect(), (True, None))
        await ann.send_json_to(chat_message("private"))
        self.assertEqual((await ann.receive_json_from())["body"], "private")
        self.assertTrue(await elsewhere.receive_nothing())

    async def test_disconnect_leaves_the_group(self):
        ann, bob = await self.connected(ANN), await self.connected(BOB)
        await bob.disconnect()
        self.assertEqual(self.hub.members(f"chat_{ROOM}"), [ann.connection_id])
        await ann.send_json_to(chat_message("anyone?"))
        self.assertEqual((await ann.receive_json_from())["body"], "anyone?")
        self.assertTrue(await bob.receive_nothing())

    async def test_malformed_json_fails_that_connection_only(self):
        # As under Channels, the reference does not guard json.loads: the
        # exception ends this connection (1011 here) and no one else's.
        ann, bob = await self.connected(ANN), await self.connected(BOB)
        bad = self.client(ANN, raise_on_trap=False)
        await bad.connect()
        await bad.send_to(text_data="not json")
        self.assertEqual(await bad.receive_output(), {"type": "websocket.close", "code": 1011,
                                                      "reason": "the consumer failed"})
        errors = [line for level, line in bad.logs if level == "error"]
        self.assertIn("json.decoder.JSONDecodeError", errors[0])
        self.assertIn('data = json.loads(text_data)', errors[0])  # the source line is in the traceback
        await ann.send_json_to(chat_message("still here"))
        self.assertEqual((await bob.receive_json_from())["body"], "still here")

    async def test_an_anonymous_sender_cannot_save(self):
        # The reference saves created_by=AnonymousUser, which Django refuses;
        # here created_by_id is None and the NOT NULL constraint refuses it.
        bob = await self.connected(BOB)
        anonymous = self.client(None, raise_on_trap=False)
        self.assertEqual(await anonymous.connect(), (True, None))
        await anonymous.send_json_to(chat_message("who am I"))
        # group_send ran before the save, as in the reference.
        self.assertEqual((await bob.receive_json_from())["body"], "who am I")
        self.assertEqual(anonymous.close_code, 1011)
        self.assertIn("IntegrityError", "\n".join(line for _, line in anonymous.logs))
        self.assertEqual(self.messages(), [])

    async def test_a_failure_fails_the_test_by_default(self):
        ann = await self.connected(ANN)
        with self.assertRaises(ConsumerTrapped) as caught:
            await ann.send_to(text_data="{}")
        self.assertIn("KeyError: 'data'", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
