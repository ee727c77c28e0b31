// Config files: EngineConfig::load / parse / to_json / over, and RINGXFER_CONFIG.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "ringxfer/ringxfer.h"

namespace ringxfer {
namespace {

// A file under /tmp holding `text`, removed at the end of the scope.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/ringxfer-config-XXXXXX";
    const int fd = mkstemp(name);
    path_ = name;
    close(fd);
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

EngineConfig tuned() {
  EngineConfig c;
  c.rings = 3;
  c.stripes = 6;
  c.timeout = std::chrono::milliseconds(1234);
  c.stripe_threshold_bytes = 65536;
  c.chunk_bytes = 512 << 10;
  c.zerocopy_threshold_bytes = 32768;
  c.wait_spin = std::chrono::microseconds(50);
  c.ring_cpus = {0, 1};
  c.socket.send_buffer_bytes = 4 << 20;
  c.socket.recv_buffer_bytes = 0;
  c.socket.nodelay = false;
  c.idle_timeout = std::chrono::milliseconds(9000);
  return c;
}

TEST(ConfigFile, RoundTripsEveryFieldUnchanged) {
  const EngineConfig c = tuned();
  absl::StatusOr<EngineConfig> back = EngineConfig::parse(c.to_json());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->to_json(), c.to_json());
  EXPECT_EQ(back->rings, 3);
  EXPECT_EQ(back->timeout.count(), 1234);
  EXPECT_EQ(back->ring_cpus, (std::vector<int>{0, 1}));
  EXPECT_EQ(back->socket.recv_buffer_bytes, 0);
  EXPECT_FALSE(back->socket.nodelay);
  // And the defaults round-trip too.
  EXPECT_EQ(EngineConfig::parse(EngineConfig{}.to_json())->to_json(), EngineConfig{}.to_json());
}

TEST(ConfigFile, LoadsAFileNamingSomeFieldsAndKeepsTheDefaultsOfTheRest) {
  TempFile f(R"({"ringxfer_config": 1, "comment": "tuned on host x",
                 "engine": {"rings": 1, "stripes": 4, "socket": {"send_buffer_bytes": 0}},
                 "measured": {"large": {"gbps": 3.1}}})");
  absl::StatusOr<EngineConfig> c = EngineConfig::load(f.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rings, 1);
  EXPECT_EQ(c->stripes, 4);
  EXPECT_EQ(c->socket.send_buffer_bytes, 0);
  EXPECT_EQ(c->socket.recv_buffer_bytes, EngineConfig{}.socket.recv_buffer_bytes);
  EXPECT_EQ(c->chunk_bytes, EngineConfig{}.chunk_bytes);
}

// Every bad input: a clear error that names the file and the field, and no config.
TEST(ConfigFile, BadFilesAreRefusedNamingTheFieldAndTheFile) {
  struct Case {
    const char* text;
    const char* says;
  };
  for (const Case& k : {
           Case{R"({"ringxfer_config": 1, "engine": {"strips": 2}})",
                "unknown field engine.strips"},
           Case{R"({"ringxfer_config": 1, "engine": {"socket": {"nodelai": true}}})",
                "unknown field engine.socket.nodelai"},
           Case{R"({"ringxfer_config": 1, "engin": {}})", "unknown field \"engin\""},
           Case{R"({"ringxfer_config": 1, "engine": {"rings": "two"}})", "engine.rings: expected"},
           Case{R"({"ringxfer_config": 1, "engine": {"sqpoll": 1}})", "engine.sqpoll: expected"},
           Case{R"({"ringxfer_config": 1, "engine": {"rings": 65}})", "rings"},
           Case{R"({"ringxfer_config": 1, "engine": {"chunk_bytes": -1}})",
                "chunk_bytes = -1 is negative"},
           Case{R"({"ringxfer_config": 1, "engine": {"port": 70000}})",
                "port = 70000 is out of range"},
           Case{R"({"ringxfer_config": 1, "engine": {"ring_cpus": [0, -1]}})", "ring_cpus"},
           Case{R"({"ringxfer_config": 2, "engine": {}})", "must be 1"},
           Case{R"({"engine": {}})", "must be 1"},
           Case{R"({"ringxfer_config": 1, "engine": [1]})", "\"engine\" must be an object"},
           Case{"rings = 2", "not a JSON object"},
       }) {
    TempFile f(k.text);
    absl::StatusOr<EngineConfig> c = EngineConfig::load(f.path());
    ASSERT_FALSE(c.ok()) << k.text;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << k.text;
    EXPECT_NE(c.status().message().find(k.says), std::string_view::npos)
        << k.text << " -> " << c.status();
    EXPECT_NE(c.status().message().find(f.path()), std::string_view::npos) << c.status();
  }
  absl::StatusOr<EngineConfig> missing = EngineConfig::load("/nonexistent/ringxfer.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/ringxfer.json"), std::string_view::npos);
}

TEST(ConfigFile, ExplicitFieldsWinOverTheFileWhichWinsOverDefaults) {
  EngineConfig file = tuned();
  EngineConfig mine;
  mine.stripes = 9;  // explicit
  const EngineConfig merged = mine.over(file);
  EXPECT_EQ(merged.stripes, 9);
  EXPECT_EQ(merged.rings, 3);  // from the file
  EXPECT_EQ(merged.socket.send_buffer_bytes, 4 << 20);
  EXPECT_EQ(merged.max_inbound_connections, EngineConfig{}.max_inbound_connections);  // default
}

TEST(ConfigFile, RingxferConfigAppliesToEnginesAndABadFileFailsCreation) {
  EngineConfig file;
  file.rings = 1;
  file.stripes = 3;
  TempFile f(file.to_json());
  setenv("RINGXFER_CONFIG", f.path().c_str(), 1);
  EngineConfig explicit_stripes;
  explicit_stripes.stripes = 5;
  auto e = Engine::create("from-file", explicit_stripes);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ((*e)->config().rings, 1);
  EXPECT_EQ((*e)->config().stripes, 5);
  EXPECT_EQ((*e)->stats().ring_threads, 1u);
  TempFile bad(R"({"ringxfer_config": 1, "engine": {"ringz": 1}})");
  setenv("RINGXFER_CONFIG", bad.path().c_str(), 1);
  auto refused = Engine::create("bad-file", EngineConfig{});
  unsetenv("RINGXFER_CONFIG");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("RINGXFER_CONFIG"), std::string_view::npos);
  EXPECT_NE(refused.status().message().find("engine.ringz"), std::string_view::npos);
}

}  // namespace
}  // namespace ringxfer
