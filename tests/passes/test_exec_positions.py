"""Planning over a backend's execution: ``plan_memory(exec_positions=..., ...)``.

A backend that runs kernels of one dependency level concurrently hands the planner each
node's level; values used at one level then never share bytes, except in place inside
one fusion group.  It also names the updates it writes in place and its scratch buffers.
"""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import Emitter, Graph
from graphc.passes.memory import check_plan, plan_memory


def _two_branches():
    g = Graph("branches")
    x = g.add_input((16, 16), np.float32, "x", "data")
    E = Emitter(g)
    a = E.exp(x)
    b = E.tanh(a)            # sequentially: in place of a
    c = E.neg(x)             # independent of a, b
    d = E.add(b, c)
    g.set_outputs([E.sum(d, axes=None)])
    return g, x, a, b, c, d


def test_sequential_positions_allow_in_place():
    g, x, a, b, c, d = _two_branches()
    plan = plan_memory(g)
    assert plan.kinds[b.name] == "inplace"


def test_same_level_values_never_share_bytes():
    g, x, a, b, c, d = _two_branches()
    # a and c at level 0, b at level 1, d at level 2, the sum at 3
    pos = {x.name: 0, a.name: 0, c.name: 0, b.name: 1, d.name: 2,
           g.outputs[0].name: 3}
    plan = plan_memory(g, exec_positions=pos)
    check_plan(g, plan)
    assert plan.intervals[a.name] == (0, 1) and plan.intervals[c.name] == (0, 2)
    # b reads a where a dies, at a level of its own: in place is fine
    assert plan.kinds[b.name] == "inplace"
    # now b runs at the level of c's producer... and a dies there too: a kernel of
    # the same level (c's) could still run, so only a group member may reuse a
    pos2 = dict(pos, **{b.name: 1, c.name: 1})
    plan2 = plan_memory(g, exec_positions=pos2)
    assert plan2.kinds[b.name] == "inplace"       # c does not touch a's buffer
    ab = plan2.buffer_of(a.name)
    cb = plan2.buffer_of(c.name)
    assert ab.offset + ab.size <= cb.offset or cb.offset + cb.size <= ab.offset


def test_concurrent_reader_blocks_in_place():
    g = Graph("reader")
    x = g.add_input((16, 16), np.float32, "x", "data")
    E = Emitter(g)
    a = E.exp(x)
    s = E.sum(a, axes=None)  # reads a at the level where ...
    b = E.tanh(a)            # ... b would go in place of a: one after the other, fine;
    #                          concurrently (another kernel of that level), not
    g.set_outputs([E.add(E.sum(b, axes=None), s)])
    pos = {n.output.name: 0 for n in g.nodes}
    pos.update({a.name: 0, b.name: 1, s.name: 1})
    last = g.outputs[0]
    for n in g.nodes:
        if n.output.name not in (x.name, a.name, b.name, s.name):
            pos[n.output.name] = 2
    pos[last.name] = 3
    assert plan_memory(g, exec_positions=pos, concurrent=False).kinds[b.name] == "inplace"
    plan = plan_memory(g, exec_positions=pos)
    assert plan.kinds[b.name] == "arena"
    check_plan(g, plan)


def test_scratch_and_updates_in_place():
    g = Graph("upd")
    p = g.add_input((32,), np.float32, "p", "param")
    x = g.add_input((32,), np.float32, "x", "data")
    E = Emitter(g)
    t = E.mul(p, x)
    newp = E.sub(p, t)
    g.set_outputs([E.sum(t, axes=None)])
    g.updates.append((p, newp))
    pos = {p.name: 0, x.name: 0, t.name: 0, newp.name: 1, g.outputs[0].name: 1}
    plan = plan_memory(g, exec_positions=pos, updates_in_place={},
                       scratch={"acc": (100, 1, 1)})
    assert plan.kinds[newp.name] == "arena" and plan.update_copies == [("p", newp.name)]
    assert plan.kinds["acc"] == "scratch" and plan.intervals["acc"] == (1, 1)
    acc, nb = plan.buffer_of("acc"), plan.buffer_of(newp.name)
    assert acc.offset + acc.size <= nb.offset or nb.offset + nb.size <= acc.offset
    assert plan.naive_bytes >= plan.arena_bytes >= plan.lower_bound_bytes
    check_plan(g, plan)
    plan = plan_memory(g, exec_positions=pos, updates_in_place={newp.name: "p"})
    assert plan.kinds[newp.name] == "update" and plan.homes[newp.name] == "p"
    assert plan.update_copies == []


def test_bad_positions():
    g, x, a, b, c, d = _two_branches()
    pos = {n.output.name: i for i, n in enumerate(g.nodes)}
    pos[b.name] = 0                                   # before its operand a
    with pytest.raises(ValueError, match="defined later"):
        plan_memory(g, exec_positions=pos)
    del pos[b.name]
    with pytest.raises(ValueError, match="no valid step"):
        plan_memory(g, exec_positions=pos)
    pos = {n.output.name: i for i, n in enumerate(g.nodes)}
    with pytest.raises(ValueError, match="name of a value"):
        plan_memory(g, exec_positions=pos, scratch={a.name: (8, 0, 0)})
