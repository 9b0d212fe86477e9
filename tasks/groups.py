"""Union-find over string labels: how items that must stay together (one video's clips, copies of
one picture) become one group, whatever order they are seen in."""

from __future__ import annotations


class UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller label is the root, so the result does not depend on order
            self.parent[max(ra, rb)] = min(ra, rb)
