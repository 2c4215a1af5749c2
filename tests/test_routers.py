import pytest
import torch

from latentreason.routers import NONE, NotFittedError, OracleRouter, ProbeRouter, RandomTimingRouter, RouteContext, check_budget, load_router


def _data(n=300, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, d, generator=g) * 4
    y = torch.arange(n) % 3 - 1  # -1, 0, 1
    X = centers[y + 1] + torch.randn(n, d, generator=g) * 0.3
    return X, y


def test_probe_router_learns_separable_strategies():
    X, y = _data()
    r = ProbeRouter(["a", "b"], "resid_post.1").fit(X, y)
    assert (r.predict(X) == y).float().mean() > 0.95


def test_predict_before_fit_names_the_fix():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ProbeRouter(["a"], "resid_post.0").predict(torch.zeros(2, 4))


def test_router_round_trips_through_disk(tmp_path):
    X, y = _data()
    r = ProbeRouter(["a", "b"], "resid_post.1", threshold=0.7).fit(X, y, fingerprint="abc")
    r.save(tmp_path)
    r2 = load_router(tmp_path)
    assert torch.equal(r.predict(X), r2.predict(X))
    assert r2.threshold == 0.7 and r2.fingerprint == "abc" and r2.site == "resid_post.1"


@pytest.mark.parametrize("edit", [{"site": "resid_post.0"}, {"threshold": 0.01}, {"strategies": ["b", "a"]}, {"fingerprint": "other"}])
def test_router_json_edited_after_saving_is_refused(tmp_path, edit):
    import json

    X, y = _data()
    ProbeRouter(["a", "b"], "resid_post.1", threshold=0.7).fit(X, y, fingerprint="abc").save(tmp_path)
    meta = json.loads((tmp_path / "router.json").read_text())
    (tmp_path / "router.json").write_text(json.dumps({**meta, **edit}, indent=2))
    with pytest.raises(ValueError, match="router.json was edited after it was written"):
        load_router(tmp_path)


def test_router_refuses_other_width_site_and_model():
    X, y = _data()
    r = ProbeRouter(["a", "b"], "resid_post.1").fit(X, y, fingerprint="abc")
    with pytest.raises(ValueError, match="width"):
        r.predict(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="trained at resid_post.1"):
        r.check_model("resid_post.2", "abc")
    with pytest.raises(ValueError, match="Retrain"):
        r.check_model("resid_post.1", "other")


def test_threshold_for_budget_hits_the_budget():
    X, y = _data(1000)
    r = ProbeRouter(["a", "b"], "resid_post.1").fit(X, y)
    t = r.threshold_for_budget(X, 0.25)
    r.threshold = t
    share = (r.predict(X) != NONE).float().mean().item()
    assert abs(share - 0.25) < 0.02


@pytest.mark.parametrize("bad", [-0.1, 1.5, "x", float("nan")])
def test_budgets_outside_unit_interval_are_refused(bad):
    with pytest.raises(ValueError, match="Budget"):
        check_budget(bad)


def test_oracle_router_steers_only_where_models_disagree():
    X, y = _data(6)
    r = ProbeRouter(["a", "b"], "resid_post.1", threshold=0.0).fit(*_data())
    oracle = OracleRouter(r)
    assert oracle.is_oracle
    base = torch.tensor([[1.0, 0.0]] * 6)
    post = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 3)
    d = oracle.predict(X, RouteContext(0, base, post))
    assert ((d != NONE) == torch.tensor([False, True] * 3)).all()
    with pytest.raises(ValueError, match="logits"):
        oracle.predict(X)


def test_random_timing_router_fires_at_its_budget_and_is_seeded():
    X, y = _data(4000)
    r = ProbeRouter(["a", "b"], "resid_post.1").fit(X, y)
    a = RandomTimingRouter(r, 0.1, seed=3).predict(X)
    b = RandomTimingRouter(r, 0.1, seed=3).predict(X)
    assert torch.equal(a, b)
    assert abs((a != NONE).float().mean().item() - 0.1) < 0.02
