// A seeded randomized soak: several engines in one process over loopback. Caller threads
// issue mixed writes, reads, batches and session transfers of random sizes (1 B..4 MiB,
// log-uniform, so small ones are common) at unaligned offsets, between engines with 1 and
// 2 ring threads and random stripes, thresholds and chunks. A churn thread meanwhile makes
// fresh engines (registered with the others and used at once by concurrent reads in both
// directions), registers and deregisters memory, and tears fresh engines down
// (deregister_remote_engine on either side, destroying the engine), racing the transfers.
//
// Every byte is checked:
//   - a source region holds pattern(seed, region, offset) and never changes;
//   - each thread owns one slice of every destination region. Before a transfer it fills
//     the destination range with the expected bytes XOR a nonzero mask (so every byte
//     differs) and the 64 bytes on each side with a marker; a success must leave exactly
//     the source's bytes in the range and the markers intact;
//   - guard bytes surround every buffer (checked when it is retired and at the end);
//   - deregistering a region overwrites it, once deregister_memory has returned, with a
//     canary that must survive until at least 16 more transfers finished and 300 ms
//     passed: no byte may land in or leave a region after deregister_memory returns;
//   - after a read fails, its local range gets a fresh pattern that must survive 3 s: no
//     byte of a failed read lands later. (Slices a failed transfer wrote to rest 3 s.)
// A transfer may fail only when it raced a teardown made on purpose: its initiator, its
// target or one of its regions was marked dying before the teardown began. It must then
// fail with one of kFailedPrecondition, kUnavailable, kNotFound (the region or the peer is
// gone), kDeadlineExceeded (a peer that went quiet), kCancelled or kAborted. Any other
// failure, any wrong byte and any hang (each status is waited on for at most 45 s; the
// engines' timeout is 20 s) fails the test, naming the seed, thread, operation, offsets,
// sizes and both engines' configs.
//
// The seed is printed first ("soak seed=N duration=Ms"). The same seed gives the same
// engines and configs and the same random stream to each thread (std::mt19937_64 seeded
// with seed + thread), so the same mix of operations, sizes and offsets; which engines and
// regions each operation meets, and the interleaving, still depend on timing.
// Environment:
//   RX_SOAK_SEED=N       seed (default: from the clock)
//   RX_SOAK_SECONDS=S    duration (default 20). meson's timeout is 300 s; for longer runs
//                        start the binary itself: RX_SOAK_SECONDS=900 build/tests/soak/soak_test
//   RX_SOAK_DEREG=0      deregister memory only once no transfer uses it, and skip the
//                        canary check (the buffers are then freed only at the end)
//   RX_SOAK_TEARDOWN=0   retire fresh engines only once no transfer uses them
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"

namespace ringxfer {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t kMaxTransfer = 4 * MiB;
constexpr size_t kGuard = 256;  // bytes before and after every buffer
constexpr uint8_t kGuardBefore = 0xA5;
constexpr uint8_t kGuardAfter = 0x5A;
constexpr uint64_t kMargin = 64;  // marker bytes on each side of a destination range
constexpr uint8_t kMarker = 0xE7;
constexpr auto kEngineTimeout = seconds(20);
constexpr auto kWaitBound = seconds(45);
constexpr auto kIdleBound = seconds(90);
constexpr auto kRest = seconds(3);  // how long a slice rests after a failed transfer
constexpr auto kCanaryHold = milliseconds(300);
constexpr uint64_t kCanaryTransfers = 16;
constexpr uint64_t kCanaryKey = 0xC0FFEE;      // a retired region's canary: pattern(key ^ this)
constexpr uint64_t kMemoryBudget = 400 * MiB;  // all buffers together
constexpr int kMaxWorkers = 4;
constexpr int kSlices = kMaxWorkers + 1;  // one per worker, the last for the churn thread
constexpr int kMaxFresh = 2;              // fresh engines alive at once
constexpr int kMaxEphemeral = 8;          // ephemeral regions alive at once

std::atomic<uint64_t> g_buffer_bytes{0};

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Bytes [pos, pos+n) of the pattern `key`, eight bytes per hash.
void make_pattern(uint64_t key, uint64_t pos, uint8_t* out, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint64_t q = pos + i;
    const uint64_t w = mix64(key ^ ((q >> 3) * 0xD6E8FEB86659FD93ull));
    for (unsigned b = q & 7; b < 8 && i < n; ++b, ++i) {
      out[i] = static_cast<uint8_t>(w >> (8 * b));
    }
  }
}

// 1..hi, log-uniform: as many sizes in 1..10 as in 100K..1M.
uint64_t log_uniform(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {
  if (hi <= lo) {
    return lo;
  }
  std::uniform_real_distribution<double> d(std::log(static_cast<double>(lo)),
                                           std::log(static_cast<double>(hi) + 1.0));
  return std::clamp<uint64_t>(static_cast<uint64_t>(std::exp(d(rng))), lo, hi);
}

uint64_t uniform(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {  // inclusive
  return lo + (hi > lo ? rng() % (hi - lo + 1) : 0);
}

std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    absl::StrAppendFormat(&s, "%02x", p[i]);
  }
  return s;
}

std::string config_text(const EngineConfig& c) {
  return absl::StrFormat("rings=%d stripes=%d stripe_threshold=%d chunk=%d zerocopy=%d spin=%dus",
                         c.rings, c.stripes, c.stripe_threshold_bytes, c.chunk_bytes,
                         c.zerocopy_threshold_bytes, c.wait_spin.count());
}

// ---------------------------------------------------------------------------------------
// Memory regions and engines.

enum class Role { kSource, kDest };

struct Region {
  Region(uint64_t uid_, Role role_, bool ephemeral_, uint64_t slice_bytes_, uint64_t size_,
         uint64_t key_, std::string owner_)
      : uid(uid_),
        role(role_),
        ephemeral(ephemeral_),
        slice_bytes(slice_bytes_),
        size(size_),
        key(key_),
        owner(std::move(owner_)),
        raw(new uint8_t[size + 2 * kGuard]) {
    g_buffer_bytes += size + 2 * kGuard;
    std::memset(raw.get(), kGuardBefore, kGuard);
    std::memset(data() + size, kGuardAfter, kGuard);
    if (role == Role::kSource) {
      make_pattern(key, 0, data(), size);
    } else {
      std::memset(data(), 0, size);
    }
  }
  ~Region() { g_buffer_bytes -= size + 2 * kGuard; }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  uint8_t* data() { return raw.get() + kGuard; }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i) {
      if (raw[i] != kGuardBefore || raw[kGuard + size + i] != kGuardAfter) {
        return false;
      }
    }
    return true;
  }
  std::string name() const {
    return absl::StrFormat("r%d(%s %s %d B on %s%s)", uid, role == Role::kSource ? "src" : "dst",
                           ephemeral ? "ephemeral" : "stable", size, owner,
                           dying.load() ? ", dying" : "");
  }

  const uint64_t uid;
  const Role role;
  const bool ephemeral;
  const uint64_t slice_bytes;  // kDest: bytes of each thread's slice
  const uint64_t size;         // registered bytes
  const uint64_t key;          // pattern key (sources; the canary of retired regions)
  const std::string owner;     // the node's name
  std::unique_ptr<uint8_t[]> raw;
  MemoryDesc desc;  // set before the region is published
  Clock::time_point born;
  std::atomic<bool> dying{false};  // set before deregistration begins; never cleared
  std::atomic<int> inflight{0};    // transfers using it (issued and not yet checked)
  // Shared: a thread filling or checking bytes of its slice. Exclusive: retiring it.
  std::shared_mutex cpu_mu;
  bool retired = false;  // guarded by cpu_mu: deregistered; nobody but the canary check reads it
};

struct Node {
  ~Node() {
    std::unique_lock lock(mu);
    engine.reset();  // before the regions it may still touch
  }
  std::string describe() const {
    return absl::StrFormat("%s(%s %s%s)", name, fresh ? "fresh" : "stable", config_text(cfg),
                           dying.load() ? ", dying" : "");
  }

  int index = 0;
  std::string name;  // "e3"
  std::string key;   // the engine key
  EngineConfig cfg;
  bool fresh = false;
  EngineDesc desc;
  Clock::time_point born;
  std::shared_mutex mu;            // shared: calling the engine; exclusive: destroying it
  std::unique_ptr<Engine> engine;  // guarded by mu; null once destroyed
  std::atomic<bool> dying{false};  // set before any teardown of this engine begins
  std::atomic<int> inflight{0};
  std::mutex regions_mu;
  std::vector<std::shared_ptr<Region>> regions;  // registered and published
};

bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return dflt;
  }
  const std::string s(v);
  return !(s == "0" || s == "false" || s == "off" || s == "no");
}

struct Stats {
  std::map<std::string, uint64_t> ops;        // by operation name
  std::map<std::string, uint64_t> tolerated;  // raced failures, by code
  uint64_t bytes_verified = 0;
  uint64_t transfers_ok = 0;
  uint64_t unverified = 0;  // successes into a region retired meanwhile
  uint64_t late_checks = 0;
  uint64_t inbound_checks = 0;
  uint64_t fresh_engines = 0;
  uint64_t teardowns = 0;
  uint64_t regions_added = 0;
  uint64_t regions_dropped = 0;
  uint64_t canaries = 0;
  void add(const Stats& o) {
    for (const auto& [k, v] : o.ops) {
      ops[k] += v;
    }
    for (const auto& [k, v] : o.tolerated) {
      tolerated[k] += v;
    }
    bytes_verified += o.bytes_verified;
    transfers_ok += o.transfers_ok;
    unverified += o.unverified;
    late_checks += o.late_checks;
    inbound_checks += o.inbound_checks;
    fresh_engines += o.fresh_engines;
    teardowns += o.teardowns;
    regions_added += o.regions_added;
    regions_dropped += o.regions_dropped;
    canaries += o.canaries;
  }
};

struct World {
  uint64_t seed = 0;
  double seconds = 0;
  bool dereg = true;
  bool teardown = true;
  Clock::time_point deadline;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> completed{0};  // transfers finished (for the canary's hold)
  std::atomic<uint64_t> next_uid{1};
  std::atomic<int> next_node{0};

  std::mutex mu;
  std::vector<std::shared_ptr<Node>> nodes;        // live and published
  std::vector<std::shared_ptr<Node>> stable;       // the stable ones, for the final checks
  std::vector<std::string> configs;                // every engine ever made
  std::vector<std::shared_ptr<Region>> graveyard;  // freed only after every engine
  std::vector<std::string> failures;               // the first 10
  int failure_count = 0;
  int ephemeral_regions = 0;

  std::vector<std::shared_ptr<Node>> snapshot() {
    std::lock_guard lock(mu);
    return nodes;
  }
  std::string rerun() const {
    return absl::StrFormat(
        "RX_SOAK_SEED=%d RX_SOAK_SECONDS=%g RX_SOAK_DEREG=%d "
        "RX_SOAK_TEARDOWN=%d",
        seed, seconds, dereg ? 1 : 0, teardown ? 1 : 0);
  }
  void fail(const std::string& message) {
    std::string m = absl::StrCat("SOAK FAILURE seed=", seed, " ", message, "\n  rerun: ", rerun(),
                                 " <this binary>\n");
    std::lock_guard lock(mu);
    if (++failure_count <= 10) {
      std::fprintf(stderr, "%s", m.c_str());
      std::fflush(stderr);
      failures.push_back(std::move(m));
    }
    stop = true;
  }
  void bury(std::shared_ptr<Region> r) {
    std::lock_guard lock(mu);
    graveyard.push_back(std::move(r));
  }
};

// ---------------------------------------------------------------------------------------
// One transfer (a batch counts as one).

enum class Kind { kWrite, kRead, kBatchWrite, kBatchRead };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kWrite:
      return "write";
    case Kind::kRead:
      return "read";
    case Kind::kBatchWrite:
      return "batch_write";
    case Kind::kBatchRead:
      return "batch_read";
  }
  return "?";
}

struct Seg {
  uint64_t local_off, remote_off, size;
};

struct Xfer {
  Xfer() = default;
  // A moved-from transfer no longer holds its pins.
  Xfer(Xfer&& o) noexcept { *this = std::move(o); }
  Xfer& operator=(Xfer&& o) noexcept {
    unpin();
    kind = o.kind;
    session = o.session;
    tag = std::move(o.tag);
    a = std::move(o.a);
    b = std::move(o.b);
    local = std::move(o.local);
    remote = std::move(o.remote);
    segs = std::move(o.segs);
    id = o.id;
    mask = o.mask;
    st = std::move(o.st);
    call_error = std::move(o.call_error);
    pinned = std::exchange(o.pinned, false);
    return *this;
  }
  ~Xfer() { unpin(); }

  bool is_read() const { return kind == Kind::kRead || kind == Kind::kBatchRead; }
  bool is_batch() const { return kind == Kind::kBatchWrite || kind == Kind::kBatchRead; }
  Region& dst() const { return is_read() ? *local : *remote; }
  Region& src() const { return is_read() ? *remote : *local; }
  uint64_t dst_off(const Seg& s) const { return is_read() ? s.local_off : s.remote_off; }
  uint64_t src_off(const Seg& s) const { return is_read() ? s.remote_off : s.local_off; }
  uint64_t bytes() const {
    uint64_t n = 0;
    for (const Seg& s : segs) {
      n += s.size;
    }
    return n;
  }
  bool raced() const { return a->dying || b->dying || local->dying || remote->dying; }

  // Counts this transfer on its engines and regions, then reports whether none is dying
  // (set before a teardown starts, so a teardown either sees the count or the transfer
  // sees the flag).
  bool pin() {
    pinned = true;
    ++a->inflight;
    ++b->inflight;
    ++local->inflight;
    ++remote->inflight;
    return !raced();
  }
  void unpin() {
    if (pinned) {
      pinned = false;
      --a->inflight;
      --b->inflight;
      --local->inflight;
      --remote->inflight;
    }
  }

  std::string describe() const {
    std::string s = absl::StrFormat("op=%s%s%s id=%d initiator=%s target=%s\n  local=%s remote=%s",
                                    tag, session ? "session " : "", kind_name(kind), id,
                                    a->describe(), b->describe(), local->name(), remote->name());
    absl::StrAppendFormat(
        &s, "\n  %d segment(s), %d bytes (local_off, remote_off, size):", segs.size(), bytes());
    for (size_t i = 0; i < segs.size() && i < 8; ++i) {
      absl::StrAppendFormat(&s, " (%d, %d, %d)", segs[i].local_off, segs[i].remote_off,
                            segs[i].size);
    }
    if (segs.size() > 8) {
      absl::StrAppendFormat(&s, " ... %d more", segs.size() - 8);
    }
    return s;
  }

  Kind kind = Kind::kWrite;
  bool session = false;
  std::string tag;             // what issued it ("fresh", "teardown burst"), for messages
  std::shared_ptr<Node> a, b;  // initiator, target
  std::shared_ptr<Region> local, remote;
  std::vector<Seg> segs;
  uint64_t id = 0;
  uint8_t mask = 1;
  StatusHandle st;
  absl::Status call_error;
  bool pinned = false;
};

bool allowed_race_code(absl::StatusCode c) {
  switch (c) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------
// A caller thread: plans, issues and checks transfers.

class Caller {
 public:
  Caller(World& w, int index, std::string name)
      : w_(w), index_(index), name_(std::move(name)), rng_(w.seed + 1 + index) {}

  std::mt19937_64& rng() { return rng_; }
  Stats& stats() { return stats_; }
  const std::string& name() const { return name_; }

  void fail(const std::string& what, const Xfer* x) {
    w_.fail(absl::StrCat("thread=", name_, " ", x ? x->describe() + "\n  " : "", what));
  }

  // Forgets the destination space the previous group took.
  void new_group() { used_.clear(); }

  // A region of `node` in `role` that is not dying (and, for a destination, whose slice
  // is not resting); ephemeral ones are picked about half the time.
  std::shared_ptr<Region> pick_region(Node& node, Role role, bool stable_only = false) {
    std::vector<std::shared_ptr<Region>> stable, ephemeral;
    {
      std::lock_guard lock(node.regions_mu);
      for (const auto& r : node.regions) {
        if (r->role != role || r->dying || (role == Role::kDest && resting(*r))) {
          continue;
        }
        (r->ephemeral ? ephemeral : stable).push_back(r);
      }
    }
    if (stable_only || ephemeral.empty() || (!stable.empty() && rng_() % 2 == 0)) {
      return stable.empty() ? nullptr : stable[rng_() % stable.size()];
    }
    return ephemeral[rng_() % ephemeral.size()];
  }

  // Takes `size` bytes of this thread's slice of `r`, at an unaligned offset, with the
  // margins around them.
  std::optional<uint64_t> take_dst(Region& r, uint64_t size) {
    uint64_t& used = used_[&r];
    const uint64_t gap = rng_() % 61;
    const uint64_t need = kMargin + gap + size + kMargin;
    if (used + need > r.slice_bytes) {
      return std::nullopt;
    }
    const uint64_t off = static_cast<uint64_t>(index_) * r.slice_bytes + used + kMargin + gap;
    used += need;
    return off;
  }

  // A transfer between `a` and `b` with random segments (sizes from `size_fn` if given).
  std::optional<Xfer> plan(Kind kind, std::shared_ptr<Node> a, std::shared_ptr<Node> b,
                           std::shared_ptr<Region> local = nullptr,
                           std::shared_ptr<Region> remote = nullptr, uint64_t fixed_size = 0) {
    Xfer x;
    x.kind = kind;
    x.a = std::move(a);
    x.b = std::move(b);
    x.local = local ? local : pick_region(*x.a, x.is_read() ? Role::kDest : Role::kSource);
    x.remote = remote ? remote : pick_region(*x.b, x.is_read() ? Role::kSource : Role::kDest);
    if (!x.local || !x.remote) {
      return std::nullopt;
    }
    Region& src = x.src();
    Region& dst = x.dst();
    uint64_t count = 1, most = kMaxTransfer;
    if (x.is_batch()) {
      count = rng_() % 4 == 0 ? log_uniform(rng_, 1, 256) : log_uniform(rng_, 1, 16);
      most = std::clamp<uint64_t>(kMaxTransfer / count, 1, MiB);
    }
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t size = fixed_size ? fixed_size : log_uniform(rng_, 1, most);
      size = std::min(size, src.size);
      std::optional<uint64_t> off = take_dst(dst, size);
      for (int tries = 0; !off && tries < 3 && !fixed_size; ++tries) {
        size = log_uniform(rng_, 1, std::max<uint64_t>(1, size / 8));
        off = take_dst(dst, size);
      }
      if (!off) {
        break;
      }
      const uint64_t soff = uniform(rng_, 0, src.size - size);
      x.segs.push_back(x.is_read() ? Seg{*off, soff, size} : Seg{soff, *off, size});
    }
    if (x.segs.empty()) {
      return std::nullopt;
    }
    return x;
  }

  // Pins and fills the destination ranges; false (and nothing to check) when something
  // it uses is dying.
  bool prepare(Xfer& x) {
    if (!x.pin()) {
      x.unpin();
      return false;
    }
    Region& dst = x.dst();
    std::shared_lock lock(dst.cpu_mu);
    if (dst.retired) {
      x.unpin();
      return false;
    }
    x.mask = static_cast<uint8_t>(1 + rng_() % 255);
    for (const Seg& s : x.segs) {
      uint8_t* p = dst.data() + x.dst_off(s);
      make_pattern(x.src().key, x.src_off(s), p, s.size);
      for (uint64_t i = 0; i < s.size; ++i) {
        p[i] ^= x.mask;
      }
      std::memset(p - kMargin, kMarker, kMargin);
      std::memset(p + s.size, kMarker, kMargin);
    }
    return true;
  }

  absl::StatusOr<StatusHandle> call(Engine& e, Xfer& x) {
    x.id = e.allocate_transfer_id();
    if (!x.is_batch()) {
      const Seg& s = x.segs[0];
      return x.kind == Kind::kWrite
                 ? e.write(x.local->desc, s.local_off, x.remote->desc, s.remote_off, s.size, x.id)
                 : e.read(x.local->desc, s.local_off, x.remote->desc, s.remote_off, s.size, x.id);
    }
    std::vector<uint64_t> lo, ro, sz;
    for (const Seg& s : x.segs) {
      lo.push_back(s.local_off);
      ro.push_back(s.remote_off);
      sz.push_back(s.size);
    }
    return x.kind == Kind::kBatchWrite
               ? e.batch_write(x.local->desc, lo, x.remote->desc, ro, sz, x.id)
               : e.batch_read(x.local->desc, lo, x.remote->desc, ro, sz, x.id);
  }

  absl::StatusOr<StatusHandle> call(Session& s, Xfer& x) {
    x.id = s.allocate_transfer_id();
    if (!x.is_batch()) {
      const Seg& g = x.segs[0];
      return x.kind == Kind::kWrite ? s.write(g.local_off, g.remote_off, g.size, x.id)
                                    : s.read(g.local_off, g.remote_off, g.size, x.id);
    }
    std::vector<uint64_t> lo, ro, sz;
    for (const Seg& g : x.segs) {
      lo.push_back(g.local_off);
      ro.push_back(g.remote_off);
      sz.push_back(g.size);
    }
    return x.kind == Kind::kBatchWrite ? s.batch_write(lo, ro, sz, x.id)
                                       : s.batch_read(lo, ro, sz, x.id);
  }

  void take(Xfer& x, absl::StatusOr<StatusHandle> r) {
    if (r.ok()) {
      x.st = *r;
    } else {
      x.call_error = r.status();
    }
  }

  // Issues one prepared transfer on its initiator.
  void issue(Xfer& x) {
    ++stats_.ops[absl::StrCat(x.tag, kind_name(x.kind))];
    std::shared_lock lock(x.a->mu);
    if (!x.a->engine) {
      x.call_error = absl::FailedPreconditionError("soak: the initiator was destroyed");
      return;
    }
    take(x, call(*x.a->engine, x));
  }

  // Issues prepared transfers (same initiator, local and remote) through one session.
  void issue_session(std::vector<Xfer>& xs) {
    Xfer& f = xs[0];
    std::shared_lock lock(f.a->mu);
    for (Xfer& x : xs) {
      ++stats_.ops[absl::StrCat(x.tag, "session ", kind_name(x.kind))];
    }
    if (!f.a->engine) {
      for (Xfer& x : xs) {
        x.call_error = absl::FailedPreconditionError("soak: the initiator was destroyed");
      }
      return;
    }
    absl::StatusOr<std::unique_ptr<Session>> s =
        f.a->engine->create_session(f.local->desc, f.remote->desc);
    if (!s.ok()) {
      for (Xfer& x : xs) {
        x.call_error = s.status();
      }
      return;
    }
    if (!(*s)->alive() && !f.raced()) {
      fail("a new session between stable engines and memory is not alive()", &f);
    }
    for (Xfer& x : xs) {
      take(x, call(**s, x));
    }
    s->reset();  // while the engine is certainly alive
  }

  // Waits for the transfer and checks its outcome and bytes.
  void finish(Xfer& x) {
    if (!x.pinned) {
      return;
    }
    if (x.st && !x.st->wait(kWaitBound)) {
      fail(absl::StrFormat("did not finish within %d s (transfer still in progress)",
                           std::chrono::duration_cast<seconds>(kWaitBound).count()),
           &x);
      x.unpin();
      return;
    }
    const absl::Status result = x.st ? x.st->status() : x.call_error;
    ++w_.completed;
    if (result.ok()) {
      check_success(x);
    } else {
      check_failure(x, result);
    }
    x.unpin();
  }

  // Slices rest after a failure; a failed read's range must keep what it was given.
  void expire_rests(bool all) {
    const auto now = Clock::now();
    for (auto it = rests_.begin(); it != rests_.end();) {
      if (!all && now < it->until) {
        ++it;
        continue;
      }
      Region& r = *it->region;
      {
        std::shared_lock lock(r.cpu_mu);
        if (!r.retired) {
          for (const auto& [off, size] : it->late) {
            ++stats_.late_checks;
            const size_t bad = mismatch(r.data() + off, it->key, off, size);
            if (bad < size) {
              w_.fail(absl::StrFormat(
                  "thread=%s %s\n  bytes landed in local memory after its read had failed "
                  "(%s): %s at local offset %d (range %d+%d) changed within %d s",
                  name_, it->what, it->result, r.name(), off + bad, off, size,
                  std::chrono::duration_cast<seconds>(kRest).count()));
              break;
            }
          }
        }
      }
      it = rests_.erase(it);
    }
  }

  // Polls the target for the inbound status of a finished transfer.
  void check_inbound(const Xfer& x) {
    ++stats_.inbound_checks;
    const auto until = Clock::now() + seconds(10);
    while (Clock::now() < until) {
      StatusHandle in;
      {
        std::shared_lock lock(x.b->mu);
        if (!x.b->engine) {
          return;
        }
        in = x.b->engine->pop_inbound_status(x.a->key, x.id);
      }
      if (in) {
        if (!in->succeeded() && !x.raced()) {
          fail(absl::StrCat("the target's inbound status failed: ", in->status().ToString()), &x);
        }
        return;
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
    if (!x.raced()) {
      fail("the target never reported the inbound status of a successful transfer (10 s)", &x);
    }
  }

 private:
  struct Rest {
    std::shared_ptr<Region> region;
    Clock::time_point until;
    std::vector<std::pair<uint64_t, uint64_t>> late;  // (offset, size) of failed reads
    uint64_t key = 0;
    std::string what, result;
  };

  bool resting(const Region& r) const {
    for (const Rest& s : rests_) {
      if (s.region.get() == &r) {
        return true;
      }
    }
    return false;
  }

  // Index of the first byte of p[0..n) that differs from the pattern, or n.
  size_t mismatch(const uint8_t* p, uint64_t key, uint64_t pos, size_t n) {
    scratch_.resize(std::max<size_t>(scratch_.size(), n));
    make_pattern(key, pos, scratch_.data(), n);
    if (std::memcmp(p, scratch_.data(), n) == 0) {
      return n;
    }
    size_t i = 0;
    while (p[i] == scratch_[i]) {
      ++i;
    }
    return i;
  }

  bool margins_intact(const Xfer& x, const Seg& s) {
    const uint8_t* p = x.dst().data() + x.dst_off(s);
    for (uint64_t i = 1; i <= kMargin; ++i) {
      if (p[-static_cast<int64_t>(i)] != kMarker || p[s.size + i - 1] != kMarker) {
        return false;
      }
    }
    return true;
  }

  void check_success(Xfer& x) {
    Region& dst = x.dst();
    {
      std::shared_lock lock(dst.cpu_mu);
      if (dst.retired) {
        ++stats_.unverified;  // its canary check covers it
        return;
      }
      for (const Seg& s : x.segs) {
        const uint8_t* p = dst.data() + x.dst_off(s);
        const size_t bad = mismatch(p, x.src().key, x.src_off(s), s.size);
        if (bad < s.size) {
          size_t wrong = 0, unwritten = 0;
          for (size_t i = 0; i < s.size; ++i) {
            if (p[i] != scratch_[i]) {
              ++wrong;
              unwritten += p[i] == (scratch_[i] ^ x.mask);
            }
          }
          const size_t n = std::min<size_t>(16, s.size - bad);
          // The source's canary here means bytes left it after deregister_memory returned.
          std::vector<uint8_t> canary(n);
          make_pattern(x.src().key ^ kCanaryKey, x.src_off(s) + bad, canary.data(), n);
          const bool late = x.src().dying && std::memcmp(canary.data(), p + bad, n) == 0;
          fail(absl::StrFormat(
                   "succeeded but the destination differs from the source: segment (%d, %d, "
                   "%d), %d of its bytes wrong (%d never written), first at +%d: expected %s "
                   "got %s%s",
                   s.local_off, s.remote_off, s.size, wrong, unwritten, bad,
                   hex(scratch_.data() + bad, n), hex(p + bad, n),
                   late ? " = the source's canary: bytes left the source after its "
                          "deregister_memory returned"
                        : ""),
               &x);
          return;
        }
        if (!margins_intact(x, s)) {
          fail(absl::StrFormat("succeeded but wrote outside its range: the %d bytes around "
                               "segment (%d, %d, %d) changed",
                               kMargin, s.local_off, s.remote_off, s.size),
               &x);
          return;
        }
        stats_.bytes_verified += s.size;
      }
    }
    ++stats_.transfers_ok;
    if (!x.is_batch() && !x.raced() && rng_() % 16 == 0) {
      check_inbound(x);
    }
  }

  void check_failure(Xfer& x, const absl::Status& result) {
    if (!x.raced()) {
      fail(absl::StrCat("failed between stable engines and stable memory: ", result.ToString(),
                        x.st ? "" : " (at the call)"),
           &x);
      return;
    }
    if (!allowed_race_code(result.code())) {
      fail(absl::StrCat("raced a teardown and failed with an unexpected code: ", result.ToString(),
                        x.st ? "" : " (at the call)"),
           &x);
      return;
    }
    ++stats_.tolerated[absl::StatusCodeToString(result.code())];
    Region& dst = x.dst();
    std::shared_lock lock(dst.cpu_mu);
    if (dst.retired) {
      return;
    }
    for (const Seg& s : x.segs) {
      if (!margins_intact(x, s)) {
        fail(absl::StrFormat("failed (%s) and wrote outside its range: the %d bytes around "
                             "segment (%d, %d, %d) changed",
                             result.ToString(), kMargin, s.local_off, s.remote_off, s.size),
             &x);
        return;
      }
    }
    if (dst.dying) {
      return;
    }
    // The slice rests; a failed read's local ranges get a pattern checked at the end.
    Rest rest{x.local, Clock::now() + kRest, {}, 0, x.describe(), result.ToString()};
    if (x.is_read()) {
      rest.region = x.local;
      rest.key = mix64(rng_() | 1);
      for (const Seg& s : x.segs) {
        make_pattern(rest.key, s.local_off, dst.data() + s.local_off, s.size);
        rest.late.emplace_back(s.local_off, s.size);
      }
    } else {
      rest.region = x.remote;
    }
    rests_.push_back(std::move(rest));
  }

  World& w_;
  const int index_;  // also the slice this thread owns
  const std::string name_;
  std::mt19937_64 rng_;
  Stats stats_;
  std::unordered_map<const Region*, uint64_t> used_;
  std::vector<Rest> rests_;
  std::vector<uint8_t> scratch_;
};

// ---------------------------------------------------------------------------------------
// Engines and regions.

EngineConfig random_config(std::mt19937_64& rng, int rings) {
  static constexpr uint64_t kThresholds[] = {16 * KiB, 64 * KiB, 64 * KiB, 256 * KiB};
  EngineConfig c;
  c.rings = rings > 0 ? rings : static_cast<int>(1 + rng() % 2);
  c.stripes = static_cast<int>(1 + rng() % 4);
  c.stripe_threshold_bytes = kThresholds[rng() % 4];
  c.chunk_bytes = (64 * KiB) << (rng() % 5);  // 64 KiB..1 MiB
  c.zerocopy_threshold_bytes = rng() % 3 == 0 ? 64 * KiB : 0;
  c.wait_spin = std::chrono::microseconds(rng() % 2 == 0 ? 100 : 0);
  c.timeout = kEngineTimeout;
  return c;
}

// Makes, registers and returns a region on `node` (not yet published), or null.
std::shared_ptr<Region> add_region(World& w, Caller& c, Node& node, Role role, bool ephemeral,
                                   uint64_t size_or_slice) {
  const uint64_t uid = w.next_uid++;
  const uint64_t slice = role == Role::kDest ? size_or_slice : 0;
  const uint64_t size = role == Role::kDest ? slice * kSlices : size_or_slice;
  auto r = std::make_shared<Region>(uid, role, ephemeral, slice, size, mix64(w.seed ^ (uid << 20)),
                                    node.name);
  r->born = Clock::now();
  std::shared_lock lock(node.mu);
  if (!node.engine) {
    return nullptr;
  }
  absl::StatusOr<MemoryDesc> d = node.engine->register_memory(r->data(), r->size);
  if (!d.ok()) {
    if (!node.dying) {
      c.fail(absl::StrCat("register_memory(", r->name(), ") on ", node.describe(),
                          " failed: ", d.status().ToString()),
             nullptr);
    }
    return nullptr;
  }
  r->desc = *d;
  return r;
}

void publish_region(Node& node, std::shared_ptr<Region> r) {
  std::lock_guard lock(node.regions_mu);
  node.regions.push_back(std::move(r));
}

std::shared_ptr<Node> make_node(World& w, Caller& c, EngineConfig cfg, bool fresh) {
  auto n = std::make_shared<Node>();
  n->index = w.next_node++;
  n->name = absl::StrCat("e", n->index);
  n->key = absl::StrCat("soak-", n->name);
  n->cfg = cfg;
  n->fresh = fresh;
  n->born = Clock::now();
  absl::StatusOr<std::unique_ptr<Engine>> e = Engine::create(n->key, cfg);
  if (!e.ok()) {
    c.fail(absl::StrCat("Engine::create(", n->describe(), ") failed: ", e.status().ToString()),
           nullptr);
    return nullptr;
  }
  n->engine = std::move(*e);
  n->desc = n->engine->desc();
  {
    std::lock_guard lock(w.mu);
    w.configs.push_back(n->describe());
  }
  // Its own memory, used as long as it lives.
  const uint64_t slice = fresh ? 2 * MiB : kMaxTransfer + MiB;
  for (auto [role, size] :
       {std::pair{Role::kSource, fresh ? 4 * MiB : 6 * MiB}, std::pair{Role::kDest, slice}}) {
    std::shared_ptr<Region> r = add_region(w, c, *n, role, false, size);
    if (!r) {
      return nullptr;
    }
    publish_region(*n, std::move(r));
  }
  return n;
}

// Tells `n` and every live node about each other.
bool introduce(World& w, Caller& c, const std::shared_ptr<Node>& n) {
  for (const std::shared_ptr<Node>& p : w.snapshot()) {
    std::shared_lock lp(p->mu);
    if (!p->engine) {
      continue;
    }
    absl::Status s1 = p->engine->register_remote_engine(n->desc);
    absl::Status s2;
    {
      std::shared_lock ln(n->mu);
      s2 = n->engine->register_remote_engine(p->desc);
    }
    if ((!s1.ok() || !s2.ok()) && !p->dying) {
      c.fail(absl::StrCat("register_remote_engine between ", p->describe(), " and ", n->describe(),
                          " failed: ", s1.ToString(), " / ", s2.ToString()),
             nullptr);
      return false;
    }
  }
  return true;
}

bool wait_idle(World& w, const std::atomic<int>& count, const std::string& what) {
  const auto until = Clock::now() + kIdleBound;
  while (count.load() > 0) {
    if (Clock::now() > until) {
      w.fail(absl::StrCat("thread=churn: ", what, " still had ", count.load(), " transfers after ",
                          kIdleBound.count(), " s"));
      return false;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Picks two distinct live nodes (initiator, target).
std::optional<std::pair<std::shared_ptr<Node>, std::shared_ptr<Node>>> pick_pair(
    World& w, std::mt19937_64& rng) {
  std::vector<std::shared_ptr<Node>> nodes = w.snapshot();
  if (nodes.size() < 2) {
    return std::nullopt;
  }
  const size_t i = rng() % nodes.size();
  size_t j = rng() % (nodes.size() - 1);
  j += j >= i;
  return std::pair{nodes[i], nodes[j]};
}

Kind random_kind(std::mt19937_64& rng) {
  const uint64_t r = rng() % 100;
  return r < 30   ? Kind::kWrite
         : r < 60 ? Kind::kRead
         : r < 80 ? Kind::kBatchWrite
                  : Kind::kBatchRead;
}

// ---------------------------------------------------------------------------------------
// The worker loop: groups of 1..8 concurrent transfers, or a session.

void worker(World& w, Caller& c) {
  std::mt19937_64& rng = c.rng();
  while (!w.stop && Clock::now() < w.deadline) {
    c.expire_rests(false);
    c.new_group();
    std::vector<Xfer> xs;
    if (rng() % 5 == 0) {  // a session: several transfers over one pair
      auto pair = pick_pair(w, rng);
      if (!pair) {
        std::this_thread::sleep_for(milliseconds(5));
        continue;
      }
      const bool reads = rng() % 2 == 0;
      std::optional<Xfer> first =
          c.plan(reads ? Kind::kRead : Kind::kWrite, pair->first, pair->second);
      if (!first) {
        continue;
      }
      const std::shared_ptr<Region> local = first->local, remote = first->remote;
      xs.push_back(std::move(*first));
      const uint64_t more = rng() % 6;
      for (uint64_t i = 0; i < more; ++i) {
        const bool batch = rng() % 3 == 0;
        const Kind k = reads ? (batch ? Kind::kBatchRead : Kind::kRead)
                             : (batch ? Kind::kBatchWrite : Kind::kWrite);
        if (std::optional<Xfer> x = c.plan(k, pair->first, pair->second, local, remote)) {
          xs.push_back(std::move(*x));
        }
      }
      bool ok = true;
      for (Xfer& x : xs) {
        x.session = true;
        ok = ok && c.prepare(x);
      }
      if (!ok) {
        for (Xfer& x : xs) {
          x.unpin();
        }
        continue;
      }
      c.issue_session(xs);
    } else {
      const uint64_t n = rng() % 3 == 0 ? 1 : uniform(rng, 2, 8);
      for (uint64_t i = 0; i < n; ++i) {
        auto pair = pick_pair(w, rng);
        if (!pair) {
          break;
        }
        std::optional<Xfer> x = c.plan(random_kind(rng), pair->first, pair->second);
        if (x && c.prepare(*x)) {
          xs.push_back(std::move(*x));
        }
      }
      if (xs.empty()) {
        std::this_thread::sleep_for(milliseconds(1));
        continue;
      }
      for (Xfer& x : xs) {
        c.issue(x);
      }
    }
    for (Xfer& x : xs) {
      c.finish(x);
    }
  }
  c.expire_rests(true);
}

// ---------------------------------------------------------------------------------------
// The churn thread: fresh engines, their teardown, and ephemeral regions.

class Churn {
 public:
  Churn(World& w, Caller& c) : w_(w), c_(c), rng_(c.rng()) {}

  void run() {
    while (!w_.stop && Clock::now() < w_.deadline) {
      std::this_thread::sleep_for(milliseconds(uniform(rng_, 20, 200)));
      c_.expire_rests(false);
      check_canaries(false);
      const uint64_t r = rng_() % 100;
      std::vector<std::shared_ptr<Node>> fresh;
      for (const auto& n : w_.snapshot()) {
        if (n->fresh) {
          fresh.push_back(n);
        }
      }
      if (r < 25) {
        if (fresh.size() < kMaxFresh && g_buffer_bytes < kMemoryBudget - 32 * MiB) {
          make_fresh();
        }
      } else if (r < 45) {
        if (!fresh.empty() && Clock::now() - fresh[0]->born > milliseconds(1500)) {
          retire(fresh[0]);
        }
      } else if (r < 70) {
        add_ephemeral();
      } else if (r < 95) {
        drop_ephemeral();
      }
    }
    c_.expire_rests(true);
    check_canaries(true);
  }

 private:
  struct Canary {
    std::shared_ptr<Region> region;
    Clock::time_point at;
    uint64_t completed;
  };

  // A fresh engine meets every other and is used at once: concurrent reads both ways with
  // a stable peer, some of them through a session (vLLM's READ pattern).
  void make_fresh() {
    std::shared_ptr<Node> n = make_node(w_, c_, random_config(rng_, 0), true);
    if (!n || !introduce(w_, c_, n)) {
      return;
    }
    ++c_.stats().fresh_engines;
    std::vector<std::shared_ptr<Node>> peers;
    for (const auto& p : w_.snapshot()) {
      if (!p->fresh) {
        peers.push_back(p);
      }
    }
    {
      std::lock_guard lock(w_.mu);
      w_.nodes.push_back(n);
    }
    const std::shared_ptr<Node> s = peers[rng_() % peers.size()];
    static constexpr uint64_t kSizes[] = {40 * KiB, 150 * KiB, 128 * KiB, 40 * KiB};
    c_.new_group();
    std::vector<Xfer> out, in, sess;
    const std::shared_ptr<Region> n_dst = c_.pick_region(*n, Role::kDest, true);
    const std::shared_ptr<Region> s_src = c_.pick_region(*s, Role::kSource, true);
    const std::shared_ptr<Region> s_dst = c_.pick_region(*s, Role::kDest, true);
    const std::shared_ptr<Region> n_src = c_.pick_region(*n, Role::kSource, true);
    for (int i = 0; i < 8 && n_dst && s_src && s_dst && n_src; ++i) {
      const uint64_t size = kSizes[i % 4];
      // i < 4: the fresh engine reads; i >= 4: through a session.
      if (std::optional<Xfer> x = c_.plan(Kind::kRead, n, s, n_dst, s_src, size)) {
        x->tag = "fresh ";
        (i < 4 ? out : sess).push_back(std::move(*x));
      }
      if (std::optional<Xfer> x = c_.plan(Kind::kRead, s, n, s_dst, n_src, size)) {
        x->tag = "fresh ";
        in.push_back(std::move(*x));
      }
    }
    for (auto* v : {&out, &in}) {
      for (Xfer& x : *v) {
        c_.prepare(x);  // a transfer not prepared is not issued, and finish() skips it
      }
    }
    bool sess_ok = true;
    for (Xfer& x : sess) {
      x.session = true;
      sess_ok = c_.prepare(x) && sess_ok;
    }
    if (!sess_ok) {
      sess.clear();
    }
    for (auto* v : {&out, &in}) {
      for (Xfer& x : *v) {
        if (x.pinned) {
          c_.issue(x);
        }
      }
    }
    if (!sess.empty()) {
      c_.issue_session(sess);
    }
    for (auto* v : {&out, &in, &sess}) {
      for (Xfer& x : *v) {
        c_.finish(x);
      }
    }
  }

  // Tears a fresh engine down. Racing: a burst of transfers involving it is issued first
  // (workers add theirs), then one of: destroy it and then deregister it at its peers;
  // deregister it at its peers and then destroy it; have it deregister its peers, then
  // the reverse, then destroy it. Quiet: once no transfer uses it.
  void retire(std::shared_ptr<Node> f) {
    ++c_.stats().teardowns;
    std::vector<Xfer> burst;
    c_.new_group();
    if (w_.teardown) {
      const uint64_t n = uniform(rng_, 1, 4);
      for (uint64_t i = 0; i < n; ++i) {
        std::vector<std::shared_ptr<Node>> others = w_.snapshot();
        std::erase(others, f);
        if (others.empty()) {
          break;
        }
        std::shared_ptr<Node> other = others[rng_() % others.size()];
        const bool from_f = rng_() % 2 == 0;
        std::optional<Xfer> x = c_.plan(random_kind(rng_), from_f ? f : other, from_f ? other : f);
        if (x && c_.prepare(*x)) {
          x->tag = "teardown-burst ";
          burst.push_back(std::move(*x));
        }
      }
      for (Xfer& x : burst) {
        c_.issue(x);
      }
    }
    f->dying = true;
    std::vector<std::shared_ptr<Node>> peers;
    {
      std::lock_guard lock(w_.mu);
      std::erase(w_.nodes, f);
      peers = w_.nodes;
    }
    int ephemeral = 0;  // its ephemeral regions go with it
    {
      std::lock_guard lock(f->regions_mu);
      for (const auto& r : f->regions) {
        ephemeral += r->ephemeral ? 1 : 0;
      }
    }
    {
      std::lock_guard lock(w_.mu);
      w_.ephemeral_regions -= ephemeral;
    }
    if (!w_.teardown && !wait_idle(w_, f->inflight, f->describe())) {
      return;
    }
    const uint64_t mode = w_.teardown ? rng_() % 3 : 1;
    if (mode == 2) {
      std::shared_lock lock(f->mu);
      for (const auto& p : peers) {
        if (!f->engine) {
          break;
        }
        absl::Status s = f->engine->deregister_remote_engine(p->desc);
        if (!s.ok()) {
          w_.fail(absl::StrCat("thread=churn: ", f->describe(), ".deregister_remote_engine(",
                               p->name, ") failed: ", s.ToString()));
        }
      }
    }
    if (mode == 0) {
      destroy(*f);
    }
    for (const auto& p : peers) {
      std::shared_lock lock(p->mu);
      if (!p->engine) {
        continue;
      }
      absl::Status s = p->engine->deregister_remote_engine(f->desc);
      if (!s.ok()) {
        w_.fail(absl::StrCat("thread=churn: ", p->describe(), ".deregister_remote_engine(", f->name,
                             ") failed: ", s.ToString()));
      }
    }
    destroy(*f);
    for (Xfer& x : burst) {
      c_.finish(x);
    }
  }

  void destroy(Node& n) {
    const auto t0 = Clock::now();
    {
      std::unique_lock lock(n.mu);
      n.engine.reset();
    }
    const auto took = Clock::now() - t0;
    if (took > seconds(30)) {
      w_.fail(absl::StrCat("thread=churn: destroying ", n.describe(), " took ",
                           std::chrono::duration_cast<seconds>(took).count(), " s"));
    }
  }

  void add_ephemeral() {
    std::vector<std::shared_ptr<Node>> nodes = w_.snapshot();
    if (nodes.empty() || g_buffer_bytes > kMemoryBudget - 32 * MiB) {
      return;
    }
    {
      std::lock_guard lock(w_.mu);
      if (w_.ephemeral_regions >= kMaxEphemeral) {
        return;
      }
    }
    std::shared_ptr<Node> n = nodes[rng_() % nodes.size()];
    const Role role = rng_() % 2 ? Role::kSource : Role::kDest;
    const uint64_t size = role == Role::kSource ? log_uniform(rng_, 4 * KiB, 6 * MiB)
                                                : log_uniform(rng_, 64 * KiB, 2 * MiB);
    std::shared_ptr<Region> r = add_region(w_, c_, *n, role, true, size);
    if (r) {
      ++c_.stats().regions_added;
      {
        std::lock_guard lock(w_.mu);
        ++w_.ephemeral_regions;
      }
      publish_region(*n, std::move(r));
    }
  }

  // Deregisters an ephemeral region. Racing: while transfers use it (waits up to 300 ms
  // for one), then writes the canary. Quiet: once none does, and keeps it to the end.
  void drop_ephemeral() {
    std::vector<std::pair<std::shared_ptr<Node>, std::shared_ptr<Region>>> candidates;
    for (const auto& n : w_.snapshot()) {
      std::lock_guard lock(n->regions_mu);
      for (const auto& r : n->regions) {
        if (r->ephemeral && Clock::now() - r->born > milliseconds(300)) {
          candidates.emplace_back(n, r);
        }
      }
    }
    if (candidates.empty()) {
      return;
    }
    auto [n, r] = candidates[rng_() % candidates.size()];
    if (w_.dereg) {
      const auto until = Clock::now() + milliseconds(300);
      while (r->inflight.load() == 0 && Clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    r->dying = true;
    if (!w_.dereg && !wait_idle(w_, r->inflight, r->name())) {
      return;
    }
    absl::Status s;
    {
      std::shared_lock lock(n->mu);
      s = n->engine ? n->engine->deregister_memory(r->desc)
                    : absl::FailedPreconditionError("engine destroyed");
    }
    {
      std::lock_guard lock(n->regions_mu);
      std::erase(n->regions, r);
    }
    {
      std::lock_guard lock(w_.mu);
      --w_.ephemeral_regions;
    }
    ++c_.stats().regions_dropped;
    if (!s.ok()) {
      w_.fail(absl::StrCat("thread=churn: deregister_memory(", r->name(), ") on ", n->describe(),
                           " failed: ", s.ToString()));
      w_.bury(r);
      return;
    }
    std::unique_lock lock(r->cpu_mu);
    r->retired = true;
    if (!r->guards_intact()) {
      w_.fail(absl::StrCat("thread=churn: the guard bytes of ", r->name(), " changed"));
    }
    if (r->role == Role::kSource) {
      std::vector<uint8_t> want(r->size);
      make_pattern(r->key, 0, want.data(), want.size());
      if (std::memcmp(want.data(), r->data(), r->size) != 0) {
        w_.fail(absl::StrCat("thread=churn: source ", r->name(),
                             " changed while registered (a transfer wrote into a source)"));
      }
    }
    if (!w_.dereg) {
      w_.bury(r);  // bytes that land late must not land in freed memory
      return;
    }
    make_pattern(r->key ^ kCanaryKey, 0, r->data(), r->size);
    canaries_.push_back({r, Clock::now(), w_.completed.load()});
  }

  void check_canaries(bool all) {
    for (auto it = canaries_.begin(); it != canaries_.end();) {
      const bool held = Clock::now() - it->at >= kCanaryHold &&
                        w_.completed.load() - it->completed >= kCanaryTransfers;
      if (!all && !held && Clock::now() - it->at < seconds(3)) {
        ++it;
        continue;
      }
      if (all) {
        std::this_thread::sleep_until(it->at + kCanaryHold);
      }
      Region& r = *it->region;
      ++c_.stats().canaries;
      {
        std::unique_lock lock(r.cpu_mu);
        std::vector<uint8_t> want(r.size);
        make_pattern(r.key ^ kCanaryKey, 0, want.data(), want.size());
        size_t first = r.size, changed = 0;
        for (size_t i = 0; i < r.size; ++i) {
          if (want[i] != r.data()[i]) {
            first = std::min(first, i);
            ++changed;
          }
        }
        if (changed > 0 || !r.guards_intact()) {
          const size_t n = first < r.size ? std::min<size_t>(16, r.size - first) : 0;
          w_.fail(absl::StrFormat(
              "thread=churn: %d bytes of %s changed after deregister_memory returned (first at "
              "offset %d: canary %s, now %s)%s",
              changed, r.name(), first, hex(want.data() + std::min(first, r.size), n),
              hex(r.data() + std::min(first, r.size), n),
              r.guards_intact() ? "" : "; its guard bytes changed too"));
          w_.bury(it->region);  // the engine may still write there: never free it
        }
      }  // unlocked before erase() may free the region
      it = canaries_.erase(it);
    }
  }

  World& w_;
  Caller& c_;
  std::mt19937_64& rng_;
  std::vector<Canary> canaries_;
};

// ---------------------------------------------------------------------------------------

TEST(Soak, RandomTransfersStayCorrectWhileEnginesAndMemoryComeAndGo) {
  World w;
  const char* seed_env = std::getenv("RX_SOAK_SEED");
  w.seed = seed_env && *seed_env
               ? std::strtoull(seed_env, nullptr, 0)
               : mix64(static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
                       (static_cast<uint64_t>(getpid()) << 32)) %
                     1000000000;
  const char* secs_env = std::getenv("RX_SOAK_SECONDS");
  w.seconds = secs_env && *secs_env ? std::strtod(secs_env, nullptr) : 20.0;
  w.dereg = env_flag("RX_SOAK_DEREG", true);
  w.teardown = env_flag("RX_SOAK_TEARDOWN", true);
  std::printf("soak seed=%llu duration=%gs dereg=%d teardown=%d\n",
              static_cast<unsigned long long>(w.seed), w.seconds, w.dereg ? 1 : 0,
              w.teardown ? 1 : 0);
  std::fflush(stdout);

  std::mt19937_64 rng(w.seed);
  const int workers = static_cast<int>(3 + rng() % 2);
  const int stable = static_cast<int>(3 + rng() % 2);
  Caller setup(w, kMaxWorkers, "setup");
  for (int i = 0; i < stable; ++i) {
    // Both ring counts among the stable engines, whatever the seed.
    const EngineConfig cfg = random_config(rng, i == 0 ? 1 : i == 1 ? 2 : 0);
    std::shared_ptr<Node> n = make_node(w, setup, cfg, false);
    if (!n) {
      std::lock_guard lock(w.mu);
      const std::string why = w.failures.empty() ? "?" : w.failures[0];
      if (why.find("UNAVAILABLE") != std::string::npos) {
        GTEST_SKIP() << "no io_uring here: " << why;
      }
      FAIL() << why;
    }
    ASSERT_TRUE(introduce(w, setup, n));
    std::lock_guard lock(w.mu);
    w.nodes.push_back(n);
    w.stable.push_back(n);
  }
  for (const auto& n : w.stable) {
    std::printf("  %s\n", n->describe().c_str());
  }
  std::printf("  %d caller threads, a churn thread\n", workers);
  std::fflush(stdout);

  const auto t0 = Clock::now();
  w.deadline =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(w.seconds));
  std::vector<std::unique_ptr<Caller>> callers;
  for (int i = 0; i < workers; ++i) {
    callers.push_back(std::make_unique<Caller>(w, i, absl::StrCat("worker ", i)));
  }
  callers.push_back(std::make_unique<Caller>(w, kMaxWorkers, "churn"));
  std::vector<std::thread> threads;
  for (int i = 0; i < workers; ++i) {
    threads.emplace_back([&w, c = callers[i].get()] { worker(w, *c); });
  }
  threads.emplace_back([&w, c = callers.back().get()] { Churn(w, *c).run(); });
  for (std::thread& t : threads) {
    t.join();
  }
  const double ran = std::chrono::duration<double>(Clock::now() - t0).count();

  // The stable engines' memory is intact, and nothing on their wires was garbage.
  for (const auto& n : w.stable) {
    const EngineStats st = n->engine->stats();
    if (st.hostile_frames > 0) {
      w.fail(absl::StrCat("stable engine ", n->describe(), " counted ", st.hostile_frames,
                          " hostile frames (no peer here sends garbage)"));
    }
    std::lock_guard lock(n->regions_mu);
    for (const auto& r : n->regions) {
      if (!r->guards_intact()) {
        w.fail(absl::StrCat("the guard bytes of ", r->name(), " changed"));
      }
      if (r->role == Role::kSource && !r->ephemeral) {
        std::vector<uint8_t> want(r->size);
        make_pattern(r->key, 0, want.data(), want.size());
        if (std::memcmp(want.data(), r->data(), r->size) != 0) {
          w.fail(absl::StrCat("source ", r->name(), " changed (a transfer wrote into it)"));
        }
      }
    }
  }

  Stats total;
  for (const auto& c : callers) {
    total.add(c->stats());
  }
  // Engines first, then the memory they used.
  std::vector<std::shared_ptr<Node>> all;
  {
    std::lock_guard lock(w.mu);
    all = w.nodes;
    w.nodes.clear();
  }
  for (const auto& n : all) {
    std::unique_lock lock(n->mu);
    n->engine.reset();
  }
  all.clear();
  w.stable.clear();
  {
    std::lock_guard lock(w.mu);
    w.graveyard.clear();
  }

  std::string ops;
  for (const auto& [k, v] : total.ops) {
    absl::StrAppend(&ops, " ", k, "=", v);
  }
  std::string tolerated;
  for (const auto& [k, v] : total.tolerated) {
    absl::StrAppend(&tolerated, " ", k, "=", v);
  }
  std::printf(
      "soak seed=%llu ran %.1fs: %llu transfers verified (%.1f MiB), %llu unverified "
      "(retired meanwhile), %llu inbound statuses, %llu late checks\n  ops:%s\n"
      "  fresh engines %llu, teardowns %llu, regions added %llu / dropped %llu, canaries "
      "checked %llu\n  raced failures tolerated:%s\n",
      static_cast<unsigned long long>(w.seed), ran,
      static_cast<unsigned long long>(total.transfers_ok), total.bytes_verified / double(MiB),
      static_cast<unsigned long long>(total.unverified),
      static_cast<unsigned long long>(total.inbound_checks),
      static_cast<unsigned long long>(total.late_checks), ops.c_str(),
      static_cast<unsigned long long>(total.fresh_engines),
      static_cast<unsigned long long>(total.teardowns),
      static_cast<unsigned long long>(total.regions_added),
      static_cast<unsigned long long>(total.regions_dropped),
      static_cast<unsigned long long>(total.canaries),
      tolerated.empty() ? " none" : tolerated.c_str());

  std::lock_guard lock(w.mu);
  if (!w.failures.empty()) {
    std::string engines;
    for (const std::string& c : w.configs) {
      absl::StrAppend(&engines, "\n  ", c);
    }
    ADD_FAILURE() << w.failure_count << " failure(s), seed " << w.seed << "; the first:\n"
                  << w.failures[0] << "engines of this run:" << engines;
  }
  EXPECT_GT(total.transfers_ok, 0u);
}

}  // namespace
}  // namespace ringxfer
