"""GPU memory through the fake runtime (tests/gpu/fake_gpu.cc, named by RINGXFER_FAKE_GPU;
its device memory is PROT_NONE to the CPU): the shape of MORI's own
test_tcp_gpu_write_read_and_batch_staging (ROCm/mori feature/tcp-backend,
tests/python/io/test_engine.py): single and batched writes and reads between GPU regions,
inbound statuses, data compared through the runtime."""
import ctypes
import os

import numpy as np
import pytest

from conftest import pop_inbound
from ringxfer import MemoryLocationType, StatusCode

FAKE = os.environ.get("RINGXFER_FAKE_GPU")
pytestmark = pytest.mark.skipif(not FAKE, reason="RINGXFER_FAKE_GPU is not set (meson test sets it)")

H2D, D2H = 1, 2


class Device:
    """Device memory of the fake runtime, read and written only through it."""

    lib = None

    def __init__(self, size):
        if Device.lib is None:
            Device.lib = ctypes.CDLL(FAKE)
        self.size = size
        p = ctypes.c_void_p()
        assert Device.lib.hipMalloc(ctypes.byref(p), ctypes.c_size_t(size)) == 0
        self.ptr = p.value

    def put(self, arr):
        buf = np.ascontiguousarray(arr, dtype=np.uint8)
        assert Device.lib.hipMemcpy(ctypes.c_void_p(self.ptr), buf.ctypes.data_as(ctypes.c_void_p),
                                    ctypes.c_size_t(buf.nbytes), H2D) == 0

    def get(self):
        out = np.empty(self.size, dtype=np.uint8)
        assert Device.lib.hipMemcpy(out.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(self.ptr),
                                    ctypes.c_size_t(self.size), D2H) == 0
        return out

    def free(self):
        Device.lib.hipFree(ctypes.c_void_p(self.ptr))


class DLPackDevice:
    """A minimal DLPack producer of CUDA memory (device type 2)."""

    def __init__(self, dev):
        self.dev = dev

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        class DLTensor(ctypes.Structure):
            _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32),
                        ("device_id", ctypes.c_int32), ("ndim", ctypes.c_int32),
                        ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16),
                        ("shape", ctypes.POINTER(ctypes.c_int64)),
                        ("strides", ctypes.c_void_p), ("byte_offset", ctypes.c_uint64),
                        ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]

        self._shape = (ctypes.c_int64 * 1)(self.dev.size)
        self._t = DLTensor(self.dev.ptr, 2, 0, 1, 1, 8, 1, self._shape, None, 0, None, None)
        new = ctypes.pythonapi.PyCapsule_New
        new.restype = ctypes.py_object
        new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return new(ctypes.addressof(self._t), b"dltensor", None)


def test_gpu_write_read_and_batch_staging(pair):
    a, b = pair
    size = 4 << 20
    src, dst = Device(size), Device(size)
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size, dtype=np.uint8)
    src.put(data)
    dst.put(np.zeros(size, dtype=np.uint8))
    src_md = a.register_memory(src.ptr, size, 0, MemoryLocationType.GPU)
    dst_md = b.register_memory(dst.ptr, size, 0, MemoryLocationType.GPU)
    assert src_md.loc == MemoryLocationType.GPU and src_md.device_id == 0
    # Descriptors of GPU memory pack and unpack like host ones.
    assert type(dst_md).unpack(dst_md.pack()) == dst_md
    try:
        # A single write, then its inbound status on the target.
        uid = a.allocate_transfer_uid()
        st = a.write(src_md, 0, dst_md, 0, size, uid)
        st.Wait()
        assert st.Succeeded(), st.Message()
        assert np.array_equal(dst.get(), data)
        inbound = pop_inbound(b, a.get_engine_desc().key, uid)
        assert inbound is not None and inbound.Succeeded()
        # Batched writes of 8 blocks into reversed slots, then batched reads back.
        blocks, blk = 8, 64 << 10
        dst.put(np.zeros(size, dtype=np.uint8))
        offs = [i * blk for i in range(blocks)]
        rev = [(blocks - 1 - i) * blk + 3 for i in range(blocks)]
        uid = a.allocate_transfer_uid()
        sts = a.batch_write([src_md], [offs], [dst_md], [rev], [[blk] * blocks], [uid])
        for s in sts:
            s.Wait()
            assert s.Succeeded(), s.Message()
        got = dst.get()
        for i in range(blocks):
            assert np.array_equal(got[rev[i]:rev[i] + blk], data[offs[i]:offs[i] + blk])
        src.put(np.zeros(size, dtype=np.uint8))
        uid = a.allocate_transfer_uid()
        sts = a.batch_read([src_md], [[o + 1 for o in offs]], [dst_md], [rev], [[blk] * blocks], [uid])
        for s in sts:
            s.Wait()
            assert s.Succeeded(), s.Message()
        back = src.get()
        for i in range(blocks):
            assert np.array_equal(back[offs[i] + 1:offs[i] + 1 + blk], data[offs[i]:offs[i] + blk])
        # A single read into host memory from the GPU region.
        host = np.zeros(size, dtype=np.uint8)
        host_md = a.register_memory(host)
        st = a.read(host_md, 0, dst_md, 0, size, a.allocate_transfer_uid())
        st.Wait()
        assert st.Succeeded(), st.Message()
        assert np.array_equal(host, dst.get())
        a.deregister_memory(host_md)
    finally:
        a.deregister_memory(src_md)
        b.deregister_memory(dst_md)
        src.free()
        dst.free()


def test_a_failed_gpu_copy_is_err_gpu_op(pair):
    a, b = pair
    size = 1 << 20
    src, dst = Device(size), Device(size)
    src_md = a.register_memory(src.ptr, size, 0, MemoryLocationType.GPU)
    dst_md = b.register_memory(dst.ptr, size, 0, MemoryLocationType.GPU)
    fail = Device.lib.ringxfer_fake_gpu_fail_copies
    fail.argtypes = [ctypes.c_long, ctypes.c_long]
    try:
        fail(0, 1)
        st = a.write(src_md, 0, dst_md, 0, size, a.allocate_transfer_uid())
        st.Wait()
        fail(0, 0)
        assert st.Failed()
        assert st.Code() == StatusCode.ERR_GPU_OP, st.Message()
    finally:
        fail(0, 0)
        a.deregister_memory(src_md)
        b.deregister_memory(dst_md)
        src.free()
        dst.free()


def test_dlpack_gpu_producer_and_device_memory_as_cpu_refused(pair):
    a, _ = pair
    dev = Device(1 << 16)
    try:
        md = a.register_memory(DLPackDevice(dev))
        assert md.loc == MemoryLocationType.GPU and md.size == 1 << 16
        a.deregister_memory(md)
        with pytest.raises(ValueError, match="GPU"):
            a.register_memory(dev.ptr, 1 << 16, -1, MemoryLocationType.CPU)
    finally:
        dev.free()


def test_set_gpu_stream_orders_the_copy_after_the_producer(pair):
    """A transfer started with set_gpu_stream(stream) copies the GPU memory only after the
    work queued on that stream (here an async copy at 1 GB/s that writes the source)."""
    import ringxfer

    a, b = pair
    size, sent = 32 << 20, 64 << 10
    src, dst = Device(size), Device(size)
    src.put(np.full(size, 0xAA, dtype=np.uint8))
    dst.put(np.zeros(size, dtype=np.uint8))
    fresh = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    src_md = a.register_memory(src.ptr, size, 0, MemoryLocationType.GPU)
    dst_md = b.register_memory(dst.ptr, size, 0, MemoryLocationType.GPU)
    lib = Device.lib
    cost = lib.ringxfer_fake_gpu_set_copy_cost
    cost.argtypes = [ctypes.c_double, ctypes.c_long]
    stream = ctypes.c_void_p()
    assert lib.hipStreamCreateWithFlags(ctypes.byref(stream), 1) == 0
    try:
        cost(1.0, 0)
        assert lib.hipMemcpyAsync(ctypes.c_void_p(src.ptr), fresh.ctypes.data_as(ctypes.c_void_p),
                                  ctypes.c_size_t(size), H2D, stream) == 0
        ringxfer.set_gpu_stream(stream.value)
        try:
            st = a.write(src_md, 0, dst_md, 0, sent, a.allocate_transfer_uid())
        finally:
            ringxfer.set_gpu_stream(0)
        st.Wait()
        assert st.Succeeded(), st.Message()
        assert np.array_equal(dst.get()[:sent], fresh[:sent])
    finally:
        cost(0.0, 0)
        lib.hipStreamSynchronize(stream)
        lib.hipStreamDestroy(stream)
        a.deregister_memory(src_md)
        b.deregister_memory(dst_md)
        src.free()
        dst.free()
