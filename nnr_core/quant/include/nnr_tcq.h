/* Trellis-coded quantization without rate term: the forward search and traceback
   (CABAC §8.3), for nnr_core/quant/_quant.pyx (declarations in _tcq.pxd).

   The search keeps the 8 state costs J side by side and picks every state's cheapest of its three
   branches with min/compare instead of branches; with AVX-512 or AVX2 (chosen at run time) the 8
   states are one or two vector registers.  Every lane does the scalar kernel's double operations
   in the same order (no FMA: the module compiles with -ffp-contract=off), so all kernels give the
   same bits.  Per position the search stores two bytes: bit c of m1 / m2 says branch 1 / 2 beat
   the earlier ones into state c; the branch then gives the previous state and the candidate
   class. */
#ifndef NNR_TCQ_H
#define NNR_TCQ_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NNR_TCQ_X86 1
#include <immintrin.h>
#endif

enum { NNR_TCQ_SCALAR = 0, NNR_TCQ_AVX2 = 1, NNR_TCQ_AVX512 = 2 };

/* CABAC §8.3 step 3: branch b into state c comes from state NNR_TCQ_PREV[b][c] with a candidate of
   class NNR_TCQ_CLS[b][c] (0..3: q mod 4, 4: the zero candidate). */
static const int NNR_TCQ_PREV[3][8] = {{0, 2, 0, 2, 3, 1, 3, 1}, {0, 2, 4, 6, 7, 5, 3, 1},
                                       {4, 6, 4, 6, 7, 5, 7, 5}};
static const int NNR_TCQ_CLS[3][8] = {{0, 0, 2, 2, 1, 1, 3, 3}, {4, 4, 0, 0, 3, 3, 4, 4},
                                      {2, 2, 4, 4, 4, 4, 1, 1}};

/* byte c of NNR_TCQ_CODE[b]: prev | class << 3 of branch b into state c */
static uint64_t NNR_TCQ_CODE[3];
/* bit j of the index -> 0xff in byte j */
static uint64_t NNR_TCQ_SPREAD[256];

static void nnr_tcq_init(void) {
    int b, c, m;
    for (b = 0; b < 3; b++) {
        NNR_TCQ_CODE[b] = 0;
        for (c = 0; c < 8; c++)
            NNR_TCQ_CODE[b] |= (uint64_t)(NNR_TCQ_PREV[b][c] | NNR_TCQ_CLS[b][c] << 3)
                               << (8 * c);
    }
    for (m = 0; m < 256; m++) {
        NNR_TCQ_SPREAD[m] = 0;
        for (c = 0; c < 8; c++)
            if (m >> c & 1) NNR_TCQ_SPREAD[m] |= (uint64_t)0xff << (8 * c);
    }
}

/* t = |w| * (1/Delta) as NNCodec computes it, qscale * value * sign (fabs: no branch; for
   w = -0.0 it gives +0.0 where NNCodec has -0.0, which no later step tells apart) */
static inline double nnr_tcq_org(float wv, double qscale) {
    return fabs(qscale * (double)wv);
}

/* q0 = max(1, trunc(t) - 1) */
static inline int32_t nnr_tcq_q0(double org) {
    int32_t q0 = (int32_t)org - 1;
    return q0 > 1 ? q0 : 1;
}

/* 1 if round(fl32(w * scale)) stays inside the trellis' int32 range for every w (CABAC §8.3):
   round(x) > 2^31 - 3 or < -(2^31 - 2) means x >= 2^31 - 2.5 or x <= -(2^31 - 1.5), for a
   float32 x the same as |x| >= 2^31 (float32 has no value in between). */
static int nnr_tcq_guard(const float* w, ptrdiff_t n, float scale) {
    int bad = 0;
    ptrdiff_t i;
    for (i = 0; i < n; i++)
        bad |= fabsf(w[i] * scale) >= 2147483648.0f;
    return !bad;
}

#define NNR_TCQ_IDX(k) (scan ? (ptrdiff_t)scan[k] : (k))

/* The forward search (CABAC §8.3 steps 4-5): m1, m2 per position into dec, final costs into J. */
static inline __attribute__((always_inline)) void nnr_tcq_fwd_scalar(
        const float* w, const int64_t* scan, const double* imp, ptrdiff_t n, double qscale,
        uint8_t* dec, double* J) {
    double Jp[8], d[5], a, b, e, best, org, diff, f;
    int32_t q0, c;
    ptrdiff_t k, idx;
    unsigned m1, m2;
    for (c = 0; c < 8; c++) Jp[c] = c ? 0.5 * DBL_MAX : 0.0;
    for (k = 0; k < n; k++) {
        idx = NNR_TCQ_IDX(k);
        org = nnr_tcq_org(w[idx], qscale);
        q0 = nnr_tcq_q0(org);
        d[4] = org * org;
        for (c = 0; c < 4; c++) {
            diff = org - (double)(q0 + ((c - q0) & 3));
            d[c] = diff * diff;
        }
        if (imp) {
            f = imp[idx];
            for (c = 0; c < 5; c++) d[c] = d[c] * f;
        }
        m1 = m2 = 0;
        for (c = 0; c < 8; c++) {
            a = Jp[NNR_TCQ_PREV[0][c]] + d[NNR_TCQ_CLS[0][c]];
            b = Jp[NNR_TCQ_PREV[1][c]] + d[NNR_TCQ_CLS[1][c]];
            e = Jp[NNR_TCQ_PREV[2][c]] + d[NNR_TCQ_CLS[2][c]];
            m1 |= (unsigned)(b < a) << c;
            best = b < a ? b : a;
            m2 |= (unsigned)(e < best) << c;
            J[c] = e < best ? e : best;
        }
        memcpy(Jp, J, sizeof Jp);
        dec[2 * k] = (uint8_t)m1;
        dec[2 * k + 1] = (uint8_t)m2;
    }
    memcpy(J, Jp, sizeof Jp);
}

#ifdef NNR_TCQ_X86
/* lane c < 4: the offset of the class-c candidate from q0 - r, r = q0 & 3 (row r) */
static const double NNR_TCQ_QOFF[4][4] __attribute__((aligned(32))) = {
    {0, 1, 2, 3}, {4, 1, 2, 3}, {4, 5, 2, 3}, {4, 5, 6, 3}};

/* Per position of a chunk: t, q0 - r as a double, r = q0 & 3 and the weight. Computed ahead
   in a loop the compiler vectorises, this scalar work stays off the search's chain. */
#define NNR_TCQ_CHUNK 256
typedef struct {
    double org[NNR_TCQ_CHUNK], base[NNR_TCQ_CHUNK], f[NNR_TCQ_CHUNK];
    int32_t r[NNR_TCQ_CHUNK];
    float w[NNR_TCQ_CHUNK];
} NnrTcqChunk;

static inline __attribute__((always_inline)) void nnr_tcq_chunk(
        const float* w, const int64_t* scan, const double* imp, ptrdiff_t k0, ptrdiff_t m,
        double qscale, NnrTcqChunk* ch) {
    const float* wk = w + k0;
    ptrdiff_t j;
    double org;
    int32_t q0;
    if (scan) {
        for (j = 0; j < m; j++) ch->w[j] = w[scan[k0 + j]];
        wk = ch->w;
    }
    for (j = 0; j < m; j++) {
        org = nnr_tcq_org(wk[j], qscale);
        q0 = nnr_tcq_q0(org);
        ch->org[j] = org;
        ch->base[j] = (double)(q0 & ~3);
        ch->r[j] = q0 & 3;
    }
    if (imp)
        for (j = 0; j < m; j++) ch->f[j] = imp[NNR_TCQ_IDX(k0 + j)];
}

__attribute__((target("avx512f"), always_inline)) static inline void nnr_tcq_fwd_avx512(
        const float* w, const int64_t* scan, const double* imp, ptrdiff_t n, double qscale,
        uint8_t* dec, double* J) {
    const __m512i P0 = _mm512_setr_epi64(0, 2, 0, 2, 3, 1, 3, 1);
    const __m512i P1 = _mm512_setr_epi64(0, 2, 4, 6, 7, 5, 3, 1);
    const __m512i P2 = _mm512_setr_epi64(4, 6, 4, 6, 7, 5, 7, 5);
    const __m512i C0 = _mm512_setr_epi64(0, 0, 2, 2, 1, 1, 3, 3);
    const __m512i C1 = _mm512_setr_epi64(4, 4, 0, 0, 3, 3, 4, 4);
    const __m512i C2 = _mm512_setr_epi64(2, 2, 4, 4, 4, 4, 1, 1);
    const double H = 0.5 * DBL_MAX;
    __m512d Jv = _mm512_setr_pd(0.0, H, H, H, H, H, H, H);
    __m512d qv, diff, D, c0, c1, c2, best;
    __mmask8 k1, k2;
    NnrTcqChunk ch;
    ptrdiff_t k0, m, j;
    for (k0 = 0; k0 < n; k0 += NNR_TCQ_CHUNK) {
        m = n - k0 < NNR_TCQ_CHUNK ? n - k0 : NNR_TCQ_CHUNK;
        nnr_tcq_chunk(w, scan, imp, k0, m, qscale, &ch);
        for (j = 0; j < m; j++) {
            /* lane c < 4: the candidate q of class c, an exact integer; lanes 4..7: 0, so
               that lane 4 is the zero candidate's (t - 0)^2 = t^2 */
            qv = _mm512_maskz_add_pd(0x0f, _mm512_set1_pd(ch.base[j]),
                                     _mm512_castpd256_pd512(_mm256_load_pd(NNR_TCQ_QOFF[ch.r[j]])));
            diff = _mm512_sub_pd(_mm512_set1_pd(ch.org[j]), qv);
            D = _mm512_mul_pd(diff, diff);
            if (imp) D = _mm512_mul_pd(D, _mm512_set1_pd(ch.f[j]));
            c0 = _mm512_add_pd(_mm512_permutexvar_pd(P0, Jv), _mm512_permutexvar_pd(C0, D));
            c1 = _mm512_add_pd(_mm512_permutexvar_pd(P1, Jv), _mm512_permutexvar_pd(C1, D));
            c2 = _mm512_add_pd(_mm512_permutexvar_pd(P2, Jv), _mm512_permutexvar_pd(C2, D));
            /* minpd(x, y) is x < y ? x : y, the scalar kernel's choice */
            k1 = _mm512_cmp_pd_mask(c1, c0, _CMP_LT_OQ);
            best = _mm512_min_pd(c1, c0);
            k2 = _mm512_cmp_pd_mask(c2, best, _CMP_LT_OQ);
            Jv = _mm512_min_pd(c2, best);
            dec[2 * (k0 + j)] = (uint8_t)k1;
            dec[2 * (k0 + j) + 1] = (uint8_t)k2;
        }
    }
    _mm512_storeu_pd(J, Jv);
}

/* ymm a: states 0..3, b: states 4..7; state c < 4 comes from even states, c >= 4 from odd */
#define NNR_TCQ_PERM(v, a, b, c, d) \
    _mm256_permute4x64_pd(v, (a) | (b) << 2 | (c) << 4 | (d) << 6)

__attribute__((target("avx2"), always_inline)) static inline void nnr_tcq_fwd_avx2(
        const float* w, const int64_t* scan, const double* imp, ptrdiff_t n, double qscale,
        uint8_t* dec, double* J) {
    const double H = 0.5 * DBL_MAX;
    __m256d lo = _mm256_setr_pd(0.0, H, H, H), hi = _mm256_set1_pd(H);
    __m256d dv, z, u, h, su, sh, E, O, a0, a1, a2, b0, b1, b2, abest, bbest;
    int m1, m2;
    NnrTcqChunk ch;
    ptrdiff_t k0, m, j;
    for (k0 = 0; k0 < n; k0 += NNR_TCQ_CHUNK) {
        m = n - k0 < NNR_TCQ_CHUNK ? n - k0 : NNR_TCQ_CHUNK;
        nnr_tcq_chunk(w, scan, imp, k0, m, qscale, &ch);
        for (j = 0; j < m; j++) {
            /* dv: (t - q)^2 of the class 0..3 candidates, z: t^2 of the zero candidate */
            dv = _mm256_add_pd(_mm256_set1_pd(ch.base[j]), _mm256_load_pd(NNR_TCQ_QOFF[ch.r[j]]));
            dv = _mm256_sub_pd(_mm256_set1_pd(ch.org[j]), dv);
            dv = _mm256_mul_pd(dv, dv);
            z = _mm256_set1_pd(ch.org[j] * ch.org[j]);
            if (imp) {
                dv = _mm256_mul_pd(dv, _mm256_set1_pd(ch.f[j]));
                z = _mm256_mul_pd(z, _mm256_set1_pd(ch.f[j]));
            }
            u = _mm256_unpacklo_pd(dv, dv);              /* d0 d0 d2 d2 */
            h = _mm256_unpackhi_pd(dv, dv);              /* d1 d1 d3 d3 */
            su = _mm256_permute2f128_pd(u, u, 1);        /* d2 d2 d0 d0 */
            sh = _mm256_permute2f128_pd(h, h, 1);        /* d3 d3 d1 d1 */
            E = _mm256_unpacklo_pd(lo, hi);              /* J0 J4 J2 J6 */
            O = _mm256_unpackhi_pd(lo, hi);              /* J1 J5 J3 J7 */
            a0 = _mm256_add_pd(NNR_TCQ_PERM(E, 0, 2, 0, 2), u);
            a1 = _mm256_add_pd(NNR_TCQ_PERM(E, 0, 2, 1, 3), _mm256_blend_pd(z, su, 12));
            a2 = _mm256_add_pd(NNR_TCQ_PERM(E, 1, 3, 1, 3), _mm256_blend_pd(su, z, 12));
            b0 = _mm256_add_pd(NNR_TCQ_PERM(O, 2, 0, 2, 0), h);
            b1 = _mm256_add_pd(NNR_TCQ_PERM(O, 3, 1, 2, 0), _mm256_blend_pd(sh, z, 12));
            b2 = _mm256_add_pd(NNR_TCQ_PERM(O, 3, 1, 3, 1), _mm256_blend_pd(z, sh, 12));
            m1 = _mm256_movemask_pd(_mm256_cmp_pd(a1, a0, _CMP_LT_OQ)) |
                 _mm256_movemask_pd(_mm256_cmp_pd(b1, b0, _CMP_LT_OQ)) << 4;
            abest = _mm256_min_pd(a1, a0);
            bbest = _mm256_min_pd(b1, b0);
            m2 = _mm256_movemask_pd(_mm256_cmp_pd(a2, abest, _CMP_LT_OQ)) |
                 _mm256_movemask_pd(_mm256_cmp_pd(b2, bbest, _CMP_LT_OQ)) << 4;
            lo = _mm256_min_pd(a2, abest);
            hi = _mm256_min_pd(b2, bbest);
            dec[2 * (k0 + j)] = (uint8_t)m1;
            dec[2 * (k0 + j) + 1] = (uint8_t)m2;
        }
    }
    _mm256_storeu_pd(J, lo);
    _mm256_storeu_pd(J + 4, hi);
}
#endif

/* CABAC §8.3 step 5: from the cheapest final state (the first on ties) back along the decisions;
   writes the chosen branch's prev | class << 3 to out (nnr_tcq_indices finishes out). */
static inline __attribute__((always_inline)) void nnr_tcq_back(
        const double* J, const uint8_t* dec, const int64_t* scan, int32_t* out, ptrdiff_t n) {
    const uint64_t code0 = NNR_TCQ_CODE[0], x01 = NNR_TCQ_CODE[0] ^ NNR_TCQ_CODE[1];
    const uint64_t code2 = NNR_TCQ_CODE[2];
    uint64_t word;
    unsigned s = 0, p;
    ptrdiff_t k;
    for (p = 1; p < 8; p++)
        if (J[p] < J[s]) s = p;
    for (k = n - 1; k >= 0; k--) {
        /* the chosen branch's code into every state, byte per state: off the chain of s */
        word = code0 ^ (x01 & NNR_TCQ_SPREAD[dec[2 * k]]);
        word ^= (word ^ code2) & NNR_TCQ_SPREAD[dec[2 * k + 1]];
        word = (word >> 8 * s) & 0xff;
        out[NNR_TCQ_IDX(k)] = (int32_t)word;
        s = (unsigned)word & 7;
    }
}

/* out[j]: prev | class << 3 of w[j]'s candidate -> its reconstruction index i; element by
   element in memory order (vectorised), whatever the scan */
static inline __attribute__((always_inline)) void nnr_tcq_indices(
        const float* w, int32_t* out, ptrdiff_t n, double qscale) {
    ptrdiff_t j;
    int32_t q0, q, cls, i, neg;
    for (j = 0; j < n; j++) {
        q0 = nnr_tcq_q0(nnr_tcq_org(w[j], qscale));
        cls = out[j] >> 3;
        q = q0 + ((cls - q0) & 3);
        /* i = 2k - sgn(k)(p & 1) (CABAC §8.2) with k = (q + 1) >> 1 and the sign of w, 0 for the
           zero candidate; masks, as branches on sign or class would mispredict */
        i = ((q + 1) & ~1) - (out[j] & 1);
        neg = -(int32_t)(w[j] < 0);
        out[j] = ((i ^ neg) - neg) & -(int32_t)(cls != 4);
    }
}

/* 1 if this build and CPU run the kernel (the CPU check includes the OS's register saving) */
static int nnr_tcq_supported(int kernel) {
    if (kernel == NNR_TCQ_SCALAR) return 1;
#ifdef NNR_TCQ_X86
    __builtin_cpu_init();
    if (kernel == NNR_TCQ_AVX2) return __builtin_cpu_supports("avx2");
    if (kernel == NNR_TCQ_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

/* fwd specialised for scan NULL (identity) and imp NULL (weight 1) */
#define NNR_TCQ_SPECIALISE(fwd) \
    if (scan && imp) fwd(w, scan, imp, n, qscale, dec, J); \
    else if (scan) fwd(w, scan, NULL, n, qscale, dec, J); \
    else if (imp) fwd(w, NULL, imp, n, qscale, dec, J); \
    else fwd(w, NULL, NULL, n, qscale, dec, J);

/* One kernel's forward search, traceback and indices. */
#define NNR_TCQ_KERNEL(name, fwd, target) \
    target static void name(const float* w, const int64_t* scan, const double* imp, \
                            int32_t* out, ptrdiff_t n, double qscale, uint8_t* dec) { \
        double J[8]; \
        NNR_TCQ_SPECIALISE(fwd) \
        if (scan) nnr_tcq_back(J, dec, scan, out, n); \
        else nnr_tcq_back(J, dec, NULL, out, n); \
        nnr_tcq_indices(w, out, n, qscale); \
    }

NNR_TCQ_KERNEL(nnr_tcq_run_scalar, nnr_tcq_fwd_scalar, )
#ifdef NNR_TCQ_X86
NNR_TCQ_KERNEL(nnr_tcq_run_avx2, nnr_tcq_fwd_avx2, __attribute__((target("avx2"))))
NNR_TCQ_KERNEL(nnr_tcq_run_avx512, nnr_tcq_fwd_avx512, __attribute__((target("avx512f"))))
#endif

/* The search with `kernel` (NNR_TCQ_*, supported); scan NULL = identity, imp NULL = weight
   1; dec holds 2 bytes per position. Returns 0, with nothing written, on int32 overflow. */
static int nnr_tcq_plain(int kernel, const float* w, const int64_t* scan, const double* imp,
                         int32_t* out, ptrdiff_t n, float qstep, uint8_t* dec) {
    double qstep_d = (double)qstep;
    float scale = (float)(1.0 / qstep_d);     /* float32_t(1.0) / qstep, rounded to float32 */
    double qscale = 1.0 / qstep_d;
    (void)kernel;
    if (!nnr_tcq_guard(w, n, scale)) return 0;
    if (n == 0) return 1;
#ifdef NNR_TCQ_X86
    if (kernel == NNR_TCQ_AVX512) nnr_tcq_run_avx512(w, scan, imp, out, n, qscale, dec);
    else if (kernel == NNR_TCQ_AVX2) nnr_tcq_run_avx2(w, scan, imp, out, n, qscale, dec);
    else
#endif
    nnr_tcq_run_scalar(w, scan, imp, out, n, qscale, dec);
    return 1;
}

#endif
