"""The coroutine driver and asgiref's two adapters."""

import unittest

import support  # noqa: F401  (import paths)

from consumer_host import async_to_sync, database_sync_to_async, sync_to_async
from consumer_host.exceptions import WouldSuspend
from consumer_host.sync import Done, run


class Waits:
    def __await__(self):
        yield "something"


class DriverTests(unittest.TestCase):
    def test_runs_a_coroutine_to_its_result(self):
        async def inner(x):
            return x * 2

        async def outer():
            return await inner(3) + await Done(1)

        self.assertEqual(run(outer()), 7)

    def test_a_bare_yield_is_passed_over(self):
        class Yields:
            def __await__(self):
                yield
                return "done"

        async def outer():
            return await Yields()

        self.assertEqual(run(outer()), "done")

    def test_real_waiting_raises_and_closes_the_coroutine(self):
        cleaned = []

        async def outer():
            try:
                await Waits()
            finally:
                cleaned.append(True)

        with self.assertRaises(WouldSuspend) as caught:
            run(outer())
        self.assertIn("awaited 'something'", str(caught.exception))
        self.assertEqual(cleaned, [True])

    def test_exceptions_propagate(self):
        async def outer():
            raise KeyError("k")

        with self.assertRaises(KeyError):
            run(outer())

    def test_not_awaitable(self):
        with self.assertRaises(TypeError):
            run(42)


class AdapterTests(unittest.TestCase):
    def test_sync_to_async_forms(self):
        def add(a, b=0):
            return a + b

        self.assertEqual(run(sync_to_async(add)(1, b=2)), 3)
        self.assertEqual(run(sync_to_async(thread_sensitive=False)(add)(4)), 4)
        self.assertEqual(run(database_sync_to_async(add)(5)), 5)
        self.assertEqual(sync_to_async(add).__name__, "add")

    def test_sync_to_async_decorates_methods(self):
        class Thing:
            factor = 10

            @sync_to_async
            def scaled(self, x):
                return self.factor * x

        self.assertEqual(run(Thing().scaled(2)), 20)

    def test_async_to_sync_forms(self):
        async def double(x):
            return 2 * x

        class Thing:
            @async_to_sync
            async def triple(self, x):
                return 3 * x

        self.assertEqual(async_to_sync(double)(4), 8)
        self.assertEqual(Thing().triple(2), 6)
        self.assertEqual(async_to_sync(lambda: Done("eager"))(), "eager")
        self.assertEqual(async_to_sync(lambda: "plain")(), "plain")

    def test_nesting_both_ways(self):
        async def leaf():
            return "leaf"

        def middle():
            return async_to_sync(leaf)()

        async def top():
            return await sync_to_async(middle)()

        self.assertEqual(async_to_sync(top)(), "leaf")

    def test_callables_only(self):
        with self.assertRaises(TypeError):
            sync_to_async(1)
        with self.assertRaises(TypeError):
            async_to_sync(1)


if __name__ == "__main__":
    unittest.main()
