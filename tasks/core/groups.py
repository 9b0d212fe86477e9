"""Union-find over string labels: how items that must stay together (one video's clips, copies of
one picture) become one group, whatever order they are seen in."""

from __future__ import annotations


class UnionFind:
    """`keeps_name(label)`: labels a group that joins them must keep (a group a published version already
    holds: its split is decided). A group is named after its smallest such label, else its smallest."""

    def __init__(self, keeps_name=lambda label: False):
        self.parent: dict[str, str] = {}
        self.rank = lambda label: (not keeps_name(label), label)

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the lower-ranked label is the root, so the result does not depend on order
            root, child = (ra, rb) if self.rank(ra) < self.rank(rb) else (rb, ra)
            self.parent[child] = root
