// Compile-time check that memory::GpuApi and memory::gpu_abi match the CUDA runtime the
// loader resolves with dlsym (src/memory/gpu_runtime.cc). Needs only the CUDA headers:
//   g++ -std=c++20 -Wall -Wextra -Werror -Isrc -I/usr/local/cuda/include
//       tests/gpu/signature_check_cuda.cc
// Nothing is linked or called; the static_asserts are the test, main() only reports.
//
// An entry point matches when it has the same number of parameters and the return type
// and every parameter are ABI-identical after normalization: an enum (4 bytes, 32-bit
// underlying type) may stand for int or unsigned; int, unsigned and size_t stay
// themselves; any object pointer is a void* (stream and event handles are struct
// pointers) but the pointee keeps its constness exactly; a function pointer matches when
// its function type matches by the same rules (cudaHostFn_t is void(*)(void*)).

// The loader asks dlsym for the plain names (cudaMemcpyAsync, not cudaMemcpyAsync_ptsz).
// With per-thread default streams cuda_runtime_api.h turns cudaMemcpy, cudaMemcpyAsync,
// cudaStreamSynchronize, cudaStreamWaitEvent, cudaEventRecord and cudaLaunchHostFunc into
// macros for their _ptds/_ptsz variants and declares no plain function, so that mode is
// switched off here; the #error below catches any other macro standing for a checked name.
#undef CUDA_API_PER_THREAD_DEFAULT_STREAM
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>

#include "gpu/abi_rules.h"
#include "memory/gpu_runtime.h"

#define RX_CUDA_ENTRY_POINTS(X)                          \
  X(get_device_count, cudaGetDeviceCount)                \
  X(set_device, cudaSetDevice)                           \
  X(get_device, cudaGetDevice)                           \
  X(runtime_get_version, cudaRuntimeGetVersion)          \
  X(host_alloc, cudaHostAlloc)                           \
  X(free_host, cudaFreeHost)                             \
  X(host_register, cudaHostRegister)                     \
  X(host_unregister, cudaHostUnregister)                 \
  X(stream_create_with_flags, cudaStreamCreateWithFlags) \
  X(stream_destroy, cudaStreamDestroy)                   \
  X(stream_synchronize, cudaStreamSynchronize)           \
  X(stream_wait_event, cudaStreamWaitEvent)              \
  X(event_create_with_flags, cudaEventCreateWithFlags)   \
  X(event_destroy, cudaEventDestroy)                     \
  X(event_record, cudaEventRecord)                       \
  X(event_query, cudaEventQuery)                         \
  X(event_synchronize, cudaEventSynchronize)             \
  X(memcpy_async, cudaMemcpyAsync)                       \
  X(launch_host_func, cudaLaunchHostFunc)                \
  X(stream_add_callback, cudaStreamAddCallback)          \
  X(pointer_get_attributes, cudaPointerGetAttributes)    \
  X(get_error_string, cudaGetErrorString)                \
  X(get_last_error, cudaGetLastError)                    \
  X(device_malloc, cudaMalloc)                           \
  X(device_free, cudaFree)                               \
  X(memcpy_sync, cudaMemcpy)

#define RX_CUDA_CONSTANTS(X)                         \
  X(kSuccess, cudaSuccess)                           \
  X(kNotReady, cudaErrorNotReady)                    \
  X(kMemcpyHostToDevice, cudaMemcpyHostToDevice)     \
  X(kMemcpyDeviceToHost, cudaMemcpyDeviceToHost)     \
  X(kMemcpyDeviceToDevice, cudaMemcpyDeviceToDevice) \
  X(kHostAllocPortable, cudaHostAllocPortable)       \
  X(kHostRegisterPortable, cudaHostRegisterPortable) \
  X(kStreamNonBlocking, cudaStreamNonBlocking)       \
  X(kEventDisableTiming, cudaEventDisableTiming)

#if defined(cudaGetDeviceCount) || defined(cudaSetDevice) || defined(cudaGetDevice) ||            \
    defined(cudaRuntimeGetVersion) || defined(cudaHostAlloc) || defined(cudaFreeHost) ||          \
    defined(cudaHostRegister) || defined(cudaHostUnregister) ||                                   \
    defined(cudaStreamCreateWithFlags) || defined(cudaStreamDestroy) ||                           \
    defined(cudaStreamSynchronize) || defined(cudaStreamWaitEvent) ||                             \
    defined(cudaEventCreateWithFlags) || defined(cudaEventDestroy) || defined(cudaEventRecord) || \
    defined(cudaEventQuery) || defined(cudaEventSynchronize) || defined(cudaMemcpyAsync) ||       \
    defined(cudaLaunchHostFunc) || defined(cudaPointerGetAttributes) ||                           \
    defined(cudaGetErrorString) || defined(cudaGetLastError) || defined(cudaMalloc) ||            \
    defined(cudaFree) || defined(cudaMemcpy)
#error "an entry point GpuApi resolves by its plain name is a macro in cuda_runtime_api.h"
#endif

namespace {

using ringxfer::memory::GpuApi;
using ringxfer::memory::GpuHostFn;
namespace gpu_abi = ringxfer::memory::gpu_abi;

using namespace rx_abi_rules;  // NOLINT: the rules are this check's vocabulary

static_assert(abi_same<cudaStream_t, void*>() && abi_same<cudaStream_t*, void**>() &&
              !abi_same<cudaStream_t, void**>());

#define RX_CHECK_ENTRY(member, real)                                                      \
  static_assert(fn_mismatch<std::remove_pointer_t<decltype(&real)>,                       \
                            std::remove_pointer_t<decltype(GpuApi::member)>>() == kMatch, \
                "GpuApi::" #member " does not match " #real                               \
                " (the value compared is where: -2 arity, -1 return, N parameter N)");
RX_CUDA_ENTRY_POINTS(RX_CHECK_ENTRY)
#undef RX_CHECK_ENTRY

#define RX_COUNT(a, b) +1
constexpr int kEntryPoints = 0 RX_CUDA_ENTRY_POINTS(RX_COUNT);
constexpr int kConstants = 0 RX_CUDA_CONSTANTS(RX_COUNT);
#undef RX_COUNT

// Every GpuApi member is checked above (a member added to GpuApi must be added here).
static_assert(sizeof(GpuApi) == kEntryPoints * sizeof(void (*)()));

// cudaHostFn_t is the GpuHostFn launch_host_func passes.
static_assert(std::is_same_v<GpuHostFn, void (*)(void*)>);
static_assert(abi_same<cudaHostFn_t, GpuHostFn>());

#define RX_CHECK_CONSTANT(ours, real) \
  static_assert(same_value(gpu_abi::ours, real), "gpu_abi::" #ours " differs from " #real);
RX_CUDA_CONSTANTS(RX_CHECK_CONSTANT)
#undef RX_CHECK_CONSTANT

// GpuRuntime::pointer_info hands pointer_get_attributes a buffer of
// kPointerAttributesBytes (aligned to 16) and reads {memory type, device} from its start.
static_assert(sizeof(cudaPointerAttributes) <= gpu_abi::kPointerAttributesBytes,
              "cudaPointerAttributes does not fit in gpu_abi::kPointerAttributesBytes");
static_assert(alignof(cudaPointerAttributes) <= 16);
static_assert(offsetof(cudaPointerAttributes, type) == 0);
static_assert(is_int32_enum<decltype(cudaPointerAttributes::type)>());
static_assert(offsetof(cudaPointerAttributes, device) == 4);
static_assert(std::is_same_v<decltype(cudaPointerAttributes::device), int>);

// The memory types GpuRuntime::decode_memory_type expects from CUDA.
static_assert(cudaMemoryTypeUnregistered == 0);
static_assert(cudaMemoryTypeHost == 1);
static_assert(cudaMemoryTypeDevice == 2);
static_assert(cudaMemoryTypeManaged == 3);

}  // namespace

int main() {
  std::printf("CUDA %d.%d headers: %d entry points and %d constants match ringxfer's GpuApi\n",
              CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10, kEntryPoints, kConstants);
  return 0;
}
