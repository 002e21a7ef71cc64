"""The SDK's behaviour end to end, through the harness; ``test_component``
runs the same tests on the zoo built into a component."""

import os
import asyncio
import unittest

import support  # noqa: F401  (import paths)
from support import ANN

from consumer_host.testing import ConsumerTrapped, Hub, WebsocketCommunicator

ZOO = os.path.join(support.SDK, "tests", "projects", "zoo")
ZooConsumer = support.load_module("zoo_consumers", os.path.join(ZOO, "consumers.py")).ZooConsumer


class ZooTests(unittest.IsolatedAsyncioTestCase):
    consumer = ZooConsumer
    in_component = False

    async def asyncSetUp(self):
        # A component event takes milliseconds; asyncio's debug mode (on in
        # these tests) would report each test's run as a slow callback.
        asyncio.get_running_loop().slow_callback_duration = 5

    def setUp(self):
        self.hub = Hub()
        self.hub.db.execute(
            "CREATE TABLE notes (id integer PRIMARY KEY, owner text NOT NULL, body text NOT NULL, "
            "flag bool NOT NULL DEFAULT 0, score real NOT NULL DEFAULT 1.5, data blob NULL)")

    async def open(self, path="/zoo/", **kwargs):
        kwargs.setdefault("user", ANN)
        communicator = WebsocketCommunicator(self.consumer, path, hub=self.hub, **kwargs)
        connected, _ = await communicator.connect()
        self.assertTrue(connected)
        return communicator

    async def test_attributes_on_self_survive_between_events(self):
        zoo = await self.open()
        for expected in (1, 2, 3):
            await zoo.send_json_to({"do": "count"})
            reply = await zoo.receive_json_from()
            self.assertEqual(reply["count"], expected)
            if self.in_component:
                # Every event ran in a new instance: module globals start afresh.
                self.assertEqual(reply["globals"], 1)
        self.assertEqual(zoo.state, {"count": 3})

    async def test_state_is_written_only_when_it_changed(self):
        zoo = await self.open()
        writes = []
        set_state = self.hub._set_state
        self.hub._set_state = lambda blob: (writes.append(blob), set_state(blob))[1]
        await zoo.send_json_to({"do": "print"})
        await zoo.send_json_to({"do": "time"})
        self.assertEqual(writes, [])
        await zoo.send_json_to({"do": "count"})
        self.assertEqual(writes, [b'{"count":1}'])

    async def test_an_uncaught_exception_logs_its_traceback_and_closes_with_1011(self):
        zoo, other = await self.open(raise_on_trap=False), await self.open()
        await zoo.send_json_to({"do": "raise"})
        self.assertEqual(await zoo.receive_output(),
                         {"type": "websocket.close", "code": 1011, "reason": "the consumer failed"})
        [error] = [line for level, line in zoo.logs if level == "error"]
        self.assertIn("ZooConsumer: uncaught exception in receive", error)
        self.assertIn("Traceback (most recent call last)", error)
        self.assertIn('raise RuntimeError("boom")', error)  # the source line, in a component too
        self.assertIn("RuntimeError: boom", error)
        with self.assertRaises(RuntimeError):
            await zoo.send_json_to({"do": "count"})  # the connection is closed
        await other.send_json_to({"do": "count"})
        self.assertEqual((await other.receive_json_from())["count"], 1)

    async def test_by_default_a_trap_fails_the_test(self):
        zoo = await self.open()
        with self.assertRaises(ConsumerTrapped) as caught:
            await zoo.send_json_to({"do": "raise"})
        self.assertIn("RuntimeError: boom", str(caught.exception))

    async def test_print_stderr_and_logging_go_to_the_host_log(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "print"})
        self.assertEqual(await zoo.receive_json_from(), {"printed": True})
        self.assertEqual(zoo.logs, [
            ("info", "hello from print"),
            ("info", "two lines"),
            ("info", "in one call"),
            ("warn", "to stderr"),
            ("warn", "zoo: careful: 42"),
            ("info", "zoo: for your information"),
        ])

    async def test_a_module_imported_inside_a_handler_is_not_there(self):
        zoo = await self.open(raise_on_trap=False)
        await zoo.send_json_to({"do": "lazy-import"})
        self.assertEqual(zoo.close_code, 1011)
        self.assertIn("No module named 'colorsys'", "\n".join(line for _, line in zoo.logs))

    async def test_scope(self):
        zoo = WebsocketCommunicator(self.consumer, "/zoo/v/?token=abc&q=a+b&x=%C3%A9", hub=self.hub, user=ANN,
                                    route="zoo/<k>/", subprotocols=["other", "zoo.v1"])
        self.assertEqual(await zoo.connect(), (True, "zoo.v1"))
        await zoo.send_json_to({"do": "scope"})
        self.assertEqual(await zoo.receive_json_from(), {
            "type": "websocket",
            "path": "/zoo/v/",
            "query_string": "q=a+b&x=%C3%A9",
            "url_route": {"args": [], "kwargs": {"k": "v"}},
            "subprotocols": ["other", "zoo.v1"],
            "user": [ANN.id, "Ann", ANN.email, True, False],
            "channel_name": "consumer-host!" + zoo.connection_id,
        })

    async def test_anonymous_scope(self):
        zoo = await self.open(user=None)
        await zoo.send_json_to({"do": "scope"})
        self.assertEqual((await zoo.receive_json_from())["user"], [None, "", "", False, True])

    async def test_database_insert_and_query(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "db", "owner": "ann", "body": "hé"})
        reply = await zoo.receive_json_from()
        self.assertEqual(reply["row"], {"id": 1, "owner": "ann", "body": "hé", "flag": 1, "score": 1.5,
                                        "data": None})
        self.assertEqual(reply["rows"], [{"id": 1, "body": "hé", "flag": 1, "score": 1.5, "data": None}])

    async def test_database_errors_are_exceptions(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "duplicate"})
        reply = await zoo.receive_json_from()
        self.assertEqual(reply["error"], "IntegrityError")
        self.assertIn("insert into notes: UNIQUE constraint failed: notes.id", reply["message"])

    async def test_the_clock_works(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "time"})
        self.assertEqual(await zoo.receive_json_from(), {"time_is_sane": True})

    async def test_an_attribute_that_is_not_json_is_named_not_kept(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "keep-object"})
        self.assertEqual(await zoo.receive_json_from(), {"ok": True})
        [warning] = [line for level, line in zoo.logs if level == "warn"]
        self.assertIn("ZooConsumer.thing (a object) is not JSON-serialisable", warning)
        self.assertEqual(zoo.state, {"count": 0, "kept": "yes"})
        await zoo.send_json_to({"do": "count"})
        self.assertEqual((await zoo.receive_json_from())["count"], 1)

    async def test_groups_and_a_pure_event(self):
        a, b, c = await self.open(), await self.open(), await self.open()
        await a.send_json_to({"do": "join"})
        await b.send_json_to({"do": "join"})
        self.assertEqual(self.hub.members("zoo"), [a.connection_id, b.connection_id])
        await c.send_json_to({"do": "broadcast", "text": "hi"})
        self.assertEqual(await a.receive_from(), "broadcast: hi")
        self.assertEqual(await b.receive_from(), "broadcast: hi")
        self.assertTrue(await c.receive_nothing())

    async def test_binary_frames(self):
        zoo = await self.open()
        await zoo.send_to(bytes_data=b"abc")
        self.assertEqual(await zoo.receive_from(), b"cba")
        await zoo.send_json_to({"do": "bytes"})
        self.assertEqual(await zoo.receive_from(), bytes(range(5)))

    async def test_close_from_the_consumer_then_disconnect_runs(self):
        zoo = await self.open()
        await zoo.send_json_to({"do": "close"})
        self.assertEqual(await zoo.receive_output(), {"type": "websocket.close", "code": 4001, "reason": "bye"})
        self.assertIn(("info", "zoo: disconnected with 4001"), zoo.logs)
        await zoo.disconnect()  # the client's side: nothing more runs
        self.assertEqual([line for line in zoo.logs if "disconnected" in line[1]],
                         [("info", "zoo: disconnected with 4001")])

    async def test_awaiting_something_that_suspends_is_an_error_not_a_hang(self):
        zoo = await self.open(raise_on_trap=False)
        await zoo.send_json_to({"do": "suspend"})
        self.assertEqual(zoo.close_code, 1011)
        log = "\n".join(line for _, line in zoo.logs)
        self.assertIn("WouldSuspend: the handler awaited 'a future'", log)

    async def test_describe_lists_the_pure_events(self):
        version = self.hub._version(self.consumer)
        self.assertEqual(version.pure_events, frozenset({"zoo.broadcast"}))


if __name__ == "__main__":
    unittest.main()
