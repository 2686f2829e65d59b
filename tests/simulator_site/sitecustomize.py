"""Imported by Python at start-up in processes that a test starts with this folder on
PYTHONPATH (tests/test_gpu_tools.py: the stages of benchmarks/gpu_check.sh): numba-cuda's
CUDA simulator sped up as in the test processes themselves (tests/cuda_simulator.py).
Nothing happens outside the simulator (NUMBA_ENABLE_CUDASIM=1)."""
import os
import sys

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        import cuda_simulator
    finally:
        del sys.path[0]
    cuda_simulator.speed_up()
