"""Peer authentication through the MORI-IO surface (issue 11): TcpBackendConfig's
auth_key_file, a transfer between engines that share a key, refusals otherwise."""
import os
import secrets

import pytest
import torch

from conftest import make_engine
from ringxfer import StatusCode, TcpBackendConfig


def key_file(tmp_path, name, lines, mode=0o600):
    path = tmp_path / name
    path.write_text("".join(f"{i} {s}\n" for i, s in lines))
    os.chmod(path, mode)
    return str(path)


def pair_with(a_file, b_file):
    a = make_engine("auth-a", auth_key_file=a_file, op_timeout_ms=5000)
    b = make_engine("auth-b", auth_key_file=b_file, op_timeout_ms=5000)
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    return a, b


def write(a, b, nbytes=1 << 20):
    src = torch.arange(nbytes, dtype=torch.uint8)
    dst = torch.zeros(nbytes, dtype=torch.uint8)
    ms, md = a.register_torch_tensor(src), b.register_torch_tensor(dst)
    st = a.write(ms, 0, md, 0, nbytes, a.allocate_transfer_uid())
    st.WaitFor(20000)
    return st, src, dst


def test_engines_sharing_a_key_transfer(tmp_path):
    f = key_file(tmp_path, "keys", [(3, secrets.token_hex(32))])
    assert TcpBackendConfig(auth_key_file=f).auth_key_file == f
    a, b = pair_with(f, f)
    try:
        st, src, dst = write(a, b)
        assert st.Succeeded(), st.Message()
        assert torch.equal(src, dst)
        assert a.stats()["auth_failures"] == 0 and b.stats()["auth_failures"] == 0
    finally:
        a.close()
        b.close()


def test_an_engine_without_the_key_is_refused(tmp_path):
    f = key_file(tmp_path, "keys", [(3, secrets.token_hex(32))])
    a, b = pair_with("", f)
    try:
        st, _, dst = write(a, b, 4096)
        assert st.Failed() and st.Code() != StatusCode.SUCCESS
        assert "auth_key_file" in st.Message()
        assert int(dst.sum()) == 0
        assert b.stats()["auth_failures"] >= 1
    finally:
        a.close()
        b.close()


def test_a_key_file_others_may_read_is_refused_at_create_backend(tmp_path):
    f = key_file(tmp_path, "keys", [(3, secrets.token_hex(32))], mode=0o644)
    with pytest.raises(Exception, match="chmod 600"):
        make_engine("auth-c", auth_key_file=f)
    short = key_file(tmp_path, "short", [(3, "00ff")])
    with pytest.raises(ValueError, match="short"):
        make_engine("auth-d", auth_key_file=short)
