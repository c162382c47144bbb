/* Calibration for bench/request_overhead.sh: how many ns one instruction (callgrind "Ir") costs
 * on this machine, for code shaped like the plugin's after-request hook (classify the method and
 * status, find the bucket among 11 bounds, two adds into a shared mapping).
 *
 *   request_overhead_calib plain  N   # the adds are plain load/add/store (volatile)
 *   request_overhead_calib atomic N   # the adds are relaxed atomic adds (lock xadd), as in the hook
 *
 * Prints "<mode> <N> <best ns per iteration over 5 repeats>". Run it under callgrind (with a
 * smaller N) for the Ir of run_plain/run_atomic; Ir and ns cover exactly the same code (the loop,
 * the call, the hook-like function), so ns/Ir = (ns per iteration) / (Ir per iteration). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static const uint64_t BOUNDS_US[11] = {5000,    10000,   25000,   50000,   100000,  250000,
                                       500000,  1000000, 2500000, 5000000, 10000000};
#define PER_SERIES 13 /* 12 buckets + sum */
#define STRIDE 632    /* words per worker stripe (48 series, rounded to a cache line) */

struct req {
    const char *method;
    size_t method_len;
    int status;
    uint64_t start_us, end_us;
};

static uint64_t *counts;

static int method_index(const char *m, size_t n) {
    if (n == 3 && memcmp(m, "GET", 3) == 0) return 0;
    if (n == 4 && memcmp(m, "POST", 4) == 0) return 1;
    if (n == 3 && memcmp(m, "PUT", 3) == 0) return 2;
    if (n == 4 && memcmp(m, "HEAD", 4) == 0) return 3;
    return 7;
}

static int code_index(int status) { return status >= 100 && status < 600 ? status / 100 - 1 : 5; }

static size_t bucket_index(uint64_t d) {
    size_t i = 0;
    while (i < 11 && d > BOUNDS_US[i]) i++;
    return i;
}

#define HOOK_BODY(ADD)                                                                   \
    uint64_t d = r->end_us > r->start_us ? r->end_us - r->start_us : 0;                  \
    size_t series = (size_t)method_index(r->method, r->method_len) * 6 +                 \
                    (size_t)code_index(r->status);                                       \
    size_t base = wid * STRIDE + series * PER_SERIES;                                    \
    ADD(&counts[base + bucket_index(d)], 1);                                             \
    ADD(&counts[base + PER_SERIES - 1], d);

#define ADD_ATOMIC(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define ADD_PLAIN(p, v) (*(volatile uint64_t *)(p) += (v))

__attribute__((noinline, noipa)) void hook_atomic(const struct req *r, size_t wid) { HOOK_BODY(ADD_ATOMIC) }
__attribute__((noinline, noipa)) void hook_plain(const struct req *r, size_t wid) { HOOK_BODY(ADD_PLAIN) }

/* Durations of 20..83 us: always the first bucket, like the trivial app of the benchmark. */
#define LOOP(HOOK)                                                                       \
    struct req r = {"GET", 3, 200, 1000, 0};                                             \
    uint32_t x = 12345;                                                                  \
    for (long i = 0; i < n; i++) {                                                       \
        x = x * 1103515245u + 12345u;                                                    \
        r.end_us = r.start_us + 20 + ((x >> 16) & 63);                                   \
        HOOK(&r, 1);                                                                     \
    }

__attribute__((noinline, noipa)) void run_atomic(long n) { LOOP(hook_atomic) }
__attribute__((noinline, noipa)) void run_plain(long n) { LOOP(hook_plain) }

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s plain|atomic N\n", argv[0]);
        return 2;
    }
    int atomic = strcmp(argv[1], "atomic") == 0;
    long n = atol(argv[2]);
    counts = mmap(NULL, 2 * STRIDE * 8, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counts == MAP_FAILED) return 1;
    double best = 1e300;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_ns();
        if (atomic)
            run_atomic(n);
        else
            run_plain(n);
        double t = (now_ns() - t0) / n;
        if (t < best) best = t;
    }
    printf("%s %ld %.4f\n", argv[1], n, best);
    return 0;
}
