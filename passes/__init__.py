"""graphc.passes -- pure functions over the IR (Graph -> Graph, or Graph -> report).

A pass never imports a backend.  Each returns a new graph (the input is left untouched)
and is followed by ``graphc.ir.verify`` in the pass manager.
"""
