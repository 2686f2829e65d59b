"""fastbp's compute layer, installed as ``fastbp.kernels``.

Pure functions over caller-allocated arrays: no allocation on hot paths, no Python
objects, no hidden state, and no import of ``fastbp`` (the dependency runs one way).

- :mod:`fastbp.kernels.codes`     integer codes for activations and losses, shared by
                                  the CPU kernels, the CUDA twins and the API.
- :mod:`fastbp.kernels.reference` plain numpy float64 reference of every kernel.
- :mod:`fastbp.kernels.cpu`       ``@njit(parallel=True)`` CPU kernels.
"""
