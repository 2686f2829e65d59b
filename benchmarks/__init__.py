"""fastbp's asv benchmark suites (see benchmarks/README.md).

One module per topic, in the style of numpy's and SciPy's benchmarks: ``bench_kernels``
(every kernel of fastbp.kernels.registry on every device), ``bench_optim`` (the
optimizers' updates) and ``bench_network`` (whole networks on every device). ``common`` holds what they share; ``yardstick.py`` is
a stand-alone script, not an asv suite.
"""
