"""MORI-IO's C++ engine (``mori.cpp.IOEngine``, ``IOEngineSession``, ``MemoryDesc``) on a
ringxfer engine.

The ringxfer engine (ring threads, listener) starts with the first create_backend();
memory and remote engines registered before are registered with it then, and a
transfer without a backend fails with ERR_BAD_STATE, as in MORI. Every transfer call
answers through the TransferStatus it is given: a size of 0 and an empty batch succeed
at once, 0-size batch entries are skipped, argument problems are ERR_INVALID_ARGS, a
transfer id already in flight to that peer is ERR_BAD_STATE; nothing raises for them."""

import ctypes
import itertools
import logging
import os
import socket
import threading

import ringxfer as _rx

from ._config import IOEngineConfig, tcp_config_for
from ._enums import BackendType, MemoryLocationType, StatusCode
from ._status import TransferStatus, wait_all

EngineDesc = _rx.EngineDesc
_log = logging.getLogger("mori.io")
_NO_BACKEND = "No available backend found, create backend first"
_IPC_HANDLE = bytes(64)  # MORI's GPU IPC handle field; ringxfer has no GPU IPC


def _node_id(hostname: str) -> str:
    """MORI's node id: MORI_NODE_ID, else the kernel's boot id, else the host name."""
    env = os.environ.get("MORI_NODE_ID")
    if env:
        return env
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        if boot:
            return boot
    except OSError:
        pass
    return hostname


def _address(data) -> int:
    """The address in ``data``: an int or a PyCapsule (as MORI's engine.py passes)."""
    if isinstance(data, int):
        return data
    if type(data).__name__ == "PyCapsule":
        get = ctypes.pythonapi.PyCapsule_GetPointer
        get.restype = ctypes.c_void_p
        get.argtypes = [ctypes.py_object, ctypes.c_char_p]
        return int(get(data, None) or 0)
    raise TypeError(f"RegisterMemory: expected a PyCapsule or an int address, not {type(data).__name__}")


class MemoryDesc:
    """A registered memory region as peers see it: MORI's fields, ringxfer's descriptor
    underneath (``pack()`` gives ringxfer's bytes: only ringxfer engines read them).
    Memory registered before its engine has a backend is registered with the backend
    when it is created; until then its descriptor cannot be packed."""

    __slots__ = ("_rx", "_local", "__weakref__")

    def __init__(self):
        self._rx = _rx.MemoryDesc()
        self._local = None  # (engine key, address, size, device, loc) of local memory

    @classmethod
    def _wrap(cls, rx_desc, local=None):
        d = cls.__new__(cls)
        d._rx = rx_desc
        d._local = local
        return d

    def _field(self, name, local_index):
        if self._rx is None:
            return self._local[local_index]
        return getattr(self._rx, name)

    @property
    def engine_key(self) -> str:
        return self._field("engine_key", 0)

    @property
    def id(self) -> int:
        return 0 if self._rx is None else self._rx.id

    @property
    def device_id(self) -> int:
        return self._field("device_id", 3)

    @property
    def device_bus_id(self) -> str:
        return ""

    @property
    def numa_node(self) -> int:
        return -1

    @property
    def data(self) -> int:
        return self._field("data", 1)

    @property
    def size(self) -> int:
        return self._field("size", 2)

    @property
    def loc(self) -> MemoryLocationType:
        return self._field("loc", 4)

    @property
    def ipc_handle(self) -> bytes:
        return _IPC_HANDLE

    def pack(self) -> bytes:
        if self._rx is None:
            raise RuntimeError(
                "MemoryDesc.pack: this memory is registered with an engine that has no backend yet "
                "(create_backend first: the descriptor then carries the region's key)"
            )
        return self._rx.pack()

    @staticmethod
    def unpack(packed: bytes) -> "MemoryDesc":
        return MemoryDesc._wrap(_rx.MemoryDesc.unpack(packed))

    def __eq__(self, other) -> bool:
        if not isinstance(other, MemoryDesc):
            return NotImplemented
        if self._rx is None or other._rx is None:
            return self is other
        return self._rx == other._rx

    __hash__ = None  # as MORI's (it binds __eq__ without __hash__)

    def __repr__(self) -> str:
        return f"MemoryDesc(engine_key={self.engine_key!r}, id={self.id}, size={self.size}, loc={self.loc.name})"


def _closed_or_raise(error: RuntimeError, status) -> None:
    """A ringxfer engine closed under the call (remove_backend on another thread, a
    session of a removed backend) is ERR_BAD_STATE, as a transfer without a backend;
    anything else (a wrong argument type) is raised."""
    if " is closed" not in str(error):
        raise error
    status.Update(StatusCode.ERR_BAD_STATE, f"{_NO_BACKEND} ({error})")


def _nonzero(offsets_a, offsets_b, sizes):
    """The batch without its 0-size entries (MORI skips them)."""
    keep = [i for i, n in enumerate(sizes) if n != 0]
    return [offsets_a[i] for i in keep], [offsets_b[i] for i in keep], [sizes[i] for i in keep]


def _start_batch(status, start, local_offsets, remote_offsets, sizes):
    """MORI's batch checks, then ``start(lo, ro, sizes)`` (a ringxfer status)."""
    try:
        n = len(sizes)
        same = len(local_offsets) == n and len(remote_offsets) == n
    except TypeError:
        status.Update(StatusCode.ERR_INVALID_ARGS, "batch offsets and sizes must be sequences")
        return
    if not same:
        status.Update(StatusCode.ERR_INVALID_ARGS, "batch vector size mismatch")
        return
    if n and 0 in sizes:
        local_offsets, remote_offsets, sizes = _nonzero(local_offsets, remote_offsets, sizes)
        n = len(sizes)
    if n == 0:
        status.SetCode(StatusCode.SUCCESS)
        return
    status._attach(start(local_offsets, remote_offsets, sizes))


class IOEngineSession:
    """A local/remote pair bound once: MORI's ``mori.cpp.IOEngineSession``."""

    __slots__ = ("_engine", "_sess")

    def __init__(self, *_a, **_k):
        raise TypeError("mori.cpp.IOEngineSession: No constructor defined!")

    @classmethod
    def _make(cls, engine, sess):
        s = cls.__new__(cls)
        s._engine = engine
        s._sess = sess
        return s

    def AllocateTransferUniqueId(self) -> int:
        return self._engine.AllocateTransferUniqueId()

    def _single(self, write, local_offset, remote_offset, size, status, uid):
        if size == 0:
            status.SetCode(StatusCode.SUCCESS)
            return
        fn = self._sess.write if write else self._sess.read
        try:
            status._attach(fn(local_offset, remote_offset, size, uid, raise_errors=False))
        except RuntimeError as e:
            _closed_or_raise(e, status)

    def Read(self, local_offset, remote_offset, size, status, uid) -> None:
        self._single(False, local_offset, remote_offset, size, status, uid)

    def Write(self, local_offset, remote_offset, size, status, uid) -> None:
        self._single(True, local_offset, remote_offset, size, status, uid)

    def _batch(self, write, local_offsets, remote_offsets, sizes, status, uid):
        fn = self._sess.batch_write if write else self._sess.batch_read
        try:
            _start_batch(status, lambda lo, ro, sz: fn(lo, ro, sz, uid, raise_errors=False),
                         local_offsets, remote_offsets, sizes)
        except RuntimeError as e:
            _closed_or_raise(e, status)

    def BatchRead(self, local_offsets, remote_offsets, sizes, status, uid) -> None:
        self._batch(False, local_offsets, remote_offsets, sizes, status, uid)

    def BatchWrite(self, local_offsets, remote_offsets, sizes, status, uid) -> None:
        self._batch(True, local_offsets, remote_offsets, sizes, status, uid)

    def Alive(self) -> bool:
        try:
            return bool(self._sess.alive())
        except RuntimeError:
            return False


def _register_remote(rx, desc) -> None:
    """Makes a remote engine known to ringxfer. A descriptor without an address (taken
    before its engine had a backend) is kept, as MORI keeps it, and said once: transfers
    to it fail until it is registered again with its address."""
    try:
        rx.register_remote_engine(desc)
    except ValueError as e:
        _log.warning("ringxfer-mori: remote engine %s cannot be reached yet: %s", desc.key, e)


class IOEngine:
    """MORI's ``mori.cpp.IOEngine`` on ringxfer. Thread-safe: transfers, status waits
    and registrations may come from any thread."""

    def __init__(self, key: str, config: IOEngineConfig):
        if not isinstance(key, str):
            raise TypeError(f"IOEngine: key must be a str, not {type(key).__name__}")
        if not isinstance(config, IOEngineConfig):
            raise TypeError(f"IOEngine: config must be an IOEngineConfig, not {type(config).__name__}")
        self._key = key
        self._host, self._port = config.host, config.port  # a copy, as MORI keeps one
        self._hostname = socket.gethostname()
        self._node_id = _node_id(self._hostname)
        self._lock = threading.RLock()
        self._rx = None  # the ringxfer engine, once a backend exists
        self._backends = {}  # BackendType -> the config it was created with
        self._notify = True  # whether pop_inbound_transfer_status answers
        self._memory = {}  # id(MemoryDesc) -> MemoryDesc: this engine's registered memory
        self._owners = {}  # id(MemoryDesc) -> the object owning that memory (kept alive)
        self._remotes = {}  # key -> EngineDesc of registered remote engines
        self._uids = itertools.count()  # MORI's uids: 0, 1, 2, ... per engine

    # -- descriptors --
    def GetEngineDesc(self) -> EngineDesc:
        rx = self._rx
        if rx is None:
            return EngineDesc(self._key, self._host, self._port, self._hostname, self._node_id, os.getpid())
        d = rx.get_engine_desc()
        return EngineDesc(d.key, d.host, d.port, d.hostname, self._node_id, d.pid)

    # -- backends --
    def CreateBackend(self, type: BackendType, config) -> None:
        with self._lock:
            if type in self._backends:
                _log.warning("Backend type %s already exists, skip duplicate creation", type.name)
                return
            tcp, notify = tcp_config_for(type, config)
            if self._rx is None:
                rx = _rx.IOEngine(self._key, IOEngineConfig(self._host, self._port))
                rx.create_backend(BackendType.TCP, tcp)
                for desc in self._remotes.values():
                    _register_remote(rx, desc)
                for md in self._memory.values():
                    key, address, size, device, loc = md._local
                    try:
                        md._rx = rx.register_memory(address, size, device, loc)
                    except (ValueError, RuntimeError) as e:  # e.g. GPU memory without a runtime
                        _log.warning("ringxfer-mori: memory registered before the backend could not join it "
                                     "(transfers with it fail): %s", e)
                self._rx = rx
                self._notify = notify
                # As MORI writes the bound port into its config: a backend created again
                # after remove_backend listens on the same port.
                self._port = rx.get_engine_desc().port
            else:
                _log.warning(
                    "ringxfer-mori: backend %s shares the engine's TCP backend (created for %s); its config "
                    "is not used",
                    type.name,
                    ", ".join(t.name for t in self._backends),
                )
            self._backends[type] = config

    def RemoveBackend(self, type: BackendType) -> None:
        with self._lock:
            self._backends.pop(type, None)  # an unknown type: nothing to do (as MORI)
            if self._backends or self._rx is None:
                return
            rx, self._rx = self._rx, None
            for md in self._memory.values():
                md._rx = None
        rx.close()  # pending transfers fail; registered memory waits for the next backend

    # -- remote engines --
    def RegisterRemoteEngine(self, desc: EngineDesc) -> None:
        with self._lock:
            self._remotes[desc.key] = desc
            if self._rx is not None:
                _register_remote(self._rx, desc)

    def DeregisterRemoteEngine(self, desc: EngineDesc) -> None:
        with self._lock:
            if self._remotes.pop(desc.key, None) is None:
                return  # unknown: nothing to do (as MORI)
            if self._rx is not None:
                try:
                    self._rx.deregister_remote_engine(desc)
                except ValueError:
                    pass  # ringxfer never accepted it (no address): nothing to undo

    # -- memory --
    def RegisterMemory(self, data, size: int, device: int, loc: MemoryLocationType) -> MemoryDesc:
        address = _address(data)
        size, device = int(size), int(device)
        loc = MemoryLocationType(loc) if not isinstance(loc, MemoryLocationType) else loc
        if address == 0 or size <= 0:
            # ringxfer refuses these with or without a backend (MORI does not check).
            raise ValueError(f"register_memory: {'a null address' if address == 0 else f'size {size}'}")
        with self._lock:
            local = (self._key, address, size, device, loc)
            rx_desc = None
            if self._rx is not None:
                rx_desc = self._rx.register_memory(address, size, device, loc)
            md = MemoryDesc._wrap(rx_desc, local)
            self._memory[id(md)] = md
            return md

    def _keep(self, desc: MemoryDesc, owner) -> None:
        """Keeps the object owning registered memory alive until it is deregistered (a
        tensor dropped by its caller would otherwise be freed under the transfers)."""
        with self._lock:
            if id(desc) in self._memory:
                self._owners[id(desc)] = owner

    def DeregisterMemory(self, desc: MemoryDesc) -> None:
        with self._lock:
            key = id(desc) if id(desc) in self._memory else None
            if key is None:
                # Another object for the same region (an unpacked copy): find it.
                key = next((k for k, mine in self._memory.items() if mine == desc), None)
            if key is None:
                return  # unknown: nothing to do (as MORI)
            md = self._memory.pop(key)
            owner = self._owners.pop(key, None)
            if self._rx is not None and md._rx is not None:
                self._rx.deregister_memory(md._rx)  # returns once no byte moves in it
        del owner  # released only now

    # -- transfers --
    def AllocateTransferUniqueId(self) -> int:
        return next(self._uids)

    def _pair(self, local, remote, status):
        """(ringxfer engine, local, remote descriptors), or None with the status set."""
        rx = self._rx
        if rx is None:
            status.Update(StatusCode.ERR_BAD_STATE, _NO_BACKEND)
            return None
        if not isinstance(local, MemoryDesc) or not isinstance(remote, MemoryDesc):
            status.Update(StatusCode.ERR_INVALID_ARGS, "memory descriptors must be mori.cpp.MemoryDesc")
            return None
        if local._rx is None or remote._rx is None:
            status.Update(StatusCode.ERR_INVALID_ARGS, "memory is not registered with a backend")
            return None
        return rx, local._rx, remote._rx

    def _single(self, write, local, local_offset, remote, remote_offset, size, status, uid):
        pair = self._pair(local, remote, status)
        if pair is None:
            return
        if size == 0:
            status.SetCode(StatusCode.SUCCESS)
            return
        rx, l, r = pair
        fn = rx.write if write else rx.read
        try:
            status._attach(fn(l, local_offset, r, remote_offset, size, uid, raise_errors=False))
        except RuntimeError as e:
            _closed_or_raise(e, status)

    def Read(self, local_dest, local_offset, remote_src, remote_offset, size, status, uid) -> None:
        self._single(False, local_dest, local_offset, remote_src, remote_offset, size, status, uid)

    def Write(self, local_src, local_offset, remote_dest, remote_offset, size, status, uid) -> None:
        self._single(True, local_src, local_offset, remote_dest, remote_offset, size, status, uid)

    def _batch(self, write, local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses, uids):
        n = len(statuses)
        if not (len(local_mds) == len(local_offsets) == len(remote_mds) == len(remote_offsets) == len(sizes)
                == len(uids) == n):
            raise ValueError(
                "BatchRead/BatchWrite: local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses "
                "and uids must have one entry per memory pair"
            )
        for i in range(n):
            status = statuses[i]
            if status is None:
                continue  # MORI skips a null status
            pair = self._pair(local_mds[i], remote_mds[i], status)
            if pair is None:
                continue
            rx, l, r = pair
            fn = rx.batch_write if write else rx.batch_read
            uid = uids[i]

            def start(lo, ro, sz, fn=fn, l=l, r=r, uid=uid):
                return fn([l], [lo], [r], [ro], [sz], [uid], raise_errors=False)[0]

            try:
                _start_batch(status, start, local_offsets[i], remote_offsets[i], sizes[i])
            except RuntimeError as e:
                _closed_or_raise(e, status)

    def BatchRead(self, local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses, uids) -> None:
        self._batch(False, local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses, uids)

    def BatchWrite(self, local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses, uids) -> None:
        self._batch(True, local_mds, local_offsets, remote_mds, remote_offsets, sizes, statuses, uids)

    # -- sessions --
    def _session_or_reason(self, local, remote):
        rx = self._rx
        if rx is None:
            return None, _NO_BACKEND
        if not isinstance(local, MemoryDesc) or not isinstance(remote, MemoryDesc):
            return None, "memory descriptors must be mori.cpp.MemoryDesc"
        try:
            return rx.create_session(local._rx, remote._rx, raise_errors=True), ""
        except (ValueError, RuntimeError, TypeError) as e:
            return None, str(e)

    def CreateSession(self, local, remote):
        sess, _ = self._session_or_reason(local, remote)
        return None if sess is None else IOEngineSession._make(self, sess)

    def ExplainSessionUnavailable(self, local, remote) -> str:
        sess, reason = self._session_or_reason(local, remote)
        return "" if sess is not None else reason

    # -- completions --
    def PopInboundTransferStatus(self, remote_key: str, uid: int, status: TransferStatus) -> bool:
        rx = self._rx
        if rx is None or not self._notify:
            return False
        inner = rx.pop_inbound_transfer_status(remote_key, uid)
        if inner is None:
            return False
        status._attach(inner)
        return True

    def WaitAll(self, statuses, timeout_ms: int = -1) -> StatusCode:
        return wait_all(statuses, timeout_ms)

    def __repr__(self) -> str:
        backends = ", ".join(t.name for t in self._backends) or "no backend"
        return f"IOEngine(key={self._key!r}, {backends})"
