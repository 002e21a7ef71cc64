"""The glue between componentize-py's exports and the runtime.

The app module that ``consumer_host.build`` generates is two lines::

    from consumer_host import _component
    Handler = _component.load("consumers:ChatConsumer")

componentize-py imports it while it pre-initialises the component, so
everything ``load`` does (binding the host imports, importing the author's
module, caching its source for tracebacks) is part of the snapshot and costs
nothing per instance. Note that a module imported later, inside a handler,
is *not* available in the component: componentize-py keeps only what was
imported during initialisation.
"""

import importlib
import linecache
import os
import sys

from . import _host
from .runtime import Runtime


def import_entry(entry):
    """The class an entry string such as ``"consumers:ChatConsumer"`` names."""
    module_name, sep, class_name = entry.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"entry {entry!r} must look like 'module:ClassName'")
    module = importlib.import_module(module_name)
    try:
        obj = module
        for part in class_name.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no {class_name!r} (entry {entry!r})") from None
    return obj


def make_handler(runtime, types):
    """The class componentize-py calls for the ``handler`` export.

    ``types`` is the ``types`` import module (for ``ConsumerInfo`` and the
    ``message`` variant); the test harness passes its fake one, so this
    conversion runs in tests too.
    """

    class Handler:
        def describe(self):
            return types.ConsumerInfo(pure_events=runtime.describe())

        def connect(self):
            runtime.connect()

        def receive(self, message):
            runtime.receive(message.value)

        def handle_event(self, event):
            runtime.handle_event(event)

        def disconnect(self, code):
            runtime.disconnect(code)

    return Handler


def _keep_sources(root):
    """Caches the source of the modules under ``root`` for tracebacks.

    The files are readable while the component is built but not when it
    runs; a linecache entry without a modification time is never
    invalidated, so tracebacks logged at run time show the code lines.
    """
    root = os.path.abspath(root)
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename or not filename.endswith(".py"):
            continue
        if not os.path.abspath(filename).startswith(root + os.sep):
            continue
        try:
            with open(filename, encoding="utf-8") as f:
                lines = f.readlines()
        except OSError:
            continue
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)


def load(entry):
    """Binds the host, imports the consumer named by ``entry``, returns the
    ``Handler`` class for componentize-py."""
    _host.bind_component()
    from wit_world.imports import types

    consumer_class = import_entry(entry)
    runtime = Runtime(consumer_class)
    # The project's folder as the component sees it (componentize-py mounts
    # each python path under its own name), and the SDK's.
    top = sys.modules[entry.partition(":")[0].split(".")[0]]
    top_file = getattr(top, "__file__", None)
    if top_file:
        project = os.path.dirname(top_file)
        if os.path.basename(top_file) == "__init__.py":
            project = os.path.dirname(project)
        _keep_sources(project)
    _keep_sources(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return make_handler(runtime, types)
