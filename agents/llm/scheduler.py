"""Who runs next: the waiting requests of the serving core, by priority, then round-robin across
groups (a group is a writing run, or an HTTP client), so that no run takes every row while
another waits. The core asks `pick()` for the next candidate and `victim()` for a running row it
may preempt to make room for it."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def group(self) -> str: ...

    @property
    def admitted_at(self) -> int: ...  # the core's admission counter: later admitted, first preempted


Q = TypeVar("Q", bound=Queued)


class WaitingRequests(Generic[Q]):
    def __init__(self) -> None:
        # priority -> group -> requests in arrival order; groups rotate after each pick
        self._queues: dict[int, OrderedDict[str, deque[Q]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, item: Q, front: bool = False) -> None:
        groups = self._queues.setdefault(item.priority, OrderedDict())
        queue = groups.setdefault(item.group, deque())
        queue.appendleft(item) if front else queue.append(item)
        self._count += 1

    def remove(self, item: Q) -> bool:
        groups = self._queues.get(item.priority, OrderedDict())
        queue = groups.get(item.group)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        if not queue:
            del groups[item.group]
        self._count -= 1
        return True

    def __iter__(self):
        for priority in sorted(self._queues, reverse=True):
            for queue in self._queues[priority].values():
                yield from queue

    def groups(self) -> set[str]:
        return {group for groups in self._queues.values() for group in groups}

    def pick(self, rows_of: dict[str, int], fair_share: int) -> Q | None:
        """The next request to admit: the highest priority first; within it, the first group in
        rotation that holds fewer than its fair share of rows, else the first group at all."""
        for priority in sorted(self._queues, reverse=True):
            groups = self._queues[priority]
            if not groups:
                continue
            under = [g for g in groups if rows_of.get(g, 0) < fair_share]
            group = under[0] if under else next(iter(groups))
            return groups[group][0]
        return None

    def take(self, item: Q) -> None:
        """`item` (from pick) is admitted: drop it and send its group to the back of the rotation."""
        groups = self._queues[item.priority]
        queue = groups[item.group]
        queue.popleft()
        del groups[item.group]
        if queue:
            groups[item.group] = queue
        self._count -= 1


def victim(candidate: Q, running: list[Q], rows_of: dict[str, int], fair_share: int) -> Q | None:
    """A running row that may give its place to `candidate`: one of lower priority, else one of a
    group holding more than its fair share while the candidate's group holds less. The most
    recently admitted such row goes first (it has the least work to redo)."""
    lower = [r for r in running if r.priority < candidate.priority]
    if not lower and rows_of.get(candidate.group, 0) < fair_share:
        lower = [r for r in running if r.priority == candidate.priority and r.group != candidate.group
                 and rows_of.get(r.group, 0) > fair_share]
    return max(lower, key=lambda r: r.admitted_at, default=None)


class Reserving(Queued, Protocol):
    @property
    def reserve(self) -> int: ...  # KV positions it may need, prompt included


def fair_share(rows: list[Q], waiting: WaitingRequests[Q], max_rows: int) -> int:
    """The rows each group (running or waiting) may hold while others wait."""
    groups = {row.group for row in rows} | waiting.groups()
    return max(1, max_rows // max(1, len(groups)))


R = TypeVar("R", bound=Reserving)


def fits(candidate: R, rows: list[R], max_rows: int, kv_budget: int) -> bool:
    """A row is free, and the KV budget holds one more row as long as the longest reservation."""
    if len(rows) >= max_rows:
        return False
    longest = max([row.reserve for row in rows] + [candidate.reserve])
    return (len(rows) + 1) * longest <= kv_budget
