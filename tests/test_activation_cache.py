"""kernels/cpu/activations.py ``_bound``: the every-activation kernels call one compiled
function per (loop, activation), cached on disk. numba names a function's cache files
after its qualified name and keys their entries on its code and argument types only,
and every copy runs the same code (``_bound_body``) with other globals: two copies with
one name would load each other's machine code. So: a name of their own, each."""
import numpy as np
import pytest

from fastbp.kernels import codes, reference
from fastbp.kernels.cpu import activations, linear

LOOPS = (activations._forward_rows, activations._backward_rows,
         linear._bias_activation_loop, linear._sigma_prime_bias_loop)


def test_every_copy_has_cache_files_of_its_own():
    copies = [activations._bound(loop, code, False)
              for loop in LOOPS for code in range(len(codes.ACTIVATIONS))]
    if getattr(copies[0]._cache, "_cache_file", None) is None:
        pytest.skip("numba has no writable cache folder here: nothing is shared")
    index_files = {c._cache._cache_file._index_path for c in copies}
    assert len(index_files) == len(copies)
    # and each is the pair it says: the activation's value on a few points
    s = np.array([[-1.5, -0.2, 0.3, 2.0]])
    for code, name in enumerate(codes.ACTIVATIONS):
        out = np.empty_like(s)
        activations._bound(activations._forward_rows, code, False)((s, out, 0.01, 0, 1))
        np.testing.assert_allclose(out, reference.activation_forward(s, code, 0.01),
                                   rtol=1e-12, err_msg=name)
