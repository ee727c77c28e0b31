"""Region keys and access rights (issue 11) from Python: MemoryDesc carries the region's
key, register_memory / register_torch_tensor take access keywords, and a refused
transfer is ERR_ACCESS_DENIED and counted."""

import numpy as np
import pytest
import torch

from ringxfer import MemoryDesc, MemoryLocationType, StatusCode, TransferError

from conftest import make_engine, pop_inbound


def finished(st):
    assert st.WaitFor(20000), "transfer did not finish"
    return st


def test_err_access_denied_is_a_code_of_ringxfer_s_own():
    # MORI-IO's codes are 0..15; ringxfer's own failures are above them.
    assert int(StatusCode.ERR_ACCESS_DENIED) == 18
    mori = {0, 1, 2, 11, 12, 13, 14, 15}
    assert int(StatusCode.ERR_ACCESS_DENIED) not in mori
    values = [int(v) for v in StatusCode.__members__.values()]
    assert len(values) == len(set(values))


def test_memory_desc_round_trips_with_its_key(pair):
    a, b = pair
    md = b.register_memory(np.zeros(4096, np.uint8))
    assert md.rkey != 0
    back = MemoryDesc.unpack(md.pack())
    assert back == md and back.rkey == md.rkey and back.id == md.id and back.size == md.size
    assert str(md.rkey) not in repr(md)  # the key is not printed with the descriptor


def test_memory_desc_of_an_older_ringxfer_is_refused_saying_what_to_do(pair):
    _, b = pair
    packed = b.register_memory(np.zeros(64, np.uint8)).pack()
    old = packed[:4] + bytes([1]) + packed[5:-8]  # format 1: no key at the end
    with pytest.raises(ValueError, match="packed by an older ringxfer.*re-register.*re-exchange"):
        MemoryDesc.unpack(old)


def test_re_registration_gives_a_new_key_and_the_old_descriptor_is_refused(pair):
    a, b = pair
    src, dst = np.full(4096, 3, np.uint8), np.zeros(4096, np.uint8)
    ms = a.register_memory(src)
    old = b.register_memory(dst)
    b.deregister_memory(old)
    new = b.register_memory(dst)
    assert new.rkey != old.rkey
    st = finished(a.write(ms, 0, old, 0, 64, a.allocate_transfer_uid()))
    assert st.Code() == StatusCode.ERR_NOT_FOUND
    assert not dst.any()
    finished(a.write(ms, 0, new, 0, 4096, a.allocate_transfer_uid())).wait()
    assert (dst == 3).all()


@pytest.mark.parametrize("size", [64, 1 << 20])
def test_a_read_only_region_refuses_writes_and_serves_reads(pair, size):
    a, b = pair
    src, dst = np.full(1 << 20, 7, np.uint8), np.full(1 << 20, 0x5A, np.uint8)
    ms = a.register_memory(src)
    md = b.register_memory(dst, remote_write=False)
    uid = a.allocate_transfer_uid()
    st = finished(a.write(ms, 0, md, 0, size, uid))
    assert st.Code() == StatusCode.ERR_ACCESS_DENIED
    assert "does not allow remote writes" in st.Message()
    with pytest.raises(TransferError) as info:
        st.wait()
    assert info.value.code == StatusCode.ERR_ACCESS_DENIED
    assert (dst == 0x5A).all()
    assert b.stats()["access_denied"] >= 1
    inbound = pop_inbound(b, "initiator", uid)
    assert inbound is not None and inbound.Code() == StatusCode.ERR_ACCESS_DENIED
    finished(a.read(ms, 0, md, 0, size, a.allocate_transfer_uid())).wait()
    assert (src[:size] == 0x5A).all()


def test_a_write_only_region_refuses_reads(pair):
    a, b = pair
    src, dst = np.full(4096, 7, np.uint8), np.full(4096, 0x5A, np.uint8)
    ms = a.register_memory(src)
    md = b.register_memory(dst, remote_read=False)
    st = finished(a.read(ms, 0, md, 0, 4096, a.allocate_transfer_uid()))
    assert st.Code() == StatusCode.ERR_ACCESS_DENIED
    assert (src == 7).all()
    finished(a.write(ms, 0, md, 0, 4096, a.allocate_transfer_uid())).wait()
    assert (dst == 7).all()


def test_allowed_engines_admit_the_listed_engine_and_refuse_another():
    target, alice, bob = make_engine("target"), make_engine("alice"), make_engine("bob")
    try:
        for e in (alice, bob):
            e.register_remote_engine(target.get_engine_desc())
        region = torch.zeros(1024, dtype=torch.int32)
        md = target.register_torch_tensor(region, allowed_engines=["alice"])
        ma = alice.register_torch_tensor(torch.full((1024,), 1, dtype=torch.int32))
        mb = bob.register_memory(np.full(4096, 2, np.uint8))
        finished(alice.write(ma, 0, md, 0, 4096, alice.allocate_transfer_uid())).wait()
        assert (region == 1).all()
        st = finished(bob.write(mb, 0, md, 0, 4096, bob.allocate_transfer_uid()))
        assert st.Code() == StatusCode.ERR_ACCESS_DENIED
        assert "bob" in st.Message() and "alice" not in st.Message()
        assert (region == 1).all()
        assert target.stats()["access_denied"] == 1
        assert alice.stats()["access_denied"] == 0
    finally:
        for e in (target, alice, bob):
            e.close()


def test_register_torch_tensor_takes_the_access_keywords(pair):
    a, b = pair
    ms = a.register_memory(np.full(64, 9, np.uint8))
    t = torch.zeros(64, dtype=torch.uint8)
    md = b.register_torch_tensor(t, remote_read=True, remote_write=False)
    st = finished(a.write(ms, 0, md, 0, 64, a.allocate_transfer_uid()))
    assert st.Code() == StatusCode.ERR_ACCESS_DENIED
    with pytest.raises(TypeError):
        b.register_torch_tensor(t, False)  # the keywords are keywords only


def test_access_keywords_are_checked(pair):
    _, b = pair
    buf = np.zeros(64, np.uint8)
    with pytest.raises(TypeError, match="list of engine keys"):
        b.register_memory(buf, allowed_engines="alice")
    with pytest.raises(ValueError, match=r"allowed_engines\[1\]"):
        b.register_memory(buf, allowed_engines=["alice", ""])
    with pytest.raises(TypeError):
        b.register_memory(buf, None, -1, MemoryLocationType.CPU, False)  # MORI's four only
    # MORI's positional parameters are unchanged: (ptr, size, device_id, mem_loc).
    md = b.register_memory(buf.ctypes.data, 64, -1, MemoryLocationType.CPU, remote_write=False)
    assert md.size == 64
    # An empty list admits everyone, as None does.
    assert b.register_memory(np.zeros(8, np.uint8), allowed_engines=[]).rkey != 0
