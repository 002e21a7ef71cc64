"""The consumer classes: Channels' API and layering, on the fake host."""

import asyncio
import json
import unittest

import support  # noqa: F401  (import paths)
from support import ANN

from consumer_host import (
    AcceptConnection,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    DenyConnection,
    JsonWebsocketConsumer,
    StopConsumer,
    WebsocketConsumer,
    async_to_sync,
)
from consumer_host.exceptions import InvalidGroupName, MessageTooLarge
from consumer_host.testing import ConsumerTrapped, Hub, WebsocketCommunicator


class Case(unittest.IsolatedAsyncioTestCase):
    def setUp(self):
        self.hub = Hub()

    def client(self, consumer, path="/ws/", **kwargs):
        kwargs.setdefault("user", ANN)
        return WebsocketCommunicator(consumer, path, hub=self.hub, **kwargs)

    async def open(self, consumer, **kwargs):
        communicator = self.client(consumer, **kwargs)
        connected, _ = await communicator.connect()
        self.assertTrue(connected)
        return communicator

    def errors(self, communicator):
        return "\n".join(line for level, line in communicator.logs if level == "error")


class Echo(WebsocketConsumer):
    def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            self.send(bytes_data=bytes_data * 2)


class ConnectTests(Case):
    async def test_the_default_connect_accepts(self):
        echo = self.client(Echo)
        self.assertEqual(await echo.connect(), (True, None))
        self.assertEqual(echo.http_status, 101)

    async def test_returning_without_accept_refuses(self):
        class Silent(WebsocketConsumer):
            def connect(self):
                pass

        silent = self.client(Silent)
        self.assertEqual(await silent.connect(), (False, None))
        self.assertEqual(silent.http_status, 403)
        self.assertTrue(await silent.receive_nothing())

    async def test_close_in_connect_refuses(self):
        class Closer(WebsocketConsumer):
            def connect(self):
                self.close(4003, "no")

        closer = self.client(Closer)
        self.assertEqual(await closer.connect(), (False, 4003))
        self.assertEqual(closer.http_status, 403)

    async def test_accept_and_deny_connection_exceptions(self):
        class Accepting(WebsocketConsumer):
            def connect(self):
                raise AcceptConnection()

        class Denying(WebsocketConsumer):
            def connect(self):
                raise DenyConnection()

        self.assertEqual(await self.client(Accepting).connect(), (True, None))
        denied = self.client(Denying)
        self.assertEqual((await denied.connect())[0], False)
        self.assertEqual(denied.http_status, 403)

    async def test_subprotocol(self):
        class Picky(WebsocketConsumer):
            def connect(self):
                self.accept(self.scope["subprotocols"][-1])

        picky = self.client(Picky, subprotocols=["a", "b"])
        self.assertEqual(await picky.connect(), (True, "b"))

    async def test_a_subprotocol_not_offered_breaks_a_host_rule(self):
        class Wrong(WebsocketConsumer):
            def connect(self):
                self.accept("never-offered")

        wrong = self.client(Wrong, subprotocols=["a"], raise_on_trap=False)
        self.assertEqual(await wrong.connect(), (False, 1011))
        self.assertEqual(wrong.http_status, 500)

    async def test_an_exception_in_connect_is_http_500(self):
        class Broken(AsyncWebsocketConsumer):
            async def connect(self):
                raise LookupError("nope")

        broken = self.client(Broken, raise_on_trap=False)
        self.assertEqual(await broken.connect(), (False, 1011))
        self.assertEqual(broken.http_status, 500)
        self.assertIn("LookupError: nope", self.errors(broken))

    async def test_overriding_websocket_connect_replaces_connect(self):
        class Raw(WebsocketConsumer):
            def websocket_connect(self, message):
                assert message == {"type": "websocket.connect"}
                self.accept()
                self.send(text_data="raw")

            def connect(self):
                raise AssertionError("not called")

        raw = await self.open(Raw)
        self.assertEqual(await raw.receive_from(), "raw")


class SendAndReceiveTests(Case):
    async def test_text_and_bytes(self):
        echo = await self.open(Echo)
        await echo.send_to(text_data="hi")
        self.assertEqual(await echo.receive_from(), "HI")
        await echo.send_to(bytes_data=b"\x00\x01")
        self.assertEqual(await echo.receive_from(), b"\x00\x01\x00\x01")
        self.assertTrue(await echo.receive_nothing())

    async def test_send_needs_text_or_bytes(self):
        class Empty(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.send()

        empty = await self.open(Empty)
        with self.assertRaises(ConsumerTrapped) as caught:
            await empty.send_to(text_data="x")
        self.assertIn("You must pass one of bytes_data or text_data", str(caught.exception))

    async def test_send_with_close(self):
        class Last(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.send(text_data="bye", close=True)

        last = await self.open(Last)
        await last.send_to(text_data="x")
        self.assertEqual(await last.receive_from(), "bye")
        self.assertEqual(await last.receive_output(), {"type": "websocket.close", "code": 1000, "reason": ""})

    async def test_close_codes_are_checked(self):
        class BadClose(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.close(1001)

        bad = await self.open(BadClose)
        with self.assertRaises(ConsumerTrapped) as caught:
            await bad.send_to(text_data="x")
        self.assertIn("a consumer closes with 1000 or 3000-4999", str(caught.exception))

    async def test_a_message_over_the_limit_raises(self):
        class Big(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                try:
                    self.send(text_data="x" * 70000)
                except MessageTooLarge as err:
                    self.send(text_data=str(err))

        big = await self.open(Big)
        await big.send_to(text_data="x")
        self.assertEqual(await big.receive_from(),
                         "a 70000-byte message exceeds the host's limit of 65536 bytes; it was not sent")

    async def test_a_message_sent_before_accept_is_dropped(self):
        class Early(WebsocketConsumer):
            def connect(self):
                self.send(text_data="too early")
                self.accept()

        early = await self.open(Early)
        self.assertTrue(await early.receive_nothing())
        self.assertIn(("warn", "a message sent before accept was dropped"), early.logs)

    async def test_overriding_websocket_receive(self):
        class Raw(WebsocketConsumer):
            def websocket_receive(self, message):
                self.send(text_data=json.dumps(message))

        raw = await self.open(Raw)
        await raw.send_to(text_data="t")
        self.assertEqual(json.loads(await raw.receive_from()),
                         {"type": "websocket.receive", "text": "t", "bytes": None})

    async def test_disconnect_gets_the_code_and_overriding_websocket_disconnect_works(self):
        class Bye(WebsocketConsumer):
            def disconnect(self, code):
                print("bye", code)

        class RawBye(WebsocketConsumer):
            def websocket_disconnect(self, message):
                print("raw", message)

        bye, raw = await self.open(Bye), await self.open(RawBye)
        await bye.disconnect(4321)
        await raw.disconnect()
        self.assertIn(("info", "bye 4321"), bye.logs)
        self.assertIn(("info", "raw {'type': 'websocket.disconnect', 'code': 1000}"), raw.logs)

    async def test_stop_consumer_is_accepted(self):
        class Stopper(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.seen = True
                raise StopConsumer()

        stopper = await self.open(Stopper)
        await stopper.send_to(text_data="x")
        self.assertEqual(stopper.state, {"seen": True})


class JsonTests(Case):
    async def test_receive_json_and_send_json(self):
        class Json(JsonWebsocketConsumer):
            def receive_json(self, content, **kwargs):
                self.send_json({"got": content})

        j = await self.open(Json)
        await j.send_json_to({"a": [1, 2]})
        self.assertEqual(await j.receive_json_from(), {"got": {"a": [1, 2]}})

    async def test_a_binary_frame_is_an_error_as_in_channels(self):
        class Json(JsonWebsocketConsumer):
            pass

        j = await self.open(Json)
        with self.assertRaises(ConsumerTrapped) as caught:
            await j.send_to(bytes_data=b"{}")
        self.assertIn("No text section for incoming WebSocket frame!", str(caught.exception))

    async def test_encode_and_decode_can_be_overridden(self):
        class Sorted(JsonWebsocketConsumer):
            @classmethod
            def encode_json(cls, content):
                return json.dumps(content, sort_keys=True, separators=(",", ":"))

            @classmethod
            def decode_json(cls, text_data):
                return {"wrapped": json.loads(text_data)}

            def receive_json(self, content, **kwargs):
                self.send_json(content)

        s = await self.open(Sorted)
        await s.send_to(text_data='{"b": 1, "a": 2}')
        self.assertEqual(await s.receive_from(), '{"wrapped":{"a":2,"b":1}}')

    async def test_async_json_with_channels_style_async_codecs(self):
        class AsyncJson(AsyncJsonWebsocketConsumer):
            @classmethod
            async def encode_json(cls, content):
                return "<" + json.dumps(content) + ">"

            async def receive_json(self, content, **kwargs):
                await self.send_json({"n": content["n"] + 1})

        a = await self.open(AsyncJson)
        await a.send_json_to({"n": 1})
        self.assertEqual(await a.receive_from(), '<{"n": 2}>')


class EventTests(Case):
    async def test_event_types_name_handlers_as_in_channels(self):
        class Listener(AsyncWebsocketConsumer):
            async def connect(self):
                await self.channel_layer.group_add("room", self.channel_name)
                await self.accept()

            async def chat_message(self, event):
                await self.send(text_data="chat.message: " + event["text"])

        listener = await self.open(Listener)
        self.hub.group_send("room", {"type": "chat.message", "text": "dot"})
        self.hub.group_send("room", {"type": "chat_message", "text": "underscore"})
        self.assertEqual(await listener.receive_from(), "chat.message: dot")
        self.assertEqual(await listener.receive_from(), "chat.message: underscore")

    async def test_an_event_without_a_handler_raises_as_in_channels(self):
        class Listener(WebsocketConsumer):
            groups = ["room"]

        listener = await self.open(Listener, raise_on_trap=False)
        self.hub.group_send("room", {"type": "no.such"})
        self.assertEqual(listener.close_code, 1011)
        self.assertIn("No handler for message type 'no.such'", self.errors(listener))

    async def test_the_groups_attribute_joins_and_leaves(self):
        class Member(WebsocketConsumer):
            groups = ["a", "b"]

        member = await self.open(Member)
        self.assertEqual((self.hub.members("a"), self.hub.members("b")), ([member.connection_id],) * 2)
        await member.disconnect()
        self.assertEqual((self.hub.members("a"), self.hub.members("b")), ([], []))

    async def test_sync_consumers_use_the_layer_through_async_to_sync_or_directly(self):
        class Sync(WebsocketConsumer):
            def connect(self):
                async_to_sync(self.channel_layer.group_add)("one", self.channel_name)
                self.channel_layer.group_add("two", self.channel_name)
                self.accept()

            def receive(self, text_data=None, bytes_data=None):
                async_to_sync(self.channel_layer.group_send)("one", {"type": "ping", "n": 1})
                self.channel_layer.group_send("two", {"type": "ping", "n": 2})

            def ping(self, event):
                self.send(text_data=str(event["n"]))

        sync = await self.open(Sync)
        await sync.send_to(text_data="go")
        self.assertEqual([await sync.receive_from(), await sync.receive_from()], ["1", "2"])

    async def test_only_the_own_channel_can_join(self):
        class Intruder(AsyncWebsocketConsumer):
            async def connect(self):
                await self.channel_layer.group_add("room", "someone-else")

        intruder = self.client(Intruder)
        with self.assertRaises(ConsumerTrapped) as caught:
            await intruder.connect()
        self.assertIn("takes this connection's own channel (self.channel_name", str(caught.exception))

    async def test_bad_group_names_and_events(self):
        seen = []

        class Careless(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                for call in (lambda: self.channel_layer.group_add("no spaces", self.channel_name),
                             lambda: self.channel_layer.group_send("ok", {"no": "type"}),
                             lambda: self.channel_layer.group_send("ok", {"type": "x", "v": {1, 2}}),
                             lambda: self.channel_layer.send(self.channel_name, {"type": "x"})):
                    try:
                        call()
                    except Exception as err:
                        seen.append((type(err).__name__, str(err)))

        careless = await self.open(Careless)
        await careless.send_to(text_data="x")
        self.assertEqual([name for name, _ in seen],
                         ["InvalidGroupName", "InvalidEvent", "InvalidEvent", "NotImplementedError"])
        self.assertIn("invalid group name 'no spaces'", seen[0][1])
        self.assertTrue(issubclass(InvalidGroupName, ValueError))

    async def test_a_pure_event_handler_that_reads_the_scope_fails_the_test(self):
        class Impure(WebsocketConsumer):
            groups = ["room"]
            pure_events = ["shout"]

            def shout(self, event):
                self.send(text_data=self.scope["path"])

        await self.open(Impure)
        with self.assertRaises(ConsumerTrapped) as caught:
            self.hub.group_send("room", {"type": "shout"})
        self.assertIn("the handler of pure event 'shout' used the scope", str(caught.exception))

    async def test_a_pure_event_runs_once_for_all_members(self):
        runs = []

        class Pure(WebsocketConsumer):
            groups = ["room"]
            pure_events = ["shout"]

            def shout(self, event):
                runs.append(event)
                self.send(text_data=event["text"])

        members = [await self.open(Pure) for _ in range(3)]
        self.hub.group_send("room", {"type": "shout", "text": "hey"})
        self.assertEqual(len(runs), 1)
        for member in members:
            self.assertEqual(await member.receive_from(), "hey")

    async def test_pure_events_without_a_handler_are_reported(self):
        class Typo(WebsocketConsumer):
            pure_events = ["chat.mesage"]

            def chat_message(self, event):
                pass

        await self.open(Typo)
        self.assertIn(("warn", "Typo.pure_events lists 'chat.mesage' but the class has no chat_mesage() method"),
                      self.hub.logs)


class StateTests(Case):
    async def test_state_restored_over_what_init_sets(self):
        class Counter(WebsocketConsumer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.n = 0

            def receive(self, text_data=None, bytes_data=None):
                self.n += 1
                self.send(text_data=str(self.n))

        counter = await self.open(Counter)
        for expected in ("1", "2"):
            await counter.send_to(text_data="x")
            self.assertEqual(await counter.receive_from(), expected)

    async def test_the_user_and_bytes_can_be_kept_on_self(self):
        class Keeper(WebsocketConsumer):
            def connect(self):
                self.user = self.scope["user"]  # a common Channels idiom
                self.raw = b"\x00\xff"
                self.pair = (1, 2)
                self.accept()

            def receive(self, text_data=None, bytes_data=None):
                self.send(text_data=repr((self.user, self.user.name, self.user.is_authenticated,
                                          self.raw, self.pair)))

        keeper = await self.open(Keeper)
        await keeper.send_to(text_data="x")
        self.assertEqual(await keeper.receive_from(),
                         f"(<User {ANN.id} 'ann@example.org'>, 'Ann', True, b'\\x00\\xff', [1, 2])")
        anonymous = await self.open(Keeper, user=None)
        await anonymous.send_to(text_data="x")
        self.assertTrue((await anonymous.receive_from()).startswith("(<AnonymousUser>, '', False"))

    async def test_deleting_an_attribute_forgets_it(self):
        class Forgetful(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                if text_data == "set":
                    self.a, self.b = 1, [2, "three"]
                else:
                    del self.a

        f = await self.open(Forgetful)
        await f.send_to(text_data="set")
        self.assertEqual(f.state, {"a": 1, "b": [2, "three"]})
        await f.send_to(text_data="del")
        self.assertEqual(f.state, {"b": [2, "three"]})

    async def test_state_over_the_limit_fails_the_event(self):
        class Hoarder(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.blob = "x" * 70000

        hoarder = await self.open(Hoarder)
        with self.assertRaises(ConsumerTrapped) as caught:
            await hoarder.send_to(text_data="x")
        self.assertIn("over the host's state limit of 65536 bytes", str(caught.exception))

    async def test_a_state_that_is_not_ours_is_replaced(self):
        class Counter(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                self.n = getattr(self, "n", 0) + 1

        counter = await self.open(Counter)
        counter._connection.state = b"\xff not json"
        await counter.send_to(text_data="x")
        self.assertEqual(counter.state, {"n": 1})
        self.assertTrue(any("not JSON" in line for _, line in counter.logs))

    async def test_a_consumer_outside_the_runtime_says_so(self):
        with self.assertRaises(RuntimeError) as caught:
            _ = Echo().scope
        self.assertIn("not running under consumer-host", str(caught.exception))


class AsyncTests(Case):
    async def test_sleep_zero_is_fine_and_real_waiting_is_an_error(self):
        class Sleeper(AsyncWebsocketConsumer):
            async def receive(self, text_data=None, bytes_data=None):
                await asyncio.sleep(0)
                await self.send(text_data="after sleep(0)")
                if text_data == "long":
                    await asyncio.sleep(1)

        sleeper = await self.open(Sleeper, raise_on_trap=False)
        await sleeper.send_to(text_data="short")
        self.assertEqual(await sleeper.receive_from(), "after sleep(0)")
        await sleeper.send_to(text_data="long")
        self.assertEqual(await sleeper.receive_from(), "after sleep(0)")
        self.assertEqual(sleeper.close_code, 1011)
        self.assertIn("WouldSuspend: the handler awaited <Future", self.errors(sleeper))


class LoggingTests(Case):
    async def test_logger_exception_carries_the_traceback(self):
        import logging

        class Careful(WebsocketConsumer):
            def receive(self, text_data=None, bytes_data=None):
                try:
                    {}["missing"]
                except KeyError:
                    logging.getLogger("app.chat").exception("lookup failed")
                logging.getLogger().error("root error")

        careful = await self.open(Careful)
        await careful.send_to(text_data="x")
        [(level, line), root] = careful.logs
        self.assertEqual(level, "error")
        self.assertTrue(line.startswith("app.chat: lookup failed\nTraceback"))
        self.assertIn("KeyError: 'missing'", line)
        self.assertEqual(root, ("error", "root error"))


if __name__ == "__main__":
    unittest.main()
