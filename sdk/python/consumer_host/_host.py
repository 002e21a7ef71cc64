"""The one module that calls the host.

Inside a component it is bound (by ``_component``) to the import modules that
componentize-py generates for the ``consumer`` world; in tests it is bound (by
``consumer_host.testing``) to a fake with the same shape: the same function
names, the same variant classes, the same ``Err`` exception. Everything above
this module deals in plain Python values (str, bytes, dicts, exceptions), and
this module is where WIT types are converted, so the conversion runs in tests
exactly as in the component.
"""

import os
import uuid
from types import SimpleNamespace

from .exceptions import (
    AccessDenied,
    DatabaseError,
    EventTooLarge,
    GroupError,
    IntegrityError,
    InvalidEvent,
    InvalidGroupName,
    InvalidQuery,
    MessageTooLarge,
    NoSuchTable,
    QueryTimeout,
    StateTooLarge,
)

# The bound imports: a namespace with the modules ``types``, ``connection``,
# ``groups``, ``database``, ``state``, ``logging`` and the class ``Err``.
_wit = None
# Called to end the current export with a trap; never returns in a component.
_trap = None

LEVELS = ("trace", "debug", "info", "warn", "error")


def bind(wit, trap):
    """Binds the host calls to ``wit`` (see above) and the trap to ``trap``."""
    global _wit, _trap
    _wit = wit
    _trap = trap


def bind_component():
    """Binds to the component's real imports.

    Only importable while componentize-py builds the component (it generates
    ``wit_world``); called once at initialisation, so the imports are part of
    the pre-initialised snapshot.
    """
    from componentize_py_types import Err
    from wit_world.imports import connection, database, groups, state, types
    from wit_world.imports import logging as wit_logging

    bind(
        SimpleNamespace(
            types=types,
            connection=connection,
            groups=groups,
            database=database,
            state=state,
            logging=wit_logging,
            Err=Err,
        ),
        # abort() executes `unreachable`: the export traps and the host closes
        # the connection with 1011.
        trap=os.abort,
    )


def is_bound():
    return _wit is not None


def _w():
    if _wit is None:
        raise RuntimeError(
            "consumer_host is not connected to a host: consumers run inside a "
            "component built with `python -m consumer_host.build`, or in tests "
            "through consumer_host.testing.WebsocketCommunicator"
        )
    return _wit


def trap(reason):
    """Ends the current export with a trap (the host closes with 1011)."""
    _w()
    _trap(reason)
    # A component never gets here; a fake trap raises instead of returning.
    raise RuntimeError("the trap returned: " + reason)


# -- connection ---------------------------------------------------------------


def get_scope():
    """The connection's scope as plain values (see ``types.scope`` in WIT)."""
    s = _w().connection.get_scope()
    user = None
    if s.user is not None:
        user = {"id": s.user.id, "name": s.user.name, "email": s.user.email}
    return {
        "connection_id": s.connection_id,
        "path": s.path,
        "url_kwargs": [tuple(pair) for pair in s.url_kwargs],
        "query": [tuple(pair) for pair in s.query],
        "user": user,
        "subprotocols": list(s.subprotocols),
    }


def accept(subprotocol):
    _w().connection.accept(subprotocol)


def send(data):
    """Sends a text (str) or binary (bytes) message.

    Returns False when the connection is already closed (the message is
    dropped, as Channels drops messages sent after a close); raises
    ``MessageTooLarge`` when the host's size limit refuses it.
    """
    w = _w()
    if isinstance(data, str):
        message = w.types.Message_Text(data)
    else:
        message = w.types.Message_Binary(bytes(data))
    try:
        w.connection.send(message)
    except w.Err as err:
        if isinstance(err.value, w.connection.SendError_TooLarge):
            size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
            raise MessageTooLarge(
                f"a {size}-byte message exceeds the host's limit of "
                f"{err.value.value} bytes; it was not sent"
            ) from None
        return False
    return True


def close(code, reason):
    _w().connection.close(code, reason)


# -- groups -------------------------------------------------------------------


def _group_call(func, *args):
    w = _w()
    try:
        func(*args)
    except w.Err as err:
        value = err.value
        if isinstance(value, w.groups.GroupError_InvalidName):
            raise InvalidGroupName(
                f"invalid group name {args[0]!r}: {value.value} (a group name is "
                "1 to 99 ASCII letters, digits, '-', '_' or '.')"
            ) from None
        if isinstance(value, w.groups.GroupError_InvalidEvent):
            raise InvalidEvent(f"invalid group event: {value.value}") from None
        if isinstance(value, w.groups.GroupError_TooLarge):
            raise EventTooLarge(
                f"the event for group {args[0]!r} exceeds the host's limit of "
                f"{value.value} bytes"
            ) from None
        raise GroupError(repr(value)) from None


def group_add(group):
    _group_call(_w().groups.group_add, group)


def group_discard(group):
    _group_call(_w().groups.group_discard, group)


def group_send(group, event_json):
    _group_call(_w().groups.group_send, group, event_json)


# -- database -----------------------------------------------------------------


def to_value(value):
    """A Python value as a WIT ``database.value``."""
    db = _w().database
    if value is None:
        return db.Value_Null()
    if isinstance(value, bool):
        return db.Value_Integer(int(value))
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise OverflowError(f"{value} does not fit a 64-bit database integer")
        return db.Value_Integer(value)
    if isinstance(value, float):
        return db.Value_Real(value)
    if isinstance(value, str):
        return db.Value_Text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return db.Value_Blob(bytes(value))
    if isinstance(value, uuid.UUID):
        # Django stores a UUIDField as 32 hex digits in SQLite.
        return db.Value_Text(value.hex)
    raise TypeError(
        f"cannot pass a {type(value).__name__} to the database: use None, int, "
        "float, str or bytes (a bool is stored as 0 or 1, a UUID as its hex)"
    )


def from_value(value):
    """A WIT ``database.value`` as None, int, float, str or bytes."""
    if isinstance(value, _w().database.Value_Null):
        return None
    return value.value


def _db_error(err, what):
    w = _w()
    value = err.value
    db = w.database
    if isinstance(value, db.DbError_AccessDenied):
        return AccessDenied(
            f"{what}: access denied to {value.value} (the consumer's configuration "
            "must grant it under read or write)"
        )
    if isinstance(value, db.DbError_NoSuchTable):
        return NoSuchTable(f"{what}: no such table or column: {value.value}")
    if isinstance(value, db.DbError_Constraint):
        return IntegrityError(f"{what}: {value.value}")
    if isinstance(value, db.DbError_Invalid):
        return InvalidQuery(f"{what}: {value.value}")
    if isinstance(value, db.DbError_Timeout):
        return QueryTimeout(f"{what}: the statement ran past the host's time limit")
    return DatabaseError(f"{what}: {getattr(value, 'value', value)}")


def db_insert(table, row):
    """Inserts ``row`` (a list of (column, value)); returns the row as written."""
    w = _w()
    pairs = [(str(column), to_value(value)) for column, value in row]
    try:
        written = w.database.db_insert(table, pairs)
    except w.Err as err:
        raise _db_error(err, f"insert into {table}") from None
    return [(column, from_value(value)) for column, value in written]


def db_query(sql, params):
    """Runs one read-only statement; returns (columns, rows of values)."""
    w = _w()
    values = [to_value(p) for p in params]
    try:
        result = w.database.db_query(sql, values)
    except w.Err as err:
        shown = sql if len(sql) <= 80 else sql[:77] + "..."
        raise _db_error(err, f"query {shown!r}") from None
    rows = [[from_value(v) for v in row] for row in result.rows]
    return list(result.columns), rows


# -- state --------------------------------------------------------------------


def get_state():
    blob = _w().state.get_state()
    return None if blob is None else bytes(blob)


def set_state(blob):
    w = _w()
    try:
        w.state.set_state(blob)
    except w.Err as err:
        raise StateTooLarge(
            f"the consumer's attributes take {len(blob)} bytes as JSON, over the "
            f"host's state limit of {err.value} bytes; keep less on self"
        ) from None


# -- logging ------------------------------------------------------------------


def log(level, message):
    """Writes a log line; ``level`` is one of ``LEVELS``."""
    w = _w()
    w.logging.log(getattr(w.logging.Level, level.upper()), message)
