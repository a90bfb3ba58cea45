# cython: language_level=3
"""Shadow estimators of the encoder's parameter-set choice (NNC-CABAC-QUANT.md §6.5).

NNCodec charges every context's bins to nine probability models (the parameter sets of §4.2) and
keeps the cheapest.  Doing that bin by bin, interleaved across contexts, keeps the 27 estimator
values of a context in memory and pays a store-to-load round trip per bin.  Here the pseudo pass
only *emits* (context, bin) pairs into a chunk buffer; a flush sorts the chunk by context
(counting sort) and runs each context's bins through its nine estimators in registers, with the
§4.4 update and the §4.6 estimate as table lookups.  The sums are the same integers in another
order, so the chosen sets are exactly NNCodec's.

The two estimators of a set are independent (§4.4: S0 moves with sh0, S1 with sh1; only the
estimate reads S = S1 + 16*S0), so each has its own transition table: S0 reaches -123..123 and S1
-1923..1923 from every set's initial state, inside the tables' -128..127 and -2048..2047.
"""
from libc.stdint cimport uint8_t, uint16_t, int16_t, int32_t, uint32_t, uint64_t


cdef extern from *:
    """
    typedef struct {
        int16_t S0[9];
        int16_t S1[9];
        uint64_t cost[9];
    } NnrShadowCtx;

    /* One struct, so the kernel addresses all three tables from one base register. */
    typedef struct {
        uint32_t cost[1024][2];           /* §4.6 estimate, 512 + (S >> 3), bin */
        int16_t t0[4][256][2];            /* sh0 = 4..7, S0 + 128, bin -> S0 after the bin */
        int16_t t1[3][4096][2];           /* sh1 = 4..6, S1 + 2048, bin -> S1 after the bin */
    } NnrShadowTables;
    static NnrShadowTables NNR_SH;

    /* One §4.4 step of an estimator with `shift` and index divisor 2^div; a state outside the
       curve's domain (unreachable) stays put. */
    static int nnr_sh_next(const int16_t* curve, int s, int bin, int shift, int div) {
        int i = bin ? 16 + (s >> div) : 16 + ((-s) >> div);
        if (i < 0 || i > 31) return s;
        return bin ? s + (curve[i] >> shift) : s - (curve[i] >> shift);
    }

    /* Fills the tables; returns 0, or -1 if the parameter sets are not the ones the kernel's
       constant shifts assume. */
    static int nnr_shadow_init(const int16_t* curve, const int16_t* sets /* [9][4] */,
                               const uint32_t* bitcost /* [1024][2] */) {
        static const int sh[9][2] = {{5, 4}, {5, 4}, {5, 4}, {4, 5}, {6, 6}, {6, 6}, {6, 6},
                                     {7, 5}, {7, 5}};
        int k, s, b, n;
        for (k = 0; k < 9; k++)
            if (sets[4 * k] != sh[k][0] || sets[4 * k + 1] != sh[k][1]) return -1;
        for (k = 0; k < 4; k++)
            for (s = -128; s < 128; s++)
                for (b = 0; b < 2; b++) {
                    n = nnr_sh_next(curve, s, b, 4 + k, 3);
                    NNR_SH.t0[k][s + 128][b] = (int16_t)(n < -128 ? -128 : n > 127 ? 127 : n);
                }
        for (k = 0; k < 3; k++)
            for (s = -2048; s < 2048; s++)
                for (b = 0; b < 2; b++) {
                    n = nnr_sh_next(curve, s, b, 4 + k, 7);
                    NNR_SH.t1[k][s + 2048][b] = (int16_t)(n < -2048 ? -2048 : n > 2047 ? 2047 : n);
                }
        for (s = 0; s < 1024; s++) {
            NNR_SH.cost[s][0] = bitcost[2 * s];
            NNR_SH.cost[s][1] = bitcost[2 * s + 1];
        }
        return 0;
    }

    static void nnr_shadow_reset(NnrShadowCtx* m, const int16_t* sets) {
        int k;
        for (k = 0; k < 9; k++) {
            m->S0[k] = sets[4 * k + 2];
            m->S1[k] = sets[4 * k + 3];
        }
    }

    /* Estimate, then update, set k with shifts (A, B) for bin b. */
    #define NNR_SH_STEP(k, A, B) do {                                              \\
            c##k += NNR_SH.cost[512 + ((s1_##k + 16 * s0_##k) >> 3)][b];         \\
            s0_##k = NNR_SH.t0[(A) - 4][s0_##k + 128][b];                          \\
            s1_##k = NNR_SH.t1[(B) - 4][s1_##k + 2048][b];                         \\
        } while (0)
    #define NNR_SH_LOAD(k) intptr_t s0_##k = m->S0[k], s1_##k = m->S1[k]; uint64_t c##k = 0
    #define NNR_SH_STORE(k) do { m->S0[k] = (int16_t)s0_##k; m->S1[k] = (int16_t)s1_##k;  \\
                                 m->cost[k] += c##k; } while (0)

    /* The bins of one context, in order, through all nine sets: one pass over the bins per
       three sets, so that most of each group's values stay in registers (measured: faster than
       one pass with all nine or passes of two). */
    #define NNR_SH_TRIPLE(k, A, B, l, C, D, o, E, F) do {                          \\
            NNR_SH_LOAD(k); NNR_SH_LOAD(l); NNR_SH_LOAD(o);                      \\
            for (i = 0; i < n; i++) {                                            \\
                b = bins[i];                                                     \\
                NNR_SH_STEP(k, A, B); NNR_SH_STEP(l, C, D); NNR_SH_STEP(o, E, F);\\
            }                                                                    \\
            NNR_SH_STORE(k); NNR_SH_STORE(l); NNR_SH_STORE(o);                   \\
        } while (0)
    static void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) {
        Py_ssize_t i;
        intptr_t b;
        NNR_SH_TRIPLE(0, 5, 4, 1, 5, 4, 2, 5, 4);
        NNR_SH_TRIPLE(3, 4, 5, 4, 6, 6, 5, 6, 6);
        NNR_SH_TRIPLE(6, 6, 6, 7, 7, 5, 8, 7, 5);
    }
    """
    ctypedef struct NnrShadowCtx:
        int16_t S0[9]
        int16_t S1[9]
        uint64_t cost[9]
    int nnr_shadow_init(const int16_t* curve, const int16_t* sets, const uint32_t* bitcost) noexcept nogil
    void nnr_shadow_reset(NnrShadowCtx* m, const int16_t* sets) noexcept nogil
    void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, Py_ssize_t n) noexcept nogil


# The pseudo pass's scratch: per-context estimators and the chunk of emitted (context, bin) pairs.
ctypedef struct Shadow:
    NnrShadowCtx* m         # nctx estimators
    int nctx
    uint16_t* buf           # (context << 1) | bin, in coding order
    uint8_t* bins           # the chunk's bins grouped by context (flush scratch)
    int32_t* pos            # nctx + 1 group offsets (flush scratch)
    Py_ssize_t n
    Py_ssize_t cap


cdef enum:
    SHADOW_CHUNK = 1 << 15


cdef inline void shadow_emit(Shadow* sh, int ci, int bin) noexcept nogil:
    sh.buf[sh.n] = <uint16_t>((ci << 1) | bin)
    sh.n += 1


cdef inline void shadow_flush(Shadow* sh) noexcept nogil:
    """Run the chunk's bins through their contexts' estimators; empty the chunk."""
    cdef Py_ssize_t i, n = sh.n
    cdef int c
    cdef int32_t acc = 0, cnt
    cdef int32_t* pos = sh.pos
    if n == 0:
        return
    for c in range(sh.nctx + 1):
        pos[c] = 0
    for i in range(n):
        pos[(sh.buf[i] >> 1) + 1] += 1
    for c in range(sh.nctx + 1):                 # exclusive prefix sums: group starts
        cnt = pos[c]
        pos[c] = acc
        acc += cnt
    for i in range(n):                           # pos[c + 1] runs through group c
        c = sh.buf[i] >> 1
        sh.bins[pos[c + 1]] = sh.buf[i] & 1
        pos[c + 1] += 1
    for c in range(sh.nctx):                     # group c is bins[pos[c] .. pos[c + 1])
        if pos[c + 1] > pos[c]:
            nnr_shadow_run(&sh.m[c], sh.bins + pos[c], pos[c + 1] - pos[c])
    sh.n = 0
