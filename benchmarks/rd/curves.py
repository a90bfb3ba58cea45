"""Comparing RD curves at equal task metric: upper envelopes, interpolation, bits saved.

A curve is a list of (bits per parameter, metric). `higher` says whether a larger metric is better;
lower-is-better metrics (errors) are negated inside, so everything below reads "higher is better".
"""
import math


def envelope(points, higher=True):
    """The curve's upper envelope: the points no other point beats (no fewer bits with an equal or
    better metric), sorted by bits; bits and metric both strictly increase along it."""
    sign = 1.0 if higher else -1.0
    pts = sorted(((float(b), sign * float(m)) for b, m in points if m is not None and math.isfinite(m)),
                 key=lambda p: (p[0], -p[1]))
    out = []
    for b, m in pts:
        if not out or m > out[-1][1]:
            out.append((b, m))
    return [(b, sign * m) for b, m in out]


def bits_at(points, target, higher=True):
    """(bits, how) where the curve first reaches metric `target` on its upper envelope:
    how = "interpolated" (linear between the two envelope points around it), "at or below" (already
    reached at the curve's cheapest point: the bits are an upper bound), or "not reached" (bits None)."""
    sign = 1.0 if higher else -1.0
    env = [(b, sign * m) for b, m in envelope(points, higher)]
    t = sign * float(target)
    for i, (b, m) in enumerate(env):
        if m >= t:
            if i == 0:
                return b, "at or below"
            b0, m0 = env[i - 1]
            return b0 + (b - b0) * (t - m0) / (m - m0), "interpolated"
    return None, "not reached"


def saving(bits, ref_bits):
    """Bits saved against the reference, in % of the reference's bits (positive: fewer bits)."""
    if bits is None or ref_bits is None or ref_bits <= 0:
        return None
    return 100.0 * (1.0 - bits / ref_bits)
