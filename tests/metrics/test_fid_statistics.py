"""The FID's bootstrap interval, several sample sets combined, and precision/recall, on features with known
distributions (no network: the statistics are what is tested)."""

import numpy as np
import pytest
import torch

from ddpm_lab.metrics import GaussianStats, MetricOptions, combine_evaluations, frechet_distance, precision_recall
from ddpm_lab.metrics.fid import bootstrap_interval, fid_bootstrap_deviations, resampled_fid

D = 8


def gaussian_features(n, seed, shift=0.3, scale=1.2):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)) * scale + shift


REFERENCE = GaussianStats.from_features(np.random.default_rng(99).standard_normal((20000, D)))


@pytest.mark.parametrize("n", [5, 300], ids=["n<=D: n x n Gram", "n>D: D x D Gram"])
def test_the_resampling_formula_is_the_fid_on_the_unresampled_set(n):
    x = gaussian_features(n, 0)
    mean, cov = torch.from_numpy(REFERENCE.mean), torch.from_numpy(REFERENCE.cov)
    mapped = None
    if n > D:
        w, v = np.linalg.eigh(REFERENCE.cov)
        mapped = torch.from_numpy(x @ ((v * np.sqrt(w)) @ v.T))
    expected = frechet_distance(GaussianStats.from_features(x), REFERENCE)
    got = resampled_fid(torch.from_numpy(x), torch.arange(n), mean, cov, mapped)
    assert got == pytest.approx(expected, rel=1e-7)


def test_the_bootstrap_spread_matches_the_spread_over_independent_sample_sets():
    n = 400
    independent = [frechet_distance(GaussianStats.from_features(gaussian_features(n, s)), REFERENCE) for s in range(60)]
    deviations = fid_bootstrap_deviations(gaussian_features(n, 1000), REFERENCE, replicates=400, seed=0)
    assert deviations.mean() == pytest.approx(0, abs=1e-12)
    ratio = deviations.std() / np.std(independent, ddof=1)
    assert 0.6 < ratio < 1.6, f"bootstrap std / true std = {ratio:.2f}"
    # and the interval of one set covers the expected FID at this sample count, as a 95% interval should
    covered = 0
    for s in range(20):
        x = gaussian_features(n, 2000 + s)
        fid = frechet_distance(GaussianStats.from_features(x), REFERENCE)
        low, high = bootstrap_interval(fid, fid_bootstrap_deviations(x, REFERENCE, 200, seed=s))
        covered += low <= np.mean(independent) <= high
    assert covered >= 15, f"{covered}/20 intervals cover the mean FID"


def test_several_sample_sets_combine_into_mean_min_std_and_one_interval():
    evaluations = [
        {"fid": 4.0, "fid_deviations": np.array([-1.0, 0.0, 1.0]), "kid_mean": 0.1, "kid_subset_size": 5},
        {"fid": 6.0, "fid_deviations": np.array([-3.0, 0.0, 3.0]), "kid_mean": 0.3, "kid_subset_size": 5},
    ]
    out = combine_evaluations(evaluations)
    assert out["fid"] == 5.0 and out["fid_min"] == 4.0 and out["fid_std"] == pytest.approx(np.sqrt(2))
    assert out["kid_mean"] == pytest.approx(0.2) and out["kid_subset_size"] == 5
    low, high = np.quantile([-2.0, 0.0, 2.0], [0.025, 0.975])
    assert (out["fid_ci_low"], out["fid_ci_high"]) == (pytest.approx(5 + low), pytest.approx(5 + high))
    single = combine_evaluations(evaluations[:1])
    assert "fid_min" not in single and single["fid"] == 4.0


def test_precision_and_recall_of_identical_disjoint_and_collapsed_sets():
    real = gaussian_features(200, 0, shift=0.0, scale=1.0)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real + 100.0, real) == (0.0, 0.0)
    collapsed = real[:50] * 0.05  # generated samples all near the mode: precise, but they miss most of the data
    precision, recall = precision_recall(collapsed, real)
    assert precision > 0.9 and recall < 0.3


def test_bootstrap_options_are_checked_when_built():
    with pytest.raises(ValueError, match="at least 10 replicates"):
        MetricOptions(bootstrap=3)
    assert MetricOptions(bootstrap=0).logged() == ("fid", "kid_mean", "kid_std", "is", "is_std", "precision", "recall")
    assert "fid_min" in MetricOptions().logged(num_evals=3)
