// memory::GpuRuntime: the seam between ringxfer and a GPU runtime (HIP or CUDA). The
// entry points the staging path needs are declared here with the project's own types
// and resolved at run time with dlopen/dlsym, so nothing GPU is linked at build time:
// one build serves AMD hosts, NVIDIA hosts and hosts with neither. A runtime already
// loaded by the process is used first (torch loads its own), then the library named
// by RINGXFER_GPU_RUNTIME, then the standard names (see kHipLibraries, kCudaLibraries).
// The HIP and CUDA entry points share their ABI: every argument is an int, a size, a
// pointer or an opaque handle, and the constants used here have the same values in
// both (tests/gpu/signature_check_{cuda,hip}.cc check them against the real headers where
// they are installed). Knows nothing of rings, sockets or transfers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ringxfer::memory {

// Opaque runtime handles (cudaStream_t / hipStream_t, cudaEvent_t / hipEvent_t).
using GpuStream = void*;
using GpuEvent = void*;
// cudaError_t / hipError_t: 0 is success in both.
using GpuError = int;
// The host function a stream runs once the work queued before it finished
// (cudaHostFn_t / hipHostFn_t). It must not call the runtime.
using GpuHostFn = void (*)(void* user);
// The older form (cudaStreamCallback_t / hipStreamCallback_t): also told the stream's
// status. Debian's HIP 5.2 library declares hipLaunchHostFunc but does not export it.
using GpuStreamCallback = void (*)(GpuStream stream, GpuError status, void* user);

// Values shared by HIP and CUDA (checked against both headers).
namespace gpu_abi {
inline constexpr GpuError kSuccess = 0;
inline constexpr GpuError kNotReady = 600;  // cudaErrorNotReady, hipErrorNotReady
inline constexpr int kMemcpyHostToDevice = 1;
inline constexpr int kMemcpyDeviceToHost = 2;
inline constexpr int kMemcpyDeviceToDevice = 3;
inline constexpr unsigned kHostAllocPortable = 1;  // cudaHostAllocPortable, hipHostMallocPortable
inline constexpr unsigned kHostRegisterPortable =
    1;  // cudaHostRegisterPortable, hipHostRegisterPortable
inline constexpr unsigned kStreamNonBlocking = 1;   // cudaStreamNonBlocking, hipStreamNonBlocking
inline constexpr unsigned kEventDisableTiming = 2;  // cudaEventDisableTiming, hipEventDisableTiming
// The pointer-attribute structures of both begin with {memory type (an enum), device}.
// Large enough for cudaPointerAttributes and both hipPointerAttribute_t layouts.
inline constexpr size_t kPointerAttributesBytes = 128;  // CUDA 13's is 88 bytes
}  // namespace gpu_abi

// The runtime's entry points, as resolved. Every one is set once open() succeeded,
// except the optional ones: launch_host_func or stream_add_callback (at least one), and
// the three tests and benchmarks use to make device memory.
struct GpuApi {
  GpuError (*get_device_count)(int* count) = nullptr;
  GpuError (*set_device)(int device) = nullptr;
  GpuError (*get_device)(int* device) = nullptr;
  GpuError (*runtime_get_version)(int* version) = nullptr;
  GpuError (*host_alloc)(void** ptr, size_t bytes, unsigned flags) = nullptr;
  GpuError (*free_host)(void* ptr) = nullptr;
  GpuError (*host_register)(void* ptr, size_t bytes, unsigned flags) = nullptr;
  GpuError (*host_unregister)(void* ptr) = nullptr;
  GpuError (*stream_create_with_flags)(GpuStream* stream, unsigned flags) = nullptr;
  GpuError (*stream_destroy)(GpuStream stream) = nullptr;
  GpuError (*stream_synchronize)(GpuStream stream) = nullptr;
  GpuError (*stream_wait_event)(GpuStream stream, GpuEvent event, unsigned flags) = nullptr;
  GpuError (*event_create_with_flags)(GpuEvent* event, unsigned flags) = nullptr;
  GpuError (*event_destroy)(GpuEvent event) = nullptr;
  GpuError (*event_record)(GpuEvent event, GpuStream stream) = nullptr;
  GpuError (*event_query)(GpuEvent event) = nullptr;
  GpuError (*event_synchronize)(GpuEvent event) = nullptr;
  GpuError (*memcpy_async)(void* dst, const void* src, size_t bytes, int kind,
                           GpuStream stream) = nullptr;
  GpuError (*launch_host_func)(GpuStream stream, GpuHostFn fn, void* user) = nullptr;
  GpuError (*stream_add_callback)(GpuStream stream, GpuStreamCallback fn, void* user,
                                  unsigned flags) = nullptr;
  GpuError (*pointer_get_attributes)(void* attributes, const void* ptr) = nullptr;
  const char* (*get_error_string)(GpuError error) = nullptr;
  GpuError (*get_last_error)() = nullptr;
  // Optional.
  GpuError (*device_malloc)(void** ptr, size_t bytes) = nullptr;
  GpuError (*device_free)(void* ptr) = nullptr;
  GpuError (*memcpy_sync)(void* dst, const void* src, size_t bytes, int kind) = nullptr;
};

enum class GpuVendor : uint8_t { kHip, kCuda };

// Where a pointer lives, as the runtime tells.
enum class PointerKind : uint8_t {
  kUnknown,  // not known to the runtime (pageable host memory, or not decodable)
  kHost,     // pinned or registered host memory
  kDevice,   // device memory (the CPU cannot touch it)
  kManaged,  // managed (unified) memory
};

struct PointerInfo {
  PointerKind kind = PointerKind::kUnknown;
  int device = -1;
};

// The library names tried, in order, after a loaded runtime and RINGXFER_GPU_RUNTIME.
inline constexpr const char* kHipLibraries[] = {"libamdhip64.so.7", "libamdhip64.so.6",
                                                "libamdhip64.so.5", "libamdhip64.so"};
inline constexpr const char* kCudaLibraries[] = {"libcudart.so.13", "libcudart.so.12",
                                                 "libcudart.so"};
inline constexpr char kRuntimeEnv[] = "RINGXFER_GPU_RUNTIME";

class GpuRuntime {
 public:
  // Loads a runtime from `path` (a file name or path given to dlopen); its vendor is
  // told by the symbols it exports (hipGetDeviceCount, else cudaGetDeviceCount), or
  // forced by `vendor`. kNotFound when it cannot be opened or exports neither;
  // kFailedPrecondition when an entry point is missing (the message names it).
  static absl::StatusOr<std::shared_ptr<GpuRuntime>> open(
      const std::string& path, std::optional<GpuVendor> vendor = std::nullopt);
  // The search: a runtime the process has loaded already, RINGXFER_GPU_RUNTIME, then
  // kHipLibraries and kCudaLibraries. kNotFound names everything tried and the
  // variable. Thread-safe; the first success is kept for the process (a runtime is
  // never unloaded), a failure is retried at the next call.
  static absl::StatusOr<std::shared_ptr<GpuRuntime>> find();
  // The runtime find() settled on, or null (nothing is loaded by this call).
  static std::shared_ptr<GpuRuntime> loaded();

  ~GpuRuntime();
  GpuRuntime(const GpuRuntime&) = delete;
  GpuRuntime& operator=(const GpuRuntime&) = delete;

  const GpuApi& api() const noexcept { return api_; }
  GpuVendor vendor() const noexcept { return vendor_; }
  const std::string& path() const noexcept { return path_; }
  int version() const noexcept { return version_; }  // runtime_get_version's value
  std::string describe() const;  // "HIP 5.2.x from /path" or "CUDA 13.0 from /path"

  // `what` failed with `error`: a kInternal status naming the call and the runtime's text.
  absl::Status error(const char* what, GpuError error) const;
  // What the runtime says about `ptr` (never an error: unknown when it cannot tell).
  // HIP answers hipErrorInvalidValue for pageable host memory; that error is cleared.
  PointerInfo pointer_info(const void* ptr) const;
  // Decodes a pointer-attribute memory type (for tests: HIP's values changed in ROCm 6).
  static PointerKind decode_memory_type(GpuVendor vendor, int version, int type);

 private:
  GpuRuntime() = default;
  void* handle_ = nullptr;
  GpuApi api_;
  GpuVendor vendor_ = GpuVendor::kCuda;
  std::string path_;
  int version_ = 0;
};

}  // namespace ringxfer::memory
