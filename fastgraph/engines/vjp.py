"""The readable engine: forward along the tape, then batched VJPs in reverse along the plan,
one node at a time in Python. The compiled engine records exactly these calls and replays
them (``fastgraph.engines.compiled``); this one stays as the reference that it is held to.
"""

from ..kernels.elementwise import add_into, add_rows, copy_rows, fill, identity_rows

#: ``forward(node)`` computes this many stale nodes one by one, without a tape: calling
#: ``forward()`` on each node of a long chain in turn stays linear (a tape is the node's
#: whole ancestry, and one is kept per node asked for).
FEW = 16


def forward(node):
    """Compute ``node``: a handful of stale nodes one by one, else its tape."""
    if not compute_few(node):
        node.graph.tape(node).forward()


def compute_few(node):
    """Compute ``node``'s stale ancestors (and itself) if there are at most ``FEW`` of them;
    False (nothing computed) if there are more."""
    stale = _stale_ancestors(node, FEW)
    if stale is None:
        return False
    graph = node.graph
    graph.passes += 1
    for stale_node in stale:
        _check_batch_sizes(stale_node)
        stale_node.compute()
        graph.mark_computed(stale_node)
    return True


def backward(plan, target, seed=None, visit=None):
    """Set ``node.grad`` on every node of ``plan``: the VJP of sum(target) over the batch.

    ``seed``, shaped like ``target.flat`` (or with more rows, for the per-sample passes of
    ``fastgraph.jacobians``), replaces the ones of the sum.

    A parent's first contribution is kept as it comes (often the child's own buffer or the
    upstream itself, so nothing is copied); a second one is added into a buffer the parent
    owns. Contributions are never modified in place, so sharing them is safe.
    ``visit(node)``, if given, is told each node before its VJPs run (for the recorder).
    """
    for node in plan.nodes:
        node.grad = None
        node.grad_owned = False
    if seed is None:
        seed = target.buffer("seed", target.flat.shape)
        fill(seed, 1.0)
    target.grad = seed
    for node, slots in plan.steps:
        if visit is not None:
            visit(node)
        upstream = node.grad
        for slot, parent, summed in slots:
            contribution = (node.vjp_summed if summed else node.vjp)(slot, upstream)
            if parent.grad is None:
                parent.grad = contribution
            elif parent.grad_owned:
                add_into(parent.grad, contribution)
            else:
                total = parent.buffer("grad", contribution.shape)
                add_rows(parent.grad, contribution, total)
                parent.grad = total
                parent.grad_owned = True


def accumulate(params, sums, first):
    """Copy (``first``) or add each parameter's gradient into its running sum."""
    for param, total in zip(params, sums):
        if first:
            copy_rows(param.grad, total)
        else:
            add_into(total, param.grad)


def gradients(target, params, sums, first, passes=None):
    """Forward, backward, and each parameter's gradient into ``sums``; the batch size.
    (``passes``: where the compiled engine keeps what it records for a caller; nothing
    here.)"""
    graph = target.graph
    batch_size = graph.tape(target).forward()
    backward(graph.plan(target, params), target)
    accumulate(params, sums, first)
    return batch_size or 1


def per_sample(result, nodes, seeds):
    """One backward pass per sample from ``result`` to ``nodes``, seeded with ``seeds``
    identity rows per sample (None: ones); the gradient arrays of ``nodes``."""
    graph = result.graph
    tape = graph.tape(result)
    tape.forward()
    seed = None
    if seeds is not None:
        seed = result.buffer("identity seeds", (tape.batch_size() * seeds, seeds))
        identity_rows(seed)
    backward(graph.plan(result, nodes, per_sample=True), result, seed)
    return [node.grad for node in nodes]


def _stale_ancestors(node, limit):
    """``node``'s ancestors (and itself) that need computing, parents first, when there are
    at most ``limit`` of them; None when there are more."""
    states = node.graph.states
    if not states[node.index]:
        return []
    order, done, stack = [], set(), [(node, False)]
    while stack:
        current, parents_done = stack.pop()
        if parents_done:
            order.append(current)
            if len(order) > limit:
                return None
            continue
        if current in done:
            continue
        done.add(current)
        if not current.parents:  # an input that was never set: the tape says which
            node.graph.tape(node).batch_size()
        stack.append((current, True))
        stack.extend((parent, False) for parent in current.parents
                     if states[parent.index] and parent not in done)
    return order


def _check_batch_sizes(node):
    sizes = {parent.flat.shape[0] for parent in node.parents if parent.batched}
    if len(sizes) > 1:
        node.graph.tape(node).batch_size()  # explains which inputs disagree
