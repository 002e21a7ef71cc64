"""The consumer classes, with the shape of Channels' ``channels.generic.websocket``.

What differs underneath: a consumer object lives for one event only. The
runtime (``runtime.py``) makes a new one for each event, restores the
attributes the previous handlers set on ``self`` from the host's state blob,
calls the handler and stores the attributes again. ``scope``,
``channel_name``, ``channel_layer`` and ``db`` are properties that ask the
host when used, so events that do not need them cost nothing.
"""

import inspect
import json

from . import _host
from .db import Database
from .exceptions import AcceptConnection, DenyConnection, InvalidEvent
from .scope import build_scope
from .sync import Done


class _EventContext:
    """What the runtime gives one consumer object for one event."""

    __slots__ = ("pure", "_scope", "_layer", "_db")

    def __init__(self, pure):
        self.pure = pure
        self._scope = None
        self._layer = None
        self._db = None

    def scope(self):
        if self._scope is None:
            self._scope = build_scope(_host.get_scope())
        return self._scope


def _context(consumer):
    ctx = consumer.__dict__.get("_consumer_host")
    if ctx is None:
        raise RuntimeError(
            f"{type(consumer).__name__} is not running under consumer-host: "
            "consumers are run by the component or by "
            "consumer_host.testing.WebsocketCommunicator, not called directly"
        )
    return ctx


class ChannelLayer:
    """``self.channel_layer``: the host's groups, in Channels' words.

    Each call does its work at once and returns an awaitable, so ``await
    layer.group_send(...)`` (async consumers), ``async_to_sync(
    layer.group_send)(...)`` (sync consumers written for Channels) and a
    plain call all work.
    """

    def __init__(self, consumer):
        self._consumer = consumer

    def _check_own(self, channel, operation):
        own = self._consumer.channel_name
        if channel != own:
            raise ValueError(
                f"channel_layer.{operation}() takes this connection's own channel "
                f"(self.channel_name, {own!r}), not {channel!r}: a consumer can "
                "only change its own connection's groups"
            )

    def group_add(self, group, channel):
        self._check_own(channel, "group_add")
        _host.group_add(group)
        return Done()

    def group_discard(self, group, channel):
        self._check_own(channel, "group_discard")
        _host.group_discard(group)
        return Done()

    def group_send(self, group, message):
        """Sends ``message`` (a dict with a string ``type``) to every member."""
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise InvalidEvent(
                "a group event is a dict with a string 'type', such as "
                "{'type': 'chat.message', ...}"
            )
        try:
            event = json.dumps(message, ensure_ascii=False)
        except (TypeError, ValueError) as err:
            raise InvalidEvent(f"the event for group {group!r} is not JSON: {err}") from None
        _host.group_send(group, event)
        return Done()

    def send(self, channel, message):
        raise NotImplementedError(
            "consumer-host delivers events to groups only: put the connection "
            "in a group and use group_send"
        )


class _ConsumerBase:
    """What the sync and async classes share: the host-backed properties and
    the synchronous bodies of accept, send and close."""

    #: Groups to join on connect and leave on disconnect (as in Channels).
    groups = None

    #: Event types whose handler depends on the event alone: it reads neither
    #: the scope nor the attributes kept on ``self`` nor the database, and does
    #: nothing but send. The host then runs it once per event and sends the
    #: same frames to every member. Give the ``type`` exactly as ``group_send``
    #: sends it. Leave empty when in doubt.
    pure_events = ()

    def __init__(self, *args, **kwargs):
        # Channels passes as_asgi() keyword arguments here; there are none.
        pass

    @property
    def scope(self):
        """The Channels scope: type, path, query_string, url_route, user..."""
        return _context(self).scope()

    @property
    def channel_name(self):
        """This connection's channel, for group_add and group_discard."""
        return "consumer-host!" + _context(self).scope()["connection_id"]

    @property
    def channel_layer(self):
        ctx = _context(self)
        if ctx._layer is None:
            ctx._layer = ChannelLayer(self)
        return ctx._layer

    @property
    def db(self):
        """The database (see ``consumer_host.db.Database``)."""
        ctx = _context(self)
        if ctx._db is None:
            ctx._db = Database()
        return ctx._db

    @classmethod
    def encode_json(cls, content):
        return json.dumps(content)

    @classmethod
    def decode_json(cls, text_data):
        return json.loads(text_data)

    def _accept(self, subprotocol=None, headers=None):
        if headers:
            _host.log("warn", "accept(headers=...) is ignored: the host writes the handshake")
        _host.accept(subprotocol)

    def _send(self, text_data=None, bytes_data=None, close=False):
        if text_data is not None:
            _host.send(str(text_data))
        elif bytes_data is not None:
            _host.send(bytes(bytes_data))
        else:
            raise ValueError("You must pass one of bytes_data or text_data")
        if close:
            self._close(close)

    def _close(self, code=None, reason=None):
        if code is None or code is True:
            code = 1000
        if not (code == 1000 or 3000 <= code <= 4999):
            raise ValueError(f"close code {code}: a consumer closes with 1000 or 3000-4999")
        reason = reason or ""
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("a close reason is at most 123 bytes")
        _host.close(code, reason)

    def _join_groups(self):
        for group in self.groups or ():
            _host.group_add(group)

    def _leave_groups(self):
        for group in self.groups or ():
            _host.group_discard(group)


class WebsocketConsumer(_ConsumerBase):
    """A synchronous WebSocket consumer (Channels' ``WebsocketConsumer``).

    Override ``connect``, ``receive`` and ``disconnect`` (or the
    ``websocket_*`` methods below them), and one method per group event type
    (``chat.message`` calls ``chat_message``).
    """

    def websocket_connect(self, message):
        self._join_groups()
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self):
        self.accept()

    def accept(self, subprotocol=None, headers=None):
        """Accepts the connection, optionally with one offered subprotocol."""
        self._accept(subprotocol, headers)

    def websocket_receive(self, message):
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message["bytes"])

    def receive(self, text_data=None, bytes_data=None):
        pass

    def send(self, text_data=None, bytes_data=None, close=False):
        """Sends a text or binary frame; ``close=True`` (or a code) closes after."""
        self._send(text_data, bytes_data, close)

    def send_json(self, content, close=False):
        self._send(text_data=self.encode_json(content), close=close)

    def close(self, code=None, reason=None):
        """Closes the connection (1000 by default); before ``accept`` this
        refuses the handshake with HTTP 403."""
        self._close(code, reason)

    def websocket_disconnect(self, message):
        self._leave_groups()
        self.disconnect(message["code"])

    def disconnect(self, code):
        pass


class AsyncWebsocketConsumer(_ConsumerBase):
    """The async twin of ``WebsocketConsumer`` (Channels' ``AsyncWebsocketConsumer``).

    Handlers are coroutines; ``accept``, ``send``, ``close`` and the channel
    layer's methods are awaited as in Channels. The runtime drives each
    coroutine to its end (see ``consumer_host.sync``).
    """

    async def websocket_connect(self, message):
        self._join_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self):
        await self.accept()

    async def accept(self, subprotocol=None, headers=None):
        self._accept(subprotocol, headers)

    async def websocket_receive(self, message):
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message["bytes"])

    async def receive(self, text_data=None, bytes_data=None):
        pass

    async def send(self, text_data=None, bytes_data=None, close=False):
        self._send(text_data, bytes_data, close)

    async def send_json(self, content, close=False):
        text = self.encode_json(content)
        if inspect.isawaitable(text):  # Channels' async encode_json
            text = await text
        self._send(text_data=text, close=close)

    async def close(self, code=None, reason=None):
        self._close(code, reason)

    async def websocket_disconnect(self, message):
        self._leave_groups()
        await self.disconnect(message["code"])

    async def disconnect(self, code):
        pass


class JsonWebsocketConsumer(WebsocketConsumer):
    """Text frames decoded as JSON into ``receive_json``; ``send_json`` encodes."""

    def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data:
            self.receive_json(self.decode_json(text_data), **kwargs)
        else:
            raise ValueError("No text section for incoming WebSocket frame!")

    def receive_json(self, content, **kwargs):
        pass


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """The async twin of ``JsonWebsocketConsumer``."""

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        if text_data:
            content = self.decode_json(text_data)
            if inspect.isawaitable(content):
                content = await content
            await self.receive_json(content, **kwargs)
        else:
            raise ValueError("No text section for incoming WebSocket frame!")

    async def receive_json(self, content, **kwargs):
        pass

    # As in Channels, the async JSON consumer's codecs are coroutines.
    @classmethod
    async def encode_json(cls, content):
        return json.dumps(content)

    @classmethod
    async def decode_json(cls, text_data):
        return json.loads(text_data)
