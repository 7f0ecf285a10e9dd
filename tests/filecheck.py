"""The checksum of fastrag's files (cpp/src/io.cpp), re-implemented for tests that damage a
file and re-seal it, so that only the structural checks on load can catch the damage."""

from __future__ import annotations

import numpy as np

M64 = (1 << 64) - 1  # 64-bit wrap-around
_P1, _P2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def file_checksum(body: bytes) -> int:
    """The checksum of io.cpp (Checksum) over `body`."""
    lanes = [0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89]
    full = len(body) - len(body) % 32
    words = np.frombuffer(body[:full], dtype="<u8").tolist()
    for j in range(0, len(words), 4):
        for i in range(4):
            lanes[i] = (_rotl((lanes[i] + words[j + i] * _P2) & M64, 31) * _P1) & M64
    h = sum(_rotl(lane, r) for lane, r in zip(lanes, (1, 7, 12, 18), strict=True))
    h = (h + len(body)) & M64
    for byte in body[full:]:
        h = (_rotl(h ^ ((byte * _P1) & M64), 11) * _P2) & M64
    h ^= h >> 33
    h = (h * _P2) & M64
    h ^= h >> 29
    h = (h * _P1) & M64
    return h ^ (h >> 32)


def reseal(data: bytearray) -> bytes:
    """Rewrites the header checksum so that only the structural checks can catch damage."""
    data[32:40] = bytes(8)  # the checksum covers the header with this field zeroed
    data[32:40] = file_checksum(bytes(data)).to_bytes(8, "little")
    return bytes(data)


def section_table(data: bytes) -> dict[int, tuple[int, int, int, int]]:
    """Section id -> (table entry offset, element size, data offset, bytes)."""
    n = int.from_bytes(data[24:32], "little")
    out = {}
    for i in range(n):
        e = 64 + 24 * i
        sid, size = (int.from_bytes(data[e + o : e + o + 4], "little") for o in (0, 4))
        off, nbytes = (int.from_bytes(data[e + o : e + o + 8], "little") for o in (8, 16))
        out[sid] = (e, size, off, nbytes)
    return out


def damage(data: bytes, table: dict, rng: np.random.Generator, case: int) -> bytearray:
    """A copy of `data` with one random element of one section damaged: replaced by random
    bytes for odd `case`, one bit flipped for even ones."""
    sid = int(rng.choice([s for s, (_, _, _, n) in table.items() if n > 0]))
    _, size, off, nbytes = table[sid]
    pos = off + size * int(rng.integers(nbytes // size))
    bad = bytearray(data)
    if case % 2:
        bad[pos : pos + size] = rng.bytes(size)
    else:
        bad[pos + int(rng.integers(size))] ^= 1 << int(rng.integers(8))
    return bad
