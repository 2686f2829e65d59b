"""Where a minibatch step of fastbp's scikit-learn epoch goes, part by part.

    python benchmarks/sklearn_epoch_parts.py                 # digits, one thread
    python benchmarks/sklearn_epoch_parts.py --dataset breast_cancer --threads 2

Fits fastbp.MLPClassifier (scikit-learn's defaults: 100 relu units, adam, batch 200)
for a few epochs on the benchmark's split of the data set (benchmarks/sklearn_dropin.py),
then times, per full minibatch, in microseconds of process CPU time (10th percentile of
rounds; the parts take turns within each round):

- fit per step: a whole warm fit (Python's epoch loop included) over its steps;
- the compiled parts, each in a compiled loop over the epoch's full minibatches: the row
  gather, the forward, the output loss and gradient, the backward, the alpha penalty
  and the optimizer update (folded as the epoch folds them);
- the five matrix products of a step alone (as the epoch makes them), and the
  same five as scikit-learn makes them (numpy's ``@`` on its (in, out) weights, from
  Python: what its step spends in products, dispatch included).

CPU time suits one thread (``--threads 1``); with two, pool threads waiting count too.
"""
import argparse
import sys
import time

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from .sklearn_dropin import split
    from .step_breakdown import calls_for, measure
except ImportError:
    from sklearn_dropin import split
    from step_breakdown import calls_for, measure


def parts(dataset):
    """{name: function of n that runs the part n times}, and the full minibatches per
    epoch (the unit the compiled parts are timed in)."""
    import warnings

    from numba import njit

    import fastbp
    from fastbp.kernels.cpu.blas import gemm
    from fastbp.plan import plan_for
    from fastbp.kernels.cpu.network import backprop_for
    from fastbp.kernels.cpu.optim import optimizer_update
    from fastbp.kernels.cpu.sklearn_loss import (_gather, _weight_squares,
                                                 forward_transposed,
                                                 l2_penalty, l2_slot, output_loss_grad,
                                                 update_with_penalty)

    X, _, y, _ = split(dataset)
    make = lambda: fastbp.MLPClassifier(random_state=0)   # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(X, y)
    net = est.net_
    lg = fastbp._sklearn_solvers.LossGrad(net, est.out_activation_, est.alpha)
    opt = est._optimizer._opt
    Xd = np.ascontiguousarray(X, net.dtype)
    Y = np.ascontiguousarray(est._label_binarizer.transform(y), net.dtype)
    batch = min(200, len(Xd))
    rows = np.random.default_rng(0).permutation(len(Xd)).astype(np.int64)
    full = len(rows) // batch
    plan = plan_for(net, batch)
    lay, acts, pres, dbuf = plan.layout, plan.acts, plan.pres, plan.dbuf
    code, p, g, state, hparams, step = opt.compiled_args_for(net)
    sw = np.zeros(0, net.dtype)
    Xb, Yb, swb, WT, work, tot = lg._epoch_workspaces(batch)
    Xb[:], Yb[:] = Xd[rows[:batch]], Y[rows[:batch]]   # a minibatch, as gathered
    act_set = net._kernels.act_set
    sizes, w_off = lay[0], lay[1]
    n_out = Y.shape[1]
    out_code, eps = lg.out_code, lg.eps
    dZ = dbuf[:batch * n_out].reshape(batch, n_out)
    no_dX = np.zeros((0, 0), net.dtype)

    # arrays go in as arguments: numba freezes arrays it finds in a closure
    @njit
    def gather(n, rows, Xd, Y, sw, Xb, Yb, swb):
        for _ in range(n):
            for b in range(full):
                _gather(rows, b * batch, batch, Xd, Y, sw, Xb, Yb, swb)

    @njit
    def forward(n, p, lay, Xb, acts, pres, WT):
        sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum = lay
        for _ in range(n):
            for _b in range(full):
                forward_transposed(act_set, p, sizes, w_off, b_off, act_codes, slopes,
                                   act_cum, pre_cum, Xb, acts, pres, WT)

    Z = net._kernels.network_forward(p, *lay, Xb, acts, pres)

    @njit
    def loss(n, Z, Yb, sw, dZ, work, tot):
        for _ in range(n):
            for _b in range(full):
                output_loss_grad(out_code, Z, Yb, sw, eps, dZ, work, tot)

    @njit
    def backward(n, p, g, lay, Xb, acts, pres, dbuf, no_dX):
        sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum = lay
        for _ in range(n):
            for _b in range(full):
                backprop_for(act_set, p, g, sizes, w_off, b_off, act_codes, slopes,
                             act_cum, pre_cum, Xb, acts, pres, dbuf, no_dX)

    @njit
    def penalty_update(n, p, g, sizes, w_off, b_off, state, hparams):
        # as the epoch: the penalty folded into the update where the optimizer allows
        for _ in range(n):
            for _b in range(full):
                slot = l2_slot(code, hparams)
                if slot < 0:
                    l2_penalty(p, g, sizes, w_off, 1e-9)
                    optimizer_update(code, p, g, state, hparams, step)
                else:
                    _weight_squares(p, g, sizes, w_off, 1e-9, False)
                    update_with_penalty(code, p, g, state, hparams, step, slot, 1e-9,
                                        sizes, w_off, b_off)

    # the five products of a one-hidden-layer step, as the epoch makes them (gemm cuts
    # each into blocks for OpenBLAS's small-matrix kernels where that pays: blas.py)
    h = sizes[1]
    W0 = p[w_off[0]:w_off[0] + h * Xd.shape[1]].reshape(h, Xd.shape[1])
    W1 = p[w_off[1]:w_off[1] + n_out * h].reshape(n_out, h)
    W0T, W1T = np.ascontiguousarray(W0.T), np.ascontiguousarray(W1.T)
    A0 = np.ones((batch, h))
    S1 = np.ones((batch, n_out))
    dW1 = np.empty_like(W1)
    dW0 = np.empty_like(W0)

    @njit
    def products(n, Xb, W0T, W1, W1T, A0, S1, dW1, dW0):
        for _ in range(n):
            for _b in range(full):
                gemm(False, False, 1.0, Xb, W0T, 0.0, A0)
                gemm(False, False, 1.0, A0, W1T, 0.0, S1)
                gemm(True, False, 1.0, S1, A0, 0.0, dW1)
                gemm(False, False, 1.0, S1, W1, 0.0, A0)
                gemm(True, False, 1.0, A0, Xb, 0.0, dW0)

    def numpy_products(n):   # scikit-learn's coefs_ are (in, out): W0T, W1T
        for _ in range(n * full):
            a = Xb @ W0T
            s = a @ W1T
            _ = a.T @ s
            a = s @ W1T.T
            _ = Xb.T @ a

    table = {
        "fit per step": lambda n: [make().fit(X, y) for _ in range(n)],
        "gather": lambda n: gather(n, rows, Xd, Y, sw, Xb, Yb, swb),
        "forward": lambda n: forward(n, p, lay, Xb, acts, pres, WT),
        "loss": lambda n: loss(n, Z, Yb, sw, dZ, work, tot),
        "backward": lambda n: backward(n, p, g, lay, Xb, acts, pres, dbuf, no_dX),
        # on copies: thousands of updates with one gradient would move the weights
        # the other parts use far from the fitted ones
        "penalty and update": lambda n: penalty_update(n, p.copy(), g, sizes, w_off,
                                                       lay[2], state.copy(), hparams),
        "5 products (fastbp)": lambda n: products(n, Xb, W0T, W1, W1T, A0, S1, dW1,
                                                  dW0),
        "5 products (numpy @)": numpy_products,
    }
    saved = p.copy(), state.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for run in table.values():
            run(1)
    p[:], state[:] = saved
    # the fit in full minibatches' worth of rows
    per_epoch = len(rows) / batch
    return table, {"fit per step": est.n_iter_ * per_epoch}, full


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--seconds", type=float, default=0.05,
                        help="CPU seconds of calls per part and round")
    args = parser.parse_args(argv)
    import fastbp
    fastbp.set_num_threads(args.threads)
    import warnings
    warnings.simplefilter("ignore")
    table, per, full = parts(args.dataset)
    calls = {name: calls_for(run, args.seconds) for name, run in table.items()}
    figures = measure(table, calls, args.rounds)
    print(f"{args.dataset}, {args.threads} thread(s): us of CPU time per full minibatch "
          f"step (10th percentile of {args.rounds} rounds)")
    compiled = 0.0
    for name, us in figures.items():
        us /= per.get(name, full)
        if name in ("gather", "forward", "loss", "backward", "penalty and update"):
            compiled += us
        print(f"{name:<28}{us:9.2f}")
    print(f"{'sum of the compiled parts':<28}{compiled:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
