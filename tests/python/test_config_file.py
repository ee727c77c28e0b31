"""Config files from Python: TcpBackendConfig.from_file and RINGXFER_CONFIG (explicit
fields > file > MORI's defaults)."""
import json

import pytest

from ringxfer import BackendType, IOEngine, IOEngineConfig, TcpBackendConfig


def write(tmp_path, engine, name="tuned.json", **top):
    path = tmp_path / name
    path.write_text(json.dumps({"ringxfer_config": 1, "engine": engine, **top}))
    return str(path)


def test_from_file_reads_every_field_it_names(tmp_path):
    path = write(tmp_path, {"rings": 1, "stripes": 3, "chunk_bytes": 524288, "timeout_ms": 7000,
                            "socket": {"send_buffer_bytes": 0, "nodelay": False}, "ring_cpus": [0]},
                 measured={"large": {"gbps": 3.0}})
    c = TcpBackendConfig.from_file(path)
    assert (c.num_rings, c.num_data_conns, c.chunk_bytes, c.op_timeout_ms) == (1, 3, 524288, 7000)
    assert (c.sock_sndbuf_bytes, c.enable_ctrl_nodelay, c.ring_cpus) == (0, False, [0])
    assert c.sock_rcvbuf_bytes == 1 << 20  # ringxfer's default where the file is silent
    assert "num_rings" in c.given_fields()


def test_from_file_refuses_bad_files_naming_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        TcpBackendConfig.from_file(str(tmp_path / "nope.json"))
    bad = write(tmp_path, {"ringz": 1}, "bad.json")
    with pytest.raises(ValueError, match=r"bad\.json.*engine\.ringz"):
        TcpBackendConfig.from_file(bad)
    bad = write(tmp_path, {"rings": 0}, "range.json")
    with pytest.raises(ValueError, match="rings"):
        TcpBackendConfig.from_file(bad)


def test_ringxfer_config_fills_the_fields_the_caller_did_not_set(tmp_path, monkeypatch):
    path = write(tmp_path, {"rings": 1, "stripes": 2})
    monkeypatch.setenv("RINGXFER_CONFIG", path)
    e = IOEngine("from-env", IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.TCP)  # nothing set: the file's one ring
    assert e.stats()["ring_threads"] == 1
    e.close()
    # Set explicitly, even to ringxfer's default of 2: the caller wins.
    e = IOEngine("explicit", IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.TCP, TcpBackendConfig(num_rings=2))
    assert e.stats()["ring_threads"] == 2
    e.close()
    c = TcpBackendConfig()
    c.num_rings = 2
    assert c.given_fields() == {"num_rings"}
    monkeypatch.setenv("RINGXFER_CONFIG", write(tmp_path, {"rings": "x"}, "bad.json"))
    with pytest.raises(ValueError, match="RINGXFER_CONFIG.*engine.rings"):
        IOEngine("bad", IOEngineConfig(host="127.0.0.1", port=0)).create_backend(BackendType.TCP)
