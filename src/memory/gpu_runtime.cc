#include "memory/gpu_runtime.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ringxfer::memory {
namespace {

// The entry points by member, with the vendor's name; a member marked optional may be
// missing.
struct Entry {
  const char* hip;
  const char* cuda;
  size_t offset;  // of the member in GpuApi
  bool optional = false;
};

#define RX_GPU_ENTRY(member, hip, cuda) \
  Entry { hip, cuda, offsetof(GpuApi, member) }
#define RX_GPU_OPTIONAL(member, hip, cuda) \
  Entry { hip, cuda, offsetof(GpuApi, member), true }

constexpr Entry kEntries[] = {
    RX_GPU_ENTRY(get_device_count, "hipGetDeviceCount", "cudaGetDeviceCount"),
    RX_GPU_ENTRY(set_device, "hipSetDevice", "cudaSetDevice"),
    RX_GPU_ENTRY(get_device, "hipGetDevice", "cudaGetDevice"),
    RX_GPU_ENTRY(runtime_get_version, "hipRuntimeGetVersion", "cudaRuntimeGetVersion"),
    RX_GPU_ENTRY(host_alloc, "hipHostMalloc", "cudaHostAlloc"),
    RX_GPU_ENTRY(free_host, "hipHostFree", "cudaFreeHost"),
    RX_GPU_ENTRY(host_register, "hipHostRegister", "cudaHostRegister"),
    RX_GPU_ENTRY(host_unregister, "hipHostUnregister", "cudaHostUnregister"),
    RX_GPU_ENTRY(stream_create_with_flags, "hipStreamCreateWithFlags", "cudaStreamCreateWithFlags"),
    RX_GPU_ENTRY(stream_destroy, "hipStreamDestroy", "cudaStreamDestroy"),
    RX_GPU_ENTRY(stream_synchronize, "hipStreamSynchronize", "cudaStreamSynchronize"),
    RX_GPU_ENTRY(stream_wait_event, "hipStreamWaitEvent", "cudaStreamWaitEvent"),
    RX_GPU_ENTRY(event_create_with_flags, "hipEventCreateWithFlags", "cudaEventCreateWithFlags"),
    RX_GPU_ENTRY(event_destroy, "hipEventDestroy", "cudaEventDestroy"),
    RX_GPU_ENTRY(event_record, "hipEventRecord", "cudaEventRecord"),
    RX_GPU_ENTRY(event_query, "hipEventQuery", "cudaEventQuery"),
    RX_GPU_ENTRY(event_synchronize, "hipEventSynchronize", "cudaEventSynchronize"),
    RX_GPU_ENTRY(memcpy_async, "hipMemcpyAsync", "cudaMemcpyAsync"),
    RX_GPU_OPTIONAL(launch_host_func, "hipLaunchHostFunc", "cudaLaunchHostFunc"),
    RX_GPU_OPTIONAL(stream_add_callback, "hipStreamAddCallback", "cudaStreamAddCallback"),
    RX_GPU_ENTRY(pointer_get_attributes, "hipPointerGetAttributes", "cudaPointerGetAttributes"),
    RX_GPU_ENTRY(get_error_string, "hipGetErrorString", "cudaGetErrorString"),
    RX_GPU_ENTRY(get_last_error, "hipGetLastError", "cudaGetLastError"),
    RX_GPU_OPTIONAL(device_malloc, "hipMalloc", "cudaMalloc"),
    RX_GPU_OPTIONAL(device_free, "hipFree", "cudaFree"),
    RX_GPU_OPTIONAL(memcpy_sync, "hipMemcpy", "cudaMemcpy"),
};

#undef RX_GPU_ENTRY
#undef RX_GPU_OPTIONAL

// A loaded library whose file name says it is a GPU runtime (torch, for one, loads its
// own libcudart or libamdhip64, possibly under a hashed name in its wheel).
std::string loaded_runtime() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        const std::string_view name = info->dlpi_name != nullptr ? info->dlpi_name : "";
        const size_t slash = name.rfind('/');
        const std::string_view file =
            slash == std::string_view::npos ? name : name.substr(slash + 1);
        if (file.starts_with("libamdhip64") || file.starts_with("libcudart")) {
          *static_cast<std::string*>(data) = std::string(name);
          return 1;
        }
        return 0;
      },
      &found);
  return found;
}

std::mutex g_mu;
std::shared_ptr<GpuRuntime> g_runtime;  // guarded by g_mu; kept for the process

}  // namespace

absl::StatusOr<std::shared_ptr<GpuRuntime>> GpuRuntime::open(const std::string& path,
                                                             std::optional<GpuVendor> vendor) {
  dlerror();
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    return absl::NotFoundError(
        absl::StrFormat("cannot load GPU runtime %s: %s", path, e != nullptr ? e : "?"));
  }
  std::shared_ptr<GpuRuntime> rt(new GpuRuntime());
  rt->handle_ = h;
  rt->path_ = path;
  const bool has_hip = dlsym(h, "hipGetDeviceCount") != nullptr;
  const bool has_cuda = dlsym(h, "cudaGetDeviceCount") != nullptr;
  if (vendor.has_value() && (*vendor == GpuVendor::kHip ? has_hip : has_cuda)) {
    rt->vendor_ = *vendor;
  } else if (!vendor.has_value() && has_hip) {
    rt->vendor_ = GpuVendor::kHip;
  } else if (!vendor.has_value() && has_cuda) {
    rt->vendor_ = GpuVendor::kCuda;
  } else {
    return absl::NotFoundError(absl::StrFormat(
        "%s is not a GPU runtime: it exports neither hipGetDeviceCount nor cudaGetDeviceCount",
        path));
  }
  const bool hip = rt->vendor_ == GpuVendor::kHip;
  for (const Entry& e : kEntries) {
    const char* name = hip ? e.hip : e.cuda;
    void* sym = dlsym(h, name);
    if (sym == nullptr && !e.optional) {
      return absl::FailedPreconditionError(
          absl::StrFormat("GPU runtime %s lacks %s, which ringxfer needs", path, name));
    }
    // Every member is a function pointer of the size of a data pointer (POSIX dlsym).
    std::memcpy(reinterpret_cast<char*>(&rt->api_) + e.offset, &sym, sizeof(sym));
  }
  if (rt->api_.launch_host_func == nullptr && rt->api_.stream_add_callback == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("GPU runtime %s lacks both %s and %s, one of which ringxfer needs", path,
                        hip ? "hipLaunchHostFunc" : "cudaLaunchHostFunc",
                        hip ? "hipStreamAddCallback" : "cudaStreamAddCallback"));
  }
  int version = 0;
  if (rt->api_.runtime_get_version(&version) == gpu_abi::kSuccess) {
    rt->version_ = version;
  }
  return rt;
}

absl::StatusOr<std::shared_ptr<GpuRuntime>> GpuRuntime::find() {
#ifdef RINGXFER_GPU_DISABLED
  return absl::UnimplementedError(
      "this ringxfer was built without GPU support (meson -Dgpu=disabled)");
#endif
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_runtime) {
    return g_runtime;
  }
  std::vector<std::string> tried;
  std::vector<std::string> candidates;
  const std::string loaded = loaded_runtime();
  if (!loaded.empty()) {
    candidates.push_back(loaded);
  }
  if (const char* env = std::getenv(kRuntimeEnv); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  }
  for (const char* n : kHipLibraries) {
    candidates.emplace_back(n);
  }
  for (const char* n : kCudaLibraries) {
    candidates.emplace_back(n);
  }
  for (const std::string& c : candidates) {
    absl::StatusOr<std::shared_ptr<GpuRuntime>> rt = open(c);
    if (rt.ok()) {
      g_runtime = *rt;
      return g_runtime;
    }
    tried.push_back(std::string(rt.status().message()));
  }
  return absl::NotFoundError(absl::StrFormat(
      "no GPU runtime found (set %s=/path/to/libamdhip64.so or libcudart.so to name one); "
      "tried: %s",
      kRuntimeEnv, absl::StrJoin(tried, "; ")));
}

std::shared_ptr<GpuRuntime> GpuRuntime::loaded() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_runtime;
}

GpuRuntime::~GpuRuntime() {
  // A runtime is never unloaded (its own atexit handlers and threads outlive us); the
  // handle's reference is simply left to the process.
}

std::string GpuRuntime::describe() const {
  if (vendor_ == GpuVendor::kHip) {
    // HIP_VERSION: major * 10'000'000 + minor * 100'000 + patch.
    return absl::StrFormat("HIP %d.%d.%d from %s", version_ / 10'000'000, version_ / 100'000 % 100,
                           version_ % 100'000, path_);
  }
  // CUDART_VERSION: major * 1000 + minor * 10.
  return absl::StrFormat("CUDA %d.%d from %s", version_ / 1000, version_ % 1000 / 10, path_);
}

absl::Status GpuRuntime::error(const char* what, GpuError error) const {
  const char* text = api_.get_error_string != nullptr ? api_.get_error_string(error) : nullptr;
  return absl::InternalError(absl::StrFormat("%s failed: %s (%s error %d)", what,
                                             text != nullptr ? text : "?",
                                             vendor_ == GpuVendor::kHip ? "HIP" : "CUDA", error));
}

PointerKind GpuRuntime::decode_memory_type(GpuVendor vendor, int version, int type) {
  if (vendor == GpuVendor::kHip && version < 60'000'000) {
    // ROCm 5's hipMemoryType: Host 0, Device 1, Array 2, Unified 3, Managed 4.
    switch (type) {
      case 0:
        return PointerKind::kHost;
      case 1:
        return PointerKind::kDevice;
      case 3:
      case 4:
        return PointerKind::kManaged;
      default:
        return PointerKind::kUnknown;
    }
  }
  // CUDA and ROCm 6: Unregistered 0, Host 1, Device 2, Managed 3 (HIP 6: Array 10,
  // Unified 11).
  switch (type) {
    case 1:
      return PointerKind::kHost;
    case 2:
      return PointerKind::kDevice;
    case 3:
    case 11:
      return PointerKind::kManaged;
    default:
      return PointerKind::kUnknown;
  }
}

PointerInfo GpuRuntime::pointer_info(const void* ptr) const {
  alignas(16) unsigned char attr[gpu_abi::kPointerAttributesBytes] = {};
  const GpuError e = api_.pointer_get_attributes(attr, ptr);
  if (e != gpu_abi::kSuccess) {
    // HIP (5 and 6) fails for pageable host memory instead of saying "unregistered";
    // the error would otherwise be returned by the next get-last-error.
    api_.get_last_error();
    return PointerInfo{};
  }
  int type = 0;
  int device = -1;
  std::memcpy(&type, attr, sizeof(type));
  std::memcpy(&device, attr + sizeof(int), sizeof(device));
  PointerInfo info;
  info.kind = decode_memory_type(vendor_, version_, type);
  info.device = info.kind == PointerKind::kUnknown ? -1 : device;
  return info;
}

}  // namespace ringxfer::memory
