/* LD_PRELOAD shim for llama.cpp's test-backend-ops under `taskset`.
 *
 * test-backend-ops gives its CPU backend std::thread::hardware_concurrency()/2
 * threads; libstdc++ answers that with get_nprocs(), the machine's online CPU
 * count, whatever the affinity mask. Pinned to one core of a 16-core machine
 * it would run 8 threads on that core. With this shim get_nprocs() returns
 * twice the number of CPUs the process may run on, so test-backend-ops uses
 * exactly as many threads as `taskset` gives it (and meki-bench the same).
 *
 * Build: tools/llamacpp.sh shim  (-> target/ext/affinity_nprocs.so)
 */
#define _GNU_SOURCE
#include <sched.h>

int get_nprocs(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 2;
    return 2 * CPU_COUNT(&set);
}

int get_nprocs_conf(void) { return get_nprocs(); }
