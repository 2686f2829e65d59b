"""Threads, forked and spawned processes, and numba's cache folder (fastbp.concurrency,
kernels/cpu/_jit.py). The process tests run in subprocesses with timeouts, so a hang
fails the test instead of stopping the suite."""
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastbp


def _python(code, tmp_path, env=None, timeout=300):
    """Run ``code`` as a script file (so that spawned workers can import it) and return
    the finished process (stdout and stderr as text)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=tmp_path)


def test_fork_and_spawn_pools(tmp_path):
    """import fastbp starts no thread pool; a fork Pool works while the parent has run
    no kernel, fails at once with UnsafeForkError after it has (never hangs), and a
    spawn Pool works in either case, with the same results."""
    done = _python("""
        import multiprocessing as mp
        import numba
        import numpy as np
        import fastbp

        def train(seed):
            rng = np.random.default_rng(seed)
            net = fastbp.MLP([4, 6, 3], seed=seed)
            opt = fastbp.Adam(net, lr=0.01)
            X, y = rng.standard_normal((32, 4)), np.arange(32) % 3
            # train_step: the compiled code the rest of the suite has already cached (a
            # fresh process's relu passes with Adam's update, as the command line's)
            return [net.train_step(X[a:a + 8], y[a:a + 8], opt) for a in range(0, 32, 8)]

        if __name__ == "__main__":
            try:
                numba.threading_layer()
                print("import started the pool")
            except ValueError:
                print("import started no pool")
            with mp.get_context("fork").Pool(2) as pool:
                forked = pool.map(train, [0, 1])
            here = [train(0), train(1)]            # the parent now runs kernels
            from numba.np.ufunc import omppool
            print("layer:", numba.threading_layer(), omppool.openmp_vendor)
            print("fork before kernels:", "same" if forked == here else "DIFFERENT")
            try:
                with mp.get_context("fork").Pool(2) as pool:
                    pool.map(train, [0, 1])
                print("fork after kernels: ran")
            except fastbp.concurrency.UnsafeForkError as exc:
                print("fork after kernels: refused:", exc)
            with mp.get_context("spawn").Pool(2) as pool:
                spawned = pool.map(train, [0, 1])
            print("spawn:", "same" if spawned == here else "DIFFERENT")
        """, tmp_path)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "import started no pool" in out
    assert "fork before kernels: same" in out
    assert "spawn: same" in out
    if "layer: omp GNU" in out:    # GNU OpenMP cannot run in a forked child
        assert "fork after kernels: refused:" in out and "'spawn'" in out, out
    else:
        assert "fork after kernels: ran" in out, out
    assert "Terminating" not in done.stderr


def test_read_only_cache_falls_back_to_compiling_in_memory(tmp_path):
    """No writable numba cache folder at all (NUMBA_CACHE_DIR, the sources' __pycache__
    and the user cache each lie under a regular file, which stops root too): import
    warns once and kernels compile in memory."""
    pkg = tmp_path / "site" / "fastbp"
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    shutil.copytree(os.path.dirname(fastbp.__file__), pkg, ignore=ignore)
    shutil.rmtree(pkg / "kernels", ignore_errors=True)
    shutil.copytree(fastbp.kernels.__path__[0], pkg / "kernels", ignore=ignore)
    (pkg / "kernels" / "cpu" / "__pycache__").write_text("a file, not a folder")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    done = _python("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastbp
        import numpy as np
        from fastbp.kernels.cpu import _jit, elementary
        print("from", fastbp.__file__)
        print("cache", _jit.CACHE_DIR)
        print("warnings", [str(w.message)[:60] for w in caught
                           if issubclass(w.category, RuntimeWarning)])
        print("exp(1) =", elementary.exp(np.float64(1.0)))
        """, tmp_path, env={"PYTHONPATH": str(tmp_path / "site"),
                            "NUMBA_CACHE_DIR": str(blocker / "numba"),
                            "XDG_CACHE_HOME": str(blocker / "xdg"),
                            "HOME": str(blocker / "home")})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"from {pkg / '__init__.py'}" in out
    assert "cache None" in out
    assert out.count("numba has no writable cache folder") == 1, out
    assert abs(float(out.split("exp(1) =")[1]) - np.e) < 1e-12


def test_numba_cache_dir_is_honoured(tmp_path):
    """NUMBA_CACHE_DIR moves the cache and the staleness stamp together; an unwritable
    one makes numba fall back to its next folder (here the sources' __pycache__),
    silently, and fastbp stamps the folder numba really uses."""
    code = """
        import warnings
        warnings.simplefilter("error", RuntimeWarning)   # no warning: a folder is writable
        from fastbp.kernels.cpu import _jit
        print(_jit.CACHE_DIR)
        """
    done = _python(code, tmp_path, env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    cache = done.stdout.strip()
    assert cache.startswith(str(tmp_path / "cache"))
    assert os.path.isfile(os.path.join(cache, "fastbp-kernel-sources.sha256"))
    (tmp_path / "blocker").write_text("a file, not a folder")
    done = _python(code, tmp_path, env={"NUMBA_CACHE_DIR": str(tmp_path / "blocker")})
    assert done.returncode == 0, done.stderr[-3000:]
    in_tree = os.path.join(fastbp.kernels.cpu.__path__[0], "__pycache__")
    assert done.stdout.strip() == in_tree


class _Blocking:
    """Stands in for a network's kernels: network_forward waits until released, so a
    test can hold one call open on purpose."""

    def __init__(self, kernels):
        self._kernels = kernels
        self.entered, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._kernels, name)

    def network_forward(self, *args):
        self.entered.set()
        self.release.wait(60)
        return self._kernels.network_forward(*args)


def test_second_thread_on_one_network_is_refused():
    rng = np.random.default_rng(0)
    net = fastbp.MLP([4, 6, 3], seed=0)
    opt = fastbp.SGD(net, lr=0.1)
    X, y = rng.standard_normal((16, 4)), np.arange(16) % 3
    net.forward(X)   # compiled (and warmed) before the stand-in replaces the passes
    blocking = _Blocking(net._kernels)
    net._kernels = blocking
    first = threading.Thread(target=net.forward, args=(X,))
    first.start()
    assert blocking.entered.wait(60)
    before = net.params.copy()
    calls = {"forward": lambda: net.forward(X), "backward": lambda: net.backward(X, y),
             "compute_loss": lambda: net.compute_loss(X, y),
             "train_step": lambda: net.train_step(X, y, opt),
             "train_epoch": lambda: net.train_epoch(X, y, opt, 8),
             "step": opt.step, "jacobian": lambda: fastbp.jacobian(net, X),
             "fit": lambda: net.fit(X, y, epochs=1, optimizer=opt, verbose=False)}
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match="in use by another thread"):
            call()
    assert net.params.tobytes() == before.tobytes()
    blocking.release.set()
    first.join()
    net._kernels = blocking._kernels
    net.train_step(X, y, opt)        # free again, and the same thread may call again
    net.train_step(X, y, opt)


def test_two_networks_in_two_threads_match_sequential_runs():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((64, 5)), np.arange(64) % 3

    def run(seed, out):
        net = fastbp.MLP([5, 16, 3], activation="tanh", seed=seed)
        opt = fastbp.Adam(net, lr=0.01)
        for _ in range(5):
            for a in range(0, len(X), 8):
                net.train_step(X[a:a + 8], y[a:a + 8], opt)
        out[seed] = net.params.copy()

    sequential, threaded = {}, {}
    run(0, sequential)
    run(1, sequential)
    threads = [threading.Thread(target=run, args=(s, threaded)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (0, 1):
        assert threaded[s].tobytes() == sequential[s].tobytes()


def test_fit_holds_the_network_for_its_whole_run():
    """A second thread is refused between fit's steps too, not only when two kernel
    calls collide; fit's own thread may still use the network (callbacks)."""
    rng = np.random.default_rng(2)
    net = fastbp.MLP([4, 6, 3], seed=0)
    X, y = rng.standard_normal((16, 4)), np.arange(16) % 3
    inside, release, seen = threading.Event(), threading.Event(), []

    def callback(epoch, logs):
        seen.append(net.predict(X[:2]).shape)      # same thread: allowed
        inside.set()
        release.wait(60)

    first = threading.Thread(target=fastbp.fit, args=(net, X, y),
                             kwargs=dict(epochs=1, callbacks=[callback], verbose=False))
    first.start()
    assert inside.wait(60)
    with pytest.raises(RuntimeError, match="fit: this network is in use"):
        fastbp.fit(net, X, y, epochs=1, verbose=False)
    with pytest.raises(RuntimeError, match="train_step: this network is in use"):
        net.train_step(X, y, fastbp.SGD(net))
    release.set()
    first.join()
    assert seen == [(2,)]
    fastbp.fit(net=net, X=X, y=y, epochs=1, verbose=False)   # free again; keywords work
