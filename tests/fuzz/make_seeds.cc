// Writes one valid frame of every kind into the directory given as argv[1]: the seed
// corpus of the wire fuzzers, made by the encoder so it follows the format as it is.
#include <array>
#include <cstdio>
#include <string>
#include <vector>

#include "wire/codec.h"

using namespace ringxfer::wire;

namespace {

bool write_seed(const std::string& dir, const char* name, const std::vector<std::byte>& b,
                size_t n) {
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    return false;
  }
  const bool ok = std::fwrite(b.data(), 1, n, f) == n;
  return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::byte> buf(64 * 1024);
  bool ok = true;

  Hello h;
  h.channel = ChannelKind::kData;
  h.stripe = 2;
  h.key = "engine-a";
  ok &= write_seed(dir, "hello", buf, *encode_hello(h, buf));

  // A hello that authenticates: its auth bytes are a HelloAuth.
  HelloAuth ha{7, {}};
  ha.nonce.fill(0x5a);
  std::array<std::byte, kHelloAuthBytes> auth{};
  ok &= encode_hello_auth(ha, auth).ok();
  h.auth = auth;
  ok &= write_seed(dir, "hello_auth", buf, *encode_hello(h, buf));

  HelloAck a;
  a.key = "engine-b";
  a.message = "ok";
  ok &= write_seed(dir, "hello_ack", buf, *encode_hello_ack(a, buf));

  AuthChallenge ch{7, {}, {}};
  ch.nonce.fill(0x11);
  ch.mac.fill(0x22);
  ok &= write_seed(dir, "auth_challenge", buf, *encode_auth_challenge(ch, buf));

  AuthProof pr{7, {}};
  pr.mac.fill(0x33);
  ok &= write_seed(dir, "auth_proof", buf, *encode_auth_proof(pr, buf));

  const std::vector<Segment> segs = {{1, 0x5eed0001, 0, 4096}, {2, ~uint64_t{0}, 64, 8}};
  ok &= write_seed(dir, "write_request", buf, *encode_request(OpKind::kWrite, 7, segs, buf));
  ok &= write_seed(dir, "read_request", buf, *encode_request(OpKind::kRead, 8, segs, buf));

  Completion c;
  c.transfer_id = 7;
  c.status = 5;
  c.message = "memory id 9 not found";
  ok &= write_seed(dir, "completion", buf, *encode_completion(c, buf));

  Cancel x;
  x.transfer_id = 7;
  x.seq = 3;
  x.sent_bytes = 4096;
  x.status = 9;
  ok &= write_seed(dir, "cancel", buf, *encode_cancel(x, buf));

  ok &= write_seed(dir, "data", buf, *encode_data(DataHeader{7, 1, 64, 8}, buf));

  const std::vector<BatchEntry> entries = {{0, 8, 0}, {1, 8, 8}, {1, 16, 32}};
  ok &= write_seed(dir, "data_batch", buf, *encode_data_batch(9, entries, buf));
  return ok ? 0 : 1;
}
