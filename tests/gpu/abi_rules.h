// The ABI rules the GPU signature checks (signature_check_{cuda,hip}.cc) apply: what
// makes a runtime's declared type and GpuApi's the same at the machine level. Header
// only, compile time only.
#pragma once

#include <cstddef>
#include <type_traits>

namespace rx_abi_rules {

// A 4-byte enum whose underlying type is a 32-bit integer (cudaError_t, hipMemcpyKind...).
template <class T>
constexpr bool is_int32_enum() {
  if constexpr (std::is_enum_v<T>) {
    using U = std::underlying_type_t<T>;
    return sizeof(T) == 4 && std::is_integral_v<U> && sizeof(U) == 4;
  } else {
    return false;
  }
}

// A 32-bit integer: int or unsigned.
template <class T>
constexpr bool is_int32_integer() {
  return std::is_same_v<T, int> || std::is_same_v<T, unsigned>;
}

template <class Real, class Ours>
constexpr bool abi_same();

template <class F>
struct StripNoexcept {
  using type = F;
};
template <class R, class... A>
struct StripNoexcept<R(A...) noexcept> {
  using type = R(A...);
};

// Where two function types first differ: kMatch, kArity, kReturn or the index of the
// first parameter that differs (0-based). C varargs never match.
inline constexpr int kMatch = 1000;
inline constexpr int kArity = -2;
inline constexpr int kReturn = -1;

template <class Real, class Ours>
struct FnMismatch {
  static constexpr int value = kArity;
};
template <class R1, class... A1, class R2, class... A2>
struct FnMismatch<R1(A1...), R2(A2...)> {
  static constexpr int compute() {
    if constexpr (sizeof...(A1) != sizeof...(A2)) {
      return kArity;
    } else {
      if (!abi_same<R1, R2>()) return kReturn;
      constexpr bool same[] = {abi_same<A1, A2>()..., true};
      for (int i = 0; i < static_cast<int>(sizeof...(A1)); ++i) {
        if (!same[i]) return i;
      }
      return kMatch;
    }
  }
  static constexpr int value = compute();
};

template <class Real, class Ours>
constexpr int fn_mismatch() {
  return FnMismatch<typename StripNoexcept<Real>::type, typename StripNoexcept<Ours>::type>::value;
}

template <class Real, class Ours>
constexpr bool abi_same() {
  if constexpr (std::is_enum_v<Real> || std::is_enum_v<Ours>) {
    // An enum is a 4-byte int; it may stand for int or unsigned (or another such enum).
    return (is_int32_enum<Real>() || is_int32_integer<Real>()) &&
           (is_int32_enum<Ours>() || is_int32_integer<Ours>());
  } else if constexpr (std::is_pointer_v<Real> && std::is_pointer_v<Ours>) {
    using PR = std::remove_pointer_t<Real>;
    using PO = std::remove_pointer_t<Ours>;
    if constexpr (std::is_function_v<PR> || std::is_function_v<PO>) {
      if constexpr (std::is_function_v<PR> && std::is_function_v<PO>) {
        return fn_mismatch<PR, PO>() == kMatch;
      } else {
        return false;
      }
    } else if constexpr (std::is_const_v<PR> != std::is_const_v<PO> ||
                         std::is_volatile_v<PR> != std::is_volatile_v<PO>) {
      return false;  // the pointee keeps its constness exactly
    } else {
      using R = std::remove_cv_t<PR>;
      using O = std::remove_cv_t<PO>;
      if constexpr (std::is_pointer_v<R> || std::is_pointer_v<O>) {
        return abi_same<R, O>();  // void** against cudaStream_t* (CUstream_st**)
      } else if constexpr ((std::is_arithmetic_v<R> ||
                            std::is_enum_v<R>)&&(std::is_arithmetic_v<O> || std::is_enum_v<O>)) {
        return abi_same<R, O>();  // int* stays int*
      } else {
        return true;  // any other object pointer is a void*
      }
    }
  } else {
    return std::is_same_v<Real, Ours>;  // size_t, int, unsigned, void, ...
  }
}

// Constant values, compared as integers whatever their types (enums, macros, unsigned).
template <class A, class B>
constexpr bool same_value(A a, B b) {
  auto widen = [](auto v) -> long long {
    if constexpr (std::is_enum_v<decltype(v)>) {
      return static_cast<long long>(static_cast<std::underlying_type_t<decltype(v)>>(v));
    } else {
      return static_cast<long long>(v);
    }
  };
  return widen(a) == widen(b);
}

// Self-checks of the rules.
static_assert(abi_same<const void*, const void*>() && !abi_same<const void*, void*>() &&
              !abi_same<void*, const void*>());
static_assert(abi_same<int, int>() && !abi_same<int, unsigned>() && !abi_same<unsigned, int>());
static_assert(!abi_same<size_t, unsigned>() && !abi_same<int*, size_t*>());
static_assert(fn_mismatch<void(int), void(int, int)>() == kArity);
static_assert(fn_mismatch<int(void*, const void*), int(void*, void*)>() == 1);

}  // namespace rx_abi_rules
