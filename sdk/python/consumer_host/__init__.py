"""consumer-host's Python SDK: Django Channels-style WebSocket consumers
that run as WebAssembly components.

A consumer written for Channels keeps its shape; only its imports change
(``channels.generic.websocket`` and ``asgiref.sync`` become
``consumer_host``) and the ORM becomes ``self.db``. See README.md.
"""

from .consumer import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from .exceptions import (
    AcceptConnection,
    AccessDenied,
    DatabaseError,
    DenyConnection,
    IntegrityError,
    InvalidQuery,
    NoSuchTable,
    QueryTimeout,
    StopConsumer,
)
from .scope import AnonymousUser, User
from .sync import async_to_sync, database_sync_to_async, sync_to_async

__all__ = [
    "AcceptConnection",
    "AccessDenied",
    "AnonymousUser",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "DatabaseError",
    "DenyConnection",
    "IntegrityError",
    "InvalidQuery",
    "JsonWebsocketConsumer",
    "NoSuchTable",
    "QueryTimeout",
    "StopConsumer",
    "User",
    "WebsocketConsumer",
    "async_to_sync",
    "database_sync_to_async",
    "sync_to_async",
]
