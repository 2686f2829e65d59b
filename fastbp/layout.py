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
    except slopes (float64). pre_cum[l] == -1 when layer l's sigma' comes from its output.
    """
    sizes: np.ndarray
    act_codes: np.ndarray
    slopes: np.ndarray
    w_off: np.ndarray
    b_off: np.ndarray
    act_cum: np.ndarray
    pre_cum: np.ndarray
    n_params: int
    pre_width: int   # sum of widths whose pre-activation S is kept

    @classmethod
    def build(cls, sizes, act_codes, slopes):
        sizes = np.asarray(sizes, dtype=np.int64)
        n_layers = len(sizes) - 1
        w_off = np.empty(n_layers, np.int64)
        b_off = np.empty(n_layers, np.int64)
        pre_cum = np.full(n_layers, -1, np.int64)
        offset = pre_width = 0
        for l in range(n_layers):
            w_off[l] = offset
            offset += sizes[l + 1] * sizes[l]
            b_off[l] = offset
            offset += sizes[l + 1]
            if act_codes[l] not in codes.DERIVATIVE_FROM_OUTPUT:
                pre_cum[l] = pre_width
                pre_width += sizes[l + 1]
        act_cum = np.concatenate([[0], np.cumsum(sizes[1:])]).astype(np.int64)
        return cls(sizes, np.asarray(act_codes, np.int64), np.asarray(slopes, np.float64),
                   w_off, b_off, act_cum, pre_cum, int(offset), int(pre_width))

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

    acts holds every layer's output, pres the kept pre-activations, dbuf the two halves
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
            self.acts = empty(batch * int(lay.act_cum[-1]), self.dtype, self.device)
            self.pres = empty(max(batch * lay.pre_width, 1), self.dtype, self.device)
            self.dbuf = empty(2 * batch * int(lay.sizes.max()), self.dtype, self.device)
            self.rows = batch
        return self.acts, self.pres, self.dbuf

    def nbytes(self):
        return sum(a.nbytes for a in (self.acts, self.pres, self.dbuf) if a is not None)
