// Worker: cutting a transfer's payload into frames: inline batches on the control
// connection, groups and chunks round-robin over the data connections.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/errno_status.h"
#include "base/log.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

using detail::Conn;
using detail::ConnState;
using detail::InOp;
using detail::OutOp;
using detail::Peer;
using detail::SendItem;

// Queues the data frames of one transfer: inline (one batch frame on the control
// connection) below the inline limit, else chunks round-robin over data connections.
namespace {

// Appends `v` to payload iovecs, merging it into the last when it continues it in
// memory: contiguous segments then cost the kernel one iovec, and a chunk that lies in
// one registered buffer can go as one fixed-buffer send. The first `keep` iovecs (a
// frame header) are never merged into.
void append_payload(std::vector<iovec>& iov, const iovec& v, size_t keep = 0) {
  if (iov.size() > keep &&
      static_cast<std::byte*>(iov.back().iov_base) + iov.back().iov_len == v.iov_base) {
    iov.back().iov_len += v.iov_len;
  } else {
    iov.push_back(v);
  }
}

}  // namespace

void Worker::send_data(Peer* p, bool outbound, const std::shared_ptr<OutOp>& out,
                       const std::shared_ptr<InOp>& in, const std::vector<iovec>& segs, uint64_t id,
                       uint32_t seq) {
  uint64_t total = 0;
  for (const iovec& v : segs) {
    total += v.iov_len;
  }
  Conn* ctrl = outbound ? p->out_ctrl : p->in_ctrl;
  const uint64_t zc_min = t_->config.engine.zerocopy_threshold_bytes;
  const bool zc_on = zc_min > 0 && loop_->features().send_zc;
  auto track = [&](SendItem& item) {
    item.out = out;
    item.in = in;
    if (out) {
      ++out->pending;
    }
    if (in) {
      ++in->pending;
    }
  };
  if (total < t_->inline_limit()) {
    std::vector<wire::BatchEntry> entries;
    entries.reserve(segs.size());
    for (size_t i = 0; i < segs.size(); ++i) {
      entries.push_back(
          wire::BatchEntry{static_cast<uint32_t>(i), static_cast<uint32_t>(segs[i].iov_len), 0});
    }
    SendItem item = frame_item(encode_frame(
        wire::data_batch_frame_bytes(entries.size()),
        [&](wire::MutableByteSpan o) { return wire::encode_data_batch(id, entries, o, seq); }));
    item.iov.reserve(1 + segs.size());
    for (const iovec& v : segs) {
      append_payload(item.iov, v, /*keep=*/1);
    }
    item.payload = total;
    item.zero_copy = zc_on && total >= zc_min;
    track(item);
    // The caller pumps: a completion may still join this batch in the same sendmsg.
    enqueue(ctrl, std::move(item));
    return;
  }
  // The lanes: the peer's idle data connections (nothing queued or in flight), or all
  // of them when none is idle. A transfer that starts while others stream then takes the
  // free connections instead of queueing behind their frames.
  std::vector<Conn*> lanes, idle;
  const std::vector<Conn*>& data = outbound ? p->out_data : p->in_data;
  for (Conn* d : data) {
    if (d != nullptr && d->state != ConnState::kClosing) {
      lanes.push_back(d);
      if (!d->tx.busy() && d->tx.empty()) {
        idle.push_back(d);
      }
    }
  }
  if (!idle.empty()) {
    lanes.swap(idle);
  }
  if (lanes.empty()) {
    lanes.push_back(ctrl);
  }
  unsigned& next = outbound ? p->next_stripe : p->next_in_stripe;
  // Stripe size adapts to the transfer: about kChunksPerLane frames per connection, so
  // every lane gets work and each frame costs few receives, never smaller than the
  // configured chunk_bytes nor larger than kChunkBytesMax.
  const uint64_t per_lane = total / (lanes.size() * kChunksPerLane);
  const uint64_t chunk =
      std::clamp<uint64_t>(per_lane, t_->config.engine.chunk_bytes,
                           std::max(t_->config.engine.chunk_bytes, kChunkBytesMax));
  const uint64_t group_max = std::min<uint64_t>(chunk, wire::kBatchPayloadBytesMax);
  // Segments smaller than a chunk travel together, one batch frame per chunk's worth;
  // larger ones are cut into chunk-sized data frames. Frames go round-robin over lanes.
  std::vector<wire::BatchEntry> group;
  std::vector<iovec> group_iov;
  uint64_t group_bytes = 0;
  auto emit = [&](SendItem item, uint64_t len) {
    item.payload = len;
    item.zero_copy = zc_on && len >= zc_min;
    track(item);
    enqueue(lanes[next++ % lanes.size()], std::move(item));
  };
  auto flush_group = [&] {
    if (group.empty()) {
      return;
    }
    SendItem item;
    if (group.size() == 1) {
      const wire::DataHeader dh{id, group[0].segment, 0, group[0].length, seq};
      item = frame_item(encode_frame(wire::kDataFrameBytes, [&](wire::MutableByteSpan o) {
        return wire::encode_data(dh, o);
      }));
    } else {
      item = frame_item(encode_frame(
          wire::data_batch_frame_bytes(group.size()),
          [&](wire::MutableByteSpan o) { return wire::encode_data_batch(id, group, o, seq); }));
    }
    item.iov.insert(item.iov.end(), group_iov.begin(), group_iov.end());
    emit(std::move(item), group_bytes);
    group.clear();
    group_iov.clear();
    group_bytes = 0;
  };
  for (size_t s = 0; s < segs.size(); ++s) {
    const uint64_t len = segs[s].iov_len;
    if (len < group_max) {
      if (group_bytes + len > group_max || group.size() == wire::kSegmentsMax) {
        flush_group();
      }
      group.push_back(wire::BatchEntry{static_cast<uint32_t>(s), static_cast<uint32_t>(len), 0});
      append_payload(group_iov, segs[s]);
      group_bytes += len;
      continue;
    }
    flush_group();
    for (uint64_t off = 0; off < len; off += chunk) {
      const uint64_t n = std::min<uint64_t>(chunk, len - off);
      const wire::DataHeader dh{id, static_cast<uint32_t>(s), off, n, seq};
      SendItem item = frame_item(encode_frame(wire::kDataFrameBytes, [&](wire::MutableByteSpan o) {
        return wire::encode_data(dh, o);
      }));
      item.iov.push_back(iovec{static_cast<std::byte*>(segs[s].iov_base) + off, n});
      emit(std::move(item), n);
    }
  }
  flush_group();
  for (Conn* lane : lanes) {
    pump_tx(lane);
  }
}

}  // namespace ringxfer::transport
