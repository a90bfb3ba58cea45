/* The parameter-set kernel of nnr_shadow.h (CABAC §6.5), compiled into
   nnr_core.cabac._enc_pseudo. */
#include <string.h>

#include "nnr_bits.h"
#include "nnr_cabac_tables.h"
#include "nnr_shadow.h"

/* The tables of one bin value, so the kernel addresses all of them from one base register. */
typedef struct {
    uint64_t cost[1024];              /* CABAC §4.6 estimate of the bin, 512 + (S >> 3) */
    uint16_t t0[4][256];              /* sh0 = 4..7: S0 + 128 -> 2 (S0' + 128) */
    uint16_t t1[3][4096];             /* sh1 = 4..6: S1 + 2048 -> S1' + 2048 */
} NnrShadowHalf;
static NnrShadowHalf NNR_SH[2];

/* The shifts and the constant 1-bin steps (CABAC §4.4: curve[16..30] = 64) of set k. */
#define NNR_SH_A(k) NNR_PARAM_SETS[k][0]
#define NNR_SH_B(k) NNR_PARAM_SETS[k][1]
#define NNR_SH_D0(k) (NNR_CURVE[16] >> NNR_SH_A(k))
#define NNR_SH_D1(k) (NNR_CURVE[16] >> NNR_SH_B(k))

/* Runs of 1-bins from states S0, S1 >= 0: every step adds 64 >> shift until S0 >= 120 or
   S1 >= 1920 stops it (CABAC §4.4: curve[16..30] = 64, curve[31] = 0), so S = S1 + 16 S0 moves by a
   constant D between those points: d1 + 16 d0 while both move, d1 or 16 d0 while one does.
   NNR_SH_LIN[D][S] = the bin-1 estimates of S, S + D, S + 2D, ... below 4096, for the slopes of
   the nine sets (at most three each), so that a stretch of a run costs two lookups (D = 0
   stretches are empty: any table serves them). */
/* the steepest slope: d0, d1 <= 64 >> 4 (nnr_shadow_init checks every shift is >= 4) */
enum { NNR_SH_MAXSLOPE = (64 >> 4) * 17, NNR_SH_MAXTABLES = 3 * NNR_NUM_PARAM_SETS };
static uint32_t NNR_SH_LINTAB[NNR_SH_MAXTABLES][4096];
static const uint32_t* NNR_SH_LIN[NNR_SH_MAXSLOPE + 1];

/* One CABAC §4.4 step of an estimator with `shift` and index divisor 2^div; a state outside the
   curve's domain (unreachable) stays put. */
static int nnr_sh_next(int s, int bin, int shift, int div) {
    int i = bin ? 16 + (s >> div) : 16 + ((-s) >> div);
    if (i < 0 || i > 31) return s;
    return bin ? s + (NNR_CURVE[i] >> shift) : s - (NNR_CURVE[i] >> shift);
}

/* NNR_SH_LIN[D] filled, unless D is 0 or already has its table (*used: tables taken so far) */
static void nnr_sh_lin_table(int D, int* used) {
    int s;
    uint32_t* t;
    if (D == 0 || NNR_SH_LIN[D] != NULL)
        return;
    t = NNR_SH_LINTAB[(*used)++];
    for (s = 4095; s >= 0; s--)
        t[s] = (uint32_t)NNR_SH[1].cost[512 + (s >> 3)] + (s + D < 4096 ? t[s + D] : 0);
    NNR_SH_LIN[D] = t;
}

int nnr_shadow_init(const uint32_t* bitcost) {
    int k, s, b, n, used = 0;
    for (k = 0; k < NNR_NUM_PARAM_SETS; k++)
        if (NNR_SH_A(k) < 4 || NNR_SH_A(k) > 7 || NNR_SH_B(k) < 4 || NNR_SH_B(k) > 6)
            return -1;
    if (NNR_PARAM_SETS[7][2] != 0 || NNR_SH_D0(7) != 0 || NNR_SH_B(7) != NNR_SH_B(3)
            || NNR_PARAM_SETS[7][3] != NNR_PARAM_SETS[3][3])
        return -1;
    for (k = 16; k < 31; k++)
        if (NNR_CURVE[k] != NNR_CURVE[16]) return -1;
    if (NNR_CURVE[31] != 0) return -1;
    for (b = 0; b < 2; b++) {
        for (k = 0; k < 4; k++)
            for (s = -128; s < 128; s++) {
                n = nnr_sh_next(s, b, 4 + k, 3);
                NNR_SH[b].t0[k][s + 128] = (uint16_t)(2 * ((n < -128 ? -128 : n > 127 ? 127 : n) + 128));
            }
        for (k = 0; k < 3; k++)
            for (s = -2048; s < 2048; s++) {
                n = nnr_sh_next(s, b, 4 + k, 7);
                NNR_SH[b].t1[k][s + 2048] = (uint16_t)((n < -2048 ? -2048 : n > 2047 ? 2047 : n) + 2048);
            }
        for (s = 0; s < 1024; s++)
            NNR_SH[b].cost[s] = bitcost[2 * s + b];
    }
    for (k = 0; k <= NNR_SH_MAXSLOPE; k++)
        NNR_SH_LIN[k] = NULL;
    for (k = 0; k < NNR_NUM_PARAM_SETS; k++) {
        nnr_sh_lin_table(NNR_SH_D1(k) + 16 * NNR_SH_D0(k), &used);
        nnr_sh_lin_table(NNR_SH_D1(k), &used);
        nnr_sh_lin_table(16 * NNR_SH_D0(k), &used);
    }
    for (k = 0; k <= NNR_SH_MAXSLOPE; k++)
        if (NNR_SH_LIN[k] == NULL)
            NNR_SH_LIN[k] = NNR_SH_LINTAB[0];
    return 0;
}

void nnr_shadow_reset(NnrShadowCtx* m) {
    int k;
    for (k = 0; k < NNR_NUM_PARAM_SETS; k++) {
        m->S0[k] = NNR_PARAM_SETS[k][2];
        m->S1[k] = NNR_PARAM_SETS[k][3];
    }
}

/* Estimate, then update, set k for the bin whose tables P points at. */
#define NNR_SH_STEP(k) do {                                                                \
        c##k += P->cost[(o1_##k + 8 * o0_##k) >> 3];                                      \
        o0_##k = *(const uint16_t*)((const char*)P->t0[NNR_SH_A(k) - 4] + o0_##k);        \
        o1_##k = P->t1[NNR_SH_B(k) - 4][o1_##k];                                          \
    } while (0)
#define NNR_SH_LOAD(k) uintptr_t o0_##k = 2 * (m->S0[k] + 128), o1_##k = m->S1[k] + 2048; \
                       uint64_t c##k = 0
#define NNR_SH_STORE(k) do { m->S0[k] = (int16_t)((intptr_t)(o0_##k >> 1) - 128);          \
                             m->S1[k] = (int16_t)((intptr_t)o1_##k - 2048);                \
                             m->cost[k] += c##k; } while (0)

#define NNR_SH_LOAD_ALL NNR_SH_LOAD(0); NNR_SH_LOAD(1); NNR_SH_LOAD(2); NNR_SH_LOAD(3);       \
                        NNR_SH_LOAD(4); NNR_SH_LOAD(5); NNR_SH_LOAD(6); NNR_SH_LOAD(8);       \
                        uint64_t c7 = 0
#define NNR_SH_STORE_ALL do { NNR_SH_STORE(0); NNR_SH_STORE(1); NNR_SH_STORE(2);               \
        NNR_SH_STORE(3); NNR_SH_STORE(4); NNR_SH_STORE(5); NNR_SH_STORE(6); NNR_SH_STORE(8);  \
        m->S1[7] = m->S1[3]; m->cost[7] += c7; } while (0)
/* Set 7: S0 stays at its initial 0 (o0 = 256), S1 is set 3's. */
#define NNR_SH_SET7 c7 += P->cost[(o1_3 + 8 * 256) >> 3]
/* bins[i] through the nine sets; the base is opaque, otherwise GCC rebuilds every address
   from NNR_SH and the bin (measured: 5.8 against 4.5 ns per bin) */
#define NNR_SH_BIN(i) do {                                                                 \
        P = &NNR_SH[bins[i]];                                                              \
        NNR_OPAQUE(P);                                                                     \
        NNR_SH_SET7;                                                                       \
        NNR_SH_STEP(0); NNR_SH_STEP(1); NNR_SH_STEP(2); NNR_SH_STEP(3);                    \
        NNR_SH_STEP(4); NNR_SH_STEP(5); NNR_SH_STEP(6); NNR_SH_STEP(8);                    \
    } while (0)

/* Whether bin value P moves set k's estimators (else a run of it costs the same per bin
   and leaves the state as it is). */
#define NNR_SH_MOVES(k) ((*(const uint16_t*)((const char*)P->t0[NNR_SH_A(k) - 4] + o0_##k) ^ o0_##k) \
                         | (P->t1[NNR_SH_B(k) - 4][o1_##k] ^ o1_##k))
#define NNR_SH_RUN(k) c##k += NNR_SH_BLOCK * P->cost[(o1_##k + 8 * o0_##k) >> 3]
enum { NNR_SH_BLOCK = 32 };

/* The bins of one context, in order, through all nine sets: in two passes of four sets
   (and set 7), whose values all stay in registers (measured: 4.5 against 5.0 ns per bin for
   one pass of all nine, which spills). */
static void nnr_shadow_plain(NnrShadowCtx* m, const uint8_t* bins, ptrdiff_t n) {
    ptrdiff_t i;
    const NnrShadowHalf* P;
    {
        NNR_SH_LOAD(0); NNR_SH_LOAD(1); NNR_SH_LOAD(2); NNR_SH_LOAD(3);
        uint64_t c7 = 0;
        for (i = 0; i < n; i++) {
            P = &NNR_SH[bins[i]];
            NNR_OPAQUE(P);
            NNR_SH_SET7;
            NNR_SH_STEP(0); NNR_SH_STEP(1); NNR_SH_STEP(2); NNR_SH_STEP(3);
        }
        NNR_SH_STORE(0); NNR_SH_STORE(1); NNR_SH_STORE(2); NNR_SH_STORE(3);
        m->S1[7] = m->S1[3];
        m->cost[7] += c7;
    }
    {
        NNR_SH_LOAD(4); NNR_SH_LOAD(5); NNR_SH_LOAD(6); NNR_SH_LOAD(8);
        for (i = 0; i < n; i++) {
            P = &NNR_SH[bins[i]];
            NNR_OPAQUE(P);
            NNR_SH_STEP(4); NNR_SH_STEP(5); NNR_SH_STEP(6); NNR_SH_STEP(8);
        }
        NNR_SH_STORE(4); NNR_SH_STORE(5); NNR_SH_STORE(6); NNR_SH_STORE(8);
    }
}

/* The same for a context whose bins are almost all equal: a block of NNR_SH_BLOCK equal bins
   that moves no estimator (saturated states) is charged in one step. */
static void nnr_shadow_blocks(NnrShadowCtx* m, const uint8_t* bins, ptrdiff_t n) {
    ptrdiff_t i = 0, end;
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
                if ((NNR_SH_MOVES(0) | NNR_SH_MOVES(1) | NNR_SH_MOVES(2) | NNR_SH_MOVES(3)
                     | NNR_SH_MOVES(4) | NNR_SH_MOVES(5) | NNR_SH_MOVES(6) | NNR_SH_MOVES(8)) == 0) {
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
#define NNR_SH_LINRUN(k) do {                                                           \
        intptr_t s0 = (intptr_t)(o0_##k >> 1) - 128, s1 = (intptr_t)o1_##k - 2048;      \
        c##k += nnr_sh_lin(&s0, &s1, r, NNR_SH_D0(k), NNR_SH_D1(k));                   \
        o0_##k = 2 * (s0 + 128);                                                        \
        o1_##k = s1 + 2048;                                                             \
    } while (0)

/* Consecutive 1-bins at p (at most n). */
static inline ptrdiff_t nnr_ones_run(const uint8_t* p, ptrdiff_t n) {
    ptrdiff_t r = 0;
#ifdef NNR_LITTLE_ENDIAN_GNU
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
#define NNR_SH_NONNEG (((intptr_t)(o0_0 - 256) | (intptr_t)(o0_1 - 256) | (intptr_t)(o0_2 - 256)    \
        | (intptr_t)(o0_3 - 256) | (intptr_t)(o0_4 - 256) | (intptr_t)(o0_5 - 256)                   \
        | (intptr_t)(o0_6 - 256) | (intptr_t)(o0_8 - 256) | (intptr_t)(o1_0 - 2048)                  \
        | (intptr_t)(o1_1 - 2048) | (intptr_t)(o1_2 - 2048) | (intptr_t)(o1_3 - 2048)                \
        | (intptr_t)(o1_4 - 2048) | (intptr_t)(o1_5 - 2048) | (intptr_t)(o1_6 - 2048)                \
        | (intptr_t)(o1_8 - 2048)) >= 0)
#ifndef NNR_SH_ONES_NUM
#define NNR_SH_ONES_NUM 17
#define NNR_SH_ONES_DEN 20
#endif

/* The same for a context whose bins are mostly 1: a run of 1-bins that starts with every
   estimator at S0, S1 >= 0 is charged in closed form (nnr_sh_lin), set by set. */
static void nnr_shadow_ones(NnrShadowCtx* m, const uint8_t* bins, ptrdiff_t n) {
    ptrdiff_t i = 0, r, end;
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
                c7 += nnr_sh_lin(&s0, &s1, r, NNR_SH_D0(7), NNR_SH_D1(7));
            }
            NNR_SH_LINRUN(0);
            NNR_SH_LINRUN(1);
            NNR_SH_LINRUN(2);
            NNR_SH_LINRUN(3);
            NNR_SH_LINRUN(4);
            NNR_SH_LINRUN(5);
            NNR_SH_LINRUN(6);
            NNR_SH_LINRUN(8);
            i = end;
            continue;
        }
        for (; i < end; i++)
            NNR_SH_BIN(i);
    }
    NNR_SH_STORE_ALL;
}

/* nnr_shadow_plain, or with blocks when at most 1 in 64 bins differs from the majority
   (measured: slower than the plain loop on mixed bins), or runs of 1s in closed form when at
   least 17 in 20 are 1s. */
void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, ptrdiff_t n) {
    ptrdiff_t i, ones = 0;
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
