// Run-time choice of a kernel set compiled per instruction set (the *_isa_*.cpp files).
#pragma once

#include <cstdlib>
#include <string>

namespace fastrag {

#if defined(FASTRAG_X86_DISPATCH)
// AVX-512 F, BW, DQ and VL: what the *_isa_avx512.cpp files are compiled for.
inline bool cpu_has_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }();
  return yes;
}

// AVX-512 VNNI on top of cpu_has_avx512(): hnsw_isa_avx512vnni.cpp.
inline bool cpu_has_avx512vnni() {
  static const bool yes = cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
  return yes;
}

// AVX2, FMA and F16C: what the *_isa_avx2.cpp files are compiled for.
inline bool cpu_has_avx2() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  return yes;
}
#endif

// The kernel set FASTRAG_KERNELS names ("generic", "avx2", "avx512").
inline std::string forced_kernels() {
  const char* forced = std::getenv("FASTRAG_KERNELS");
  return forced ? forced : "";
}

// The set FASTRAG_KERNELS names when the CPU has it, else the best one the CPU has (avx512 may
// be null: no such set).
template <class Kernels>
const Kernels* pick_isa(const Kernels* generic, const Kernels* avx2, const Kernels* avx512) {
  const std::string want = forced_kernels();
#if defined(FASTRAG_X86_DISPATCH)
  if (want == "generic") return generic;
  if (want == "avx2" && cpu_has_avx2()) return avx2;
  if (avx512 && cpu_has_avx512()) return avx512;
  if (cpu_has_avx2()) return avx2;
#else
  (void)avx2;
  (void)avx512;
  (void)want;
#endif
  return generic;
}

}  // namespace fastrag
