// ringxfer-bench: the transfer benchmark. One initiator moves batches of messages to or
// from one target and prints the table of MORI-IO's TCP benchmark. Roles run in two
// processes (on two hosts, or both here with --loopback). Descriptors are exchanged on
// a small rendezvous socket at the engine port + 1 (line-based text, blocking: this is
// the tool, not the engine).
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "memory/gpu_runtime.h"
#include "ringxfer/ringxfer.h"

ABSL_FLAG(std::string, role, "", "target or initiator (not needed with --loopback)");
ABSL_FLAG(std::string, host, "127.0.0.1", "target: address to listen on; initiator: target's");
ABSL_FLAG(int, port, 0, "target engine port (0: ephemeral, printed); rendezvous is port+1");
ABSL_FLAG(std::string, op, "write", "write or read");
ABSL_FLAG(int, batch, 256, "messages per batch (1..8192)");
ABSL_FLAG(uint64_t, min_size, 8, "smallest message size in bytes (swept in powers of two)");
ABSL_FLAG(uint64_t, max_size, 1 << 20, "largest message size in bytes");
ABSL_FLAG(uint64_t, stride, 0, "distance between messages in bytes (0: contiguous)");
ABSL_FLAG(uint64_t, footprint, 0,
          "bytes of memory a batch walks through, wrapping around (0: batch x stride); a "
          "footprint that fits in cache measures what iperf3 measures, which reuses one block");
ABSL_FLAG(int, iters, 128, "measured batches per size");
ABSL_FLAG(int, warmup, 8, "unmeasured batches per size");
ABSL_FLAG(int, stripes, ringxfer::EngineConfig{}.stripes, "data connections per peer (1..16)");
ABSL_FLAG(int, rings, ringxfer::EngineConfig{}.rings, "ring threads per engine");
ABSL_FLAG(uint64_t, stripe_threshold, ringxfer::EngineConfig{}.stripe_threshold_bytes,
          "bytes from which a transfer is striped");
ABSL_FLAG(uint64_t, zerocopy_threshold, ringxfer::EngineConfig{}.zerocopy_threshold_bytes,
          "bytes from which sends use SEND_ZC (0: off)");
ABSL_FLAG(uint64_t, chunk_bytes, ringxfer::EngineConfig{}.chunk_bytes,
          "smallest stripe of a striped transfer");
ABSL_FLAG(int, send_buffer, ringxfer::EngineConfig{}.socket.send_buffer_bytes,
          "SO_SNDBUF of every connection in bytes (0: kernel autotuning)");
ABSL_FLAG(int, recv_buffer, ringxfer::EngineConfig{}.socket.recv_buffer_bytes,
          "SO_RCVBUF of every connection in bytes (0: kernel autotuning)");
ABSL_FLAG(int, wait_spin_us, static_cast<int>(ringxfer::EngineConfig{}.wait_spin.count()),
          "how long a waiting caller yields before it sleeps (EngineConfig::wait_spin)");
ABSL_FLAG(std::vector<std::string>, ring_cpus, {},
          "pin ring thread i to cpu ring_cpus[i % n], e.g. 0,1 (empty: no pinning)");
ABSL_FLAG(bool, huge_pages, false,
          "back the benchmark's buffers with transparent huge pages (madvise MADV_HUGEPAGE)");
ABSL_FLAG(bool, sqpoll, false, "a kernel thread polls each ring's SQ (IORING_SETUP_SQPOLL)");
ABSL_FLAG(bool, json, false, "print one JSON object per size instead of the table");
ABSL_FLAG(std::string, config, "",
          "a config file (ringxfer-tune sweep --out, README \"Config files\"): its fields for "
          "every engine flag left at its default (flags given > file > defaults)");
ABSL_FLAG(bool, loopback, false, "run the target in a second process on this host");
ABSL_FLAG(bool, stats, false, "print both engines' counters at the end");
ABSL_FLAG(bool, verify, true, "check the data of each size once");
ABSL_FLAG(std::string, mem, "cpu",
          "where the memory is: cpu, gpu (both sides), or INITIATOR,TARGET (cpu,gpu / gpu,cpu); "
          "GPU memory is device 0 of the runtime found (README, \"GPU memory\")");
ABSL_FLAG(std::string, gpu_runtime, "",
          "the GPU runtime library to load (sets RINGXFER_GPU_RUNTIME; default: the search)");

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using ringxfer::Engine;
using ringxfer::EngineConfig;
using ringxfer::EngineDesc;
using ringxfer::MemoryDesc;

// The target process --loopback started, stopped by die() so that it does not outlive
// a failed run.
pid_t g_loopback_target = 0;

[[noreturn]] void die(const std::string& msg) {
  absl::FPrintF(stderr, "ringxfer-bench: %s\n", msg.c_str());
  if (g_loopback_target > 0) {
    kill(g_loopback_target, SIGKILL);
    waitpid(g_loopback_target, nullptr, 0);
  }
  std::exit(1);
}

// Flags every role reads, checked before anything starts.
void check_flags() {
  const std::string op = absl::GetFlag(FLAGS_op);
  if (op != "write" && op != "read") {
    die(absl::StrFormat("--op must be write or read, not '%s'", op));
  }
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch < 1 || batch > 8192) {
    die(absl::StrFormat("--batch must be 1..8192, not %d", batch));
  }
  const uint64_t min_size = absl::GetFlag(FLAGS_min_size), max_size = absl::GetFlag(FLAGS_max_size);
  if (min_size == 0 || max_size < min_size) {
    die(absl::StrFormat("need 0 < --min-size <= --max-size, not %d and %d", min_size, max_size));
  }
  if (absl::GetFlag(FLAGS_iters) < 1 || absl::GetFlag(FLAGS_warmup) < 0) {
    die(absl::StrFormat("need --iters >= 1 and --warmup >= 0, not %d and %d",
                        absl::GetFlag(FLAGS_iters), absl::GetFlag(FLAGS_warmup)));
  }
}

std::string hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += d[c >> 4];
    out += d[c & 15];
  }
  return out;
}

std::string unhex(std::string_view h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) {
    out += static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16));
  }
  return out;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

// Busy CPU seconds of the whole machine so far (/proc/stat: user, nice, system, irq,
// softirq; idle, iowait and steal left out). Unlike getrusage it includes softirq work
// done in ksoftirqd or while another task ran, which veth receives often are.
double machine_busy_seconds() {
  std::FILE* f = std::fopen("/proc/stat", "r");
  if (f == nullptr) {
    return 0;
  }
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
  const int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system,
                            &idle, &iowait, &irq, &softirq);
  std::fclose(f);
  if (n != 7) {
    return 0;
  }
  return static_cast<double>(user + nice + system + irq + softirq) /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

EngineConfig engine_config(uint16_t port) {
  EngineConfig c;
  c.host = absl::GetFlag(FLAGS_host);
  c.port = port;
  c.stripes = absl::GetFlag(FLAGS_stripes);
  c.rings = absl::GetFlag(FLAGS_rings);
  c.stripe_threshold_bytes = absl::GetFlag(FLAGS_stripe_threshold);
  c.zerocopy_threshold_bytes = absl::GetFlag(FLAGS_zerocopy_threshold);
  c.chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
  c.sqpoll = absl::GetFlag(FLAGS_sqpoll);
  for (const std::string& cpu : absl::GetFlag(FLAGS_ring_cpus)) {
    int n = 0;
    if (!absl::SimpleAtoi(cpu, &n)) {
      die(absl::StrFormat("--ring_cpus: '%s' is not a cpu number", cpu));
    }
    c.ring_cpus.push_back(n);
  }
  c.wait_spin = std::chrono::microseconds(absl::GetFlag(FLAGS_wait_spin_us));
  c.socket.send_buffer_bytes = absl::GetFlag(FLAGS_send_buffer);
  c.socket.recv_buffer_bytes = absl::GetFlag(FLAGS_recv_buffer);
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    absl::StatusOr<EngineConfig> file = EngineConfig::load(path);
    if (!file.ok()) {
      die(absl::StrCat("--config: ", file.status().message()));
    }
    c = c.over(*file);
  }
  return c;
}

// The benchmark's memory: anonymous pages, zero until touched, optionally transparent
// huge pages (with THP in madvise mode, the default, only memory that asks gets them).
class Buffer {
 public:
  // GPU memory (gpu): device memory of the runtime, filled and checked through a host
  // shadow (host()) and upload() / download().
  explicit Buffer(uint64_t size, bool gpu = false) : size_(size), gpu_(gpu) {
    if (gpu_) {
      absl::StatusOr<std::shared_ptr<ringxfer::memory::GpuRuntime>> rt =
          ringxfer::memory::GpuRuntime::find();
      if (!rt.ok()) {
        die(rt.status().ToString());
      }
      rt_ = *rt;
      if (rt_->api().device_malloc == nullptr || rt_->api().memcpy_sync == nullptr) {
        die(rt_->describe() + " lacks malloc/memcpy");
      }
      void* d = nullptr;
      if (rt_->api().device_malloc(&d, size) != 0) {
        die(absl::StrFormat("cannot allocate %d bytes of GPU memory (%s)", size, rt_->describe()));
      }
      data_ = static_cast<char*>(d);
      shadow_.assign(size, 0);
      upload();
      return;
    }
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      die(absl::StrFormat("cannot map %d bytes: %s", size, std::strerror(errno)));
    }
    data_ = static_cast<char*>(p);
    if (absl::GetFlag(FLAGS_huge_pages) && madvise(p, size, MADV_HUGEPAGE) != 0) {
      die(absl::StrFormat("--huge-pages: madvise(MADV_HUGEPAGE): %s", std::strerror(errno)));
    }
    // Touch every page now, as a std::vector would, so faults stay out of the timings.
    std::memset(data_, 0, size_);
  }
  ~Buffer() {
    if (gpu_) {
      rt_->api().device_free(data_);
    } else {
      munmap(data_, size_);
    }
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  char* data() { return data_; }  // what is registered (device memory for GPU)
  uint64_t size() const { return size_; }
  bool gpu() const { return gpu_; }
  // Where the CPU reads and writes the bytes.
  char* host() { return gpu_ ? shadow_.data() : data_; }
  void upload() {
    if (gpu_ && rt_->api().memcpy_sync(data_, shadow_.data(), size_,
                                       ringxfer::memory::gpu_abi::kMemcpyHostToDevice) != 0) {
      die("GPU memcpy to the device failed");
    }
  }
  void download() {
    if (gpu_ && rt_->api().memcpy_sync(shadow_.data(), data_, size_,
                                       ringxfer::memory::gpu_abi::kMemcpyDeviceToHost) != 0) {
      die("GPU memcpy from the device failed");
    }
  }
  ringxfer::MemoryLocation location() const {
    return gpu_ ? ringxfer::MemoryLocation::kGpu : ringxfer::MemoryLocation::kCpu;
  }
  int device() const { return gpu_ ? 0 : -1; }

 private:
  char* data_ = nullptr;
  uint64_t size_ = 0;
  bool gpu_ = false;
  std::shared_ptr<ringxfer::memory::GpuRuntime> rt_;
  std::vector<char> shadow_;
};

// --mem: whether the initiator's and the target's memory is GPU memory.
std::pair<bool, bool> mem_gpu() {
  const std::string m = absl::GetFlag(FLAGS_mem);
  if (m == "cpu" || m == "cpu,cpu") {
    return {false, false};
  }
  if (m == "gpu" || m == "gpu,gpu") {
    return {true, true};
  }
  if (m == "cpu,gpu") {
    return {false, true};
  }
  if (m == "gpu,cpu") {
    return {true, false};
  }
  die(absl::StrFormat("--mem=%s: say cpu, gpu, cpu,gpu or gpu,cpu", m));
}

uint64_t region_bytes() {
  const uint64_t max = absl::GetFlag(FLAGS_max_size);
  const uint64_t stride = std::max(absl::GetFlag(FLAGS_stride), max);
  const uint64_t all = stride * static_cast<uint64_t>(absl::GetFlag(FLAGS_batch));
  const uint64_t footprint = absl::GetFlag(FLAGS_footprint);
  return footprint == 0 ? all : std::min(all, std::max(footprint, max));
}

// ---- Rendezvous: a line in, a line out. ----

class Line {
 public:
  explicit Line(int fd) : fd_(fd) {}
  ~Line() { close(fd_); }
  bool send(const std::string& s) {
    const std::string l = s + "\n";
    return ::send(fd_, l.data(), l.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(l.size());
  }
  bool recv(std::string* out) {
    out->clear();
    char c;
    while (::recv(fd_, &c, 1, 0) == 1) {
      if (c == '\n') {
        return true;
      }
      *out += c;
    }
    return false;
  }

 private:
  int fd_;
};

// The target's counters since `base` (taken when the initiator said hello).
std::string stats_line(const Engine& e, const ringxfer::EngineStats& base, double cpu) {
  const ringxfer::EngineStats s = e.stats();
  return absl::StrFormat("STATS %d %d %d %d %d %d %d %d %d %d %d %d %.6f %d %d", s.sqes - base.sqes,
                         s.enters - base.enters, s.cqes - base.cqes, s.wakeups - base.wakeups,
                         s.bytes_sent - base.bytes_sent, s.bytes_received - base.bytes_received,
                         s.zerocopy_sends - base.zerocopy_sends,
                         s.zerocopy_copied - base.zerocopy_copied, s.short_sends - base.short_sends,
                         s.short_recvs - base.short_recvs, s.connections_opened, s.hostile_frames,
                         cpu, s.zerocopy_fixed_sends - base.zerocopy_fixed_sends,
                         s.fixed_buffer_fallbacks);
}

// The target's stats_line(), labelled like the initiator's counters.
std::string describe_target_stats(const std::vector<std::string>& t) {
  if (t.size() < 16 || t[0] != "STATS") {
    return "unreadable reply: " + absl::StrJoin(t, " ");
  }
  return absl::StrFormat(
      "sqes %s, io_uring_enter %s, cqes %s, wakeups %s, sent %s B, received %s B, zero-copy "
      "sends %s (copied %s, from fixed buffers %s; fixed buffers refused %s), short sends %s, "
      "short recvs %s, connections %s, hostile frames %s, cpu %s s",
      t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[14], t[15], t[9], t[10], t[11], t[12],
      t[13]);
}

// The rendezvous socket on `host`:`port`, listening; -1 with errno set when it cannot be
// bound.
int listen_rendezvous(const std::string& host, uint16_t port) {
  const int lfd = socket(host.find(':') != std::string::npos ? AF_INET6 : AF_INET,
                         SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  addrinfo hints{}, *ai = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  const std::string rport = std::to_string(port);
  if (getaddrinfo(host.c_str(), rport.c_str(), &hints, &ai) != 0) {
    close(lfd);
    errno = EINVAL;
    return -1;
  }
  const bool ok = bind(lfd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(lfd, 4) == 0;
  const int saved = errno;
  freeaddrinfo(ai);
  if (!ok) {
    close(lfd);
    errno = saved;
    return -1;
  }
  return lfd;
}

int run_target() {
  const uint16_t port = static_cast<uint16_t>(absl::GetFlag(FLAGS_port));
  // The rendezvous socket goes on the engine port + 1. With an ephemeral engine port
  // (--port=0) that one may be taken by another socket: then take another engine port.
  std::unique_ptr<Engine> engine;
  int lfd = -1;
  for (int attempt = 0; lfd < 0; ++attempt) {
    auto e = Engine::create("bench-target", engine_config(port));
    if (!e.ok()) {
      die(e.status().ToString());
    }
    engine = std::move(*e);
    lfd = listen_rendezvous(engine->desc().host, static_cast<uint16_t>(engine->desc().port + 1));
    if (lfd < 0 && (port != 0 || errno != EADDRINUSE || attempt == 20)) {
      die(absl::StrFormat("rendezvous port %d: %s", engine->desc().port + 1, std::strerror(errno)));
    }
  }
  Buffer mem(region_bytes(), mem_gpu().second);
  auto md = engine->register_memory(mem.data(), mem.size(), mem.location(), mem.device());
  if (!md.ok()) {
    die(md.status().ToString());
  }
  absl::PrintF("READY %d\n", engine->desc().port);
  std::fflush(stdout);
  double cpu0 = cpu_seconds();
  ringxfer::EngineStats base = engine->stats();
  for (;;) {
    Line conn(accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC));
    std::string line;
    while (conn.recv(&line)) {
      if (line.rfind("HELLO ", 0) == 0) {
        cpu0 = cpu_seconds();
        base = engine->stats();
        conn.send("DESC " + hex(engine->desc().pack()) + " " + hex(md->pack()));
      } else if (line == "STATS") {
        conn.send(stats_line(*engine, base, cpu_seconds() - cpu0));
      } else if (line == "BYE") {
        close(lfd);
        return 0;
      }
    }
  }
}

struct Remote {
  std::unique_ptr<Line> line;
  EngineDesc engine;
  MemoryDesc memory;
};

Remote rendezvous(const std::string& host, uint16_t port, const Engine& self) {
  addrinfo hints{}, *ai = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  const std::string rport = std::to_string(port + 1);
  if (getaddrinfo(host.c_str(), rport.c_str(), &hints, &ai) != 0) {
    die("cannot resolve " + host);
  }
  int fd = -1;
  for (int i = 0; i < 100; ++i) {  // the target may still be starting
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      break;
    }
    close(fd);
    fd = -1;
    usleep(100000);
  }
  freeaddrinfo(ai);
  if (fd < 0) {
    die(absl::StrFormat("no target rendezvous at %s:%s", host, rport));
  }
  Remote r;
  r.line = std::make_unique<Line>(fd);
  std::string reply;
  if (!r.line->send("HELLO " + hex(self.desc().pack())) || !r.line->recv(&reply)) {
    die("rendezvous failed");
  }
  std::vector<std::string> parts = absl::StrSplit(reply, ' ');
  if (parts.size() != 3 || parts[0] != "DESC") {
    die("bad rendezvous reply: " + reply);
  }
  auto e = EngineDesc::unpack(unhex(parts[1]));
  auto m = MemoryDesc::unpack(unhex(parts[2]));
  if (!e.ok() || !m.ok()) {
    die("bad descriptors from target");
  }
  r.engine = *e;
  r.memory = *m;
  return r;
}

struct Row {
  uint64_t size;
  int batch;
  double total_mb, max_bw, avg_bw, min_lat_us, avg_lat_us;
  bool verified;
};

void print_header(const std::string& title) {
  const std::string bar =
      "+-------------+-----------+----------------+---------------+---------------+--------------"
      "+--------------+";
  absl::PrintF("%s\n|%*s%*s|\n%s\n", bar.c_str(), static_cast<int>(52 + title.size() / 2),
               title.c_str(), static_cast<int>(52 - title.size() / 2), "", bar.c_str());
  absl::PrintF(
      "| MsgSize (B) | BatchSize | TotalSize (MB) | Max BW (GB/s) | Avg BW (GB/s) | Min Lat "
      "(us) | Avg Lat (us) |\n%s\n",
      bar.c_str());
}

void print_row(const Row& r) {
  absl::PrintF("| %11d | %9d | %14.2f | %13.2f | %13.2f | %12.2f | %12.2f |\n", r.size, r.batch,
               r.total_mb, r.max_bw, r.avg_bw, r.min_lat_us, r.avg_lat_us);
  std::fflush(stdout);
}

int run_initiator(const std::string& host, uint16_t port) {
  const bool write = absl::GetFlag(FLAGS_op) == "write";
  const int batch = absl::GetFlag(FLAGS_batch);
  const uint64_t min_size = absl::GetFlag(FLAGS_min_size), max_size = absl::GetFlag(FLAGS_max_size);
  EngineConfig cfg = engine_config(0);
  cfg.host = host.find(':') != std::string::npos ? "::" : "0.0.0.0";
  auto engine = Engine::create("bench-initiator", cfg);
  if (!engine.ok()) {
    die(engine.status().ToString());
  }
  Engine& e = **engine;
  Remote remote = rendezvous(host, port, e);
  if (absl::Status st = e.register_remote_engine(remote.engine); !st.ok()) {
    die(st.ToString());
  }
  const bool gpu = mem_gpu().first;
  Buffer mem(region_bytes(), gpu), check(region_bytes(), gpu);
  auto reg = [&e](Buffer& b) {
    absl::StatusOr<MemoryDesc> d = e.register_memory(b.data(), b.size(), b.location(), b.device());
    if (!d.ok()) {
      die(d.status().ToString());
    }
    return *d;
  };
  MemoryDesc local = reg(mem);
  MemoryDesc check_md = reg(check);
  auto session = e.create_session(local, remote.memory);
  if (!session.ok()) {
    die(session.status().ToString());
  }
  const bool tty = isatty(2) && !absl::GetFlag(FLAGS_json);
  if (!absl::GetFlag(FLAGS_json)) {
    absl::PrintF(
        "ringxfer-bench: %s, batch %d, %d iterations, %d stripes, %d ring thread(s), "
        "target %s:%d, memory %s\n",
        write ? "write" : "read", batch, absl::GetFlag(FLAGS_iters), cfg.stripes, cfg.rings, host,
        port, absl::GetFlag(FLAGS_mem));
    if (!absl::GetFlag(FLAGS_config).empty()) {
      absl::PrintF("config: %s\n", absl::GetFlag(FLAGS_config));
    }
    print_header(absl::StrFormat("ringxfer TCP Benchmark: %s", write ? "write" : "read"));
  }
  const double cpu0 = cpu_seconds();
  const double machine0 = machine_busy_seconds();
  // CPU this process spends filling and comparing data for the checks: not transfer
  // work, left out of the CPU figures.
  double check_cpu = 0, check_machine = 0;
  const ringxfer::EngineStats s0 = e.stats();
  uint64_t batches = 0, bytes = 0;
  std::vector<Row> rows;
  int verified = 0;
  for (uint64_t size = min_size; size <= max_size; size *= 2) {
    const uint64_t stride = std::max(absl::GetFlag(FLAGS_stride), size);
    // Messages wrap around the region when --footprint makes it smaller than the batch;
    // only the first `distinct` of them have their own bytes (and are verified).
    const uint64_t region = region_bytes();
    const int distinct = static_cast<int>(std::min<uint64_t>(batch, region / stride));
    std::vector<uint64_t> offs(batch), sizes(batch, size);
    for (int i = 0; i < batch; ++i) {
      offs[i] = (i % distinct) * stride;
    }
    if (tty) {
      absl::FPrintF(stderr, "\r  measuring %d B ...", size);
    }
    auto run_n = [&](bool w, const MemoryDesc& md, int n) -> ringxfer::StatusHandle {
      const std::span<const uint64_t> o(offs.data(), n), z(sizes.data(), n);
      auto st = w ? e.batch_write(md, o, remote.memory, o, z, e.allocate_transfer_id())
                  : e.batch_read(md, o, remote.memory, o, z, e.allocate_transfer_id());
      if (!st.ok()) {
        die(st.status().ToString());
      }
      (*st)->wait();
      if (!(*st)->succeeded()) {
        die(absl::StrFormat("transfer failed: %s", (*st)->status().ToString()));
      }
      return *st;
    };
    auto run_once = [&](bool w, const MemoryDesc& md) { return run_n(w, md, batch); };
    bool ok = true;
    if (absl::GetFlag(FLAGS_verify)) {
      // Write a pattern, read it back elsewhere, compare: checks both directions.
      double c0 = cpu_seconds(), m0 = machine_busy_seconds();
      for (int i = 0; i < distinct; ++i) {
        for (uint64_t j = 0; j < size; ++j) {
          mem.host()[offs[i] + j] = static_cast<char>((i * 131 + j * 7 + size) & 0xff);
        }
        std::memset(check.host() + offs[i], 0, size);
      }
      mem.upload();
      check.upload();
      check_cpu += cpu_seconds() - c0;
      check_machine += machine_busy_seconds() - m0;
      run_n(true, local, distinct);
      run_n(false, check_md, distinct);
      c0 = cpu_seconds();
      m0 = machine_busy_seconds();
      check.download();
      for (int i = 0; i < distinct && ok; ++i) {
        ok = std::memcmp(mem.host() + offs[i], check.host() + offs[i], size) == 0;
      }
      check_cpu += cpu_seconds() - c0;
      check_machine += machine_busy_seconds() - m0;
      if (!ok) {
        die(absl::StrFormat("data mismatch at message size %d", size));
      }
      ++verified;
    }
    for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
      run_once(write, local);
    }
    double sum_us = 0, min_us = 1e300;
    const int iters = absl::GetFlag(FLAGS_iters);
    for (int i = 0; i < iters; ++i) {
      const auto t0 = Clock::now();
      run_once(write, local);
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
      sum_us += us;
      min_us = std::min(min_us, us);
    }
    // Every batch this size ran, for the per-batch and per-GB figures below.
    const int all = iters + absl::GetFlag(FLAGS_warmup) + (absl::GetFlag(FLAGS_verify) ? 2 : 0);
    batches += all;
    bytes += uint64_t(all) * batch * size;
    const double total = double(batch) * size;
    Row r{
        size,   batch,          total / 1e6, total / (min_us * 1e3), total * iters / (sum_us * 1e3),
        min_us, sum_us / iters, ok};
    rows.push_back(r);
    if (tty) {
      absl::FPrintF(stderr, "\r%*s\r", 40, "");
    }
    if (absl::GetFlag(FLAGS_json)) {
      absl::PrintF(
          "{\"op\":\"%s\",\"msg_size\":%d,\"batch\":%d,\"total_mb\":%.4f,\"max_bw_gbps\":%.4f,"
          "\"avg_bw_gbps\":%.4f,\"min_lat_us\":%.3f,\"avg_lat_us\":%.3f,\"verified\":%s}\n",
          write ? "write" : "read", r.size, r.batch, r.total_mb, r.max_bw, r.avg_bw, r.min_lat_us,
          r.avg_lat_us, ok ? "true" : "false");
      std::fflush(stdout);
    } else {
      print_row(r);
    }
  }
  const double cpu = cpu_seconds() - cpu0 - check_cpu;
  const double machine = machine_busy_seconds() - machine0 - check_machine;
  const ringxfer::EngineStats s1 = e.stats();
  if (!absl::GetFlag(FLAGS_json)) {
    absl::PrintF(
        "+-------------+-----------+----------------+---------------+---------------+-------"
        "-------+--------------+\n");
    absl::PrintF("data verified at %d of %d message sizes (write, then read back and compare)\n",
                 verified, static_cast<int>(rows.size()));
  }
  std::string target_stats;
  remote.line->send("STATS");
  remote.line->recv(&target_stats);
  if (absl::GetFlag(FLAGS_stats)) {
    std::vector<std::string> t = absl::StrSplit(target_stats, ' ');
    const double target_enters = t.size() > 2 ? std::stod(t[2]) : 0;
    const double target_cpu = t.size() > 13 ? std::stod(t[13]) : 0;
    const uint64_t enters = s1.enters - s0.enters;
    const double per_batch = (enters + target_enters) / std::max<uint64_t>(batches, 1);
    const double cpu_per_gb = (cpu + target_cpu) / std::max(bytes / 1e9, 1e-9);
    const double machine_per_gb = machine / std::max(bytes / 1e9, 1e-9);
    if (absl::GetFlag(FLAGS_json)) {
      absl::PrintF(
          "{\"stats\":{\"batches\":%d,\"bytes\":%d,\"initiator_enters\":%d,"
          "\"target_enters\":%.0f,\"enters_per_batch\":%.2f,\"initiator_cpu_s\":%.4f,"
          "\"target_cpu_s\":%.4f,\"cpu_s_per_gb\":%.4f,\"machine_cpu_s_per_gb\":%.4f,"
          "\"short_sends\":%d,\"zerocopy_sends\":%d,\"zerocopy_copied\":%d}}\n",
          batches, bytes, enters, target_enters, per_batch, cpu, target_cpu, cpu_per_gb,
          machine_per_gb, s1.short_sends - s0.short_sends, s1.zerocopy_sends - s0.zerocopy_sends,
          s1.zerocopy_copied - s0.zerocopy_copied);
    } else {
      absl::PrintF(
          "initiator: sqes %d, io_uring_enter %d, cqes %d, wakeups %d, sent %d B, received %d "
          "B, zero-copy sends %d (copied %d, from fixed buffers %d; fixed buffers refused %d), "
          "short sends %d, short recvs %d, connections %d, cpu %.3f s\n",
          s1.sqes - s0.sqes, enters, s1.cqes - s0.cqes, s1.wakeups - s0.wakeups,
          s1.bytes_sent - s0.bytes_sent, s1.bytes_received - s0.bytes_received,
          s1.zerocopy_sends - s0.zerocopy_sends, s1.zerocopy_copied - s0.zerocopy_copied,
          s1.zerocopy_fixed_sends - s0.zerocopy_fixed_sends, s1.fixed_buffer_fallbacks,
          s1.short_sends - s0.short_sends, s1.short_recvs - s0.short_recvs, s1.connections_opened,
          cpu);
      absl::PrintF("target (since this initiator's hello): %s\n", describe_target_stats(t));
      absl::PrintF(
          "%d batches (measured, warm-up and verification): io_uring_enter per batch %.1f, "
          "cpu-s per GB %.3f (both processes, getrusage; data checks left out), %.3f (whole "
          "machine, /proc/stat)\n",
          batches, per_batch, cpu_per_gb, machine_per_gb);
    }
  }
  remote.line->send(absl::GetFlag(FLAGS_loopback) ? "BYE" : "DONE");
  return 0;
}

int run_loopback(const char* self) {
  int out[2];
  if (pipe(out) != 0) {
    die("pipe");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::vector<std::string> args = {
      self,
      "--role=target",
      "--host=" + absl::GetFlag(FLAGS_host),
      "--port=0",
      absl::StrFormat("--batch=%d", absl::GetFlag(FLAGS_batch)),
      absl::StrFormat("--max_size=%d", absl::GetFlag(FLAGS_max_size)),
      absl::StrFormat("--stride=%d", absl::GetFlag(FLAGS_stride)),
      absl::StrFormat("--footprint=%d", absl::GetFlag(FLAGS_footprint)),
      absl::StrFormat("--stripes=%d", absl::GetFlag(FLAGS_stripes)),
      absl::StrFormat("--rings=%d", absl::GetFlag(FLAGS_rings)),
      absl::StrFormat("--stripe_threshold=%d", absl::GetFlag(FLAGS_stripe_threshold)),
      absl::StrFormat("--zerocopy_threshold=%d", absl::GetFlag(FLAGS_zerocopy_threshold)),
      absl::StrFormat("--chunk_bytes=%d", absl::GetFlag(FLAGS_chunk_bytes)),
      absl::StrFormat("--send_buffer=%d", absl::GetFlag(FLAGS_send_buffer)),
      absl::GetFlag(FLAGS_sqpoll) ? "--sqpoll" : "--nosqpoll",
      absl::GetFlag(FLAGS_huge_pages) ? "--huge_pages" : "--nohuge_pages",
      "--ring_cpus=" + absl::StrJoin(absl::GetFlag(FLAGS_ring_cpus), ","),
      absl::StrFormat("--recv_buffer=%d", absl::GetFlag(FLAGS_recv_buffer)),
      "--mem=" + absl::GetFlag(FLAGS_mem),
      "--config=" + absl::GetFlag(FLAGS_config),
  };
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, self, &fa, nullptr, argv.data(), environ) != 0) {
    die("cannot start the target process");
  }
  posix_spawn_file_actions_destroy(&fa);
  g_loopback_target = pid;
  close(out[1]);
  FILE* f = fdopen(out[0], "r");
  char line[256] = {};
  int port = 0;
  if (std::fgets(line, sizeof(line), f) == nullptr || std::sscanf(line, "READY %d", &port) != 1) {
    die("the target process did not start");
  }
  const int rc = run_initiator(absl::GetFlag(FLAGS_host), static_cast<uint16_t>(port));
  int status = 0;
  waitpid(pid, &status, 0);
  g_loopback_target = 0;
  std::fclose(f);
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ringxfer transfer benchmark.\n"
      "  one host:   ringxfer-bench --loopback [--op=read] [--batch=256]\n"
      "  two hosts:  ringxfer-bench --role=target --host=ADDR --port=P\n"
      "              ringxfer-bench --role=initiator --host=ADDR --port=P");
  // Accept --min-size as well as --min_size: absl flag names use underscores.
  std::vector<std::string> normalized(argv, argv + argc);
  std::vector<char*> args;
  for (std::string& a : normalized) {
    if (a.rfind("--", 0) == 0) {
      const size_t end = std::min(a.find('='), a.size());
      std::replace(a.begin() + 2, a.begin() + static_cast<std::ptrdiff_t>(end), '-', '_');
    }
    args.push_back(a.data());
  }
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  signal(SIGPIPE, SIG_IGN);
  check_flags();
  mem_gpu();  // a bad --mem stops here, before a target process is started
  if (const std::string rt = absl::GetFlag(FLAGS_gpu_runtime); !rt.empty()) {
    setenv("RINGXFER_GPU_RUNTIME", rt.c_str(), 1);  // the loopback target inherits it
  }
  if (absl::Status st = engine_config(0).validate(); !st.ok()) {
    die(st.ToString());
  }
  if (absl::GetFlag(FLAGS_loopback)) {
    return run_loopback("/proc/self/exe");
  }
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "target") {
    return run_target();
  }
  if (role == "initiator") {
    if (absl::GetFlag(FLAGS_port) == 0) {
      die("--role=initiator needs the target's --port");
    }
    return run_initiator(absl::GetFlag(FLAGS_host),
                         static_cast<uint16_t>(absl::GetFlag(FLAGS_port)));
  }
  die("say --loopback, or --role=target / --role=initiator (see --help)");
}
