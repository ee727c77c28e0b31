"""The client side of the two-process tests: call sequences of vLLM's MoRIIO connector,
SGLang's MORI backend and ATOM's MoRIIO connector, written against ``mori.io`` as those
clients are (CPU tensors in place of GPU ones), each run in its own process. Processes
exchange packed descriptors and block ids over a multiprocessing pipe, as the clients
do over ZMQ. Every function here runs in a spawned child; results go back as
("ok", detail) or ("error", traceback)."""

import functools
import os
import pickle
import socket
import threading
import time
import traceback

import torch

# ---- shared ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guarded(fn):
    """Runs fn(peer, *args), ``peer`` being the pipe to the other client process, and
    reports its outcome to the test on ``result``."""

    def run(result, peer, *args):
        # Plain pickle (tensors by value): multiprocessing's own pickler would share
        # tensors through file descriptors of this process, which is about to exit.
        try:
            detail = fn(peer, *args)
            result.send_bytes(pickle.dumps(("ok", detail)))
        except BaseException:  # noqa: BLE001 - reported to the test
            result.send_bytes(pickle.dumps(("error", traceback.format_exc())))
        finally:
            result.close()

    return functools.wraps(fn)(run)  # picklable by name for spawned processes


def pattern(shape, seed) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 255, shape, dtype=torch.uint8, generator=g)


def poll_until_done(statuses, timeout_s=30.0):
    """vLLM's waiting_for_transfer_complete: Succeeded()/Failed() every millisecond."""
    deadline = time.monotonic() + timeout_s
    pending = list(statuses)
    while pending:
        still = []
        for s in pending:
            if s.Succeeded():
                continue
            if s.Failed():
                raise RuntimeError(f"transfer failed: {s.Message()} (code={s.Code()})")
            still.append(s)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} transfers still in progress")
            time.sleep(0.001)


# ---- vLLM MoRIIO ---------------------------------------------------------------------
# KV cache per layer: [2, num_blocks, block_size, heads, head_dim] (K then V), fp16.
V_LAYERS, V_BLOCKS, V_BS, V_HEADS, V_DIM = 4, 16, 4, 2, 8


def vllm_kv(seed=None):
    shape = (2, V_BLOCKS, V_BS, V_HEADS, V_DIM)
    if seed is None:
        return {f"model.layers.{i}.attn": torch.zeros(shape, dtype=torch.float16) for i in range(V_LAYERS)}
    return {
        f"model.layers.{i}.attn": pattern((2 * V_BLOCKS * V_BS * V_HEADS * V_DIM * 2,), seed + i)
        .view(torch.float16)
        .view(shape)
        for i in range(V_LAYERS)
    }


def vllm_offsets(local_blocks, remote_blocks):
    """vLLM's compute_block_transfer_offsets: K and V entries per block pair, sorted by
    local offset, contiguous runs merged."""
    elem = 2
    stride = V_BS * V_HEADS * V_DIM
    kv_stride = stride * V_BLOCKS
    block_len = stride * elem
    entries = []
    for lb, rb in zip(local_blocks, remote_blocks):
        entries.append((elem * lb * stride, elem * rb * stride))
        entries.append((elem * (kv_stride + lb * stride), elem * (kv_stride + rb * stride)))
    entries.sort()
    lo, ro, sz = [], [], []
    for l, r in entries:
        if lo and lo[-1] + sz[-1] == l and ro[-1] + sz[-1] == r:
            sz[-1] += block_len
        else:
            lo.append(l)
            ro.append(r)
            sz.append(block_len)
    return lo, ro, sz


def vllm_engine(role):
    from mori.io import BackendType, IOEngine, IOEngineConfig, PollCqMode, RdmaBackendConfig

    ip = "127.0.0.1"
    engine = IOEngine(f"{role}:{ip}:6301:tp0:dp0", IOEngineConfig(ip, free_port()))  # positional
    engine.create_backend(
        BackendType.RDMA, RdmaBackendConfig(1, -1, 1, PollCqMode.POLLING, enable_notification=False)
    )
    return engine


@guarded
def vllm_producer(conn, mode):
    """The prefill side. READ mode: registers its KV cache, sends its metadata, waits
    for one release per request. WRITE mode: also runs vLLM's writer thread."""
    from mori.io import EngineDesc, MemoryDesc

    engine = vllm_engine("producer")
    kv = vllm_kv(seed=100)
    meta = {name: [engine.register_torch_tensor(t).pack()] for name, t in kv.items()}
    for name, t in kv.items():
        assert MemoryDesc.unpack(meta[name][0]).data == t.data_ptr()
    conn.send((engine.get_engine_desc().pack(), pickle.dumps(meta)))
    if mode == "read":
        # Decode reads; each finished request is released (vLLM frees its blocks then).
        count = conn.recv()
        for _ in range(count):
            assert conn.recv() == "release"
        return {name: t.clone() for name, t in kv.items()}
    # WRITE mode: decode sends its metadata and the block ids of each request; a writer
    # thread makes the sessions lazily and writes every layer of every request.
    remote_desc, remote_meta = conn.recv()
    requests = conn.recv()  # [(local blocks, remote blocks), ...]
    remote_key = None
    errors = []

    def handshake():
        nonlocal remote_key
        desc = EngineDesc.unpack(remote_desc)
        engine.register_remote_engine(desc)
        remote_key = desc.key

    threading.Thread(target=handshake).start()  # vLLM: a single-worker executor
    while remote_key is None:
        time.sleep(0.001)

    def writer():
        try:
            metas = pickle.loads(remote_meta)
            sessions = [
                engine.create_session(MemoryDesc.unpack(meta[name][0]), MemoryDesc.unpack(metas[name][0]))
                for name in kv
            ]
            statuses = []
            for local_blocks, remote_blocks in requests:
                lo, ro, sz = vllm_offsets(local_blocks, remote_blocks)
                for sess in sessions:
                    statuses.append(sess.batch_write(lo, ro, sz, engine.allocate_transfer_uid()))
            rc = engine.wait_all(statuses, timeout_ms=30000)
            assert str(rc) == "StatusCode.SUCCESS", (rc, [s.Message() for s in statuses if s.Failed()])
            assert all(s.Succeeded() for s in statuses)
        except BaseException:  # noqa: BLE001
            errors.append(traceback.format_exc())

    t = threading.Thread(target=writer, name="moriio-write-worker")
    t.start()
    t.join()
    if errors:
        raise RuntimeError(errors[0])
    conn.send("write_done")
    assert conn.recv() == "bye"
    return len(requests)


@guarded
def vllm_consumer_read(conn, requests):
    """vLLM's READ mode decode: the handshake on a single-worker executor, then at once,
    per request and per layer, session.batch_read from sessions made from unpacked
    descriptors; all requests in flight together; statuses polled every millisecond;
    a release per finished request."""
    from concurrent.futures import ThreadPoolExecutor

    from mori.io import EngineDesc, MemoryDesc

    engine = vllm_engine("consumer")
    kv = vllm_kv()
    meta = {name: [engine.register_torch_tensor(t).pack()] for name, t in kv.items()}
    remote_desc, remote_meta = conn.recv()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-moriio-handshake-initiator") as pool:
        key = pool.submit(lambda: (engine.register_remote_engine(EngineDesc.unpack(remote_desc)),
                                   EngineDesc.unpack(remote_desc).key)[1]).result()
    metas = pickle.loads(remote_meta)
    sessions = [engine.create_session(MemoryDesc.unpack(meta[name][0]), MemoryDesc.unpack(metas[name][0]))
                for name in kv]
    per_request = []
    for local_blocks, remote_blocks in requests:
        lo, ro, sz = vllm_offsets(local_blocks, remote_blocks)
        per_request.append([s.batch_read(lo, ro, sz, engine.allocate_transfer_uid()) for s in sessions])
    empty = sessions[0].batch_read([], [], [], engine.allocate_transfer_uid())
    assert empty.Succeeded(), "an empty batch succeeds at once"
    conn.send(len(per_request))
    for statuses in per_request:
        poll_until_done(statuses)
        conn.send("release")
    return {name: t.clone() for name, t in kv.items()}, key


@guarded
def vllm_consumer_write(conn, requests):
    """The decode side of WRITE mode: sends its metadata and block ids, waits for
    write_done, reports its KV cache."""
    engine = vllm_engine("consumer")
    kv = vllm_kv()
    meta = {name: [engine.register_torch_tensor(t).pack()] for name, t in kv.items()}
    conn.recv()  # the producer's metadata (decode needs none of it to be written)
    conn.send((engine.get_engine_desc().pack(), pickle.dumps(meta)))
    conn.send(requests)
    assert conn.recv() == "write_done"
    result = {name: t.clone() for name, t in kv.items()}
    conn.send("bye")
    return result


# ---- SGLang MORI ---------------------------------------------------------------------
S_LAYERS, S_PAGES, S_PAGE, S_TOKEN_BYTES = 3, 640, 16, 32  # page_size tokens of 32 bytes
S_ITEM = S_PAGE * S_TOKEN_BYTES


def sglang_engine(mode):
    import uuid

    from mori.io import BackendType, IOEngine, IOEngineConfig, PollCqMode, RdmaBackendConfig

    engine = IOEngine(
        f"io-{mode}-dp0-tp0-pid{os.getpid()}-127.0.0.1-{uuid.uuid4().hex[:8]}",
        IOEngineConfig(host="127.0.0.1", port=0),
    )
    engine.create_backend(BackendType.RDMA, RdmaBackendConfig(4, -1, 4, PollCqMode.POLLING, False))
    assert engine.get_engine_desc().port > 0
    return engine


def sglang_buffers(seed=None):
    """K tensors of every layer, then V tensors; three aux buffers."""
    kv = []
    for i in range(2 * S_LAYERS):
        kv.append(torch.zeros(S_PAGES * S_ITEM, dtype=torch.uint8) if seed is None else pattern((S_PAGES * S_ITEM,), seed + i))
    aux = [torch.zeros(256, dtype=torch.uint8) if seed is None else pattern((256,), seed + 50 + i) for i in range(3)]
    return kv, aux


def sglang_register(engine, tensors):
    from mori.io import MemoryLocationType

    return [engine.register_memory(t.data_ptr(), t.numel() * t.element_size(), -1, MemoryLocationType.CPU)
            for t in tensors]


@guarded
def sglang_decode(conn):
    """Sends its descriptors (as SGLang's KV args registration does), then reports its
    buffers when prefill says Success."""
    engine = sglang_engine("decode")
    kv, aux = sglang_buffers()
    descs = sglang_register(engine, kv)
    aux_descs = sglang_register(engine, aux)
    conn.send((engine.get_engine_desc().pack(), [d.pack() for d in descs], [d.pack() for d in aux_descs]))
    assert conn.recv() == "Success"
    return [t.clone() for t in kv], [t.clone() for t in aux]


def group_runs(src_pages, dst_pages):
    """SGLang's group_concurrent_contiguous: runs of pages contiguous on both sides."""
    runs = []
    for s, d in zip(src_pages, dst_pages):
        if runs and runs[-1][0] + runs[-1][2] == s and runs[-1][1] + runs[-1][2] == d:
            runs[-1][2] += 1
        else:
            runs.append([s, d, 1])
    return runs


@guarded
def sglang_prefill(conn, rooms, tp_slice):
    """SGLang's prefill: the peer registered on a bootstrap thread, then worker threads,
    one room each, batch_write per layer for K and V (same-TP: page runs; mixed TP: one
    entry per token, a head slice of each), then wait_all in a loop while IN_PROGRESS;
    an aux batch of several pairs and uids; Success sent to decode."""
    from mori.io import EngineDesc, MemoryDesc, StatusCode

    engine = sglang_engine("prefill")
    kv, aux = sglang_buffers(seed=7)
    descs = sglang_register(engine, kv)
    aux_descs = sglang_register(engine, aux)
    peer_blob, dst_blobs, dst_aux_blobs = conn.recv()
    known = {}
    stop = threading.Event()

    def bootstrap():
        """SGLang's bootstrap thread: registers peers as they announce themselves, here
        the decode engine, then more engines (of other rooms) while the workers
        transfer."""
        desc = EngineDesc.unpack(peer_blob)
        if desc.key not in known:
            engine.register_remote_engine(desc)
            known[desc.key] = desc
        i = 0
        while not stop.is_set():
            other = EngineDesc(f"io-decode-dp{i}-other", "127.0.0.1", 1 + i % 60000)
            engine.register_remote_engine(other)
            known[other.key] = other
            i += 1
            time.sleep(0.0005)

    t = threading.Thread(target=bootstrap, name="bootstrap")
    t.start()
    while len(known) < 1:
        time.sleep(0.001)
    dst = [MemoryDesc.unpack(b) for b in dst_blobs]
    dst_aux = [MemoryDesc.unpack(b) for b in dst_aux_blobs]
    failures = []
    entry_counts = []

    def room_worker(src_pages, dst_pages):
        try:
            statuses = []
            for layer in range(S_LAYERS):
                for which in (layer, S_LAYERS + layer):  # K then V
                    if tp_slice:
                        half = S_TOKEN_BYTES // 2  # this rank's heads: the first half of each token
                        lo, ro, sz = [], [], []
                        for sp, dp in zip(src_pages, dst_pages):
                            for tok in range(S_PAGE):
                                lo.append(sp * S_ITEM + tok * S_TOKEN_BYTES)
                                ro.append(dp * S_ITEM + tok * S_TOKEN_BYTES)
                                sz.append(half)
                    else:
                        runs = group_runs(src_pages, dst_pages)
                        lo = [s * S_ITEM for s, _, _ in runs]
                        ro = [d * S_ITEM for _, d, _ in runs]
                        sz = [n * S_ITEM for _, _, n in runs]
                    entry_counts.append(len(sz))
                    statuses.extend(
                        engine.batch_write([descs[which]], [lo], [dst[which]], [ro], [sz], [engine.allocate_transfer_uid()])
                    )
            while (rc := engine.wait_all(statuses, timeout_ms=1000)) == StatusCode.IN_PROGRESS:
                pass
            if rc != StatusCode.SUCCESS:
                failures.append(next(s.Message() for s in statuses if s.Failed()))
        except BaseException:  # noqa: BLE001
            failures.append(traceback.format_exc())

    workers = [threading.Thread(target=room_worker, args=room, name=f"mori-xfer-s{i}") for i, room in enumerate(rooms)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    t.join()
    if failures:
        raise RuntimeError(failures[0])
    # Aux: one pair per buffer, each a single entry with its own uid.
    offsets = [0, 64, 128]
    statuses = engine.batch_write(
        aux_descs, [[0]] * 3, dst_aux, [[o] for o in offsets], [[96]] * 3,
        [engine.allocate_transfer_uid() for _ in range(3)],
    )
    assert len(statuses) == 3
    while (rc := engine.wait_all(statuses, timeout_ms=1000)) == StatusCode.IN_PROGRESS:
        pass
    assert rc == StatusCode.SUCCESS, [s.Message() for s in statuses]
    conn.send("Success")
    return [t.clone() for t in kv], [t.clone() for t in aux], max(entry_counts)


# ---- ATOM ------------------------------------------------------------------------------
A_BLOCKS, A_BLOCK_BYTES = 32, 512


@guarded
def atom_decode(conn, host):
    """ATOM (KVTransferOp) decode: `from mori import cpp`, `mori.io.engine.IOEngine`,
    host "" by default; registers its cache, answers the bootstrap, polls
    pop_inbound_transfer_status for the room every millisecond."""
    from mori import cpp as mori_cpp
    from mori.io.engine import IOEngine

    config = mori_cpp.IOEngineConfig(host=host, port=0)
    engine = IOEngine(f"kv-transfer-{id(config)}", config)
    backend_config = mori_cpp.RdmaBackendConfig(
        qp_per_transfer=4, num_worker_threads=2, poll_cq_mode=mori_cpp.PollCqMode.POLLING
    )
    engine.create_backend(mori_cpp.BackendType.RDMA, config=backend_config)
    cache = torch.zeros(A_BLOCKS * A_BLOCK_BYTES, dtype=torch.uint8)
    md = engine.register_torch_tensor(cache)
    prefill = pickle.loads(conn.recv())
    peer = mori_cpp.EngineDesc.unpack(prefill["engine_desc"])
    engine.register_remote_engine(peer)
    dst_blocks = [3, 4, 5, 9, 20]
    conn.send(pickle.dumps({"engine_desc": engine.get_engine_desc().pack(), "mem_desc": md.pack(),
                            "dst_block_ids": dst_blocks}))
    room = prefill["bootstrap_room"]
    deadline = time.monotonic() + 60
    status = None
    while status is None and time.monotonic() < deadline:
        status = engine.pop_inbound_transfer_status(peer.key, room)
        if status is None:
            time.sleep(0.001)
    assert status is not None and status.Succeeded(), status and status.Message()
    assert engine.pop_inbound_transfer_status(peer.key, room) is None  # popped once
    engine.deregister_memory(md)
    return cache.clone(), engine.get_engine_desc().host


@guarded
def atom_prefill(conn):
    """ATOM prefill (ROCm/ATOM's MoRIIO config: five positional arguments, then the
    max_* attributes): session batch_write with a random 63-bit room as uid, Wait(),
    Failed()."""
    import random

    from mori import cpp as mori_cpp
    from mori.io import BackendType, IOEngine, IOEngineConfig, MemoryDesc, PollCqMode, RdmaBackendConfig

    engine = IOEngine("atom:ip:127.0.0.1+tp:0+dp:0", IOEngineConfig(host="127.0.0.1", port=0))
    cfg = RdmaBackendConfig(4, -1, 4, PollCqMode.POLLING, False)
    cfg.max_send_wr = 0
    cfg.max_cqe_num = 0
    cfg.max_msg_sge = 0
    engine.create_backend(BackendType.RDMA, cfg)
    cache = pattern((A_BLOCKS * A_BLOCK_BYTES,), 33)
    md = engine.register_torch_tensor(cache)
    room = random.getrandbits(63)
    src_blocks = [0, 1, 2, 10, 11]
    conn.send(pickle.dumps({"engine_desc": engine.get_engine_desc().pack(), "mem_desc": md.pack(),
                            "src_block_ids": src_blocks, "bootstrap_room": room}))
    decode = pickle.loads(conn.recv())
    engine.register_remote_engine(mori_cpp.EngineDesc.unpack(decode["engine_desc"]))
    sess = engine.create_session(md, MemoryDesc.unpack(decode["mem_desc"]))
    lo = [b * A_BLOCK_BYTES for b in src_blocks]
    ro = [b * A_BLOCK_BYTES for b in decode["dst_block_ids"]]
    status = sess.batch_write(lo, ro, [A_BLOCK_BYTES] * len(lo), room)
    status.Wait()
    if status.Failed():
        raise RuntimeError(f"KV transfer failed: {status.Message()}")
    assert status.Succeeded()
    return cache.clone(), src_blocks, decode["dst_block_ids"]
