#include "transport/tx_queue.h"

#include "base/check.h"

namespace ringxfer::transport::detail {

void TxQueue::push(SendItem item) {
  // The frame's iovec points into the item's own vector, which a move keeps.
  frame_bytes_ += item.frame.size();
  q_.push_back(std::move(item));
}

void TxQueue::push_next(SendItem item) {
  size_t at = inflight_items_;
  // Only the front item can have started (a short send leaves it partly sent).
  if (at < q_.size() && (q_[at].pos != 0 || q_[at].off != 0)) {
    ++at;
  }
  frame_bytes_ += item.frame.size();
  q_.insert(q_.begin() + static_cast<std::ptrdiff_t>(at), std::move(item));
}

TxQueue::Send TxQueue::gather(bool alone) {
  if (busy() || q_.empty()) {
    return {};
  }
  iov_.clear();
  size_t items = 0;
  size_t bytes = 0;
  for (SendItem& item : q_) {
    if (!item.sendable() || (items > 0 && (alone || item.zero_copy))) {
      break;
    }
    if (items > 0 && iov_.size() + (item.iov.size() - item.pos) > kIovMax) {
      break;
    }
    for (size_t i = item.pos; i < item.iov.size() && iov_.size() < kIovMax; ++i) {
      iovec v = item.iov[i];
      if (i == item.pos) {
        v.iov_base = static_cast<std::byte*>(v.iov_base) + item.off;
        v.iov_len -= item.off;
      }
      iov_.push_back(v);
      bytes += v.iov_len;
    }
    ++items;
    if (alone || iov_.size() == kIovMax) {
      break;
    }
  }
  inflight_items_ = items;
  inflight_bytes_ = bytes;
  return Send{iov_, items, bytes};
}

void TxQueue::complete(size_t bytes, std::vector<SendItem>& retired) {
  RX_CHECK_MSG(busy(), "a send completed on a queue with no send in flight");
  RX_CHECK_MSG(bytes <= inflight_bytes_, "a send moved more bytes than it asked");
  size_t left = bytes;
  size_t items = inflight_items_;
  inflight_items_ = 0;
  inflight_bytes_ = 0;
  while (items > 0) {
    SendItem& item = q_.front();
    while (item.pos < item.iov.size()) {
      const size_t rest = item.iov[item.pos].iov_len - item.off;
      if (left >= rest) {
        left -= rest;
        ++item.pos;
        item.off = 0;
      } else {
        item.off += left;
        left = 0;
        break;
      }
    }
    if (item.pos < item.iov.size()) {
      break;  // a short send: the rest of this item goes next
    }
    frame_bytes_ -= item.frame.size();
    retired.push_back(std::move(item));
    q_.pop_front();
    --items;
  }
}

void TxQueue::cancel_inflight() noexcept {
  inflight_items_ = 0;
  inflight_bytes_ = 0;
}

void TxQueue::drop_waiting(std::vector<SendItem>& dropped) {
  const auto first = q_.begin() + static_cast<std::ptrdiff_t>(inflight_items_);
  for (auto it = first; it != q_.end(); ++it) {
    frame_bytes_ -= it->frame.size();
    dropped.push_back(std::move(*it));
  }
  q_.erase(first, q_.end());
}

void TxQueue::drop_all(std::vector<SendItem>& dropped) {
  RX_CHECK_MSG(!busy(), "dropping a send the kernel still holds");
  while (!q_.empty()) {
    dropped.push_back(std::move(q_.front()));
    q_.pop_front();
  }
  frame_bytes_ = 0;
}

}  // namespace ringxfer::transport::detail
