// ringxfer._core: the pybind11 binding of ringxfer's public C++ API. Thin and
// pythonic; the MORI-IO-compatible classes are Python code on top (ringxfer/__init__.py).
// Only this folder raises Python exceptions. The GIL is released for every call that
// can block, and no engine thread ever takes it: completions reach Python through an
// eventfd (Notifier) or through polling.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringxfer/ringxfer.h"

namespace py = pybind11;
using namespace ringxfer;

namespace {

// ---- MORI-IO's numbering ----

enum class BackendType : int { kUnknown = 0, kXgmi = 1, kRdma = 2, kTcp = 3, kFabric = 4 };
enum class MemoryLocationType : int { kUnknown = 0, kCpu = 1, kGpu = 2 };
// MORI's codes (0..15) and ringxfer's own above them: any code > 10 is a failure.
enum class StatusCode : int {
  kSuccess = 0,
  kInit = 1,
  kInProgress = 2,
  kErrInvalidArgs = 11,
  kErrNotFound = 12,
  kErrRdmaOp = 13,
  kErrBadState = 14,
  kErrGpuOp = 15,
  kErrTimeout = 16,
  kErrConnectionLost = 17,
  kErrAccessDenied = 18,
  kErrResourceExhausted = 19,
  kErrUnsupported = 20,
  kErrInternal = 21,
};

StatusCode mori_code(absl::StatusCode c) {
  switch (c) {
    case absl::StatusCode::kOk:
      return StatusCode::kSuccess;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
      return StatusCode::kErrInvalidArgs;
    case absl::StatusCode::kNotFound:
      return StatusCode::kErrNotFound;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAborted:
      return StatusCode::kErrBadState;
    case absl::StatusCode::kDeadlineExceeded:
      return StatusCode::kErrTimeout;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
      return StatusCode::kErrConnectionLost;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return StatusCode::kErrAccessDenied;
    case absl::StatusCode::kResourceExhausted:
      return StatusCode::kErrResourceExhausted;
    case absl::StatusCode::kUnimplemented:
      return StatusCode::kErrUnsupported;
    default:
      return StatusCode::kErrInternal;
  }
}

StatusCode status_code(const TransferStatus& s) {
  switch (s.state()) {
    case TransferState::kInit:
      return StatusCode::kInit;
    case TransferState::kInProgress:
      return StatusCode::kInProgress;
    case TransferState::kSucceeded:
      return StatusCode::kSuccess;
    case TransferState::kFailed:
      return mori_code(s.code());
  }
  return StatusCode::kErrInternal;
}

// Raises the Python exception that fits an error status.
[[noreturn]] void raise(const absl::Status& st) {
  const std::string msg(st.message());
  switch (st.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
      throw py::value_error(msg);
    case absl::StatusCode::kUnimplemented:
      PyErr_SetString(PyExc_NotImplementedError, msg.c_str());
      throw py::error_already_set();
    case absl::StatusCode::kDeadlineExceeded:
      PyErr_SetString(PyExc_TimeoutError, msg.c_str());
      throw py::error_already_set();
    case absl::StatusCode::kUnavailable:
      PyErr_SetString(PyExc_ConnectionError, msg.c_str());
      throw py::error_already_set();
    case absl::StatusCode::kPermissionDenied:
      PyErr_SetString(PyExc_PermissionError, msg.c_str());
      throw py::error_already_set();
    default:
      throw std::runtime_error(msg);
  }
}

template <typename T>
T value_or_raise(absl::StatusOr<T> v) {
  if (!v.ok()) {
    raise(v.status());
  }
  return std::move(*v);
}

// Runs `start` (a call that starts a transfer) with the GIL released, then raises, with
// the GIL held again, if it failed.
template <typename Start>
StatusHandle start_transfer(Start&& start) {
  absl::StatusOr<StatusHandle> st;
  {
    py::gil_scoped_release nogil;
    st = start();
  }
  return value_or_raise(std::move(st));
}

void ok_or_raise(const absl::Status& st) {
  if (!st.ok()) {
    raise(st);
  }
}

// ---- MORI-IO's configuration structs, with its defaults ----

struct IOEngineConfig {
  std::string host;
  int port = 0;
};

struct TcpBackendConfig {
  // MORI-IO's fields and defaults.
  int64_t sock_sndbuf_bytes = 32 << 20;
  int64_t sock_rcvbuf_bytes = 32 << 20;
  int64_t op_timeout_ms = 30000;
  bool enable_keepalive = true;
  int keepalive_idle_sec = 30;
  int keepalive_intvl_sec = 10;
  int keepalive_cnt = 3;
  bool enable_ctrl_nodelay = true;
  int num_data_conns = 8;
  int64_t striping_threshold_bytes = 65536;
  // ringxfer's own.
  int num_rings = ringxfer::EngineConfig{}.rings;
  int64_t zerocopy_threshold_bytes = 0;
  int64_t chunk_bytes = 1 << 20;
  int ring_entries = 512;
  int64_t wait_spin_us = ringxfer::EngineConfig{}.wait_spin.count();
  bool sqpoll = false;
  std::vector<int> ring_cpus;
};

void check_data_conns(int n) {
  if (n < 1 || n > 16) {
    throw py::value_error("TcpBackendConfig.num_data_conns = " + std::to_string(n) +
                          " is out of range [1, 16]");
  }
}

EngineConfig to_engine_config(const IOEngineConfig& io, const TcpBackendConfig& tcp) {
  EngineConfig c;
  c.host = io.host.empty() ? "127.0.0.1" : io.host;
  if (io.port < 0 || io.port > 65535) {
    throw py::value_error("IOEngineConfig.port = " + std::to_string(io.port) +
                          " is out of range [0, 65535]");
  }
  c.port = static_cast<uint16_t>(io.port);
  c.rings = tcp.num_rings;
  c.stripes = tcp.num_data_conns;
  c.timeout = std::chrono::milliseconds(tcp.op_timeout_ms);
  c.stripe_threshold_bytes =
      static_cast<uint64_t>(std::max<int64_t>(tcp.striping_threshold_bytes, 1));
  c.chunk_bytes = static_cast<uint64_t>(tcp.chunk_bytes);
  c.zerocopy_threshold_bytes =
      static_cast<uint64_t>(std::max<int64_t>(tcp.zerocopy_threshold_bytes, 0));
  c.ring_entries = static_cast<unsigned>(tcp.ring_entries);
  c.wait_spin = std::chrono::microseconds(tcp.wait_spin_us);
  c.sqpoll = tcp.sqpoll;
  c.ring_cpus = tcp.ring_cpus;
  c.socket.send_buffer_bytes = static_cast<int>(std::min<int64_t>(tcp.sock_sndbuf_bytes, 1 << 30));
  c.socket.recv_buffer_bytes = static_cast<int>(std::min<int64_t>(tcp.sock_rcvbuf_bytes, 1 << 30));
  c.socket.keepalive = tcp.enable_keepalive;
  c.socket.keepalive_idle_s = tcp.keepalive_idle_sec;
  c.socket.keepalive_interval_s = tcp.keepalive_intvl_sec;
  c.socket.keepalive_count = tcp.keepalive_cnt;
  c.socket.nodelay = tcp.enable_ctrl_nodelay;
  ok_or_raise(c.validate());
  return c;
}

// ---- Completion notification for event loops ----

// One eventfd; every status registered with it writes to it when it finishes, from the
// engine's thread, without the GIL. An asyncio loop watches the fd.
class Notifier {
 public:
  Notifier() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) {
      throw std::runtime_error("eventfd failed");
    }
  }
  ~Notifier() { close(fd_); }
  int fd() const { return fd_; }
  // Reads and clears the counter; returns how many notifications came.
  uint64_t drain() {
    uint64_t v = 0;
    return ::read(fd_, &v, sizeof(v)) == sizeof(v) ? v : 0;
  }
  void notify() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof(one));
  }

 private:
  int fd_;
};

// ---- Buffers ----

struct Buffer {
  uint64_t address;
  uint64_t size;
};

// A writable, C-contiguous buffer-protocol object's address and size.
Buffer buffer_of(const py::object& obj) {
  Py_buffer view;
  if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_C_CONTIGUOUS) == 0) {
      PyBuffer_Release(&view);
      throw py::value_error("register_memory: the buffer is read-only (reads would write into it)");
    }
    PyErr_Clear();
    throw py::value_error("register_memory: the object is not a C-contiguous buffer");
  }
  Buffer b{reinterpret_cast<uint64_t>(view.buf), static_cast<uint64_t>(view.len)};
  PyBuffer_Release(&view);
  if (b.size == 0) {
    throw py::value_error("register_memory: the buffer is empty");
  }
  return b;
}

std::vector<uint64_t> offsets_of(const py::sequence& seq, const char* name) {
  std::vector<uint64_t> v;
  v.reserve(py::len(seq));
  for (const py::handle h : seq) {
    const long long x = h.cast<long long>();
    if (x < 0) {
      throw py::value_error(std::string(name) + " holds a negative value");
    }
    v.push_back(static_cast<uint64_t>(x));
  }
  return v;
}

uint64_t checked(long long v, const char* name) {
  if (v < 0) {
    throw py::value_error(std::string(name) + " is negative");
  }
  return static_cast<uint64_t>(v);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "ringxfer's C++ engine (internal: use the ringxfer package)";

  py::enum_<BackendType>(m, "BackendType", "Transport backends (MORI-IO numbering).")
      .value("Unknown", BackendType::kUnknown)
      .value("XGMI", BackendType::kXgmi)
      .value("RDMA", BackendType::kRdma)
      .value("TCP", BackendType::kTcp)
      .value("FABRIC", BackendType::kFabric);

  py::enum_<MemoryLocationType>(m, "MemoryLocationType", "Where memory lives (MORI-IO numbering).")
      .value("Unknown", MemoryLocationType::kUnknown)
      .value("CPU", MemoryLocationType::kCpu)
      .value("GPU", MemoryLocationType::kGpu);

  py::enum_<StatusCode>(m, "StatusCode",
                        "A transfer's state or error: MORI-IO's codes 0..15, ringxfer's own above "
                        "15; any code above 10 is a failure.")
      .value("SUCCESS", StatusCode::kSuccess)
      .value("INIT", StatusCode::kInit)
      .value("IN_PROGRESS", StatusCode::kInProgress)
      .value("ERR_INVALID_ARGS", StatusCode::kErrInvalidArgs)
      .value("ERR_NOT_FOUND", StatusCode::kErrNotFound)
      .value("ERR_RDMA_OP", StatusCode::kErrRdmaOp)
      .value("ERR_BAD_STATE", StatusCode::kErrBadState)
      .value("ERR_GPU_OP", StatusCode::kErrGpuOp)
      .value("ERR_TIMEOUT", StatusCode::kErrTimeout)
      .value("ERR_CONNECTION_LOST", StatusCode::kErrConnectionLost)
      .value("ERR_ACCESS_DENIED", StatusCode::kErrAccessDenied)
      .value("ERR_RESOURCE_EXHAUSTED", StatusCode::kErrResourceExhausted)
      .value("ERR_UNSUPPORTED", StatusCode::kErrUnsupported)
      .value("ERR_INTERNAL", StatusCode::kErrInternal);

  m.def(
      "set_log_level", [](const std::string& level) { ok_or_raise(set_log_level(level)); },
      py::arg("level"),
      "Sets the log level: trace, debug, info, warn, error or critical (any case).");

  py::class_<IOEngineConfig>(m, "IOEngineConfig", "Where an engine listens.")
      .def(py::init([](std::string host, int port) {
             if (port < 0 || port > 65535) {
               throw py::value_error("IOEngineConfig.port = " + std::to_string(port) +
                                     " is out of range [0, 65535]");
             }
             return IOEngineConfig{std::move(host), port};
           }),
           py::arg("host") = "", py::arg("port") = 0)
      .def_readwrite("host", &IOEngineConfig::host, "Address to listen on ('' = 127.0.0.1).")
      .def_readwrite("port", &IOEngineConfig::port, "Port (0 = ephemeral).")
      .def("__repr__", [](const IOEngineConfig& c) {
        return "IOEngineConfig(host='" + c.host + "', port=" + std::to_string(c.port) + ")";
      });

  auto tcp = py::class_<TcpBackendConfig>(
      m, "TcpBackendConfig",
      "Settings of the TCP backend: MORI-IO's fields with its defaults, and ringxfer's own.");
  tcp.def(py::init([](py::kwargs kw) {
            TcpBackendConfig c;
            py::object self = py::cast(c);
            for (auto item : kw) {
              const std::string name = item.first.cast<std::string>();
              if (!py::hasattr(self, name.c_str()) || name.rfind("_", 0) == 0) {
                throw py::type_error("TcpBackendConfig got an unexpected keyword argument '" +
                                     name + "'");
              }
              py::setattr(self, name.c_str(), item.second);
            }
            return self.cast<TcpBackendConfig>();
          }),
          "Keyword arguments set fields by name; unknown names raise TypeError.");
#define RX_TCP_FIELD(name, doc) tcp.def_readwrite(#name, &TcpBackendConfig::name, doc)
  RX_TCP_FIELD(sock_sndbuf_bytes, "SO_SNDBUF in bytes (0 = kernel autotuning).");
  RX_TCP_FIELD(sock_rcvbuf_bytes, "SO_RCVBUF in bytes (0 = kernel autotuning).");
  RX_TCP_FIELD(op_timeout_ms, "Per-transfer timeout in milliseconds.");
  RX_TCP_FIELD(enable_keepalive, "TCP keepalive.");
  RX_TCP_FIELD(keepalive_idle_sec, "TCP_KEEPIDLE.");
  RX_TCP_FIELD(keepalive_intvl_sec, "TCP_KEEPINTVL.");
  RX_TCP_FIELD(keepalive_cnt, "TCP_KEEPCNT.");
  RX_TCP_FIELD(enable_ctrl_nodelay, "TCP_NODELAY.");
  RX_TCP_FIELD(striping_threshold_bytes, "Transfers this large are striped over data connections.");
  RX_TCP_FIELD(num_rings, "ringxfer: ring threads per engine (1..64).");
  RX_TCP_FIELD(zerocopy_threshold_bytes, "ringxfer: sends this large use SEND_ZC (0 = off).");
  RX_TCP_FIELD(chunk_bytes, "ringxfer: largest data frame of a striped transfer.");
  RX_TCP_FIELD(ring_entries, "ringxfer: io_uring submission queue size (power of two).");
  RX_TCP_FIELD(wait_spin_us,
               "ringxfer: microseconds Wait() yields the CPU before it sleeps (0..10000).");
  RX_TCP_FIELD(sqpoll, "ringxfer: IORING_SETUP_SQPOLL.");
  RX_TCP_FIELD(ring_cpus, "ringxfer: CPUs to pin ring threads to.");
#undef RX_TCP_FIELD
  tcp.def_property(
      "num_data_conns", [](const TcpBackendConfig& c) { return c.num_data_conns; },
      [](TcpBackendConfig& c, int n) {
        check_data_conns(n);
        c.num_data_conns = n;
      },
      "Data connections per peer, 1..16 (ValueError otherwise).");

  py::class_<EngineDesc>(m, "EngineDesc", "What one engine tells another to be reached.")
      .def(py::init([](std::string key, std::string host, int port, std::string hostname,
                       std::string node_id, int pid) {
             EngineDesc d;
             d.key = std::move(key);
             d.host = std::move(host);
             d.port = static_cast<uint16_t>(port);
             d.hostname = std::move(hostname);
             d.node_id = std::move(node_id);
             d.pid = pid;
             d.protocol_version = static_cast<uint32_t>(protocol_version_max());
             return d;
           }),
           py::arg("key"), py::arg("host") = "", py::arg("port") = 0, py::arg("hostname") = "",
           py::arg("node_id") = "", py::arg("pid") = 0)
      .def_property_readonly("key", [](const EngineDesc& d) { return d.key; })
      .def_property_readonly("node_id", [](const EngineDesc& d) { return d.node_id; })
      .def_property_readonly("hostname", [](const EngineDesc& d) { return d.hostname; })
      .def_property_readonly("host", [](const EngineDesc& d) { return d.host; })
      .def_property_readonly("port", [](const EngineDesc& d) { return d.port; })
      .def_property_readonly("pid", [](const EngineDesc& d) { return d.pid; })
      .def_property_readonly("protocol_version",
                             [](const EngineDesc& d) { return d.protocol_version; })
      .def(
          "pack", [](const EngineDesc& d) { return py::bytes(d.pack()); },
          "Versioned bytes for unpack().")
      .def_static(
          "unpack",
          [](const py::bytes& b) { return value_or_raise(EngineDesc::unpack(std::string(b))); },
          py::arg("packed"), "The EngineDesc packed in `packed` (ValueError for garbage).")
      .def("__eq__", [](const EngineDesc& a, const EngineDesc& b) { return a == b; })
      .def("__hash__", [](const EngineDesc& d) { return py::hash(py::bytes(d.pack())); })
      .def("__repr__", [](const EngineDesc& d) {
        return "EngineDesc(key='" + d.key + "', host='" + d.host +
               "', port=" + std::to_string(d.port) + ")";
      });

  py::class_<MemoryDesc>(m, "MemoryDesc", "A registered memory region, as another engine sees it.")
      .def(py::init<>(), "An empty descriptor (id 0: never a registered region).")
      .def_property_readonly(
          "device_bus_id", [](const MemoryDesc&) { return std::string(); },
          "MORI-IO field; empty in ringxfer (no GPU IPC).")
      .def_property_readonly(
          "numa_node", [](const MemoryDesc&) { return -1; },
          "MORI-IO field; -1 (unknown) in ringxfer.")
      .def_property_readonly(
          "ipc_handle", [](const MemoryDesc&) { return py::bytes(); },
          "MORI-IO field; empty in ringxfer (no GPU IPC).")
      .def_property_readonly("engine_key", [](const MemoryDesc& d) { return d.engine_key; })
      .def_property_readonly("id", [](const MemoryDesc& d) { return d.id; })
      .def_property_readonly("device_id", [](const MemoryDesc& d) { return d.device_id; })
      .def_property_readonly(
          "data", [](const MemoryDesc& d) { return d.address; },
          "The owner's address of the region.")
      .def_property_readonly("size", [](const MemoryDesc& d) { return d.size; })
      .def_property_readonly("loc",
                             [](const MemoryDesc& d) {
                               return d.location == MemoryLocation::kGpu ? MemoryLocationType::kGpu
                                                                         : MemoryLocationType::kCpu;
                             })
      .def("pack", [](const MemoryDesc& d) { return py::bytes(d.pack()); })
      .def_static(
          "unpack",
          [](const py::bytes& b) { return value_or_raise(MemoryDesc::unpack(std::string(b))); },
          py::arg("packed"))
      .def("__eq__", [](const MemoryDesc& a, const MemoryDesc& b) { return a == b; })
      .def("__hash__", [](const MemoryDesc& d) { return py::hash(py::bytes(d.pack())); })
      .def("__repr__", [](const MemoryDesc& d) {
        return "MemoryDesc(engine_key='" + d.engine_key + "', id=" + std::to_string(d.id) +
               ", size=" + std::to_string(d.size) + ")";
      });

  py::class_<Notifier, std::shared_ptr<Notifier>>(
      m, "Notifier", "An eventfd that statuses write to when they finish (for event loops).")
      .def(py::init<>())
      .def("fileno", &Notifier::fd)
      .def("drain", &Notifier::drain, "Reads and clears the counter.");

  py::class_<TransferStatus, std::shared_ptr<TransferStatus>>(
      m, "TransferStatus",
      "The state of one transfer (or batch). In progress or final when the call returns; it "
      "becomes final in the background.")
      .def_property_readonly("transfer_id", &TransferStatus::transfer_id)
      .def("Code", [](const TransferStatus& s) { return status_code(s); })
      .def("Message",
           [](const TransferStatus& s) {
             return s.done() ? std::string(s.status().message()) : std::string();
           })
      .def("Init", &TransferStatus::init)
      .def("InProgress", &TransferStatus::in_progress)
      .def("Succeeded", &TransferStatus::succeeded)
      .def("Failed", &TransferStatus::failed)
      .def("done", &TransferStatus::done, "True once succeeded or failed.")
      .def(
          "Wait",
          [](const TransferStatus& s) {
            py::gil_scoped_release nogil;
            s.wait();
          },
          "Blocks (GIL released) until the transfer is final.")
      .def(
          "WaitFor",
          [](const TransferStatus& s, long long timeout_ms) {
            py::gil_scoped_release nogil;
            if (timeout_ms < 0) {
              s.wait();
              return true;
            }
            return s.wait(std::chrono::milliseconds(timeout_ms));
          },
          py::arg("timeout_ms") = -1,
          "Blocks up to timeout_ms (negative: no limit); True when final.")
      .def(
          "add_notifier",
          [](const std::shared_ptr<TransferStatus>& s, std::shared_ptr<Notifier> n) {
            s->on_done([n] { n->notify(); });
          },
          py::arg("notifier"), "Makes `notifier` readable when this status is final.")
      .def("__repr__", [](const TransferStatus& s) {
        const char* state = s.succeeded()     ? "succeeded"
                            : s.failed()      ? "failed"
                            : s.in_progress() ? "in progress"
                                              : "init";
        std::string r = "TransferStatus(id=" + std::to_string(s.transfer_id()) + ", " + state;
        if (s.failed()) {
          r += ": " + std::string(s.status().message());
        }
        return r + ")";
      });

  py::class_<Session>(m, "Session", "A local/remote memory pair bound once.")
      .def("allocate_transfer_uid", &Session::allocate_transfer_id)
      .def(
          "write",
          [](Session& s, long long lo, long long ro, long long size, uint64_t uid) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_transfer([&] { return s.write(a, b, n, uid); });
          },
          py::arg("local_offset"), py::arg("remote_offset"), py::arg("size"), py::arg("uid"))
      .def(
          "read",
          [](Session& s, long long lo, long long ro, long long size, uint64_t uid) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_transfer([&] { return s.read(a, b, n, uid); });
          },
          py::arg("local_offset"), py::arg("remote_offset"), py::arg("size"), py::arg("uid"))
      .def(
          "batch_write",
          [](Session& s, const py::sequence& lo, const py::sequence& ro, const py::sequence& sz,
             uint64_t uid) {
            auto l = offsets_of(lo, "local_offsets"), r = offsets_of(ro, "remote_offsets"),
                 z = offsets_of(sz, "sizes");
            return start_transfer([&] { return s.batch_write(l, r, z, uid); });
          },
          py::arg("local_offsets"), py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"))
      .def(
          "batch_read",
          [](Session& s, const py::sequence& lo, const py::sequence& ro, const py::sequence& sz,
             uint64_t uid) {
            auto l = offsets_of(lo, "local_offsets"), r = offsets_of(ro, "remote_offsets"),
                 z = offsets_of(sz, "sizes");
            return start_transfer([&] { return s.batch_read(l, r, z, uid); });
          },
          py::arg("local_offsets"), py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"))
      .def("alive", &Session::alive);

  py::class_<Engine>(m, "Engine", "A ringxfer engine (the C++ Engine).")
      .def(py::init(
               [](const std::string& key, const IOEngineConfig& io, const TcpBackendConfig& tcp) {
                 EngineConfig c = to_engine_config(io, tcp);
                 std::unique_ptr<Engine> e;
                 {
                   py::gil_scoped_release nogil;
                   absl::StatusOr<std::unique_ptr<Engine>> r = Engine::create(key, c);
                   if (!r.ok()) {
                     py::gil_scoped_acquire gil;
                     raise(r.status());
                   }
                   e = std::move(*r);
                 }
                 return e;
               }),
           py::arg("key"), py::arg("config"), py::arg("tcp"))
      .def("desc", &Engine::desc)
      .def(
          "register_remote_engine",
          [](Engine& e, const EngineDesc& d) {
            py::gil_scoped_release nogil;  // resolves the host name
            absl::Status st = e.register_remote_engine(d);
            py::gil_scoped_acquire gil;
            ok_or_raise(st);
          },
          py::arg("desc"))
      .def(
          "deregister_remote_engine",
          [](Engine& e, const EngineDesc& d) { ok_or_raise(e.deregister_remote_engine(d)); },
          py::arg("desc"))
      .def(
          "register_memory",
          [](Engine& e, uint64_t address, long long size, int device_id, MemoryLocationType loc) {
            const MemoryLocation l =
                loc == MemoryLocationType::kGpu ? MemoryLocation::kGpu : MemoryLocation::kCpu;
            const uint64_t n = checked(size, "size");
            absl::StatusOr<MemoryDesc> r;
            {
              py::gil_scoped_release nogil;  // waits for every ring thread (fixed buffers)
              r = e.register_memory(reinterpret_cast<void*>(address), n, l, device_id);
            }
            return value_or_raise(std::move(r));
          },
          py::arg("address"), py::arg("size"), py::arg("device_id") = -1,
          py::arg("loc") = MemoryLocationType::kCpu)
      .def(
          "deregister_memory",
          [](Engine& e, const MemoryDesc& d) {
            absl::Status st;
            {
              py::gil_scoped_release nogil;  // waits for every ring thread (fixed buffers)
              st = e.deregister_memory(d);
            }
            ok_or_raise(st);
          },
          py::arg("desc"))
      .def("allocate_transfer_uid", &Engine::allocate_transfer_id)
      .def(
          "write",
          [](Engine& e, const MemoryDesc& l, long long lo, const MemoryDesc& r, long long ro,
             long long size, uint64_t uid) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_transfer([&] { return e.write(l, a, r, b, n, uid); });
          },
          py::arg("local"), py::arg("local_offset"), py::arg("remote"), py::arg("remote_offset"),
          py::arg("size"), py::arg("uid"))
      .def(
          "read",
          [](Engine& e, const MemoryDesc& l, long long lo, const MemoryDesc& r, long long ro,
             long long size, uint64_t uid) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_transfer([&] { return e.read(l, a, r, b, n, uid); });
          },
          py::arg("local"), py::arg("local_offset"), py::arg("remote"), py::arg("remote_offset"),
          py::arg("size"), py::arg("uid"))
      .def(
          "batch",
          [](Engine& e, bool write, const MemoryDesc& l, const py::sequence& lo,
             const MemoryDesc& r, const py::sequence& ro, const py::sequence& sz, uint64_t uid) {
            auto a = offsets_of(lo, "local_offsets"), b = offsets_of(ro, "remote_offsets"),
                 n = offsets_of(sz, "sizes");
            return start_transfer([&] {
              return write ? e.batch_write(l, a, r, b, n, uid) : e.batch_read(l, a, r, b, n, uid);
            });
          },
          py::arg("write"), py::arg("local"), py::arg("local_offsets"), py::arg("remote"),
          py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"))
      .def(
          "create_session",
          [](Engine& e, const MemoryDesc& l, const MemoryDesc& r) {
            return value_or_raise(e.create_session(l, r));
          },
          py::arg("local"), py::arg("remote"), py::keep_alive<0, 1>())
      .def(
          "pop_inbound_transfer_status",
          [](Engine& e, const std::string& key, uint64_t uid) {
            return e.pop_inbound_status(key, uid);
          },
          py::arg("remote_key"), py::arg("uid"))
      .def("stats", [](const Engine& e) {
        const EngineStats s = e.stats();
        py::dict d;
        d["bytes_sent"] = s.bytes_sent;
        d["bytes_received"] = s.bytes_received;
        d["transfers_initiated"] = s.transfers_initiated;
        d["transfers_served"] = s.transfers_served;
        d["transfers_failed"] = s.transfers_failed;
        d["sqes"] = s.sqes;
        d["io_uring_enter"] = s.enters;
        d["cqes"] = s.cqes;
        d["wakeups"] = s.wakeups;
        d["zerocopy_sends"] = s.zerocopy_sends;
        d["zerocopy_copied"] = s.zerocopy_copied;
        d["short_sends"] = s.short_sends;
        d["short_recvs"] = s.short_recvs;
        d["timeouts"] = s.timeouts;
        d["connections_opened"] = s.connections_opened;
        d["connections_closed"] = s.connections_closed;
        d["hostile_frames"] = s.hostile_frames;
        d["zerocopy_fixed_sends"] = s.zerocopy_fixed_sends;
        d["fixed_buffers"] = s.fixed_buffers;
        d["fixed_buffer_fallbacks"] = s.fixed_buffer_fallbacks;
        d["zerocopy_refused"] = s.zerocopy_refused;
        d["ring_threads"] = s.ring_threads;
        return d;
      });

  m.def(
      "wait_all",
      [](const std::vector<StatusHandle>& statuses, long long timeout_ms) {
        for (const StatusHandle& s : statuses) {
          if (s == nullptr) {
            throw py::value_error("wait_all: a status is None");
          }
        }
        {
          py::gil_scoped_release nogil;
          (void)wait_all(statuses, std::chrono::milliseconds(timeout_ms));
        }
        // MORI-IO's answer: SUCCESS, the first failure, or IN_PROGRESS if time ran out.
        for (const StatusHandle& s : statuses) {
          if (s->failed()) {
            return status_code(*s);
          }
        }
        for (const StatusHandle& s : statuses) {
          if (!s->done()) {
            return StatusCode::kInProgress;
          }
        }
        return StatusCode::kSuccess;
      },
      py::arg("statuses"), py::arg("timeout_ms") = -1);

  m.def(
      "buffer_address",
      [](const py::object& obj) {
        Buffer b = buffer_of(obj);
        return py::make_tuple(b.address, b.size);
      },
      py::arg("obj"), "(address, size) of a writable C-contiguous buffer-protocol object.");

  m.attr("__version__") = version_string();
}
