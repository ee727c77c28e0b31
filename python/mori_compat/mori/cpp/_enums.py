"""MORI-IO's enums. BackendType and MemoryLocationType are ringxfer's (same names and
numbers); StatusCode has exactly MORI's members; ringxfer's finer failure codes are
mapped onto them (_from_ringxfer)."""

import enum

import ringxfer as _rx

BackendType = _rx.BackendType
MemoryLocationType = _rx.MemoryLocationType


class _PybindEnum(enum.Enum):
    """An enum that behaves as MORI's pybind11 enums: ``int()``, ``.name``, ``.value``,
    construction from the number, no comparison with plain ints."""

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value


class StatusCode(_PybindEnum):
    SUCCESS = 0
    INIT = 1
    IN_PROGRESS = 2
    ERR_INVALID_ARGS = 11
    ERR_NOT_FOUND = 12
    ERR_RDMA_OP = 13
    ERR_BAD_STATE = 14
    ERR_GPU_OP = 15


class PollCqMode(_PybindEnum):
    POLLING = 0
    EVENT = 1


# MORI's Failed(): a code above ERR_BEGIN (10).
_ERR_BEGIN = 10

# ringxfer's codes without a MORI twin, as MORI's TCP backend reports the same events:
# timeouts, a lost connection and a peer's limit are ERR_BAD_STATE there, a refused
# access or an unsupported request comes back as invalid arguments.
_MAPPED = {
    int(_rx.StatusCode.ERR_TIMEOUT): StatusCode.ERR_BAD_STATE,
    int(_rx.StatusCode.ERR_CONNECTION_LOST): StatusCode.ERR_BAD_STATE,
    int(_rx.StatusCode.ERR_ACCESS_DENIED): StatusCode.ERR_INVALID_ARGS,
    int(_rx.StatusCode.ERR_RESOURCE_EXHAUSTED): StatusCode.ERR_BAD_STATE,
    int(_rx.StatusCode.ERR_UNSUPPORTED): StatusCode.ERR_INVALID_ARGS,
    int(_rx.StatusCode.ERR_INTERNAL): StatusCode.ERR_BAD_STATE,
}
_SAME = {c.value: c for c in StatusCode}


def _from_ringxfer(code, message: str):
    """(MORI code, message) of a ringxfer code and message. A mapped code keeps
    ringxfer's name in the message, so nothing is lost."""
    n = int(code)
    same = _SAME.get(n)
    if same is not None:
        return same, message
    mapped = _MAPPED.get(n, StatusCode.ERR_BAD_STATE)
    return mapped, f"{message} (ringxfer {code.name})" if message else f"ringxfer {code.name}"
