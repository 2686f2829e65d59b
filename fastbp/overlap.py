"""Backward layer by layer, so that a data-parallel step can start reducing a layer's
gradients while the layers below it are still in backward (fastbp.distributed).

The compiled training passes (kernels/cpu/network.py) run forward, the loss and the
whole backward in one call, which leaves no point in between to start communicating
from. Here the same work is split: one compiled call for forward and the loss (the
network's ``network_loss`` pass, which leaves the activations in the workspaces and
the gradient of the loss w.r.t. the output in ``dbuf``), then one compiled call of
``kernels.cpu.linear.linear_backward`` per layer, last layer first, on views of the
same workspaces and flat buffers that the whole-network backward uses, for the layer's
dW and db, then a callback, then the layer's dX (``input_grad_for``, the second pass of
linear_backward). The gradients come out bit for bit those of the compiled backward:
the same kernels run on the same values in the same order (the activation set only
chooses among loops at compile time).

Gradients of consecutive layers are adjacent in the flat buffer (fastbp/layout.py), and
backward produces them from the end of the buffer towards its start, so a *bucket* of
layers that backward has finished is one contiguous span of ``net.grads``: it can be
all-reduced in place as soon as its lowest layer is done.

CPU networks without checkpointing only (a checkpointed network recomputes segments
inside its compiled backward; the caller falls back to that).
"""
from types import SimpleNamespace

from .kernels.cpu.linear import input_grad_blocks, input_grad_for, linear_backward
from .plan import plan_for


def buckets(layout, itemsize, bucket_bytes):
    """The gradient buckets of a network, in the order backward completes them.

    Layers are taken from the last down and closed into a bucket once its gradients
    reach ``bucket_bytes`` bytes (``itemsize`` bytes a value); the lowest layers form
    the last bucket, which may be smaller. Returns a list of (lowest layer, start,
    stop): the bucket is ``grads[start:stop]``, complete when backward has finished its
    lowest layer.
    """
    out = []
    stop = int(layout.n_params)
    nbytes = 0
    for l in range(layout.n_layers - 1, -1, -1):
        _, (n_out, n_in), _ = layout.weight_slice(l)
        nbytes += (n_out * n_in + n_out) * itemsize
        if nbytes >= bucket_bytes or l == 0:
            start = int(layout.w_off[l])
            out.append((l, start, stop))
            stop, nbytes = start, 0
    return out


class LayerwiseBackward:
    """``net``'s forward, loss and backward as one compiled call for the loss and one
    per layer for backward (module docstring). For CPU networks with checkpoint=1.

    Use: ``loss = lb.loss(X, labels, targets)``, then ``lb.backward(X, after_layer)``;
    X, labels, targets as the network's compiled passes take them (checked batches).
    The caller holds the network (its passes are not re-entrant across threads)."""

    def __init__(self, net):
        if net.device != "cpu" or net.checkpoint != 1:
            raise ValueError("LayerwiseBackward: a CPU network without checkpointing "
                             f"is needed, got device={net.device!r}, "
                             f"checkpoint={net.checkpoint}")
        self.net = net
        self._views = None   # per-layer views, for one batch size and its buffers
        self._views_plan = None   # the StepPlan they were made from

    def loss(self, X, labels, targets):
        """Forward and the mean loss (a float); keeps what backward needs."""
        net = self.net
        net._warm("loss")
        net._warm("layer_backward")
        return plan_for(net, X.shape[0]).loss(X, labels, targets)

    def backward(self, X, after_layer):
        """Backward through every layer, last first, after ``loss`` on the same X:
        fills ``net.grads`` and calls ``after_layer(l)`` as soon as layer l's dW and db
        are written, before the layer's gradient w.r.t. its input (the product that
        carries backward on to the layer below) is computed."""
        lay = self.net.layout
        views = self._layer_views(X.shape[0])
        for l in range(lay.n_layers - 1, -1, -1):
            v = views[l]
            # linear_backward's two passes, apart: dS (overwriting dA in place, as in
            # the whole-network backward), db and dW; then dX = dS W
            linear_backward(v.dA, v.A, v.S, X if l == 0 else v.layer_in, v.W,
                            lay.act_codes[l], lay.slopes[l], v.dA, v.dX, v.dW, v.db, False)
            after_layer(l)
            if l > 0:
                input_grad_for(v.dA, v.W, v.dX, input_grad_blocks(v.dA, v.W))

    def _layer_views(self, batch):
        """Views of each layer's operands in the workspaces and flat buffers (the
        same places kernels/cpu/network.py's backward uses), made once per batch size
        and workspace: building them costs microseconds a layer."""
        net = self.net
        plan = plan_for(net, batch)   # a new plan when a buffer below was replaced
        if plan is self._views_plan:
            return self._views
        acts, pres, dbuf = plan.acts, plan.pres, plan.dbuf
        lay = net.layout
        half = batch * int(lay.sizes.max())
        views, cur = [None] * lay.n_layers, 0
        for l in range(lay.n_layers - 1, -1, -1):
            n_out, n_in = int(lay.sizes[l + 1]), int(lay.sizes[l])
            A = _rows(acts, batch, lay.act_cum[l], n_out)
            S = A if lay.pre_cum[l] < 0 else _rows(pres, batch, lay.pre_cum[l], n_out)
            views[l] = SimpleNamespace(
                A=A, S=S, W=net.layers[l].W, dW=net.layers[l].dW, db=net.layers[l].db,
                layer_in=None if l == 0 else _rows(acts, batch, lay.act_cum[l - 1], n_in),
                # backward ping-pongs the gradient between dbuf's halves
                dA=dbuf[cur * half:cur * half + batch * n_out].reshape(batch, n_out),
                dX=dbuf[(1 - cur) * half:(1 - cur) * half + batch * n_in].reshape(
                    batch, n_in))
            cur = 1 - cur
        self._views, self._views_plan = views, plan
        return views


def _rows(workspace, batch, row, width):
    """The (batch, width) block of a flat workspace that starts at row ``row``."""
    start = batch * int(row)
    return workspace[start:start + batch * width].reshape(batch, width)


def uses_buckets(net, itemsize, bucket_bytes):
    """The buckets for an overlapped step of ``net``, or None where the step should
    reduce the whole buffer at once: overlap off (``bucket_bytes`` None or 0), a GPU
    or checkpointed network, or one bucket only (the whole buffer: nothing to overlap,
    and the whole-network compiled backward is faster)."""
    if not bucket_bytes or net.device != "cpu" or net.checkpoint != 1:
        return None
    plan = buckets(net.layout, itemsize, bucket_bytes)
    return plan if len(plan) > 1 else None

