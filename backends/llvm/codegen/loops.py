"""Loop scaffolding shared by the GEMM and small-K emitters: a counted loop and the
metadata that keeps LLVM from unrolling or vectorising kernel loops (their bodies are
already register-tile wide; unrolling them costs compile time and gains nothing)."""

from __future__ import annotations

from llvmlite import ir

I64 = ir.IntType(64)


def mark_no_unroll(module: ir.Module, br, tag: str, no_vectorize: bool = False) -> None:
    """Attach ``llvm.loop.unroll.disable`` (and optionally vectorize.enable=false) to a
    loop back-edge: kernel bodies are already MR×NV FMAs wide, and unrolling them or
    vectorizing scalar edge loops costs more compile time than it gains."""
    props = [module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])]
    if no_vectorize:
        props.append(module.add_metadata([
            ir.MetaDataString(module, "llvm.loop.vectorize.enable"), ir.IntType(1)(0)]))
    loop_id = module.add_metadata([ir.MetaDataString(module, f"graphc.loop.{tag}")])
    loop_id.operands = (loop_id, *props)  # loop IDs refer to themselves
    br.set_metadata("llvm.loop", loop_id)


#: rows of at most this many elements are never forced to vectorize (a masked 16-lane
#: vector body pays from about 5 elements on; LLVM warns when a forced one fails)
SHORT_ROW = 4


def emit_loop(b, start, stop, step, body, name, nsw=False):
    """``for i = start; i < stop; i += step: body(i)`` (i64 phi, step > 0); returns the
    back-edge branch (for loop metadata) with ``b`` positioned after the loop."""
    pre = b.block
    head = b.append_basic_block(name + ".head")
    bod = b.append_basic_block(name + ".body")
    out = b.append_basic_block(name + ".out")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), bod, out)
    b.position_at_end(bod)
    body(i)
    nxt = b.add(i, I64(step), flags=["nsw"] if nsw else [])
    i.add_incoming(nxt, b.block)
    br = b.branch(head)
    b.position_at_end(out)
    return br


def counted_loop(b, start, stop, step, body, name, no_unroll=False, no_vectorize=False):
    """Emit ``for i in range(start, stop, step): body(b, i)`` (i64, step > 0)."""
    br = emit_loop(b, start, stop, step, lambda i: body(b, i), name)
    if no_unroll:
        fn = b.function
        mark_no_unroll(fn.module, br, f"{fn.name}.{name}.{len(fn.blocks)}", no_vectorize)
