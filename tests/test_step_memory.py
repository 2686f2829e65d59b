"""A training step allocates nothing once its batch size has been seen.

The workspaces are allocated on the first batch of a size and reused; the compiled
step itself allocates no arrays. Shown two ways, in a fresh process so the numba
runtime's allocation counter can be switched on (NUMBA_NRT_STATS must be set before
numba is imported):

- the numba runtime counts one allocation per array *argument* of a compiled call
  (the wrapper it puts around each numpy array handed in) and nothing else, whatever
  the network's depth or batch: no array is allocated inside the step;
- Python's traced memory stays flat over thousands of steps.
"""
import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, tracemalloc
import numpy as np
import fastbp
from fastbp.kernels import cpu
from numba.core.runtime import rtsys
cpu.network.SPECIALISED_SETS = 0   # the general passes, which the suite has compiled
fastbp.concurrency.start_pool()   # kernels called directly: start_pool says why

def nrt_allocs_per_call(fn, calls=50):
    fn()
    start = rtsys.get_allocation_stats().alloc
    for _ in range(calls):
        fn()
    return (rtsys.get_allocation_stats().alloc - start) / calls

out = {}
rng = np.random.default_rng(0)
for depth in (1, 4):
    for batch in (8, 64):
        sizes = [20] + [32] * depth + [5]
        net = fastbp.MLP(sizes, activation="gelu", seed=0, checkpoint=2)
        opt = fastbp.Adam(net, lr=1e-3)
        X = rng.standard_normal((batch, 20)).astype(np.float32)
        y = rng.integers(0, 5, batch)
        lay = net.layout.compiled_args()
        acts, pres, dbuf = net._workspace.ensure(batch)
        args = (net.params, net.grads, *lay, 0, X, y, net._no_targets, acts, pres, dbuf,
                opt.code, opt.state, opt.hparams, 1)
        n_arrays = sum(isinstance(a, np.ndarray) for a in args)
        out[f"{depth}-{batch}"] = [nrt_allocs_per_call(
            lambda: cpu.network_train_step(*args)), n_arrays]

net = fastbp.MLP([64, 64, 64, 10], activation="tanh", seed=0)
opt = fastbp.SGD(net, lr=0.01)
X = rng.standard_normal((32, 64)).astype(np.float32)
y = rng.integers(0, 10, 32)
for _ in range(500):
    net.train_step(X, y, opt)
tracemalloc.start()
for _ in range(1000):
    net.train_step(X, y, opt)
after_1000 = tracemalloc.get_traced_memory()[0]
for _ in range(4000):
    net.train_step(X, y, opt)
out["traced"] = [after_1000, tracemalloc.get_traced_memory()[0]]
print(json.dumps(out))
"""


def test_training_step_allocates_nothing():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    traced = out.pop("traced")
    for key, (per_call, n_arrays) in out.items():
        assert per_call == n_arrays, (key, per_call, n_arrays)
    # 4000 more steps add no memory (a few hundred bytes of interpreter noise at most)
    assert traced[1] - traced[0] < 2048, traced
