// stats.h: the few statistics the trainer reports: Pearson correlation (the credit-quality
// metric, docs/design.md "Credit quality") and the paired t confidence interval of the final
// table (README "Evaluation"). Pure functions, no allocation.
#ifndef MEMR2_STATS_H
#define MEMR2_STATS_H

// Pearson correlation of x and y, n pairs. Returns NAN when it is undefined: n < 2 or either
// side constant (a step whose advantages are all 0 has no credit quality to measure).
double stats_pearson(const double *x, const double *y, int n);

// The two-sided 97.5% quantile of Student's t with df degrees of freedom (df >= 1): the factor of
// a 95% confidence interval. Exact table to df 30, Cornish-Fisher expansion above (error < 1e-4).
double stats_t975(int df);

// Paired comparison over n episodes: d_i = a_i - b_i. Writes the mean difference and its 95%
// t-interval [lo, hi] = mean -+ t975(n-1) * sd(d) / sqrt(n), sd the sample std (n-1). n < 2:
// mean as is (0 if n = 0) and lo = hi = NAN. Returns n.
int stats_paired_ci(const double *a, const double *b, int n, double *mean, double *lo, double *hi);

#endif
