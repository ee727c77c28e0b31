#include "engine/inbound_store.h"

#include <memory>

#include "absl/strings/str_format.h"

namespace ringxfer::detail {

void InboundStore::record(const std::string& peer, uint64_t id, absl::Status st, uint16_t parts,
                          int64_t now_ns) {
  expire_partial(now_ns);
  if (parts <= 1) {
    put(peer, id, std::move(st));
    return;
  }
  Key key(peer, id);
  auto it = partial_.find(key);
  if (it == partial_.end()) {
    while (partial_.size() >= max_partial_ && !partial_order_.empty()) {
      // Room for this one: the oldest open split transfer is given up on.
      auto [old_key, serial] = partial_order_.front();
      partial_order_.pop_front();
      auto old = partial_.find(old_key);
      if (old != partial_.end() && old->second.serial == serial) {
        partial_.erase(old);
        ++partial_expired_;
        put(old_key.first, old_key.second,
            absl::ResourceExhaustedError(
                "too many split transfers were open at once: this one was given up on"));
      }
    }
    Partial p;
    p.deadline_ns = now_ns + part_timeout_ns_;
    p.serial = ++serial_;
    partial_order_.emplace_back(key, p.serial);
    it = partial_.emplace(key, std::move(p)).first;
  }
  Partial& p = it->second;
  if (p.status.ok() && !st.ok()) {
    p.status = std::move(st);
  }
  if (++p.seen < parts) {
    return;
  }
  absl::Status done = std::move(p.status);
  partial_.erase(it);  // its order entry is skipped when it comes up (serial)
  put(peer, id, std::move(done));
}

void InboundStore::expire_partial(int64_t now_ns) {
  while (!partial_order_.empty()) {
    auto& [key, serial] = partial_order_.front();
    auto it = partial_.find(key);
    if (it != partial_.end() && it->second.serial == serial) {
      if (it->second.deadline_ns > now_ns) {
        return;  // deadlines come in arrival order
      }
      const uint16_t seen = it->second.seen;
      partial_.erase(it);
      ++partial_expired_;
      put(key.first, key.second,
          absl::DeadlineExceededError(absl::StrFormat(
              "only %d parts of this split transfer finished within the timeout", seen)));
    }
    partial_order_.pop_front();
  }
}

void InboundStore::put(const std::string& peer, uint64_t id, absl::Status st) {
  auto h = std::make_shared<TransferStatus>(id);
  h->set_in_progress();
  h->finish(std::move(st));
  const uint64_t serial = ++serial_;
  auto [it, added] = by_peer_[peer].insert_or_assign(id, Entry{std::move(h), serial});
  (void)it;
  if (added) {
    ++count_;
  }
  order_.emplace_back(Key(peer, id), serial);
  while (count_ > max_statuses_ && !order_.empty()) {
    auto [key, s] = order_.front();
    order_.pop_front();
    auto p = by_peer_.find(key.first);
    if (p == by_peer_.end()) {
      continue;
    }
    auto e = p->second.find(key.second);
    if (e == p->second.end() || e->second.serial != s) {
      continue;  // popped, or recorded again later (a newer order entry stands for it)
    }
    p->second.erase(e);
    --count_;
    ++evicted_;
    if (p->second.empty()) {
      by_peer_.erase(p);
    }
  }
  // Order entries of popped statuses are dropped once they are the bulk of the queue.
  if (order_.size() > 2 * count_ + 1024) {
    std::deque<std::pair<Key, uint64_t>> live;
    for (auto& [key, s] : order_) {
      auto p = by_peer_.find(key.first);
      if (p != by_peer_.end()) {
        auto e = p->second.find(key.second);
        if (e != p->second.end() && e->second.serial == s) {
          live.emplace_back(std::move(key), s);
        }
      }
    }
    order_.swap(live);
  }
}

StatusHandle InboundStore::pop(const std::string& peer, uint64_t id) {
  auto p = by_peer_.find(peer);
  if (p == by_peer_.end()) {
    return nullptr;
  }
  auto node = p->second.extract(id);
  if (node.empty()) {
    return nullptr;
  }
  --count_;
  if (p->second.empty()) {
    by_peer_.erase(p);
  }
  return std::move(node.mapped().status);
}

}  // namespace ringxfer::detail
