"""Where a test-suite run's time goes: a pytest plugin, and a report of what it wrote.

Each pytest process (each xdist worker) records, per test, its wall-clock start and end
and the CPU seconds it used in its own process and in the subprocesses it waited for,
and every top-level numba compile it triggered (the dispatcher, its argument types and
the compile's wall seconds, callees included), with the test that was running ("<setup>"
before the first one: the suite's shared precompile, tests/conftest.py). At the end it
writes OUT/<worker>.json.

    FASTBP_SUITE_PROFILE=/tmp/prof PYTHONPATH=. python -m pytest -p benchmarks.suite_profile
    python benchmarks/suite_profile.py /tmp/prof        # the report

Use an empty NUMBA_CACHE_DIR to see a cold run. The report lists, per worker, when its
first test started and its last ended, then the files by CPU (own and subprocesses')
and the dispatchers by compile seconds. CPU seconds come from getrusage (children:
only subprocesses that have been waited for); compile seconds are wall time, so they
include waiting for the core while another process runs.
"""
import json
import os
import resource
import sys
import threading
import time
from collections import Counter, defaultdict

OUT_ENV = "FASTBP_SUITE_PROFILE"
_state = {"test": "<setup>", "t0": time.time(), "tests": [], "compiles": []}
_depth = threading.local()


def _cpu():
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _compile_listener():
    from numba.core import event

    class Listener(event.Listener):
        """Times top-level compiles only: a callee's compile is inside its caller's."""
        def on_start(self, ev):
            stack = getattr(_depth, "stack", None)
            if stack is None:
                stack = _depth.stack = []
            stack.append(time.perf_counter())

        def on_end(self, ev):
            start = _depth.stack.pop()
            if _depth.stack:
                return
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            name = (f"{func.__module__}.{func.__qualname__}" if func is not None
                    else str(ev.data.get("dispatcher")))
            _state["compiles"].append((_state["test"], name, str(ev.data.get("args"))[:300],
                                       time.perf_counter() - start))

    return Listener()


def pytest_configure(config):
    if os.environ.get(OUT_ENV):
        from numba.core import event
        _state.update(test="<setup>", t0=time.time(), tests=[], compiles=[],
                      listener=_compile_listener())
        event.register("numba:compile", _state["listener"])


def pytest_unconfigure(config):
    listener = _state.pop("listener", None)
    if listener is not None:
        from numba.core import event
        event.unregister("numba:compile", listener)


def pytest_runtest_protocol(item, nextitem):
    if "listener" not in _state:
        return
    _state["test"] = item.nodeid
    _state["started"] = (time.time() - _state["t0"], *_cpu())


def pytest_runtest_logfinish(nodeid, location):
    started = _state.pop("started", None)
    if started is None:
        return
    t, own, kids = started
    own2, kids2 = _cpu()
    _state["tests"].append((nodeid, t, time.time() - _state["t0"], own2 - own, kids2 - kids))


def pytest_sessionfinish(session):
    out = os.environ.get(OUT_ENV)
    if not out or "listener" not in _state:
        return
    os.makedirs(out, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(out, f"{worker}.json"), "w") as f:
        json.dump({"tests": _state["tests"], "compiles": _state["compiles"]}, f)


def report(folder, top=15):
    """The report of the files under ``folder``, as text."""
    lines = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(folder, name)) as f:
            data = json.load(f)
        tests = data["tests"]
        lines.append(f"{name[:-5]}: {len(tests)} tests"
                     + (f", first started at {tests[0][1]:.1f} s, last ended at "
                        f"{max(t[2] for t in tests):.1f} s" if tests else ""))
        files = defaultdict(lambda: [0.0, 0.0, 0.0])
        for nodeid, start, end, own, kids in tests:
            row = files[nodeid.split("::")[0]]
            row[0] += end - start
            row[1] += own
            row[2] += kids
        lines.append("  files by CPU (s): wall / own / subprocesses")
        for path, (wall, own, kids) in sorted(files.items(),
                                              key=lambda kv: -(kv[1][1] + kv[1][2]))[:top]:
            lines.append(f"    {path:50s} {wall:7.1f} {own:7.1f} {kids:7.1f}")
        by_test = Counter()
        by_dispatcher = Counter()
        for test, dispatcher, _, seconds in data["compiles"]:
            by_test[test.split("::")[0]] += seconds
            by_dispatcher[dispatcher] += seconds
        total = sum(by_dispatcher.values())
        lines.append(f"  numba compiles: {total:.1f} s in all; by file (s):")
        lines += [f"    {k:50s} {v:7.1f}" for k, v in by_test.most_common(top)]
        lines.append("  by dispatcher (s):")
        lines += [f"    {k:70s} {v:7.1f}" for k, v in by_dispatcher.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(report(sys.argv[1]))
