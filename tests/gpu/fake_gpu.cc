// Fake GPU runtime for ringxfer's tests and CI, on hosts without a GPU: libringxfer_fake_gpu.so
// exports the runtime entry points that memory::GpuRuntime resolves (src/memory/gpu_runtime.h)
// under both their HIP and their CUDA names, with plain C types and the real argument order.
//
// "Device memory" is a memfd mapped twice: PROT_NONE at the address handed out (a CPU access by
// the code under test faults) and read-write in a private view that copies use; a PROT_NONE guard
// page follows each allocation. Every stream (the default one is made lazily) is a worker thread
// running its queue in order: copies, event records, event waits, host functions. Async copies
// sleep for a latency plus bytes / bandwidth and can be made to fail (error 700 at the stream's
// next event). Pointer attributes use CUDA's values under the cuda names, ROCm 6's or ROCm 5's
// under the hip names. Every error but not-ready becomes the thread's last error.
//
// Environment, read at first use:
//   RINGXFER_FAKE_GPU_DEVICES          device count (default 2)
//   RINGXFER_FAKE_GPU_CUDA_VERSION     cudaRuntimeGetVersion's value (default 13000)
//   RINGXFER_FAKE_GPU_HIP_VERSION      hipRuntimeGetVersion's (default 60300000; < 60000000: ROCm
//   5) RINGXFER_FAKE_GPU_COPY_LATENCY_US  sleep before each async copy (default 0)
//   RINGXFER_FAKE_GPU_COPY_GBPS        async copy bandwidth in 1e9 bytes/s (0 or unset: unlimited)
//   RINGXFER_FAKE_GPU_FAIL_COPIES      "AFTER[:COUNT]": after AFTER good async copies the next
//                                      COUNT (default 1) fail
// Tests change these at run time and read statistics with the ringxfer_fake_gpu_* functions at
// the end of this file.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr int kSuccess = 0;
constexpr int kInvalidValue = 1;
constexpr int kOutOfMemory = 2;
constexpr int kNoDevice = 100;
constexpr int kInvalidDevice = 101;
constexpr int kNotReady = 600;
constexpr int kIllegalAddress = 700;

enum class Api { kCuda, kHip };

// A non-negative number from the environment, else `fallback`.
double env_number(const char* name, double fallback) {
  const char* v = std::getenv(name);
  char* end = nullptr;
  const double x = v != nullptr ? std::strtod(v, &end) : -1;
  return (v == nullptr || *v == '\0' || *end != '\0' || !(x >= 0)) ? fallback : x;
}

size_t page_size() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// One device allocation: `base` (PROT_NONE, handed out) and `shadow` (read-write) map the same
// memfd. Unmapped when the last reference goes: the table's, or a queued copy's.
struct DeviceAlloc {
  char* base = nullptr;
  char* shadow = nullptr;
  size_t size = 0;    // as asked
  size_t mapped = 0;  // rounded to pages; a guard page follows base + mapped
  int device = 0;
  std::atomic<bool> unmap{false};  // set once mapped; cleared when the process exits
  ~DeviceAlloc() {
    if (unmap.load()) {
      munmap(base, mapped + page_size());
      munmap(shadow, mapped);
    }
  }
};

struct HostRange {
  size_t size = 0;
  size_t mapped = 0;  // the mapping's length for HostAlloc, 0 for HostRegister
  int device = 0;
};

// One recording of an event: pending until the worker reaches it. Guarded by State::mu.
struct EventState {
  bool done = false;
  int error = kSuccess;
};

// An event handle: its latest recording (null: never recorded). Guarded by State::mu.
struct Event {
  std::shared_ptr<EventState> current;
};

enum class OpKind { kCopy, kRecord, kWait, kHostFn };

struct Op {
  OpKind kind = OpKind::kHostFn;
  void* dst = nullptr;  // resolved: a host pointer or a shadow view
  void* src = nullptr;
  size_t bytes = 0;
  bool fail = false;
  std::shared_ptr<DeviceAlloc> keep_dst = nullptr, keep_src = nullptr;
  std::shared_ptr<EventState> event = nullptr;  // record, wait
  void (*fn)(void*) = nullptr;
  void* user = nullptr;
};

struct Stream {
  std::mutex mu;
  std::condition_variable cv;  // work queued, stop asked, or idle again
  std::deque<Op> queue;
  bool busy = false;  // the worker runs an op taken off the queue
  bool stop = false;
  bool abandon = false;          // the process exits: queued work is dropped
  int pending_error = kSuccess;  // a failed copy's, until the next record or synchronize
  std::thread worker;
};

struct State {
  const int devices = static_cast<int>(env_number("RINGXFER_FAKE_GPU_DEVICES", 2));
  const int cuda_version = static_cast<int>(env_number("RINGXFER_FAKE_GPU_CUDA_VERSION", 13000));
  const int hip_version = static_cast<int>(env_number("RINGXFER_FAKE_GPU_HIP_VERSION", 60300000));
  std::atomic<double> gbps{env_number("RINGXFER_FAKE_GPU_COPY_GBPS", 0)};
  std::atomic<long> latency_us{
      static_cast<long>(env_number("RINGXFER_FAKE_GPU_COPY_LATENCY_US", 0))};

  std::mutex mu;  // the tables, the stream and event sets, every EventState, the failure plan
  std::map<uintptr_t, std::shared_ptr<DeviceAlloc>> device;  // by base
  std::map<uintptr_t, HostRange> host;                       // by base
  std::set<Stream*> streams;
  Stream* default_stream = nullptr;
  pid_t pid = getpid();          // the process whose threads the workers are
  std::vector<Stream*> orphans;  // a forked child's: the parent's streams, without workers
  std::set<Event*> events;
  long fail_after = 0;            // good async copies still to come before the failures
  long fail_count = 0;            // failures still to inject
  bool shut = false;              // the process is exiting: streams refused, event waits released
  std::condition_variable ev_cv;  // an event completed, or shut

  std::atomic<long> copies{0}, bytes{0}, copying{0}, max_copying{0}, live{0};

  State() {
    const char* plan = std::getenv("RINGXFER_FAKE_GPU_FAIL_COPIES");
    if (plan != nullptr && *plan != '\0') {
      char* end = nullptr;
      const long after = std::strtol(plan, &end, 10);
      const long count = *end == ':' ? std::strtol(end + 1, &end, 10) : 1;
      if (*end == '\0' && after >= 0 && count > 0) {
        fail_after = after;
        fail_count = count;
      }
    }
  }
};

// The state lives in static storage and is never destroyed, so that calls made while the
// process exits stay safe; finalize() stops the workers and empties the tables.
alignas(State) unsigned char g_storage[sizeof(State)];
std::atomic<State*> g_state{nullptr};

State& st() {
  static State* const s = [] {
    State* p = new (g_storage) State();
    g_state.store(p, std::memory_order_release);
    return p;
  }();
  return *s;
}

thread_local int t_device = 0;
thread_local int t_last_error = kSuccess;

// Runs an entry point: an exception (allocation, thread creation) becomes out-of-memory, and
// every error but not-ready becomes the thread's last error.
template <class F>
int guarded(F f) {
  int e = kOutOfMemory;
  try {
    e = f();
  } catch (...) {
  }
  if (e != kSuccess && e != kNotReady) {
    t_last_error = e;
  }
  return e;
}

// ---- Tables (State::mu held) ----

// The entry of `m` (keyed by base) whose first `len(entry)` bytes hold a, or m.end().
template <class M, class Len>
auto containing(M& m, uintptr_t a, Len len) {
  auto it = m.upper_bound(a);
  if (it == m.begin() || a >= std::prev(it)->first + len(std::prev(it)->second)) {
    return m.end();
  }
  return std::prev(it);
}

size_t reserved(const std::shared_ptr<DeviceAlloc>& d) { return d->mapped + page_size(); }
size_t host_len(const HostRange& h) { return h.size; }

// The device allocation whose reservation (guard page included) holds p.
std::shared_ptr<DeviceAlloc> find_device(State& g, const void* p) {
  auto it = containing(g.device, reinterpret_cast<uintptr_t>(p), reserved);
  return it == g.device.end() ? nullptr : it->second;
}

// Resolves one side of a copy: a device pointer to its shadow view (kept alive by `keep`).
int resolve(State& g, const void* p, size_t n, void** addr, std::shared_ptr<DeviceAlloc>* keep) {
  *addr = const_cast<void*>(p);
  *keep = find_device(g, p);
  if (!*keep) {
    return kSuccess;
  }
  const size_t off = static_cast<size_t>(static_cast<const char*>(p) - (*keep)->base);
  if (off > (*keep)->size || n > (*keep)->size - off) {
    return kInvalidValue;  // leaves its allocation
  }
  *addr = (*keep)->shadow + off;
  return kSuccess;
}

// Validates a copy and fills `op` with the resolved views.
int prepare_copy(State& g, void* dst, const void* src, size_t n, int kind, Op* op) {
  if (dst == nullptr || src == nullptr || kind < 0 || kind > 4 ||
      resolve(g, dst, n, &op->dst, &op->keep_dst) != kSuccess ||
      resolve(g, src, n, &op->src, &op->keep_src) != kSuccess) {
    return kInvalidValue;
  }
  // Kinds 0-3 are host/device to host/device: bit 0 says dst is device, bit 1 src.
  if (kind != 4 && (bool(kind & 1) != bool(op->keep_dst) || bool(kind & 2) != bool(op->keep_src))) {
    return kInvalidValue;
  }
  op->kind = OpKind::kCopy;
  op->bytes = n;
  return kSuccess;
}

// ---- Streams ----

void run_copy(State& g, Stream& s, const Op& op) {
  const long now = g.copying.fetch_add(1) + 1;
  long prev = g.max_copying.load();
  while (prev < now && !g.max_copying.compare_exchange_weak(prev, now)) {
  }
  const double gbps = g.gbps.load();
  // bytes / (gbps * 1e9) seconds is bytes / gbps nanoseconds.
  const double ns = static_cast<double>(g.latency_us.load()) * 1e3 +
                    (gbps > 0 ? static_cast<double>(op.bytes) / gbps : 0.0);
  bool abandoned;
  {
    // A sleep that the process's exit cuts short (the copy is then dropped).
    std::unique_lock<std::mutex> lock(s.mu);
    if (ns >= 1) {
      s.cv.wait_for(lock, std::chrono::nanoseconds(std::llround(ns)), [&] { return s.abandon; });
    }
    abandoned = s.abandon;
    if (op.fail) {
      s.pending_error = kIllegalAddress;
    }
  }
  if (!op.fail && !abandoned) {
    std::memcpy(op.dst, op.src, op.bytes);
    g.copies.fetch_add(1);
    g.bytes.fetch_add(static_cast<long>(op.bytes));
  }
  g.copying.fetch_sub(1);
}

void run_op(State& g, Stream& s, const Op& op) {
  if (op.kind == OpKind::kCopy) {
    run_copy(g, s, op);
  } else if (op.kind == OpKind::kRecord) {
    std::unique_lock<std::mutex> lock(s.mu);
    const int error = std::exchange(s.pending_error, kSuccess);
    lock.unlock();
    {
      std::lock_guard<std::mutex> g_lock(g.mu);
      op.event->done = true;
      op.event->error = error;
    }
    g.ev_cv.notify_all();
  } else if (op.kind == OpKind::kWait) {
    std::unique_lock<std::mutex> lock(g.mu);
    g.ev_cv.wait(lock, [&] { return op.event->done || g.shut; });
  } else {
    op.fn(op.user);
  }
}

void worker_main(State* g, Stream* s) {
  for (;;) {
    Op op;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) {
        return;  // stopped, nothing left
      }
      op = std::move(s->queue.front());
      s->queue.pop_front();
      s->busy = true;
    }
    run_op(*g, *s, op);
    op = Op{};  // drop the references before saying idle
    {
      std::lock_guard<std::mutex> lock(s->mu);
      s->busy = false;
    }
    s->cv.notify_all();
  }
}

Stream* new_stream(State& g) {
  auto s = std::make_unique<Stream>();
  s->worker = std::thread(worker_main, &g, s.get());
  return s.release();
}

// Stops a stream's worker once its queue is done (dropped if `abandon`), joins and frees it.
void stop_stream(Stream* s, bool abandon) {
  {
    std::lock_guard<std::mutex> lock(s->mu);
    s->stop = true;
    s->abandon = abandon;
    if (abandon) {
      s->queue.clear();
    }
  }
  s->cv.notify_all();
  s->worker.join();
  delete s;
}

// In a forked child, forgets the parent's streams (their workers did not come along) so that the
// child gets its own. State::mu held.
void adopt_fork(State& g) {
  if (const pid_t pid = getpid(); pid != g.pid) {
    g.pid = pid;
    g.orphans.insert(g.orphans.end(), g.streams.begin(), g.streams.end());
    if (g.default_stream != nullptr) {
      g.orphans.push_back(std::exchange(g.default_stream, nullptr));
    }
    g.streams.clear();
  }
}

// The stream a handle names (nullptr: the default stream, made now); null if unknown or exiting.
// State::mu held.
Stream* find_stream(State& g, void* handle) {
  adopt_fork(g);
  if (g.shut) {
    return nullptr;
  }
  if (handle == nullptr && g.default_stream == nullptr) {
    g.default_stream = new_stream(g);
  }
  auto* s = static_cast<Stream*>(handle);
  return handle == nullptr ? g.default_stream : g.streams.count(s) != 0 ? s : nullptr;
}

Event* find_event(State& g, void* handle) {
  auto* e = static_cast<Event*>(handle);
  return g.events.count(e) != 0 ? e : nullptr;
}

void push(Stream& s, Op op) {
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.queue.push_back(std::move(op));
  }
  s.cv.notify_all();
}

void wait_idle(Stream& s) {
  std::unique_lock<std::mutex> lock(s.mu);
  s.cv.wait(lock, [&] { return s.queue.empty() && !s.busy; });
}

// At exit (or unload): stops every worker (queued work is dropped, waits are released) and
// empties the tables; mappings are left to the process, whose exiting code may still use them.
void finalize() {
  State* g = g_state.load(std::memory_order_acquire);
  if (g == nullptr) {
    return;
  }
  std::vector<Stream*> streams;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    if (g->pid != getpid() || std::exchange(g->shut, true)) {
      return;  // a forked child that made no stream (the workers are the parent's), or done
    }
    streams.assign(g->streams.begin(), g->streams.end());
    if (g->default_stream != nullptr) {
      streams.push_back(std::exchange(g->default_stream, nullptr));
    }
    for (Event* e : g->events) {
      delete e;
    }
    for (auto& [base, alloc] : g->device) {
      alloc->unmap.store(false);
    }
    g->streams.clear();
    g->events.clear();
    g->device.clear();
    g->host.clear();
  }
  g->ev_cv.notify_all();
  for (Stream* s : streams) {
    stop_stream(s, /*abandon=*/true);
  }
}

struct Finalizer {
  ~Finalizer() { finalize(); }
} g_finalizer;

// ---- Entry points (one implementation for both names) ----

// Writes `value` to `out` (kInvalidValue if null).
int put(int* out, int value) {
  if (out == nullptr) {
    return kInvalidValue;
  }
  *out = value;
  return kSuccess;
}

int device_malloc(void** ptr, size_t bytes) {
  if (ptr == nullptr || (*ptr = nullptr, bytes == 0)) {
    return ptr == nullptr ? kInvalidValue : kSuccess;
  }
  const size_t mapped = (bytes + page_size() - 1) / page_size() * page_size();
  const int fd = memfd_create("ringxfer-fake-gpu", MFD_CLOEXEC);
  if (fd < 0) {
    return kOutOfMemory;
  }
  void* base = MAP_FAILED;
  void* shadow = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(mapped)) == 0) {
    // Reserve the range and its guard page, then put the memfd over the range.
    base = mmap(nullptr, mapped + page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base != MAP_FAILED &&
        mmap(base, mapped, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, 0) != MAP_FAILED) {
      shadow = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
  }
  close(fd);  // the mappings keep the memory
  if (shadow == MAP_FAILED) {
    if (base != MAP_FAILED) {
      munmap(base, mapped + page_size());
    }
    return kOutOfMemory;
  }
  std::shared_ptr<DeviceAlloc> a(new DeviceAlloc{static_cast<char*>(base),
                                                 static_cast<char*>(shadow), bytes, mapped,
                                                 t_device, /*unmap=*/true});
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  g.device.emplace(reinterpret_cast<uintptr_t>(base), std::move(a));
  g.live.fetch_add(1);
  *ptr = base;
  return kSuccess;
}

int device_free(void* ptr) {
  State& g = st();
  std::shared_ptr<DeviceAlloc> a;  // unmapped after the lock, unless a queued copy holds it
  std::lock_guard<std::mutex> lock(g.mu);
  auto it = g.device.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == g.device.end()) {
    return ptr == nullptr ? kSuccess : kInvalidValue;
  }
  a = std::move(it->second);
  g.device.erase(it);
  g.live.fetch_sub(1);
  return kSuccess;
}

int host_alloc(void** ptr, size_t bytes) {
  if (ptr == nullptr || (*ptr = nullptr, bytes == 0)) {
    return ptr == nullptr ? kInvalidValue : kSuccess;
  }
  const size_t mapped = (bytes + page_size() - 1) / page_size() * page_size();
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return kOutOfMemory;
  }
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  g.host[reinterpret_cast<uintptr_t>(p)] = HostRange{bytes, mapped, t_device};
  g.live.fetch_add(1);
  *ptr = p;
  return kSuccess;
}

// Forgets a host range that starts at ptr: a HostAlloc one (also unmapped) if `pinned`, else a
// HostRegister one.
int host_forget(void* ptr, bool pinned) {
  State& g = st();
  size_t mapped = 0;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    auto it = g.host.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == g.host.end() || (it->second.mapped != 0) != pinned) {
      return ptr == nullptr && pinned ? kSuccess : kInvalidValue;
    }
    mapped = it->second.mapped;
    g.host.erase(it);
    g.live.fetch_sub(pinned ? 1 : 0);
  }
  if (pinned) {
    munmap(ptr, mapped);
  }
  return kSuccess;
}

int host_register(void* ptr, size_t bytes) {
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  const auto a = reinterpret_cast<uintptr_t>(ptr);
  // Refused if empty, or overlapping a known range or device reservation.
  auto h = g.host.lower_bound(a + bytes);
  auto d = g.device.lower_bound(a + bytes);
  if (ptr == nullptr || bytes == 0 ||
      (h != g.host.begin() && std::prev(h)->first + std::prev(h)->second.size > a) ||
      (d != g.device.begin() && std::prev(d)->first + reserved(std::prev(d)->second) > a)) {
    return kInvalidValue;
  }
  g.host[a] = HostRange{bytes, 0, t_device};
  return kSuccess;
}

int pointer_attributes(Api api, void* attributes, const void* ptr) {
  enum { kUnregistered, kHost, kDevice } kind = kUnregistered;
  struct {
    int type;
    int device;
    const void* device_pointer;
    const void* host_pointer;
  } out = {0, -1, nullptr, nullptr};
  {
    State& g = st();
    std::lock_guard<std::mutex> lock(g.mu);
    auto h = containing(g.host, reinterpret_cast<uintptr_t>(ptr), host_len);
    if (auto d = find_device(g, ptr)) {
      if (static_cast<const char*>(ptr) < d->base + d->size) {  // not in the slack or guard
        kind = kDevice;
        out.device = d->device;
        out.device_pointer = ptr;
      }
    } else if (h != g.host.end()) {
      kind = kHost;
      out.device = h->second.device;
      out.device_pointer = ptr;  // as with unified addressing
      out.host_pointer = ptr;
    }
  }
  if (attributes == nullptr || (kind == kUnregistered && api == Api::kHip)) {
    return kInvalidValue;  // HIP fails for pageable memory
  }
  out.type = kind;  // CUDA and ROCm 6: unregistered 0, host 1, device 2, managed 3
  if (api == Api::kHip && st().hip_version < 60000000) {
    out.type = kind == kHost ? 0 : 1;  // ROCm 5's hipMemoryType: host 0, device 1
  }
  static_assert(sizeof(out) <= 32);
  std::memset(attributes, 0, 32);
  std::memcpy(attributes, &out, sizeof(out));
  return kSuccess;
}

int stream_create(void** stream) {
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  if (stream == nullptr || g.shut) {
    return kInvalidValue;
  }
  Stream* s = new_stream(g);
  g.streams.insert(s);
  *stream = s;
  return kSuccess;
}

int stream_destroy(void* stream) {
  State& g = st();
  auto* s = static_cast<Stream*>(stream);
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (stream == nullptr || g.streams.erase(s) == 0) {
      return kInvalidValue;
    }
  }
  stop_stream(s, /*abandon=*/false);  // the worker drains the queue first
  return kSuccess;
}

int stream_synchronize(void* stream) {
  State& g = st();
  std::unique_lock<std::mutex> lock(g.mu);
  Stream* s = find_stream(g, stream);
  lock.unlock();
  if (s == nullptr) {
    return kInvalidValue;
  }
  wait_idle(*s);
  std::lock_guard<std::mutex> stream_lock(s->mu);
  return std::exchange(s->pending_error, kSuccess);
}

// Queues `op` on `stream`. A copy is validated (`kind`) and planned to fail or not; a record
// makes a new recording of `event`; a wait takes its current one (none: nothing to wait for).
int enqueue(void* stream, Op op, void* event = nullptr, int kind = 0) {
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  Stream* s = find_stream(g, stream);
  Event* e = find_event(g, event);
  if (s == nullptr || (e == nullptr && (op.kind == OpKind::kRecord || op.kind == OpKind::kWait)) ||
      (op.kind == OpKind::kHostFn && op.fn == nullptr)) {
    return kInvalidValue;
  }
  if (op.kind == OpKind::kCopy) {
    if (const int err = prepare_copy(g, op.dst, op.src, op.bytes, kind, &op);
        err != kSuccess || op.bytes == 0) {
      return err;
    }
    if (g.fail_count > 0 && g.fail_after-- == 0) {  // counted in submission order
      g.fail_after = 0;
      g.fail_count--;
      op.fail = true;
    }
  } else if (op.kind == OpKind::kRecord) {
    e->current = std::make_shared<EventState>();
  }
  if (e != nullptr && (op.event = e->current) == nullptr) {
    return kSuccess;  // a wait for an event never recorded
  }
  push(*s, std::move(op));
  return kSuccess;
}

int event_create(void** event) {
  State& g = st();
  auto e = std::make_unique<Event>();
  std::lock_guard<std::mutex> lock(g.mu);
  if (event == nullptr) {
    return kInvalidValue;
  }
  g.events.insert(e.get());
  *event = e.release();
  return kSuccess;
}

int event_destroy(void* event) {
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  Event* e = find_event(g, event);
  if (e == nullptr) {
    return kInvalidValue;
  }
  g.events.erase(e);
  delete e;  // a pending recording lives on in its stream's queue
  return kSuccess;
}

// Query (block false) or synchronize (block true).
int event_wait(void* event, bool block) {
  State& g = st();
  std::unique_lock<std::mutex> lock(g.mu);
  Event* e = find_event(g, event);
  std::shared_ptr<EventState> r = e != nullptr ? e->current : nullptr;
  if (r == nullptr) {
    return e == nullptr ? kInvalidValue : kSuccess;  // never recorded: complete
  }
  if (block) {
    g.ev_cv.wait(lock, [&] { return r->done || g.shut; });
  }
  return r->done || block ? r->error : kNotReady;
}

int memcpy_sync(void* dst, const void* src, size_t bytes, int kind) {
  State& g = st();
  std::unique_lock<std::mutex> lock(g.mu);
  adopt_fork(g);
  Stream* s = g.shut ? nullptr : g.default_stream;
  lock.unlock();
  if (s != nullptr) {
    wait_idle(*s);
  }
  Op op;
  lock.lock();
  if (const int e = prepare_copy(g, dst, src, bytes, kind, &op); e != kSuccess) {
    return e;
  }
  lock.unlock();
  std::memcpy(op.dst, op.src, bytes);
  return kSuccess;
}

const char* error_string(int error) {
  static constexpr struct {
    int code;
    const char* text;
  } kTexts[] = {{kSuccess, "fake GPU: success (0)"},
                {kInvalidValue, "fake GPU: invalid value (1)"},
                {kOutOfMemory, "fake GPU: out of memory (2)"},
                {kNoDevice, "fake GPU: no device (100)"},
                {kInvalidDevice, "fake GPU: invalid device (101)"},
                {kNotReady, "fake GPU: not ready (600)"},
                {kIllegalAddress, "fake GPU: illegal address (700)"}};
  for (const auto& t : kTexts) {
    if (t.code == error) {
      return t.text;
    }
  }
  return "fake GPU: unknown error";
}

}  // namespace

#define FAKE_GPU_EXPORT extern "C" __attribute__((visibility("default")))

// Defines the CUDA and the HIP name of one entry point; `call` may use `api`.
#define FAKE_GPU_PAIR(cuda_name, hip_name, params, call) \
  FAKE_GPU_EXPORT int cuda_name params {                 \
    [[maybe_unused]] constexpr Api api = Api::kCuda;     \
    return guarded([&] { return call; });                \
  }                                                      \
  FAKE_GPU_EXPORT int hip_name params {                  \
    [[maybe_unused]] constexpr Api api = Api::kHip;      \
    return guarded([&] { return call; });                \
  }

FAKE_GPU_PAIR(cudaGetDeviceCount, hipGetDeviceCount, (int* n),
              put(n, st().devices) != kSuccess ? kInvalidValue
              : st().devices > 0               ? kSuccess
                                               : kNoDevice)
FAKE_GPU_PAIR(cudaSetDevice, hipSetDevice, (int device),
              device < 0 || device >= st().devices ? kInvalidDevice : (t_device = device, kSuccess))
FAKE_GPU_PAIR(cudaGetDevice, hipGetDevice, (int* device), put(device, t_device))
FAKE_GPU_PAIR(cudaRuntimeGetVersion, hipRuntimeGetVersion, (int* v),
              put(v, api == Api::kCuda ? st().cuda_version : st().hip_version))
FAKE_GPU_PAIR(cudaHostAlloc, hipHostMalloc, (void** p, size_t n, unsigned), host_alloc(p, n))
FAKE_GPU_PAIR(cudaFreeHost, hipHostFree, (void* p), host_forget(p, /*pinned=*/true))
FAKE_GPU_PAIR(cudaHostRegister, hipHostRegister, (void* p, size_t n, unsigned), host_register(p, n))
FAKE_GPU_PAIR(cudaHostUnregister, hipHostUnregister, (void* p), host_forget(p, /*pinned=*/false))
FAKE_GPU_PAIR(cudaStreamCreateWithFlags, hipStreamCreateWithFlags, (void** s, unsigned),
              stream_create(s))
FAKE_GPU_PAIR(cudaStreamDestroy, hipStreamDestroy, (void* s), stream_destroy(s))
FAKE_GPU_PAIR(cudaStreamSynchronize, hipStreamSynchronize, (void* s), stream_synchronize(s))
FAKE_GPU_PAIR(cudaStreamWaitEvent, hipStreamWaitEvent, (void* s, void* e, unsigned),
              enqueue(s, Op{.kind = OpKind::kWait}, e))
FAKE_GPU_PAIR(cudaEventCreateWithFlags, hipEventCreateWithFlags, (void** e, unsigned),
              event_create(e))
FAKE_GPU_PAIR(cudaEventDestroy, hipEventDestroy, (void* e), event_destroy(e))
FAKE_GPU_PAIR(cudaEventRecord, hipEventRecord, (void* e, void* s),
              enqueue(s, Op{.kind = OpKind::kRecord}, e))
FAKE_GPU_PAIR(cudaEventQuery, hipEventQuery, (void* e), event_wait(e, /*block=*/false))
FAKE_GPU_PAIR(cudaEventSynchronize, hipEventSynchronize, (void* e), event_wait(e, /*block=*/true))
FAKE_GPU_PAIR(
    cudaMemcpyAsync, hipMemcpyAsync, (void* dst, const void* src, size_t n, int kind, void* s),
    enqueue(s, Op{.kind = OpKind::kCopy, .dst = dst, .src = const_cast<void*>(src), .bytes = n},
            nullptr, kind))
FAKE_GPU_PAIR(cudaLaunchHostFunc, hipLaunchHostFunc, (void* s, void (*fn)(void*), void* user),
              enqueue(s, Op{.kind = OpKind::kHostFn, .fn = fn, .user = user}))
FAKE_GPU_PAIR(cudaPointerGetAttributes, hipPointerGetAttributes, (void* attr, const void* p),
              pointer_attributes(api, attr, p))
FAKE_GPU_PAIR(cudaMalloc, hipMalloc, (void** p, size_t n), device_malloc(p, n))
FAKE_GPU_PAIR(cudaFree, hipFree, (void* p), device_free(p))
FAKE_GPU_PAIR(cudaMemcpy, hipMemcpy, (void* dst, const void* src, size_t n, int kind),
              memcpy_sync(dst, src, n, kind))

FAKE_GPU_EXPORT const char* cudaGetErrorString(int error) { return error_string(error); }
FAKE_GPU_EXPORT const char* hipGetErrorString(int error) { return error_string(error); }
FAKE_GPU_EXPORT int cudaGetLastError() { return std::exchange(t_last_error, kSuccess); }
FAKE_GPU_EXPORT int hipGetLastError() { return std::exchange(t_last_error, kSuccess); }

// ---- For tests ----

// Async copies from now on sleep latency_us + bytes / (gbps * 1e9) s (gbps <= 0: no limit).
FAKE_GPU_EXPORT void ringxfer_fake_gpu_set_copy_cost(double gbps, long latency_us) {
  st().gbps.store(gbps > 0 ? gbps : 0.0);
  st().latency_us.store(latency_us > 0 ? latency_us : 0);
}

// After `after` good async copies from now, the next `count` fail (count 0: none).
FAKE_GPU_EXPORT void ringxfer_fake_gpu_fail_copies(long after, long count) {
  State& g = st();
  std::lock_guard<std::mutex> lock(g.mu);
  g.fail_after = std::max(0L, after);
  g.fail_count = std::max(0L, count);
}

// Async copies done (failed ones not counted) and their bytes, the most streams inside a copy
// (its sleep included) at once, and the device and pinned host allocations not freed. Null
// pointers are skipped.
FAKE_GPU_EXPORT void ringxfer_fake_gpu_stats(long* copies, long* bytes,
                                             long* max_concurrent_streams_copying,
                                             long* live_allocations) {
  State& g = st();
  const std::pair<long*, long> values[] = {{copies, g.copies.load()},
                                           {bytes, g.bytes.load()},
                                           {max_concurrent_streams_copying, g.max_copying.load()},
                                           {live_allocations, g.live.load()}};
  for (const auto& [out, value] : values) {
    if (out != nullptr) {
      *out = value;
    }
  }
}

// Zeroes the copy counters and the concurrency maximum (live allocations are not a counter).
FAKE_GPU_EXPORT void ringxfer_fake_gpu_reset_stats(void) {
  State& g = st();
  g.copies.store(0);
  g.bytes.store(0);
  g.max_copying.store(0);
}
