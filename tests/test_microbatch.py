"""Micro-batching (export/microbatch.py): concurrent items share calls, results go back to
their own submitters, a failing item fails alone, limits on batch size and wait hold."""

import threading
import time

import pytest

from export import microbatch


class Recorder:
    def __init__(self, delay=0.0, fail_on=None):
        self.calls, self.delay, self.fail_on = [], delay, fail_on
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        time.sleep(self.delay)
        return [item * 10 for item in items]


def test_concurrent_items_share_batches_and_get_their_results():
    recorder = Recorder(delay=0.01)
    results = {}
    with microbatch.MicroBatcher(recorder, max_batch=8, max_wait=0.05) as batcher:
        barrier = threading.Barrier(24)

        def client(i):
            barrier.wait()
            results[i] = batcher.submit(i).result(10)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {i: i * 10 for i in range(24)}
    sizes = [len(c) for c in recorder.calls]
    assert sum(sizes) == 24 and max(sizes) <= 8
    assert len(recorder.calls) < 24  # batching happened: fewer calls than items
    assert sorted(i for c in recorder.calls for i in c) == list(range(24))


def test_a_lone_item_waits_at_most_max_wait():
    recorder = Recorder()
    with microbatch.MicroBatcher(recorder, max_batch=64, max_wait=0.02) as batcher:
        started = time.monotonic()
        assert batcher.submit(3).result(5) == 30
        elapsed = time.monotonic() - started
    assert 0.015 <= elapsed < 1.0
    assert recorder.calls == [[3]]


def test_map_keeps_order_and_batches_together():
    recorder = Recorder()
    with microbatch.MicroBatcher(recorder, max_batch=4, max_wait=0.05) as batcher:
        assert batcher.map(list(range(10))) == [i * 10 for i in range(10)]
    assert [len(c) for c in recorder.calls] == [4, 4, 2]


def test_a_failing_item_fails_alone():
    recorder = Recorder(fail_on=5)
    with microbatch.MicroBatcher(recorder, max_batch=8, max_wait=0.05) as batcher:
        futures = [batcher.submit(i) for i in range(8)]
        for i, future in enumerate(futures):
            if i == 5:
                with pytest.raises(ValueError, match="bad item 5"):
                    future.result(5)
            else:
                assert future.result(5) == i * 10
    assert recorder.calls[0] == list(range(8))  # the batch, then each item alone
    assert len(recorder.calls) == 9


def test_wrong_result_count_is_an_error_per_item():
    with microbatch.MicroBatcher(lambda items: [], max_batch=4, max_wait=0.05) as batcher:
        futures = [batcher.submit(i) for i in range(3)]
        for future in futures:
            with pytest.raises(RuntimeError, match="0 results for 1 items"):
                future.result(5)


def test_on_batch_hook_and_close():
    seen = []
    batcher = microbatch.MicroBatcher(Recorder(), max_batch=2, max_wait=0.05,
                                      on_batch=lambda size, seconds: seen.append(size))
    assert batcher.map([1, 2, 3]) == [10, 20, 30]
    batcher.close()
    assert sorted(seen) == [1, 2]
    with pytest.raises(microbatch.BatcherClosedError):
        batcher.submit(1)


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_wait": -1}])
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        microbatch.MicroBatcher(Recorder(), **kwargs)
