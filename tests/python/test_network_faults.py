"""Transfers across a real network path with faults in it.

Most tests put the initiator here and the target in its own network namespace behind
a veth pair, and make the faults with nftables (random loss, a black hole), `ip link
set down` and `tc tbf` (a rate limit). They need root and the `ip`, `nft` and `tc`
commands (Debian: iproute2, nftables), and are skipped otherwise; every fault is
removed and the namespace deleted when a test ends. The long-path and frozen-peer tests
need neither: one delays loopback traffic through a relay of its own (this kernel has
no netem), the other stops the target process with SIGSTOP."""
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from ringxfer import BackendType, EngineDesc, IOEngine, IOEngineConfig, MemoryDesc, StatusCode
from ringxfer import TcpBackendConfig

needs_root_and_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "tc")),
    reason="needs root and ip, nft, tc",
)

NS, IF_HERE, IF_THERE = "rx-fault", "rxf-a", "rxf-b"
HERE, THERE = "10.79.0.1", "10.79.0.2"
SIZE = 16 << 20


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def teardown_net():
    sh("ip", "netns", "del", NS, check=False)
    sh("ip", "link", "del", IF_HERE, check=False)


class Target:
    """rx-fault (THERE) runs tests/python/target_process.py; this side is HERE."""

    def __init__(self):
        teardown_net()
        try:
            sh("ip", "netns", "add", NS)
            sh("ip", "link", "add", IF_HERE, "type", "veth", "peer", "name", IF_THERE)
        except subprocess.CalledProcessError as e:  # a container without CAP_NET_ADMIN
            teardown_net()
            pytest.skip(f"cannot make a network namespace and a veth pair here: {e.stderr.strip()}")
        sh("ip", "link", "set", IF_THERE, "netns", NS)
        sh("ip", "addr", "add", f"{HERE}/24", "dev", IF_HERE)
        sh("ip", "link", "set", IF_HERE, "up")
        sh("ip", "-n", NS, "addr", "add", f"{THERE}/24", "dev", IF_THERE)
        sh("ip", "-n", NS, "link", "set", IF_THERE, "up")
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, os.path.join(here, "target_process.py"),
             THERE, str(SIZE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        line = self.proc.stdout.readline().split()
        assert len(line) == 2, "the target process did not start"
        self.desc = EngineDesc.unpack(bytes.fromhex(line[0]))
        self.md = MemoryDesc.unpack(bytes.fromhex(line[1]))
        # Whether nftables works in the namespace (a kernel without nf_tables has the
        # command but not the feature); tests that need it skip, naming the reason.
        probe = subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], text=True,
                               capture_output=True, input="table inet rxprobe {}\n")
        self.nft_missing = probe.stderr.strip() if probe.returncode != 0 else None
        sh("ip", "netns", "exec", NS, "nft", "delete", "table", "inet", "rxprobe", check=False)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        teardown_net()

    def nft(self, rules):
        """Loads `rules` into the table inet rxfault of the target's namespace."""
        if self.nft_missing is not None:
            pytest.skip(f"nftables does not work here: {self.nft_missing}")
        subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], check=True, text=True,
                       input=f"table inet rxfault {{\n{rules}\n}}\n")

    def nft_clear(self):
        sh("ip", "netns", "exec", NS, "nft", "delete", "table", "inet", "rxfault", check=False)

    def nft_dropped(self):
        """Packets the table's counters have seen (every rule counts what it drops)."""
        out = sh("ip", "netns", "exec", NS, "nft", "list", "table", "inet", "rxfault").stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


def initiator(timeout_ms):
    e = IOEngine("fault-initiator", IOEngineConfig(host=HERE, port=0))
    e.create_backend(BackendType.TCP, TcpBackendConfig(op_timeout_ms=timeout_ms))
    return e


def write_then_read(e, target, rng, wait_ms):
    """Writes SIZE random bytes to the target, reads them back elsewhere, compares."""
    src = rng.integers(0, 256, SIZE, dtype=np.uint8)
    back = np.zeros(SIZE, np.uint8)
    ms, mb = e.register_memory(src), e.register_memory(back)
    w = e.write(ms, 0, target.md, 0, SIZE, e.allocate_transfer_uid())
    assert w.WaitFor(wait_ms), "the write hung past its wait"
    assert w.Code() == StatusCode.SUCCESS, w.Message()
    r = e.read(mb, 0, target.md, 0, SIZE, e.allocate_transfer_uid())
    assert r.WaitFor(wait_ms), "the read hung past its wait"
    assert r.Code() == StatusCode.SUCCESS, r.Message()
    assert np.array_equal(src, back), "the bytes read back differ from those written"
    e.deregister_memory(ms)
    e.deregister_memory(mb)


@needs_root_and_tools
def test_transfers_survive_random_packet_loss(target):
    rng = np.random.default_rng(1)
    e = initiator(timeout_ms=30000)
    try:
        e.register_remote_engine(target.desc)
        target.nft("""
          chain input { type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < 2 counter drop; }
          chain output { type filter hook output priority 0; meta l4proto tcp numgen random mod 100 < 2 counter drop; }
        """)
        write_then_read(e, target, rng, wait_ms=60000)
        assert target.nft_dropped() > 0, "the loss rules dropped nothing: the test tested nothing"
        assert e.stats()["transfers_failed"] == 0
    finally:
        e.close()


@needs_root_and_tools
@pytest.mark.parametrize("fault", ["drop", "link-down"])
def test_black_hole_fails_pending_transfers_within_the_timeout_then_recovers(target, fault):
    timeout_ms = 1500
    rng = np.random.default_rng(2)
    e = initiator(timeout_ms=timeout_ms)
    try:
        e.register_remote_engine(target.desc)
        write_then_read(e, target, rng, wait_ms=20000)  # the connections are up
        src = np.ones(SIZE, np.uint8)
        ms = e.register_memory(src)
        if fault == "drop":
            target.nft("""
              chain input { type filter hook input priority 0; meta l4proto tcp counter drop; }
              chain output { type filter hook output priority 0; meta l4proto tcp counter drop; }
            """)
        else:
            sh("ip", "link", "set", IF_HERE, "down")
        t0 = time.monotonic()
        pending = [e.write(ms, 0, target.md, 0, SIZE, e.allocate_transfer_uid()),
                   e.read(ms, 0, target.md, 0, SIZE, e.allocate_transfer_uid()),
                   e.write(ms, 0, target.md, 0, 64, e.allocate_transfer_uid())]
        for st in pending:
            assert st.WaitFor(timeout_ms + 5000), "a transfer hung past its timeout"
        elapsed = time.monotonic() - t0
        for st in pending:
            assert st.Failed(), "a transfer into a black hole succeeded"
            assert st.Code() in (StatusCode.ERR_TIMEOUT, StatusCode.ERR_CONNECTION_LOST), st.Message()
        assert elapsed < timeout_ms / 1000 + 3, f"failing took {elapsed:.1f} s"
        assert elapsed >= timeout_ms / 1000 * 0.9, f"failed after {elapsed:.2f} s, before the timeout"
        if fault == "drop":
            assert target.nft_dropped() > 0
            target.nft_clear()
        else:
            sh("ip", "link", "set", IF_HERE, "up")
        # The path is back: new transfers succeed (over the old connections once TCP
        # retransmits, or over new ones).
        write_then_read(e, target, rng, wait_ms=30000)
        e.deregister_memory(ms)
    finally:
        e.close()


@needs_root_and_tools
def test_transfers_keep_to_a_rate_limited_link(target):
    rate_mbit = 400
    rng = np.random.default_rng(3)
    e = initiator(timeout_ms=30000)
    try:
        e.register_remote_engine(target.desc)
        write_then_read(e, target, rng, wait_ms=20000)
        tbf = sh("tc", "qdisc", "add", "dev", IF_HERE, "root", "tbf", "rate", f"{rate_mbit}mbit",
                 "burst", "256kb", "latency", "100ms", check=False)
        if tbf.returncode != 0:  # a kernel without sch_tbf
            pytest.skip(f"tc tbf does not work here: {tbf.stderr.strip()}")
        src = rng.integers(0, 256, SIZE, dtype=np.uint8)
        ms = e.register_memory(src)
        t0 = time.monotonic()
        w = e.write(ms, 0, target.md, 0, SIZE, e.allocate_transfer_uid())
        assert w.WaitFor(30000) and w.Code() == StatusCode.SUCCESS, w.Message()
        elapsed = time.monotonic() - t0
        floor = SIZE * 8 / (rate_mbit * 1e6)
        assert elapsed > 0.8 * floor, f"{SIZE} B in {elapsed:.3f} s: faster than the {rate_mbit} Mbit/s limit"
        back = np.zeros(SIZE, np.uint8)
        mb = e.register_memory(back)
        r = e.read(mb, 0, target.md, 0, SIZE, e.allocate_transfer_uid())
        assert r.WaitFor(30000) and r.Code() == StatusCode.SUCCESS, r.Message()
        assert np.array_equal(src, back)
    finally:
        sh("tc", "qdisc", "del", "dev", IF_HERE, "root", check=False)
        e.close()


class DelayRelay:
    """A TCP relay on loopback that holds every chunk for `delay` seconds each way: a
    long path (this kernel has no netem). Threads; the queues are unbounded, so keep the
    transfers small."""

    def __init__(self, target_port, delay):
        self.delay, self.target_port = delay, target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return  # closed
            up = socket.create_connection(("127.0.0.1", self.target_port))
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [down, up]
            self._pump(down, up)
            self._pump(up, down)

    def _pump(self, src, dst):
        q = queue.Queue()

        def read():
            while True:
                try:
                    data = src.recv(1 << 20)
                except OSError:
                    data = b""
                q.put((time.monotonic() + self.delay, data))
                if not data:
                    return

        def write():
            while True:
                due, data = q.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self):
        self.listener.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_transfers_over_a_long_path_stay_pipelined():
    """25 ms each way through a relay: a transfer takes at least the 50 ms round trip,
    and 32 transfers issued together share round trips instead of queueing one behind
    another (32 x 50 ms = 1.6 s if they did)."""
    delay = 0.025
    b = IOEngine("relay-target", IOEngineConfig(host="127.0.0.1", port=0))
    b.create_backend(BackendType.TCP)
    relay = DelayRelay(b.get_engine_desc().port, delay)
    a = IOEngine("relay-initiator", IOEngineConfig(host="127.0.0.1", port=0))
    a.create_backend(BackendType.TCP, TcpBackendConfig(op_timeout_ms=5000))
    try:
        a.register_remote_engine(EngineDesc("relay-target", host="127.0.0.1", port=relay.port))
        rng = np.random.default_rng(4)
        size = 1 << 20
        src = rng.integers(0, 256, size, dtype=np.uint8)
        dst = np.zeros(size, np.uint8)
        back = np.zeros(size, np.uint8)
        ms, mb, md = a.register_memory(src), a.register_memory(back), b.register_memory(dst)
        w = a.write(ms, 0, md, 0, size, a.allocate_transfer_uid())  # connects, then writes
        assert w.WaitFor(10000) and w.Code() == StatusCode.SUCCESS, w.Message()
        assert np.array_equal(src, dst)
        t0 = time.monotonic()
        w = a.write(ms, 0, md, 0, 8, a.allocate_transfer_uid())
        assert w.WaitFor(5000) and w.Code() == StatusCode.SUCCESS, w.Message()
        one = time.monotonic() - t0
        assert one >= 2 * delay, f"a transfer took {one * 1e3:.1f} ms: the relay is not in the path"
        t0 = time.monotonic()
        many = [a.write(ms, i * 4096, md, i * 4096, 4096, a.allocate_transfer_uid())
                for i in range(32)]
        for st in many:
            assert st.WaitFor(5000) and st.Code() == StatusCode.SUCCESS, st.Message()
        together = time.monotonic() - t0
        assert together < 16 * 2 * delay, (
            f"32 transfers took {together * 1e3:.0f} ms: they waited for each other's round trips")
        r = a.read(mb, 0, md, 0, size, a.allocate_transfer_uid())
        assert r.WaitFor(10000) and r.Code() == StatusCode.SUCCESS, r.Message()
        assert np.array_equal(src, back)
    finally:
        a.close()
        b.close()
        relay.close()


def test_a_frozen_peer_fails_transfers_within_the_timeout_and_serves_again_when_thawed():
    """SIGSTOP: the target's kernel still accepts bytes until its socket buffers fill, then
    advertises a zero window; nothing is lost and nothing is acknowledged by the engine.
    Pending transfers fail at their deadline; after SIGCONT new transfers succeed."""
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, os.path.join(here, "target_process.py"),
                             "127.0.0.1", str(SIZE)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    timeout_ms = 1500
    e = IOEngine("frozen-initiator", IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.TCP, TcpBackendConfig(op_timeout_ms=timeout_ms))
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 2, "the target process did not start"
        remote = EngineDesc.unpack(bytes.fromhex(line[0]))
        rmd = MemoryDesc.unpack(bytes.fromhex(line[1]))
        e.register_remote_engine(remote)
        far = types.SimpleNamespace(md=rmd)
        rng = np.random.default_rng(5)
        write_then_read(e, far, rng, wait_ms=20000)
        src = np.full(SIZE, 7, np.uint8)
        ms = e.register_memory(src)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            pending = [e.write(ms, 0, rmd, 0, SIZE, e.allocate_transfer_uid()),
                       e.read(ms, 0, rmd, 0, SIZE, e.allocate_transfer_uid())]
            for st in pending:
                assert st.WaitFor(timeout_ms + 5000), "a transfer to a frozen peer hung"
                assert st.Failed(), "a transfer to a frozen peer succeeded"
            elapsed = time.monotonic() - t0
            assert timeout_ms / 1000 * 0.9 <= elapsed < timeout_ms / 1000 + 3, f"{elapsed:.2f} s"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        write_then_read(e, far, rng, wait_ms=20000)
        e.deregister_memory(ms)
    finally:
        e.close()
        if proc.poll() is None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
