"""A consumer that exercises the SDK's corners, natively and in a component
(tests/test_zoo.py runs it both ways)."""

import logging
import sys
import time

from consumer_host import IntegrityError, JsonWebsocketConsumer, async_to_sync

log = logging.getLogger("zoo")

# A module global: in a component every event may run in a new instance, so
# this is NOT a place to keep anything (the tests show it).
calls_in_this_instance = 0


class Suspends:
    """An awaitable that really waits (as a future would)."""

    def __await__(self):
        yield "a future"


class ZooConsumer(JsonWebsocketConsumer):
    pure_events = ["zoo.broadcast"]

    def connect(self):
        offered = self.scope["subprotocols"]
        self.accept("zoo.v1" if "zoo.v1" in offered else None)
        self.count = 0

    def receive_json(self, content):
        global calls_in_this_instance
        calls_in_this_instance += 1
        action = content["do"]
        if action == "count":
            self.count += 1
            self.send_json({"count": self.count, "globals": calls_in_this_instance})
        elif action == "raise":
            raise RuntimeError("boom")
        elif action == "print":
            print("hello from print")
            print("two", "lines\nin one call")
            sys.stderr.write("to stderr\n")
            log.warning("careful: %s", 42)
            log.info("for your information")
            log.debug("too detailed for the default level")
            self.send_json({"printed": True})
        elif action == "lazy-import":
            import colorsys  # noqa: F401  (not imported at initialisation)
            self.send_json({"imported": True})
        elif action == "scope":
            scope = self.scope
            user = scope["user"]
            self.send_json({
                "type": scope["type"],
                "path": scope["path"],
                "query_string": scope["query_string"].decode(),
                "url_route": {"args": list(scope["url_route"]["args"]), "kwargs": scope["url_route"]["kwargs"]},
                "subprotocols": scope["subprotocols"],
                "user": [user.id, user.name, user.email, user.is_authenticated, user.is_anonymous],
                "channel_name": self.channel_name,
            })
        elif action == "db":
            row = self.db.insert("notes", {"owner": content["owner"], "body": content["body"], "flag": True})
            rows = self.db.query("SELECT id, body, flag, score, data FROM notes WHERE owner = ?1 ORDER BY id",
                                 [content["owner"]])
            self.send_json({"row": row, "rows": rows})
        elif action == "duplicate":
            try:
                self.db.insert("notes", {"id": 1, "owner": "x", "body": "dup"})
                self.db.insert("notes", {"id": 1, "owner": "x", "body": "dup"})
            except IntegrityError as err:
                self.send_json({"error": type(err).__name__, "message": str(err)})
        elif action == "time":
            self.send_json({"time_is_sane": time.time() > 1.7e9})
        elif action == "keep-object":
            self.thing = object()
            self.kept = "yes"
            self.send_json({"ok": True})
        elif action == "join":
            self.channel_layer.group_add("zoo", self.channel_name)
        elif action == "broadcast":
            self.channel_layer.group_send("zoo", {"type": "zoo.broadcast", "text": content["text"]})
        elif action == "bytes":
            self.send(bytes_data=bytes(range(5)))
        elif action == "suspend":
            async_to_sync(self.wait_for_something)()
        elif action == "close":
            self.close(4001, "bye")

    def receive(self, text_data=None, bytes_data=None, **kwargs):
        if bytes_data is not None:
            self.send(bytes_data=bytes_data[::-1])
        else:
            super().receive(text_data=text_data, **kwargs)

    async def wait_for_something(self):
        await Suspends()

    def zoo_broadcast(self, event):
        self.send(text_data="broadcast: " + event["text"])

    def disconnect(self, code):
        log.info("disconnected with %s", code)

