// Loopback write and read per message size between two engines in this process (a
// batch of 64 messages per transfer), with bytes/s counters. ringxfer-bench and
// bench/compare.py measure across processes; this one is for quick A/B runs.
#include <memory>
#include <vector>

#include "benchmark/benchmark.h"
#include "ringxfer/ringxfer.h"

namespace {

using namespace ringxfer;

struct Pair {
  std::unique_ptr<Engine> a, b;
  std::vector<char> src, dst;
  MemoryDesc ms, md;
  Pair() {
    EngineConfig cfg;
    a = std::move(*Engine::create("bench-a", cfg));
    b = std::move(*Engine::create("bench-b", cfg));
    (void)a->register_remote_engine(b->desc());
    src.assign(64 << 20, 'x');
    dst.assign(64 << 20, 0);
    ms = *a->register_memory(src.data(), src.size());
    md = *b->register_memory(dst.data(), dst.size());
  }
};

Pair& pair() {
  static Pair* p = new Pair();  // shared by all benchmarks, never torn down mid-run
  return *p;
}

void transfer(benchmark::State& state, bool write) {
  Pair& p = pair();
  const uint64_t size = static_cast<uint64_t>(state.range(0));
  const int batch = static_cast<int>(std::min<uint64_t>(64, (64 << 20) / size));
  std::vector<uint64_t> offs(batch), sizes(batch, size);
  for (int i = 0; i < batch; ++i) {
    offs[i] = i * size;
  }
  for (auto _ : state) {
    auto st = write ? p.a->batch_write(p.ms, offs, p.md, offs, sizes, p.a->allocate_transfer_id())
                    : p.a->batch_read(p.ms, offs, p.md, offs, sizes, p.a->allocate_transfer_id());
    if (!st.ok()) {
      state.SkipWithError(st.status().ToString().c_str());
      return;
    }
    (*st)->wait();
    if (!(*st)->succeeded()) {
      state.SkipWithError((*st)->message().c_str());
      return;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * batch * size);
  state.counters["batch"] = batch;
}

void BM_Write(benchmark::State& state) { transfer(state, true); }
void BM_Read(benchmark::State& state) { transfer(state, false); }
BENCHMARK(BM_Write)->RangeMultiplier(16)->Range(8, 1 << 20)->UseRealTime();
BENCHMARK(BM_Read)->RangeMultiplier(16)->Range(8, 1 << 20)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
