"""``mori.cpp``: the names MORI-IO's pybind11 module gives Python clients, on ringxfer.

Clients import from here what ``mori.io`` does not re-export (SGLang:
``from mori.cpp import TransferStatus``; ATOM: ``from mori import cpp``). Only MORI's IO
names exist; the rest of MORI (shmem, ops, ccl) does not."""

import logging as _logging

import ringxfer as _rx

from ._config import (
    BackendConfig,
    FabricBackendConfig,
    IOEngineConfig,
    RdmaBackendConfig,
    TcpBackendConfig,
    XgmiBackendConfig,
)
from ._engine import EngineDesc, IOEngine, IOEngineSession, MemoryDesc
from ._enums import BackendType, MemoryLocationType, PollCqMode, StatusCode
from ._status import TransferStatus

__all__ = [
    "BackendConfig",
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
    "StatusCode",
    "TcpBackendConfig",
    "TransferStatus",
    "XgmiBackendConfig",
    "fabric_alloc",
    "fabric_free",
    "set_log_level",
]

# pybind11's export_values(): the members of StatusCode, BackendType and
# MemoryLocationType also at module level (MemoryLocationType.Unknown is the last
# "Unknown" bound, as in MORI).
for _enum in (StatusCode, BackendType, MemoryLocationType):
    for _name, _member in _enum.__members__.items():
        globals()[_name] = _member
        __all__.append(_name)
del _enum, _name, _member

_LEVELS = {
    "trace": ("debug", _logging.DEBUG),
    "debug": ("debug", _logging.DEBUG),
    "info": ("info", _logging.INFO),
    "warning": ("warn", _logging.WARNING),
    "warn": ("warn", _logging.WARNING),
    "error": ("error", _logging.ERROR),
    "err": ("error", _logging.ERROR),
    "critical": ("critical", _logging.CRITICAL),
}


def set_log_level(level: str) -> None:
    """MORI's log levels: trace, debug, info, warning (warn), error (err), critical, off;
    any other name is off, as spdlog reads it. Sets ringxfer's level and the "mori.io"
    logger's (ringxfer's quietest level still shows errors)."""
    rx_level, py_level = _LEVELS.get(str(level).lower(), ("error", _logging.CRITICAL + 10))
    _rx.set_log_level(rx_level)
    _logging.getLogger("mori.io").setLevel(py_level)


def fabric_alloc(size: int, device: int) -> int:
    """MORI allocates fabric-exportable GPU memory here; ringxfer has no FABRIC backend."""
    raise NotImplementedError(
        "ringxfer-mori: fabric_alloc needs MORI's FABRIC (UALink) backend, which ringxfer does not have; "
        "allocate GPU memory with torch and register it"
    )


def fabric_free(ptr: int) -> None:
    """See fabric_alloc."""
    raise NotImplementedError("ringxfer-mori: fabric_free: ringxfer has no FABRIC backend")
