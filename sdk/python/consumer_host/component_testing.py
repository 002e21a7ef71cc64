"""Running a *built* component under the test harness (needs ``wasmtime``).

``WebsocketCommunicator`` takes a consumer class; give it a
``ComponentConsumer`` instead and the same test drives the ``.wasm`` that
``consumer_host.build`` wrote, under Wasmtime (the ``wasmtime`` package from
PyPI), with the ``Hub`` as its host::

    Chat = ComponentConsumer("chat.wasm")
    communicator = WebsocketCommunicator(Chat, "/ws/room/", ...)

By default every event runs in a new instance, as if the host had evicted
the previous one, so a test also proves that the consumer keeps nothing in
globals. A trap (an uncaught exception, a broken host rule) ends the event
as in the host. This module is for tests only; the host is the real thing.
"""

import hashlib
import os
import tempfile

from wasmtime import Config, Engine, Store, WasiConfig
from wasmtime.component import Component, Linker, Record, Variant

from .runtime import Trapped

PACKAGE = "consumer-host:consumer/"
VERSION = "@0.2.0"


class _HostTrap(Exception):
    """Raised by a host function to trap the guest (Wasmtime re-raises it)."""


def _compile(engine, path):
    """Compiles ``path``, keeping the compiled code in the temp folder: a
    component of 20 MB takes seconds to compile and milliseconds to load."""
    with open(path, "rb") as f:
        data = f.read()
    key = hashlib.sha256(data + b"wasmtime-py").hexdigest()[:32]
    cached = os.path.join(tempfile.gettempdir(), f"consumer-host-{key}.cwasm")
    if os.path.exists(cached):
        try:
            return Component.deserialize_file(engine, cached)
        except Exception:
            pass
    component = Component(engine, data)
    try:
        partial = f"{cached}.{os.getpid()}"
        with open(partial, "wb") as f:
            f.write(component.serialize())
        os.replace(partial, cached)
    except Exception:
        pass
    return component


class ComponentConsumer:
    """A built consumer component, usable where a consumer class is."""

    def __init__(self, path, *, fresh_instance_per_event=True, version=VERSION):
        self.path = path
        self.fresh_instance_per_event = fresh_instance_per_event
        self.version = version
        self.engine = Engine(Config())
        self.component = _compile(self.engine, path)

    def __repr__(self):
        return f"<ComponentConsumer {self.path}>"

    def _consumer_host_handler_class(self, hub):
        return _Bridge(self, hub).handler_class()


class _Bridge:
    """The Hub's host functions, offered to the component through Wasmtime."""

    def __init__(self, consumer, hub):
        self.consumer = consumer
        self.hub = hub
        self.instances = {}
        self.linker = Linker(consumer.engine)
        self.linker.add_wasip2()
        self._define()

    # -- instances -------------------------------------------------------------

    def instance(self, connection):
        key = id(connection) if connection is not None else None
        if key not in self.instances:
            store = Store(self.consumer.engine)
            store.set_wasi(WasiConfig())  # no files, no environment, output dropped
            self.instances[key] = (store, self.linker.instantiate(store, self.consumer.component))
        return key, self.instances[key]

    def call(self, export, *args):
        connection = self.hub._call.connection if self.hub._call is not None else None
        key, (store, instance) = self.instance(connection)
        handler = instance.get_export_index(store, PACKAGE + "handler" + self.consumer.version)
        func = instance.get_func(store, instance.get_export_index(store, export, handler))
        try:
            result = func(store, *args)
            func.post_return(store)
            return result
        except _HostTrap as trap:
            self.instances.pop(key, None)
            raise Trapped(str(trap)) from None
        except Exception as err:
            self.instances.pop(key, None)
            first = str(err).strip().splitlines()
            raise Trapped(f"the component trapped in {export}: {first[-1] if first else err}") from None
        finally:
            if self.consumer.fresh_instance_per_event:
                self.instances.pop(key, None)

    def handler_class(self):
        bridge = self
        types = self.hub.imports.types

        class Handler:
            def describe(self):
                info = bridge.call("describe")
                return types.ConsumerInfo(pure_events=list(getattr(info, "pure-events")))

            def connect(self):
                bridge.call("connect")

            def receive(self, message):
                bridge.call("receive", message.value)

            def handle_event(self, event):
                bridge.call("handle-event", event)

            def disconnect(self, code):
                bridge.call("disconnect", code)

        return Handler

    # -- host functions ----------------------------------------------------------

    def _define(self):
        hub, w = self.hub, self.hub.imports
        version = self.consumer.version

        def guard(func):
            """Hub errors become WIT results; a hub trap traps the guest."""
            def host_function(store, *args):
                try:
                    return func(*args)
                except Trapped as trap:
                    raise _HostTrap(str(trap)) from None
            return host_function

        def record(**fields):
            r = Record()
            for name, value in fields.items():
                setattr(r, name.replace("_", "-"), value)
            return r

        def get_scope():
            s = hub._get_scope()
            user = None if s.user is None else record(id=s.user.id, name=s.user.name, email=s.user.email)
            return record(connection_id=s.connection_id, path=s.path, url_kwargs=list(s.url_kwargs),
                          query=list(s.query), user=user, subprotocols=list(s.subprotocols))

        def send(data):
            message = w.types.Message_Text(data) if isinstance(data, str) else w.types.Message_Binary(bytes(data))
            try:
                hub._send(message)
            except w.Err as err:
                # send-error is untagged for Wasmtime: closed is None, too-large its limit.
                return Variant("err", None if isinstance(err.value, w.connection.SendError_Closed) else err.value.value)
            return Variant("ok")

        def group_call(func):
            def call(*args):
                try:
                    func(*args)
                except w.Err as err:
                    tag = {"GroupError_InvalidName": "invalid-name", "GroupError_InvalidEvent": "invalid-event",
                           "GroupError_TooLarge": "too-large"}[type(err.value).__name__]
                    return Variant(tag, err.value.value)
                return None
            return call

        def db_error(err):
            name = type(err.value).__name__.split("_", 1)[1]
            tag = {"AccessDenied": "access-denied", "NoSuchTable": "no-such-table", "Constraint": "constraint",
                   "Invalid": "invalid", "Timeout": "timeout", "Failed": "failed"}[name]
            return Variant(tag, None if tag == "timeout" else err.value.value)

        def to_fake(value):
            d = w.database
            if value is None:
                return d.Value_Null()
            if isinstance(value, int):
                return d.Value_Integer(value)
            if isinstance(value, float):
                return d.Value_Real(value)
            if isinstance(value, str):
                return d.Value_Text(value)
            return d.Value_Blob(bytes(value))

        def from_fake(value):
            return None if isinstance(value, w.database.Value_Null) else value.value

        def db_insert(table, row):
            try:
                written = hub._db_insert(table, [(c, to_fake(v)) for c, v in row])
            except w.Err as err:
                return db_error(err)
            return [(c, from_fake(v)) for c, v in written]

        def db_query(sql, params):
            try:
                rows = hub._db_query(sql, [to_fake(v) for v in params])
            except w.Err as err:
                return db_error(err)
            return record(columns=rows.columns, rows=[[from_fake(v) for v in row] for row in rows.rows])

        def set_state(blob):
            try:
                hub._set_state(bytes(blob))
            except w.Err as err:
                return err.value
            return None

        functions = {
            "connection": {"get-scope": get_scope, "accept": hub._accept, "send": send, "close": hub._close},
            "groups": {"group-add": group_call(hub._group_add), "group-discard": group_call(hub._group_discard),
                       "group-send": group_call(hub._group_send)},
            "database": {"db-insert": db_insert, "db-query": db_query},
            "state": {"get-state": hub._get_state, "set-state": set_state},
            "logging": {"log": lambda level, message: hub._log(level, message)},
        }
        with self.linker.root() as root:
            for interface, funcs in functions.items():
                with root.add_instance(PACKAGE + interface + version) as instance:
                    for name, func in funcs.items():
                        instance.add_func(name, guard(func))
