// ringxfer._core: the pybind11 binding of ringxfer's public C++ API. Thin and
// pythonic; the MORI-IO-compatible classes are Python code on top (ringxfer/__init__.py).
// Only this folder raises Python exceptions. The GIL is released for every call that
// can block, and no engine thread ever takes it: completions reach Python through an
// eventfd (Notifier) or through polling.
//
// Lifetime: _core.Engine holds an EngineCore, which owns the C++ engine, the sessions
// made from it and the Python objects (buffer exports, owners) whose memory it
// registered. close() destroys the sessions and the engine first, then releases that
// memory; afterwards every call raises RuntimeError, also through sessions that still
// reference the core.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
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
      return StatusCode::kErrInvalidArgs;
    case absl::StatusCode::kNotFound:
      return StatusCode::kErrNotFound;
    case absl::StatusCode::kAlreadyExists:  // a transfer id already in flight to that peer
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
      if (s.code() == absl::StatusCode::kInternal &&
          s.message().find(kGpuCopyFailed) != std::string::npos) {
        return StatusCode::kErrGpuOp;  // a copy to or from GPU memory failed, here or there
      }
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
  std::string auth_key_file;   // empty: RINGXFER_AUTH_KEY_FILE, else no authentication
  std::string advertise_host;  // empty: the listen host, or a reachable address for ""
  int max_inbound_connections = ringxfer::EngineConfig{}.max_inbound_connections;
  int max_handshaking_connections = ringxfer::EngineConfig{}.max_handshaking_connections;
  int64_t handshake_timeout_ms = ringxfer::EngineConfig{}.handshake_timeout.count();
  int64_t idle_timeout_ms = ringxfer::EngineConfig{}.idle_timeout.count();
  // The fields the caller set (constructor arguments, attributes, from_file): a config
  // file (RINGXFER_CONFIG) gives the others.
  std::set<std::string> given;
};

void check_data_conns(int n) {
  if (n < 1 || n > 16) {
    throw py::value_error("TcpBackendConfig.num_data_conns = " + std::to_string(n) +
                          " is out of range [1, 16]");
  }
}

void check_port(const char* name, long long port) {
  if (port < 0 || port > 65535) {
    throw py::value_error(std::string(name) + " = " + std::to_string(port) +
                          " is out of range [0, 65535]");
  }
}

// Defines TcpBackendConfig.<name> as a property that refuses negative values (none of
// the fields gives a negative value a meaning; cast to the engine's unsigned fields, they
// would wrap).
template <typename T>
void def_non_negative(py::class_<TcpBackendConfig>& cls, const char* name,
                      T TcpBackendConfig::*field, const char* doc) {
  cls.def_property(
      name, [field](const TcpBackendConfig& c) { return c.*field; },
      [field, name](TcpBackendConfig& c, T v) {
        if (v < 0) {
          throw py::value_error("TcpBackendConfig." + std::string(name) + " = " +
                                std::to_string(v) + " is negative");
        }
        c.*field = v;
        c.given.insert(name);
      },
      doc);
}

// Defines TcpBackendConfig.<name> as a read-write property that records that the
// caller set it.
template <typename T>
void def_recorded(py::class_<TcpBackendConfig>& cls, const char* name, T TcpBackendConfig::*field,
                  const char* doc) {
  cls.def_property(
      name, [field](const TcpBackendConfig& c) { return c.*field; },
      [field, name](TcpBackendConfig& c, T v) {
        c.*field = std::move(v);
        c.given.insert(name);
      },
      doc);
}

// Each TcpBackendConfig field with the EngineConfig fields it sets: `copy` takes them
// from a config file's EngineConfig, `take` sets the TcpBackendConfig field from it.
struct TcpField {
  const char* name;
  void (*copy)(const EngineConfig& from, EngineConfig& to);
  void (*take)(const EngineConfig& from, TcpBackendConfig& to);
};

#define RX_MAP(py_name, engine_expr, py_expr)                                                      \
  TcpField {                                                                                       \
#py_name,                                                                                      \
        [](const EngineConfig& f,                                                                  \
           EngineConfig& t) { t.engine_expr = f.engine_expr; }, [](const EngineConfig& f,          \
                                                                   TcpBackendConfig&               \
                                                                       t) { t.py_name = py_expr; } \
  }
const std::vector<TcpField>& tcp_fields() {
  static const std::vector<TcpField> table = {
      RX_MAP(sock_sndbuf_bytes, socket.send_buffer_bytes, f.socket.send_buffer_bytes),
      RX_MAP(sock_rcvbuf_bytes, socket.recv_buffer_bytes, f.socket.recv_buffer_bytes),
      RX_MAP(op_timeout_ms, timeout, f.timeout.count()),
      RX_MAP(enable_keepalive, socket.keepalive, f.socket.keepalive),
      RX_MAP(keepalive_idle_sec, socket.keepalive_idle_s, f.socket.keepalive_idle_s),
      RX_MAP(keepalive_intvl_sec, socket.keepalive_interval_s, f.socket.keepalive_interval_s),
      RX_MAP(keepalive_cnt, socket.keepalive_count, f.socket.keepalive_count),
      RX_MAP(enable_ctrl_nodelay, socket.nodelay, f.socket.nodelay),
      RX_MAP(num_data_conns, stripes, f.stripes),
      RX_MAP(striping_threshold_bytes, stripe_threshold_bytes,
             static_cast<int64_t>(f.stripe_threshold_bytes)),
      RX_MAP(num_rings, rings, f.rings),
      RX_MAP(zerocopy_threshold_bytes, zerocopy_threshold_bytes,
             static_cast<int64_t>(f.zerocopy_threshold_bytes)),
      RX_MAP(chunk_bytes, chunk_bytes, static_cast<int64_t>(f.chunk_bytes)),
      RX_MAP(ring_entries, ring_entries, static_cast<int>(f.ring_entries)),
      RX_MAP(wait_spin_us, wait_spin, f.wait_spin.count()),
      RX_MAP(sqpoll, sqpoll, f.sqpoll),
      RX_MAP(ring_cpus, ring_cpus, f.ring_cpus),
      RX_MAP(auth_key_file, auth_key_file, f.auth_key_file),
      RX_MAP(max_inbound_connections, max_inbound_connections, f.max_inbound_connections),
      RX_MAP(max_handshaking_connections, max_handshaking_connections,
             f.max_handshaking_connections),
      RX_MAP(handshake_timeout_ms, handshake_timeout, f.handshake_timeout.count()),
      RX_MAP(idle_timeout_ms, idle_timeout, f.idle_timeout.count()),
      RX_MAP(advertise_host, advertise_host, f.advertise_host),
  };
  return table;
}
#undef RX_MAP

// The TcpBackendConfig a config file describes; every field counts as set.
TcpBackendConfig tcp_config_of(const EngineConfig& e) {
  TcpBackendConfig c;
  for (const TcpField& f : tcp_fields()) {
    f.take(e, c);
    c.given.insert(f.name);
  }
  return c;
}

EngineConfig to_engine_config(const IOEngineConfig& io, const TcpBackendConfig& tcp) {
  EngineConfig c;
  c.host = io.host;  // "": every interface
  c.advertise_host = tcp.advertise_host;
  check_port("IOEngineConfig.port", io.port);
  c.port = static_cast<uint16_t>(io.port);
  c.rings = tcp.num_rings;
  c.stripes = tcp.num_data_conns;
  c.timeout = std::chrono::milliseconds(tcp.op_timeout_ms);
  // The fields are non-negative (their setters check). A striping threshold of 0 stripes
  // every transfer, as 1 does.
  c.stripe_threshold_bytes =
      static_cast<uint64_t>(std::max<int64_t>(tcp.striping_threshold_bytes, 1));
  c.chunk_bytes = static_cast<uint64_t>(tcp.chunk_bytes);
  c.zerocopy_threshold_bytes = static_cast<uint64_t>(tcp.zerocopy_threshold_bytes);
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
  c.auth_key_file = tcp.auth_key_file;
  c.max_inbound_connections = tcp.max_inbound_connections;
  c.max_handshaking_connections = tcp.max_handshaking_connections;
  c.handshake_timeout = std::chrono::milliseconds(tcp.handshake_timeout_ms);
  c.idle_timeout = std::chrono::milliseconds(tcp.idle_timeout_ms);
  if (const char* path = std::getenv("RINGXFER_CONFIG"); path != nullptr && *path != '\0') {
    // The file's values for the fields the caller did not set (explicit > file >
    // MORI's defaults); Engine::create then applies its rule to the rest.
    absl::StatusOr<EngineConfig> file = EngineConfig::load(path);
    if (!file.ok()) {
      raise(absl::Status(file.status().code(),
                         absl::StrCat("RINGXFER_CONFIG: ", file.status().message())));
    }
    for (const TcpField& f : tcp_fields()) {
      if (!tcp.given.contains(f.name)) {
        f.copy(*file, c);
      }
    }
    static std::atomic<bool> said{false};
    if (!said.exchange(true)) {
      py::module_::import("logging")
          .attr("getLogger")("ringxfer")
          .attr("info")(
              "engine config: fields not set in TcpBackendConfig come from %s "
              "(RINGXFER_CONFIG)",
              path);
    }
  }
  c.apply_config_env = false;  // applied here, with the record of the fields set
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

// Releases a buffer export and frees its Py_buffer. Only with the GIL held.
struct BufferRelease {
  void operator()(Py_buffer* view) const {
    PyBuffer_Release(view);
    delete view;
  }
};
// While an export exists, its object cannot move or drop its memory: resizing a
// bytearray raises BufferError, a numpy array cannot be resized.
using BufferExport = std::unique_ptr<Py_buffer, BufferRelease>;

// An export of a writable, C-contiguous, non-empty buffer-protocol object.
BufferExport export_buffer(const py::object& obj) {
  auto view = std::make_unique<Py_buffer>();
  if (PyObject_GetBuffer(obj.ptr(), view.get(), PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
    PyErr_Clear();
    if (PyObject_GetBuffer(obj.ptr(), view.get(), PyBUF_C_CONTIGUOUS) == 0) {
      PyBuffer_Release(view.get());
      throw py::value_error("register_memory: the buffer is read-only (reads would write into it)");
    }
    PyErr_Clear();
    throw py::value_error("register_memory: the object is not a C-contiguous buffer");
  }
  BufferExport exported(view.release());
  if (exported->len == 0) {
    throw py::value_error("register_memory: the buffer is empty");
  }
  return exported;
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

// register_memory's access keywords as the engine takes them (None: every engine).
MemoryAccess access_of(bool remote_read, bool remote_write,
                       const std::optional<std::vector<std::string>>& allowed_engines) {
  MemoryAccess a;
  a.remote_read = remote_read;
  a.remote_write = remote_write;
  if (allowed_engines.has_value()) {
    a.allowed_engines = *allowed_engines;
  }
  return a;
}

uint64_t checked(long long v, const char* name) {
  if (v < 0) {
    throw py::value_error(std::string(name) + " is negative");
  }
  return static_cast<uint64_t>(v);
}

// A timeout in milliseconds from any Python int: beyond long long it saturates (a
// timeout that long is no limit), below it is negative (no limit too).
long long timeout_ms_of(const py::int_& v) {
  int overflow = 0;
  const long long ms = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow != 0) {
    return overflow > 0 ? LLONG_MAX : -1;
  }
  if (ms == -1 && PyErr_Occurred() != nullptr) {
    throw py::error_already_set();
  }
  return ms;
}

// ---- The engine as Python holds it ----

// What keeps registered memory valid until the engine has stopped using it: an export
// of the buffer and/or a reference to the object owning the memory. Destroy it only
// with the GIL held.
struct Pin {
  BufferExport view;
  py::object owner;
};

// The C++ engine with its sessions and pinned memory. Calls use the engine while they
// hold mu_ shared; close() takes mu_ exclusively, destroys the sessions and the engine
// (pending transfers fail, connections close, ring threads are joined), and only then
// releases the pins. No thread waits for mu_ while holding the GIL for long: blocking
// calls release the GIL first, and no holder of mu_ ever waits for the GIL, so quick
// calls may wait for mu_ with the GIL held (only a close() in progress makes them wait).
class EngineCore : public std::enable_shared_from_this<EngineCore> {
 public:
  explicit EngineCore(std::unique_ptr<Engine> engine)
      : key_(engine->desc().key), engine_(std::move(engine)) {}
  // Runs with the GIL held: the last reference is dropped by a Python object.
  ~EngineCore() {
    {
      std::unique_lock lock(mu_);
      stop_locked();
    }
    release_pins();
  }
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  // Runs fn(Engine&) while the engine cannot be closed, with the GIL released when
  // kReleaseGil (calls that can block); RuntimeError once the engine is closed.
  template <bool kReleaseGil = true, typename Fn>
  auto use(Fn&& fn) -> decltype(fn(std::declval<Engine&>())) {
    std::optional<decltype(fn(std::declval<Engine&>()))> r;
    if constexpr (kReleaseGil) {
      py::gil_scoped_release nogil;
      std::shared_lock lock(mu_);
      if (engine_ != nullptr) {
        r.emplace(fn(*engine_));
      }
    } else {
      std::shared_lock lock(mu_);
      if (engine_ != nullptr) {
        r.emplace(fn(*engine_));
      }
    }
    if (!r.has_value()) {
      throw std::runtime_error("engine " + key_ + " is closed");
    }
    return std::move(*r);
  }

  // Stops the engine, then releases the memory it registered. Idempotent; returns once
  // the engine is stopped, also when another thread's close() stops it.
  void close() {
    {
      py::gil_scoped_release nogil;
      std::unique_lock lock(mu_);
      stop_locked();
    }
    release_pins();
  }

  // create_session, with the session owned here (destroyed before the engine).
  Session* create_session(const MemoryDesc& local, const MemoryDesc& remote) {
    return value_or_raise(use<false>([&](Engine& e) -> absl::StatusOr<Session*> {
      absl::StatusOr<std::unique_ptr<Session>> s = e.create_session(local, remote);
      if (!s.ok()) {
        return s.status();
      }
      Session* raw = s->get();
      std::lock_guard lock(sessions_mu_);
      sessions_.emplace(raw, std::move(*s));
      return raw;
    }));
  }

  // Destroys a session that no Python object uses any more (a no-op once closed).
  void drop_session(Session* s) {
    std::unique_ptr<Session> dead;
    std::lock_guard lock(sessions_mu_);
    auto it = sessions_.find(s);
    if (it != sessions_.end()) {
      dead = std::move(it->second);
      sessions_.erase(it);
    }
  }

  // False once closed.
  bool session_alive(const Session& s) {
    std::shared_lock lock(mu_);
    return engine_ != nullptr && s.alive();
  }

  // Keeps `pin` until memory `id` is deregistered or the engine is closed. GIL held.
  void pin(uint64_t id, Pin pin) {
    if (pins_released_) {
      return;  // closed since the registration: the engine no longer uses the memory
    }
    pins_[id] = std::move(pin);
  }
  // GIL held.
  void unpin(uint64_t id) {
    auto it = pins_.find(id);
    if (it != pins_.end()) {
      Pin dead = std::move(it->second);
      pins_.erase(it);
    }
  }

 private:
  // mu_ held exclusively.
  void stop_locked() {
    std::unordered_map<Session*, std::unique_ptr<Session>> sessions;
    {
      std::lock_guard lock(sessions_mu_);
      sessions.swap(sessions_);
    }
    sessions.clear();  // before the engine they point into
    engine_.reset();
  }

  // After the engine stopped; GIL held. Releasing may run Python code (finalizers), so
  // the pins leave the map first.
  void release_pins() {
    pins_released_ = true;
    std::unordered_map<uint64_t, Pin> pins;
    pins.swap(pins_);
    pins.clear();
  }

  const std::string key_;
  std::shared_mutex mu_;
  std::unique_ptr<Engine> engine_;  // guarded by mu_; null once closed
  std::mutex sessions_mu_;
  std::unordered_map<Session*, std::unique_ptr<Session>> sessions_;  // guarded by sessions_mu_
  std::unordered_map<uint64_t, Pin> pins_;                           // guarded by the GIL
  bool pins_released_ = false;                                       // guarded by the GIL
};

// A session as _core.Session holds it: owned by the core, usable while it is open.
class SessionRef {
 public:
  SessionRef(std::shared_ptr<EngineCore> core, Session* session)
      : core_(std::move(core)), session_(session) {}
  ~SessionRef() { core_->drop_session(session_); }
  SessionRef(const SessionRef&) = delete;
  SessionRef& operator=(const SessionRef&) = delete;

  template <bool kReleaseGil = true, typename Fn>
  auto use(Fn&& fn) {
    return core_->use<kReleaseGil>([&](Engine&) { return fn(*session_); });
  }
  bool alive() { return core_->session_alive(*session_); }

 private:
  std::shared_ptr<EngineCore> core_;
  Session* session_;  // owned by core_; destroyed by close() or by this object
};

// Starts transfer `uid` through `owner` (an EngineCore or a SessionRef) with the GIL
// released. When it cannot start (bad arguments, unknown peer, id in flight), raises
// with the GIL held again, or with `raise_errors` false returns a status that failed
// with the reason (nothing was sent). A closed engine always raises.
template <typename Owner, typename Start>
StatusHandle start_on(Owner& owner, bool raise_errors, uint64_t uid, Start&& start) {
  absl::StatusOr<StatusHandle> r = owner.use(std::forward<Start>(start));
  if (r.ok()) {
    return *std::move(r);
  }
  if (raise_errors) {
    raise(r.status());
  }
  auto failed = std::make_shared<TransferStatus>(uid);
  failed->set_in_progress();
  failed->finish(r.status());
  return failed;
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
             check_port("IOEngineConfig.port", port);
             return IOEngineConfig{std::move(host), port};
           }),
           py::arg("host") = "", py::arg("port") = 0)
      .def_readwrite("host", &IOEngineConfig::host,
                     "Address to listen on; '' listens on every interface (the engine's "
                     "descriptor then carries an address peers can reach).")
      .def_property(
          "port", [](const IOEngineConfig& c) { return c.port; },
          [](IOEngineConfig& c, int port) {
            check_port("IOEngineConfig.port", port);
            c.port = port;
          },
          "Port, 0..65535 (0 = ephemeral).")
      .def("__repr__", [](const IOEngineConfig& c) {
        return "IOEngineConfig(host='" + c.host + "', port=" + std::to_string(c.port) + ")";
      });

  auto tcp = py::class_<TcpBackendConfig>(
      m, "TcpBackendConfig",
      "Settings of the TCP backend: MORI-IO's fields with its defaults, and ringxfer's own.");
  tcp.def(
      py::init([](const py::args& args, const py::kwargs& kw) {
        // MORI-IO's constructor order; ringxfer's own fields are keywords only.
        static constexpr const char* kPositional[] = {
            "sock_sndbuf_bytes",  "sock_rcvbuf_bytes",       "op_timeout_ms", "enable_keepalive",
            "keepalive_idle_sec", "keepalive_intvl_sec",     "keepalive_cnt", "enable_ctrl_nodelay",
            "num_data_conns",     "striping_threshold_bytes"};
        constexpr size_t kCount = sizeof(kPositional) / sizeof(kPositional[0]);
        if (args.size() > kCount) {
          throw py::type_error("TcpBackendConfig takes at most " + std::to_string(kCount) +
                               " positional arguments (" + std::to_string(args.size()) + " given)");
        }
        TcpBackendConfig c;
        py::object self = py::cast(c);
        for (size_t i = 0; i < args.size(); ++i) {
          if (kw.contains(kPositional[i])) {
            throw py::type_error(std::string("TcpBackendConfig got multiple values for "
                                             "argument '") +
                                 kPositional[i] + "'");
          }
          py::setattr(self, kPositional[i], args[i]);
        }
        for (auto item : kw) {
          const std::string name = item.first.cast<std::string>();
          if (!py::hasattr(self, name.c_str()) || name.rfind("_", 0) == 0) {
            throw py::type_error("TcpBackendConfig got an unexpected keyword argument '" + name +
                                 "'");
          }
          py::setattr(self, name.c_str(), item.second);
        }
        return self.cast<TcpBackendConfig>();
      }),
      "MORI-IO's arguments, in its order: sock_sndbuf_bytes, sock_rcvbuf_bytes, "
      "op_timeout_ms, enable_keepalive, keepalive_idle_sec, keepalive_intvl_sec, "
      "keepalive_cnt, enable_ctrl_nodelay, num_data_conns, striping_threshold_bytes "
      "(positional or keywords); ringxfer's own fields by keyword. Unknown names raise "
      "TypeError.");
  // Numeric fields refuse negative values when set (ValueError naming field and value);
  // the engine checks the remaining ranges when the backend is created.
#define RX_TCP_FIELD(name, doc) def_non_negative(tcp, #name, &TcpBackendConfig::name, doc)
  RX_TCP_FIELD(sock_sndbuf_bytes, "SO_SNDBUF in bytes (0 = kernel autotuning; at most 1 GiB).");
  RX_TCP_FIELD(sock_rcvbuf_bytes, "SO_RCVBUF in bytes (0 = kernel autotuning; at most 1 GiB).");
  RX_TCP_FIELD(op_timeout_ms, "Per-transfer timeout in milliseconds.");
  RX_TCP_FIELD(keepalive_idle_sec, "TCP_KEEPIDLE.");
  RX_TCP_FIELD(keepalive_intvl_sec, "TCP_KEEPINTVL.");
  RX_TCP_FIELD(keepalive_cnt, "TCP_KEEPCNT.");
  RX_TCP_FIELD(striping_threshold_bytes,
               "Transfers this large are striped over data connections (0: every transfer).");
  RX_TCP_FIELD(num_rings, "ringxfer: ring threads per engine (1..64).");
  RX_TCP_FIELD(zerocopy_threshold_bytes, "ringxfer: sends this large use SEND_ZC (0 = off).");
  RX_TCP_FIELD(chunk_bytes, "ringxfer: largest data frame of a striped transfer.");
  RX_TCP_FIELD(ring_entries, "ringxfer: io_uring submission queue size (power of two).");
  RX_TCP_FIELD(wait_spin_us,
               "ringxfer: microseconds Wait() yields the CPU before it sleeps (0..10000).");
  RX_TCP_FIELD(max_inbound_connections,
               "ringxfer: connections other engines may have open to this one (over: closed).");
  RX_TCP_FIELD(max_handshaking_connections,
               "ringxfer: of those, connections still in their handshake (over: closed).");
  RX_TCP_FIELD(handshake_timeout_ms,
               "ringxfer: an accepted connection must finish its handshake within this.");
  RX_TCP_FIELD(idle_timeout_ms,
               "ringxfer: while over half of max_inbound_connections are open, an inbound "
               "connection idle this long is closed.");
#undef RX_TCP_FIELD
  def_recorded(tcp, "enable_keepalive", &TcpBackendConfig::enable_keepalive, "TCP keepalive.");
  def_recorded(tcp, "enable_ctrl_nodelay", &TcpBackendConfig::enable_ctrl_nodelay, "TCP_NODELAY.");
  def_recorded(tcp, "sqpoll", &TcpBackendConfig::sqpoll, "ringxfer: IORING_SETUP_SQPOLL.");
  def_recorded(tcp, "auth_key_file", &TcpBackendConfig::auth_key_file,
               "ringxfer: key file of shared secrets; every connection then proves it "
               "holds one (README, \"Security\"). Empty: RINGXFER_AUTH_KEY_FILE, else "
               "peers are not authenticated.");
  def_recorded(tcp, "advertise_host", &TcpBackendConfig::advertise_host,
               "ringxfer: the address the engine's descriptor tells peers. Empty: "
               "IOEngineConfig.host, or when that is \"\" (every interface) the address "
               "of the default route's interface.");
  tcp.def_property(
      "ring_cpus", [](const TcpBackendConfig& c) { return c.ring_cpus; },
      [](TcpBackendConfig& c, std::vector<int> cpus) {
        for (size_t i = 0; i < cpus.size(); ++i) {
          if (cpus[i] < 0) {
            throw py::value_error("TcpBackendConfig.ring_cpus[" + std::to_string(i) +
                                  "] = " + std::to_string(cpus[i]) + " is negative");
          }
        }
        c.ring_cpus = std::move(cpus);
        c.given.insert("ring_cpus");
      },
      "ringxfer: CPUs to pin ring threads to.");
  tcp.def_static(
      "from_file",
      [](const std::string& path) {
        absl::StatusOr<EngineConfig> file = EngineConfig::load(path);
        if (!file.ok() && file.status().code() == absl::StatusCode::kNotFound) {
          PyErr_SetString(PyExc_FileNotFoundError, std::string(file.status().message()).c_str());
          throw py::error_already_set();
        }
        return tcp_config_of(value_or_raise(std::move(file)));
      },
      py::arg("path"),
      "The TcpBackendConfig of a config file (README, \"Config files\"; ringxfer-tune "
      "sweep --out): every field as the file says, or ringxfer's default where it is "
      "silent. Raises FileNotFoundError / PermissionError / ValueError naming the file and "
      "the field.");
  tcp.def(
      "given_fields", [](const TcpBackendConfig& c) { return c.given; },
      "The fields set by the caller (the others come from RINGXFER_CONFIG when set).");
  tcp.def_property(
      "num_data_conns", [](const TcpBackendConfig& c) { return c.num_data_conns; },
      [](TcpBackendConfig& c, int n) {
        check_data_conns(n);
        c.num_data_conns = n;
        c.given.insert("num_data_conns");
      },
      "Data connections per peer, 1..16 (ValueError otherwise).");

  py::class_<EngineDesc>(m, "EngineDesc", "What one engine tells another to be reached.")
      .def(py::init([](std::string key, std::string host, long long port, std::string hostname,
                       std::string node_id, int pid) {
             check_port("EngineDesc.port", port);
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
      .def_property_readonly(
          "rkey", [](const MemoryDesc& d) { return d.rkey; },
          "ringxfer: the region's key (random, new at every registration); requests name it "
          "with the id. Whoever holds the descriptor can use the region as its access rights "
          "allow.")
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
          [](const TransferStatus& s, const py::int_& timeout) {
            const long long timeout_ms = timeout_ms_of(timeout);
            // More than nanoseconds hold is no limit either.
            constexpr long long kMaxMs = std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::nanoseconds::max())
                                             .count();
            py::gil_scoped_release nogil;
            if (timeout_ms < 0 || timeout_ms > kMaxMs) {
              s.wait();
              return true;
            }
            return s.wait(std::chrono::milliseconds(timeout_ms));
          },
          py::arg("timeout_ms") = -1,
          "Blocks up to timeout_ms (negative, or too large for the clock: no limit); True when "
          "final.")
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

  py::class_<SessionRef>(m, "Session",
                         "A local/remote memory pair bound once. Its calls raise RuntimeError "
                         "once the engine is closed.")
      .def("allocate_transfer_uid",
           [](SessionRef& s) {
             return s.use<false>([](Session& x) { return x.allocate_transfer_id(); });
           })
      .def(
          "write",
          [](SessionRef& s, long long lo, long long ro, long long size, uint64_t uid,
             bool raise_errors) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_on(s, raise_errors, uid,
                            [&](Session& x) { return x.write(a, b, n, uid); });
          },
          py::arg("local_offset"), py::arg("remote_offset"), py::arg("size"), py::arg("uid"),
          py::kw_only(), py::arg("raise_errors") = true)
      .def(
          "read",
          [](SessionRef& s, long long lo, long long ro, long long size, uint64_t uid,
             bool raise_errors) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_on(s, raise_errors, uid, [&](Session& x) { return x.read(a, b, n, uid); });
          },
          py::arg("local_offset"), py::arg("remote_offset"), py::arg("size"), py::arg("uid"),
          py::kw_only(), py::arg("raise_errors") = true)
      .def(
          "batch_write",
          [](SessionRef& s, const py::sequence& lo, const py::sequence& ro, const py::sequence& sz,
             uint64_t uid, bool raise_errors) {
            auto l = offsets_of(lo, "local_offsets"), r = offsets_of(ro, "remote_offsets"),
                 z = offsets_of(sz, "sizes");
            return start_on(s, raise_errors, uid,
                            [&](Session& x) { return x.batch_write(l, r, z, uid); });
          },
          py::arg("local_offsets"), py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"),
          py::kw_only(), py::arg("raise_errors") = true)
      .def(
          "batch_read",
          [](SessionRef& s, const py::sequence& lo, const py::sequence& ro, const py::sequence& sz,
             uint64_t uid, bool raise_errors) {
            auto l = offsets_of(lo, "local_offsets"), r = offsets_of(ro, "remote_offsets"),
                 z = offsets_of(sz, "sizes");
            return start_on(s, raise_errors, uid,
                            [&](Session& x) { return x.batch_read(l, r, z, uid); });
          },
          py::arg("local_offsets"), py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"),
          py::kw_only(), py::arg("raise_errors") = true)
      .def("alive", &SessionRef::alive,
           "False once a memory or the peer is deregistered, or the "
           "engine is closed.");

  py::class_<EngineCore, std::shared_ptr<EngineCore>>(
      m, "Engine",
      "A ringxfer engine (the C++ Engine). close() stops it; then every call raises "
      "RuntimeError.")
      .def(py::init(
               [](const std::string& key, const IOEngineConfig& io, const TcpBackendConfig& tcp) {
                 EngineConfig c = to_engine_config(io, tcp);
                 absl::StatusOr<std::unique_ptr<Engine>> r;
                 {
                   py::gil_scoped_release nogil;
                   r = Engine::create(key, c);
                 }
                 if (!r.ok()) {
                   raise(r.status());
                 }
                 return std::make_shared<EngineCore>(std::move(*r));
               }),
           py::arg("key"), py::arg("config"), py::arg("tcp"))
      .def("close", &EngineCore::close,
           "Stops the engine (pending transfers fail, connections close, ring threads are "
           "joined; the GIL is released meanwhile), then releases the memory it holds. "
           "Idempotent; sessions made from it fail from then on.")
      .def("desc", [](EngineCore& c) { return c.use<false>([](Engine& e) { return e.desc(); }); })
      .def(
          "register_remote_engine",
          [](EngineCore& c, const EngineDesc& d) {
            // Resolves the host name: the GIL is released.
            ok_or_raise(c.use([&](Engine& e) { return e.register_remote_engine(d); }));
          },
          py::arg("desc"))
      .def(
          "deregister_remote_engine",
          [](EngineCore& c, const EngineDesc& d) {
            ok_or_raise(c.use([&](Engine& e) { return e.deregister_remote_engine(d); }));
          },
          py::arg("desc"))
      .def(
          "register_memory",
          [](EngineCore& c, uint64_t address, long long size, int device_id, MemoryLocationType loc,
             py::object owner, bool remote_read, bool remote_write,
             const std::optional<std::vector<std::string>>& allowed_engines) {
            const MemoryLocation l =
                loc == MemoryLocationType::kGpu ? MemoryLocation::kGpu : MemoryLocation::kCpu;
            const uint64_t n = checked(size, "size");
            const MemoryAccess access = access_of(remote_read, remote_write, allowed_engines);
            // Waits for every ring thread (fixed buffers): the GIL is released.
            MemoryDesc md = value_or_raise(c.use([&](Engine& e) {
              return e.register_memory(reinterpret_cast<void*>(address), n, l, device_id, access);
            }));
            if (!owner.is_none()) {
              c.pin(md.id, Pin{nullptr, std::move(owner)});
            }
            return md;
          },
          py::arg("address"), py::arg("size"), py::arg("device_id") = -1,
          py::arg("loc") = MemoryLocationType::kCpu, py::arg("owner") = py::none(), py::kw_only(),
          py::arg("remote_read") = true, py::arg("remote_write") = true,
          py::arg("allowed_engines") = py::none(),
          "Registers [address, address+size); `owner` (if not None) is kept until "
          "deregister_memory() or close(). Peers may read / write it as remote_read and "
          "remote_write say, and only the engines in allowed_engines (None: every engine).")
      .def(
          "register_buffer",
          [](EngineCore& c, const py::object& obj, long long size, int device_id,
             MemoryLocationType loc, bool remote_read, bool remote_write,
             const std::optional<std::vector<std::string>>& allowed_engines) {
            const MemoryAccess access = access_of(remote_read, remote_write, allowed_engines);
            BufferExport view = export_buffer(obj);
            const auto length = static_cast<uint64_t>(view->len);
            const uint64_t n = size < 0 ? length : static_cast<uint64_t>(size);
            if (n > length) {
              throw py::value_error("register_memory: size " + std::to_string(n) +
                                    " is larger than the buffer (" + std::to_string(length) + ")");
            }
            const MemoryLocation l =
                loc == MemoryLocationType::kGpu ? MemoryLocation::kGpu : MemoryLocation::kCpu;
            void* address = view->buf;
            MemoryDesc md = value_or_raise(c.use(
                [&](Engine& e) { return e.register_memory(address, n, l, device_id, access); }));
            c.pin(md.id, Pin{std::move(view), py::none()});
            return md;
          },
          py::arg("buffer"), py::arg("size") = -1, py::arg("device_id") = -1,
          py::arg("loc") = MemoryLocationType::kCpu, py::kw_only(), py::arg("remote_read") = true,
          py::arg("remote_write") = true, py::arg("allowed_engines") = py::none(),
          "Registers the first `size` bytes (negative: all) of a writable C-contiguous "
          "buffer-protocol object and holds an export of it until deregister_memory() or "
          "close() (a bytearray cannot be resized meanwhile).")
      .def(
          "deregister_memory",
          [](EngineCore& c, const MemoryDesc& d) {
            // Waits for every ring thread (fixed buffers): the GIL is released.
            absl::Status st = c.use([&](Engine& e) { return e.deregister_memory(d); });
            if (st.ok()) {
              c.unpin(d.id);
            }
            ok_or_raise(st);
          },
          py::arg("desc"))
      .def("allocate_transfer_uid",
           [](EngineCore& c) {
             return c.use<false>([](Engine& e) { return e.allocate_transfer_id(); });
           })
      .def(
          "write",
          [](EngineCore& c, const MemoryDesc& l, long long lo, const MemoryDesc& r, long long ro,
             long long size, uint64_t uid, bool raise_errors) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_on(c, raise_errors, uid,
                            [&](Engine& e) { return e.write(l, a, r, b, n, uid); });
          },
          py::arg("local"), py::arg("local_offset"), py::arg("remote"), py::arg("remote_offset"),
          py::arg("size"), py::arg("uid"), py::kw_only(), py::arg("raise_errors") = true)
      .def(
          "read",
          [](EngineCore& c, const MemoryDesc& l, long long lo, const MemoryDesc& r, long long ro,
             long long size, uint64_t uid, bool raise_errors) {
            const uint64_t a = checked(lo, "local_offset"), b = checked(ro, "remote_offset"),
                           n = checked(size, "size");
            return start_on(c, raise_errors, uid,
                            [&](Engine& e) { return e.read(l, a, r, b, n, uid); });
          },
          py::arg("local"), py::arg("local_offset"), py::arg("remote"), py::arg("remote_offset"),
          py::arg("size"), py::arg("uid"), py::kw_only(), py::arg("raise_errors") = true)
      .def(
          "batch",
          [](EngineCore& c, bool write, const MemoryDesc& l, const py::sequence& lo,
             const MemoryDesc& r, const py::sequence& ro, const py::sequence& sz, uint64_t uid,
             bool raise_errors) {
            auto a = offsets_of(lo, "local_offsets"), b = offsets_of(ro, "remote_offsets"),
                 n = offsets_of(sz, "sizes");
            return start_on(c, raise_errors, uid, [&](Engine& e) {
              return write ? e.batch_write(l, a, r, b, n, uid) : e.batch_read(l, a, r, b, n, uid);
            });
          },
          py::arg("write"), py::arg("local"), py::arg("local_offsets"), py::arg("remote"),
          py::arg("remote_offsets"), py::arg("sizes"), py::arg("uid"), py::kw_only(),
          py::arg("raise_errors") = true)
      .def(
          "create_session",
          [](EngineCore& c, const MemoryDesc& l, const MemoryDesc& r) {
            return std::make_unique<SessionRef>(c.shared_from_this(), c.create_session(l, r));
          },
          py::arg("local"), py::arg("remote"))
      .def(
          "pop_inbound_transfer_status",
          [](EngineCore& c, const std::string& key, uint64_t uid) {
            return c.use<false>([&](Engine& e) { return e.pop_inbound_status(key, uid); });
          },
          py::arg("remote_key"), py::arg("uid"))
      .def("stats", [](EngineCore& c) {
        const EngineStats s = c.use<false>([](Engine& e) { return e.stats(); });
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
        d["auth_failures"] = s.auth_failures;
        d["connections_refused"] = s.connections_refused;
        d["peers"] = s.peers;
        d["peers_evicted"] = s.peers_evicted;
        d["idle_closed"] = s.idle_closed;
        d["staged_copies"] = s.staged_copies;
        d["staging_waits"] = s.staging_waits;
        d["staging_failures"] = s.staging_failures;
        d["inbound_statuses"] = s.inbound_statuses;
        d["inbound_statuses_dropped"] = s.inbound_statuses_dropped;
        d["split_transfers"] = s.split_transfers;
        d["split_transfers_expired"] = s.split_transfers_expired;
        d["access_denied"] = s.access_denied;
        d["zerocopy_fixed_sends"] = s.zerocopy_fixed_sends;
        d["fixed_buffers"] = s.fixed_buffers;
        d["fixed_buffer_fallbacks"] = s.fixed_buffer_fallbacks;
        d["zerocopy_refused"] = s.zerocopy_refused;
        d["ring_threads"] = s.ring_threads;
        return d;
      });

  m.def(
      "set_gpu_stream",
      [](uint64_t stream) { Engine::set_gpu_stream(reinterpret_cast<void*>(stream)); },
      py::arg("stream"),
      "Transfers this thread starts copy their GPU memory only after the work queued on "
      "`stream` (a cudaStream_t / hipStream_t as an int, e.g. torch.cuda.current_stream()"
      ".cuda_stream) before they started; 0: no ordering.");
  m.def("gpu_stream", [] { return reinterpret_cast<uint64_t>(Engine::gpu_stream()); });
  m.def(
      "wait_all",
      [](const std::vector<StatusHandle>& statuses, const py::int_& timeout) {
        // Beyond long long: no limit (wait_all saturates its deadline).
        const long long timeout_ms = timeout_ms_of(timeout);
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
        BufferExport view = export_buffer(obj);
        return py::make_tuple(reinterpret_cast<uint64_t>(view->buf),
                              static_cast<uint64_t>(view->len));
      },
      py::arg("obj"), "(address, size) of a writable C-contiguous buffer-protocol object.");

  m.attr("__version__") = version_string();
}
