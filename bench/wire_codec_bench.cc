// Encode and decode cost of every frame kind, with bytes/s counters over the frame
// bytes (header + body; payload is not touched by the codec).
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "wire/codec.h"

namespace {

using namespace ringxfer::wire;

std::vector<Segment> make_segments(int n) {
  std::vector<Segment> s(n);
  for (int i = 0; i < n; ++i) {
    s[i] = Segment{static_cast<uint64_t>(i % 4), 0x9e3779b97f4a7c15, uint64_t{4096} * i, 4096};
  }
  return s;
}

std::vector<BatchEntry> make_entries(int n) {
  std::vector<BatchEntry> e(n);
  for (int i = 0; i < n; ++i) {
    e[i] = BatchEntry{static_cast<uint32_t>(i), 8, uint64_t{64} * i};
  }
  return e;
}

void BM_EncodeData(benchmark::State& state) {
  std::vector<std::byte> out(kDataFrameBytes);
  DataHeader d{1, 0, 0, 1 << 20};
  for (auto _ : state) {
    d.offset += 1;
    Result<size_t> n = encode_data(d, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kDataFrameBytes);
}
BENCHMARK(BM_EncodeData);

void BM_DecodeData(benchmark::State& state) {
  std::vector<std::byte> in(kDataFrameBytes);
  (void)encode_data(DataHeader{1, 3, 4096, 1 << 20}, in);
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.data());
    Result<DataHeader> d = decode_data(in);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * kDataFrameBytes);
}
BENCHMARK(BM_DecodeData);

void BM_EncodeHello(benchmark::State& state) {
  std::vector<std::byte> out(hello_frame_bytes(64, 0));
  Hello h;
  const std::string key(64, 'k');
  h.key = key;
  for (auto _ : state) {
    Result<size_t> n = encode_hello(h, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_EncodeHello);

void BM_DecodeHello(benchmark::State& state) {
  std::vector<std::byte> in(hello_frame_bytes(64, 0));
  Hello h;
  const std::string key(64, 'k');
  h.key = key;
  (void)encode_hello(h, in);
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.data());
    Result<Hello> d = decode_hello(in);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * in.size());
}
BENCHMARK(BM_DecodeHello);

void BM_EncodeRequest(benchmark::State& state) {
  const auto segs = make_segments(static_cast<int>(state.range(0)));
  std::vector<std::byte> out(request_frame_bytes(segs.size()));
  for (auto _ : state) {
    Result<size_t> n = encode_request(OpKind::kWrite, 7, segs, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * out.size());
  state.SetItemsProcessed(state.iterations() * segs.size());
}
BENCHMARK(BM_EncodeRequest)->Arg(1)->Arg(256)->Arg(kSegmentsMax);

void BM_DecodeRequest(benchmark::State& state) {
  const auto segs = make_segments(static_cast<int>(state.range(0)));
  std::vector<std::byte> in(request_frame_bytes(segs.size()));
  (void)encode_request(OpKind::kWrite, 7, segs, in);
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.data());
    Result<Request> d = decode_request(in);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * in.size());
  state.SetItemsProcessed(state.iterations() * segs.size());
}
BENCHMARK(BM_DecodeRequest)->Arg(1)->Arg(256)->Arg(kSegmentsMax);

void BM_EncodeCompletion(benchmark::State& state) {
  Completion c;
  c.transfer_id = 9;
  std::vector<std::byte> out(completion_frame_bytes(0));
  for (auto _ : state) {
    c.transfer_id += 1;
    Result<size_t> n = encode_completion(c, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * out.size());
}
BENCHMARK(BM_EncodeCompletion);

void BM_DecodeCompletion(benchmark::State& state) {
  Completion c;
  c.transfer_id = 9;
  c.status = 14;
  c.message = "connection to decode-3 lost";
  std::vector<std::byte> in(completion_frame_bytes(c.message.size()));
  (void)encode_completion(c, in);
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.data());
    Result<Completion> d = decode_completion(in);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * in.size());
}
BENCHMARK(BM_DecodeCompletion);

void BM_EncodeDataBatch(benchmark::State& state) {
  const auto entries = make_entries(static_cast<int>(state.range(0)));
  std::vector<std::byte> out(data_batch_frame_bytes(entries.size()));
  for (auto _ : state) {
    Result<size_t> n = encode_data_batch(5, entries, out);
    benchmark::DoNotOptimize(n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * out.size());
  state.SetItemsProcessed(state.iterations() * entries.size());
}
BENCHMARK(BM_EncodeDataBatch)->Arg(1)->Arg(256)->Arg(kSegmentsMax);

void BM_DecodeDataBatch(benchmark::State& state) {
  const auto entries = make_entries(static_cast<int>(state.range(0)));
  std::vector<std::byte> in(data_batch_frame_bytes(entries.size()));
  (void)encode_data_batch(5, entries, in);
  for (auto _ : state) {
    benchmark::DoNotOptimize(in.data());
    Result<DataBatch> d = decode_data_batch(in);
    benchmark::DoNotOptimize(d);
  }
  state.SetBytesProcessed(state.iterations() * in.size());
  state.SetItemsProcessed(state.iterations() * entries.size());
}
BENCHMARK(BM_DecodeDataBatch)->Arg(1)->Arg(256)->Arg(kSegmentsMax);

}  // namespace

BENCHMARK_MAIN();
