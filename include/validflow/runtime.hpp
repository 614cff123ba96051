#pragma once
// CPU runtime settings for programs that run validflow on a CPU (the `validflow` program and the benchmarks use
// them; an application embedding the library may). Each one removes a cost measured in docs/benchmarks.md
// ("Where the extractor's time went"):
//
//  * intra-op threads: Debian's LibTorch 1.13 starts with ONE thread unless OMP_NUM_THREADS is set; use every
//    core (or what OMP_NUM_THREADS / the caller says).
//  * BLAS threads: OpenBLAS (Debian's default BLAS, pthread build) starts its own thread per core inside every
//    BLAS call that LibTorch makes from its already parallel code; on a busy machine those threads busy-wait for
//    each other (sched_yield: system time). Set to 1 when OpenBLAS is loaded.
//  * large allocations: glibc serves blocks above its mmap threshold (32 MiB at most) with a fresh mmap and
//    returns them to the kernel on free, so every large activation tensor is page-faulted in again (zeroed by the
//    kernel) on every forward: most of the system time of feature extraction. Keep them in the heap instead and
//    keep freed memory for reuse (glibc only).
//  * OpenMP's wait policy: libgomp's threads busy-wait ~300 000 spins for the next parallel region. On a machine
//    shared with other processes (a kernel with autogroup scheduling gives each session an equal share whatever
//    its nice value) a spinning thread burns the share the thread it waits for needs; extraction then runs up to
//    100x slower. libgomp reads OMP_WAIT_POLICY once, when it is loaded, before main(): an executable sets a
//    default with VALIDFLOW_DEFAULT_OMP_WAIT_POLICY("PASSIVE") at namespace scope in one of its source files
//    (glibc/ELF: it runs before the shared libraries' constructors; an OMP_WAIT_POLICY or GOMP_SPINCOUNT already
//    in the environment wins).
//
// Example (main.cpp):
//   VALIDFLOW_DEFAULT_OMP_WAIT_POLICY("PASSIVE")
//   int main() { auto report = validflow::configure_cpu_runtime(); std::cerr << report.to_string() << "\n"; ... }
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>

#if defined(__GLIBC__)
#include <dlfcn.h>
#include <malloc.h>
#endif

namespace validflow {

struct CpuRuntimeOptions {
  /// Intra-op threads; 0: $OMP_NUM_THREADS if set (LibTorch already applied it), else every core.
  int threads = 0;
  /// Set OpenBLAS's own thread count to 1 when OpenBLAS is loaded (LibTorch parallelises around BLAS calls).
  bool single_threaded_blas = true;
  /// glibc: serve large blocks from the heap (no mmap per tensor) and keep freed memory for reuse.
  bool keep_freed_memory = true;
};

/// What configure_cpu_runtime() did.
struct CpuRuntimeReport {
  int torch_threads = 0;
  bool blas_threads_set = false;  ///< OpenBLAS found and set to one thread
  bool malloc_tuned = false;      ///< glibc mallopt applied
  std::string omp_wait_policy;    ///< OMP_WAIT_POLICY / GOMP_SPINCOUNT as libgomp saw them ("" if neither)

  std::string to_string() const {
    std::ostringstream s;
    s << "cpu runtime: " << torch_threads << " threads, BLAS " << (blas_threads_set ? "1 thread" : "as is")
      << ", malloc " << (malloc_tuned ? "keeps large blocks" : "default") << ", OpenMP wait "
      << (omp_wait_policy.empty() ? "default (active spin)" : omp_wait_policy);
    return s.str();
  }
};

namespace detail {
inline std::string omp_wait_environment() {
  std::string s;
  if (const char* p = std::getenv("OMP_WAIT_POLICY")) s += std::string("OMP_WAIT_POLICY=") + p;
  if (const char* c = std::getenv("GOMP_SPINCOUNT")) s += std::string(s.empty() ? "" : " ") + "GOMP_SPINCOUNT=" + c;
  return s;
}
}  // namespace detail

/// Applies the settings above (see the top of this file). Call it once, early in main(), before the first
/// parallel LibTorch call. Process-wide: an application that manages threads or malloc itself should not.
inline CpuRuntimeReport configure_cpu_runtime(const CpuRuntimeOptions& options = {}) {
  CpuRuntimeReport report;
  if (options.threads > 0) {
    torch::set_num_threads(options.threads);
  } else if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    torch::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  }
  report.torch_threads = torch::get_num_threads();
#if defined(__GLIBC__)
  if (options.single_threaded_blas) {
    using SetThreads = void (*)(int);
    if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
      set(1);
      report.blas_threads_set = true;
    }
  }
  if (options.keep_freed_memory) {
    // No mmap for large blocks (they come from the heap and return to it), and no trimming of the heap's top:
    // the process keeps its peak heap, as a caching allocator would, instead of faulting it in again.
    report.malloc_tuned = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1;  // -1: never trim
  }
#endif
  report.omp_wait_policy = detail::omp_wait_environment();
  return report;
}

/// Returns the heap's free memory to the kernel (glibc malloc_trim), e.g. after feature extraction when
/// configure_cpu_runtime() keeps freed memory. No-op elsewhere.
inline void release_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

}  // namespace validflow

#if defined(__GLIBC__) && defined(__ELF__)
/// Sets a default OpenMP wait policy for this executable (see the top of runtime.hpp): use once, at namespace
/// scope, in a source file of the executable (not of a shared library: only an executable's .preinit_array runs
/// before the libraries' constructors). An OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment wins.
#define VALIDFLOW_DEFAULT_OMP_WAIT_POLICY(policy)                                                                \
  namespace {                                                                                                    \
  void validflow_default_omp_wait_policy(int, char**, char**) {                                                  \
    if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) setenv("OMP_WAIT_POLICY", policy, 0); \
  }                                                                                                              \
  __attribute__((section(".preinit_array"), used)) void (*const validflow_default_omp_wait_policy_entry)(        \
      int, char**, char**) = &validflow_default_omp_wait_policy;                                                 \
  }
#else
#define VALIDFLOW_DEFAULT_OMP_WAIT_POLICY(policy)
#endif
