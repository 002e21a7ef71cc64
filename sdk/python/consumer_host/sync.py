"""Running async handlers without an event loop, and asgiref's two adapters.

Every host call returns at once (the host does the waiting), so a consumer's
coroutine never has anything to wait for: ``run`` drives it with
``send(None)`` until it returns. If it awaits something that really suspends
(an asyncio future or task, ``asyncio.sleep(n > 0)``, network I/O) nothing
would ever wake it, so ``run`` raises ``WouldSuspend`` naming what was
awaited instead of hanging. A bare ``yield`` (what ``asyncio.sleep(0)``
does) only offers to let others run, and is passed over.

``sync_to_async`` and ``async_to_sync`` keep the shape of asgiref's so code
written for Channels runs unchanged: here both simply call through, since
there are no threads and no loop to hop between.
"""

import functools
import inspect

from .exceptions import WouldSuspend


def run(awaitable):
    """Runs an awaitable to completion and returns its result."""
    if inspect.iscoroutine(awaitable):
        it = awaitable
    else:
        await_method = getattr(type(awaitable), "__await__", None)
        if await_method is None:
            raise TypeError(f"{awaitable!r} is not awaitable")
        it = await_method(awaitable)
    try:
        while True:
            yielded = it.send(None)
            if yielded is not None:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise WouldSuspend(
                    f"the handler awaited {yielded!r}, which waits for something "
                    "to happen later. consumer-host runs each handler to the end "
                    "without an event loop (host calls return at once), so "
                    "futures, tasks, asyncio.sleep(n > 0), locks and network I/O "
                    "cannot be awaited in a consumer"
                )
    except StopIteration as stop:
        return stop.value


class Done:
    """An awaitable whose work is already done: awaiting it gives ``value``.

    The channel layer returns these, so ``await layer.group_add(...)``,
    ``async_to_sync(layer.group_add)(...)`` and a plain call all work.
    """

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value

    def __await__(self):
        return self.value
        yield  # makes this a generator function; never reached


def async_to_sync(awaitable_function, *, force_new_loop=False):
    """Returns a synchronous function that runs ``awaitable_function``.

    As asgiref's: ``async_to_sync(f)(*args)`` or as a decorator.
    ``force_new_loop`` is accepted for compatibility and ignored.
    """
    if not callable(awaitable_function):
        raise TypeError("async_to_sync() needs a callable")

    @functools.wraps(awaitable_function)
    def call(*args, **kwargs):
        result = awaitable_function(*args, **kwargs)
        if inspect.isawaitable(result):
            return run(result)
        return result

    return call


def sync_to_async(func=None, *, thread_sensitive=True, executor=None):
    """Returns a coroutine function that calls the synchronous ``func``.

    As asgiref's: ``sync_to_async(f)``, ``@sync_to_async`` and
    ``@sync_to_async(thread_sensitive=False)``; the keyword arguments are
    accepted for compatibility and ignored (there is one thread). The result
    is a plain function, so it also decorates methods.
    """
    if func is None:
        return lambda f: sync_to_async(f, thread_sensitive=thread_sensitive, executor=executor)
    if not callable(func):
        raise TypeError("sync_to_async() needs a callable")

    @functools.wraps(func)
    async def call(*args, **kwargs):
        return func(*args, **kwargs)

    return call


# Channels' name for the same thing (``from channels.db import ...``).
database_sync_to_async = sync_to_async
