"""``mori.io``: MORI-IO's Python API over ringxfer (the ``ringxfer-mori`` package).

Every public name of MORI's ``mori.io`` (main branch and the TCP branch) exists here with
MORI's signatures and semantics. BackendType.TCP is ringxfer's TCP engine; RDMA and
XGMI are served by it on request (``serve_rdma_as_tcp(True)`` or
``RINGXFER_SERVE_RDMA_AS_TCP=1``); FABRIC and its allocator exist and refuse with a
message when used. ringxfer engines do not speak MORI's wire protocol."""

from mori.cpp import (
    BackendType,
    EngineDesc,
    FabricBackendConfig,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
    PollCqMode,
    RdmaBackendConfig,
    StatusCode,
    TcpBackendConfig,
    XgmiBackendConfig,
    fabric_alloc,
    fabric_free,
    set_log_level,
)
from mori.cpp._config import serve_rdma_as_tcp, serving_rdma_as_tcp

from .engine import TORCH_DEVICE_TYPE_MAP, IOEngine, IOEngineSession, SessionUnavailableError
from .fabric_allocator import (
    fabric_mem_pool,
    fabric_torch_allocator,
    make_fabric_mem_pool,
    use_fabric_torch_allocator,
)

__all__ = [
    "BackendType",
    "EngineDesc",
    "FabricBackendConfig",
    "IOEngine",
    "IOEngineConfig",
    "IOEngineSession",
    "MemoryDesc",
    "MemoryLocationType",
    "PollCqMode",
    "RdmaBackendConfig",
    "SessionUnavailableError",
    "StatusCode",
    "TORCH_DEVICE_TYPE_MAP",
    "TcpBackendConfig",
    "XgmiBackendConfig",
    "fabric_alloc",
    "fabric_free",
    "fabric_mem_pool",
    "fabric_torch_allocator",
    "make_fabric_mem_pool",
    "serve_rdma_as_tcp",
    "serving_rdma_as_tcp",
    "set_log_level",
    "use_fabric_torch_allocator",
]
