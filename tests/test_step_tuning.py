"""SIB's step size tuned on validation per query count (`metaunlab.research.step_tuning`,
`StepScales`): the interpolation, the scaled head against the head at the multiplied step
(padded query sets included), the choice on validation episodes, its record and flags."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaunlab import evaluation, sib
from metaunlab.data.episodes import Episodes, EpisodeSampler, EpisodeShape
from metaunlab.errors import ConfigError
from metaunlab.head import Head
from metaunlab.methods.sib_head import StepScales, sib_method
from metaunlab.research import step_tuning
from metaunlab.train.config_checks import check_config
from tests._toy_meta_training import toy_features


def _head(n_way=5, dim=8, seed=0, **kwargs):
    return sib.init(jax.random.PRNGKey(seed), n_way, dim, **kwargs)


def _probs(method, fs, ys, fq, mask=None):
    return np.asarray(method.predictor(int(ys.max()) + 1)(method.params, None, fs, ys, fq, mask))


def _episodes(seed, n_episodes=3, n_way=5, n_query=4, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_episodes, n_way, dim))
    ys = np.tile(np.arange(n_way), (n_episodes, 1))
    yq = np.tile(np.repeat(np.arange(n_way), n_query), (n_episodes, 1))
    pick = np.arange(n_episodes)[:, None]
    fs = centres[pick, ys] + 0.7 * rng.normal(size=ys.shape + (dim,))
    fq = centres[pick, yq] + 0.7 * rng.normal(size=yq.shape + (dim,))
    return (jnp.asarray(fs, jnp.float32), jnp.asarray(ys, jnp.int32),
            jnp.asarray(fq, jnp.float32), yq)


def test_scales_are_exact_at_their_counts_log_linear_between_and_held_beyond():
    scales = StepScales((1.0, 15.0), (4.0, 0.5))
    assert scales.scale_at(1) == pytest.approx(4.0)
    assert scales.scale_at(15) == pytest.approx(0.5)
    # Halfway in log(count) is halfway in log(scale): sqrt(4 * 0.5).
    assert scales.scale_at(np.sqrt(15.0)) == pytest.approx(np.sqrt(2.0), rel=1e-5)
    assert scales.scale_at(0.5) == pytest.approx(4.0)
    assert scales.scale_at(60) == pytest.approx(0.5)
    assert StepScales((5.0,), (2.0,)).scale_at(123) == pytest.approx(2.0)


@pytest.mark.parametrize("counts, values", [((), ()), ((1.0, 5.0), (1.0,)),
                                            ((5.0, 1.0), (1.0, 2.0)), ((1.0,), (0.0,))])
def test_a_malformed_table_is_refused(counts, values):
    with pytest.raises(ValueError, match="StepScales"):
        StepScales(counts, values)


@pytest.mark.parametrize("n_episodes", [1, 3])  # direct form, and the Gram form
def test_a_scaled_head_is_the_head_at_the_multiplied_step(n_episodes):
    params = _head()
    fs, ys, fq, _ = _episodes(1, n_episodes=n_episodes)
    lr = 0.02
    scaled = sib_method(params, 3, lr, step_scales=StepScales((2.0, 8.0), (3.0, 0.25)))
    # 4 queries per class: log-linear between x3 at 2 and x0.25 at 8, i.e. sqrt(0.75).
    plain = sib_method(params, 3, lr * np.sqrt(0.75))
    chex.assert_trees_all_close(_probs(scaled, fs, ys, fq), _probs(plain, fs, ys, fq),
                                atol=2e-6)
    # And the multiple matters: the head at its own step predicts otherwise.
    own = _probs(sib_method(params, 3, lr), fs, ys, fq)
    assert np.abs(own - _probs(scaled, fs, ys, fq)).max() > 1e-4


def test_padded_episodes_each_take_the_multiple_of_their_own_query_count():
    params = _head(seed=2)
    fs, ys, fq, _ = _episodes(3, n_episodes=2, n_query=4)  # 20 query slots
    mask = np.ones((2, 20), bool)
    mask[0, 5:] = False  # episode 0: 5 real queries, 1 per class; episode 1: 4 per class
    scales = StepScales((1.0, 4.0), (8.0, 0.5))
    lr = 0.02
    padded = _probs(sib_method(params, 3, lr, step_scales=scales),
                    fs, ys, fq, jnp.asarray(mask))
    for episode, real, scale in ((0, 5, 8.0), (1, 20, 0.5)):
        alone = _probs(sib_method(params, 3, lr * scale), fs[episode:episode + 1],
                       ys[episode:episode + 1], fq[episode:episode + 1, :real])
        np.testing.assert_allclose(padded[episode, :real], alone[0], atol=1e-5)


def test_ties_keep_the_step_nearest_the_trained_one():
    assert step_tuning._preferred((0.5, 1.0, 2.0), (90.0, 90.0, 80.0)) == 1.0
    assert step_tuning._preferred((0.5, 4.0), (90.0, 90.0)) == 0.5
    assert step_tuning._preferred((0.25, 0.5, 8.0), (70.0, 71.0, 72.0)) == 8.0


def _labelled_features(seed, n_classes=8, per_class=12, dim=8):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = centres[labels] + 0.9 * rng.normal(size=(len(labels), dim))
    return feats.astype(np.float32), labels


def test_tuning_keeps_the_best_validation_multiple_for_each_count():
    feats, labels = _labelled_features(4)
    params = _head(seed=5)
    params["classifier"]["scale"] = jnp.asarray(20.0)
    episodes = {q: EpisodeSampler(labels, EpisodeShape(5, 1, q), seed=7).sample(0, 40)
                for q in (1, 6)}
    candidates = (0.1, 1.0, 30.0, 300.0)
    chosen, accuracy = step_tuning.tune_step_scales(Head(5, 8), params, feats, episodes,
                                                    steps=3, lr=1e-2, candidates=candidates)
    for q, eps in episodes.items():
        expected = [evaluation.evaluate(sib_method(params, 3, 1e-2 * c), feats, eps).accuracy
                    for c in candidates]
        np.testing.assert_allclose(accuracy[q], expected, atol=1e-9)
    assert all(len(set(a)) > 1 for a in accuracy.values())  # the choice is not a tie
    assert chosen.queries_per_class == (1.0, 6.0)
    assert chosen.scales == tuple(step_tuning._preferred(candidates, accuracy[q])
                                  for q in (1, 6))


def test_the_record_round_trips_and_belongs_to_one_checkpoint(tmp_path):
    scales = StepScales((1.0, 15.0), (4.0, 0.5))
    path = step_tuning.save(str(tmp_path), scales, {1: [90.0, 91.0], 15: [95.0, 94.0]},
                            candidates=(1.0, 4.0), steps=3, checkpoint="last", episodes=300)
    record = json.loads(open(path).read())
    assert record["val_accuracy"] == {"1": [90.0, 91.0], "15": [95.0, 94.0]}
    assert step_tuning.load(str(tmp_path), "last") == scales
    assert step_tuning.load(str(tmp_path), "best") is None  # tuned for the other checkpoint
    assert step_tuning.load(str(tmp_path / "nothing"), "last") is None
    record.pop("scales")
    (tmp_path / step_tuning.FILE_NAME).write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"step_scales\.json is not a step-size record"):
        step_tuning.load(str(tmp_path), "last")


def test_candidates_parse_sorted_and_bad_ones_are_refused_before_training():
    assert step_tuning.parse_candidates("") == ()
    assert step_tuning.parse_candidates("2, 0.5,1,2") == (0.5, 1.0, 2.0)
    for bad in ("0,1", "-1", "a,b", "nan"):
        with pytest.raises(ConfigError, match="step_scales"):
            step_tuning.parse_candidates(bad)
    with pytest.raises(ConfigError, match=r"--config.test.step_scales='0,1' is not allowed"):
        check_config({"test": {"step_scales": "0,1"}})
    check_config({"test": {"step_scales": "0.5,2"}})


def test_evaluate_sib_reports_the_tuned_step_beside_the_reference():
    feats, labels = _labelled_features(6)
    params = _head(seed=1)
    eps = EpisodeSampler(labels, EpisodeShape(5, 1, 2), seed=3).sample(0, 20)
    scales = StepScales((1.0, 4.0), (4.0, 1.0))
    methods = evaluation.evaluate_sib(Head(5, 8), params, feats, eps, steps=3, lr=0.01,
                                      step_scales=scales)
    assert list(methods) == ["sib", "sib_tuned", "k0"]
    assert methods["sib_tuned"]["step_scale"] == pytest.approx(2.0, rel=1e-5)  # 2 per class
    at_double = evaluation.evaluate(sib_method(params, 3, 0.02), feats, eps)
    assert methods["sib_tuned"]["accuracy"] == pytest.approx(at_double.accuracy)
    assert "sib_tuned" not in evaluation.evaluate_sib(Head(5, 8), params, feats, eps, steps=3,
                                                      lr=0.01)


def test_tuning_without_candidates_is_refused():
    with pytest.raises(ValueError, match="at least one candidate"):
        step_tuning.tune_step_scales(Head(5, 8), _head(), np.zeros((4, 8), np.float32),
                                     {1: Episodes(*(np.zeros((1, 5), np.int32),) * 4)},
                                     steps=3, lr=1e-3, candidates=())


def test_evaluate_sib_reports_sibs_paired_difference_from_its_matched_k0():
    """"minus_k0" is the mean and 1.96 standard errors of SIB's per-episode accuracy minus K =
    0's on the same episodes; K = 0 is marked inductive for a head that centres nothing."""
    feats, labels = toy_features()
    head = Head(5, feats.shape[1])
    params = head.init(jax.random.PRNGKey(0))
    eps = EpisodeSampler(labels, EpisodeShape(5, 1, 3), seed=4).sample(0, 40)
    methods = evaluation.evaluate_sib(head, params, feats, eps, steps=3, lr=0.05)
    variants = evaluation.sib_variants(head, params, steps=3, lr=0.05)
    sib_acc = evaluation.evaluate(variants["sib"], feats, eps).accuracies
    k0_acc = evaluation.evaluate(variants["k0"], feats, eps).accuracies
    diff = sib_acc - k0_acc
    assert methods["sib"]["minus_k0"]["mean"] == pytest.approx(diff.mean())
    assert methods["sib"]["minus_k0"]["ci95"] == pytest.approx(1.96 * diff.std() / np.sqrt(40))
    assert methods["k0"]["transductive"] is False


def test_tuning_episodes_come_from_every_query_distribution_that_fits():
    """Balanced and Dirichlet validation episodes side by side, each seeded as the sampler
    draws them alone; at a count where imbalanced sets do not fit, balanced ones only."""
    _, labels = toy_features()  # 20 images per class
    shape = EpisodeShape(5, 1, 3)
    mixed = step_tuning.tuning_episodes(labels, shape, distributions=["balanced", "dirichlet:2"],
                                        seed=1, count=6)
    assert len(mixed) == 12
    dirichlet = EpisodeSampler(labels, shape, seed=1, split_name="val",
                               query_distribution="dirichlet:2").sample(0, 6)
    np.testing.assert_array_equal(mixed.query_idx[6:], dirichlet.query_idx)
    assert np.all(mixed.query_counts()[:6] == 3) and np.any(mixed.query_counts()[6:] != 3)
    large = step_tuning.tuning_episodes(labels, EpisodeShape(5, 1, 12),
                                        distributions=["balanced", "dirichlet:2"], seed=1,
                                        count=4)
    assert len(large) == 4 and np.all(large.query_counts() == 12)
