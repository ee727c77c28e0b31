// The cost of the ring itself: a batch of NOP SQEs submitted and reaped in one
// io_uring_enter, per SQE.
#include "benchmark/benchmark.h"
#include "ring/ring.h"
#include "ring/tag.h"

namespace {

using namespace ringxfer::ring;

void BM_NopBatch(benchmark::State& state) {
  const unsigned batch = static_cast<unsigned>(state.range(0));
  auto ring = Ring::create(RingOptions{.entries = 1024});
  if (!ring.ok()) {
    state.SkipWithError(ring.status().ToString().c_str());
    return;
  }
  Ring& r = **ring;
  for (auto _ : state) {
    for (unsigned i = 0; i < batch; ++i) {
      io_uring_prep_nop(r.sqe(Tag{1, 0, 0, i}.pack()));
    }
    unsigned got = 0;
    while (got < batch) {
      (void)r.submit_and_wait(-1);
      got += r.reap([](const io_uring_cqe&) {});
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch);
  state.counters["enters_per_batch"] =
      benchmark::Counter(static_cast<double>(r.counters().enters) / state.iterations());
}
BENCHMARK(BM_NopBatch)->Arg(1)->Arg(32)->Arg(256);

}  // namespace

BENCHMARK_MAIN();
