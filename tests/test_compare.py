"""The GPU timing and cuBLAS-ratio path of ``python -m fastbp compare``, run here with
stand-ins for the GPU's events and for cuBLAS, so that it is exercised on every machine;
on a real GPU benchmarks/gpu_check.sh runs it for real."""

import numpy as np
import pytest

from fastbp import compare
from fastbp import device as fdevice


class ScriptedEvent:
    """An event pair member whose elapsed_time returns the next scripted milliseconds."""

    def __init__(self, script):
        self.script = script

    def record(self):
        pass

    def synchronize(self):
        pass

    def elapsed_time(self, stop):
        return self.script.pop(0)


def test_median_gpu_seconds_warms_up_then_takes_the_median():
    script = [5.0, 1.0, 3.0]
    calls = []
    seconds = compare.median_gpu_seconds(lambda: calls.append(1),
                                         lambda: (ScriptedEvent(script), ScriptedEvent(script)), 3,
                                         lambda: calls.append("sync"))
    assert seconds == pytest.approx(0.003)
    assert calls == [1, "sync", 1, 1, 1]   # one untimed call, then three timed
    assert script == []
    # samples of several calls: the per-call time is the sample over the calls
    calls.clear()
    script[:] = [10.0, 2.0, 6.0]
    seconds = compare.median_gpu_seconds(lambda: calls.append(1),
                                         lambda: (ScriptedEvent(script), ScriptedEvent(script)),
                                         3, lambda: None, inner=2)
    assert seconds == pytest.approx(0.003) and len(calls) == 1 + 3 * 2


def test_vendor_products_time_the_layer_products(clock_events):
    rng = np.random.default_rng(3)
    inputs = {"X": rng.standard_normal((6, 4)), "W": rng.standard_normal((5, 4)),
              "dA": rng.standard_normal((6, 5))}
    seen = []

    def put(a):
        seen.append(a.shape)
        return np.asarray(a)
    lib = ("numpy stand-in", put, lambda: None, clock_events)
    assert compare._vendor_products("linear_forward", inputs, 2, lib) > 0
    assert compare._vendor_products("linear_backward", inputs, 2, lib) > 0
    assert compare._vendor_products("tanh", inputs, 2, lib) is None
    assert compare._vendor_products("linear_forward", inputs, 2, None) is None
    assert seen and all(len(s) == 2 for s in seen)


usable, why = fdevice.cuda_status()


@pytest.mark.skipif(not (usable and fdevice.simulator_enabled()),
                    reason="needs the CUDA simulator (a real GPU times for real)")
def test_compare_reports_the_cublas_ratio(stand_in_gpu, tmp_path, capsys):
    """The whole table with a GPU's path taken: kernels run in the simulator, timed by
    host-clock events; 'cuBLAS' is numpy. Checks the ratio is computed and reported."""
    out = tmp_path / "compare.json"
    args = compare.build_parser().parse_args(
        ["--batch", "5", "--inputs", "3", "--outputs", "6", "--repeat", "2",
         "--json", str(out)])
    assert compare.run(args) == 0
    import json
    result = json.loads(out.read_text())
    assert result["gpu"] == "real"
    rows = {(r["device"], r["kernel"]): r for r in result["rows"]}
    for name in ("linear_forward", "linear_backward"):
        row = rows[("cuda", name)]
        assert row["median_s"] > 0 and row["cublas_s"] > 0
        assert row["vs_cublas"] == pytest.approx(row["cublas_s"] / row["median_s"])
    assert rows[("cuda", "mse")]["vs_cublas"] is None
    assert rows[("cpu", "linear_forward")]["vs_cublas"] is None
    assert all(r["max_rel_error"] < 1e-4 for r in result["rows"])
    text = capsys.readouterr().out
    assert "cuBLAS FP32 baseline (no TF32): numpy stand-in" in text
    assert "GPU: a stand-in GPU" in text


def _cpu_compare(tmp_path, capsys):
    out = tmp_path / "compare.json"
    args = compare.build_parser().parse_args(
        ["--batch", "6", "--inputs", "5", "--outputs", "4", "--repeat", "1",
         "--devices", "cpu", "--json", str(out)])
    code = compare.run(args)
    import json
    return code, {r["kernel"]: r for r in json.loads(out.read_text())["rows"]}, \
        capsys.readouterr().out


def test_compare_passes_correct_kernels(tmp_path, capsys):
    code, rows, text = _cpu_compare(tmp_path, capsys)
    assert code == 0 and all(r["ok"] for r in rows.values())
    assert "FAILED" not in text and "failed:" not in text


def test_compare_reports_a_wrong_and_a_broken_kernel(monkeypatch, tmp_path, capsys):
    from fastbp.kernels import cpu as K
    real_sgd = K.sgd_update

    def off_by_a_little(p, g, lr):   # wrong answer: the check must catch it
        real_sgd(p, g, lr * 1.01)

    def broken(*args):
        raise RuntimeError("cannot compile here")
    monkeypatch.setattr(K, "sgd_update", off_by_a_little)
    monkeypatch.setattr(K, "mse", broken)
    code, rows, text = _cpu_compare(tmp_path, capsys)
    assert code == 1
    assert not rows["sgd_update"]["ok"] and rows["sgd_update"]["max_rel_error"] > 1e-4
    assert rows["mse"]["error"] == "RuntimeError: cannot compile here"
    assert rows["linear_forward"]["ok"]            # the rest of the table is still there
    assert "mse                         cpu  FAILED: RuntimeError" in text
    assert "failed: cpu mse, cpu sgd_update" in text
