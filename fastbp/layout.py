"""Where everything of a network lives in its flat buffers.

All weights and biases sit in one contiguous 1-D array, layer after layer (W_l row-major
(out, in), then b_l); gradients and optimizer state use the same layout. Activations
live in flat per-batch workspaces. ``NetworkLayout`` holds the small integer arrays that
tell compiled code where each piece is (see kernels/cpu/network.py).
"""
from dataclasses import dataclass

import numpy as np

from .kernels import codes


@dataclass(frozen=True)
class NetworkLayout:
    """Offsets of a network with widths ``sizes`` and per-layer activation codes.

    sizes (L+1,), w_off/b_off/act_codes/slopes/pre_cum (L,), act_cum (L+1,); int64
    except slopes (float64). Offsets into the activation workspaces are in rows of the
    batch: layer l's output A_l starts at row act_cum[l] of ``acts``, its kept
    pre-activation S_l at row pre_cum[l] of ``pres`` (-1: sigma' comes from A_l and S_l
    shares A_l's memory).

    Without checkpointing every layer keeps its own slots (act_cum is the prefix sum of
    the widths). With ``checkpoint=k`` the layers form segments of k; only the last
    layer of each segment (and the network's last layer) keeps its output for backward.
    The other layers of all segments share one scratch region that starts at row
    act_cum[L] (and pre_rows_kept of pres), and backward recomputes a segment's scratch
    layers from its kept input before going through it (kernels/cpu/network.py).
    """
    sizes: np.ndarray
    act_codes: np.ndarray
    slopes: np.ndarray
    w_off: np.ndarray
    b_off: np.ndarray
    act_cum: np.ndarray
    pre_cum: np.ndarray
    n_params: int
    act_rows: int     # rows of the acts workspace: kept outputs, then the scratch region
    pre_rows: int     # rows of the pres workspace: kept S, then the scratch region
    checkpoint: int   # segment length k; 1 keeps every layer's output (no recompute)

    @classmethod
    def build(cls, sizes, act_codes, slopes, checkpoint=1):
        sizes = np.asarray(sizes, dtype=np.int64)
        n_layers = len(sizes) - 1
        widths = [int(w) for w in sizes[1:]]
        w_off = np.empty(n_layers, np.int64)
        b_off = np.empty(n_layers, np.int64)
        offset = 0
        for l in range(n_layers):
            w_off[l] = offset
            offset += widths[l] * int(sizes[l])
            b_off[l] = offset
            offset += widths[l]
        kept = [l == n_layers - 1 or (l + 1) % checkpoint == 0 for l in range(n_layers)]
        needs_pre = [act_codes[l] not in codes.DERIVATIVE_FROM_OUTPUT
                     for l in range(n_layers)]
        act_cum, act_rows = cls._place(widths, kept, [True] * n_layers, checkpoint)
        pre_cum, pre_rows = cls._place(widths, kept, needs_pre, checkpoint)
        return cls(sizes, np.asarray(act_codes, np.int64), np.asarray(slopes, np.float64),
                   w_off, b_off, act_cum, pre_cum[:n_layers], int(offset), act_rows,
                   pre_rows, int(checkpoint))

    @staticmethod
    def _place(widths, kept, wanted, checkpoint):
        """Row offsets for the ``wanted`` layers: kept ones one after another, then a
        scratch region that every segment's other layers reuse. Returns (offsets of
        length L+1 with offsets[L] = start of the scratch region, -1 where not wanted;
        total rows)."""
        n_layers = len(widths)
        offsets = np.full(n_layers + 1, -1, np.int64)
        rows = 0
        for l in range(n_layers):
            if wanted[l] and kept[l]:
                offsets[l] = rows
                rows += widths[l]
        offsets[n_layers] = scratch = rows
        longest = 0
        for start in range(0, n_layers, checkpoint):
            used = 0
            for l in range(start, min(start + checkpoint, n_layers)):
                if wanted[l] and not kept[l]:
                    offsets[l] = scratch + used
                    used += widths[l]
            longest = max(longest, used)
        return offsets, rows + longest

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    def weight_slice(self, l):
        """(slice of W_l, shape of W_l, slice of b_l) in the flat buffers."""
        n_out, n_in = int(self.sizes[l + 1]), int(self.sizes[l])
        w0, b0 = int(self.w_off[l]), int(self.b_off[l])
        return slice(w0, w0 + n_out * n_in), (n_out, n_in), slice(b0, b0 + n_out)

    def compiled_args(self):
        """The layout arguments compiled network passes take, in their order."""
        return (self.sizes, self.w_off, self.b_off, self.act_codes, self.slopes,
                self.act_cum, self.pre_cum)


class Workspace:
    """Flat activation buffers for one network, grown to the largest batch seen.

    acts holds the layers' outputs, pres the kept pre-activations (both laid out by
    NetworkLayout, checkpoint scratch included), dbuf the two halves
    backward ping-pongs gradients between. Allocated on the first batch of a size larger
    than any before and reused after, so steady-state training allocates nothing here.
    """

    def __init__(self, layout, dtype, device="cpu"):
        self.layout = layout
        self.dtype = np.dtype(dtype)
        self.device = device   # "cpu": numpy arrays; "cuda": numba.cuda device arrays
        self.rows = 0
        self.acts = self.pres = self.dbuf = None

    def ensure(self, batch):
        """Make room for ``batch`` rows; returns (acts, pres, dbuf)."""
        if batch > self.rows:
            from .device import empty
            lay = self.layout
            self.acts = empty(batch * lay.act_rows, self.dtype, self.device)
            self.pres = empty(max(batch * lay.pre_rows, 1), self.dtype, self.device)
            self.dbuf = empty(2 * batch * int(lay.sizes.max()), self.dtype, self.device)
            self.rows = batch
        return self.acts, self.pres, self.dbuf

    def nbytes(self):
        return sum(a.nbytes for a in (self.acts, self.pres, self.dbuf) if a is not None)
