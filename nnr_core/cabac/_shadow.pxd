# cython: language_level=3
"""Shadow estimators of the encoder's parameter-set choice (NNC-CABAC-QUANT.md §6.5).

NNCodec charges every context's bins to nine probability models (the parameter sets of §4.2) and
keeps the cheapest.  Doing that bin by bin, interleaved across contexts, keeps the 27 estimator
values of a context in memory and pays a store-to-load round trip per bin.  Here the pseudo pass
only *emits* each bin into its context's bucket; a flush runs each context's bins through its nine
estimators in registers, with the §4.4 update and the §4.6 estimate as table lookups.  The sums
are the same integers in another order, so the chosen sets are exactly NNCodec's.

The two estimators of a set are independent (§4.4: S0 moves with sh0, S1 with sh1; only the
estimate reads S = S1 + 16*S0), so each has its own transition table: S0 reaches -123..123 and S1
-1923..1923 from every set's initial state, inside the tables' -128..127 and -2048..2047.  The
kernel keeps o0 = 2 (S0 + 128) (a byte offset into the S0 table) and o1 = S1 + 2048, so that a
step is one load per estimator and 512 + (S >> 3) = (o1 + 8 o0) >> 3; each bin value has its own
tables, picked once per bin.  Set 7 (sh0 = 7, S0 = 0) never moves S0 (64 >> 7 = 0) and its S1
runs exactly as set 3's (same sh1 and initial state), so it costs one lookup per bin.
"""
from libc.stdint cimport uint8_t, uint16_t, int16_t, int32_t, uint32_t, int64_t, uint64_t


cdef extern from *:
    """
    #include <string.h>
    typedef struct {
        int16_t S0[9];
        int16_t S1[9];
        uint64_t cost[9];
    } NnrShadowCtx;

    /* The tables of one bin value, so the kernel addresses all of them from one base register. */
    typedef struct {
        uint64_t cost[1024];              /* §4.6 estimate of the bin, 512 + (S >> 3) */
        uint16_t t0[4][256];              /* sh0 = 4..7: S0 + 128 -> 2 (S0' + 128) */
        uint16_t t1[3][4096];             /* sh1 = 4..6: S1 + 2048 -> S1' + 2048 */
    } NnrShadowHalf;
    static NnrShadowHalf NNR_SH[2];

    /* Runs of 1-bins from states S0, S1 >= 0: every step adds 64 >> shift until S0 >= 120 or
       S1 >= 1920 stops it (§4.4: curve[16..30] = 64, curve[31] = 0), so S = S1 + 16 S0 moves by a
       constant D between those points: d1 + 16 d0 while both move, d1 or 16 d0 while one does.
       NNR_SH_LIN[D][S] = the bin-1 estimates of S, S + D, S + 2D, ... below 4096, for the slopes
       of the nine sets, so that a stretch of a run costs two lookups (D = 0 stretches are empty:
       any table serves them). */
    enum { NNR_SH_NSLOPES = 9, NNR_SH_MAXSLOPE = 66 };
    static const int NNR_SH_SLOPE[NNR_SH_NSLOPES] = {1, 2, 4, 16, 17, 32, 36, 64, 66};
    static uint32_t NNR_SH_LINTAB[NNR_SH_NSLOPES][4096];
    static const uint32_t* NNR_SH_LIN[NNR_SH_MAXSLOPE + 1];

    /* One §4.4 step of an estimator with `shift` and index divisor 2^div; a state outside the
       curve's domain (unreachable) stays put. */
    static int nnr_sh_next(const int16_t* curve, int s, int bin, int shift, int div) {
        int i = bin ? 16 + (s >> div) : 16 + ((-s) >> div);
        if (i < 0 || i > 31) return s;
        return bin ? s + (curve[i] >> shift) : s - (curve[i] >> shift);
    }

    /* Fills the tables; returns 0, or -1 if the parameter sets are not the ones the kernel's
       constant shifts (and set 7's shortcut) assume. */
    static int nnr_shadow_init(const int16_t* curve, const int16_t* sets /* [9][4] */,
                               const uint32_t* bitcost /* [1024][2] */) {
        static const int sh[9][2] = {{5, 4}, {5, 4}, {5, 4}, {4, 5}, {6, 6}, {6, 6}, {6, 6},
                                     {7, 5}, {7, 5}};
        int k, s, b, n;
        for (k = 0; k < 9; k++)
            if (sets[4 * k] != sh[k][0] || sets[4 * k + 1] != sh[k][1]) return -1;
        if (sets[4 * 7 + 2] != 0 || sets[4 * 7 + 3] != sets[4 * 3 + 3] || (curve[16] >> 7) != 0)
            return -1;
        for (b = 0; b < 2; b++) {
            for (k = 0; k < 4; k++)
                for (s = -128; s < 128; s++) {
                    n = nnr_sh_next(curve, s, b, 4 + k, 3);
                    NNR_SH[b].t0[k][s + 128] = (uint16_t)(2 * ((n < -128 ? -128 : n > 127 ? 127 : n) + 128));
                }
            for (k = 0; k < 3; k++)
                for (s = -2048; s < 2048; s++) {
                    n = nnr_sh_next(curve, s, b, 4 + k, 7);
                    NNR_SH[b].t1[k][s + 2048] = (uint16_t)((n < -2048 ? -2048 : n > 2047 ? 2047 : n) + 2048);
                }
            for (s = 0; s < 1024; s++)
                NNR_SH[b].cost[s] = bitcost[2 * s + b];
        }
        for (k = 16; k < 31; k++)
            if (curve[k] != 64) return -1;
        if (curve[31] != 0) return -1;
        for (k = 0; k <= NNR_SH_MAXSLOPE; k++)
            NNR_SH_LIN[k] = NNR_SH_LINTAB[0];
        for (k = 0; k < NNR_SH_NSLOPES; k++) {
            for (s = 4095; s >= 0; s--)
                NNR_SH_LINTAB[k][s] = (uint32_t)NNR_SH[1].cost[512 + (s >> 3)]
                    + (s + NNR_SH_SLOPE[k] < 4096 ? NNR_SH_LINTAB[k][s + NNR_SH_SLOPE[k]] : 0);
            NNR_SH_LIN[NNR_SH_SLOPE[k]] = NNR_SH_LINTAB[k];
        }
        return 0;
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
    #if defined(__GNUC__) || defined(__clang__)
    #define NNR_SH_OPAQUE(p) __asm__("" : "+r"(p))
    #else
    #define NNR_SH_OPAQUE(p) ((void)0)
    #endif

    static void nnr_shadow_reset(NnrShadowCtx* m, const int16_t* sets) {
        int k;
        for (k = 0; k < 9; k++) {
            m->S0[k] = sets[4 * k + 2];
            m->S1[k] = sets[4 * k + 3];
        }
    }

    /* Estimate, then update, set k with shifts (A, B) for the bin whose tables P points at. */
    #define NNR_SH_STEP(k, A, B) do {                                                      \\
            c##k += P->cost[(o1_##k + 8 * o0_##k) >> 3];                                  \\
            o0_##k = *(const uint16_t*)((const char*)P->t0[(A) - 4] + o0_##k);            \\
            o1_##k = P->t1[(B) - 4][o1_##k];                                              \\
        } while (0)
    #define NNR_SH_LOAD(k) uintptr_t o0_##k = 2 * (m->S0[k] + 128), o1_##k = m->S1[k] + 2048; \\
                           uint64_t c##k = 0
    #define NNR_SH_STORE(k) do { m->S0[k] = (int16_t)((intptr_t)(o0_##k >> 1) - 128);      \\
                                 m->S1[k] = (int16_t)((intptr_t)o1_##k - 2048);            \\
                                 m->cost[k] += c##k; } while (0)

    #define NNR_SH_LOAD_ALL NNR_SH_LOAD(0); NNR_SH_LOAD(1); NNR_SH_LOAD(2); NNR_SH_LOAD(3);       \\
                            NNR_SH_LOAD(4); NNR_SH_LOAD(5); NNR_SH_LOAD(6); NNR_SH_LOAD(8);       \\
                            uint64_t c7 = 0
    #define NNR_SH_STORE_ALL do { NNR_SH_STORE(0); NNR_SH_STORE(1); NNR_SH_STORE(2);               \\
            NNR_SH_STORE(3); NNR_SH_STORE(4); NNR_SH_STORE(5); NNR_SH_STORE(6); NNR_SH_STORE(8);  \\
            m->S1[7] = m->S1[3]; m->cost[7] += c7; } while (0)
    /* bins[i] through the nine sets; the base is opaque, otherwise GCC rebuilds every address
       from NNR_SH and the bin (measured: 5.8 against 4.5 ns per bin) */
    #define NNR_SH_BIN(i) do {                                                             \\
            P = &NNR_SH[bins[i]];                                                          \\
            NNR_SH_OPAQUE(P);                                                         \\
            c7 += P->cost[(o1_3 + 8 * 256) >> 3];                                          \\
            NNR_SH_STEP(0, 5, 4); NNR_SH_STEP(1, 5, 4); NNR_SH_STEP(2, 5, 4);              \\
            NNR_SH_STEP(3, 4, 5); NNR_SH_STEP(4, 6, 6); NNR_SH_STEP(5, 6, 6);              \\
            NNR_SH_STEP(6, 6, 6); NNR_SH_STEP(8, 7, 5);                                    \\
        } while (0)

    /* Whether bin value P moves set k's estimators (else a run of it costs the same per bin
       and leaves the state as it is). */
    #define NNR_SH_MOVES(k, A, B) ((*(const uint16_t*)((const char*)P->t0[(A) - 4] + o0_##k) ^ o0_##k) \\
                                   | (P->t1[(B) - 4][o1_##k] ^ o1_##k))
    #define NNR_SH_RUN(k) c##k += NNR_SH_BLOCK * P->cost[(o1_##k + 8 * o0_##k) >> 3]
    enum { NNR_SH_BLOCK = 32 };

    /* The bins of one context, in order, through all nine sets: in two passes of four sets
       (and set 7), whose values all stay in registers (measured: 4.5 against 5.0 ns per bin for
       one pass of all nine, which spills). */
    static void nnr_shadow_plain(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) {
        Py_ssize_t i;
        const NnrShadowHalf* P;
        {
            NNR_SH_LOAD(0); NNR_SH_LOAD(1); NNR_SH_LOAD(2); NNR_SH_LOAD(3);
            uint64_t c7 = 0;
            for (i = 0; i < n; i++) {
                P = &NNR_SH[bins[i]];
                NNR_SH_OPAQUE(P);
                c7 += P->cost[(o1_3 + 8 * 256) >> 3];
                NNR_SH_STEP(0, 5, 4); NNR_SH_STEP(1, 5, 4); NNR_SH_STEP(2, 5, 4); NNR_SH_STEP(3, 4, 5);
            }
            NNR_SH_STORE(0); NNR_SH_STORE(1); NNR_SH_STORE(2); NNR_SH_STORE(3);
            m->S1[7] = m->S1[3];
            m->cost[7] += c7;
        }
        {
            NNR_SH_LOAD(4); NNR_SH_LOAD(5); NNR_SH_LOAD(6); NNR_SH_LOAD(8);
            for (i = 0; i < n; i++) {
                P = &NNR_SH[bins[i]];
                NNR_SH_OPAQUE(P);
                NNR_SH_STEP(4, 6, 6); NNR_SH_STEP(5, 6, 6); NNR_SH_STEP(6, 6, 6); NNR_SH_STEP(8, 7, 5);
            }
            NNR_SH_STORE(4); NNR_SH_STORE(5); NNR_SH_STORE(6); NNR_SH_STORE(8);
        }
    }

    /* The same for a context whose bins are almost all equal: a block of NNR_SH_BLOCK equal bins
       that moves no estimator (saturated states) is charged in one step. */
    static void nnr_shadow_blocks(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) {
        Py_ssize_t i = 0, end;
        uint64_t w[NNR_SH_BLOCK / 8], same;
        const NnrShadowHalf* P;
        int x;
        NNR_SH_LOAD_ALL;
        while (i < n) {
            end = n;
            if (n - i >= NNR_SH_BLOCK) {
                end = i + NNR_SH_BLOCK;
                memcpy(w, bins + i, sizeof w);
                same = 0;
                for (x = 0; x < NNR_SH_BLOCK / 8; x++)
                    same |= w[x] ^ (bins[i] * 0x0101010101010101ull);
                if (same == 0) {
                    P = &NNR_SH[bins[i]];
                    if ((NNR_SH_MOVES(0, 5, 4) | NNR_SH_MOVES(1, 5, 4) | NNR_SH_MOVES(2, 5, 4)
                         | NNR_SH_MOVES(3, 4, 5) | NNR_SH_MOVES(4, 6, 6) | NNR_SH_MOVES(5, 6, 6)
                         | NNR_SH_MOVES(6, 6, 6) | NNR_SH_MOVES(8, 7, 5)) == 0) {
                        c7 += NNR_SH_BLOCK * P->cost[(o1_3 + 8 * 256) >> 3];
                        NNR_SH_RUN(0); NNR_SH_RUN(1); NNR_SH_RUN(2); NNR_SH_RUN(3); NNR_SH_RUN(4);
                        NNR_SH_RUN(5); NNR_SH_RUN(6); NNR_SH_RUN(8);
                        i = end;
                        continue;
                    }
                }
            }
            for (; i < end; i++)
                NNR_SH_BIN(i);
        }
        NNR_SH_STORE_ALL;
    }

    /* A run of r 1-bins from S0, S1 >= 0 through one set with steps d0 = 64 >> sh0, d1 = 64 >> sh1
       (d0 = 0: S0 never moves).  Returns the estimates' sum and leaves the states at the run's
       end. */
    static inline uint64_t nnr_sh_lin(intptr_t* s0p, intptr_t* s1p, intptr_t r, intptr_t d0,
                                      intptr_t d1) {
        intptr_t s0 = *s0p, s1 = *s1p, J0, J1, a, S;
        uint64_t c;
        const uint32_t* both = NNR_SH_LIN[d1 + 16 * d0];
        const uint32_t* only1 = NNR_SH_LIN[d1];
        const uint32_t* only0 = NNR_SH_LIN[16 * d0];
        /* steps each estimator still moves (no branches: the stretches come out of min/max) */
        J0 = (d0 == 0 || s0 >= 120) ? 0 : (120 - s0 + d0 - 1) / d0;
        J1 = s1 >= 1920 ? 0 : (1920 - s1 + d1 - 1) / d1;
        J0 = J0 < r ? J0 : r;
        J1 = J1 < r ? J1 : r;
        a = J0 < J1 ? J0 : J1;
        S = s1 + 16 * s0;
        c = both[S] - both[S + a * (d1 + 16 * d0)];
        S += a * (d1 + 16 * d0);
        c += only1[S] - only1[S + (J1 - a) * d1];                      /* S0 stopped */
        S += (J1 - a) * d1;
        c += only0[S] - only0[S + (J0 - a) * 16 * d0];                 /* S1 stopped */
        S += (J0 - a) * 16 * d0;
        c += (uint64_t)(r - (J0 > J1 ? J0 : J1)) * NNR_SH[1].cost[512 + (S >> 3)];
        *s0p = s0 + J0 * d0;
        *s1p = s1 + J1 * d1;
        return c;
    }
    #define NNR_SH_LINRUN(k, A, B) do {                                                     \\
            intptr_t s0 = (intptr_t)(o0_##k >> 1) - 128, s1 = (intptr_t)o1_##k - 2048;      \\
            c##k += nnr_sh_lin(&s0, &s1, r, 64 >> (A), 64 >> (B));                         \\
            o0_##k = 2 * (s0 + 128);                                                        \\
            o1_##k = s1 + 2048;                                                             \\
        } while (0)

    /* Consecutive 1-bins at p (at most n). */
    static inline Py_ssize_t nnr_ones_run(const uint8_t* p, Py_ssize_t n) {
        Py_ssize_t r = 0;
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \\
        __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        uint64_t w;
        while (r + 8 <= n) {            /* eight bins at a time: the first byte that is not 1 */
            memcpy(&w, p + r, 8);
            w ^= 0x0101010101010101ull;
            if (w) return r + (__builtin_ctzll(w) >> 3);
            r += 8;
        }
    #endif
        while (r < n && p[r]) r++;
        return r;
    }
    enum { NNR_SH_MINRUN = 4 };
    /* every estimator at S0, S1 >= 0 (o0 >= 256, o1 >= 2048): an OR of the signed margins */
    #define NNR_SH_NONNEG (((intptr_t)(o0_0 - 256) | (intptr_t)(o0_1 - 256) | (intptr_t)(o0_2 - 256)    \\
            | (intptr_t)(o0_3 - 256) | (intptr_t)(o0_4 - 256) | (intptr_t)(o0_5 - 256)                   \\
            | (intptr_t)(o0_6 - 256) | (intptr_t)(o0_8 - 256) | (intptr_t)(o1_0 - 2048)                  \\
            | (intptr_t)(o1_1 - 2048) | (intptr_t)(o1_2 - 2048) | (intptr_t)(o1_3 - 2048)                \\
            | (intptr_t)(o1_4 - 2048) | (intptr_t)(o1_5 - 2048) | (intptr_t)(o1_6 - 2048)                \\
            | (intptr_t)(o1_8 - 2048)) >= 0)
    #ifndef NNR_SH_ONES_NUM
    #define NNR_SH_ONES_NUM 17
    #define NNR_SH_ONES_DEN 20
    #endif

    /* The same for a context whose bins are mostly 1: a run of 1-bins that starts with every
       estimator at S0, S1 >= 0 is charged in closed form (nnr_sh_lin), set by set. */
    static void nnr_shadow_ones(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) {
        Py_ssize_t i = 0, r, end;
        const NnrShadowHalf* P;
        NNR_SH_LOAD_ALL;
        while (i < n) {
            if (!bins[i]) {
                NNR_SH_BIN(i);
                i++;
                continue;
            }
            r = nnr_ones_run(bins + i, n - i);
            end = i + r;
            /* step while some estimator is below 0, then the rest of the run in closed form */
            while (end - i >= NNR_SH_MINRUN && !NNR_SH_NONNEG) {
                NNR_SH_BIN(i);
                i++;
            }
            r = end - i;
            if (r >= NNR_SH_MINRUN) {
                {   /* set 7: S0 = 0 and set 3's S1, before set 3 moves it */
                    intptr_t s0 = 0, s1 = (intptr_t)o1_3 - 2048;
                    c7 += nnr_sh_lin(&s0, &s1, r, 0, 64 >> 5);
                }
                NNR_SH_LINRUN(0, 5, 4);
                NNR_SH_LINRUN(1, 5, 4);
                NNR_SH_LINRUN(2, 5, 4);
                NNR_SH_LINRUN(3, 4, 5);
                NNR_SH_LINRUN(4, 6, 6);
                NNR_SH_LINRUN(5, 6, 6);
                NNR_SH_LINRUN(6, 6, 6);
                NNR_SH_LINRUN(8, 7, 5);
                i = end;
                continue;
            }
            for (; i < end; i++)
                NNR_SH_BIN(i);
        }
        NNR_SH_STORE_ALL;
    }

    /* The bins of one context, in order, through all nine sets: with blocks when at most 1 in 64
       bins differs from the majority (measured: slower than the plain loop on mixed bins). */
    static void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) {
        Py_ssize_t i, ones = 0;
        if (n >= 4 * NNR_SH_BLOCK) {
            for (i = 0; i < n; i++)
                ones += bins[i];
            if (ones * 64 <= n) {
                nnr_shadow_blocks(m, bins, n);
                return;
            }
            if (ones * NNR_SH_ONES_DEN >= NNR_SH_ONES_NUM * n) {
                nnr_shadow_ones(m, bins, n);
                return;
            }
        }
        nnr_shadow_plain(m, bins, n);
    }
    """
    ctypedef struct NnrShadowCtx:
        int16_t S0[9]
        int16_t S1[9]
        uint64_t cost[9]
    int nnr_shadow_init(const int16_t* curve, const int16_t* sets, const uint32_t* bitcost) noexcept nogil
    void nnr_shadow_reset(NnrShadowCtx* m, const int16_t* sets) noexcept nogil
    void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) noexcept nogil
    int nnr_msb64(uint64_t x) noexcept nogil


# The pseudo pass's scratch: per-context estimators, a bucket of emitted bins per context, and the
# magnitudes of the positions whose greater-than and remainder flags the flush derives itself.
ctypedef struct Shadow:
    NnrShadowCtx* m         # nctx estimators
    int nctx
    int N                   # greater-than flags (§5.1)
    int ctx_gtx             # context of abs_level_greater_x[0], sign 0 (§6.1)
    int ctx_rem             # context of the remainder prefix bin 0
    uint8_t* bins           # nctx buckets of SHADOW_CHUNK bins each
    uint8_t** wp            # per context: where its next bin goes
    Py_ssize_t n            # bins emitted since the last flush (all buckets)
    int64_t* mag            # 2 |i| + (i < 0) of the nonzero positions, in coding order
    Py_ssize_t nmag
    int64_t* mag2           # flush scratch: the magnitudes that go on to the next flag
    uint8_t* neg_bins       # flush scratch: one flag's bins of negative positions
    uint8_t* pos_bins       # flush scratch: the same for positive ones


cdef enum:
    SHADOW_CHUNK = 1 << 13


cdef inline void shadow_emit(Shadow* sh, int ci, int bin) noexcept nogil:
    sh.wp[ci][0] = <uint8_t>bin
    sh.wp[ci] += 1


cdef inline void shadow_flags(Shadow* sh) noexcept nogil:
    """The greater-than flags and the remainder prefix of the listed positions (§5.1, as the pseudo
    pass binarizes): flag j's bins are, in order, (|i| > j + 1) of the positions with |i| >= j + 1,
    split by sign; the remainder prefix bin x's are (t > x) of those with t >= x, t = floor(log2(
    |i| - N)).  Each flag's survivors are compacted for the next one, without a branch per bin."""
    cdef int64_t* cur = sh.mag
    cdef int64_t* nxt = sh.mag2
    cdef int64_t* tmp
    cdef Py_ssize_t e, n = sh.nmag, nn, np_, nl
    cdef int j, x, neg
    cdef int64_t v, thr
    cdef uint8_t bin
    for j in range(sh.N):
        if n == 0:
            break
        nn = np_ = nl = 0
        thr = 2 * (j + 1) + 1                   # |i| > j + 1  <=>  2 |i| + neg > 2 (j + 1) + 1
        for e in range(n):
            v = cur[e]
            bin = v > thr
            neg = v & 1
            sh.neg_bins[nn] = bin
            nn += neg
            sh.pos_bins[np_] = bin
            np_ += 1 - neg
            nxt[nl] = v
            nl += bin
        if np_ > 0:
            nnr_shadow_run(&sh.m[sh.ctx_gtx + 2 * j], sh.pos_bins, np_)
        if nn > 0:
            nnr_shadow_run(&sh.m[sh.ctx_gtx + 2 * j + 1], sh.neg_bins, nn)
        tmp = cur
        cur = nxt
        nxt = tmp
        n = nl
    for e in range(n):                          # every survivor has |i| > N
        cur[e] = nnr_msb64(<uint64_t>((cur[e] >> 1) - sh.N))
    x = 0
    while n > 0:
        nl = 0
        for e in range(n):
            v = cur[e]
            bin = v > x
            sh.pos_bins[e] = bin
            nxt[nl] = v
            nl += bin
        nnr_shadow_run(&sh.m[sh.ctx_rem + x], sh.pos_bins, n)
        tmp = cur
        cur = nxt
        nxt = tmp
        n = nl
        x += 1
    sh.nmag = 0


cdef inline void shadow_flush(Shadow* sh) noexcept nogil:
    """Run every bucket's bins, and the listed positions' flags, through their contexts'
    estimators; empty the buckets and the list."""
    cdef int c
    cdef uint8_t* start
    for c in range(sh.nctx):
        start = sh.bins + <Py_ssize_t>c * SHADOW_CHUNK
        if sh.wp[c] != start:
            nnr_shadow_run(&sh.m[c], start, sh.wp[c] - start)
            sh.wp[c] = start
    shadow_flags(sh)
    sh.n = 0
