"""The ringxfer-mori compatibility package: MORI-IO's names, signatures and semantics
(one test per point), MORI's own CPU-capable tests and example sequence, two engines in
one process over loopback."""
import logging
import socket
import threading
import time

import pytest
import torch

import mori.cpp as mori_cpp
import mori.io as mio
from mori.cpp import TransferStatus
from mori.io import (
    BackendType,
    EngineDesc,
    IOEngine,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
    PollCqMode,
    RdmaBackendConfig,
    SessionUnavailableError,
    StatusCode,
    TcpBackendConfig,
    XgmiBackendConfig,
    set_log_level,
)

MORI_IO_NAMES = {
    "IOEngine", "IOEngineSession", "IOEngineConfig", "SessionUnavailableError", "StatusCode", "BackendType",
    "EngineDesc", "MemoryDesc", "MemoryLocationType", "PollCqMode", "RdmaBackendConfig", "XgmiBackendConfig",
    "TcpBackendConfig", "FabricBackendConfig", "fabric_alloc", "fabric_free", "set_log_level",
    "TORCH_DEVICE_TYPE_MAP", "fabric_mem_pool", "make_fabric_mem_pool", "use_fabric_torch_allocator",
    "fabric_torch_allocator",
}
MORI_CPP_NAMES = {
    "TransferStatus", "IOEngineConfig", "EngineDesc", "MemoryDesc", "BackendType", "MemoryLocationType",
    "StatusCode", "RdmaBackendConfig", "XgmiBackendConfig", "TcpBackendConfig", "FabricBackendConfig",
    "PollCqMode", "BackendConfig", "IOEngine", "IOEngineSession", "set_log_level", "fabric_alloc", "fabric_free",
}


@pytest.fixture
def serve(monkeypatch):
    monkeypatch.setenv("RINGXFER_SERVE_RDMA_AS_TCP", "1")


def tcp_pair(prefix="p", port_a=0, port_b=0):
    """MORI's _create_tcp_engine_pair."""
    a = IOEngine(f"{prefix}_a", IOEngineConfig(host="127.0.0.1", port=port_a))
    b = IOEngine(f"{prefix}_b", IOEngineConfig(host="127.0.0.1", port=port_b))
    a.create_backend(BackendType.TCP, TcpBackendConfig())
    b.create_backend(BackendType.TCP, TcpBackendConfig())
    a_desc, b_desc = a.get_engine_desc(), b.get_engine_desc()
    a.register_remote_engine(b_desc)
    b.register_remote_engine(a_desc)
    return a, b, a_desc, b_desc


def wait_inbound(engine, key, uid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = engine.pop_inbound_transfer_status(key, uid)
        if s is not None:
            return s
        time.sleep(0.001)
    raise RuntimeError(f"no inbound status for {key}/{uid}")


def get_free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- names and signatures --------------------------------------------------------------


def test_every_name_clients_import_exists():
    assert MORI_IO_NAMES <= set(dir(mio)), MORI_IO_NAMES - set(dir(mio))
    assert MORI_CPP_NAMES <= set(dir(mori_cpp)), MORI_CPP_NAMES - set(dir(mori_cpp))
    from mori import cpp  # ATOM
    from mori.io.engine import TORCH_DEVICE_TYPE_MAP, IOEngineSession  # noqa: F401
    from mori.io.engine import IOEngine as EngineClass

    assert cpp.TransferStatus is TransferStatus and EngineClass is IOEngine
    # pybind11's export_values(): members at module level.
    assert (mori_cpp.SUCCESS, mori_cpp.RDMA, mori_cpp.CPU) == (
        StatusCode.SUCCESS, BackendType.RDMA, MemoryLocationType.CPU)
    assert mori_cpp.Unknown is MemoryLocationType.Unknown


def test_enums_have_mori_members_and_numbers():
    assert {c.name: c.value for c in StatusCode} == {
        "SUCCESS": 0, "INIT": 1, "IN_PROGRESS": 2, "ERR_INVALID_ARGS": 11, "ERR_NOT_FOUND": 12,
        "ERR_RDMA_OP": 13, "ERR_BAD_STATE": 14, "ERR_GPU_OP": 15}
    assert (int(PollCqMode.POLLING), int(PollCqMode.EVENT), PollCqMode.POLLING.name) == (0, 1, "POLLING")
    assert f"{PollCqMode.POLLING}" == "PollCqMode.POLLING" and StatusCode(14) is StatusCode.ERR_BAD_STATE
    assert [int(BackendType.XGMI), int(BackendType.RDMA), int(BackendType.TCP), int(BackendType.FABRIC)] == [1, 2, 3, 4]


def test_rdma_backend_config_positional_keywords_defaults_and_attributes():
    c = RdmaBackendConfig()
    assert (c.qp_per_transfer, c.post_batch_size, c.num_worker_threads) == (1, -1, -1)
    assert c.poll_cq_mode is PollCqMode.POLLING and c.enable_notification is True
    assert (c.notif_per_qp, c.enable_transfer_chunking, c.chunk_bytes) == (1024, False, 65536)
    assert (c.max_chunks_per_transfer, c.num_nics_per_transfer) == (64, 1)
    assert (c.max_send_wr, c.max_cqe_num, c.max_msg_sge) == (0, 0, 0)
    c = RdmaBackendConfig(4, -1, 4, PollCqMode.POLLING, False)  # SGLang, ATOM
    assert (c.qp_per_transfer, c.num_worker_threads, c.enable_notification) == (4, 4, False)
    c.max_send_wr, c.max_cqe_num, c.max_msg_sge = 128, 256, 4  # ATOM, MORI's benchmark
    assert (c.max_send_wr, c.max_cqe_num, c.max_msg_sge) == (128, 256, 4)
    c = RdmaBackendConfig(1, -1, 1, PollCqMode.POLLING, enable_notification=False)  # vLLM
    assert c.enable_notification is False
    with pytest.raises(AttributeError):
        c.no_such_field = 1  # as a pybind11 object
    with pytest.raises(TypeError):
        RdmaBackendConfig(qp_per_transfer="4")
    # MORI's test_rdma_backend_config_chunking_fields.
    c = RdmaBackendConfig(qp_per_transfer=4, post_batch_size=-1, num_worker_threads=2, enable_notification=True,
                          notif_per_qp=2048, enable_transfer_chunking=True, chunk_bytes=65536,
                          max_chunks_per_transfer=32, num_nics_per_transfer=2)
    assert (c.qp_per_transfer, c.notif_per_qp, c.max_chunks_per_transfer, c.num_nics_per_transfer) == (4, 2048, 32, 2)
    assert c.enable_transfer_chunking is True
    x = XgmiBackendConfig(num_streams=8, num_events=16)
    assert (x.num_streams, x.num_events) == (8, 16) and XgmiBackendConfig().num_streams == 64
    f = mio.FabricBackendConfig()
    f.num_streams, f.num_events = 2, 3
    assert (f.num_streams, f.num_events) == (2, 3)
    with pytest.raises(TypeError):
        mori_cpp.BackendConfig()


def test_tcp_backend_config_takes_positional_arguments_in_mori_order():
    c = TcpBackendConfig(4 << 20, 4 << 20, 30000, True, 30, 10, 3, True, 8, 256 * 1024)
    assert (c.sock_sndbuf_bytes, c.num_data_conns, c.striping_threshold_bytes) == (4 << 20, 8, 256 * 1024)


# ---- semantics, one point each ---------------------------------------------------------


@pytest.fixture
def pair():
    a, b, a_desc, b_desc = tcp_pair()
    yield a, b, a_desc, b_desc


def test_size_zero_is_success_at_once(pair):
    a, b, _, _ = pair
    src, dst = torch.ones(64, dtype=torch.uint8), torch.zeros(64, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    assert a.write(ms, 0, md, 0, 0, a.allocate_transfer_uid()).Code() == StatusCode.SUCCESS
    assert a.create_session(ms, md).read(0, 0, 0, 1).Code() == StatusCode.SUCCESS
    assert not dst.any()


def test_an_empty_batch_is_success_at_once(pair):
    a, b, _, _ = pair
    ms, md = a.register_torch_tensor(torch.ones(64, dtype=torch.uint8)), b.register_torch_tensor(torch.zeros(64, dtype=torch.uint8))
    assert a.batch_write([ms], [[]], [md], [[]], [[]], [7])[0].Succeeded()
    assert a.create_session(ms, md).batch_read([], [], [], 8).Succeeded()
    assert a.batch_read([], [], [], [], [], []) == []


def test_zero_size_batch_entries_are_skipped(pair):
    a, b, _, _ = pair
    src, dst = torch.arange(64, dtype=torch.uint8) + 1, torch.zeros(64, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    st = a.batch_write([ms], [[0, 16, 32]], [md], [[0, 16, 32]], [[8, 0, 8]], [a.allocate_transfer_uid()])[0]
    assert st.WaitFor(10000) == StatusCode.SUCCESS
    assert torch.equal(dst[0:8], src[0:8]) and torch.equal(dst[32:40], src[32:40])
    assert not dst[8:32].any() and not dst[40:].any()


def test_an_offset_out_of_range_is_err_invalid_args_before_the_call_returns(pair):
    a, b, _, _ = pair
    ms, md = a.register_torch_tensor(torch.zeros((2, 32), dtype=torch.uint8)), b.register_torch_tensor(torch.zeros((2, 32), dtype=torch.uint8))
    sess = a.create_session(ms, md)
    st = sess.batch_read((0, 32), (0, 32), (32, 34), sess.allocate_transfer_uid())  # MORI's test_err_out_of_range
    assert st.Failed() and st.Code() == StatusCode.ERR_INVALID_ARGS
    assert a.write(ms, 60, md, 0, 8, a.allocate_transfer_uid()).Code() == StatusCode.ERR_INVALID_ARGS


def test_a_uid_in_flight_to_that_peer_is_err_bad_state():
    a = IOEngine("dupkey", IOEngineConfig(host="127.0.0.1", port=0))
    a.create_backend(BackendType.TCP, TcpBackendConfig(op_timeout_ms=2000))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        a.register_remote_engine(EngineDesc("silent", "127.0.0.1", silent.getsockname()[1]))
        ms = a.register_torch_tensor(torch.zeros(64, dtype=torch.uint8))
        theirs = MemoryDesc.unpack(ms.pack().replace(b"dupkey", b"silent"))
        first = a.write(ms, 0, theirs, 0, 8, 5)  # never answered: in flight
        second = a.write(ms, 0, theirs, 0, 8, 5)
        assert second.Code() == StatusCode.ERR_BAD_STATE and first.InProgress()
        # A transfer that times out is ERR_BAD_STATE too (as MORI's TCP backend), and
        # keeps ringxfer's finer code in its message.
        assert first.WaitFor(10000) == StatusCode.ERR_BAD_STATE and "ringxfer ERR_TIMEOUT" in first.Message()


def test_wait_for_returns_a_status_code(pair):
    a, b, _, _ = pair
    ms, md = a.register_torch_tensor(torch.ones(64, dtype=torch.uint8)), b.register_torch_tensor(torch.zeros(64, dtype=torch.uint8))
    assert a.write(ms, 0, md, 0, 64, 1).WaitFor(timeout_ms=10000) == StatusCode.SUCCESS
    assert TransferStatus().WaitFor(100) == StatusCode.INIT
    s = TransferStatus()
    s.SetCode(StatusCode.IN_PROGRESS)
    assert s.WaitFor(timeout_ms=20) == StatusCode.IN_PROGRESS


def test_transfer_status_setters_as_mori():
    s = TransferStatus()
    assert s.Init() and s.Code() == StatusCode.INIT and s.Message() == ""
    s.SetCode(StatusCode.IN_PROGRESS)
    assert s.InProgress()
    s.SetMessage("half way")
    assert s.Message() == "half way"
    s.Update(StatusCode.ERR_RDMA_OP, "first")
    s.Update(StatusCode.ERR_BAD_STATE, "second")  # the first error stays
    assert s.Failed() and s.Code() == StatusCode.ERR_RDMA_OP and s.Message() == "first"
    s.SetCode(StatusCode.SUCCESS)  # SetCode overwrites
    assert s.Succeeded() and not s.Failed()
    assert s.Wait() is None


def test_wait_for_blocks_and_releases_the_gil():
    """MORI's test_wait_for_blocks_and_releases_gil."""
    s = TransferStatus()
    s.SetCode(StatusCode.IN_PROGRESS)
    ran = []
    threading.Timer(0.05, lambda: s.Update(StatusCode.SUCCESS, "")).start()
    threading.Timer(0.01, lambda: ran.append(1)).start()
    t0 = time.monotonic()
    rc = s.WaitFor(timeout_ms=500)
    elapsed = time.monotonic() - t0
    assert rc == StatusCode.SUCCESS and 0.03 < elapsed < 0.30 and ran


def test_wait_all_without_a_backend_and_a_failure_outranks_in_progress():
    """MORI's test_wait_all_wrapper_success and test_wait_all_zero_timeout_failure_wins."""
    engine = IOEngine("py_wait_all_success", IOEngineConfig(host="127.0.0.1", port=0))
    statuses = [TransferStatus() for _ in range(3)]
    for i, s in enumerate(statuses):
        s.SetCode(StatusCode.IN_PROGRESS)
        threading.Timer(0.01 * (i + 1), lambda s=s: s.Update(StatusCode.SUCCESS, "")).start()
    assert engine.wait_all(statuses, timeout_ms=500) == StatusCode.SUCCESS
    assert all(s.Succeeded() for s in statuses)
    mixed = [TransferStatus() for _ in range(3)]
    for s, c in zip(mixed, (StatusCode.SUCCESS, StatusCode.IN_PROGRESS, StatusCode.ERR_RDMA_OP)):
        s.SetCode(c)
    assert engine.wait_all(mixed, timeout_ms=0) == StatusCode.ERR_RDMA_OP
    assert engine.wait_all([mixed[1]], timeout_ms=10) == StatusCode.IN_PROGRESS
    assert engine.wait_all([], timeout_ms=0) == StatusCode.SUCCESS


def test_a_batch_has_no_entry_cap(pair):
    a, b, _, _ = pair
    n = 20000
    src, dst = torch.randint(0, 255, (n * 4,), dtype=torch.uint8), torch.zeros(n * 4, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    offs = [i * 4 for i in range(n)]
    sess = a.create_session(ms, md)
    st = sess.batch_write(offs, offs, [3] * n, sess.allocate_transfer_uid())
    assert st.WaitFor(30000) == StatusCode.SUCCESS, st.Message()
    assert torch.equal(dst.view(n, 4)[:, :3], src.view(n, 4)[:, :3]) and not dst.view(n, 4)[:, 3].any()


def test_the_config_is_copied_at_construction():
    """MORI's example: one config object, its port changed between two engines."""
    p1, p2 = get_free_port(), get_free_port()
    config = IOEngineConfig(host="127.0.0.1", port=p1)
    first = IOEngine(key="initiator", config=config)
    config.port = p2
    second = IOEngine(key="target", config=config)
    first.create_backend(BackendType.TCP)
    second.create_backend(BackendType.TCP)
    assert (first.get_engine_desc().port, second.get_engine_desc().port, config.port) == (p1, p2, p2)


def test_create_backend_twice_warns_and_keeps_the_first(caplog):
    e = IOEngine("twice", IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.TCP)
    port = e.get_engine_desc().port
    with caplog.at_level(logging.WARNING, logger="mori.io"):
        assert e.create_backend(BackendType.TCP, TcpBackendConfig(num_data_conns=2)) is None
    assert "already exists" in caplog.text and e.get_engine_desc().port == port


def test_deregistering_an_unknown_engine_or_memory_is_silent(pair):
    a, b, _, _ = pair
    a.deregister_remote_engine(EngineDesc("nobody", "127.0.0.1", 1))
    unreachable = EngineDesc("no-address-yet", "", 0)  # a peer's desc from before its backend
    a.register_remote_engine(unreachable)  # kept, said once
    a.deregister_remote_engine(unreachable)
    other = IOEngine("other", IOEngineConfig(host="127.0.0.1", port=0))
    other.deregister_remote_engine(a.get_engine_desc())  # no backend either
    a.deregister_memory(MemoryDesc())


def test_empty_host_listens_on_every_interface_and_the_descriptor_is_reachable():
    e = IOEngine("everywhere", IOEngineConfig(host="", port=0))
    e.create_backend(BackendType.TCP)
    d = e.get_engine_desc()
    assert d.host not in ("", "0.0.0.0", "::") and d.port > 0
    with socket.create_connection(("127.0.0.1", d.port), timeout=5):
        pass
    with socket.create_connection((d.host, d.port), timeout=5):
        pass


def test_rdma_without_the_switch_is_a_clear_error_naming_it(monkeypatch):
    monkeypatch.delenv("RINGXFER_SERVE_RDMA_AS_TCP", raising=False)
    e = IOEngine("rdma", IOEngineConfig(host="127.0.0.1", port=0))
    for t in (BackendType.RDMA, BackendType.XGMI):
        with pytest.raises(RuntimeError, match="RINGXFER_SERVE_RDMA_AS_TCP=1.*serve_rdma_as_tcp"):
            e.create_backend(t)
    with pytest.raises(RuntimeError, match="no FABRIC"):
        e.create_backend(BackendType.FABRIC)
    with pytest.raises(NotImplementedError, match="FABRIC"):
        mio.fabric_alloc(1 << 20, 0)
    with pytest.raises(NotImplementedError, match="FABRIC"):
        mio.make_fabric_mem_pool()


def test_rdma_served_as_tcp_maps_qps_and_threads_and_says_so_once(monkeypatch, caplog):
    import mori.cpp._config as config_module

    monkeypatch.delenv("RINGXFER_SERVE_RDMA_AS_TCP", raising=False)
    monkeypatch.setattr(config_module, "_said", set())  # "once per process": start afresh
    mio.serve_rdma_as_tcp(True)
    try:
        with caplog.at_level(logging.WARNING, logger="mori.io"):
            a = IOEngine("ra", IOEngineConfig(host="127.0.0.1", port=0))
            a.create_backend(BackendType.RDMA, RdmaBackendConfig(3, -1, 2, PollCqMode.POLLING, True))
            b = IOEngine("rb", IOEngineConfig(host="127.0.0.1", port=0))
            b.create_backend(BackendType.RDMA, RdmaBackendConfig(3, -1, 2, PollCqMode.POLLING, True))
        assert caplog.text.count("3 data connections per peer") == 1 and "2 ring threads" in caplog.text
        assert "max_send_wr" in caplog.text  # what is ignored is named
        a.register_remote_engine(b.get_engine_desc())
        src, dst = torch.arange(200, dtype=torch.uint8), torch.zeros(200, dtype=torch.uint8)
        ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
        uid = a.allocate_transfer_uid()
        assert a.write(ms, 0, md, 0, 200, uid).WaitFor(10000) == StatusCode.SUCCESS
        assert torch.equal(src, dst)
        assert wait_inbound(b, a.get_engine_desc().key, uid).Succeeded()
        stats = a._engine._rx.stats()
        assert stats["ring_threads"] == 2
    finally:
        mio.serve_rdma_as_tcp(None)
    assert not mio.serving_rdma_as_tcp()


def test_notification_disabled_pop_inbound_is_none(serve):
    """MORI's test_notification_disabled (CPU tensors)."""
    a = IOEngine("notif_initiator", IOEngineConfig(host="127.0.0.1", port=0))
    b = IOEngine("notif_target", IOEngineConfig(host="127.0.0.1", port=0))
    cfg = RdmaBackendConfig(qp_per_transfer=1, post_batch_size=-1, num_worker_threads=1, enable_notification=False)
    a.create_backend(BackendType.RDMA, cfg)
    b.create_backend(BackendType.RDMA, cfg)
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    t1, t2 = torch.randint(1, 256, (1, 64), dtype=torch.uint8), torch.zeros((1, 64), dtype=torch.uint8)
    m1, m2 = a.register_torch_tensor(t1), b.register_torch_tensor(t2)
    uid = a.allocate_transfer_uid()
    st = a.write(m1, 0, m2, 0, 64, uid)
    while st.InProgress():
        pass
    assert st.Succeeded() and torch.equal(t1, t2)
    time.sleep(0.1)
    assert b.pop_inbound_transfer_status(a.get_engine_desc().key, uid) is None


def test_no_backend_fails_transfers_and_sessions_then_memory_joins_the_backend():
    """MORI's test_no_backend (CPU tensors), then what happens when a backend comes."""
    config = IOEngineConfig(host="127.0.0.1", port=0)
    initiator = IOEngine(key="no_be_initiator", config=config)
    target = IOEngine(key="no_be_target", config=config)
    initiator.register_remote_engine(target.get_engine_desc())
    target.register_remote_engine(initiator.get_engine_desc())
    t1, t2 = torch.randint(1, 256, (32,), dtype=torch.uint8), torch.zeros(32, dtype=torch.uint8)
    m1, m2 = initiator.register_torch_tensor(t1), target.register_torch_tensor(t2)
    assert (m1.engine_key, m1.data, m1.size, m1.loc) == ("no_be_initiator", t1.data_ptr(), 32, MemoryLocationType.CPU)
    st = initiator.batch_read([m1], [(0, 16)], [m2], [(0, 16)], [(16, 16)], [initiator.allocate_transfer_uid()])[0]
    assert st.Failed() and st.Code() == StatusCode.ERR_BAD_STATE
    assert initiator.create_session(m1, m2) is None
    assert "create backend first" in initiator._engine.ExplainSessionUnavailable(m1, m2)
    assert issubclass(SessionUnavailableError, RuntimeError)  # exported, as MORI's main
    with pytest.raises(RuntimeError, match="no backend yet"):
        m2.pack()
    # The memory registered before is registered with the backend when it comes.
    initiator.create_backend(BackendType.TCP)
    target.create_backend(BackendType.TCP)
    initiator.register_remote_engine(target.get_engine_desc())
    remote = MemoryDesc.unpack(m2.pack())
    st = initiator.write(m1, 0, remote, 0, 32, initiator.allocate_transfer_uid())
    assert st.WaitFor(10000) == StatusCode.SUCCESS and torch.equal(t1, t2)


def test_remove_backend_fails_later_transfers_and_a_new_backend_takes_the_registrations(pair):
    a, b, a_desc, _ = pair
    src, dst = torch.arange(16, dtype=torch.uint8) + 1, torch.zeros(16, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    sess = a.create_session(ms, md)
    a.remove_backend(BackendType.RDMA)  # never created: nothing
    assert a.write(ms, 0, md, 0, 16, 1).WaitFor(10000) == StatusCode.SUCCESS
    a.remove_backend(BackendType.TCP)
    assert a.write(ms, 0, md, 0, 16, 2).Code() == StatusCode.ERR_BAD_STATE
    assert sess.write(0, 0, 16, 3).Code() == StatusCode.ERR_BAD_STATE and not sess.alive()
    # A new backend listens on the same port (as MORI keeps the bound port) and takes
    # the engine's memory and peers again; the region has a new key, so its descriptor
    # is sent again, as after any registration.
    a.create_backend(BackendType.TCP)
    assert a.get_engine_desc().port == a_desc.port
    dst.zero_()
    assert a.write(ms, 0, md, 0, 16, 4).WaitFor(10000) == StatusCode.SUCCESS and torch.equal(src, dst)
    dst.zero_()
    st = b.read(md, 0, MemoryDesc.unpack(ms.pack()), 0, 16, b.allocate_transfer_uid())
    assert st.WaitFor(10000) == StatusCode.SUCCESS, st.Message()
    assert torch.equal(src, dst)


def test_a_status_the_caller_set_in_progress_is_finished_by_the_transfer_bound_to_it(pair):
    """A waiter on a status the caller drives wakes when the engine binds a transfer to
    it (MORI's C++ API takes the caller's status object)."""
    a, b, _, _ = pair
    src, dst = torch.ones(64, dtype=torch.uint8), torch.zeros(64, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    s = TransferStatus()
    s.SetCode(StatusCode.IN_PROGRESS)
    got = []
    waiter = threading.Thread(target=lambda: got.append(s.WaitFor(-1)))
    waiter.start()
    time.sleep(0.05)  # the waiter is waiting on the caller-driven status now
    a._engine.Write(ms, 0, md, 0, 64, s, a.allocate_transfer_uid())
    waiter.join(timeout=10)
    assert not waiter.is_alive(), "the waiter was not woken by the transfer"
    assert got == [StatusCode.SUCCESS] and torch.equal(src, dst)
    # SetCode(IN_PROGRESS) on a bound status leaves the transfer to finish it.
    s2 = TransferStatus()
    a._engine.Write(ms, 0, md, 0, 64, s2, a.allocate_transfer_uid())
    s2.SetCode(StatusCode.IN_PROGRESS)
    assert s2.WaitFor(10000) == StatusCode.SUCCESS
    assert a.wait_all([s2], timeout_ms=-1) == StatusCode.SUCCESS


# ---- MORI's own tests (CPU-capable) and example ---------------------------------------


def test_engine_desc_node_id_pid_and_pack(serve, monkeypatch):
    """MORI's test_engine_desc, _port_zero_auto_bind and _node_id_env_override."""
    engine = IOEngine(key="engine", config=IOEngineConfig(host="127.0.0.1", port=0))
    engine.create_backend(BackendType.RDMA)
    desc = engine.get_engine_desc()
    assert desc.node_id != "" and desc.pid > 0 and desc.port > 0
    assert EngineDesc.unpack(desc.pack()) == desc
    monkeypatch.setenv("MORI_NODE_ID", "node-id-test")
    assert IOEngine(key="engine_node_id", config=IOEngineConfig(host="127.0.0.1", port=0)).get_engine_desc().node_id == "node-id-test"


def test_mem_desc_of_a_cpu_tensor(serve):
    """MORI's test_mem_desc, its CPU half."""
    engine = IOEngine(key="engine", config=IOEngineConfig(host="127.0.0.1", port=0))
    engine.create_backend(BackendType.RDMA)
    tensor = torch.ones([1, 2, 34, 56])
    mem_desc = engine.register_torch_tensor(tensor)
    assert mem_desc.engine_key == "engine" and mem_desc.device_id == -1 and mem_desc.device_bus_id == ""
    assert mem_desc.data == tensor.data_ptr() and mem_desc.size == tensor.nelement() * tensor.element_size()
    assert mem_desc.loc == MemoryLocationType.CPU and mem_desc.numa_node >= -1
    assert all(b == 0 for b in mem_desc.ipc_handle)
    assert MemoryDesc.unpack(mem_desc.pack()) == mem_desc
    with pytest.raises(TypeError):
        hash(mem_desc)  # as MORI's: __eq__ without __hash__
    with pytest.raises(ValueError, match="size 0"):
        engine.register_memory(tensor.data_ptr(), 0, -1, MemoryLocationType.CPU)
    with pytest.raises(RuntimeError, match="contiguous"):
        engine.register_torch_tensor(torch.ones(4, 4).t())


def test_tcp_engine_desc_port_zero_auto_bind():
    """MORI's TCP test of the same name."""
    set_log_level("error")
    engine = IOEngine(key="tcp_port0", config=IOEngineConfig(host="127.0.0.1", port=0))
    engine.create_backend(BackendType.TCP, TcpBackendConfig())
    assert engine.get_engine_desc().port > 0
    set_log_level("warning")


def test_tcp_cpu_write_read_and_batch():
    """MORI's test_tcp_cpu_write_read_and_batch, on ports from get_free_port()."""
    a, b, a_desc, b_desc = tcp_pair("tcp", get_free_port(), get_free_port())
    src = torch.arange(0, 4096, dtype=torch.uint8)
    dst = torch.zeros_like(src)
    src_md, dst_md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    assert MemoryDesc.unpack(dst_md.pack()) == dst_md
    uid = a.allocate_transfer_uid()
    st = a.write(src_md, 0, dst_md, 0, src.numel(), uid)
    st.Wait()
    assert st.Succeeded(), st.Message()
    assert wait_inbound(b, a_desc.key, uid).Succeeded()
    assert torch.equal(src, dst)
    dst.zero_()
    uid = a.allocate_transfer_uid()
    st = a.read(src_md, 0, dst_md, 0, src.numel(), uid)
    st.Wait()
    assert st.Succeeded(), st.Message()
    assert wait_inbound(b, a_desc.key, uid).Succeeded()
    assert torch.equal(src, dst)
    sess = a.create_session(src_md, dst_md)
    assert sess is not None
    src.copy_(torch.arange(0, 4096) % 251)  # non-zero data, so the batch is seen
    dst.zero_()
    uid = sess.allocate_transfer_uid()
    offsets, sizes = [0, 256, 512, 768], [128] * 4
    st = sess.batch_write(offsets, offsets, sizes, uid)
    st.Wait()
    assert st.Succeeded(), st.Message()
    assert wait_inbound(b, a_desc.key, uid).Succeeded()
    for o, s in zip(offsets, sizes):
        assert torch.equal(src[o:o + s], dst[o:o + s])
    assert not dst[128:256].any() and not dst[896:].any()


def test_mori_example_sequence(serve):
    """MORI's examples/io/example.py with CPU tensors and free ports: one config object
    for two engines, RDMA requested, read, the flat batch_read form, a session batch."""
    set_log_level("info")
    config = IOEngineConfig(host="127.0.0.1", port=get_free_port())
    initiator = IOEngine(key="initiator", config=config)
    config.port = get_free_port()
    target = IOEngine(key="target", config=config)
    config = RdmaBackendConfig(qp_per_transfer=1)
    initiator.create_backend(BackendType.RDMA, config)
    target.create_backend(BackendType.RDMA, config)
    initiator_desc, target_desc = initiator.get_engine_desc(), target.get_engine_desc()
    initiator.register_remote_engine(target_desc)
    target.register_remote_engine(initiator_desc)
    size = 1024
    t1, t2 = torch.zeros(size, dtype=torch.uint8), torch.randint(0, 255, (size,), dtype=torch.uint8)
    m1, m2 = initiator.register_torch_tensor(t1), target.register_torch_tensor(t2)
    st = initiator.read(m1, 0, m2, 0, size, initiator.allocate_transfer_uid())
    while st.InProgress():
        pass
    assert torch.equal(t1, t2), st.Message()
    initiator.deregister_memory(m1)
    target.deregister_memory(m2)
    t1, t2 = torch.zeros(4096, dtype=torch.uint8), torch.randint(0, 255, (4096,), dtype=torch.uint8)
    m1, m2 = initiator.register_torch_tensor(t1), target.register_torch_tensor(t2)
    offsets, sizes = [0, 1024, 2048, 3072], [1024] * 4
    st = initiator.batch_read(m1, offsets, m2, offsets, sizes, initiator.allocate_transfer_uid())  # flat form
    while st.InProgress():
        pass
    assert st.Succeeded() and torch.equal(t1, t2)
    t1.zero_()
    session = initiator.create_session(m1, m2)
    st = session.batch_read(offsets, offsets, sizes, session.allocate_transfer_uid())
    while st.InProgress():
        pass
    assert st.Succeeded() and torch.equal(t1, t2)
    initiator.deregister_memory(m1)
    target.deregister_memory(m2)
    initiator.deregister_remote_engine(target_desc)
    target.deregister_remote_engine(initiator_desc)
    set_log_level("warning")


def test_a_registered_tensor_stays_alive_until_it_is_deregistered(pair):
    """A tensor registered and dropped by its caller is not freed under the transfers
    (before, a write into such a tensor corrupted the heap: malloc aborted)."""
    import gc
    import weakref

    a, b, _, _ = pair
    src = torch.arange(64, dtype=torch.uint8)
    dropped = torch.zeros(64, dtype=torch.uint8)
    alive = weakref.ref(dropped)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dropped)
    del dropped
    gc.collect()
    assert alive() is not None
    assert a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid()).WaitFor(10000) == StatusCode.SUCCESS
    assert torch.equal(alive(), src)
    b.deregister_memory(md)
    gc.collect()
    assert alive() is None
