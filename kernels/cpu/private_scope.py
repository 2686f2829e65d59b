"""Shared libraries loaded into a symbol scope of their own (Linux, x86-64), for MKL's
layers (kernels/cpu/mkl.py).

Why: MKL's layers (libmkl_intel_lp64, libmkl_sequential, libmkl_core) call each other
but do not name each other as dependencies (no DT_NEEDED), so each must find the others'
symbols in a scope it searches. MKL's own loader, libmkl_rt, solves that by loading them
RTLD_GLOBAL, which puts their ``sgemm_`` and thousands of ``mkl_*`` functions in front of
every library loaded later (PyTorch's products bound to them and ran single-threaded:
benchmarks/README.md, "MKL for the larger products"). ``dlmopen`` into a namespace of its
own crashed in glibc 2.36 (``add_to_global_resize``: libmkl_rt's RTLD_GLOBAL dlopen
inside that namespace). What works is what the linker does for a program linked
against the layers: one object that lists them as DT_NEEDED. Loaded with RTLD_LOCAL,
that object's dependency list is the local lookup scope of every library in it,
searched after the process's global scope: the layers resolve each other there, and
nothing of theirs enters the global scope. (So a copy of the same functions already in
the global scope would win; kernels/cpu/mkl.py looks for one before loading.)

``load`` writes that object, which holds nothing but the dependency list (an ELF header,
three program headers, a dynamic section, an empty symbol table and its hash table: a
few hundred bytes, growing with the paths), into an anonymous in-memory file
(``os.memfd_create``; a temporary file where that is unavailable or refused) and
``dlopen``s it with RTLD_NOW, so every symbol of the listed libraries is bound before
``load`` returns and none can later bind to a copy that another library puts in the
global scope. A library that one of them ``dlopen``s later is bound then, and so is
best listed too, unless it defines names that another listed one defines (the first
listed would answer for both). ``dlsym`` on the returned handle (``ctypes`` attribute access) searches
the listed libraries in order, and then their own dependencies.

Layout: System V gABI and the x86-64 psABI (ELF64, little-endian); the loader needs
only the program headers, so there are no sections. The single PT_LOAD segment is
writable because glibc rewrites the dynamic section's addresses in place on x86-64.
"""
import ctypes
import _ctypes
import os
import platform
import struct
import sys
import tempfile

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")   # Elf64_Ehdr, 64 bytes
_PHDR = struct.Struct("<IIQQQQQQ")           # Elf64_Phdr, 56 bytes
_DYN = struct.Struct("<qQ")                  # Elf64_Dyn, 16 bytes
_SYM_SIZE = 24                               # sizeof(Elf64_Sym)

_ET_DYN, _EM_X86_64, _EV_CURRENT = 3, 62, 1
_PT_LOAD, _PT_DYNAMIC, _PT_GNU_STACK = 1, 2, 0x6474E551
_PF_W, _PF_R = 2, 4
_DT_NULL, _DT_NEEDED, _DT_HASH, _DT_STRTAB, _DT_SYMTAB = 0, 1, 4, 5, 6
_DT_STRSZ, _DT_SYMENT = 10, 11


_KEPT_OPEN = []   # descriptors of the loaded in-memory objects (see ``load``)


def supported():
    """None where ``load`` can work here, else why not in words."""
    if not sys.platform.startswith("linux"):
        return f"a symbol scope of its own needs Linux (this is {sys.platform})"
    if platform.machine() != "x86_64":
        return f"a symbol scope of its own is built for x86-64 (this is {platform.machine()})"
    return None


def needed_only_object(paths):
    """The bytes of an x86-64 ELF shared object with no code and no symbols whose
    dynamic section lists ``paths`` (absolute paths, so the loader opens exactly those
    files) as DT_NEEDED, in that order."""
    strings = b"\0"
    offsets = []
    for path in paths:
        if not os.path.isabs(path):
            raise ValueError(f"paths: expected absolute paths, got {path!r}")
        offsets.append(len(strings))
        strings += os.fsencode(path) + b"\0"
    n_headers = 3
    hash_at = _EHDR.size + n_headers * _PHDR.size
    hash_table = struct.pack("<4I", 1, 1, 0, 0)   # 1 bucket, 1 chain: symbol 0 only
    symbols_at = hash_at + len(hash_table)
    strings_at = symbols_at + _SYM_SIZE
    dynamic_at = -(-(strings_at + len(strings)) // 8) * 8
    dynamic = b"".join(_DYN.pack(_DT_NEEDED, offset) for offset in offsets) + b"".join(
        _DYN.pack(tag, value) for tag, value in (
            (_DT_HASH, hash_at), (_DT_STRTAB, strings_at), (_DT_SYMTAB, symbols_at),
            (_DT_STRSZ, len(strings)), (_DT_SYMENT, _SYM_SIZE), (_DT_NULL, 0)))
    size = dynamic_at + len(dynamic)
    # file offsets and virtual addresses coincide: one segment mapped from offset 0
    headers = (_PHDR.pack(_PT_LOAD, _PF_R | _PF_W, 0, 0, 0, size, size, 0x1000)
               + _PHDR.pack(_PT_DYNAMIC, _PF_R | _PF_W, dynamic_at, dynamic_at,
                            dynamic_at, len(dynamic), len(dynamic), 8)
               # a non-executable stack: without this header the loader would make
               # the process's stacks executable, or refuse
               + _PHDR.pack(_PT_GNU_STACK, _PF_R | _PF_W, 0, 0, 0, 0, 0, 16))
    ident = b"\x7fELF" + bytes([2, 1, _EV_CURRENT]) + bytes(9)   # 64-bit, LSB
    header = _EHDR.pack(ident, _ET_DYN, _EM_X86_64, _EV_CURRENT, 0, _EHDR.size, 0, 0,
                        _EHDR.size, _PHDR.size, n_headers, 64, 0, 0)
    body = header + headers + hash_table + bytes(_SYM_SIZE) + strings
    return body + bytes(dynamic_at - len(body)) + dynamic


def load(paths):
    """A ctypes handle on the libraries at ``paths`` (absolute), loaded with RTLD_NOW
    into a lookup scope of their own (see the module's docstring); attribute access
    finds a function in the first of them that defines it. Raises OSError where the
    loader refuses them (a missing file, a missing symbol) and RuntimeError where
    ``supported()`` says no."""
    reason = supported()
    if reason is not None:
        raise RuntimeError(reason)
    data = needed_only_object(paths)
    mode = os.RTLD_NOW | os.RTLD_LOCAL
    handle = _load_from_memory(data, mode)
    if handle is not None:
        return handle
    with tempfile.NamedTemporaryFile(suffix=".so") as file:
        file.write(data)
        file.flush()
        return ctypes.CDLL(file.name, mode=mode)


def _load_from_memory(data, mode):
    """``data`` dlopened from an anonymous in-memory file, or None where that is not to
    be had (no memfd_create or /proc, or a policy against executable memfds)."""
    taken = []   # descriptors whose /proc/self/fd path names an object already loaded
    try:
        for _ in range(_PATH_TRIES):
            try:
                fd = os.memfd_create("fastbp-private-scope", os.MFD_CLOEXEC)
            except (AttributeError, OSError):
                return None
            path = f"/proc/self/fd/{fd}"
            if not is_loaded(path, mode):
                break
            # The loader knows loaded objects by path and would hand back the one it
            # has for this path (another library's in-memory object whose descriptor,
            # the same number, it closed since): hold this number, take the next
            taken.append(fd)
        else:
            return None
        try:
            os.write(fd, data)
            handle = ctypes.CDLL(path, mode=mode)
        except OSError:
            os.close(fd)
            return None
    finally:
        for held in taken:
            os.close(held)
    # The descriptor stays open for the life of the process, so that no later
    # in-memory object of anyone's gets this path while this one is loaded.
    _KEPT_OPEN.append(fd)
    return handle


_PATH_TRIES = 8   # descriptor numbers tried for a path the loader does not know


def is_loaded(path, mode=None):
    """Whether the dynamic loader already has an object loaded under ``path`` (a path,
    or a bare soname; asked without loading anything, and the reference the question
    takes is given back). POSIX only (RTLD_NOLOAD)."""
    mode = os.RTLD_LAZY if mode is None else mode
    try:
        known = ctypes.CDLL(path, mode=mode | os.RTLD_NOLOAD)
    except OSError:
        return False
    _ctypes.dlclose(known._handle)
    return True
