/* Shadow estimators of the encoder's parameter-set choice (CABAC §6.5).

   NNCodec charges every context's bins to nine probability models (the parameter sets of
   CABAC §4.2) and keeps the cheapest.  The pseudo pass (_enc_pseudo.pyx) puts each context's bins
   into a bucket of its own; nnr_shadow_run takes one bucket through the context's nine estimators
   in registers, with the CABAC §4.4 update and the CABAC §4.6 estimate as table lookups.  The sums
   are the same integers in another order, so the chosen sets are exactly NNCodec's.

   The two estimators of a set are independent (CABAC §4.4: S0 moves with sh0, S1 with sh1; only the
   estimate reads S = S1 + 16*S0), so each has its own transition table: S0 reaches -123..123 and
   S1 -1923..1923 from every set's initial state, inside the tables' -128..127 and -2048..2047.
   The kernel keeps o0 = 2 (S0 + 128) (a byte offset into the S0 table) and o1 = S1 + 2048, so
   that a step is one load per estimator and 512 + (S >> 3) = (o1 + 8 o0) >> 3; each bin value has
   its own tables, picked once per bin.  Set 7 (sh0 = 7, S0 = 0) never moves S0 (64 >> 7 = 0) and
   its S1 runs exactly as set 3's (same sh1 and initial state), so it costs one lookup per bin.

   The shifts are NNR_PARAM_SETS's (nnr_cabac_tables.h), read with constant indices, so the
   compiler folds them into the kernel; nnr_shadow_init refuses parameter sets the kernel's
   layout cannot hold. */
#ifndef NNR_SHADOW_H
#define NNR_SHADOW_H

#include <stddef.h>
#include <stdint.h>

#include "nnr_cabac_tables.h"

/* The nine estimators of one context and their accumulated CABAC §4.6 estimates (one per set). */
typedef struct {
    int16_t S0[NNR_NUM_PARAM_SETS];
    int16_t S1[NNR_NUM_PARAM_SETS];
    uint64_t cost[NNR_NUM_PARAM_SETS];
} NnrShadowCtx;

/* Fills the kernel's tables from the CABAC §4.6 estimates bitcost[1024][2] (BIT_COST of
   bitcost.py); returns 0, or -1 if the parameter sets or the curve are not what the kernel's layout
   (the tables' shift ranges, set 7's shortcut, the closed-form runs) assumes.  Call once before the
   others. */
int nnr_shadow_init(const uint32_t* bitcost);

/* Every estimator of m back to its set's initial state; the costs keep accumulating. */
void nnr_shadow_reset(NnrShadowCtx* m);

/* The bins of one context (values 0 / 1), in order, through all nine sets. */
void nnr_shadow_run(NnrShadowCtx* m, const uint8_t* bins, ptrdiff_t n);

#endif
