"""The GPU training-step yardstick: fastbp on "cuda" against PyTorch on the same GPU.

One process, FP32 with TF32 off, tanh hidden layers, softmax cross-entropy, plain SGD.
For each configuration it first checks that fastbp's and PyTorch's losses agree over
``--check-steps`` identical steps from the same weights (a row whose losses disagree is
marked MISMATCH), then prints the median milliseconds per training step of

    fastbp cuda    net.train_step(X, y, opt) with X, y on the host (the public API:
                   input checks, the batch copied in, the loss left on the GPU)
    fastbp gpu     the same with X, y already on the GPU (numba device arrays, used
                   in place): the column to set beside "torch gpu"
    fused, fixed   (with --variants) "fastbp gpu" with the fused step of narrow
                   networks on (kernels/cuda/fused.py; off by default, the same as
                   "fastbp gpu" where a network is too wide for it); and with it off
                   and every product on the one default geometry (no smaller tiles or
                   split k, kernels/cuda/_launch.product_shape)
    nographs       (with --variants) "fastbp gpu" without the CUDA graph that replays a
                   step's forward, loss and backward (kernels/cuda/plan.py)
    gemm           (with --gemm G) "fastbp gpu" with the products' largest tile on
                   geometry G (smaller tiles and split k still chosen for small outputs)
    sched          (with --schedule) "fastbp gpu" with the learning rate changed before
                   every step, as a per-step schedule does (scikit-learn's
                   "invscaling"): the update reads it on the device, and a small launch
                   writes it there (kernels/cuda/plan.py DeviceScalars)
    torch gpu      PyTorch eager with the batch already on the GPU, no sync per step
    torch host     PyTorch with the batch copied from the host and loss.item() per step
    fastbp cpu     net.train_step on the CPU (skipped for "xl", minutes per step)

and the ratio fastbp gpu / torch gpu (both with the batch on the GPU). GPU columns time
``--chain`` steps followed by one synchronisation, divided by ``--chain``, so a step's
launch overhead and the GPU's work overlap as they do in a training loop.

    python benchmarks/gpu_yardstick.py --json gpu_yardstick.json
    python benchmarks/gpu_yardstick.py --only tiny,mnist --check-steps 3
    python benchmarks/gpu_yardstick.py --only smoke    # a 4-3-2 network: runs anywhere

Needs a GPU for meaningful numbers (PyTorch with CUDA for its columns; they are
skipped, and say so, without it). Under numba's CUDA simulator the defaults shrink to
the ``smoke`` network, one round of one step, no CPU column (a check that the script
runs, as benchmarks/gpu_check.sh's test does; nothing there is worth timing).
"""
import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from yardstick import CONFIGS as CPU_CONFIGS, LR, make_data, median_ms  # noqa: E402

CONFIGS = dict(CPU_CONFIGS, xl=([4096] * 4, 4096))   # the five GPU networks + 64-64-10
SMOKE = {"smoke": ([4, 3, 2], 2)}
CPU_SKIP = {"xl"}
# --variants: the GPU step with parts of kernels/cuda turned off (launch_config)
VARIANTS = {"fastbp_gpu_fused_ms": dict(fused=True),
            "fastbp_gpu_fixed_ms": dict(fused=False, adaptive=False),
            "fastbp_gpu_nographs_ms": dict(graphs=False)}


def chosen_configs(parser, only):
    """[(name, (sizes, batch))] of the comma-separated names in ``only`` (CONFIGS and
    SMOKE); an unknown one is the parser's error, naming the known ones."""
    known = dict(CONFIGS, **SMOKE)
    names = [n for n in only.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--only: unknown configs {unknown}; known: {', '.join(known)}")
    return [(n, known[n]) for n in names]


def cuda_or_exit(script):
    """What runs CUDA here (device.cuda_status's reason) and which fastbp (its folder:
    gpu_check.sh runs a copy of the tree, and must not time an installed fastbp
    instead); exits naming ``script`` and the reason where CUDA is not usable."""
    import fastbp
    from fastbp import device
    usable, why = device.cuda_status()
    if not usable:
        sys.exit(f"{script}: CUDA not usable here: {why}")
    return f"{why}; fastbp from {os.path.dirname(os.path.abspath(fastbp.__file__))}"


def fastbp_net(sizes, device):
    import fastbp
    net = fastbp.MLP(sizes, activation="tanh", dtype="float32", seed=0, device=device)
    return net, fastbp.SGD(net, lr=LR)


def torch_model(net):
    """PyTorch's twin of ``net`` on the GPU, with the same weights; None without CUDA."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch not installed"
    if not torch.cuda.is_available():
        return None, "PyTorch sees no GPU"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    from fastbp import device
    layers = []
    for l, layer in enumerate(net.layers):
        lin = torch.nn.Linear(layer.n_in, layer.n_out, dtype=torch.float32)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(device.to_host(layer.W)))
            lin.bias.copy_(torch.from_numpy(device.to_host(layer.b)))
        layers.append(lin)
        if l < len(net.layers) - 1:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers).cuda()
    return (model, torch.optim.SGD(model.parameters(), lr=LR)), ""


def torch_steps(model_opt, X, y):
    import torch
    model, opt = model_opt
    lossf = torch.nn.CrossEntropyLoss()
    gX, gy = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()

    def on_gpu():
        opt.zero_grad(set_to_none=False)
        loss = lossf(model(gX), gy)
        loss.backward()
        opt.step()
        return loss

    def from_host():
        opt.zero_grad(set_to_none=False)
        loss = lossf(model(torch.from_numpy(X).cuda()), torch.from_numpy(y).cuda())
        loss.backward()
        opt.step()
        return loss.item()
    return on_gpu, from_host, torch.cuda.synchronize


def chained(step, sync, chain):
    """fn running ``chain`` steps then one sync; its time / chain is a step's."""
    def fn():
        for _ in range(chain):
            step()
        sync()
    return fn


def check_losses(net, opt, model_opt, X, y, steps):
    """Largest relative difference of the two systems' losses over ``steps`` steps
    (each before its update), from the same weights; None without PyTorch."""
    if model_opt is None:
        return None
    on_gpu, _, _ = torch_steps(model_opt, X, y)
    worst = 0.0
    for _ in range(steps):
        mine = float(net.train_step(X, y, opt))
        theirs = float(on_gpu().item())
        worst = max(worst, abs(mine - theirs) / max(abs(theirs), 1e-30))
    return worst


def run(name, sizes, batch, args):
    from numba import cuda
    X, y = make_data(sizes, batch, "float32")
    row = {"config": name, "sizes": sizes, "batch": batch}
    net, opt = fastbp_net(sizes, "cuda")
    model_opt, why = torch_model(net)
    row["torch_note"] = why
    row["max_rel_loss_diff"] = check_losses(net, opt, model_opt, X, y, args.check_steps)
    row["losses_agree"] = (row["max_rel_loss_diff"] is None
                           or row["max_rel_loss_diff"] <= args.rtol)
    ms = lambda fn, chain: median_ms(fn, args.budget, args.rounds) / chain  # noqa: E731
    row["fastbp_cuda_ms"] = ms(chained(lambda: net.train_step(X, y, opt), cuda.synchronize,
                                       args.chain), args.chain)
    dX, dy = cuda.to_device(X), cuda.to_device(y)
    row["fastbp_gpu_ms"] = ms(chained(lambda: net.train_step(dX, dy, opt), cuda.synchronize,
                                      args.chain), args.chain)
    if args.variants:
        from fastbp.kernels.cuda import launch_config
        for key, settings in VARIANTS.items():
            if args.variants != "all" and key.split("_")[2] not in args.variants.split(","):
                continue
            with launch_config(**settings):   # plans record their launches inside
                v_net, v_opt = fastbp_net(sizes, "cuda")
                row[key] = ms(chained(lambda: v_net.train_step(dX, dy, v_opt),
                                      cuda.synchronize, args.chain), args.chain)
    if args.gemm:   # the products' first tier on another geometry, the adaptive choice kept
        from fastbp.kernels.cuda import launch_config
        with launch_config(gemm=args.gemm, adaptive=True):
            g_net, g_opt = fastbp_net(sizes, "cuda")
            row["fastbp_gpu_gemm_ms"] = ms(chained(lambda: g_net.train_step(dX, dy, g_opt),
                                                   cuda.synchronize, args.chain), args.chain)
    if args.schedule:   # a new learning rate before every step
        s_net, s_opt = fastbp_net(sizes, "cuda")

        def scheduled():
            s_opt.lr = s_opt.lr * (1.0 - 1e-6)
            s_net.train_step(dX, dy, s_opt)
        row["fastbp_gpu_sched_ms"] = ms(chained(scheduled, cuda.synchronize, args.chain),
                                        args.chain)
    if model_opt is not None:
        on_gpu, from_host, sync = torch_steps(model_opt, X, y)
        row["torch_gpu_ms"] = ms(chained(on_gpu, sync, args.chain), args.chain)
        row["torch_host_ms"] = ms(chained(from_host, sync, args.chain), args.chain)
    if name not in CPU_SKIP and not args.no_cpu:
        cpu_net, cpu_opt = fastbp_net(sizes, "cpu")
        row["fastbp_cpu_ms"] = median_ms(lambda: cpu_net.train_step(X, y, cpu_opt),
                                         args.budget, args.rounds)
    return row


def print_row(r):
    def ms(key):
        v = r.get(key)
        return f"{v:9.3f}" if v is not None else f"{'-':>9s}"
    ratio = (f"{r['fastbp_gpu_ms'] / r['torch_gpu_ms']:6.2f}" if r.get("torch_gpu_ms")
             else f"{'-':>6s}")
    diff = r["max_rel_loss_diff"]
    check = ("MISMATCH" if not r["losses_agree"] else
             ("not checked" if diff is None else f"{diff:.1e}"))
    label = f"{'-'.join(str(s) for s in r['sizes'])}, b{r['batch']}"
    print(f"{r['config']:7s} {label:26s} {ms('fastbp_cuda_ms')} {ms('fastbp_gpu_ms')} "
          f"{ms('fastbp_gpu_fused_ms')} {ms('fastbp_gpu_fixed_ms')} "
          f"{ms('fastbp_gpu_nographs_ms')} {ms('fastbp_gpu_gemm_ms')} "
          f"{ms('fastbp_gpu_sched_ms')} {ms('torch_gpu_ms')} "
          f"{ms('torch_host_ms')} {ms('fastbp_cpu_ms')} {ratio}  {check}", flush=True)


def main(argv=None):
    from fastbp import device
    sim = device.simulator_enabled()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="smoke" if sim else ",".join(CONFIGS),
                        help=f"configs, comma-separated: {', '.join(CONFIGS)}, smoke")
    parser.add_argument("--check-steps", type=int, default=1 if sim else 5)
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="largest relative loss difference that counts as agreeing")
    parser.add_argument("--chain", type=int, default=1 if sim else 20,
                        help="steps per synchronisation")
    parser.add_argument("--budget", type=float, default=0.01 if sim else 1.0,
                        help="seconds per timing")
    parser.add_argument("--rounds", type=int, default=1 if sim else 7)
    parser.add_argument("--no-cpu", action="store_true", default=sim,
                        help="skip the fastbp cpu column")
    parser.add_argument("--variants", nargs="?", const="all",
                        help="add the 'fused', 'fixed' and 'nographs' columns (see the "
                             "docstring), or those named: --variants fixed,nographs")
    parser.add_argument("--gemm", help="add the 'gemm' column: 'fastbp gpu' with this "
                        "product geometry (bm,bn,bk,tm,tn[,min_blocks]) as the first tier")
    parser.add_argument("--schedule", action="store_true",
                        help="add the 'sched' column: 'fastbp gpu' with a new learning "
                             "rate before every step")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    chosen = chosen_configs(parser, args.only)
    why = cuda_or_exit("gpu_yardstick")
    from fastbp.kernels.cuda import plan
    print(f"# {why}; launch path {plan.launch_path()}; python {platform.python_version()}")
    print(f"{'config':7s} {'sizes, batch':26s} {'fb cuda':>9s} {'fb gpu':>9s} "
          f"{'fused':>9s} {'fixed':>9s} {'nographs':>9s} {'gemm':>9s} {'sched':>9s} "
          f"{'torch gpu':>9s} "
          f"{'torch hst':>9s} {'fb cpu':>9s} {'ratio':>6s}  losses (max rel diff)")
    rows = []
    for name, (sizes, batch) in chosen:
        row = run(name, sizes, batch, args)
        print_row(row)
        rows.append(row)
    if rows and rows[0].get("torch_note"):
        print(f"# torch columns skipped: {rows[0]['torch_note']}")
    # a capture that failed on the way turned the graphs off: say so
    print(f"# launch path at the end: {plan.launch_path()}"
          + (f" ({plan.graphs_unavailable()})" if plan.graphs_unavailable() else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": why, "launch_path": plan.launch_path(),
                       "graphs_unavailable": plan.graphs_unavailable(), "rows": rows}, f,
                      indent=1)
    return 0 if all(r["losses_agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
