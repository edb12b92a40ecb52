"""Data sets larger than memory: ``.npy`` files and uncompressed ``.npz`` archives as
read-only memory maps, so a rank touches only the pages of the rows it samples.

``np.load(path, mmap_mode="r")`` maps a ``.npy``; for ``.npz`` numpy ignores
``mmap_mode`` and reads whole members, so :func:`open_arrays` finds each member's bytes in
the zip itself: a member stored without compression (``np.savez``, not
``savez_compressed``) is a ``.npy`` at a fixed offset, mapped with ``np.memmap``.
Compressed members cannot be mapped; they are an error naming the member (decompress
with ``np.savez``), never a silent full read.  No pickles are ever loaded.
"""
from __future__ import annotations

import os
import struct
import zipfile

import numpy as np

from ..ir import GraphcError


def _npy_header(f):
    from numpy.lib import format as npf
    version = npf.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = npf.read_array_header_1_0(f)
    else:
        shape, fortran, dtype = npf.read_array_header_2_0(f)
    if dtype.hasobject:
        raise GraphcError("object arrays are not accepted")
    return shape, fortran, dtype, f.tell()


def _map_npz_member(path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if info.compress_type != zipfile.ZIP_STORED:
        raise GraphcError(f"{path}: member {info.filename} is compressed and cannot be "
                          "memory-mapped; save the data with np.savez (not "
                          "savez_compressed)")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        if head[:4] != b"PK\x03\x04":
            raise GraphcError(f"{path}: bad local header for {info.filename}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        data_start = info.header_offset + 30 + name_len + extra_len
        f.seek(data_start)
        shape, fortran, dtype, off = _npy_header(f)
    return np.memmap(path, dtype=dtype, mode="r", offset=off, shape=shape,
                     order="F" if fortran else "C")


def open_arrays(path: str) -> dict[str, np.ndarray]:
    """``{name: read-only memory-mapped array}`` of a ``.npy`` (name: the file's stem)
    or an uncompressed ``.npz``."""
    if not os.path.exists(path):
        raise GraphcError(f"{path}: no such file")
    try:
        if path.endswith(".npy"):
            stem = os.path.splitext(os.path.basename(path))[0]
            return {stem: np.load(path, mmap_mode="r", allow_pickle=False)}
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    out[info.filename[:-4]] = _map_npz_member(path, zf, info)
            return out
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise GraphcError(f"{path}: cannot memory-map ({e})") from None
