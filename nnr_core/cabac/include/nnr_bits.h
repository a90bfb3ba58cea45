/* Bit and byte helpers of the level loops and the parameter-set kernel: branch hints, big-endian
   64-bit loads and stores, the most significant bit, and a barrier that hides a value from the
   optimiser.  Each has a portable fallback. */
#ifndef NNR_BITS_H
#define NNR_BITS_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define NNR_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* x (an lvalue) hidden from the optimiser: keeps an address computed apart from the index added
   to it (otherwise everything is summed after the index, on the critical chain). */
#define NNR_OPAQUE(x) __asm__("" : "+r"(x))
#else
#define NNR_UNLIKELY(x) (x)
#define NNR_OPAQUE(x) ((void)0)
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NNR_LITTLE_ENDIAN_GNU 1
#endif

static inline uint64_t nnr_load_be64(const uint8_t* p) {
#ifdef NNR_LITTLE_ENDIAN_GNU
    uint64_t x;
    memcpy(&x, p, 8);
    return __builtin_bswap64(x);
#else
    return ((uint64_t)p[0] << 56) | ((uint64_t)p[1] << 48) | ((uint64_t)p[2] << 40) |
           ((uint64_t)p[3] << 32) | ((uint64_t)p[4] << 24) | ((uint64_t)p[5] << 16) |
           ((uint64_t)p[6] << 8) | (uint64_t)p[7];
#endif
}

static inline void nnr_store_be64(uint8_t* p, uint64_t x) {
#ifdef NNR_LITTLE_ENDIAN_GNU
    x = __builtin_bswap64(x);
    memcpy(p, &x, 8);
#else
    int i;
    for (i = 0; i < 8; i++) p[i] = (uint8_t)(x >> (56 - 8 * i));
#endif
}

/* Index of the most significant 1 of x > 0 (floor(log2 x)). */
static inline int nnr_msb64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return 63 - __builtin_clzll(x);
#else
    int n = 63;
    while (!(x >> 63)) { x <<= 1; n--; }
    return n;
#endif
}

/* p and x, hidden from the optimiser (NNR_OPAQUE) */
static inline const void* nnr_opaque(const void* p) {
    NNR_OPAQUE(p);
    return p;
}

static inline uint64_t nnr_opaque_u64(uint64_t x) {
    NNR_OPAQUE(x);
    return x;
}

#endif
