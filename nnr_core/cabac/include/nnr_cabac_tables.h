/* The DeepCABAC tables of spec/CABAC.md, written once for every Cython module and header:
   Appendix A.1 (rLPS), Appendix A.2 (the adaptation curve), the parameter sets of CABAC §4.2 and
   the DQ state transitions of CABAC §8.1.  Tables derived from these are computed from them
   (nnr_wengine.h, nnr_shadow.h, the encoder's level-loop tables), never typed again. */
#ifndef NNR_CABAC_TABLES_H
#define NNR_CABAC_TABLES_H

#include <stdint.h>

/* Appendix A.1: rLPS = NNR_RLPS_TABLE[(R >> 5) & 7][abs(S >> 7)]. */
static const uint8_t NNR_RLPS_TABLE[8][32] = {
    {128, 112, 97, 84, 74, 65, 57, 50, 45, 39, 34, 30, 27, 23, 20, 18, 15, 14, 12, 11, 10, 9, 7, 7, 5, 5, 4, 4, 3, 3, 2, 2},
    {142, 125, 108, 93, 82, 72, 63, 56, 50, 43, 38, 33, 30, 26, 22, 20, 17, 16, 13, 12, 11, 10, 8, 8, 6, 6, 5, 5, 3, 3, 2, 2},
    {156, 137, 119, 103, 90, 79, 70, 61, 55, 48, 42, 37, 33, 28, 24, 22, 19, 17, 15, 13, 12, 11, 9, 9, 6, 6, 5, 5, 4, 4, 2, 2},
    {171, 150, 130, 112, 99, 87, 76, 67, 60, 52, 46, 40, 36, 31, 27, 24, 21, 19, 16, 15, 13, 12, 10, 10, 7, 7, 6, 6, 4, 4, 3, 3},
    {185, 162, 141, 121, 107, 94, 82, 73, 65, 56, 50, 43, 39, 34, 29, 26, 22, 21, 17, 16, 14, 13, 11, 11, 8, 8, 6, 6, 4, 4, 3, 3},
    {199, 175, 152, 131, 115, 101, 89, 78, 70, 61, 54, 47, 42, 36, 31, 28, 24, 22, 19, 17, 15, 14, 12, 12, 8, 8, 7, 7, 5, 5, 3, 3},
    {213, 187, 163, 140, 123, 108, 95, 84, 75, 65, 58, 50, 45, 39, 33, 30, 26, 24, 20, 18, 16, 15, 13, 13, 9, 9, 7, 7, 5, 5, 3, 3},
    {228, 200, 174, 150, 132, 116, 102, 90, 80, 70, 62, 54, 48, 42, 36, 32, 28, 26, 22, 20, 18, 16, 14, 14, 10, 10, 8, 8, 6, 6, 4, 4},
};

/* Appendix A.2: adaptation step, indexed 16 + ((g*S0) >> 3) or 16 + ((g*S1) >> 7). */
static const int16_t NNR_CURVE[32] = {
    2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208,
    144, 80, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0
};

/* CABAC §4.2 parameter sets k = 0..8: sh0, sh1, initial S0, initial S1. */
enum { NNR_NUM_PARAM_SETS = 9 };
static const int16_t NNR_PARAM_SETS[NNR_NUM_PARAM_SETS][4] = {
    {5, 4, 0, 0}, {5, 4, -41, -654}, {5, 4, 95, 1519},
    {4, 5, 0, 0}, {6, 6, 30, 482}, {6, 6, 95, 1519},
    {6, 6, -21, -337}, {7, 5, 0, 0}, {7, 5, 30, 482}
};

/* CABAC §8.1 DQ state transitions NEXT[s][parity]. */
static const uint8_t NNR_DQ_NEXT[8][2] = {
    {0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6}
};

/* NEXT[.][0] applied m times (m = 0..3).  The parity-0 permutation has cycles of length
   1 (0), 1 (5), 4 (1 7 4 2) and 2 (3 6), so RowWidth transitions = (RowWidth mod 4) ones. */
static const uint8_t NNR_DQ_ADV0[4][8] = {
    {0, 1, 2, 3, 4, 5, 6, 7},
    {0, 7, 1, 6, 2, 5, 3, 4},
    {0, 4, 7, 3, 1, 5, 6, 2},
    {0, 2, 4, 6, 7, 5, 3, 1}
};

/* rLPS for a range R = 128..511 that may still owe its MPS renormalisation (R < 256 stands for
   2R), by x = R >> 4: q = x & 7 below 256 (x = 8..15), (x >> 1) & 7 above (x = 16..31); 0 for
   x < 8, which no range reaches.  The level loops' rLPS tables are filled from it. */
static inline unsigned nnr_rlps_r4(int p, int x) {
    if (x < 8)
        return 0;
    return NNR_RLPS_TABLE[x < 16 ? (x & 7) : ((x >> 1) & 7)][p];
}

/* Number of left shifts that bring an rLPS (2..255) to >= 256. */
static inline int nnr_renorm_shift(unsigned int r) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_clz(r) - 23;
#else
    int n = 0;
    while (r < 256) { r <<= 1; n++; }
    return n;
#endif
}

#endif
