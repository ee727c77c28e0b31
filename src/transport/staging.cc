// Worker: GPU memory on the wire through pinned slabs (README, "GPU memory").
//   Sending: a frame whose payload is GPU memory waits in its connection's queue while
//   a slab is taken (first come, first served across the engine) and the payload is
//   copied into it; the copy's completion makes the item ready and pumps the queue. The
//   slab goes back once the send (and its zero-copy notification) completed. Copies of
//   later frames run while earlier ones are on the wire.
//   Receiving: a payload bound for GPU memory lands in a slab, part by part (a part is
//   at most a slab); each part is copied to its destinations while the next part is
//   received into another slab, and the payload counts as received only when its last
//   copy finished, so a transfer that succeeds has its bytes in device memory.
// Copies finish through GpuCopier, whose host function posts to this ring thread.
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/log.h"
#include "transport/worker.h"

namespace ringxfer::transport {

memory::GpuCopier* Worker::copier() {
  if (!copier_) {
    std::shared_ptr<memory::GpuRuntime> rt = t_->staging->runtime();
    if (!rt) {
      return nullptr;
    }
    copier_ = std::make_unique<memory::GpuCopier>(
        std::move(rt), [this](absl::AnyInvocable<void() &&> fn) {
          loop_->post([this, fn = std::move(fn)]() mutable {
            // A post after the loop stopped runs on the posting (runtime's) thread: the
            // batch is dropped there (freed with its task) instead of touching this
            // ring's state or calling the runtime from a host function.
            if (loop_->in_loop_thread()) {
              std::move(fn)();
            }
          });
        });
  }
  return copier_.get();
}

Conn* Worker::live_conn(uint32_t slot, uint16_t gen) {
  if (slot >= conns_.size()) {
    return nullptr;
  }
  Conn* c = conns_[slot].get();
  return c != nullptr && c->gen == gen && c->fd >= 0 ? c : nullptr;
}

// ---------------------------------------------------------------------------
// Sending from GPU memory

bool Worker::stage_send(Conn* c, SendItem& item, std::vector<StagedSend::Source> sources,
                        const std::shared_ptr<OutOp>& out, const std::shared_ptr<InOp>& in) {
  int device = -1;
  for (const StagedSend::Source& s : sources) {
    if (s.device >= 0) {
      device = s.device;
      break;
    }
  }
  if (device < 0) {
    return false;  // host memory only: sent as it is
  }
  auto st = std::make_shared<StagedSend>();
  st->pool = t_->staging->pool(device, memory::StageDirection::kToHost);
  RX_CHECK_MSG(st->pool != nullptr, "GPU memory of a device whose staging was never prepared");
  st->sources = std::move(sources);
  st->bytes = item.payload;
  RX_CHECK_MSG(st->bytes <= st->pool->slab_bytes(), "a staged frame larger than a slab");
  st->conn_slot = c->slot;
  st->conn_gen = c->gen;
  st->out = out;
  st->in = in;
  st->after = out ? out->after : nullptr;
  st->after_hold = out ? out->after_hold : nullptr;
  item.iov.resize(1);  // the frame; the payload joins from the slab once ready
  item.staged = st;
  return true;
}

void Worker::request_send_slab(const std::shared_ptr<StagedSend>& st) {
  // The waiter holds the item's staging weakly: an item dropped meanwhile (its transfer
  // failed) gives the slab straight back.
  std::weak_ptr<StagedSend> weak = st;
  memory::SlabPool* pool = st->pool;
  memory::Slab* slab =
      pool->acquire_or_wait(owner_id(), [this, weak, pool](memory::Slab* s) mutable {
        loop_->post([this, weak = std::move(weak), s, pool]() mutable {
          std::shared_ptr<StagedSend> locked;
          // After the loop stopped nothing here runs any more.
          if (loop_->in_loop_thread()) {
            locked = weak.lock();
          }
          if (!locked) {
            pool->release(s);
            return;
          }
          fill_slab(locked, s);
        });
      });
  if (slab != nullptr) {
    fill_slab(st, slab);
  } else {
    counters().staging_waits.fetch_add(1, std::memory_order_relaxed);
  }
}

void Worker::fill_slab(const std::shared_ptr<StagedSend>& st, memory::Slab* slab) {
  st->slab = slab;
  st->data = slab->data;
  memory::GpuCopier* cp = copier();
  RX_CHECK_MSG(cp != nullptr, "a staged send without a GPU runtime");
  // Host sources are copied here; device sources go to the device's stream, one batch
  // per device.
  std::vector<memory::CopyRange> ranges;
  std::vector<int16_t> devices;
  uint64_t off = 0;
  for (const StagedSend::Source& s : st->sources) {
    if (s.device < 0) {
      std::memcpy(slab->data + off, s.at, s.bytes);
    } else if (std::find(devices.begin(), devices.end(), s.device) == devices.end()) {
      devices.push_back(s.device);
    }
    off += s.bytes;
  }
  if (devices.empty()) {
    st->ready = true;
    return;
  }
  st->copies = static_cast<int>(devices.size());
  // A copy out of the transfer's memory holds it like a send does: the transfer does not
  // finish (nor let its regions go) while the copy may still read them, even if the
  // item itself is dropped meanwhile (a fence, a failure, a closed connection).
  std::shared_ptr<OutOp> out = st->out.lock();
  std::shared_ptr<InOp> in = st->in.lock();
  for (int16_t dev : devices) {
    ranges.clear();
    off = 0;
    for (const StagedSend::Source& s : st->sources) {
      if (s.device == dev) {
        ranges.push_back(memory::CopyRange{slab->data + off, s.at, s.bytes});
      }
      off += s.bytes;
    }
    counters().staged_copies.fetch_add(1, std::memory_order_relaxed);
    if (out) {
      ++out->pending;
    }
    if (in) {
      ++in->pending;
    }
    cp->copy(dev, memory::StageDirection::kToHost, ranges, st->after,
             [this, st, out, in](absl::Status s) {
               on_send_copied(st, std::move(s));
               // After the item's fate is settled: the transfer may finish now.
               let_go(out, in);
             });
  }
}

void Worker::on_send_copied(const std::shared_ptr<StagedSend>& st, absl::Status s) {
  if (!s.ok() && st->status.ok()) {
    st->status = std::move(s);
  }
  if (--st->copies > 0) {
    return;
  }
  if (!st->status.ok()) {
    counters().staging_failures.fetch_add(1, std::memory_order_relaxed);
    const absl::Status why = absl::InternalError(
        absl::StrFormat("GPU copy of the data to send failed: %s", st->status.message()));
    // The item never goes: the transfer fails, which drops its frames not yet sent.
    if (std::shared_ptr<OutOp> op = st->out.lock()) {
      initiator_.abort(op, why);
    }
    if (std::shared_ptr<InOp> in = st->in.lock()) {
      target_.abort(in, why);
    }
    // A transfer that had failed before keeps its frames: this one, never ready, would
    // hold its queue up forever.
    if (Conn* c = live_conn(st->conn_slot, st->conn_gen); c != nullptr) {
      drop_unstarted({c}, [&st](const SendItem& item) { return item.staged == st; });
      pump_tx(c);
    }
    return;
  }
  st->ready = true;
  if (Conn* c = live_conn(st->conn_slot, st->conn_gen); c != nullptr) {
    pump_tx(c);
  }
}

// ---------------------------------------------------------------------------
// Receiving into GPU memory

void Worker::start_payload(Conn* c, std::vector<iovec> dest, uint64_t bytes,
                           std::vector<int16_t> devs) {
  int device = -1;
  for (int16_t d : devs) {
    if (d >= 0) {
      device = d;
      break;
    }
  }
  if (device < 0) {
    c->rx.payload_to(std::move(dest));
    return;
  }
  auto st = std::make_shared<RxStage>();
  st->pool = t_->staging->pool(device, memory::StageDirection::kToDevice);
  RX_CHECK_MSG(st->pool != nullptr, "GPU memory of a device whose staging was never prepared");
  st->dest = std::move(dest);
  st->devs = std::move(devs);
  st->bytes = bytes;
  st->unassigned = bytes;
  if (c->rx_out) {
    st->after = c->rx_out->after;
    st->after_hold = c->rx_out->after_hold;
  }
  c->rx_stage = st;
  request_rx_slab(c);
}

void Worker::request_rx_slab(Conn* c) {
  std::weak_ptr<RxStage> weak = c->rx_stage;
  memory::SlabPool* pool = c->rx_stage->pool;
  const uint32_t slot = c->slot;
  const uint16_t gen = c->gen;
  memory::Slab* slab =
      pool->acquire_or_wait(owner_id(), [this, weak, pool, slot, gen](memory::Slab* s) mutable {
        loop_->post([this, weak = std::move(weak), pool, slot, gen, s]() mutable {
          if (!loop_->in_loop_thread()) {
            pool->release(s);
            return;
          }
          Conn* c = live_conn(slot, gen);
          std::shared_ptr<RxStage> st = weak.lock();
          if (c == nullptr || !st || c->rx_stage != st || !c->rx_wait_slab ||
              c->state == ConnState::kClosing) {
            pool->release(s);
            return;
          }
          c->rx_wait_slab = false;
          give_part(c, s);
          drive_rx(c);
        });
      });
  if (slab != nullptr) {
    give_part(c, slab);
  } else {
    counters().staging_waits.fetch_add(1, std::memory_order_relaxed);
    c->rx_wait_slab = true;  // drive_rx stops until the slab comes
  }
}

void Worker::give_part(Conn* c, memory::Slab* slab) {
  RxStage& st = *c->rx_stage;
  st.slab = slab;
  st.part = std::min<uint64_t>(st.unassigned, slab->bytes);
  st.unassigned -= st.part;
  std::vector<iovec> part{iovec{slab->data, static_cast<size_t>(st.part)}};
  if (!st.started) {
    st.started = true;
    c->rx.payload_to(std::move(part));
  } else {
    c->rx.payload_more(std::move(part));
  }
}

void Worker::part_landed(Conn* c) {
  std::shared_ptr<RxStage> st = c->rx_stage;
  memory::Slab* slab = std::exchange(st->slab, nullptr);
  // The slab goes back when the last copy out of it finished.
  memory::SlabPool* pool = st->pool;
  std::shared_ptr<memory::Slab> hold(slab, [pool](memory::Slab* s) { pool->release(s); });
  // This part's destinations, from where the last one stopped.
  struct Out {
    void* dst;
    const std::byte* src;
    uint64_t bytes;
    int16_t device;
  };
  std::vector<Out> outs;
  uint64_t left = st->part;
  uint64_t off = 0;
  while (left > 0) {
    RX_CHECK_MSG(st->at < st->dest.size(), "a staged part beyond its destinations");
    const iovec& v = st->dest[st->at];
    const uint64_t n = std::min<uint64_t>(left, v.iov_len - st->at_off);
    outs.push_back(Out{static_cast<std::byte*>(v.iov_base) + st->at_off, slab->data + off, n,
                       st->devs[st->at]});
    off += n;
    left -= n;
    st->at_off += n;
    if (st->at_off == v.iov_len) {
      ++st->at;
      st->at_off = 0;
    }
  }
  std::vector<int16_t> devices;
  for (const Out& o : outs) {
    if (o.device < 0) {
      std::memcpy(o.dst, o.src, o.bytes);  // host memory: placed here
    } else if (std::find(devices.begin(), devices.end(), o.device) == devices.end()) {
      devices.push_back(o.device);
    }
  }
  memory::GpuCopier* cp = copier();
  RX_CHECK_MSG(devices.empty() || cp != nullptr, "a staged receive without a GPU runtime");
  std::vector<memory::CopyRange> ranges;
  for (int16_t dev : devices) {
    ranges.clear();
    for (const Out& o : outs) {
      if (o.device == dev) {
        ranges.push_back(memory::CopyRange{o.dst, o.src, o.bytes});
      }
    }
    ++st->copies;
    counters().staged_copies.fetch_add(1, std::memory_order_relaxed);
    // Into the initiator's memory (a read): after the producer's work, as out of it.
    cp->copy(dev, memory::StageDirection::kToDevice, ranges, st->after,
             [this, st, hold](absl::Status s) mutable {
               hold.reset();  // the slab is free before the payload is reported
               if (!s.ok() && st->status.ok()) {
                 st->status = std::move(s);
               }
               --st->copies;
               maybe_finish_rx_stage(st);
             });
  }
}

void Worker::detach_rx_stage(Conn* c, bool lost) {
  std::shared_ptr<RxStage> st = std::exchange(c->rx_stage, nullptr);
  if (!st) {
    return;
  }
  c->rx_wait_slab = false;
  if (st->slab != nullptr) {
    // A part was being received into it: no receive is in flight any more.
    st->pool->release(std::exchange(st->slab, nullptr));
  }
  st->lost = lost;
  st->framer_done = !lost;
  st->out = std::exchange(c->rx_out, nullptr);
  st->in = std::exchange(c->rx_in, nullptr);
  maybe_finish_rx_stage(st);
}

void Worker::maybe_finish_rx_stage(const std::shared_ptr<RxStage>& st) {
  if (st->finished || st->copies > 0 || !(st->framer_done || st->lost)) {
    return;
  }
  st->finished = true;
  absl::Status why;
  if (!st->status.ok()) {
    counters().staging_failures.fetch_add(1, std::memory_order_relaxed);
    why = absl::InternalError(absl::StrFormat("GPU copy of received data to its memory failed: %s",
                                              st->status.message()));
  }
  if (std::shared_ptr<OutOp> op = std::move(st->out)) {
    if (!why.ok()) {
      // A read: the target is told to stop sending the rest (a Cancel).
      initiator_.abort(op, why);
    }
    initiator_.on_payload(op, st->lost ? 0 : st->bytes);
  }
  if (std::shared_ptr<InOp> in = std::move(st->in)) {
    if (!why.ok()) {
      in->fail(why);
    }
    if (st->lost) {
      Target::on_payload_lost(*in);
    } else {
      target_.on_payload(in, st->bytes);
    }
  }
}

}  // namespace ringxfer::transport
