/* Tables of the decoder's level-loop engine (_wengine.pxd), derived from nnr_cabac_tables.h by
   nnr_wengine_init(), which a module calls once before it decodes. */
#ifndef NNR_WENGINE_H
#define NNR_WENGINE_H

#include <stdint.h>

#include "nnr_cabac_tables.h"

/* rLPS for a range R = 128..511 that may still owe its MPS renormalisation (R < 256 stands for
   2R): NNR_RLPS_R4[32 * p + (R >> 4)] = nnr_rlps_r4(p, R >> 4). */
static uint8_t NNR_RLPS_R4[32 * 32];
/* NNR_CURVE[i] >> sh for sh = 0..7: NNR_CURVE_SH[32*sh + 16 + x] is the CABAC §4.4 step. */
static int16_t NNR_CURVE_SH[8 * 32];

static inline void nnr_wengine_init(void) {
    int p, x, sh;
    for (p = 0; p < 32; p++)
        for (x = 0; x < 32; x++)
            NNR_RLPS_R4[32 * p + x] = (uint8_t)nnr_rlps_r4(p, x);
    for (sh = 0; sh < 8; sh++)
        for (x = 0; x < 32; x++)
            NNR_CURVE_SH[32 * sh + x] = (int16_t)(NNR_CURVE[x] >> sh);
}

#endif
