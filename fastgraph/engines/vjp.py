"""The fast engine: forward along the tape, then batched VJPs in reverse along the plan."""

import numpy as np


def backward(plan, target, seed=None):
    """Set ``node.grad`` on every node of ``plan``: the VJP of sum(target) over the batch.

    ``seed``, shaped like ``target.flat`` (or with more rows, for the per-sample passes of
    ``fastgraph.jacobians``), replaces the ones of the sum.

    A parent's first contribution is kept as it comes (often the child's own buffer or the
    upstream itself, so nothing is copied); a second one is added into a buffer the parent
    owns. Contributions are never modified in place, so sharing them is safe.
    """
    target.graph.release_gradients()
    for node in plan.nodes:
        node.grad = None
        node.grad_owned = False
    if seed is None:
        seed = target.buffer("seed", target.flat.shape)
        seed.fill(1)
    target.grad = seed
    for node, slots in plan.steps:
        upstream = node.grad
        for slot, parent in slots:
            contribution = node.vjp(slot, upstream)
            if parent.grad is None:
                parent.grad = contribution
            elif parent.grad_owned:
                np.add(parent.grad, contribution, out=parent.grad)
            else:
                total = parent.buffer("grad", contribution.shape)
                np.add(parent.grad, contribution, out=total)
                parent.grad = total
                parent.grad_owned = True


def gradients(target, params):
    graph = target.graph
    batch_size = graph.tape(target).forward()
    backward(graph.plan(target, params), target)
    return [param.grad for param in params], batch_size or 1
