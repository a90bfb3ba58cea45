/* The tables of the encoder's level-loop engine (_enc_loop.pxd, which describes them and fills
   them with loop_tables_init).  Static storage: only _enc_levels.pyx includes this header, so
   the level loops reach the tables at a fixed address. */
#ifndef NNR_ENC_LOOP_H
#define NNR_ENC_LOOP_H

#include <stdint.h>

typedef struct {
    int16_t radd;
    uint8_t n;
    uint8_t rl;
} NnrLoopStep;

typedef struct {
    NnrLoopStep step[2][64][32];
    int32_t s0[2][1024];
    int16_t s1[512];
} NnrLoopTables;

static NnrLoopTables NNR_LT;

#endif
