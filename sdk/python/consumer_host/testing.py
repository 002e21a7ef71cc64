"""Testing consumers without a socket or a component.

``WebsocketCommunicator`` is modelled on Channels' ::

    communicator = WebsocketCommunicator(ChatConsumer, "/ws/room/",
                                         user=User("1", "Ann", "ann@x.org"),
                                         url_kwargs={"room_name": "room"})
    connected, subprotocol = await communicator.connect()
    await communicator.send_json_to({"hello": 1})
    assert await communicator.receive_json_from() == {...}
    await communicator.disconnect()

It runs the consumer through the same path as the component: a ``Handler``
made by ``_component.make_handler`` calls the ``Runtime``, which calls the
host through ``_host``; only the bottom layer differs: ``_host`` is bound to
a ``Hub``, a fake host with the same function names, variant classes and
``Err`` as componentize-py's generated imports. So state is kept as the
host's blob between events, every event gets a new consumer object, and WIT
values are converted as in the component.

A ``Hub`` is what the host owns: the groups (shared by the communicators on
it), each connection's state blob and outbox, and the database, a real
in-memory SQLite (``hub.db``) in which a test creates its tables. Group
events are delivered once the event that sent them ends, in order, as the
host does; a pure event's handler runs once per event and its frames go to
every member, and it fails the test if it reads the scope, the state or the
database.

The communicator's methods are coroutines, as Channels' are, but they never
suspend, so they run under ``asyncio`` or ``unittest.IsolatedAsyncioTestCase``.
"""

import json
import os
import re
import sqlite3
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from types import SimpleNamespace
from typing import Any, List, Optional, Tuple
from urllib.parse import parse_qsl

from . import _host
from ._component import make_handler
from .runtime import Runtime, Trapped
from .scope import User

__all__ = ["ConsumerTrapped", "Hub", "WebsocketCommunicator", "default_hub", "reset"]

GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,99}$")


class ConsumerTrapped(AssertionError):
    """The consumer trapped (the host would close the connection with 1011).

    Its message carries the traceback the consumer logged.
    """


# -- the fake imports: the shapes of componentize-py's generated modules -------


class Err(Exception):
    """componentize-py raises ``Err(value)`` for a WIT ``result``'s error."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


@dataclass
class _Case:
    value: Any = None


def _cases(*names):
    return {name: type(name, (_Case,), {}) for name in names}


class Level(Enum):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


@dataclass
class _User:
    id: str
    name: Optional[str]
    email: str


@dataclass
class _Scope:
    connection_id: str
    path: str
    url_kwargs: List[Tuple[str, str]]
    query: List[Tuple[str, str]]
    user: Optional[_User]
    subprotocols: List[str]


@dataclass
class _ConsumerInfo:
    pure_events: List[str]


@dataclass
class _Rows:
    columns: List[str]
    rows: List[List[Any]]


def _fake_imports(hub):
    """A namespace shaped like the ``_host.bind_component`` one, on ``hub``."""

    def late(name):
        # Looked up at each call, so a test may wrap a hub method.
        return lambda *args: getattr(hub, name)(*args)

    types = SimpleNamespace(
        User=_User, Scope=_Scope, ConsumerInfo=_ConsumerInfo, **_cases("Message_Text", "Message_Binary")
    )
    connection = SimpleNamespace(
        **_cases("SendError_Closed", "SendError_TooLarge"),
        get_scope=late("_get_scope"),
        accept=late("_accept"),
        send=late("_send"),
        close=late("_close"),
    )
    groups = SimpleNamespace(
        **_cases("GroupError_InvalidName", "GroupError_InvalidEvent", "GroupError_TooLarge"),
        group_add=late("_group_add"),
        group_discard=late("_group_discard"),
        group_send=late("_group_send"),
    )
    database = SimpleNamespace(
        **_cases("Value_Null", "Value_Integer", "Value_Real", "Value_Text", "Value_Blob"),
        **_cases(
            "DbError_AccessDenied",
            "DbError_NoSuchTable",
            "DbError_Constraint",
            "DbError_Invalid",
            "DbError_Timeout",
            "DbError_Failed",
        ),
        Rows=_Rows,
        db_insert=late("_db_insert"),
        db_query=late("_db_query"),
    )
    state = SimpleNamespace(get_state=late("_get_state"), set_state=late("_set_state"))
    logging = SimpleNamespace(Level=Level, log=late("_log"))
    return SimpleNamespace(
        types=types, connection=connection, groups=groups, database=database,
        state=state, logging=logging, Err=Err,
    )


# -- the fake host -------------------------------------------------------------


class _Connection:
    """What the host keeps for one connection."""

    def __init__(self, hub, version, scope):
        self.hub = hub
        self.version = version
        self.handler_class = version.handler_class
        self.scope = scope
        self.phase = "new"  # new, connecting, open, closed
        self.accepted = False
        self.subprotocol = None
        self.close_code = None
        self.http_status = None
        self.state = None
        self.outbox = deque()
        self.logs = []
        self.trapped = None
        self.disconnected = False
        self.raise_on_trap = True


class _Call:
    """The connection an export is running for (None for a pure event)."""

    def __init__(self, connection, pure_event=None, log_to=None):
        self.connection = connection
        self.pure_event = pure_event
        self.sent = []
        self.log_to = log_to


class Hub:
    """A fake host: groups, state, outboxes and an in-memory SQLite database.

    ``read`` and ``write`` grant tables as a consumer's configuration does
    (None grants every table); the limits default to the host's defaults.
    """

    def __init__(self, *, read=None, write=None, max_message_bytes=65536,
                 max_state_bytes=65536, max_event_bytes=65536, strict_imports=True):
        self.db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.read = None if read is None else set(read)
        self.write = None if write is None else set(write)
        self.max_message_bytes = max_message_bytes
        self.max_state_bytes = max_state_bytes
        self.max_event_bytes = max_event_bytes
        self.groups = {}
        self._pending = deque()
        self._call = None
        self._next_id = 0
        self.imports = _fake_imports(self)
        self._versions = {}
        #: Log lines written outside any connection's event (by describe).
        self.logs = []
        self.strict_imports = strict_imports

    # -- for tests ---------------------------------------------------------------

    def members(self, group):
        """The connection ids in ``group``."""
        return [c.scope.connection_id for c in self.groups.get(group, [])]

    def group_send(self, group, event):
        """Sends ``event`` (a dict with a ``type``) to a group, as a consumer
        would, and delivers it."""
        self._pending.append((list(self.groups.get(group, [])), json.dumps(event)))
        self._deliver()

    # -- running exports ---------------------------------------------------------

    def _version(self, consumer):
        """The loaded "version" of a consumer class (or of a built component,
        see ``component_testing``), described once as the host does."""
        if consumer not in self._versions:
            make = getattr(consumer, "_consumer_host_handler_class", None)
            if make is not None:
                handler_class = make(self)
            else:
                handler_class = make_handler(Runtime(consumer), self.imports.types)
            info = self._run(None, lambda: handler_class().describe())
            self._versions[consumer] = SimpleNamespace(
                handler_class=handler_class, pure_events=frozenset(info.pure_events)
            )
        return self._versions[consumer]

    def _run(self, call, export):
        """Runs ``export`` with the host calls bound to this hub for ``call``."""
        outer = self._call
        self._call = call
        _host.bind(self.imports, self._trap)
        guard = self.strict_imports and _IMPORT_GUARD not in sys.meta_path
        if guard:
            sys.meta_path.insert(0, _IMPORT_GUARD)
        try:
            return export()
        finally:
            self._call = outer
            if guard:
                sys.meta_path.remove(_IMPORT_GUARD)

    def _trap(self, reason):
        raise Trapped(reason)

    def _export(self, connection, name, *args):
        """Calls one export for a connection; a trap closes it with 1011."""
        handler = connection.handler_class()  # a fresh object, as after an eviction
        try:
            self._run(_Call(connection), lambda: getattr(handler, name)(*args))
        except Trapped as trap:
            connection.trapped = str(trap)
            if name == "connect":
                # The handshake is answered when connect returns: HTTP 500.
                connection.accepted = False
                connection.http_status = 500
            self._end(connection, 1011, "the consumer failed")
            if connection.raise_on_trap:
                errors = "\n".join(m for level, m in connection.logs if level == "error")
                raise ConsumerTrapped(f"the consumer trapped in {name}: {trap}\n{errors}") from None
            return False
        return True

    def _end(self, connection, code, reason):
        """The host's side of a closed connection: out of every group."""
        if connection.accepted and connection.phase != "closed":
            connection.outbox.append({"type": "websocket.close", "code": code, "reason": reason})
        connection.phase = "closed"
        connection.close_code = connection.close_code or code
        for members in self.groups.values():
            if connection in members:
                members.remove(connection)

    def _deliver(self):
        """Delivers queued group events, in order, until none is left."""
        while self._pending:
            members, event = self._pending.popleft()
            kind = json.loads(event)["type"]
            by_version = {}
            for member in members:
                if member.phase == "open":
                    by_version.setdefault(id(member.version), []).append(member)
            for group in by_version.values():
                version = group[0].version
                if kind in version.pure_events:
                    self._deliver_pure(version.handler_class, group, event)
                else:
                    for member in group:
                        if member.phase == "open":
                            self._export(member, "handle_event", event)

    def _deliver_pure(self, handler_class, members, event):
        """A pure event: run once, send its frames to every member."""
        call = _Call(None, pure_event=json.loads(event)["type"], log_to=members[0])
        try:
            self._run(call, lambda: handler_class().handle_event(event))
        except Trapped as trap:
            errors = "\n".join(m for level, m in members[0].logs if level == "error")
            raise ConsumerTrapped(f"the pure event handler trapped: {trap}\n{errors}") from None
        for member in members:
            if member.phase == "open":
                member.outbox.extend(dict(frame) for frame in call.sent)

    # -- the host calls ----------------------------------------------------------

    def _connection(self, what):
        call = self._call
        if call is None or call.connection is None:
            if call is not None and call.pure_event is not None:
                raise Trapped(
                    f"the handler of pure event {call.pure_event!r} used {what}: a pure "
                    "event's handler may read nothing but the event (remove it from "
                    "pure_events, or stop using this)"
                )
            raise Trapped(f"{what} outside a connection's event")
        return call.connection

    def _get_scope(self):
        return self._connection("the scope").scope

    def _accept(self, subprotocol):
        connection = self._connection("accept")
        if connection.phase != "connecting":
            self._log("warn", "accept outside connect is ignored")
            return
        if subprotocol is not None and subprotocol not in connection.scope.subprotocols:
            raise Trapped(f"accept chose subprotocol {subprotocol!r}, which the client did not offer")
        connection.accepted = True
        connection.subprotocol = subprotocol
        connection.phase = "open"

    def _send(self, message):
        call = self._call
        data = message.value
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        if size > self.max_message_bytes:
            raise Err(self.imports.connection.SendError_TooLarge(self.max_message_bytes))
        frame = {"type": "websocket.send", "text": data} if isinstance(data, str) else {
            "type": "websocket.send", "bytes": bytes(data)}
        if call is not None and call.connection is None and call.pure_event is not None:
            call.sent.append(frame)
            return
        connection = self._connection("send")
        if connection.phase != "open":
            if connection.phase == "connecting":
                self._log("warn", "a message sent before accept was dropped")
            raise Err(self.imports.connection.SendError_Closed())
        connection.outbox.append(frame)

    def _close(self, code, reason):
        connection = self._connection("close")
        if not (code == 1000 or 3000 <= code <= 4999) or len(reason.encode("utf-8")) > 123:
            raise Trapped(f"close({code}, {reason!r}) breaks the host's rules")
        if connection.phase == "closed":
            return
        if not connection.accepted:
            connection.http_status = 403
            connection.close_code = code
            connection.phase = "closed"
            return
        connection.outbox.append({"type": "websocket.close", "code": code, "reason": reason})
        connection.close_code = code
        connection.phase = "closed"

    def _group_error(self, group):
        if not isinstance(group, str) or not GROUP_NAME.match(group):
            g = self.imports.groups
            raise Err(g.GroupError_InvalidName("1 to 99 ASCII letters, digits, '-', '_' or '.'"))

    def _group_add(self, group):
        connection = self._connection("group-add")
        self._group_error(group)
        members = self.groups.setdefault(group, [])
        if connection not in members and connection.phase != "closed":
            members.append(connection)

    def _group_discard(self, group):
        connection = self._connection("group-discard")
        self._group_error(group)
        members = self.groups.get(group, [])
        if connection in members:
            members.remove(connection)

    def _group_send(self, group, event):
        self._connection("group-send")
        self._group_error(group)
        g = self.imports.groups
        if len(event.encode("utf-8")) > self.max_event_bytes:
            raise Err(g.GroupError_TooLarge(self.max_event_bytes))
        try:
            parsed = json.loads(event)
        except ValueError as err:
            raise Err(g.GroupError_InvalidEvent(f"not JSON: {err}")) from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
            raise Err(g.GroupError_InvalidEvent("not a JSON object with a string 'type'"))
        self._pending.append((list(self.groups.get(group, [])), event))

    def _get_state(self):
        return self._connection("the state").state

    def _set_state(self, blob):
        connection = self._connection("the state")
        if len(blob) > self.max_state_bytes:
            raise Err(self.max_state_bytes)
        connection.state = bytes(blob)

    def _log(self, level, message):
        call = self._call
        target = None
        if call is not None:
            target = call.connection or call.log_to
        name = level.name.lower() if isinstance(level, Level) else level
        (self.logs if target is None else target.logs).append((name, message))

    # -- the fake database ---------------------------------------------------------

    def _db_value(self, value):
        d = self.imports.database
        if value is None:
            return d.Value_Null()
        if isinstance(value, int):
            return d.Value_Integer(value)
        if isinstance(value, float):
            return d.Value_Real(value)
        if isinstance(value, str):
            return d.Value_Text(value)
        return d.Value_Blob(bytes(value))

    def _db_fail(self, err, denied=None):
        d = self.imports.database
        text = str(err)
        if denied:
            return Err(d.DbError_AccessDenied(denied))
        if isinstance(err, sqlite3.IntegrityError):
            return Err(d.DbError_Constraint(text))
        if isinstance(err, sqlite3.ProgrammingError):
            return Err(d.DbError_Invalid(text))
        if "no such table" in text or "no such column" in text or "has no column" in text:
            return Err(d.DbError_NoSuchTable(text))
        if "not authorized" in text:
            return Err(d.DbError_Invalid("not a read-only statement"))
        return Err(d.DbError_Failed(text))

    def _db_insert(self, table, row):
        self._connection("the database")
        d = self.imports.database
        if self.write is not None and table not in self.write:
            raise Err(d.DbError_AccessDenied(f"write to {table}"))
        columns = self.db.execute(f'PRAGMA table_info("{table}")').fetchall()
        if not columns:
            raise Err(d.DbError_NoSuchTable(table))
        kinds = {name: (ctype.lower().replace(" ", ""), notnull, default, pk)
                 for _, name, ctype, notnull, default, pk in columns}
        values = {}
        for column, value in row:
            if column not in kinds:
                raise Err(d.DbError_NoSuchTable(f"{table}.{column}"))
            value = None if isinstance(value, d.Value_Null) else value.value
            if kinds[column][0] == "char(32)" and isinstance(value, str):
                try:
                    value = uuid.UUID(value).hex
                except ValueError:
                    pass
            values[column] = value
        for column, (ctype, notnull, default, pk) in kinds.items():
            if column in values:
                continue
            if pk and ctype == "char(32)":
                values[column] = _uuid7_hex()
            elif notnull and default is None and ctype == "datetime":
                values[column] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        names = ", ".join(f'"{c}"' for c in values)
        marks = ", ".join("?" for _ in values)
        try:
            cursor = self.db.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', list(values.values()))
            written = self.db.execute(f'SELECT * FROM "{table}" WHERE rowid = ?', (cursor.lastrowid,))
            record = written.fetchone()
        except sqlite3.Error as err:
            raise self._db_fail(err) from None
        return [(c[0], self._db_value(v)) for c, v in zip(written.description, record)]

    def _db_query(self, sql, params):
        self._connection("the database")
        d = self.imports.database
        allowed = None if self.read is None else self.read | (self.write or set())
        denied = []

        def authorize(action, arg1, arg2, dbname, source):
            if action == sqlite3.SQLITE_READ:
                if allowed is not None and arg1 not in allowed:
                    denied.append(f"read of {arg1}")
                    return sqlite3.SQLITE_DENY
                return sqlite3.SQLITE_OK
            if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION):
                return sqlite3.SQLITE_OK
            return sqlite3.SQLITE_DENY

        values = [None if isinstance(p, d.Value_Null) else p.value for p in params]
        self.db.set_authorizer(authorize)
        try:
            cursor = self.db.execute(sql, values)
            rows = cursor.fetchall()
        except sqlite3.Error as err:
            raise self._db_fail(err, denied[0] if denied else None) from None
        finally:
            self.db.set_authorizer(None)
        columns = [c[0] for c in cursor.description or ()]
        return d.Rows(columns=columns, rows=[[self._db_value(v) for v in row] for row in rows])


class _ImportGuard:
    """Fails imports of modules not loaded yet, as a component does.

    componentize-py keeps only the modules imported while the component is
    initialised (when the consumer's module is imported); a handler that
    imports anything new fails there with ModuleNotFoundError, so it fails
    here too. (Here "loaded" also counts what the test process has loaded.)
    """

    def find_spec(self, name, path=None, target=None):
        raise ModuleNotFoundError(
            f"No module named {name!r}: a component has only the modules imported "
            "when the consumer's module is loaded; import it at the top of the module",
            name=name,
        )


_IMPORT_GUARD = _ImportGuard()


def _uuid7_hex():
    """A time-ordered UUID (version 7) as 32 hex digits, as the host makes."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | (0x7 << 76)
    value = value & ~(0x3 << 62) | (0x2 << 62)
    return f"{value:032x}"


_default = None


def default_hub():
    """The hub communicators share unless given one (made on first use)."""
    global _default
    if _default is None:
        _default = Hub()
    return _default


def reset():
    """Forgets the default hub: its groups, states and database."""
    global _default
    _default = None


def _route_kwargs(route, path):
    pattern = re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", re.escape(route).replace(r"\<", "<").replace(r"\>", ">"))
    match = re.fullmatch(pattern, path.lstrip("/"))
    if match is None:
        raise ValueError(f"path {path!r} does not match route {route!r}")
    return match.groupdict()


class WebsocketCommunicator:
    """One client connection to ``consumer_class``, without a socket.

    ``path`` may carry a query string (a ``token`` in it is removed, as the
    host does). ``user`` is a ``consumer_host.User`` (or a dict with id,
    name, email), None for an anonymous connection. The url kwargs are given
    as ``url_kwargs`` or taken from ``path`` by ``route`` (the host's route
    syntax, e.g. ``"ws/<room_name>/"``). ``raise_on_trap`` (the default)
    makes a consumer failure fail the test with the logged traceback; set it
    False to see what the client sees (a 1011 close).
    """

    def __init__(self, consumer_class, path, *, user=None, url_kwargs=None, route=None,
                 subprotocols=None, hub=None, raise_on_trap=True):
        self.hub = hub or default_hub()
        version = self.hub._version(consumer_class)
        path, _, query = path.partition("?")
        if route is not None:
            url_kwargs = {**_route_kwargs(route, path), **(url_kwargs or {})}
        if isinstance(user, User):
            user = _User(user.id, user.name, user.email)
        elif isinstance(user, dict):
            user = _User(user["id"], user.get("name"), user.get("email", ""))
        self.hub._next_id += 1
        scope = _Scope(
            connection_id=f"test-{self.hub._next_id}",
            path=path,
            url_kwargs=list((url_kwargs or {}).items()),
            query=[(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"],
            user=user,
            subprotocols=list(subprotocols or ()),
        )
        self._connection = _Connection(self.hub, version, scope)
        self._connection.raise_on_trap = raise_on_trap

    # -- what a test can look at ------------------------------------------------------

    @property
    def connection_id(self):
        return self._connection.scope.connection_id

    @property
    def logs(self):
        """The (level, line) pairs the consumer logged for this connection."""
        return list(self._connection.logs)

    @property
    def state(self):
        """The attributes kept for this connection, as a dict."""
        blob = self._connection.state
        return json.loads(blob) if blob else {}

    @property
    def close_code(self):
        """The code the connection was closed with, or None while open."""
        return self._connection.close_code

    @property
    def http_status(self):
        """101 accepted, 403 refused, 500 failed in connect; None before connect."""
        return self._connection.http_status

    # -- Channels' API ------------------------------------------------------------------

    async def connect(self, timeout=1):
        """Runs ``connect``; returns (True, subprotocol) when accepted, else
        (False, close code or None)."""
        c = self._connection
        if c.phase != "new":
            raise RuntimeError("connect() was already called")
        c.phase = "connecting"
        self.hub._export(c, "connect")
        if c.accepted:
            c.http_status = c.http_status or 101
            self._after_close()
            self.hub._deliver()
            return True, c.subprotocol
        if c.phase == "connecting":  # returned without accept or close: refused
            c.phase = "closed"
            c.http_status = 403
        self.hub._end(c, c.close_code, "")
        self.hub._deliver()
        return False, c.close_code

    async def send_to(self, text_data=None, bytes_data=None):
        """Sends one frame from the client."""
        c = self._connection
        if c.phase != "open":
            raise RuntimeError(f"the connection is not open (it is {c.phase})")
        if (text_data is None) == (bytes_data is None):
            raise ValueError("send_to() takes one of text_data and bytes_data")
        message = (self.hub.imports.types.Message_Text(text_data) if text_data is not None
                   else self.hub.imports.types.Message_Binary(bytes(bytes_data)))
        self.hub._export(c, "receive", message)
        self._after_close()
        self.hub._deliver()

    async def send_json_to(self, data):
        await self.send_to(text_data=json.dumps(data))

    async def receive_output(self, timeout=1):
        """The next thing sent to the client, as Channels' ASGI dicts
        (``websocket.send`` with text or bytes, ``websocket.close`` with
        code); raises ``TimeoutError`` when there is none."""
        if not self._connection.outbox:
            raise TimeoutError("the consumer sent nothing more to the client")
        return self._connection.outbox.popleft()

    async def receive_from(self, timeout=1):
        """The next message sent to the client: str or bytes."""
        output = await self.receive_output(timeout)
        if output["type"] != "websocket.send":
            raise AssertionError(f"expected a message, got {output}")
        return output["text"] if "text" in output else output["bytes"]

    async def receive_json_from(self, timeout=1):
        data = await self.receive_from(timeout)
        if not isinstance(data, str):
            raise AssertionError("expected a text frame, got a binary one")
        return json.loads(data)

    async def receive_nothing(self, timeout=0.1, interval=0.01):
        """True if nothing was sent to the client (and is waiting to be read)."""
        return not self._connection.outbox

    async def disconnect(self, code=1000, timeout=1):
        """The client goes away; runs ``disconnect`` if it has not run yet."""
        c = self._connection
        if c.phase == "open":
            c.phase = "closed"
            c.close_code = code
            self._run_disconnect(code)
        self.hub._deliver()

    def _after_close(self):
        """When a handler closed an accepted connection, the host runs
        ``disconnect`` with its code once the close is done."""
        c = self._connection
        if c.phase == "closed" and c.accepted and not c.disconnected and c.trapped is None:
            self._run_disconnect(c.close_code)

    def _run_disconnect(self, code):
        c = self._connection
        c.disconnected = True
        self.hub._export(c, "disconnect", code)
        self.hub._end(c, code, "")
