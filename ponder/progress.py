"""Progress for work that takes more than a few seconds (evaluation batches, sweep values, LM problems, bench
configs): a tqdm bar on a terminal, shown only after `delay` seconds; off a terminal (a log file, CI), a plain line
at most every `every` seconds and a last one at the end, each with the ETA, and nothing at all for work that ends
within `delay` seconds. Written to stderr, so stdout keeps only results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True, delay: float = 5.0,
             every: float = 30.0) -> Iterator[T]:
    """Yield `items` (`total` of them), reporting progress as described above."""
    if not enabled or total <= 1:
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, delay=delay, leave=False, dynamic_ncols=True, file=sys.stderr)
        return
    t0 = last = time.perf_counter()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.perf_counter()
        if now - t0 >= delay and (now - last >= every or done == total):
            rate = (now - t0) / done
            print(f"{desc}: {done}/{total} in {_clock(now - t0)}, ETA {_clock(rate * (total - done))}",
                  file=sys.stderr, flush=True)
            last = now
