import pytest

import ringxfer
from ringxfer import BackendType, IOEngine, IOEngineConfig, TcpBackendConfig


def make_engine(key, **tcp):
    e = IOEngine(key, IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.TCP, TcpBackendConfig(**tcp) if tcp else None)
    return e


@pytest.fixture
def pair():
    """Two engines in this process that know each other."""
    a = make_engine("initiator", num_data_conns=4, striping_threshold_bytes=65536)
    b = make_engine("target", num_data_conns=4, striping_threshold_bytes=65536)
    a.register_remote_engine(b.get_engine_desc())
    b.register_remote_engine(a.get_engine_desc())
    yield a, b
    a.close()
    b.close()


def pop_inbound(engine, key, uid, tries=2000):
    import time

    for _ in range(tries):
        s = engine.pop_inbound_transfer_status(key, uid)
        if s is not None:
            return s
        time.sleep(0.001)
    return None
