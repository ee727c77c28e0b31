"""An engine's life in Python: close() while peers and sessions still use it, memory held
by the engine (buffer exports), waits without limit, and configuration values out of range
(issue 10, symptoms 4, 5 and the Python parts of 9)."""
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import pytest

import ringxfer
from conftest import make_engine
from ringxfer import (
    EngineDesc,
    IOEngineConfig,
    MemoryDesc,
    StatusCode,
    TcpBackendConfig,
    TransferError,
)

# ---- close() -------------------------------------------------------------------------

# Runs in its own interpreter: before the fix, the target's ring threads wrote into the
# freed array and the process aborted or hung, which must fail this test, not end pytest.
_CLOSE_WHILE_A_PEER_STREAMS = textwrap.dedent(
    r"""
    import socket, threading, time, weakref
    import numpy as np
    from ringxfer import BackendType, IOEngine, IOEngineConfig, TcpBackendConfig

    def make(key):
        e = IOEngine(key, IOEngineConfig(host="127.0.0.1", port=0))
        e.create_backend(BackendType.TCP, TcpBackendConfig(
            op_timeout_ms=3000, num_data_conns=2, striping_threshold_bytes=65536))
        return e

    a, b = make("initiator"), make("target")
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    port = b.get_engine_desc().port
    size = 64 << 20  # large enough for numpy to map it, and unmap it when freed
    dst = np.zeros(size, np.uint8)
    gone = weakref.ref(dst)
    md_b = b.register_memory(dst)
    del dst  # held only by the target engine now
    src = np.full(size, 7, np.uint8)
    md_a = a.register_memory(src)
    # A live session on each side: it references the engine's core object.
    sess_b = b.create_session(md_b, md_a)
    sess_a = a.create_session(md_a, md_b)
    assert sess_a is not None and sess_b is not None

    closed_at = [None]  # when b.close() returned
    started, statuses, errors = [], [], []  # when each write was started, its status
    stop = threading.Event()

    def stream():
        i = 0
        try:
            while not stop.is_set():
                off = (i * 4096) % size
                started.append(time.monotonic())
                statuses.append(sess_a.write(off, off, 4096, sess_a.allocate_transfer_uid()))
                if closed_at[0] is not None and started[-1] - closed_at[0] > 5:
                    break
                if len(statuses) > 8:
                    statuses[-9].WaitFor(5000)
                i += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=stream)
    t.start()
    deadline = time.monotonic() + 20
    while len(statuses) < 200 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(statuses) >= 200, "the initiator never got going"
    b.close()
    closed_at[0] = time.monotonic()
    n_closed = len(statuses)
    assert gone() is None, "close() kept the target's array"
    deadline = time.monotonic() + 20
    while len(statuses) - n_closed < 200 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)  # keep streaming into the closed target
    stop.set()
    t.join(30)
    assert not t.is_alive() and not errors, errors
    for s in statuses:
        s.WaitFor(20000)
    assert all(s.done() for s in statuses)
    after = [s for t0, s in zip(started, statuses) if t0 > closed_at[0]]
    assert after, "no write was started after close()"
    won = [s for s in after if s.Succeeded()]
    assert not won, f"{len(won)} of {len(after)} writes into a closed engine succeeded"
    assert all(int(s.Code()) > 10 for s in after), {s.Code() for s in after}

    # The closed target listens no more.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        raise AssertionError(f"the closed target still accepts connections on port {port}")
    except ConnectionRefusedError:
        pass
    assert not sess_b.alive()
    try:
        sess_b.write(0, 0, 8, 1)
        raise AssertionError("session.write on a closed engine did not raise")
    except RuntimeError as e:
        assert "target is closed" in str(e), e

    a.close()
    assert not sess_a.alive()
    try:
        sess_a.write(0, 0, 8, 1)
        raise AssertionError("session.write on a closed engine did not raise")
    except RuntimeError as e:
        assert "initiator is closed" in str(e), e
    a.close()
    b.close()
    print("ok", len(statuses), len(after))
    """
)


def test_close_stops_the_engine_before_releasing_its_memory():
    proc = subprocess.run(
        [sys.executable, "-c", _CLOSE_WHILE_A_PEER_STREAMS],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )


def test_every_call_on_a_closed_engine_and_its_sessions_raises():
    a = make_engine("closing-initiator")
    b = make_engine("closing-target")
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    src, dst = np.ones(4096, np.uint8), np.zeros(4096, np.uint8)
    ms, md = a.register_memory(src), b.register_memory(dst)
    sess = a.create_session(ms, md)
    sess.write(0, 0, 4096, sess.allocate_transfer_uid()).wait(timeout=20)
    assert dst.all() and sess.alive()
    desc = a.get_engine_desc()
    a.close()
    a.close()  # idempotent
    with a:  # __exit__ closes again
        pass
    assert not sess.alive()
    for call in (
        lambda: sess.write(0, 0, 8, 1),
        lambda: sess.read(0, 0, 8, 1),
        lambda: sess.batch_write([0], [0], [8], 1),
        lambda: sess.batch_read([0], [0], [8], 1),
        lambda: sess.allocate_transfer_uid(),
        lambda: a.write(ms, 0, md, 0, 8, 1),
        lambda: a.read(ms, 0, md, 0, 8, 1),
        lambda: a.batch_write([ms], [[0]], [md], [[0]], [[8]], [1]),
        lambda: a.batch_read([ms], [[0]], [md], [[0]], [[8]], [1]),
        lambda: a.create_session(ms, md),
        lambda: a.register_memory(np.zeros(8, np.uint8)),
        lambda: a.deregister_memory(ms),
        lambda: a.register_remote_engine(b.get_engine_desc()),
        lambda: a.deregister_remote_engine(b.get_engine_desc()),
        lambda: a.allocate_transfer_uid(),
        lambda: a.pop_inbound_transfer_status("closing-target", 1),
        lambda: a.stats(),
    ):
        with pytest.raises(RuntimeError, match="engine closing-initiator is closed"):
            call()
    with pytest.raises(RuntimeError, match="closed"):
        a.create_backend(ringxfer.BackendType.TCP)
    assert (a.get_engine_desc().key, a.get_engine_desc().port) == (desc.key, desc.port)
    b.close()


def test_close_while_another_thread_starts_transfers():
    """Calls racing close() either start before it (and their statuses end) or raise
    RuntimeError after it; close() waits for the ones in progress."""
    a = make_engine("racing-initiator")
    b = make_engine("racing-target")
    try:
        a.register_remote_engine(b.get_engine_desc())
        src, dst = np.ones(1 << 20, np.uint8), np.zeros(1 << 20, np.uint8)
        ms, md = a.register_memory(src), b.register_memory(dst)
        sess = a.create_session(ms, md)
        statuses, errors = [], []

        def stream():
            try:
                for i in range(100000):
                    off = (i * 4096) % (1 << 20)
                    statuses.append(sess.write(off, off, 4096, sess.allocate_transfer_uid()))
                    statuses.append(a.write(ms, off, md, off, 4096, a.allocate_transfer_uid()))
            except RuntimeError as e:
                errors.append(e)

        threads = [threading.Thread(target=stream) for _ in range(2)]
        for t in threads:
            t.start()
        while len(statuses) < 100 and all(t.is_alive() for t in threads):
            time.sleep(0.001)
        a.close()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert len(errors) == 2 and all("engine racing-initiator is closed" in str(e)
                                        for e in errors), errors
        assert all(s.WaitFor(20000) for s in statuses)
    finally:
        a.close()
        b.close()


def test_close_releases_memory_held_only_by_the_engine():
    e = make_engine("holder")
    arr = np.zeros(1 << 20, np.uint8)
    gone = weakref.ref(arr)
    e.register_memory(arr)
    del arr
    assert gone() is not None
    e.close()
    assert gone() is None


# ---- buffer exports ------------------------------------------------------------------


def test_a_registered_bytearray_cannot_be_resized():
    e = make_engine("bytearrays")
    try:
        ba = bytearray(4096)
        md = e.register_memory(ba)
        with pytest.raises(BufferError):
            ba.extend(b"x" * (1 << 20))
        with pytest.raises(BufferError):
            del ba[100:]
        assert len(ba) == 4096
        ba[0:4] = b"abcd"  # writing in place is fine
        e.deregister_memory(md)
        ba.extend(b"x" * (1 << 20))  # no longer registered
        assert len(ba) == 4096 + (1 << 20)
        other = bytearray(64)
        e.register_buffer(other)
        with pytest.raises(BufferError):
            other.append(1)
    finally:
        e.close()
    other.append(1)  # close() released the export
    assert len(other) == 65


def test_a_size_larger_than_the_buffer_is_refused_and_leaves_no_export():
    e = make_engine("too-large")
    try:
        ba = bytearray(64)
        with pytest.raises(ValueError, match="larger than the buffer"):
            e.register_memory(ba, 65)
        ba.append(1)
        md = e.register_memory(ba, 16)
        assert md.size == 16
        with pytest.raises(BufferError):
            ba.append(1)
    finally:
        e.close()


# ---- waits without limit -------------------------------------------------------------


# The largest number of milliseconds that nanoseconds hold: the binding passes it on, and
# TransferStatus::wait / wait_all must not overflow when they add it to the clock.
_MAX_NS_IN_MS = (2**63 - 1) // 10**6

_HUGE_WAITS = {
    "WaitFor(2**62)": lambda e, s: s.WaitFor(2**62),
    "WaitFor(2**63-1)": lambda e, s: s.WaitFor(2**63 - 1),
    "WaitFor(max ns in ms)": lambda e, s: s.WaitFor(_MAX_NS_IN_MS),
    "wait(1e15 s)": lambda e, s: s.wait(timeout=1e15),
    "wait(inf)": lambda e, s: s.wait(timeout=float("inf")),
    "wait_all(2**62)": lambda e, s: ringxfer.wait_all([s], 2**62),
    "wait_all(10**18)": lambda e, s: ringxfer.wait_all([s], 10**18),
    "wait_all(10**30)": lambda e, s: ringxfer.wait_all([s], 10**30),
    "wait_all(max ns in ms)": lambda e, s: ringxfer.wait_all([s], _MAX_NS_IN_MS),
    "engine.wait_all(2**62)": lambda e, s: e.wait_all([s], 2**62),
}


@pytest.mark.parametrize("name", list(_HUGE_WAITS))
def test_huge_timeouts_wait_without_limit(name):
    """A timeout too large for the clock waits until the end (here: the operation timeout
    of a write to an engine that never answers), instead of returning at once."""
    a = make_engine("patient", op_timeout_ms=500)
    silent = socket.socket()
    try:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        a.register_remote_engine(EngineDesc("silence", "127.0.0.1", silent.getsockname()[1]))
        ms = a.register_memory(np.zeros(64, np.uint8))
        fake = MemoryDesc.unpack(ms.pack().replace(b"patient", b"silence"))
        st = a.write(ms, 0, fake, 0, 8, a.allocate_transfer_uid())
        try:
            result = _HUGE_WAITS[name](a, st)
        except TransferError as e:  # wait() raises the failure it waited for
            result = e.code
        assert st.done(), f"{name} returned {result!r} while the transfer was in progress"
        assert st.Code() == StatusCode.ERR_TIMEOUT, st.Message()
        assert result in (True, StatusCode.ERR_TIMEOUT), result
    finally:
        silent.close()
        a.close()


# ---- configuration values out of range -----------------------------------------------


def test_engine_desc_rejects_ports_out_of_range():
    for bad in (70000, 65536, -1):
        with pytest.raises(ValueError, match=f"port = {bad}"):
            EngineDesc("k", "127.0.0.1", bad)
    assert EngineDesc("k", "127.0.0.1", 65535).port == 65535
    assert EngineDesc("k", "127.0.0.1", 0).port == 0


def test_io_engine_config_rejects_ports_out_of_range_when_assigned():
    c = IOEngineConfig(host="127.0.0.1", port=1234)
    for bad in (70000, -1):
        with pytest.raises(ValueError, match=f"IOEngineConfig.port = {bad}"):
            c.port = bad
    assert c.port == 1234


_NON_NEGATIVE_FIELDS = [
    "sock_sndbuf_bytes",
    "sock_rcvbuf_bytes",
    "op_timeout_ms",
    "keepalive_idle_sec",
    "keepalive_intvl_sec",
    "keepalive_cnt",
    "striping_threshold_bytes",
    "num_rings",
    "zerocopy_threshold_bytes",
    "chunk_bytes",
    "ring_entries",
    "wait_spin_us",
]


@pytest.mark.parametrize("field", _NON_NEGATIVE_FIELDS)
def test_tcp_config_rejects_negative_values(field):
    for bad in (-1, -(2**31)):
        with pytest.raises(ValueError, match=rf"TcpBackendConfig\.{field} = {bad}\b"):
            TcpBackendConfig(**{field: bad})
    c = TcpBackendConfig()
    before = getattr(c, field)
    with pytest.raises(ValueError, match=rf"TcpBackendConfig\.{field} = -5\b"):
        setattr(c, field, -5)
    assert getattr(c, field) == before


def test_tcp_config_rejects_buffer_sizes_that_would_wrap():
    # -(2**32) + 4096 became 4096 once cast to int.
    with pytest.raises(ValueError, match="sock_sndbuf_bytes"):
        TcpBackendConfig(sock_sndbuf_bytes=-(2**32) + 4096)
    with pytest.raises(ValueError, match="sock_rcvbuf_bytes"):
        TcpBackendConfig(sock_rcvbuf_bytes=-(2**32) + 4096)


def test_tcp_config_rejects_negative_ring_cpus():
    with pytest.raises(ValueError, match=r"TcpBackendConfig\.ring_cpus\[1\] = -1"):
        TcpBackendConfig(ring_cpus=[0, -1])


def test_tcp_config_zero_values_keep_their_meaning():
    # 0 = kernel autotuning (buffers), zero-copy off, every transfer striped.
    e = make_engine("zeros", sock_sndbuf_bytes=0, sock_rcvbuf_bytes=0,
                    zerocopy_threshold_bytes=0, striping_threshold_bytes=0, wait_spin_us=0)
    e.close()
