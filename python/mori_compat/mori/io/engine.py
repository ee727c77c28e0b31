"""``mori.io.engine``: MORI-IO's Python engine (IOEngine, IOEngineSession), on
``mori.cpp``. Same methods, argument order and return values as MORI's: transfers
return a TransferStatus (engine-level batches: one per memory pair), problems are
reported on the status, not raised."""

import ctypes as _ctypes

from mori import cpp as mori_cpp

__all__ = ["IOEngine", "IOEngineSession", "SessionUnavailableError", "TORCH_DEVICE_TYPE_MAP"]

TORCH_DEVICE_TYPE_MAP = {
    "cpu": mori_cpp.MemoryLocationType.CPU,
    "cuda": mori_cpp.MemoryLocationType.GPU,
}

_PyCapsule_New = _ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = _ctypes.py_object
_PyCapsule_New.argtypes = [_ctypes.c_void_p, _ctypes.c_char_p, _ctypes.c_void_p]


class SessionUnavailableError(RuntimeError):
    """No backend could build a transfer session for a local/remote memory pair."""


def _status_of(call, *args):
    status = mori_cpp.TransferStatus()
    call(*args[:-1], status, args[-1])
    return status


class IOEngineSession:
    """A local/remote memory pair bound once."""

    def __init__(self, mori_sess):
        self._sess = mori_sess

    def allocate_transfer_uid(self):
        return self._sess.AllocateTransferUniqueId()

    def read(self, local_offset, remote_offset, size, transfer_uid):
        return _status_of(self._sess.Read, local_offset, remote_offset, size, transfer_uid)

    def write(self, local_offset, remote_offset, size, transfer_uid):
        return _status_of(self._sess.Write, local_offset, remote_offset, size, transfer_uid)

    def batch_read(self, local_offsets, remote_offsets, sizes, transfer_uid):
        """One transfer of many ranges; one status."""
        return _status_of(self._sess.BatchRead, local_offsets, remote_offsets, sizes, transfer_uid)

    def batch_write(self, local_offsets, remote_offsets, sizes, transfer_uid):
        return _status_of(self._sess.BatchWrite, local_offsets, remote_offsets, sizes, transfer_uid)

    def alive(self):
        return self._sess.Alive()


class IOEngine:
    """MORI-IO's engine. ``create_backend(BackendType.TCP)`` starts ringxfer's engine;
    RDMA and XGMI are served by it when RINGXFER_SERVE_RDMA_AS_TCP=1 or
    ``mori.io.serve_rdma_as_tcp(True)``, else refused with a message naming the switch."""

    def __init__(self, key, config: "mori_cpp.IOEngineConfig"):
        self._engine = mori_cpp.IOEngine(key, config)

    def get_engine_desc(self):
        return self._engine.GetEngineDesc()

    def create_backend(self, type, config=None):
        if config is None:
            if type is mori_cpp.BackendType.RDMA:
                config = mori_cpp.RdmaBackendConfig()
            elif type is mori_cpp.BackendType.XGMI:
                config = mori_cpp.XgmiBackendConfig()
            elif type is mori_cpp.BackendType.FABRIC:
                config = mori_cpp.FabricBackendConfig()
            elif type is mori_cpp.BackendType.TCP:
                config = mori_cpp.TcpBackendConfig()
            else:
                raise NotImplementedError("backend not implemented yet")
        return self._engine.CreateBackend(type, config)

    def remove_backend(self, type):
        return self._engine.RemoveBackend(type)

    def register_remote_engine(self, engine_desc):
        return self._engine.RegisterRemoteEngine(engine_desc)

    def deregister_remote_engine(self, engine_desc):
        return self._engine.DeregisterRemoteEngine(engine_desc)

    def register_memory(self, ptr: int, size: int, device_id: int, mem_loc):
        data = _PyCapsule_New(_ctypes.c_void_p(ptr), None, None)
        return self._engine.RegisterMemory(data, size, device_id, mem_loc)

    def register_torch_tensor(self, tensor):
        if not tensor.is_contiguous():
            raise RuntimeError("input tensor must be contiguous")
        total_bytes = tensor.nelement() * tensor.element_size()
        device_id = tensor.device.index
        if device_id is None:
            device_id = -1
        mem_loc = TORCH_DEVICE_TYPE_MAP[tensor.device.type]
        desc = self.register_memory(tensor.data_ptr(), total_bytes, device_id, mem_loc)
        # ringxfer-mori keeps the tensor alive until deregister_memory (MORI does not:
        # a tensor dropped while registered would be freed under the transfers).
        self._engine._keep(desc, tensor)
        return desc

    def deregister_memory(self, mem_desc):
        return self._engine.DeregisterMemory(mem_desc)

    def allocate_transfer_uid(self):
        return self._engine.AllocateTransferUniqueId()

    def read(self, local_dest_mem_desc, local_offset, remote_src_mem_desc, remote_offset, size, transfer_uid):
        """remote -> local."""
        return _status_of(
            self._engine.Read, local_dest_mem_desc, local_offset, remote_src_mem_desc, remote_offset, size,
            transfer_uid,
        )

    def write(self, local_src_mem_desc, local_offset, remote_dest_mem_desc, remote_offset, size, transfer_uid):
        """local -> remote."""
        return _status_of(
            self._engine.Write, local_src_mem_desc, local_offset, remote_dest_mem_desc, remote_offset, size,
            transfer_uid,
        )

    def _batch(self, func, local_mem_descs, local_offsets, remote_mem_descs, remote_offsets, sizes,
               transfer_uids):
        if isinstance(local_mem_descs, mori_cpp.MemoryDesc):
            # The TCP branch's first form: one memory pair, one uid, one status.
            status = mori_cpp.TransferStatus()
            func([local_mem_descs], [local_offsets], [remote_mem_descs], [remote_offsets], [sizes], [status],
                 [transfer_uids])
            return status
        statuses = [mori_cpp.TransferStatus() for _ in range(len(sizes))]
        func(local_mem_descs, local_offsets, remote_mem_descs, remote_offsets, sizes, statuses, transfer_uids)
        return statuses

    def batch_read(self, local_dest_mem_descs, local_offsets, remote_src_mem_descs, remote_offsets, sizes,
                   transfer_uids):
        """One batched read per memory pair (lists with one entry per pair; inner lists
        of offsets and sizes); one status per pair."""
        return self._batch(self._engine.BatchRead, local_dest_mem_descs, local_offsets, remote_src_mem_descs,
                           remote_offsets, sizes, transfer_uids)

    def batch_write(self, local_src_mem_descs, local_offsets, remote_dest_mem_descs, remote_offsets, sizes,
                    transfer_uids):
        """One batched write per memory pair; one status per pair."""
        return self._batch(self._engine.BatchWrite, local_src_mem_descs, local_offsets, remote_dest_mem_descs,
                           remote_offsets, sizes, transfer_uids)

    def create_session(self, local_mem, remote_mem):
        """A session, or None when no backend can bind the pair (as MORI's TCP branch
        and its tests; its newest main raises SessionUnavailableError instead, which
        ``mori.cpp.IOEngine.ExplainSessionUnavailable`` words)."""
        mori_sess = self._engine.CreateSession(local_mem, remote_mem)
        if mori_sess is None:
            return None
        return IOEngineSession(mori_sess)

    def pop_inbound_transfer_status(self, remote_key, transfer_uid):
        transfer_status = mori_cpp.TransferStatus()
        found = self._engine.PopInboundTransferStatus(remote_key, transfer_uid, transfer_status)
        if found:
            return transfer_status
        return None

    def wait_all(self, statuses, timeout_ms: int = -1):
        """SUCCESS, the first failure, or IN_PROGRESS when timeout_ms ran out."""
        return self._engine.WaitAll(statuses, timeout_ms)
