"""A least-recently-used cache of per-frame data (frame stores, lip patches, portrait templates)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable


class Lru(OrderedDict):
    """At most `limit` entries: fetch(key, make) gives the cached value, or makes and keeps it,
    dropping the least recently used entry beyond the limit."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = max(1, int(limit))

    def fetch(self, key: Hashable, make: Callable):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make(key)
        self[key] = value
        if len(self) > self.limit:
            self.popitem(last=False)
        return value
