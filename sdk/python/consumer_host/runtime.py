"""Runs a consumer class for the host's five exports.

The component's ``Handler`` (``_component.py``) and the test harness
(``testing.py``) both call a ``Runtime``, so a test that passes natively ran
the same code as the component does. For each event the runtime:

1. makes a new consumer object (the instance may have been replaced since
   the last event, so nothing is kept between events but the state blob);
2. restores the attributes earlier handlers set on ``self`` from the host's
   state blob (JSON, plus the scope's user and bytes, which Channels code
   often keeps on ``self``; tuples come back as lists);
3. turns the event into Channels' message dict and calls the handler its
   ``type`` names (``chat.message`` calls ``chat_message``), driving it to
   its end if it is a coroutine;
4. stores the attributes again, if they changed;
5. on an uncaught exception, logs the traceback through the host at error
   level and traps, so the host closes this one connection with 1011.

Pure events (see ``pure_events``) skip steps 2 and 4: their handlers read
nothing but the event.
"""

import base64
import inspect
import json
import traceback

from . import _host, log, sync
from .consumer import _ConsumerBase, _EventContext
from .exceptions import StopConsumer
from .scope import AnonymousUser, User

# The consumer attribute that holds the runtime's per-event context; the only
# instance attribute that is not kept in the state blob.
CONTEXT_ATTRIBUTE = "_consumer_host"


class Trapped(BaseException):
    """What a fake host's trap raises (a component aborts instead).

    A BaseException so that no ``except Exception`` in a consumer catches it.
    """


def handler_name(message):
    """The method a message's ``type`` names, as Channels does it."""
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str):
        raise ValueError("Incoming message has no 'type' attribute")
    name = kind.replace(".", "_")
    if name.startswith("_"):
        raise ValueError(f"Malformed type in message (leading underscore): {kind!r}")
    return name


class Runtime:
    """The host's exports, for one consumer class."""

    def __init__(self, consumer_class):
        if not (isinstance(consumer_class, type) and issubclass(consumer_class, _ConsumerBase)):
            raise TypeError(
                f"{consumer_class!r} is not a consumer: subclass one of consumer_host's "
                "WebsocketConsumer, AsyncWebsocketConsumer, JsonWebsocketConsumer, "
                "AsyncJsonWebsocketConsumer"
            )
        pure = consumer_class.pure_events
        if isinstance(pure, str) or not all(isinstance(t, str) for t in pure):
            raise TypeError(f"{consumer_class.__name__}.pure_events must be a list of event type strings")
        self.consumer_class = consumer_class
        self.pure_events = tuple(pure)
        self._pure = frozenset(pure)
        log.default_level()

    # -- the exports ----------------------------------------------------------

    def describe(self):
        """The event types whose handlers depend on the event alone."""
        for kind in self.pure_events:
            name = handler_name({"type": kind})
            if not callable(getattr(self.consumer_class, name, None)):
                _host.log(
                    "warn",
                    f"{self.consumer_class.__name__}.pure_events lists {kind!r} "
                    f"but the class has no {name}() method",
                )
        return list(self.pure_events)

    def connect(self):
        self._run("connect", {"type": "websocket.connect"})

    def receive(self, data):
        """``data`` is the frame: str for text, bytes for binary."""
        if isinstance(data, str):
            message = {"type": "websocket.receive", "text": data, "bytes": None}
        else:
            message = {"type": "websocket.receive", "text": None, "bytes": bytes(data)}
        self._run("receive", message)

    def handle_event(self, event):
        """``event`` is the group event as JSON text."""
        self._run("handle-event", event, parse=True)

    def disconnect(self, code):
        # The connection is gone: nothing to keep for a later event.
        self._run("disconnect", {"type": "websocket.disconnect", "code": code}, persist=False)

    # -- one event ------------------------------------------------------------

    def _run(self, export, message, parse=False, persist=True):
        with log.capture():
            try:
                if parse:
                    message = json.loads(message)
                    if not isinstance(message, dict):
                        raise ValueError(f"a group event is a JSON object, not {message!r}")
                name = handler_name(message)
                pure = parse and message["type"] in self._pure
                consumer = self._new_consumer(pure)
                loaded = None if pure else self._restore(consumer)
                handler = getattr(consumer, name, None)
                if handler is None or not callable(handler):
                    raise ValueError(
                        f"No handler for message type {message['type']!r}: "
                        f"{type(consumer).__name__} has no method {name}()"
                    )
                try:
                    result = handler(message)
                    if inspect.isawaitable(result):
                        sync.run(result)
                except StopConsumer:
                    pass
                if persist and not pure:
                    self._persist(consumer, loaded)
            except Trapped:
                raise
            except BaseException as exc:  # noqa: B036 - every failure ends in a trap
                self._fail(export, exc)

    def _new_consumer(self, pure):
        cls = self.consumer_class
        consumer = cls.__new__(cls)
        # The context goes in before __init__, so an __init__ may use self.scope.
        consumer.__dict__[CONTEXT_ATTRIBUTE] = _EventContext(pure)
        consumer.__init__()
        return consumer

    def _restore(self, consumer):
        """Sets the kept attributes on ``consumer``; returns the blob read."""
        blob = _host.get_state()
        if blob:
            try:
                attributes = json.loads(blob, object_hook=_decode_special)
            except ValueError:
                _host.log("warn", "the kept state is not JSON (another consumer's?); starting afresh")
                return blob
            if isinstance(attributes, dict):
                consumer.__dict__.update(attributes)
        return blob

    def _persist(self, consumer, loaded):
        """Stores ``consumer``'s attributes if they differ from ``loaded``."""
        attributes = {k: v for k, v in consumer.__dict__.items() if k != CONTEXT_ATTRIBUTE}
        try:
            blob = _encode(attributes)
        except (TypeError, ValueError):
            # Find the culprits, say which, and keep the rest.
            for key in list(attributes):
                try:
                    _encode(attributes[key])
                except (TypeError, ValueError) as err:
                    _host.log(
                        "warn",
                        f"{type(consumer).__name__}.{key} (a {type(attributes[key]).__name__}) "
                        f"is not JSON-serialisable ({err}), so it is not kept for the "
                        "next event; keep only JSON values on self",
                    )
                    del attributes[key]
            blob = _encode(attributes)
        if loaded is None and not attributes:
            return
        if blob != loaded:
            _host.set_state(blob)

    def _fail(self, export, exc):
        name = self.consumer_class.__name__
        try:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            _host.log(
                "error",
                f"{name}: uncaught exception in {export}; the connection is closed "
                f"with 1011\n{text.rstrip()}",
            )
        finally:
            _host.trap(f"{name}.{export}: {type(exc).__name__}: {exc}")


def _encode(value):
    # Sorted keys make equal attributes give equal bytes: unchanged state is
    # recognised and not written again.
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_encode_special
    ).encode("utf-8")


def _encode_special(value):
    """Keeps the two non-JSON values Channels code commonly puts on ``self``:
    the scope's user (``self.user = self.scope["user"]``) and bytes."""
    if isinstance(value, User):
        return {"$user": [value.id, value.name, value.email]}
    if isinstance(value, AnonymousUser):
        return {"$user": None}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _decode_special(obj):
    if len(obj) == 1:
        if "$user" in obj:
            fields = obj["$user"]
            return AnonymousUser() if fields is None else User(*fields)
        if "$bytes" in obj:
            return base64.b64decode(obj["$bytes"])
    return obj
