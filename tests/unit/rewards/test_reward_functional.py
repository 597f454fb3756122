import math

import pytest
import torch

from firm.rewards import functional as F

nan = math.nan


def test_cme_matches_paper_formula_on_every_score_pair():
    e, c = torch.meshgrid(torch.arange(1.0, 6.0), torch.arange(1.0, 6.0), indexing="ij")
    got = F.cme(e.flatten(), c.flatten())
    en, cn = (e.flatten() - 1) / 4, (c.flatten() - 1) / 4
    assert torch.allclose(got, en * (0.6 + 0.4 * cn))


def test_cme_no_execution_no_reward_and_lazy_copy_earns_nothing():
    # A copied input: perfect consistency, execution 1.
    assert F.cme(torch.tensor([1.0]), torch.tensor([5.0])).item() == 0.0
    # Perfect execution with an entirely different image still earns the base 60%.
    assert F.cme(torch.tensor([5.0]), torch.tensor([1.0])).item() == pytest.approx(0.6)


def test_qma_matches_paper_formula():
    i = torch.tensor([5.0, 5.0, 3.0, 1.0])
    q = torch.tensor([5.0, 1.0, 3.0, 5.0])
    assert F.qma(i, q).tolist() == pytest.approx([1.0, 0.4, 0.5 * (0.4 + 0.6 * 0.5), 0.0])


@pytest.mark.parametrize("fn", [F.cme, F.qma])
def test_invalid_inputs_give_nan_never_a_number(fn):
    out = fn(torch.tensor([nan, 5.0, nan]), torch.tensor([5.0, nan, nan]))
    assert torch.isnan(out).all()


def test_rewards_stay_in_unit_interval_for_any_weights():
    e = torch.arange(1.0, 6.0).repeat(5)
    c = torch.arange(1.0, 6.0).repeat_interleave(5)
    for w1, w2 in [(0.6, 0.4), (1.0, 1.0), (0.0, 3.0), (2.0, 0.0)]:
        out = F.cme(e, c, w1, w2)
        assert out.min() >= 0 and out.max() <= 1
        assert out[-1] == pytest.approx(1.0)  # E = C = 5 always earns the full reward


def test_out_of_scale_scores_are_rejected_with_a_hint():
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        F.cme(torch.tensor([0.0]), torch.tensor([5.0]))  # a parse failure mapped to 0, as FIRM's release does


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="w1=-1"):
        F.base_and_bonus(torch.ones(1), torch.ones(1), -1, 1)
    with pytest.raises(ValueError, match="positive sum"):
        F.weighted_sum({"execution": torch.ones(1)}, {"execution": 0.0})


def test_weighted_sum_is_a_weighted_mean():
    out = F.weighted_sum({"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 0.0])}, {"a": 3, "b": 1})
    assert out.tolist() == pytest.approx([0.75, 0.0])
