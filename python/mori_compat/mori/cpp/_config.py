"""MORI-IO's backend configurations, and how RDMA and XGMI requests are served over TCP.

RdmaBackendConfig, XgmiBackendConfig and FabricBackendConfig have MORI's constructors
(order, keywords, defaults) and attributes; like pybind11 objects they refuse unknown
attributes. TcpBackendConfig is ringxfer's, which takes MORI's arguments in MORI's order
and ringxfer's own fields as keywords."""

import logging
import operator
import os
import threading

import ringxfer as _rx

from ._enums import BackendType, PollCqMode

TcpBackendConfig = _rx.TcpBackendConfig
IOEngineConfig = _rx.IOEngineConfig

_log = logging.getLogger("mori.io")


def _int(value, name):
    """As pybind11 converts an int argument: anything with __index__, no floats."""
    if not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return operator.index(value)


def _bool(value, name):
    """As pybind11 converts a bool argument: True/False, None, numbers (their truth)."""
    if isinstance(value, (str, bytes)) or not (value is None or hasattr(value, "__bool__")):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return bool(value)


class BackendConfig:
    """Base of the backend configurations (MORI binds it without a constructor)."""

    __slots__ = ()

    def __init__(self):
        raise TypeError("mori.cpp.BackendConfig: No constructor defined!")

    def _fields(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({inner})"


def _typed_slots(cls, kinds):
    """Properties that check the type of each field, over private slots."""
    for name, kind in kinds.items():
        private = "_" + name

        def getter(self, private=private):
            return getattr(self, private)

        def setter(self, value, private=private, name=name, kind=kind):
            if kind is int:
                value = _int(value, name)
            elif kind is bool:
                value = _bool(value, name)
            else:
                value = kind(value)
            setattr(self, private, value)

        setattr(cls, name, property(getter, setter))
    return cls


class RdmaBackendConfig(BackendConfig):
    """MORI-IO's RDMA settings. Served over TCP on request (serve_rdma_as_tcp): then
    qp_per_transfer gives the data connections per peer, num_worker_threads the ring
    threads, enable_notification whether pop_inbound_transfer_status answers; the rest
    has no meaning over TCP and is ignored (logged once)."""

    _kinds = {
        "qp_per_transfer": int,
        "post_batch_size": int,
        "num_worker_threads": int,
        "poll_cq_mode": PollCqMode,
        "enable_notification": bool,
        "notif_per_qp": int,
        "enable_transfer_chunking": bool,
        "chunk_bytes": int,
        "max_chunks_per_transfer": int,
        "num_nics_per_transfer": int,
        "max_send_wr": int,
        "max_cqe_num": int,
        "max_msg_sge": int,
    }
    __slots__ = tuple("_" + k for k in _kinds)

    def __init__(
        self,
        qp_per_transfer=1,
        post_batch_size=-1,
        num_worker_threads=-1,
        poll_cq_mode=PollCqMode.POLLING,
        enable_notification=True,
        notif_per_qp=1024,
        enable_transfer_chunking=False,
        chunk_bytes=65536,
        max_chunks_per_transfer=64,
        num_nics_per_transfer=1,
    ):
        self.qp_per_transfer = qp_per_transfer
        self.post_batch_size = post_batch_size
        self.num_worker_threads = num_worker_threads
        self.poll_cq_mode = poll_cq_mode
        self.enable_notification = enable_notification
        self.notif_per_qp = notif_per_qp
        self.enable_transfer_chunking = enable_transfer_chunking
        self.chunk_bytes = chunk_bytes
        self.max_chunks_per_transfer = max_chunks_per_transfer
        self.num_nics_per_transfer = num_nics_per_transfer
        # Attributes only (0: the backend's default).
        self.max_send_wr = 0
        self.max_cqe_num = 0
        self.max_msg_sge = 0

    def _fields(self):
        return {k: getattr(self, k) for k in self._kinds}


class XgmiBackendConfig(BackendConfig):
    """MORI-IO's XGMI settings (GPU streams and events for intra-node copies). Served over
    TCP on request; both fields are then ignored."""

    _kinds = {"num_streams": int, "num_events": int}
    __slots__ = ("_num_streams", "_num_events")

    def __init__(self, num_streams=64, num_events=64):
        self.num_streams = num_streams
        self.num_events = num_events

    def _fields(self):
        return {k: getattr(self, k) for k in self._kinds}


class FabricBackendConfig(XgmiBackendConfig):
    """MORI-IO's FABRIC (UALink super-node) settings. ringxfer has no fabric backend:
    create_backend(BackendType.FABRIC) raises, saying so."""

    __slots__ = ()


_typed_slots(RdmaBackendConfig, RdmaBackendConfig._kinds)
_typed_slots(XgmiBackendConfig, XgmiBackendConfig._kinds)

# ---- RDMA and XGMI over TCP -------------------------------------------------------

SWITCH_ENV = "RINGXFER_SERVE_RDMA_AS_TCP"
_serve_override = None
_said = set()
_said_lock = threading.Lock()


def serve_rdma_as_tcp(enable=True) -> None:
    """Serves create_backend(BackendType.RDMA or XGMI) with ringxfer's TCP backend from
    now on (``False``: refuse them; ``None``: as RINGXFER_SERVE_RDMA_AS_TCP says, the
    start-up state). Overrides the environment variable."""
    global _serve_override
    _serve_override = None if enable is None else bool(enable)


def serving_rdma_as_tcp() -> bool:
    """Whether RDMA and XGMI requests are served over TCP now."""
    if _serve_override is not None:
        return _serve_override
    return os.environ.get(SWITCH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _once(key, message: str) -> None:
    with _said_lock:
        if key in _said:
            return
        _said.add(key)
    _log.warning(message)


def tcp_config_for(backend_type, config):
    """(TcpBackendConfig, notifications on) for a create_backend request; raises when
    the request cannot be served, saying why and what to change."""
    if backend_type == BackendType.TCP:
        if config is None:
            return TcpBackendConfig(), True
        if not isinstance(config, TcpBackendConfig):
            raise TypeError(
                f"create_backend(BackendType.TCP, ...) takes a TcpBackendConfig, not {type(config).__name__}"
            )
        return config, True
    name = getattr(backend_type, "name", str(backend_type))
    if backend_type == BackendType.FABRIC:
        raise RuntimeError(
            "ringxfer-mori: ringxfer has no FABRIC (UALink) backend; use BackendType.TCP, or "
            "BackendType.RDMA with RINGXFER_SERVE_RDMA_AS_TCP=1"
        )
    if backend_type not in (BackendType.RDMA, BackendType.XGMI):
        raise RuntimeError(f"ringxfer-mori: backend type {name} is not a backend")
    if not serving_rdma_as_tcp():
        raise RuntimeError(
            f"ringxfer-mori: ringxfer has no {name} backend, only TCP. To serve "
            f"BackendType.{name} over ringxfer's TCP backend, set {SWITCH_ENV}=1 or call "
            "mori.io.serve_rdma_as_tcp(True) (both sides of a transfer must use ringxfer)"
        )
    tcp = TcpBackendConfig()
    notify = True
    if backend_type == BackendType.RDMA:
        if config is None:
            config = RdmaBackendConfig()
        if not isinstance(config, RdmaBackendConfig):
            raise TypeError(f"create_backend(BackendType.RDMA, ...) takes an RdmaBackendConfig, not {type(config).__name__}")
        tcp.num_data_conns = min(max(config.qp_per_transfer, 1), 16)
        if config.num_worker_threads > 0:
            tcp.num_rings = min(config.num_worker_threads, 64)
        notify = config.enable_notification
        _once(
            ("RDMA", tcp.num_data_conns, tcp.num_rings, notify),
            f"ringxfer-mori: BackendType.RDMA served over ringxfer's TCP backend: "
            f"qp_per_transfer={config.qp_per_transfer} -> {tcp.num_data_conns} data connections per peer, "
            f"num_worker_threads={config.num_worker_threads} -> {tcp.num_rings} ring threads, "
            f"enable_notification={notify} -> pop_inbound_transfer_status "
            f"{'answers' if notify else 'returns None'}; ignored (no meaning over TCP): post_batch_size, "
            "poll_cq_mode, notif_per_qp, enable_transfer_chunking, chunk_bytes, max_chunks_per_transfer, "
            "num_nics_per_transfer, max_send_wr, max_cqe_num, max_msg_sge",
        )
    else:
        if config is not None and not isinstance(config, XgmiBackendConfig):
            raise TypeError(f"create_backend(BackendType.XGMI, ...) takes an XgmiBackendConfig, not {type(config).__name__}")
        _once(
            ("XGMI",),
            "ringxfer-mori: BackendType.XGMI served over ringxfer's TCP backend (GPU memory is "
            "staged through pinned host memory); ignored: num_streams, num_events",
        )
    return tcp, notify
