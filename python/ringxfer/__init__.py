"""ringxfer: one-sided transfers between registered memory over TCP, driven by io_uring.

The MORI-IO-shaped surface (``IOEngine``, ``IOEngineConfig``, ``TcpBackendConfig``,
``BackendType``, ``MemoryLocationType``, ``StatusCode``, ``EngineDesc``, ``MemoryDesc``,
``TransferStatus``, ``set_log_level``) has MORI-IO's names, argument order and
defaults. Where MORI answers a mistake with a status, ringxfer raises (a size of 0, an
empty batch, an offset out of range, a transfer id already in flight: ``ValueError``;
``raise_errors=False`` returns a failed status instead), ``TransferStatus.WaitFor``
returns a bool, and ``create_backend`` twice raises. Clients written for MORI run
unchanged on the ``ringxfer-mori`` compatibility package (``python/mori_compat``), which
keeps MORI's semantics everywhere. On top of it: ``status.wait()`` raising
:class:`TransferError`, ``await status``, engines as context managers, registration of
buffer-protocol objects and DLPack producers, access rights, and ``engine.stats()``.
"""

import asyncio as _asyncio
import ctypes as _ctypes
import math as _math
import os as _os
import socket as _socket
import sys as _sys
import weakref as _weakref
from typing import Any as _Any
from typing import List as _List
from typing import Optional as _Optional
from typing import Sequence as _Sequence

from . import _core
from ._core import (
    BackendType,
    EngineDesc,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
    StatusCode,
    TcpBackendConfig,
    TransferStatus,
    set_gpu_stream,
    set_log_level,
)

__version__ = _core.__version__

__all__ = [
    "BackendType",
    "EngineDesc",
    "IOEngine",
    "IOEngineConfig",
    "IOEngineSession",
    "MemoryDesc",
    "MemoryLocationType",
    "NonContiguousError",
    "StatusCode",
    "TcpBackendConfig",
    "TransferError",
    "TransferStatus",
    "set_gpu_stream",
    "set_log_level",
    "wait_all",
]


class TransferError(RuntimeError):
    """A transfer failed. ``code`` is its :class:`StatusCode`, ``message`` the reason."""

    def __init__(self, code: StatusCode, message: str, transfer_id: int = 0):
        super().__init__(f"transfer {transfer_id} failed ({code.name}): {message}")
        self.code = code
        self.message = message
        self.transfer_id = transfer_id


class NonContiguousError(ValueError, RuntimeError):
    """A tensor or buffer that is not contiguous cannot be registered.

    A ValueError, and a RuntimeError as MORI-IO raises for the same mistake."""


# ---- Pythonic additions to TransferStatus ----------------------------------------


def _raise_if_failed(status: TransferStatus) -> TransferStatus:
    if status.Failed():
        raise TransferError(status.Code(), status.Message(), status.transfer_id)
    return status


def _status_wait(self: TransferStatus, timeout: _Optional[float] = None) -> TransferStatus:
    """Blocks until the transfer is final (the GIL is released meanwhile).

    Returns the status on success; raises :class:`TransferError` on failure and
    ``TimeoutError`` if ``timeout`` seconds pass first (``None`` or ``_math.inf``: no
    limit; a timeout too long for the clock is no limit either)."""
    if timeout is None or timeout == _math.inf:
        self.Wait()
    elif _math.isnan(timeout):
        raise ValueError("wait: timeout is NaN")
    elif not self.WaitFor(max(0, int(timeout * 1000))):
        raise TimeoutError(f"transfer {self.transfer_id} still in progress after {timeout} s")
    return _raise_if_failed(self)


class _LoopNotifier:
    """One eventfd per event loop: every awaited status writes to it when it finishes,
    from the engine's thread; the loop then resolves the futures of finished statuses.
    No thread per transfer."""

    def __init__(self, loop: _asyncio.AbstractEventLoop):
        self._loop = loop
        self._notifier = _core.Notifier()
        self._pending: dict = {}
        loop.add_reader(self._notifier.fileno(), self._on_readable)

    def watch(self, status: TransferStatus) -> "_asyncio.Future[TransferStatus]":
        fut = self._loop.create_future()
        entry = self._pending.setdefault(id(status), (status, []))
        entry[1].append(fut)
        status.add_notifier(self._notifier)  # fires at once if already final
        return fut

    def _on_readable(self) -> None:
        self._notifier.drain()
        for key, (status, futures) in list(self._pending.items()):
            if not status.done():
                continue
            del self._pending[key]
            for fut in futures:
                if fut.done():
                    continue
                if status.Failed():
                    fut.set_exception(
                        TransferError(status.Code(), status.Message(), status.transfer_id)
                    )
                else:
                    fut.set_result(status)


_loop_notifiers: "_weakref.WeakKeyDictionary[_asyncio.AbstractEventLoop, _LoopNotifier]" = (
    _weakref.WeakKeyDictionary()
)


def _status_await(self: TransferStatus):
    """``await status``: resolves to the status on success, raises TransferError."""
    if self.done():
        return _raise_if_failed(self)
    loop = _asyncio.get_running_loop()
    notifier = _loop_notifiers.get(loop)
    if notifier is None:
        notifier = _LoopNotifier(loop)
        _loop_notifiers[loop] = notifier
    return (yield from notifier.watch(self).__await__())


TransferStatus.wait = _status_wait
TransferStatus.__await__ = _status_await


def wait_all(statuses: _Sequence[TransferStatus], timeout_ms: int = -1) -> StatusCode:
    """Waits for all statuses: SUCCESS, the first failure's code, or IN_PROGRESS when
    ``timeout_ms`` (0: poll; negative or too long for the clock: no limit; positive: one
    shared deadline) ran out."""
    return _core.wait_all(list(statuses), int(timeout_ms))


# ---- Engines -------------------------------------------------------------------------

_TORCH_LOCATIONS = {"cpu": MemoryLocationType.CPU, "cuda": MemoryLocationType.GPU}
# DLPack device types: CPU, CUDA, CUDA pinned host, ROCm, ROCm pinned host.
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST, _DLPACK_ROCM, _DLPACK_ROCM_HOST = 1, 2, 3, 10, 11


def _torch_stream(md) -> int:
    """The stream a transfer of GPU memory ``md`` is ordered after: the one set with
    set_gpu_stream() on this thread, else, when torch is in use with CUDA or ROCm, torch's
    current stream on the memory's device (a kernel still writing a KV cache there is not
    raced), else none."""
    if md.loc != MemoryLocationType.GPU:
        return 0
    explicit = _core.gpu_stream()
    if explicit:
        return explicit
    torch = _sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return int(torch.cuda.current_stream(md.device_id).cuda_stream)
    except Exception:  # noqa: BLE001 - a torch without this device: no ordering
        pass
    return 0


def _ordered(md, call):
    """Runs ``call()`` with this thread's GPU stream set for local memory ``md``."""
    stream = _torch_stream(md)
    if not stream or stream == _core.gpu_stream():
        return call()
    _core.set_gpu_stream(stream)
    try:
        return call()
    finally:
        _core.set_gpu_stream(0)


def _dlpack_gpu(obj: _Any):
    """(address, bytes, device, capsule) of a C-contiguous DLPack producer whose memory is
    on a CUDA or ROCm device, else None. The capsule is kept (unconsumed, it frees the
    tensor's hold when collected) for as long as the memory stays registered."""
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is None:
        return None
    device_type, device_id = dev()
    if int(device_type) not in (_DLPACK_CUDA, _DLPACK_ROCM):
        return None

    class _DLDevice(_ctypes.Structure):
        _fields_ = [("device_type", _ctypes.c_int32), ("device_id", _ctypes.c_int32)]

    class _DLDataType(_ctypes.Structure):
        _fields_ = [("code", _ctypes.c_uint8), ("bits", _ctypes.c_uint8), ("lanes", _ctypes.c_uint16)]

    class _DLTensor(_ctypes.Structure):
        _fields_ = [
            ("data", _ctypes.c_void_p),
            ("device", _DLDevice),
            ("ndim", _ctypes.c_int32),
            ("dtype", _DLDataType),
            ("shape", _ctypes.POINTER(_ctypes.c_int64)),
            ("strides", _ctypes.POINTER(_ctypes.c_int64)),
            ("byte_offset", _ctypes.c_uint64),
        ]

    capsule = obj.__dlpack__()
    get = _ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = _ctypes.c_void_p
    get.argtypes = [_ctypes.py_object, _ctypes.c_char_p]
    # DLManagedTensor starts with its DLTensor.
    t = _DLTensor.from_address(get(capsule, b"dltensor"))
    shape = [t.shape[i] for i in range(t.ndim)]
    if t.strides:
        expect = 1
        for i in reversed(range(t.ndim)):
            if shape[i] != 1 and t.strides[i] != expect:
                raise NonContiguousError("register_memory: the DLPack tensor is not contiguous")
            expect *= shape[i]
    count = 1
    for n in shape:
        count *= n
    nbytes = count * ((t.dtype.bits * t.dtype.lanes + 7) // 8)
    return (t.data or 0) + t.byte_offset, nbytes, int(t.device.device_id), capsule


def _access(remote_read: bool, remote_write: bool, allowed_engines: _Optional[_Sequence[str]]) -> dict:
    """register_memory's access keywords, checked, as _core takes them."""
    if isinstance(allowed_engines, (str, bytes)):
        raise TypeError("allowed_engines must be a list of engine keys, not a single string")
    engines = None if allowed_engines is None else [str(k) for k in allowed_engines]
    return {
        "remote_read": bool(remote_read),
        "remote_write": bool(remote_write),
        "allowed_engines": engines,
    }


def _capsule_address(capsule: _Any) -> int:
    get = _ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = _ctypes.c_void_p
    get.argtypes = [_ctypes.py_object, _ctypes.c_char_p]
    return int(get(capsule, None))


class IOEngineSession:
    """A local/remote memory pair bound once (MORI-IO's session)."""

    def __init__(self, session: "_core.Session"):
        self._sess = session

    def allocate_transfer_uid(self) -> int:
        """A transfer id not used before by this engine."""
        return self._sess.allocate_transfer_uid()

    def read(
        self, local_offset: int, remote_offset: int, size: int, uid: int, *, raise_errors: bool = True
    ) -> TransferStatus:
        """remote -> local (arguments as for IOEngine.read)."""
        return self._sess.read(local_offset, remote_offset, size, uid, raise_errors=raise_errors)

    def write(
        self, local_offset: int, remote_offset: int, size: int, uid: int, *, raise_errors: bool = True
    ) -> TransferStatus:
        """local -> remote."""
        return self._sess.write(local_offset, remote_offset, size, uid, raise_errors=raise_errors)

    def batch_read(
        self,
        local_offsets: _Sequence[int],
        remote_offsets: _Sequence[int],
        sizes: _Sequence[int],
        uid: int,
        *,
        raise_errors: bool = True,
    ) -> TransferStatus:
        """Many remote -> local ranges as one transfer with one status."""
        return self._sess.batch_read(local_offsets, remote_offsets, sizes, uid, raise_errors=raise_errors)

    def batch_write(
        self,
        local_offsets: _Sequence[int],
        remote_offsets: _Sequence[int],
        sizes: _Sequence[int],
        uid: int,
        *,
        raise_errors: bool = True,
    ) -> TransferStatus:
        """Many local -> remote ranges as one transfer with one status."""
        return self._sess.batch_write(local_offsets, remote_offsets, sizes, uid, raise_errors=raise_errors)

    def alive(self) -> bool:
        """False once the local memory or the remote engine is deregistered, or the
        engine is closed (then every other call raises RuntimeError)."""
        return self._sess.alive()


class IOEngine:
    """An engine: MORI-IO's ``IOEngine`` on ringxfer.

    ``IOEngine(key, config)`` names the engine; ``create_backend(BackendType.TCP)`` starts
    it (ring threads, listener). Usable as a context manager; ``close()`` stops it for
    good. The memory of registered Python objects is held by the C++ core (a buffer
    export, or a reference), and released only after the engine has stopped."""

    def __init__(self, key: str, config: _Optional[IOEngineConfig] = None):
        if not isinstance(key, str) or not key:
            raise ValueError("IOEngine: key must be a non-empty string")
        self._key = key
        # A copy (as MORI's engine keeps one): the caller may reuse and change its object.
        given = config if config is not None else IOEngineConfig()
        self._config = IOEngineConfig(given.host, given.port)
        self._engine: _Optional[_core.Engine] = None
        self._closed = False

    # -- backend --
    def create_backend(self, type: BackendType, config: _Optional[TcpBackendConfig] = None) -> None:
        """Starts the TCP backend (the only one ringxfer has). ``config=None`` takes the
        defaults. Afterwards a configured port of 0 has become the bound port."""
        if type != BackendType.TCP:
            raise NotImplementedError(f"ringxfer has only BackendType.TCP, not {type}")
        if self._closed:
            raise RuntimeError(f"engine {self._key} is closed: create a new IOEngine")
        if self._engine is not None:
            raise RuntimeError(f"engine {self._key} already has a TCP backend")
        tcp = config if config is not None else TcpBackendConfig()
        self._engine = _core.Engine(self._key, self._config, tcp)
        self._config.port = self._engine.desc().port

    def remove_backend(self, type: BackendType) -> None:
        """Stops the backend: pending transfers fail, connections close."""
        if type != BackendType.TCP:
            raise NotImplementedError(f"ringxfer has only BackendType.TCP, not {type}")
        self.close()

    def close(self) -> None:
        """Stops the engine for good (idempotent): pending transfers fail with
        ERR_CONNECTION_LOST, connections and the listener close, ring threads are joined
        (the GIL is released meanwhile); only then is registered memory released. From
        then on every call of the engine and of its sessions raises RuntimeError."""
        self._closed = True
        if self._engine is not None:
            self._engine.close()  # sessions may still reference it: stop it explicitly
        self._engine = None

    def __enter__(self) -> "IOEngine":
        return self

    def __exit__(self, *exc: _Any) -> None:
        self.close()

    def _e(self) -> "_core.Engine":
        if self._closed:
            raise RuntimeError(f"engine {self._key} is closed")
        if self._engine is None:
            raise RuntimeError(
                f"engine {self._key} has no backend: call create_backend(BackendType.TCP) first"
            )
        return self._engine

    # -- descriptors and peers --
    def get_engine_desc(self) -> EngineDesc:
        """This engine's descriptor (pack() it and send it to peers)."""
        if self._engine is not None:
            return self._engine.desc()
        return EngineDesc(
            self._key,
            self._config.host,
            self._config.port,
            _socket.gethostname(),
            _socket.gethostname(),
            _os.getpid(),
        )

    def register_remote_engine(self, engine_desc: EngineDesc) -> None:
        """Makes a peer known (its host name is resolved now)."""
        self._e().register_remote_engine(engine_desc)

    def deregister_remote_engine(self, engine_desc: EngineDesc) -> None:
        """Forgets a peer; its pending transfers fail."""
        self._e().deregister_remote_engine(engine_desc)

    # -- memory --
    def register_memory(
        self,
        ptr: _Any,
        size: _Optional[int] = None,
        device_id: int = -1,
        mem_loc: MemoryLocationType = MemoryLocationType.CPU,
        *,
        remote_read: bool = True,
        remote_write: bool = True,
        allowed_engines: _Optional[_Sequence[str]] = None,
    ) -> MemoryDesc:
        """Registers memory: ``ptr`` is an address (int), a PyCapsule (as MORI-IO passes),
        a buffer-protocol object (numpy array, bytearray, memoryview) or a DLPack producer.
        A buffer-protocol object stays exported (a bytearray cannot be resized) and other
        objects are kept alive until deregister_memory() or close().

        ringxfer's access rights (keywords only; the defaults are MORI-IO's: everything,
        every engine): peers may read the region only with ``remote_read``, write it only
        with ``remote_write``, and only the engines whose keys are in ``allowed_engines``
        may use it (None or empty: every engine). A refused transfer fails with
        ERR_ACCESS_DENIED and counts in ``stats()["access_denied"]`` here. The region gets
        a new random key (``MemoryDesc.rkey``): its descriptor is what grants access."""
        access = _access(remote_read, remote_write, allowed_engines)
        if isinstance(ptr, int) or type(ptr).__name__ == "PyCapsule":
            if size is None:
                raise ValueError("register_memory: size is required with an address")
            address = ptr if isinstance(ptr, int) else _capsule_address(ptr)
            return self._e().register_memory(address, int(size), int(device_id), mem_loc, **access)
        engine = self._e()
        gpu = _dlpack_gpu(ptr)
        if gpu is not None:
            # GPU memory (DLPack device types 2, CUDA, and 10, ROCm): staged by the engine.
            address, nbytes, dev, capsule = gpu
            size = nbytes if size is None else int(size)
            if size > nbytes:
                raise ValueError(f"register_memory: size {size} is larger than the tensor ({nbytes})")
            return engine.register_memory(
                address, size, dev, MemoryLocationType.GPU, (ptr, capsule), **access
            )
        try:
            whole = -1 if size is None else int(size)
            return engine.register_buffer(ptr, whole, int(device_id), mem_loc, **access)
        except ValueError as e:
            if "not a C-contiguous buffer" not in str(e):
                raise
            if not hasattr(ptr, "__dlpack__"):
                raise NonContiguousError(str(e)) from None
        import numpy  # DLPack producers without the buffer protocol (CPU only)

        arr = numpy.from_dlpack(ptr)
        if not arr.flags.c_contiguous:
            raise NonContiguousError("register_memory: the DLPack tensor is not contiguous")
        size = arr.nbytes if size is None else int(size)
        if size > arr.nbytes:
            raise ValueError(f"register_memory: size {size} is larger than the buffer ({arr.nbytes})")
        return engine.register_memory(arr.ctypes.data, size, int(device_id), mem_loc, (ptr, arr), **access)

    def register_buffer(
        self,
        obj: _Any,
        *,
        remote_read: bool = True,
        remote_write: bool = True,
        allowed_engines: _Optional[_Sequence[str]] = None,
    ) -> MemoryDesc:
        """Registers a whole buffer-protocol object or DLPack producer (access keywords as
        for register_memory)."""
        return self.register_memory(
            obj, remote_read=remote_read, remote_write=remote_write, allowed_engines=allowed_engines
        )

    def register_torch_tensor(
        self,
        tensor: _Any,
        *,
        remote_read: bool = True,
        remote_write: bool = True,
        allowed_engines: _Optional[_Sequence[str]] = None,
    ) -> MemoryDesc:
        """Registers a contiguous torch tensor: CPU memory, or GPU memory on its device
        (access keywords as for register_memory)."""
        access = _access(remote_read, remote_write, allowed_engines)
        if not tensor.is_contiguous():
            raise NonContiguousError("input tensor must be contiguous")
        loc = _TORCH_LOCATIONS.get(tensor.device.type)
        if loc is None:
            raise ValueError(f"tensors on {tensor.device.type} devices cannot be registered")
        device_id = tensor.device.index if tensor.device.index is not None else -1
        size = tensor.nelement() * tensor.element_size()
        return self._e().register_memory(int(tensor.data_ptr()), size, device_id, loc, tensor, **access)

    def deregister_memory(self, mem_desc: MemoryDesc) -> None:
        """Forgets a region (no transfer may use it any more) and releases the object
        registered with it."""
        self._e().deregister_memory(mem_desc)

    # -- transfers --
    def allocate_transfer_uid(self) -> int:
        """A transfer id not used before by this engine."""
        return self._e().allocate_transfer_uid()

    def read(
        self, local_md, local_offset, remote_md, remote_offset, size, uid, *, raise_errors: bool = True
    ) -> TransferStatus:
        """remote -> local: ``size`` bytes from remote_md at remote_offset to local_md at
        local_offset. A transfer that cannot start (a size of 0, an offset out of range,
        an unknown peer, ``uid`` already in flight to that peer) raises ValueError, or
        with ``raise_errors=False`` returns a status that failed with the reason (nothing
        is sent). The outcome of a started transfer is on the status."""
        e = self._e()
        return _ordered(
            local_md,
            lambda: e.read(local_md, local_offset, remote_md, remote_offset, size, uid, raise_errors=raise_errors),
        )

    def write(
        self, local_md, local_offset, remote_md, remote_offset, size, uid, *, raise_errors: bool = True
    ) -> TransferStatus:
        """local -> remote (arguments as for read). Success means the bytes are in the
        remote engine's memory."""
        e = self._e()
        return _ordered(
            local_md,
            lambda: e.write(local_md, local_offset, remote_md, remote_offset, size, uid, raise_errors=raise_errors),
        )

    def _batch(self, write, local_mds, local_offsets, remote_mds, remote_offsets, sizes, uids, raise_errors):
        n = len(local_mds)
        if not (len(local_offsets) == len(remote_mds) == len(remote_offsets) == len(sizes) == len(uids) == n):
            raise ValueError(
                "batch: local_mds, local_offsets, remote_mds, remote_offsets, sizes and uids "
                "must have one entry per memory pair"
            )
        e = self._e()
        return [
            _ordered(
                local_mds[i],
                lambda i=i: e.batch(
                    write,
                    local_mds[i],
                    local_offsets[i],
                    remote_mds[i],
                    remote_offsets[i],
                    sizes[i],
                    uids[i],
                    raise_errors=raise_errors,
                ),
            )
            for i in range(n)
        ]

    def batch_read(
        self, local_mds, local_offsets, remote_mds, remote_offsets, sizes, uids, *, raise_errors: bool = True
    ) -> _List[TransferStatus]:
        """One batched read per memory pair: lists with one inner list of offsets and sizes
        per pair; one status per pair. A batch has no entry cap (one larger than a wire
        request is sent as several, still one transfer)."""
        return self._batch(False, local_mds, local_offsets, remote_mds, remote_offsets, sizes, uids, raise_errors)

    def batch_write(
        self, local_mds, local_offsets, remote_mds, remote_offsets, sizes, uids, *, raise_errors: bool = True
    ) -> _List[TransferStatus]:
        """One batched write per memory pair (see batch_read)."""
        return self._batch(True, local_mds, local_offsets, remote_mds, remote_offsets, sizes, uids, raise_errors)

    def create_session(
        self, local_md: MemoryDesc, remote_md: MemoryDesc, *, raise_errors: bool = False
    ) -> _Optional[IOEngineSession]:
        """Binds a local/remote pair once; None when the pair cannot be used (with
        ``raise_errors=True``: ValueError or RuntimeError saying why). Raises
        RuntimeError when the engine is closed."""
        engine = self._e()
        try:
            return IOEngineSession(engine.create_session(local_md, remote_md))
        except (ValueError, RuntimeError):
            if raise_errors:
                raise
            return None

    def pop_inbound_transfer_status(self, remote_key: str, uid: int) -> _Optional[TransferStatus]:
        """Target side: the final status of transfer ``uid`` made by engine ``remote_key``
        to or from this engine's memory, once; None if not finished or already popped."""
        return self._e().pop_inbound_transfer_status(remote_key, uid)

    def wait_all(self, statuses: _Sequence[TransferStatus], timeout_ms: int = -1) -> StatusCode:
        """See :func:`ringxfer.wait_all`."""
        return wait_all(statuses, timeout_ms)

    def stats(self) -> dict:
        """The engine's counters (bytes, transfers, SQEs, io_uring_enter calls, ...)."""
        return self._e().stats()
