"""The cyclic garbage collector around bulk work: paused for one batch, or the process's old objects frozen.

Reference counting frees almost everything a batch makes; the cyclic collector only finds cycles, and it
runs every 700 net allocations. A batch that keeps tens of thousands of containers alive until it is done
(an import chunk's records, statements and rows; the ORM objects of compiling ten segment rules) made it
walk them again and again, promote them, and run full collections over the whole process:
0.9 of 4.5 CPU-seconds of a 100k-row import (B1, PostgreSQL), 2-3 ms of a 10,000-event segment update (B3).
"""

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block; afterwards the collector is as the caller had it.

    Garbage cycles made inside wait for the next collection after the block: keep the block to one
    bounded batch (a chunk of an import, one events batch), never a whole unbounded job.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """The objects that exist now (Django, the models, the URL conf...) out of the collector's walks.

    gc.freeze() parks them for the block's duration (nothing of them is freed meanwhile that would not
    have been anyway: the block does not drop them); garbage the block makes is collected as before.
    unfreeze() gives them back to the collector.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
