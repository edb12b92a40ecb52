"""Stage 1 of the LLVM backend, *plan*: the fused graph turned into data, no LLVM yet.

Owns the data model (``kernels``: one declared class per kind of kernel, their
partitions, the integer ``Order`` they run in, the ``Plan``), the builder (``build``:
``PlanBuilder``, in named steps: ``assign_kernels``, ``place_values``, ``make_kernels``), the per-kernel finishing (``partition``: merged
dimensions, the cut over threads), the view model (``views``: storages and strided
views) and the arena (``arena``: kernel levels, the byte layout by the memory planner,
synchronisation points).  Reads the graph, never changes it.  Imports the IR, the
passes (fusion's view helpers, the memory planner) and, for decisions only, the codegen
stage's op table (which ops have a lowering, of which kind), GEMM tile shapes and the
conv kernels' eligibility and blocking (``codegen.dot``, ``codegen.conv_fused``).  ``timeline`` reads a plan's kernels back as
the arena's life in kernel order (the x-axis of ``graphc memplan --plot``).
"""
