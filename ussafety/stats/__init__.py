"""The one statistics path of the project: every interval, test and correction comes from here.

Every method is evaluated on the same prompt set, so comparisons are *paired*: per-prompt
outcomes of two methods are correlated, and paired tests (McNemar, paired bootstrap) have
far more power than comparing two independent proportions. Where scipy or statsmodels
already implement a procedure, this module only adapts its inputs and outputs (names,
validation, the empty and degenerate cases), so there is one implementation to trust:

- :func:`wilson_interval`: statsmodels ``proportion_confint(method="wilson")``; Wilson
  behaves at 0% and 100% ASR, where the normal-approximation interval collapses;
- :func:`mcnemar_exact`: statsmodels ``mcnemar(exact=True)`` (the binomial test of the
  discordant pairs);
- :func:`holm_correction`: statsmodels ``multipletests(method="holm")``;
- :func:`cohens_kappa`: statsmodels ``inter_rater.cohens_kappa`` on the raters' table;
- :func:`paired_bootstrap_diff`: scipy ``stats.bootstrap`` (paired, percentile);
- :func:`cluster_bootstrap`: the two-level (seed, prompt) bootstrap, which neither library
  has; with one seed it is the one-level percentile bootstrap over prompts.
- :func:`paired_tost` (two one-sided Tango score tests) and the power closed forms
  (:func:`mcnemar_sample_size`, :func:`mcnemar_mde`, :func:`tost_sample_size`), each cited where defined.

Every bootstrap draws :data:`N_BOOT` resamples from :data:`BOOT_SEED`: one size for every
table, so one condition never shows two intervals, and :data:`CLUSTER_CI` says so in the
captions.

Modules: ``base`` (the shared constants and argument checks), ``intervals`` (Wilson, McNemar,
Holm, kappa, Kendall, the Pareto front), ``bootstrap`` (paired and cluster bootstraps), ``power``
(equivalence tests and the power closed forms). Callers import from ``ussafety.stats``, which
re-exports their public names.
"""

from ussafety.stats.base import (
    BOOT_SEED,
    CLUSTER_CI,
    CONFIDENCE,
    N_BOOT,
)
from ussafety.stats.bootstrap import (
    BootstrapResult,
    cluster_bootstrap,
    cluster_mean,
    paired_bootstrap_diff,
)
from ussafety.stats.intervals import (
    McNemarResult,
    cohens_kappa,
    holm_correction,
    kendall_tau,
    mcnemar_exact,
    pareto_front,
    wilson_interval,
)
from ussafety.stats.power import (
    TostResult,
    design_effect,
    kendall_sample_size,
    mcnemar_exact_power,
    mcnemar_mde,
    mcnemar_sample_size,
    paired_score_z,
    paired_tost,
    sample_scale,
    tost_resolution,
    tost_sample_size,
)

__all__ = [
    "BOOT_SEED",
    "BootstrapResult",
    "CLUSTER_CI",
    "CONFIDENCE",
    "McNemarResult",
    "N_BOOT",
    "TostResult",
    "cluster_bootstrap",
    "cluster_mean",
    "cohens_kappa",
    "design_effect",
    "holm_correction",
    "kendall_sample_size",
    "kendall_tau",
    "mcnemar_exact",
    "mcnemar_exact_power",
    "mcnemar_mde",
    "mcnemar_sample_size",
    "paired_bootstrap_diff",
    "paired_score_z",
    "paired_tost",
    "pareto_front",
    "sample_scale",
    "tost_resolution",
    "tost_sample_size",
    "wilson_interval",
]
