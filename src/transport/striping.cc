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
#include "transport/striper.h"
#include "transport/worker.h"
#include "wire/codec.h"

namespace ringxfer::transport {

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
                       const std::shared_ptr<InOp>& in, const std::vector<iovec>& segs,
                       std::span<const int16_t> devs, uint64_t id, uint32_t seq) {
  const uint64_t zc_min = t_->config.engine.zerocopy_threshold_bytes;
  const bool zc_on = zc_min > 0 && loop_->features().send_zc;
  Conn* ctrl = outbound ? p->out_ctrl : p->in_ctrl;
  std::vector<uint64_t> lengths;
  lengths.reserve(segs.size());
  for (const iovec& v : segs) {
    lengths.push_back(v.iov_len);
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
  // GPU memory goes through slabs: no frame is larger than one.
  const bool gpu = std::ranges::any_of(devs, [](int16_t d) { return d >= 0; });
  const StripeParams params{t_->inline_limit(), t_->config.engine.chunk_bytes,
                            gpu ? t_->staging->slab_bytes() : 0};
  std::vector<std::shared_ptr<StagedSend>> staged;
  unsigned& next = outbound ? p->next_stripe : p->next_in_stripe;
  bool striped = false;
  stripe(
      lengths, lanes.size(), next, params,
      [&](FrameKind kind, std::span<const wire::BatchEntry> entries, uint64_t bytes, size_t lane) {
        SendItem item;
        if (kind == FrameKind::kData) {
          const wire::DataHeader dh{id, entries[0].segment, entries[0].offset, entries[0].length,
                                    seq};
          item = frame_item(encode_frame(wire::kDataFrameBytes, [&](wire::MutableByteSpan o) {
            return wire::encode_data(dh, o);
          }));
        } else {
          item = frame_item(encode_frame(wire::data_batch_frame_bytes(entries.size()),
                                         [&](wire::MutableByteSpan o) {
                                           return wire::encode_data_batch(id, entries, o, seq);
                                         }));
        }
        item.iov.reserve(1 + entries.size());
        for (const wire::BatchEntry& e : entries) {
          append_payload(
              item.iov,
              iovec{static_cast<std::byte*>(segs[e.segment].iov_base) + e.offset, e.length},
              /*keep=*/1);
        }
        item.payload = bytes;
        item.zero_copy = zc_on && bytes >= zc_min;
        item.out = out;
        item.in = in;
        if (out) {
          ++out->pending;
        }
        if (in) {
          ++in->pending;
        }
        // Inline: the caller pumps, so a completion may still join this batch in the
        // same sendmsg.
        striped = kind != FrameKind::kInline;
        Conn* to = kind == FrameKind::kInline ? ctrl : lanes[lane];
        if (gpu) {
          std::vector<StagedSend::Source> sources;
          sources.reserve(entries.size());
          for (const wire::BatchEntry& e : entries) {
            sources.push_back(StagedSend::Source{
                static_cast<const std::byte*>(segs[e.segment].iov_base) + e.offset, e.length,
                devs[e.segment]});
          }
          if (stage_send(to, item, std::move(sources), out, in)) {
            staged.push_back(std::static_pointer_cast<StagedSend>(item.staged));
          }
        }
        enqueue(to, std::move(item));
      });
  // Slabs are asked for in frame order, once every frame is queued.
  for (const std::shared_ptr<StagedSend>& st : staged) {
    request_send_slab(st);
  }
  if (striped) {
    for (Conn* lane : lanes) {
      pump_tx(lane);
    }
  }
}

}  // namespace ringxfer::transport
