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
//  * vector kernels: LibTorch 1.13 runs its element-wise kernels (SiLU, sigmoid, add, ...) with AVX2 even on
//    AVX-512 CPUs unless ATEN_CPU_CAPABILITY=avx512 (opt-in there); on the AVX-512 machine measured, the B5
//    extractor ran 13-15 % faster with it. Set when the CPU has AVX-512 F/BW/DQ/VL and the variable is unset; it
//    takes effect only if no tensor operation ran before (LibTorch reads it once).
//  * OpenMP's wait policy: libgomp's threads busy-wait ~300 000 spins for the next parallel region. On a machine
//    shared with other processes (a kernel with autogroup scheduling gives each session an equal share whatever
//    its nice value) a spinning thread burns the share the thread it waits for needs: the extractor benchmark
//    ran up to 120x slower, `validflow extract` 7x. libgomp reads OMP_WAIT_POLICY / GOMP_SPINCOUNT only once, in
//    its constructor, before main() (a setenv in main, or even in the executable's .preinit_array, is too late:
//    glibc resets the environment after it). reexec_with_omp_wait_policy() therefore re-executes the program once with
//    the variable set, unless one of the two is already in the environment (which is how a user keeps another policy).
//
// Example (main.cpp):
//   int main(int argc, char** argv) {
//     validflow::reexec_with_omp_wait_policy("PASSIVE", argv);  // first: returns only when nothing to do
//     auto report = validflow::configure_cpu_runtime();
//     std::cerr << report.to_string() << "\n";
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
#if defined(__linux__)
#include <unistd.h>
#endif

namespace validflow {

struct CpuRuntimeOptions {
  /// Intra-op threads; 0: $OMP_NUM_THREADS if set (LibTorch already applied it), else every core.
  int threads = 0;
  /// Set OpenBLAS's own thread count to 1 when OpenBLAS is loaded (LibTorch parallelises around BLAS calls).
  bool single_threaded_blas = true;
  /// glibc: serve large blocks from the heap (no mmap per tensor) and keep freed memory for reuse.
  bool keep_freed_memory = true;
  /// x86: LibTorch's AVX-512 kernels when the CPU has AVX-512 and ATEN_CPU_CAPABILITY is unset.
  bool avx512_kernels = true;
};

/// What configure_cpu_runtime() did.
struct CpuRuntimeReport {
  int torch_threads = 0;
  bool blas_threads_set = false;  ///< OpenBLAS found and set to one thread
  bool malloc_tuned = false;      ///< glibc mallopt applied
  std::string omp_wait_policy;    ///< OMP_WAIT_POLICY / GOMP_SPINCOUNT as libgomp saw them ("" if neither)
  std::string cpu_capability;     ///< LibTorch's kernel set in use ("AVX2", "AVX512", ...; "" if not reported)

  std::string to_string() const {
    std::ostringstream s;
    s << "cpu runtime: " << torch_threads << " threads, BLAS " << (blas_threads_set ? "1 thread" : "as is")
      << ", malloc " << (malloc_tuned ? "keeps large blocks" : "default") << ", OpenMP wait "
      << (omp_wait_policy.empty() ? "default (active spin)" : omp_wait_policy);
    if (!cpu_capability.empty()) s << ", kernels " << cpu_capability;
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

/// Whether the CPU has the AVX-512 subsets LibTorch's AVX512 kernels need.
inline bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

/// The "CPU capability usage" line of LibTorch's build configuration (the kernel set it dispatches to).
inline std::string cpu_capability_in_use() {
  const std::string config = at::show_config();
  const std::string key = "CPU capability usage: ";
  const auto at = config.find(key);
  if (at == std::string::npos) return "";
  const auto start = at + key.size();
  return config.substr(start, config.find('\n', start) - start);
}
}  // namespace detail

/// Applies the settings above (see the top of this file). Call it once, early in main(), before the first
/// parallel LibTorch call. Process-wide: an application that manages threads or malloc itself should not.
inline CpuRuntimeReport configure_cpu_runtime(const CpuRuntimeOptions& options = {}) {
  CpuRuntimeReport report;
#if defined(__unix__)
  if (options.avx512_kernels && !std::getenv("ATEN_CPU_CAPABILITY") && detail::cpu_has_avx512())
    setenv("ATEN_CPU_CAPABILITY", "avx512", 0);
#endif
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
  report.cpu_capability = detail::cpu_capability_in_use();
  return report;
}

/// Returns the heap's free memory to the kernel (glibc malloc_trim), e.g. after feature extraction when
/// configure_cpu_runtime() keeps freed memory. No-op elsewhere.
inline void release_freed_memory() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

/// Whether reexec_with_omp_wait_policy() would re-execute: neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set.
inline bool omp_wait_policy_unset() { return !std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT"); }

/// Re-executes this program (/proc/self/exe, same arguments) with OMP_WAIT_POLICY=`policy` when neither
/// OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set (see the top of this file); returns when it has nothing to do or the
/// exec failed (the program then goes on with libgomp's default). Call it first in main(), before any thread
/// starts or file is opened. Linux only (elsewhere it returns).
inline void reexec_with_omp_wait_policy(const char* policy, char** argv) {
#if defined(__linux__)
  if (!omp_wait_policy_unset() || argv == nullptr || argv[0] == nullptr) return;
  if (setenv("OMP_WAIT_POLICY", policy, 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OMP_WAIT_POLICY");  // exec failed: say so truthfully in the runtime report
#else
  (void)policy;
  (void)argv;
#endif
}

}  // namespace validflow
