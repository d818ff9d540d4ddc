"""Minimal, dependency-free (numpy only) reader/writer for the safetensors format.

Format: 8-byte little-endian u64 header length N, then N bytes of UTF-8 JSON
  {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
   "__metadata__": {"key": "value", ...}}
padded with spaces so that N is a multiple of 8, then the raw little-endian,
row-major (C-order) tensor bytes. Offsets are relative to the start of the byte
buffer that follows the header. Tensors are written in insertion order, packed
back to back with no holes (as the format requires). The writer refuses to place a
tensor at an offset that is not a multiple of its element size, so every tensor in
the files we write is naturally aligned relative to the data buffer (whose start,
8 + N, is itself a multiple of 8).
"""
import json
import struct

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "F16": np.dtype("<f2"),
}


def _st_dtype(arr):
    for name, dt in _DTYPES.items():
        if arr.dtype == dt or arr.dtype == dt.newbyteorder("="):
            return name
    raise TypeError(f"unsupported dtype {arr.dtype}")


def save(path, tensors, metadata=None):
    """tensors: ordered dict name -> numpy array (F64/F32/I64/I32/U8); metadata: dict str->str."""
    header = {}
    chunks = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = _st_dtype(arr)
        raw = arr.astype(_DTYPES[dt], copy=False).tobytes(order="C")
        if offset % _DTYPES[dt].itemsize:
            # safetensors forbids holes between tensors, so we cannot pad: the caller must
            # order tensors so every one starts naturally aligned (readers then may cast in place).
            raise ValueError(f"{name}: offset {offset} not aligned for {dt}; reorder tensors")
        header[name] = {"dtype": dt, "shape": [int(s) for s in arr.shape],
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata must be str -> str")
        header["__metadata__"] = dict(metadata)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


def load(path):
    """Returns (dict name -> numpy array, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = _DTYPES[info["dtype"]]
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"]).copy()
    return out, meta
