// Compile-time check that memory::GpuApi and memory::gpu_abi match the HIP runtime (AMD)
// the loader resolves with dlsym (src/memory/gpu_runtime.cc). Needs only the HIP headers
// (Debian's libamdhip64-dev puts them in /usr/include/hip); plain g++ will do:
//   g++ -std=c++20 -Wall -Wextra -Werror -Isrc -D__HIP_PLATFORM_AMD__
//       -D__HIP_DISABLE_CPP_FUNCTIONS__ tests/gpu/signature_check_hip.cc
// Nothing is linked or called; the static_asserts are the test, main() only reports.
//
// An entry point matches when it has the same number of parameters and the return type
// and every parameter are ABI-identical after normalization: an enum (4 bytes, 32-bit
// underlying type) may stand for int or unsigned; int, unsigned and size_t stay
// themselves; any object pointer is a void* (stream and event handles are struct
// pointers) but the pointee keeps its constness exactly; a function pointer matches when
// its function type matches by the same rules (hipHostFn_t is void(*)(void*)).

// The AMD platform's declarations (hipcc defines it; g++ needs it said).
#if defined(__HIP_PLATFORM_NVIDIA__) || defined(__HIP_PLATFORM_NVCC__)
#error "checks the AMD HIP runtime: do not define __HIP_PLATFORM_NVIDIA__"
#endif
#ifndef __HIP_PLATFORM_AMD__
#define __HIP_PLATFORM_AMD__ 1
#endif
// Without it hip_runtime_api.h adds C++ template overloads of hipMalloc, hipHostMalloc
// and hipMallocManaged, and &hipMalloc would name an overload set (the header documents
// this macro for taking decltypes of the runtime's functions).
#ifndef __HIP_DISABLE_CPP_FUNCTIONS__
#define __HIP_DISABLE_CPP_FUNCTIONS__ 1
#endif
#include <hip/hip_runtime_api.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

#include "gpu/abi_rules.h"
#include "memory/gpu_runtime.h"

// hipLaunchHostFunc is declared by the HIP 5.2.3 headers (so its signature is checked),
// but Debian's libamdhip64.so.5.2.21153 does not export it (hipStreamAddCallback it
// does): a header check cannot see that. GpuRuntime::open then uses hipStreamAddCallback.
#define RX_HIP_ENTRY_POINTS(X)                          \
  X(get_device_count, hipGetDeviceCount)                \
  X(set_device, hipSetDevice)                           \
  X(get_device, hipGetDevice)                           \
  X(runtime_get_version, hipRuntimeGetVersion)          \
  X(host_alloc, hipHostMalloc)                          \
  X(free_host, hipHostFree)                             \
  X(host_register, hipHostRegister)                     \
  X(host_unregister, hipHostUnregister)                 \
  X(stream_create_with_flags, hipStreamCreateWithFlags) \
  X(stream_destroy, hipStreamDestroy)                   \
  X(stream_synchronize, hipStreamSynchronize)           \
  X(stream_wait_event, hipStreamWaitEvent)              \
  X(event_create_with_flags, hipEventCreateWithFlags)   \
  X(event_destroy, hipEventDestroy)                     \
  X(event_record, hipEventRecord)                       \
  X(event_query, hipEventQuery)                         \
  X(event_synchronize, hipEventSynchronize)             \
  X(memcpy_async, hipMemcpyAsync)                       \
  X(launch_host_func, hipLaunchHostFunc)                \
  X(stream_add_callback, hipStreamAddCallback)          \
  X(pointer_get_attributes, hipPointerGetAttributes)    \
  X(get_error_string, hipGetErrorString)                \
  X(get_last_error, hipGetLastError)                    \
  X(device_malloc, hipMalloc)                           \
  X(device_free, hipFree)                               \
  X(memcpy_sync, hipMemcpy)

#define RX_HIP_CONSTANTS(X)                         \
  X(kSuccess, hipSuccess)                           \
  X(kNotReady, hipErrorNotReady)                    \
  X(kMemcpyHostToDevice, hipMemcpyHostToDevice)     \
  X(kMemcpyDeviceToHost, hipMemcpyDeviceToHost)     \
  X(kMemcpyDeviceToDevice, hipMemcpyDeviceToDevice) \
  X(kHostAllocPortable, hipHostMallocPortable)      \
  X(kHostRegisterPortable, hipHostRegisterPortable) \
  X(kStreamNonBlocking, hipStreamNonBlocking)       \
  X(kEventDisableTiming, hipEventDisableTiming)

#if defined(hipGetDeviceCount) || defined(hipSetDevice) || defined(hipGetDevice) ||                \
    defined(hipRuntimeGetVersion) || defined(hipHostMalloc) || defined(hipHostFree) ||             \
    defined(hipHostRegister) || defined(hipHostUnregister) || defined(hipStreamCreateWithFlags) || \
    defined(hipStreamDestroy) || defined(hipStreamSynchronize) || defined(hipStreamWaitEvent) ||   \
    defined(hipEventCreateWithFlags) || defined(hipEventDestroy) || defined(hipEventRecord) ||     \
    defined(hipEventQuery) || defined(hipEventSynchronize) || defined(hipMemcpyAsync) ||           \
    defined(hipLaunchHostFunc) || defined(hipPointerGetAttributes) ||                              \
    defined(hipGetErrorString) || defined(hipGetLastError) || defined(hipMalloc) ||                \
    defined(hipFree) || defined(hipMemcpy)
#error "an entry point GpuApi resolves by its plain name is a macro in hip_runtime_api.h"
#endif

namespace {

using ringxfer::memory::GpuApi;
using ringxfer::memory::GpuHostFn;
namespace gpu_abi = ringxfer::memory::gpu_abi;

using namespace rx_abi_rules;  // NOLINT: the rules are this check's vocabulary

static_assert(abi_same<hipStream_t, void*>() && abi_same<hipStream_t*, void**>() &&
              !abi_same<hipStream_t, void**>());

#define RX_CHECK_ENTRY(member, real)                                                      \
  static_assert(fn_mismatch<std::remove_pointer_t<decltype(&real)>,                       \
                            std::remove_pointer_t<decltype(GpuApi::member)>>() == kMatch, \
                "GpuApi::" #member " does not match " #real                               \
                " (the value compared is where: -2 arity, -1 return, N parameter N)");
RX_HIP_ENTRY_POINTS(RX_CHECK_ENTRY)
#undef RX_CHECK_ENTRY

#define RX_COUNT(a, b) +1
constexpr int kEntryPoints = 0 RX_HIP_ENTRY_POINTS(RX_COUNT);
constexpr int kConstants = 0 RX_HIP_CONSTANTS(RX_COUNT);
#undef RX_COUNT

// Every GpuApi member is checked above (a member added to GpuApi must be added here).
static_assert(sizeof(GpuApi) == kEntryPoints * sizeof(void (*)()));

// hipHostFn_t is the GpuHostFn launch_host_func passes.
static_assert(std::is_same_v<GpuHostFn, void (*)(void*)>);
static_assert(abi_same<hipHostFn_t, GpuHostFn>());

#define RX_CHECK_CONSTANT(ours, real) \
  static_assert(same_value(gpu_abi::ours, real), "gpu_abi::" #ours " differs from " #real);
RX_HIP_CONSTANTS(RX_CHECK_CONSTANT)
#undef RX_CHECK_CONSTANT

// GpuRuntime::pointer_info hands pointer_get_attributes a buffer of
// kPointerAttributesBytes (aligned to 16) and reads {memory type, device} from its start.
static_assert(sizeof(hipPointerAttribute_t) <= gpu_abi::kPointerAttributesBytes,
              "hipPointerAttribute_t does not fit in gpu_abi::kPointerAttributesBytes");
static_assert(alignof(hipPointerAttribute_t) <= 16);
static_assert(offsetof(hipPointerAttribute_t, memoryType) == 0);
static_assert(is_int32_enum<decltype(hipPointerAttribute_t::memoryType)>());
static_assert(offsetof(hipPointerAttribute_t, device) == 4);
static_assert(std::is_same_v<decltype(hipPointerAttribute_t::device), int>);

// The memory types of ROCm 5 (ROCm 6 renumbered them: GpuRuntime::decode_memory_type
// tells them apart by the runtime's version).
#if HIP_VERSION_MAJOR < 6
static_assert(hipMemoryTypeHost == 0);
static_assert(hipMemoryTypeDevice == 1);
#endif

}  // namespace

int main() {
  std::printf("HIP %d.%d headers: %d entry points and %d constants match ringxfer's GpuApi\n",
              HIP_VERSION_MAJOR, HIP_VERSION_MINOR, kEntryPoints, kConstants);
  return 0;
}
