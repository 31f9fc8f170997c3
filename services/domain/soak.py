"""Judging a soak run (services/soak.py): memory of each hub process and consumer lag, sampled over a steady load.

Pure: the samples come in, a verdict goes out. What is judged, and why these bounds:

* **Memory.** For each hub process, RSS at the first sample after the warm-up against the last sample of the
  run (after the drain, when the state of every member produced is built). Allowed growth: the larger of
  ``rss_growth_bytes`` (64 MiB) and ``rss_growth_ratio`` (50 %) of the warm baseline. A Python worker settles
  at 55-110 MiB after start; allocator arenas, librdkafka/aiokafka buffers and label caches move it by tens
  of MiB under load without any leak, so a tighter bound would judge noise, while a stateless process
  leaking 110 bytes per event at 1,000 events/s for ten minutes (66 MB) is caught. Processes that hold
  per-member state in memory by design (``stateful``: the reconciler's Faust tables use the memory store,
  the APIs keep read models) grow with the data they hold, like the broker: that is state, not a leak, so
  they are allowed ``state_bytes_per_member`` more per member produced in the window, and judged beyond it.
* **Lag.** For every series (a stage's consumer lag, or an exact raw-topic backlog), the least-squares
  slope over the samples in the last third of the load must not exceed ``lag_slope_per_s``: a hub that
  holds the rate has a lag that goes up and down with batching but does not climb. Then, after the load
  stops, every series must reach zero within ``drain_s``.
* **Restarts.** A hub process that was restarted (its pid changed) or whose consumer re-joined its group
  during the run fails the run: a soak is about a hub that keeps going on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    at_s: float  # seconds since the load started
    rss: Mapping[str, int]  # hub process -> resident set, bytes (absent: not running at that moment)
    lag: Mapping[str, int]  # series -> messages waiting (absent: not measured at that moment)
    produced: int  # events produced so far
    broker_rss: int | None = None  # reported, never judged: the embedded broker keeps every record in memory
    pids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Bounds:
    rss_growth_bytes: int = 64 * MIB
    rss_growth_ratio: float = 0.5
    state_bytes_per_member: int = 0
    stateful: frozenset[str] = frozenset()
    lag_slope_per_s: float = 5.0
    drain_s: float = 120.0

    def rss_allowance(self, process: str, baseline: int, members: int) -> int:
        allowed = max(self.rss_growth_bytes, int(baseline * self.rss_growth_ratio))
        if process in self.stateful:
            allowed += self.state_bytes_per_member * max(0, members)
        return allowed


def lag_slope_bound(rate: float) -> float:
    """Messages per second a series may climb in the last third: 5 % of the offered rate, at least 10/s.
    Below that, a climb is within what batching and the 2 s offset sampling make a lag jump by (measured:
    -7..+0 messages/s on the normalizers of a hub that held its rate, over a 20 s window)."""
    return max(10.0, 0.05 * rate)


@dataclass(frozen=True)
class RssFigure:
    process: str
    baseline: int
    last: int
    allowed: int

    @property
    def growth(self) -> int:
        return self.last - self.baseline

    @property
    def ok(self) -> bool:
        return self.growth <= self.allowed


@dataclass(frozen=True)
class LagFigure:
    series: str
    slope_per_s: float | None  # None: fewer than two samples in the last third
    peak: int
    drained: bool


@dataclass
class Verdict:
    rss: list[RssFigure] = field(default_factory=list)
    lag: list[LagFigure] = field(default_factory=list)
    drained_after_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points; None when there are fewer than two distinct x."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def drained_at(samples: Sequence[Sample], load_s: float) -> float | None:
    """Seconds after the load stopped at which every series first read zero (None: never)."""
    for s in samples:
        if s.at_s >= load_s and s.lag and all(v == 0 for v in s.lag.values()):
            return s.at_s - load_s
    return None


def judge(
    samples: Sequence[Sample],
    *,
    load_s: float,
    warmup_s: float,
    bounds: Bounds,
    members_per_event: float = 0.0,
) -> Verdict:
    """The verdict on a run whose load lasted ``load_s`` seconds. ``members_per_event`` turns the events
    produced between the baseline and the last sample into the members the stateful allowance counts."""
    verdict = Verdict()
    during = [s for s in samples if s.at_s <= load_s]
    warm = [s for s in samples if s.at_s >= warmup_s]
    if len(warm) < 2 or warm[0].at_s > load_s:
        verdict.problems.append(f"too few samples after the {warmup_s:.0f} s warm-up to judge memory")
    else:
        first, last = warm[0], warm[-1]
        members = round((last.produced - first.produced) * members_per_event)
        for process in sorted(first.rss):
            if process not in last.rss:
                verdict.problems.append(f"{process}: not running at the end of the run")
                continue
            base = first.rss[process]
            fig = RssFigure(process, base, last.rss[process], bounds.rss_allowance(process, base, members))
            verdict.rss.append(fig)
            if not fig.ok:
                verdict.problems.append(
                    f"{process}: RSS grew {fig.growth / MIB:.1f} MiB after the warm-up "
                    f"(allowed {fig.allowed / MIB:.1f} MiB)"
                )
    verdict.problems.extend(_restarts(samples))

    tail = [s for s in during if s.at_s >= load_s * 2 / 3]
    after = drained_at(samples, load_s)
    verdict.drained_after_s = after
    names = sorted({name for s in samples for name in s.lag})
    final = next((s for s in reversed(samples) if s.lag), None)
    for name in names:
        points = [(s.at_s, float(s.lag[name])) for s in tail if name in s.lag]
        k = slope(points)
        peak = max((s.lag[name] for s in samples if name in s.lag), default=0)
        drained = final is not None and final.at_s >= load_s and final.lag.get(name, 0) == 0
        verdict.lag.append(LagFigure(name, k, peak, drained))
        if k is not None and k > bounds.lag_slope_per_s:
            verdict.problems.append(
                f"{name}: lag grew {k:.1f} messages/s over the last third of the load "
                f"(bound {bounds.lag_slope_per_s:.1f}/s)"
            )
    if not any(s.at_s >= load_s * 2 / 3 for s in during if s.lag):
        verdict.problems.append("no lag sample in the last third of the load")
    if after is None or after > bounds.drain_s:
        waiting = {n: v for n, v in (final.lag.items() if final else ()) if v}
        verdict.problems.append(f"lag not drained within {bounds.drain_s:.0f} s after the load stopped: {waiting}")
    return verdict


def _restarts(samples: Sequence[Sample]) -> list[str]:
    seen: dict[str, int] = {}
    restarted: set[str] = set()
    for s in samples:
        for process, pid in s.pids.items():
            if seen.setdefault(process, pid) != pid:
                restarted.add(process)
    return [f"{p}: restarted during the run (pid changed)" for p in sorted(restarted)]


__all__ = ["MIB", "Bounds", "LagFigure", "RssFigure", "Sample", "Verdict", "drained_at", "judge", "lag_slope_bound"]
