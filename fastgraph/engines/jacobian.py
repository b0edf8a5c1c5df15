"""The article's engine: one sample at a time, dense Jacobians, node by node.

For each sample the graph is computed on that sample alone, then every node on a path from
the sources to the result gets ``node.jacobi``, the Jacobian of the result with respect to
the node, as the sum over its children of ``child.jacobi @ child.get_jacobi(node)``. The
article computes the same sum by recursion from each parameter; here the plan visits the
nodes in reverse topological order, which gives each node its children's Jacobians first
and needs no recursion. It is faithful, and slow on purpose: it is the reference.
"""

import numpy as np


def dense_backward(plan, result):
    """Fill ``jacobi`` on the nodes of ``plan`` for the single sample the graph holds."""
    for node in plan.nodes:
        node.jacobi = None
    result.jacobi = np.eye(result.dimension(), dtype=result.graph.dtype)
    for node, slots in plan.steps:
        for slot, parent, _ in slots:
            term = node.jacobi @ node.dense_jacobian(slot)
            parent.jacobi = term if parent.jacobi is None else parent.jacobi + term


def one_sample_at_a_time(tape):
    """Set the tape's inputs to each sample in turn (yielding its index), then restore them."""
    with tape.feeding() as feed:
        for b in range(tape.batch_size() or 1):
            feed(lambda flat, b=b: flat[b : b + 1])
            yield b


def gradients(target, params, sums, first, passes=None):
    """The article's way: each sample's dense Jacobians, summed into ``sums`` once every
    sample succeeded; the batch size (``passes``: the compiled engine's; nothing here)."""
    graph = target.graph
    tape = graph.tape(target)
    plan = graph.plan(target, params)
    tape.forward()  # the whole batch first: an error names its sample, before any sum moves
    gathered = [np.zeros_like(total) for total in sums]  # the sums change only when all is done
    for _ in one_sample_at_a_time(tape):
        tape.forward()
        dense_backward(plan, target)
        for total, param in zip(gathered, params):
            total += param.jacobi.sum(axis=0)  # d sum(result) = ones @ jacobi
    tape.forward()
    for total, addition in zip(sums, gathered):
        if first:
            np.copyto(total, addition)
        else:
            total += addition
    return tape.batch_size() or 1


def jacobian(result, wrt):
    """Dense per-sample Jacobians of ``result`` with respect to ``wrt``.

    ``(result.dimension(), wrt.dimension())`` when ``result`` has no batch axis, else
    ``(B, result.dimension(), wrt.dimension())``.
    """
    graph = result.graph
    tape = graph.tape(result)
    plan = graph.plan(result, [wrt])
    if not result.batched:
        tape.forward()
        dense_backward(plan, result)
        return wrt.jacobi
    per_sample = []
    for _ in one_sample_at_a_time(tape):
        tape.forward()
        dense_backward(plan, result)
        per_sample.append(wrt.jacobi)
    tape.forward()
    return np.stack(per_sample)
