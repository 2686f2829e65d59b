"""Backpropagation checked against central finite differences."""
import numpy as np


def gradcheck(net, X, y, eps=None, max_params=None, seed=0):
    """Largest relative error between backprop gradients and central differences.

    For each parameter p_i, the finite difference is
    (L(p_i + eps) - L(p_i - eps)) / (2 eps), L the mean loss on (X, y). The error is
    measured per block (each layer's W and each b) in the max norm,

        max over blocks B of  max_i |g_i - f_i| / max(max_i |g_i|, max_i |f_i|, floor)

    where ``floor`` is 1e-3 of the largest gradient of the whole network, so a block
    whose gradients are all ~0 (a dead ReLU layer) is judged on the network's scale
    instead of dividing rounding noise by zero.

    Use a float64 network for a meaningful check. In float64 with the default eps
    (1e-5, which balances the difference's truncation error, ~eps**2, against its
    rounding error, ~1e-16 |L| / eps) correct backprop gave a median of 3e-10 and at
    most 1.6e-7 over 300 random networks (every activation and loss, 1-4 layers of
    widths 1-7); float32 (eps 1e-2) only resolves errors down to about 1e-2.

    Parameters: ``net`` an MLP; X, y as for ``net.backward``; ``max_params`` checks a
    random subset of that many parameters (drawn with ``seed``) for big networks.
    Returns a float. The network's parameters are restored exactly; its gradients hold
    the backprop gradients of (X, y) afterwards.

    Example::

        >>> import numpy as np, fastbp
        >>> net = fastbp.MLP([4, 8, 3], activation="tanh", dtype="float64", seed=0)
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((16, 4)), rng.integers(0, 3, 16)
        >>> fastbp.gradcheck(net, X, y) < 1e-6
        True
    """
    if eps is None:
        eps = 1e-5 if net.dtype == np.float64 else 1e-2
    net.backward(X, y)
    analytic = net.grads.astype(np.float64)
    n = net.n_params
    index = np.arange(n)
    if max_params is not None and max_params < n:
        index = np.sort(np.random.default_rng(seed).choice(n, size=max_params, replace=False))
    numeric = np.full(n, np.nan)
    params = net.params
    for i in index:
        original = params[i]
        params[i] = original + eps
        up = net.compute_loss(X, y)
        params[i] = original - eps
        down = net.compute_loss(X, y)
        params[i] = original
        numeric[i] = (up - down) / (2.0 * eps)

    checked = np.zeros(n, bool)
    checked[index] = True
    floor = 1e-3 * max(np.abs(analytic[index]).max(), np.abs(numeric[index]).max())
    floor = max(floor, np.finfo(np.float64).tiny)
    worst = 0.0
    for l in range(net.layout.n_layers):
        w_slice, _, b_slice = net.layout.weight_slice(l)
        for block in (w_slice, b_slice):
            mask = checked[block]
            if not mask.any():
                continue
            g, f = analytic[block][mask], numeric[block][mask]
            scale = max(np.abs(g).max(), np.abs(f).max(), floor)
            worst = max(worst, float(np.abs(g - f).max() / scale))
    return worst
