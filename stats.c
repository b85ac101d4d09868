// stats.c: Pearson correlation and the paired t-interval (contract in stats.h).
#include "stats.h"

#include <math.h>

double stats_pearson(const double *x, const double *y, int n) {
    if (n < 2) return NAN;
    double mx = 0, my = 0;
    for (int i = 0; i < n; i++) mx += x[i], my += y[i];
    mx /= n, my /= n;
    // two passes: advantages are z-scores around 0 and mistakes small counts, but a one-pass
    // formula would still cancel badly on near-constant inputs
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxy += dx * dy, sxx += dx * dx, syy += dy * dy;
    }
    if (!(sxx > 0) || !(syy > 0)) return NAN;
    double r = sxy / sqrt(sxx * syy) + 0.0;  // + 0.0: no "-0.0000" in the logs
    return r > 1 ? 1 : r < -1 ? -1 : r;       // rounding can step just outside [-1, 1]
}

double stats_t975(int df) {
    // t_{0.975, df}, df = 1..30 (standard tables)
    static const double T[30] = {
        12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
        2.2010,  2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
        2.0796,  2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
    if (df < 1) return NAN;
    if (df <= 30) return T[df - 1];
    // Cornish-Fisher expansion of t in powers of 1/df around the normal quantile z
    const double z = 1.959963984540054, z2 = z * z, v = df;
    double g1 = (z2 + 1) * z / 4;
    double g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    double g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    return z + g1 / v + g2 / (v * v) + g3 / (v * v * v);
}

int stats_paired_ci(const double *a, const double *b, int n, double *mean, double *lo,
                    double *hi) {
    double m = 0;
    for (int i = 0; i < n; i++) m += a[i] - b[i];
    m = n > 0 ? m / n : 0;
    *mean = m;
    if (n < 2) {
        *lo = *hi = NAN;
        return n;
    }
    double ss = 0;
    for (int i = 0; i < n; i++) {
        double d = a[i] - b[i] - m;
        ss += d * d;
    }
    double half = stats_t975(n - 1) * sqrt(ss / (n - 1)) / sqrt((double)n);
    *lo = m - half;
    *hi = m + half;
    return n;
}
