// A scripted peer that speaks ringxfer's wire protocol over plain blocking sockets, for
// tests that need a target which lies, answers late or answers twice. It listens on
// 127.0.0.1, accepts connections, answers each hello with a hello ack, and hands the
// test the frames it reads. Uses only the wire codec.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "support/raw_socket.h"
#include "wire/codec.h"

namespace ringxfer::testing {

class FakePeer {
 public:
  // One accepted connection after its handshake.
  struct Conn {
    int fd = -1;
    wire::ChannelKind channel = wire::ChannelKind::kControl;
    std::string key;  // the initiator's key, as its hello said
  };
  // One frame read: header, body bytes, payload bytes.
  struct Frame {
    wire::FrameHeader header;
    std::vector<std::byte> body;
    std::vector<std::byte> payload;
  };

  explicit FakePeer(std::string key) : key_(std::move(key)) {}
  ~FakePeer() {
    for (Conn& c : conns_) {
      close(c.fd);
    }
  }
  uint16_t port() const { return listener_.port(); }
  const std::string& key() const { return key_; }

  // Accepts connections and answers their hellos until one of `channel` has come (or
  // `timeout_ms` passed); returns it.
  std::optional<Conn> accept_until(wire::ChannelKind channel, int timeout_ms) {
    for (Conn& c : conns_) {
      if (c.channel == channel && !c.key.empty() && !taken(c.fd)) {
        taken_.push_back(c.fd);
        return c;
      }
    }
    for (;;) {
      pollfd p{listener_.fd(), POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) {
        return std::nullopt;
      }
      const int fd = accept4(listener_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        return std::nullopt;
      }
      std::optional<Frame> f = read_frame(fd, timeout_ms);
      if (!f || f->header.type != wire::FrameType::kHello) {
        close(fd);
        continue;
      }
      wire::Result<wire::Hello> h = wire::decode_hello_body(f->header, f->body);
      if (!h.ok()) {
        close(fd);
        continue;
      }
      wire::HelloAck a;
      a.key = key_;
      a.capabilities = h->capabilities;
      a.instance_id = 42;
      std::vector<std::byte> ack(wire::hello_ack_frame_bytes(key_.size(), 0));
      if (!wire::encode_hello_ack(a, ack).ok() || !send_all(fd, ack)) {
        close(fd);
        continue;
      }
      Conn c{fd, h->channel, std::string(h->key)};
      conns_.push_back(c);
      if (c.channel == channel) {
        taken_.push_back(fd);
        return c;
      }
    }
  }

  // Reads one whole frame (header, body, payload) from `fd`.
  static std::optional<Frame> read_frame(int fd, int timeout_ms) {
    Frame f;
    std::vector<std::byte> head(wire::kHeaderBytes);
    if (!recv_exact(fd, head.data(), head.size(), timeout_ms)) {
      return std::nullopt;
    }
    wire::Result<wire::FrameHeader> h = wire::decode_header(head);
    if (!h.ok()) {
      return std::nullopt;
    }
    f.header = *h;
    f.body.resize(h->body_bytes);
    f.payload.resize(h->payload_bytes);
    if (!recv_exact(fd, f.body.data(), f.body.size(), timeout_ms) ||
        !recv_exact(fd, f.payload.data(), f.payload.size(), timeout_ms)) {
      return std::nullopt;
    }
    return f;
  }

  static bool send_all(int fd, std::span<const std::byte> b) {
    size_t off = 0;
    while (off < b.size()) {
      const ssize_t n = ::send(fd, b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        return false;
      }
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // A completion frame for request `seq` of transfer `id`.
  static std::vector<std::byte> completion(uint64_t id, uint32_t seq, wire::OpKind op,
                                           uint16_t status = 0) {
    wire::Completion c;
    c.transfer_id = id;
    c.seq = seq;
    c.op = op;
    c.status = status;
    std::vector<std::byte> b(wire::completion_frame_bytes(0));
    (void)wire::encode_completion(c, b);
    return b;
  }

  // A data frame of transfer `id` (request `seq`) for segment `segment` at `offset`,
  // followed by `payload`.
  static std::vector<std::byte> data(uint64_t id, uint32_t seq, uint32_t segment, uint64_t offset,
                                     const std::vector<std::byte>& payload) {
    std::vector<std::byte> b(wire::kDataFrameBytes);
    (void)wire::encode_data(wire::DataHeader{id, segment, offset, payload.size(), seq}, b);
    b.insert(b.end(), payload.begin(), payload.end());
    return b;
  }

 private:
  static bool recv_exact(int fd, std::byte* out, size_t n, int timeout_ms) {
    size_t got = 0;
    while (got < n) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) {
        return false;
      }
      const ssize_t r = recv(fd, out + got, n - got, 0);
      if (r <= 0) {
        return false;
      }
      got += static_cast<size_t>(r);
    }
    return true;
  }
  bool taken(int fd) const {
    for (int t : taken_) {
      if (t == fd) {
        return true;
      }
    }
    return false;
  }

  std::string key_;
  RawListener listener_;
  std::vector<Conn> conns_;
  std::vector<int> taken_;
};

}  // namespace ringxfer::testing
