import math

import pytest

from latentreason.stats import bootstrap_mean, bootstrap_recovery, recovery


def test_recovery_is_share_of_gap():
    assert recovery(0.2, 0.8, 0.5) == pytest.approx(0.5)
    assert math.isnan(recovery(0.5, 0.5, 0.6))


def test_bootstrap_interval_contains_point_and_shrinks_with_n():
    base = [i % 5 == 0 for i in range(500)]
    post = [i % 5 != 4 for i in range(500)]
    hyb = [i % 2 == 0 for i in range(500)]
    r, (lo, hi) = bootstrap_recovery(base, post, hyb, n_boot=500)
    assert lo <= r <= hi
    r2, (lo2, hi2) = bootstrap_recovery(base[:50], post[:50], hyb[:50], n_boot=500)
    assert (hi2 - lo2) > (hi - lo)


def test_bootstrap_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_recovery([True], [True, False], [False])


def test_bootstrap_mean_is_seeded():
    v = [0.0, 1.0, 1.0, 0.0, 1.0]
    assert bootstrap_mean(v, seed=1) == bootstrap_mean(v, seed=1)
