/* Overflow limits of the quantizers as NNCodec's (1 << 31) arithmetic wraps them
   (CABAC §9.3, CABAC §8.3). */
#ifndef NNR_QUANT_LIMITS_H
#define NNR_QUANT_LIMITS_H

static const double NNR_URQ_MAX = 2147483647.0;
static const double NNR_URQ_MIN = -2147483648.0;
static const double NNR_TCQ_MAX = 2147483645.0;
static const double NNR_TCQ_MIN = -2147483646.0;

#endif
