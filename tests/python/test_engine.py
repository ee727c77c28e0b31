"""The MORI-IO-compatible surface with torch tensors and numpy arrays, two engines in one
process over loopback."""
import threading
import time

import numpy as np
import pytest
import torch

import ringxfer
from conftest import make_engine, pop_inbound
from ringxfer import (
    BackendType,
    EngineDesc,
    IOEngine,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
    StatusCode,
    TcpBackendConfig,
    TransferError,
)


def test_enums_have_mori_values():
    assert [int(BackendType.Unknown), int(BackendType.XGMI), int(BackendType.RDMA),
            int(BackendType.TCP), int(BackendType.FABRIC)] == [0, 1, 2, 3, 4]
    assert [int(MemoryLocationType.Unknown), int(MemoryLocationType.CPU),
            int(MemoryLocationType.GPU)] == [0, 1, 2]
    assert int(StatusCode.SUCCESS) == 0 and int(StatusCode.INIT) == 1
    assert int(StatusCode.IN_PROGRESS) == 2 and int(StatusCode.ERR_INVALID_ARGS) == 11
    assert int(StatusCode.ERR_NOT_FOUND) == 12 and int(StatusCode.ERR_RDMA_OP) == 13
    assert int(StatusCode.ERR_BAD_STATE) == 14 and int(StatusCode.ERR_GPU_OP) == 15
    assert int(StatusCode.ERR_TIMEOUT) > 15 and int(StatusCode.ERR_CONNECTION_LOST) > 15


def test_config_defaults_and_validation():
    c = TcpBackendConfig()
    assert c.sock_sndbuf_bytes == 32 << 20 and c.sock_rcvbuf_bytes == 32 << 20
    assert c.op_timeout_ms == 30000 and c.enable_keepalive is True
    assert (c.keepalive_idle_sec, c.keepalive_intvl_sec, c.keepalive_cnt) == (30, 10, 3)
    assert c.enable_ctrl_nodelay is True and c.num_data_conns == 8
    assert c.striping_threshold_bytes == 65536
    c = TcpBackendConfig(num_data_conns=16, op_timeout_ms=500, num_rings=2)
    assert (c.num_data_conns, c.op_timeout_ms, c.num_rings) == (16, 500, 2)
    c.keepalive_cnt = 5
    assert c.keepalive_cnt == 5
    for bad in (0, 17, -1):
        with pytest.raises(ValueError, match="num_data_conns"):
            TcpBackendConfig(num_data_conns=bad)
    with pytest.raises(ValueError, match="num_data_conns"):
        c.num_data_conns = 99
    with pytest.raises(TypeError, match="no_such_field"):
        TcpBackendConfig(no_such_field=1)
    io = IOEngineConfig()
    assert (io.host, io.port) == ("", 0)
    with pytest.raises(ValueError, match="port"):
        IOEngineConfig(host="127.0.0.1", port=70000)
    e = IOEngine("x", IOEngineConfig(host="127.0.0.1"))
    with pytest.raises(ValueError, match="ring_entries"):
        e.create_backend(BackendType.TCP, TcpBackendConfig(ring_entries=100))
    with pytest.raises(ValueError, match="wait_spin"):
        e.create_backend(BackendType.TCP, TcpBackendConfig(wait_spin_us=20000))
    with pytest.raises(NotImplementedError):
        e.create_backend(BackendType.RDMA)
    # The limits of issue 11 pass through, and are checked.
    c = TcpBackendConfig(idle_timeout_ms=250, handshake_timeout_ms=1000)
    assert (c.idle_timeout_ms, c.handshake_timeout_ms) == (250, 1000)
    assert TcpBackendConfig().idle_timeout_ms == 60000
    with pytest.raises(ValueError, match="idle_timeout"):
        e.create_backend(BackendType.TCP, TcpBackendConfig(idle_timeout_ms=0))


def test_port_zero_binds_an_ephemeral_port_visible_in_the_descriptor():
    cfg = IOEngineConfig(host="127.0.0.1", port=0)
    e = IOEngine(key="eph", config=cfg)
    assert e.get_engine_desc().port == 0
    e.create_backend(BackendType.TCP)
    port = e.get_engine_desc().port
    assert port != 0
    assert cfg.port == 0  # the engine keeps a copy: the caller's object is not written
    e.close()


def test_engine_copies_its_config_so_one_object_serves_two_engines():
    # MORI's example: one IOEngineConfig, its port changed between two engines.
    import socket

    with socket.socket() as s1, socket.socket() as s2:
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        p1, p2 = s1.getsockname()[1], s2.getsockname()[1]
    config = IOEngineConfig(host="127.0.0.1", port=p1)
    first = IOEngine(key="first", config=config)
    config.port = p2
    second = IOEngine(key="second", config=config)
    try:
        first.create_backend(BackendType.TCP)
        second.create_backend(BackendType.TCP)
        assert first.get_engine_desc().port == p1
        assert second.get_engine_desc().port == p2
        assert config.port == p2
    finally:
        first.close()
        second.close()


def test_tcp_backend_config_takes_mori_positional_arguments():
    c = TcpBackendConfig(4 << 20, 2 << 20, 1000, False, 11, 12, 13, False, 3, 4096)
    assert (c.sock_sndbuf_bytes, c.sock_rcvbuf_bytes, c.op_timeout_ms) == (4 << 20, 2 << 20, 1000)
    assert (c.enable_keepalive, c.keepalive_idle_sec, c.keepalive_intvl_sec) == (False, 11, 12)
    assert (c.keepalive_cnt, c.enable_ctrl_nodelay, c.num_data_conns) == (13, False, 3)
    assert c.striping_threshold_bytes == 4096
    c = TcpBackendConfig(1 << 20, num_rings=1)
    assert (c.sock_sndbuf_bytes, c.num_rings, c.sock_rcvbuf_bytes) == (1 << 20, 1, 32 << 20)
    with pytest.raises(TypeError, match="multiple values.*sock_sndbuf_bytes"):
        TcpBackendConfig(1 << 20, sock_sndbuf_bytes=2 << 20)
    with pytest.raises(TypeError, match="at most 10 positional"):
        TcpBackendConfig(*range(11))
    with pytest.raises(ValueError, match="num_data_conns"):
        TcpBackendConfig(1 << 20, 1 << 20, 1000, True, 30, 10, 3, True, 17)


def test_empty_host_listens_everywhere_and_the_descriptor_is_reachable():
    import socket

    e = IOEngine("everywhere", IOEngineConfig(host="", port=0))
    assert e.get_engine_desc().host == ""  # before the backend: as configured
    e.create_backend(BackendType.TCP)
    d = e.get_engine_desc()
    assert d.host not in ("", "0.0.0.0", "::") and d.port > 0
    with socket.create_connection(("127.0.0.1", d.port), timeout=5):
        pass
    peer = make_engine("peer")
    try:
        peer.register_remote_engine(d)
        e.register_remote_engine(peer.get_engine_desc())
        src, dst = np.arange(256, dtype=np.uint8), np.zeros(256, np.uint8)
        ms, md = peer.register_memory(src), e.register_memory(dst)
        peer.write(ms, 0, md, 0, 256, 1).wait(timeout=20)
        assert np.array_equal(src, dst)
    finally:
        peer.close()
        e.close()
    named = IOEngine("named", IOEngineConfig(host="", port=0))
    named.create_backend(BackendType.TCP, TcpBackendConfig(advertise_host="kv-7.example"))
    assert named.get_engine_desc().host == "kv-7.example"
    named.close()


def test_the_namespace_exports_the_api_and_nothing_else():
    public = {n for n in dir(ringxfer) if not n.startswith("_")}
    assert public == set(ringxfer.__all__), public ^ set(ringxfer.__all__)
    scope = {}
    exec("from ringxfer import *", scope)
    assert set(scope) - {"__builtins__"} == set(ringxfer.__all__)
    for leaked in ("asyncio", "ctypes", "os", "socket", "weakref", "Any", "math", "sys"):
        assert not hasattr(ringxfer, leaked), leaked


def test_raise_errors_false_answers_with_a_failed_status_and_sends_nothing(pair):
    a, b = pair
    src, dst = np.ones(64, np.uint8), np.zeros(64, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    st = a.write(ms, 0, md, 0, 0, 1, raise_errors=False)
    assert st.Failed() and st.Code() == StatusCode.ERR_INVALID_ARGS and "size is 0" in st.Message()
    st = a.read(ms, 60, md, 0, 8, 2, raise_errors=False)
    assert st.Code() == StatusCode.ERR_INVALID_ARGS and "local_offset" in st.Message()
    st = a.batch_write([ms], [[]], [md], [[]], [[]], [3], raise_errors=False)[0]
    assert st.Code() == StatusCode.ERR_INVALID_ARGS
    sess = a.create_session(ms, md)
    st = sess.batch_read([0, 8], [0, 60], [8, 8], 4, raise_errors=False)
    assert st.Code() == StatusCode.ERR_INVALID_ARGS and "remote_offset[1]" in st.Message()
    with pytest.raises(ValueError, match="size is 0"):
        a.write(ms, 0, md, 0, 0, 5)
    assert a.stats()["transfers_initiated"] == 0 and not dst.any()


def test_a_transfer_id_already_in_flight_is_err_bad_state():
    import socket

    a = make_engine("dupkey", op_timeout_ms=2000)  # as long as "silent"
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        a.register_remote_engine(EngineDesc("silent", "127.0.0.1", s.getsockname()[1]))
        ms = a.register_memory(np.zeros(64, np.uint8))
        fake = MemoryDesc.unpack(ms.pack().replace(b"dupkey", b"silent"))
        first = a.write(ms, 0, fake, 0, 8, 77)  # never answered: stays in flight
        second = a.write(ms, 0, fake, 0, 8, 77, raise_errors=False)
        assert second.Code() == StatusCode.ERR_BAD_STATE and "already in flight" in second.Message()
        assert first.InProgress()
        with pytest.raises(ValueError, match="already in flight"):
            a.write(ms, 0, fake, 0, 8, 77)
    finally:
        s.close()
        a.close()


def test_a_batch_has_no_entry_cap(pair):
    a, b = pair
    n = 20000  # more entries than one wire request carries (8,192)
    src = np.random.randint(0, 255, n * 4, dtype=np.uint8)
    dst, back = np.zeros(n * 4, np.uint8), np.zeros(n * 4, np.uint8)
    ms, md, mb = a.register_memory(src), b.register_memory(dst), a.register_memory(back)
    offs, sizes = [i * 4 for i in range(n)], [2] * n
    uid = a.allocate_transfer_uid()
    a.batch_write([ms], [offs], [md], [offs], [sizes], [uid])[0].wait(timeout=30)
    a.batch_read([mb], [offs], [md], [offs], [sizes], [a.allocate_transfer_uid()])[0].wait(timeout=30)
    mask = np.zeros(n * 4, bool)
    for o in offs:
        mask[o:o + 2] = True
    assert np.array_equal(dst[mask], src[mask]) and not dst[~mask].any()
    assert np.array_equal(back[mask], src[mask]) and not back[~mask].any()
    inbound = pop_inbound(b, "initiator", uid)
    assert inbound is not None and inbound.Succeeded()


def test_descriptors_pack_and_unpack(pair):
    a, b = pair
    d = a.get_engine_desc()
    assert (d.key, d.host) == ("initiator", "127.0.0.1") and d.pid > 0 and d.hostname
    d2 = EngineDesc.unpack(d.pack())
    assert d2 == d and d2.port == d.port and d2.node_id == d.node_id
    buf = np.zeros(100, dtype=np.uint8)
    md = a.register_memory(buf)
    md2 = MemoryDesc.unpack(md.pack())
    assert md2 == md
    assert (md2.engine_key, md2.size, md2.loc, md2.data) == ("initiator", 100, MemoryLocationType.CPU,
                                                              buf.ctypes.data)
    assert (md.device_bus_id, md.numa_node, md.ipc_handle) == ("", -1, b"")  # MORI's extras
    assert MemoryDesc().id == 0
    with pytest.raises(ValueError):
        EngineDesc.unpack(b"garbage")
    with pytest.raises(ValueError):
        MemoryDesc.unpack(d.pack())


@pytest.mark.parametrize("nbytes", [1, 7, 4096, 65537, 3 << 20])
def test_write_and_read_torch_and_numpy(pair, nbytes):
    a, b = pair
    src = torch.randint(0, 255, (nbytes + 3,), dtype=torch.uint8)
    dst = np.zeros(nbytes + 5, dtype=np.uint8)
    back = torch.zeros(nbytes + 3, dtype=torch.uint8)
    ms, mb = a.register_torch_tensor(src), a.register_torch_tensor(back)
    md = b.register_memory(dst)
    uid = a.allocate_transfer_uid()
    st = a.write(ms, 3, md, 5, nbytes, uid)
    assert st.InProgress() or st.Succeeded()
    st.Wait()
    assert st.Succeeded(), st.Message()
    assert st.Code() == StatusCode.SUCCESS
    assert np.array_equal(dst[5:], src.numpy()[3:])
    assert not dst[:5].any()
    ruid = a.allocate_transfer_uid()
    rs = a.read(mb, 3, md, 5, nbytes, ruid)
    assert rs.WaitFor(20000) and rs.Succeeded(), rs.Message()
    assert torch.equal(back[3:], src[3:])
    for u in (uid, ruid):
        inbound = pop_inbound(b, "initiator", u)
        assert inbound is not None and inbound.Succeeded()
        assert b.pop_inbound_transfer_status("initiator", u) is None


def test_polling_sees_a_transfer_finish_without_help(pair):
    a, b = pair
    src, dst = np.ones(1 << 20, np.uint8), np.zeros(1 << 20, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    st = a.write(ms, 0, md, 0, 1 << 20, a.allocate_transfer_uid())
    deadline = time.time() + 20
    while st.InProgress() and time.time() < deadline:
        time.sleep(0.001)
    assert st.Succeeded()
    assert dst.all()


def test_batches_one_status_per_pair(pair):
    a, b = pair
    s1, s2 = np.arange(4096, dtype=np.uint8), np.full(8192, 7, np.uint8)
    d1, d2 = np.zeros(4096, np.uint8), np.zeros(8192, np.uint8)
    m1, m2 = a.register_memory(s1), a.register_memory(s2)
    r1, r2 = b.register_memory(d1), b.register_memory(d2)
    offs1 = [i * 64 for i in range(64)]  # strided: 8 of every 64 bytes
    offs2 = [i * 8 for i in range(1024)]  # contiguous
    uids = [a.allocate_transfer_uid(), a.allocate_transfer_uid()]
    sts = a.batch_write([m1, m2], [offs1, offs2], [r1, r2], [offs1, offs2],
                        [[8] * 64, [8] * 1024], uids)
    assert len(sts) == 2
    assert a.wait_all(sts) == StatusCode.SUCCESS
    for o in offs1:
        assert np.array_equal(d1[o:o + 8], s1[o:o + 8])
        assert not d1[o + 8:o + 64].any()
    assert np.array_equal(d2, s2)
    d1[:] = 0
    back = np.zeros(4096, np.uint8)
    mback = a.register_memory(back)
    rs = a.batch_read([mback], [offs1], [r2], [offs1], [[8] * 64], [a.allocate_transfer_uid()])
    assert ringxfer.wait_all(rs, 20000) == StatusCode.SUCCESS
    assert back[:8].tolist() == [7] * 8
    with pytest.raises(ValueError, match="one entry per memory pair"):
        a.batch_write([m1], [offs1, offs2], [r1], [offs1], [[8]], [1])


def test_sessions(pair):
    a, b = pair
    src, dst = torch.arange(1024, dtype=torch.int32), torch.zeros(1024, dtype=torch.int32)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    sess = a.create_session(ms, md)
    assert sess is not None and sess.alive()
    st = sess.write(0, 0, 2048, sess.allocate_transfer_uid())
    st.wait(timeout=20)
    st = sess.batch_write([2048, 3072], [2048, 3072], [512, 1024], sess.allocate_transfer_uid())
    st.wait(timeout=20)
    assert torch.equal(dst[:512], src[:512]) and torch.equal(dst[768:], src[768:])
    assert not dst[640:768].any()
    src.zero_()
    sess.read(0, 0, 4096, sess.allocate_transfer_uid()).wait(timeout=20)
    assert torch.equal(src, dst)
    a.deregister_memory(ms)
    assert not sess.alive()
    stranger = MemoryDesc.unpack(md.pack())
    b2 = make_engine("nobody-knows-me")
    try:
        foreign = b2.register_memory(np.zeros(8, np.uint8))
        assert a.create_session(foreign, stranger) is None
        with pytest.raises(ValueError, match="nobody-knows-me"):
            a.create_session(foreign, stranger, raise_errors=True)
    finally:
        b2.close()


def test_misuse_raises_clear_exceptions(pair):
    a, b = pair
    src, dst = np.zeros(4096, np.uint8), np.zeros(4096, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    with pytest.raises(ringxfer.NonContiguousError, match="contiguous"):
        a.register_torch_tensor(torch.zeros(8, 8).t())
    with pytest.raises(RuntimeError, match="contiguous"):  # MORI-IO raises RuntimeError
        a.register_torch_tensor(torch.zeros(8, 8)[:, ::2])
    with pytest.raises(ValueError, match="beyond local memory"):
        a.write(ms, 4000, md, 0, 200, a.allocate_transfer_uid())
    with pytest.raises(ValueError, match="beyond remote memory"):
        a.read(ms, 0, md, 4095, 2, a.allocate_transfer_uid())
    with pytest.raises(ValueError, match="size is 0"):
        a.write(ms, 0, md, 0, 0, a.allocate_transfer_uid())
    with pytest.raises(ValueError, match="negative"):
        a.write(ms, -1, md, 0, 8, a.allocate_transfer_uid())
    stranger = make_engine("stranger")
    try:
        mx = stranger.register_memory(np.zeros(64, np.uint8))
        with pytest.raises(ValueError, match="stranger is not registered"):
            a.write(ms, 0, mx, 0, 8, a.allocate_transfer_uid())
    finally:
        stranger.close()
    with pytest.raises(ValueError, match="read-only"):
        a.register_memory(b"immutable bytes")
    with pytest.raises(ValueError):
        a.register_memory(12345)  # an address needs a size
    with pytest.raises(ValueError):
        ringxfer.set_log_level("chatty")
    ringxfer.set_log_level("WARN")
    e = IOEngine("no-backend", IOEngineConfig())
    with pytest.raises(RuntimeError, match="create_backend"):
        e.allocate_transfer_uid()


def test_buffer_protocol_objects_and_dlpack(pair):
    a, b = pair
    dst = bytearray(64)
    md = b.register_memory(dst)
    mv = memoryview(bytearray(b"x" * 64))
    mm = a.register_memory(mv)
    a.write(mm, 0, md, 0, 64, a.allocate_transfer_uid()).wait(timeout=20)
    assert bytes(dst) == b"x" * 64
    # torch tensors export DLPack, not the buffer protocol.
    t = torch.full((16,), 3, dtype=torch.uint8)
    mt = a.register_buffer(t)
    assert mt.size == 16 and mt.data == t.data_ptr()
    a.write(mt, 0, md, 0, 16, a.allocate_transfer_uid()).wait(timeout=20)
    assert dst[:16] == bytearray([3] * 16)


def test_failed_transfers_raise_transfer_error(pair):
    a, b = pair
    src, dst = np.zeros(4096, np.uint8), np.zeros(4096, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    b.deregister_memory(md)
    st = a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid())
    with pytest.raises(TransferError) as info:
        st.wait(timeout=20)
    assert info.value.code == StatusCode.ERR_NOT_FOUND
    assert st.Failed() and st.Code() == StatusCode.ERR_NOT_FOUND
    assert "no registered memory matches this id and key" in st.Message()
    assert ringxfer.wait_all([st]) == StatusCode.ERR_NOT_FOUND
    assert ringxfer.wait_all([]) == StatusCode.SUCCESS


def test_wait_timeout_raises_timeout_error():
    a = make_engine("waiter", op_timeout_ms=1000)
    try:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        a.register_remote_engine(EngineDesc("silent", "127.0.0.1", s.getsockname()[1]))
        ms = a.register_memory(np.zeros(64, np.uint8))
        # A descriptor naming the silent engine's memory (it never answers).
        fake = MemoryDesc.unpack(ms.pack().replace(b"waiter", b"silent"))
        st = a.write(ms, 0, fake, 0, 8, a.allocate_transfer_uid())
        with pytest.raises(TimeoutError):
            st.wait(timeout=0.05)
        assert ringxfer.wait_all([st], 0) == StatusCode.IN_PROGRESS
        with pytest.raises(TransferError) as info:
            st.wait(timeout=10)
        assert info.value.code == StatusCode.ERR_TIMEOUT
        s.close()
    finally:
        a.close()


def test_threads_share_one_engine(pair):
    a, b = pair
    n, size = 8, 64 * 1024
    src = np.random.randint(0, 255, n * size, dtype=np.uint8)
    dst = np.zeros(n * size, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    errors = []

    def worker(i):
        try:
            for k in range(10):
                off = i * size + k * (size // 10)
                a.write(ms, off, md, off, size // 10, a.allocate_transfer_uid()).wait(timeout=20)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(n):
        lo = i * size
        assert np.array_equal(dst[lo:lo + (size // 10) * 10], src[lo:lo + (size // 10) * 10])


def test_context_manager_and_stats():
    with make_engine("ctx") as e:
        s = e.stats()
        assert s["ring_threads"] == TcpBackendConfig().num_rings == 2
        assert s["bytes_sent"] == 0 and "io_uring_enter" in s
        assert s["fixed_buffers"] == 0 and "zerocopy_refused" in s
    with pytest.raises(RuntimeError):
        e.allocate_transfer_uid()


def test_errors_raised_after_the_gil_is_taken_back(pair):
    """Transfer calls release the GIL; errors are raised only once it is held again. A
    local descriptor altered to say GPU no longer matches its registration."""
    a, b = pair
    ms = a.register_memory(np.zeros(64, np.uint8))
    md = b.register_memory(np.zeros(64, np.uint8))
    packed = ms.pack()
    gpu = MemoryDesc.unpack(packed[:-17] + bytes([1]) + packed[-16:])  # location byte: GPU
    assert gpu.loc == MemoryLocationType.GPU
    with pytest.raises(ValueError, match="does not match its registration"):
        a.write(gpu, 0, md, 0, 8, a.allocate_transfer_uid())
    assert a.create_session(gpu, md) is None
    sess = a.create_session(ms, md)
    with pytest.raises(ValueError, match="size is 0"):
        sess.write(0, 0, 0, sess.allocate_transfer_uid())
