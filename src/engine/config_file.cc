// EngineConfig's config files (README, "Config files"): JSON, versioned, written by
// ringxfer-tune and read by EngineConfig::load, RINGXFER_CONFIG and the tools. One table
// of fields serves loading, writing and merging, so the three cannot disagree.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>
#include "absl/strings/str_format.h"
#include "ringxfer/config.h"

namespace ringxfer {
namespace {

using Json = nlohmann::json;

// One field of the "engine" object: its name in the file, how to read it into a config
// (an error names the field), how to write it, and whether two configs agree on it.
struct Field {
  std::string name;
  std::function<absl::Status(const Json&, EngineConfig&)> read;
  std::function<Json(const EngineConfig&)> write;
  std::function<bool(const EngineConfig&, const EngineConfig&)> same;
};

absl::Status wrong_type(const std::string& name, const char* want, const Json& v) {
  return absl::InvalidArgumentError(
      absl::StrFormat("config field engine.%s: expected %s, got %s", name, want, v.dump()));
}

// A field's writing and comparing, through `get` (on copies: configs are small and
// this is no hot path), with `to_json` making the file's value.
template <typename T>
void set_access(Field& f, std::function<T&(EngineConfig&)> get,
                std::function<Json(const T&)> to_json) {
  f.write = [get, to_json](const EngineConfig& c) {
    EngineConfig copy = c;
    return to_json(get(copy));
  };
  f.same = [get](const EngineConfig& a, const EngineConfig& b) {
    EngineConfig x = a, y = b;
    return get(x) == get(y);
  };
}

// An integer field of type T at `get(config)`, with its range checked for T (the
// engine's own ranges are checked by validate()).
template <typename T>
Field integer(std::string name, std::function<T&(EngineConfig&)> get) {
  Field f;
  f.name = name;
  f.read = [name, get](const Json& v, EngineConfig& c) -> absl::Status {
    if (!v.is_number_integer()) {
      return wrong_type(name, "an integer", v);
    }
    const bool negative = v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0;
    if (std::is_unsigned_v<T> && negative) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config field engine.%s = %s is negative", name, v.dump()));
    }
    if (negative ? v.get<int64_t>() < static_cast<int64_t>(std::numeric_limits<T>::min())
                 : v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config field engine.%s = %s is out of range", name, v.dump()));
    }
    get(c) = negative ? static_cast<T>(v.get<int64_t>()) : static_cast<T>(v.get<uint64_t>());
    return absl::OkStatus();
  };
  set_access<T>(f, get, [](const T& v) { return Json(v); });
  return f;
}

// A duration field, in the unit of Duration (its name in the file says which).
template <typename Duration>
Field duration(std::string name, std::function<Duration&(EngineConfig&)> get) {
  Field f;
  f.name = name;
  f.read = [name, get](const Json& v, EngineConfig& c) -> absl::Status {
    if (!v.is_number_integer()) {
      return wrong_type(name, "an integer", v);
    }
    if (!v.is_number_unsigned() && v.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config field engine.%s = %s is negative", name, v.dump()));
    }
    if (v.get<uint64_t>() > (uint64_t{1} << 40)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config field engine.%s = %s is out of range", name, v.dump()));
    }
    get(c) = Duration(v.get<int64_t>());
    return absl::OkStatus();
  };
  set_access<Duration>(f, get, [](const Duration& v) { return Json(v.count()); });
  return f;
}

Field boolean(std::string name, std::function<bool&(EngineConfig&)> get) {
  using T = bool;
  Field f;
  f.name = name;
  f.read = [name, get](const Json& v, EngineConfig& c) -> absl::Status {
    if (!v.is_boolean()) {
      return wrong_type(name, "true or false", v);
    }
    get(c) = v.get<bool>();
    return absl::OkStatus();
  };
  set_access<T>(f, get, [](const T& v) { return Json(v); });
  return f;
}

Field text(std::string name, std::function<std::string&(EngineConfig&)> get) {
  using T = std::string;
  Field f;
  f.name = name;
  f.read = [name, get](const Json& v, EngineConfig& c) -> absl::Status {
    if (!v.is_string()) {
      return wrong_type(name, "a string", v);
    }
    get(c) = v.get<std::string>();
    return absl::OkStatus();
  };
  set_access<T>(f, get, [](const T& v) { return Json(v); });
  return f;
}

Field cpus(std::string name) {
  Field f;
  f.name = name;
  f.read = [name](const Json& v, EngineConfig& c) -> absl::Status {
    if (!v.is_array()) {
      return wrong_type(name, "an array of CPU numbers", v);
    }
    std::vector<int> out;
    for (const Json& e : v) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > 65535) {
        return wrong_type(name, "an array of CPU numbers (0..65535)", v);
      }
      out.push_back(static_cast<int>(e.get<int64_t>()));
    }
    c.ring_cpus = std::move(out);
    return absl::OkStatus();
  };
  f.write = [](const EngineConfig& c) { return Json(c.ring_cpus); };
  f.same = [](const EngineConfig& a, const EngineConfig& b) { return a.ring_cpus == b.ring_cpus; };
  return f;
}

#define RX_INT(T, field) integer<T>(#field, [](EngineConfig& c) -> T& { return c.field; })
#define RX_SOCK(T, field) \
  integer<T>("socket." #field, [](EngineConfig& c) -> T& { return c.socket.field; })

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      text("host", [](EngineConfig& c) -> std::string& { return c.host; }),
      text("advertise_host", [](EngineConfig& c) -> std::string& { return c.advertise_host; }),
      RX_INT(uint16_t, port),
      RX_INT(int, rings),
      RX_INT(int, stripes),
      duration<std::chrono::milliseconds>(
          "timeout_ms", [](EngineConfig& c) -> std::chrono::milliseconds& { return c.timeout; }),
      RX_INT(uint64_t, stripe_threshold_bytes),
      RX_INT(uint64_t, chunk_bytes),
      RX_INT(uint64_t, zerocopy_threshold_bytes),
      duration<std::chrono::microseconds>(
          "wait_spin_us",
          [](EngineConfig& c) -> std::chrono::microseconds& { return c.wait_spin; }),
      RX_INT(uint64_t, staging_slab_bytes),
      RX_INT(int, staging_slabs),
      RX_INT(unsigned, ring_entries),
      boolean("sqpoll", [](EngineConfig& c) -> bool& { return c.sqpoll; }),
      cpus("ring_cpus"),
      RX_SOCK(int, send_buffer_bytes),
      RX_SOCK(int, recv_buffer_bytes),
      boolean("socket.keepalive", [](EngineConfig& c) -> bool& { return c.socket.keepalive; }),
      RX_SOCK(int, keepalive_idle_s),
      RX_SOCK(int, keepalive_interval_s),
      RX_SOCK(int, keepalive_count),
      boolean("socket.nodelay", [](EngineConfig& c) -> bool& { return c.socket.nodelay; }),
      text("auth_key_file", [](EngineConfig& c) -> std::string& { return c.auth_key_file; }),
      RX_INT(int, max_inbound_connections),
      RX_INT(int, max_handshaking_connections),
      duration<std::chrono::milliseconds>(
          "handshake_timeout_ms",
          [](EngineConfig& c) -> std::chrono::milliseconds& { return c.handshake_timeout; }),
      duration<std::chrono::milliseconds>(
          "idle_timeout_ms",
          [](EngineConfig& c) -> std::chrono::milliseconds& { return c.idle_timeout; }),
      RX_INT(int, max_inbound_statuses),
      RX_INT(int, max_split_transfers),
      RX_INT(int, max_queued_transfers),
  };
  return table;
}

#undef RX_INT
#undef RX_SOCK

// The top-level keys a config file may have besides "engine".
constexpr const char* kOtherKeys[] = {"ringxfer_config", "size_classes", "measured",
                                      "fingerprint",     "comment",      "chosen_by"};

}  // namespace

absl::StatusOr<EngineConfig> EngineConfig::parse(std::string_view text, std::string_view origin) {
  Json doc = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("config %s: not a JSON object (a ringxfer config file)", origin));
  }
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    bool known = it.key() == "engine";
    for (const char* k : kOtherKeys) {
      known = known || it.key() == k;
    }
    if (!known) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config %s: unknown field \"%s\"", origin, it.key()));
    }
  }
  const auto version = doc.find("ringxfer_config");
  if (version == doc.end() || !version->is_number_integer() ||
      version->get<int64_t>() != kConfigFileVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("config %s: \"ringxfer_config\" must be %d (the file format's version)",
                        origin, kConfigFileVersion));
  }
  EngineConfig c;
  const auto engine = doc.find("engine");
  if (engine == doc.end()) {
    return c;
  }
  if (!engine->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("config %s: \"engine\" must be an object", origin));
  }
  // Flatten "socket": {...} into "socket.<name>".
  std::vector<std::pair<std::string, const Json*>> given;
  for (auto it = engine->begin(); it != engine->end(); ++it) {
    if (it.key() == "socket") {
      if (!it->is_object()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("config %s: engine.socket must be an object", origin));
      }
      for (auto s = it->begin(); s != it->end(); ++s) {
        given.emplace_back("socket." + s.key(), &*s);
      }
    } else {
      given.emplace_back(it.key(), &*it);
    }
  }
  for (const auto& [name, value] : given) {
    const Field* f = nullptr;
    for (const Field& candidate : fields()) {
      if (candidate.name == name) {
        f = &candidate;
      }
    }
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config %s: unknown field engine.%s", origin, name));
    }
    if (absl::Status st = f->read(*value, c); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat("config %s: %s", origin, st.message()));
    }
  }
  if (absl::Status st = c.validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("config %s: %s", origin, st.message()));
  }
  return c;
}

absl::StatusOr<EngineConfig> EngineConfig::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    return absl::Status(
        err == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kPermissionDenied,
        absl::StrFormat("config %s: cannot read it: %s", path, std::strerror(err)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrFormat("config %s: read error", path));
  }
  return parse(text.str(), path);
}

std::string EngineConfig::to_json() const {
  Json engine = Json::object();
  for (const Field& f : fields()) {
    const size_t dot = f.name.find('.');
    if (dot == std::string::npos) {
      engine[f.name] = f.write(*this);
    } else {
      engine[f.name.substr(0, dot)][f.name.substr(dot + 1)] = f.write(*this);
    }
  }
  Json doc = {{"ringxfer_config", kConfigFileVersion}, {"engine", engine}};
  return doc.dump(2) + "\n";
}

EngineConfig EngineConfig::over(const EngineConfig& file) const {
  static const EngineConfig defaults;
  EngineConfig out = *this;
  for (const Field& f : fields()) {
    if (f.same(*this, defaults)) {
      // Not set here (still the default): the file's value. Json round trip copies it.
      (void)f.read(f.write(file), out);
    }
  }
  return out;
}

}  // namespace ringxfer
