"""Micro-batching: items submitted by many threads go through one function call per batch.

A SavedModel call costs much the same for 1 image as for 16 (the per-call overhead dominates
for faces), so the service collects the images of concurrent requests and embeds them
together. :class:`MicroBatcher` runs one worker thread: it waits for a first item, then
collects more until ``max_batch`` items or ``max_wait`` seconds after the first one, and calls
``function(items)`` once, which returns one result per item. Each submitter gets a
``concurrent.futures.Future``.

A failing batch does not fail its neighbours: the items are retried one by one, so only the
item that raises gets the exception. ``on_batch(size, seconds)`` (optional) is told each
batch's size and duration (the service's metrics).
"""

import collections
import concurrent.futures
import threading
import time

_Pending = collections.namedtuple("_Pending", ["item", "future"])


class BatcherClosedError(RuntimeError):
    """The batcher was closed: no more items are taken."""


class MicroBatcher:
    """See the module docstring. Use as a context manager, or call :meth:`close`."""

    def __init__(self, function, max_batch=32, max_wait=0.005, on_batch=None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self._function = function
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait)
        self._on_batch = on_batch
        self._queue = collections.deque()
        self._condition = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._worker.start()

    def submit(self, item):
        """A Future of ``function([item, ...])``'s result for ``item``."""
        future = concurrent.futures.Future()
        with self._condition:
            if self._closed:
                raise BatcherClosedError("the batcher is closed")
            self._queue.append(_Pending(item, future))
            self._condition.notify()
        return future

    def map(self, items, timeout=None):
        """The results of ``items`` (submitted together, so they share batches), in order."""
        futures = [self.submit(item) for item in items]
        return [future.result(timeout) for future in futures]

    def _take_batch(self):
        """Block for the next batch; None once closed and drained."""
        with self._condition:
            while not self._queue and not self._closed:
                self._condition.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            count = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _run(self):
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            batch = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            started = time.monotonic()
            try:
                results = self._call([p.item for p in batch])
            except Exception:  # noqa: BLE001 - one bad item: find it, serve the others
                for pending in batch:
                    self._run_alone(pending)
            else:
                for pending, result in zip(batch, results):
                    pending.future.set_result(result)
            if self._on_batch is not None:
                self._on_batch(len(batch), time.monotonic() - started)

    def _call(self, items):
        results = list(self._function(items))
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results for "
                               f"{len(items)} items")
        return results

    def _run_alone(self, pending):
        try:
            pending.future.set_result(self._call([pending.item])[0])
        except Exception as e:  # noqa: BLE001 - handed to the submitter
            pending.future.set_exception(e)

    def close(self, timeout=None):
        """Take no more items; finish those queued, then stop the worker."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._worker.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
