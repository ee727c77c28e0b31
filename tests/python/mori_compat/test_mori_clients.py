"""Real clients' call sequences through the ringxfer-mori compatibility package, two
processes exchanging packed descriptors (mori_peers.py holds each client's side): vLLM's
MoRIIO connector in READ and WRITE mode, SGLang's MORI backend (same TP and mixed TP,
aux), ATOM's MoRIIO connector. CPU tensors in place of GPU ones; every byte checked,
untouched blocks checked to stay untouched."""
import multiprocessing as mp
import pickle

import pytest
import torch

import mori_peers as peers


@pytest.fixture(autouse=True)
def serve_rdma_as_tcp(monkeypatch):
    # The clients ask for BackendType.RDMA; the switch serves it over TCP (inherited by
    # the spawned client processes).
    monkeypatch.setenv("RINGXFER_SERVE_RDMA_AS_TCP", "1")


def run_pair(first, first_args, second, second_args, timeout=120):
    """Runs two client functions in two spawned processes joined by a pipe; returns
    their results, raising with the child's traceback on failure."""
    ctx = mp.get_context("spawn")
    end_a, end_b = ctx.Pipe()
    results, procs = [], []
    for fn, end, args in ((first, end_a, first_args), (second, end_b, second_args)):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=fn, args=(send, end, *args), daemon=True)
        p.start()
        send.close()
        results.append(recv)
        procs.append(p)
    out = []
    try:
        for recv, fn in zip(results, (first, second)):
            if not recv.poll(timeout):
                raise TimeoutError(f"{fn.__name__} gave no result within {timeout} s")
            kind, detail = pickle.loads(recv.recv_bytes())
            if kind != "ok":
                raise AssertionError(f"{fn.__name__} failed:\n{detail}")
            out.append(detail)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out


# Block ids per request: (decode's blocks, prefill's blocks); runs merge, others do not.
VLLM_REQUESTS = [([0, 1, 2], [5, 6, 7]), ([4, 9], [1, 12]), ([10, 11, 12, 13], [2, 3, 4, 8])]


def raw(t):
    """The bytes of a tensor (random fp16 bytes hold NaNs: compare bytes, not values)."""
    return t.contiguous().view(torch.uint8)


def check_vllm_blocks(decode_kv, prefill_kv, requests):
    touched = set()
    for local_blocks, remote_blocks in requests:
        for lb, rb in zip(local_blocks, remote_blocks):
            touched.add(lb)
            for name in decode_kv:
                assert torch.equal(raw(decode_kv[name][:, lb]), raw(prefill_kv[name][:, rb])), (name, lb, rb)
    for name, t in decode_kv.items():
        for b in range(peers.V_BLOCKS):
            if b not in touched:
                assert not raw(t[:, b]).any(), f"{name}: block {b} was not requested but changed"


def test_vllm_read_mode_sessions_per_layer_several_requests_polled_every_ms():
    prefill, (decode, key) = run_pair(
        peers.vllm_producer, ("read",), peers.vllm_consumer_read, (VLLM_REQUESTS,)
    )
    assert key == "producer:127.0.0.1:6301:tp0:dp0"
    check_vllm_blocks(decode, prefill, VLLM_REQUESTS)


def test_vllm_write_mode_writer_thread_and_wait_all():
    produced, decoded = run_pair(
        peers.vllm_producer, ("write",), peers.vllm_consumer_write, ([(r, l) for l, r in VLLM_REQUESTS],)
    )
    assert produced == len(VLLM_REQUESTS)
    # The producer wrote its blocks r (local) into decode's blocks l (remote).
    expected = peers.vllm_kv(seed=100)
    check_vllm_blocks(decoded, expected, VLLM_REQUESTS)


SGLANG_ROOMS = [([0, 1, 2, 3], [10, 11, 12, 13]), ([5, 7, 8], [20, 22, 23]), ([30, 31], [40, 41])]


def check_sglang(decode, prefill, rooms, tp_slice):
    (dkv, daux), (pkv, paux) = decode, prefill
    item, half = peers.S_ITEM, peers.S_TOKEN_BYTES // 2
    for i in range(2 * peers.S_LAYERS):
        expect = torch.zeros_like(dkv[i])
        for src_pages, dst_pages in rooms:
            for sp, dp in zip(src_pages, dst_pages):
                if tp_slice:
                    for tok in range(peers.S_PAGE):
                        at, frm = dp * item + tok * peers.S_TOKEN_BYTES, sp * item + tok * peers.S_TOKEN_BYTES
                        expect[at:at + half] = pkv[i][frm:frm + half]
                else:
                    expect[dp * item:(dp + 1) * item] = pkv[i][sp * item:(sp + 1) * item]
        assert torch.equal(dkv[i], expect), f"buffer {i}"
    for j, off in enumerate([0, 64, 128]):
        expect = torch.zeros(256, dtype=torch.uint8)
        expect[off:off + 96] = paux[j][:96]
        assert torch.equal(daux[j], expect), f"aux {j}"


@pytest.mark.parametrize("tp_slice", [False, True], ids=["same_tp", "mixed_tp_per_token"])
def test_sglang_engine_batches_worker_threads_wait_all_loop_and_aux(tp_slice):
    rooms = list(SGLANG_ROOMS)  # destination pages below 64, distinct across rooms
    if tp_slice:
        # One entry per token: a room of 576 pages is 9,216 entries per batch, more than
        # one wire request carries; its destination pages are a permutation of 64..639.
        rooms.append((list(range(64, 640)), [64 + (p * 7) % 576 for p in range(576)]))
    decode, prefill = run_pair(peers.sglang_decode, (), peers.sglang_prefill, (rooms, tp_slice))
    pkv, paux, largest = prefill
    if tp_slice:
        assert largest > 8192
    check_sglang(decode, (pkv, paux), rooms, tp_slice)


@pytest.mark.parametrize("host", ["", "127.0.0.1"], ids=["default_host_all_interfaces", "loopback"])
def test_atom_session_write_wait_and_inbound_status_on_the_target(host):
    (cache, advertised), (src, src_blocks, dst_blocks) = run_pair(
        peers.atom_decode, (host,), peers.atom_prefill, ()
    )
    assert advertised not in ("", "0.0.0.0")
    b = peers.A_BLOCK_BYTES
    for blk in range(peers.A_BLOCKS):
        got = cache[blk * b:(blk + 1) * b]
        if blk in dst_blocks:
            s = src_blocks[dst_blocks.index(blk)]
            assert torch.equal(got, src[s * b:(s + 1) * b]), blk
        else:
            assert not got.any(), f"block {blk} was not written but changed"
