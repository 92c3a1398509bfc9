"""A SHA-256 whose running state can be saved between requests (hashlib's objects cannot be).

It calls the libcrypto that hashlib itself uses (OpenSSL's SHA256_Init/Update/Final on the public
SHA256_CTX struct, through ctypes), so it hashes at hashlib's speed (SHA-NI where the CPU has it)
and releases the GIL while it does. The saved state is the plain SHA-256 midstate, not the
struct's bytes: the eight chaining words, the length hashed and the bytes of the unfinished
block, so it means the same on any machine and to any SHA-256 implementation.

`AVAILABLE` is False when libcrypto cannot be loaded or the self-test at import (against
hashlib, across a save and restore) fails; callers then hash from the start instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import struct

log = logging.getLogger(__name__)

BLOCK_BYTES = 64
_HEAD = struct.Struct(">8IQ")  # chaining words, then the number of bytes hashed


class _Sha256Ctx(ctypes.Structure):
    """OpenSSL's SHA256_CTX (<openssl/sha.h>), plus room to spare should a build's be larger."""

    _fields_ = [("h", ctypes.c_uint32 * 8), ("Nl", ctypes.c_uint32), ("Nh", ctypes.c_uint32),
                ("data", ctypes.c_uint8 * BLOCK_BYTES), ("num", ctypes.c_uint32),
                ("md_len", ctypes.c_uint32), ("_spare", ctypes.c_uint8 * 128)]


def _load_libcrypto():
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if not name:
            continue
        try:
            library = ctypes.CDLL(name)  # CDLL, not PyDLL: calls release the GIL
        except OSError:
            continue
        context = ctypes.POINTER(_Sha256Ctx)
        library.SHA256_Init.argtypes = [context]
        library.SHA256_Update.argtypes = [context, ctypes.c_char_p, ctypes.c_size_t]
        library.SHA256_Final.argtypes = [ctypes.c_char_p, context]
        for function in (library.SHA256_Init, library.SHA256_Update, library.SHA256_Final):
            function.restype = ctypes.c_int
        return library
    raise OSError("no libcrypto with SHA256_Init")


class ResumableSha256:
    """hashlib.sha256's update/hexdigest/copy, plus `state()` and `from_state()`."""

    __slots__ = ("_ctx",)

    def __init__(self) -> None:
        self._ctx = _Sha256Ctx()
        _libcrypto.SHA256_Init(self._ctx)

    @property
    def length_bytes(self) -> int:
        return (self._ctx.Nh << 29) | (self._ctx.Nl >> 3)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash `data` in: bytes and writable buffers (a bytearray, a local store's mapped
        chunk) in place; a read-only buffer other than bytes is copied first, since ctypes can
        take the address of a writable buffer only."""
        if isinstance(data, bytes):
            _libcrypto.SHA256_Update(self._ctx, data, len(data))
            return
        view = memoryview(data)
        if view.readonly or not view.c_contiguous or not view.nbytes:
            self.update(view.tobytes())
            return
        in_place = (ctypes.c_char * view.nbytes).from_buffer(view.cast("B"))
        _libcrypto.SHA256_Update(self._ctx, in_place, view.nbytes)

    def copy(self) -> ResumableSha256:
        other = ResumableSha256.__new__(ResumableSha256)
        other._ctx = _Sha256Ctx.from_buffer_copy(self._ctx)
        return other

    def digest(self) -> bytes:
        context = _Sha256Ctx.from_buffer_copy(self._ctx)  # Final would end this one
        out = ctypes.create_string_buffer(32)
        _libcrypto.SHA256_Final(out, context)
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def state(self) -> bytes:
        """40 bytes (chaining words, length) then the unfinished block's length % 64 bytes."""
        length = self.length_bytes
        return _HEAD.pack(*self._ctx.h, length) + bytes(self._ctx.data[:length % BLOCK_BYTES])

    @classmethod
    def from_state(cls, state: bytes) -> ResumableSha256:
        """The hash `state()` saved; ValueError if `state` cannot be one."""
        if len(state) < _HEAD.size:
            raise ValueError("a SHA-256 state has at least 40 bytes")
        *words, length = _HEAD.unpack_from(state)
        tail = state[_HEAD.size:]
        if len(tail) != length % BLOCK_BYTES or length >= 1 << 61:
            raise ValueError("the SHA-256 state's length does not match its unfinished block")
        restored = cls()
        context = restored._ctx
        context.h[:] = words
        context.Nl, context.Nh = (length << 3) & 0xFFFFFFFF, length >> 29
        context.data[:len(tail)] = tail
        context.num = len(tail)
        return restored


def _self_test() -> None:
    data = bytes(range(256)) * 41 + b"satchel"  # 10,503 bytes: full blocks and a tail
    for cut in (0, 1, 63, 64, 65, 1000, len(data)):
        first = ResumableSha256()
        first.update(data[:cut])
        second = ResumableSha256.from_state(first.state())
        second.update(data[cut:])
        if second.hexdigest() != hashlib.sha256(data).hexdigest() or \
                second.length_bytes != len(data) or first.length_bytes != cut:
            raise RuntimeError(f"libcrypto's SHA-256 disagrees with hashlib (cut at {cut})")


try:
    _libcrypto = _load_libcrypto()
    _self_test()
    AVAILABLE = True
except (OSError, AttributeError, RuntimeError, ValueError) as exc:
    log.warning("resumable SHA-256 unavailable: uploads hash whole files at completion (%s)", exc)
    AVAILABLE = False
