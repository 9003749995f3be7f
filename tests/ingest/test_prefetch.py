"""The import's read-ahead thread hands over every chunk in order, its errors, and stops with the consumer."""

import threading
import time

import pytest

from segments.ingest.prefetch import prefetched


def test_items_arrive_in_order_and_complete():
    assert list(prefetched(iter(range(50)))) == list(range(50))


def test_an_error_while_producing_is_raised_to_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("The file is not UTF-8 text near line 3")

    got = []
    with pytest.raises(ValueError, match="not UTF-8"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def items():
        for n in range(1000):
            produced.append(n)
            yield n

    for item in prefetched(items(), ahead=1):
        if item == 3:
            break
    time.sleep(0.3)
    assert len(produced) <= 6  # one ahead, not the whole file
    assert not any(t.name == "import-prefetch" and t.is_alive() for t in threading.enumerate())
