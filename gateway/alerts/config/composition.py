"""The graph of ``all``/``any`` rules: cycles (a config error) and evaluation order."""

from __future__ import annotations

from gateway.alerts.config.rule_models import CompositeRule


def find_cycles(rc, src, base: tuple, ids: dict[str, int]) -> list:
    """One problem per cycle in all/any composition, at the `of` entry that closes it."""
    graph = {r.id: [x for x in r.of if x in ids and x != r.id] for r in rc.rules if isinstance(r, CompositeRule)}
    colour: dict[str, int] = {}
    stack: list[str] = []
    out = []
    reported: set[frozenset] = set()

    def visit(node: str) -> None:
        colour[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if colour.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    i = ids[node]
                    k = rc.rules[i].of.index(nxt)
                    out.append(src.problem(base + ("rules", i, "of", k), "cycle in composition: " + " -> ".join(cycle)))
            elif colour.get(nxt) is None:
                visit(nxt)
        stack.pop()
        colour[node] = 2

    for rid in graph:
        if colour.get(rid) is None:
            visit(rid)
    return out


def topo_order(rc) -> list[str]:
    """Rule ids with every component before the rules that use it (validated: no cycles)."""
    by_id = {r.id: r for r in rc.rules}
    seen: set[str] = set()
    order: list[str] = []

    def visit(rid: str) -> None:
        if rid in seen:
            return
        seen.add(rid)
        r = by_id[rid]
        if isinstance(r, CompositeRule):
            for x in r.of:
                visit(x)
        order.append(rid)

    for r in rc.rules:
        visit(r.id)
    return order
