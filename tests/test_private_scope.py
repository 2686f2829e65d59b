"""kernels/cpu/private_scope.py: the needed-only object it writes, and what loading one
does (the libraries it lists answer through its handle, not through the global
scope), with the fallbacks for a refused memfd and for a path the loader already knows.
These use the kernels' own OpenBLAS, so they run without MKL (tests/test_mkl.py loads
MKL this way)."""
import ctypes
import os
import struct
import types

import pytest

from fastbp.kernels.cpu import blas, private_scope

needs_scope = pytest.mark.skipif(
    private_scope.supported() is not None or blas.LIBRARY_PATH is None,
    reason=f"needs Linux on x86-64 and the scipy-openblas32 library "
           f"({private_scope.supported() or 'scipy BLAS in use'})")


def test_a_needed_only_object_lists_its_paths():
    """The object private_scope writes: an x86-64 ELF shared object whose dynamic
    section names exactly the given paths as DT_NEEDED, in order; relative paths are
    refused (the loader would search for them)."""
    paths = ["/lib/one.so.1", "/opt/x/two.so"]
    data = private_scope.needed_only_object(paths)
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    assert (e_type, e_machine) == (3, 62)
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    headers = [struct.unpack_from("<IIQQQQQQ", data, phoff + 56 * i) for i in range(phnum)]
    dynamic = next(h for h in headers if h[0] == 2)   # PT_DYNAMIC
    entries = [struct.unpack_from("<qQ", data, dynamic[2] + 16 * i)
               for i in range(dynamic[5] // 16)]
    strtab = next(value for tag, value in entries if tag == 5)
    needed = [data[strtab + value:data.index(b"\0", strtab + value)].decode()
              for tag, value in entries if tag == 1]
    assert needed == paths
    assert entries[-1] == (0, 0)
    assert any(h[0] == 0x6474E551 and h[1] == 6 for h in headers)   # stack RW, not X
    with pytest.raises(ValueError, match=r"paths: expected absolute paths, got 'two.so'"):
        private_scope.needed_only_object(["two.so"])



def _check_loaded(handle):
    """``handle`` finds the kernels' OpenBLAS ?gemm (the same functions blas.py bound),
    and the global scope does not."""
    assert ctypes.cast(handle.scipy_sgemm_, ctypes.c_void_p).value == blas._ADDRESSES["sgemm"]
    assert not hasattr(ctypes.CDLL(None), "scipy_sgemm_")


@needs_scope
def test_a_listed_library_answers_through_the_handle_only():
    handle = private_scope.load([os.path.realpath(blas.LIBRARY_PATH)])
    _check_loaded(handle)   # from a memfd here, or a file where memfds are refused


@needs_scope
def test_a_refused_memfd_falls_back_to_a_file(monkeypatch):
    def refused(*args):
        raise OSError(1, "Operation not permitted")
    monkeypatch.setattr(os, "memfd_create", refused)
    handle = private_scope.load([os.path.realpath(blas.LIBRARY_PATH)])
    assert not handle._name.startswith("/proc/self/fd/")
    _check_loaded(handle)


@needs_scope
def test_a_path_the_loader_knows_is_not_reused():
    """Another library's in-memory object, loaded from /proc/self/fd/N and its
    descriptor closed: the next memfd gets number N, and dlopen of that path would hand
    back the other object, so load holds N and takes the next number."""
    data = private_scope.needed_only_object([os.path.realpath(blas.LIBRARY_PATH)])
    try:
        fd = os.memfd_create("someone-else")
    except OSError as error:
        pytest.skip(f"memfd_create is refused here ({error})")
    os.write(fd, data)
    stale = f"/proc/self/fd/{fd}"
    ctypes.CDLL(stale, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    os.close(fd)
    handle = private_scope.load([os.path.realpath(blas.LIBRARY_PATH)])
    assert handle._name != stale
    assert handle._name.startswith("/proc/self/fd/")   # another number, not a file
    _check_loaded(handle)
    with pytest.raises(OSError):   # N is closed again: held only while load chose
        os.fstat(fd)


def test_load_says_where_it_cannot_work(monkeypatch):
    monkeypatch.setattr(private_scope, "sys", types.SimpleNamespace(platform="win32"))
    with pytest.raises(RuntimeError, match=r"a symbol scope of its own needs Linux "
                                           r"\(this is win32\)"):
        private_scope.load(["/x.so"])
