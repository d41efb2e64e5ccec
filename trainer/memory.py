"""Peak host memory of a trial: the process RSS, sampled while it trains.

``getrusage``'s ``ru_maxrss`` is the peak of the whole process so far, so in a process that
runs trial after trial it could only grow; a sampler started with the trial measures that
trial alone (up to its sampling interval).
"""

from __future__ import annotations

import threading


class RssSampler(threading.Thread):
    """Samples VmRSS every few milliseconds and keeps the maximum (Linux; None elsewhere)."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.peak_kb = rss_kb() or 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak_kb = max(self.peak_kb, rss_kb() or 0)

    def stop(self) -> None:
        """Stop sampling (the peak so far stays readable)."""
        self._stop_event.set()
        self.join(timeout=1.0)

    def peak_mb(self) -> float | None:
        """The highest RSS seen since the start, in MB."""
        self.peak_kb = max(self.peak_kb, rss_kb() or 0)
        return round(self.peak_kb / 1024, 1) if self.peak_kb else None


def rss_kb() -> int | None:
    """This process's resident set size in KiB, from ``/proc/self/status``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
