"""The fixed 64-byte header of fastrag's index files (cpp/src/io.cpp), re-implemented so that
the fuzzers can re-seal a mutated file: with its size and checksum set right, a mutation gets
past the checksum into the structural checks of the loaders."""

from __future__ import annotations

import struct
import zlib

MAGIC = b"FASTRAG\x01"
HEADER = 64
_M64 = (1 << 64) - 1
_P1 = 0x9E3779B97F4A7C15
_P2 = 0xC2B2AE3D27D4EB4F
_LANES = (0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def checksum(data: bytes) -> int:
    """The core's 64-bit checksum (class Checksum in io.cpp) of `data`."""
    lanes = list(_LANES)
    n_blocks = len(data) // 32
    words = struct.unpack_from(f"<{4 * n_blocks}Q", data) if n_blocks else ()
    for b in range(n_blocks):
        for i in range(4):
            lanes[i] = (_rotl((lanes[i] + words[4 * b + i] * _P2) & _M64, 31) * _P1) & _M64
    h = (_rotl(lanes[0], 1) + _rotl(lanes[1], 7) + _rotl(lanes[2], 12) + _rotl(lanes[3], 18)
         + len(data)) & _M64
    for c in data[32 * n_blocks :]:
        h = (_rotl(h ^ ((c * _P1) & _M64), 11) * _P2) & _M64
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P1) & _M64
    h ^= h >> 32
    return h


def reseal(data: bytes) -> bytes:
    """`data` with the header's file size and checksum made to match its bytes (when it is at
    least a header long and starts with the magic bytes; otherwise unchanged)."""
    if data.startswith(b"FRDS") and len(data) >= 40:  # a collection's document file
        return reseal_docs(data)
    if len(data) < HEADER or not data.startswith(MAGIC):
        return data
    out = bytearray(data)
    struct.pack_into("<Q", out, 16, len(out))  # file_size
    struct.pack_into("<Q", out, 32, 0)  # checksum, read as zero
    struct.pack_into("<Q", out, 32, checksum(bytes(out)))
    return bytes(out)


def reseal_docs(data: bytes) -> bytes:
    """A document file (``docs.<gen>.frds``) with its header's crc made to match its id and
    record sections, as far as the counts in the header reach."""
    n, n_id = struct.unpack_from("<QQ", data, 8)
    meta = 8 * (n + 1) + n_id + 8 * (n + 1) + 12 * n
    if n > len(data) or 40 + meta > len(data):
        return data
    out = bytearray(data)
    struct.pack_into("<I", out, 32, zlib.crc32(data[40 : 40 + meta], zlib.crc32(data[:32])))
    return bytes(out)
