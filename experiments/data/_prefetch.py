"""Prefetching: prepare the next batches on a background thread while the device trains.

Host-side work per step (indexing, flips, dequantisation noise) and the host-to-device
copy then overlap with the previous step's computation, which JAX dispatches
asynchronously. A plain thread is enough: numpy releases the GIL in the bulk copies,
and ``jax.device_put`` is thread-safe.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import jax

_END = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Iterator):
    """Iterate over ``batches`` with up to ``buffer_size`` items prepared ahead.

    A daemon thread pulls items from ``batches`` (any iterable, e.g. a generator over
    steps), moves each to the device with ``jax.device_put(item, sharding)`` (a pytree
    of arrays; ``sharding=None`` puts it on the default device; ``device_put=False``
    leaves it on the host) and queues it. Iteration yields the items in order and ends
    when ``batches`` does; an exception raised while preparing an item is re-raised
    here, at that item. :meth:`close` (or leaving a ``with`` block) stops the thread;
    at most ``buffer_size + 1`` items are prepared but never used. Example::

        steps = range(start, num_steps)
        with Prefetcher(source.train_batch(seed, s, 128) for s in steps) as it:
            for step, x in zip(steps, it):
                state = train_step(state, x)
    """

    def __init__(
        self,
        batches: Iterable,
        *,
        buffer_size: int = 2,
        sharding: Any = None,
        device_put: bool = True,
    ):
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(
                f"buffer_size must be an integer >= 1, got buffer_size={buffer_size!r}"
            )
        self._source = iter(batches)
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._sharding = sharding
        self._device_put = device_put
        self._done = False
        self._thread = threading.Thread(target=self._produce, name="Prefetcher", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if self._device_put:
                    item = jax.device_put(item, self._sharding)
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failure(e))
            return
        self._put(_END)

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread and drop the prepared items."""
        self._stop.set()
        self._done = True
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the background thread is still running."""
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
