"""Fixed outputs of the baselines' reference code on small seeded episodes.

TIM-GD and alpha-TIM: their authors' code (below). PT-MAP: the authors' code
(yhu01/PT-MAP @ 134b940, test_standard.py, its defaults, 20 epochs, Sinkhorn to a 1e-6
tolerance) run unchanged. SimpleShot: the authors' code (mileyan/simple_shot @ 5d38fc8,
`metric_class_type` of src/train.py, CL2N, nearest class mean) run unchanged. BD-CSPN has
no authors' code; the reference is easyfsl's `BDCSPN` (sicara/easy-few-shot-learning @
8023ff4) on L2-normalised features, whose cosine logits ours reproduces with eps=1 and
unshifted final queries (its two differences on normalised features, documented in
metaunlab/methods/bdcspn.py).
"""

import numpy as np
import pytest

from metaunlab.methods import bdcspn, ptmap, simpleshot, tim


def _episode(shot):
    """The recipe the reference outputs were computed on."""
    rng = np.random.default_rng(0)
    xs = rng.random((5 * shot, 16)).astype(np.float32)
    ys = np.repeat(np.arange(5), shot)
    xq = rng.random((15, 16)).astype(np.float32)
    base_mean = rng.random(16).astype(np.float32)
    return xs, ys, xq, base_mean


AUTHORS_SIMPLESHOT_CL2N = {
    1: [4, 4, 1, 4, 4, 4, 4, 2, 1, 4, 4, 4, 4, 1, 3],
    5: [0, 2, 2, 2, 2, 0, 2, 4, 2, 4, 2, 4, 3, 2, 2],
}

EASYFSL_BDCSPN_COSINES = {
    1: np.array([
        [0.8266490, 0.8440381, 0.8704568, 0.7306020, 0.9074413],
        [0.7111052, 0.7866116, 0.8342986, 0.7671791, 0.9046884],
        [0.8317795, 0.8477980, 0.7733548, 0.7170649, 0.7548165],
        [0.9111477, 0.8862739, 0.8594565, 0.8237997, 0.8794984],
        [0.7447913, 0.7598168, 0.6866895, 0.6999140, 0.8414549],
        [0.7907325, 0.8068991, 0.7787696, 0.8137248, 0.8728809],
        [0.7422968, 0.8142959, 0.7988778, 0.9057027, 0.8356653],
        [0.7968157, 0.8094608, 0.8543806, 0.6227888, 0.7959073],
        [0.7794205, 0.8900232, 0.7288539, 0.7409114, 0.7636629],
        [0.8347400, 0.8007984, 0.8946767, 0.8553184, 0.8697952],
        [0.8685566, 0.7977341, 0.9131621, 0.8839573, 0.9381337],
        [0.8465822, 0.7807803, 0.8035927, 0.7840831, 0.7644171],
        [0.8908194, 0.8615333, 0.9351304, 0.9014507, 0.9299305],
        [0.8762412, 0.8433276, 0.8265965, 0.7652395, 0.8171897],
        [0.8436624, 0.8028371, 0.8227025, 0.9630998, 0.8264821]]),
    5: np.array([
        [0.8910292, 0.8508364, 0.8326646, 0.8132256, 0.8317535],
        [0.9156573, 0.9005620, 0.9214394, 0.8825344, 0.8673574],
        [0.9099169, 0.9065226, 0.9509807, 0.8994317, 0.8835756],
        [0.8052819, 0.8123133, 0.9091274, 0.8761884, 0.7786642],
        [0.7874736, 0.7791566, 0.8522464, 0.7798232, 0.7951469],
        [0.9697422, 0.9365379, 0.9458967, 0.9275482, 0.9403406],
        [0.8443164, 0.8894979, 0.8485744, 0.8230273, 0.7983203],
        [0.8483150, 0.8665615, 0.8204631, 0.8311633, 0.8993175],
        [0.8316087, 0.8690184, 0.8995560, 0.9222964, 0.8242509],
        [0.8630748, 0.8778012, 0.8714694, 0.8936098, 0.9281952],
        [0.8002578, 0.7465340, 0.8551162, 0.7054842, 0.7575642],
        [0.8776032, 0.8665559, 0.8608093, 0.8457961, 0.9567079],
        [0.8855188, 0.8806134, 0.8752604, 0.9499492, 0.8458966],
        [0.8115495, 0.7885923, 0.8893598, 0.8120446, 0.7225103],
        [0.8000029, 0.8154575, 0.8464130, 0.9023664, 0.8254683]]),
}


@pytest.mark.parametrize("shot", [1, 5])
def test_simpleshot_predicts_as_the_authors_code(shot):
    xs, ys, xq, base_mean = _episode(shot)
    probs = np.asarray(simpleshot.simpleshot(xs, ys, xq, 5, base_mean=base_mean))
    np.testing.assert_array_equal(probs.argmax(-1), AUTHORS_SIMPLESHOT_CL2N[shot])


@pytest.mark.parametrize("shot", [1, 5])
def test_bd_cspn_matches_easyfsl_with_its_two_choices(shot):
    xs, ys, xq, _ = _episode(shot)
    want = EASYFSL_BDCSPN_COSINES[shot]
    got = np.asarray(bdcspn.bd_cspn(xs, ys, xq, 5, eps=1.0, classify_shifted=False, scale=1.0))
    # softmax(cos) determines cos up to a per-row constant; compare centred log-probabilities.
    centred = np.log(got) - np.log(got).mean(-1, keepdims=True)
    np.testing.assert_allclose(centred, want - want.mean(-1, keepdims=True), atol=1e-5)
    ours = np.asarray(bdcspn.bd_cspn(xs, ys, xq, 5, scale=1.0))  # defaults: eps 10, shifted
    assert np.abs(np.log(ours) - np.log(ours).mean(-1, keepdims=True)
                  - (want - want.mean(-1, keepdims=True))).max() > 1e-3


# Their final query assignments, rows normalised, on the 1-shot episode of _episode (whose
# base mean PT-MAP does not use).
AUTHORS_PTMAP = np.array([
    [1.1397817e-05, 0.0013914973, 0.00015643153, 2.3203265e-06, 0.9984383],
    [2.41004e-06, 0.0008161352, 0.00029067, 1.40821e-05, 0.99887669],
    [0.067289658, 0.93113917, 1.9853453e-05, 0.00011344864, 0.0014379256],
    [0.9704349, 0.027778465, 0.00110667, 6.9176662e-05, 0.00061076379],
    [0.97808743, 0.016386976, 7.7699253e-05, 0.00010698778, 0.0053409827],
    [0.0022554807, 0.00056937727, 3.4659952e-06, 0.014393878, 0.98277777],
    [5.8369028e-07, 7.3713752e-05, 7.2859577e-05, 0.99975216, 0.00010064986],
    [0.00034144969, 0.9995811, 3.7651531e-05, 1.0400897e-08, 3.9708644e-05],
    [0.0091046179, 0.99052554, 0.00018353657, 0.00017736024, 8.9601945e-06],
    [4.7291123e-05, 0.00021303799, 0.0091981888, 0.97847748, 0.012063957],
    [4.8748894e-05, 1.6280165e-06, 0.99960828, 0.00030798509, 3.3322041e-05],
    [0.97172713, 0.022753682, 3.7804613e-05, 0.0053659217, 0.00011540054],
    [3.1361433e-06, 4.6725431e-06, 0.99926656, 0.00068876386, 3.691317e-05],
    [0.0002932857, 0.0086485958, 0.99024105, 0.00080812071, 8.9847226e-06],
    [0.00022678243, 1.2553278e-06, 5.4772812e-05, 0.99971712, 1.2422781e-07],
])


def test_pt_map_matches_the_authors_code():
    xs, ys, xq, _ = _episode(1)
    default = np.asarray(ptmap.pt_map(xs, ys, xq, 5))  # 100 Sinkhorn iterations, not to 1e-6
    np.testing.assert_array_equal(default.argmax(-1), AUTHORS_PTMAP.argmax(-1))
    np.testing.assert_allclose(default, AUTHORS_PTMAP, atol=2e-3)
    longer = np.asarray(ptmap.pt_map(xs, ys, xq, 5, sinkhorn_iterations=1000))
    np.testing.assert_allclose(longer, AUTHORS_PTMAP, atol=5e-4)
    thirty = np.asarray(ptmap.pt_map(xs, ys, xq, 5, epochs=30, sinkhorn_iterations=1000))
    assert np.abs(thirty - AUTHORS_PTMAP).max() > 5e-4  # the epochs are theirs


# TIM-GD: the authors' code (mboudiaf/TIM @ c324ca8, src/tim.py TIM_GD: temp 15, weights [0.1,
# 1, 0.1], lr 1e-4, 1000 iterations) and Veilleux et al.'s (oveilleux/Realistic_Transductive_
# Few_Shot @ 1ae7845, src/methods/tim.py: TIM_GD with its Dirichlet weights [1, 1, 1];
# ALPHA_TIM with its tuned alpha 2 and 7), run unchanged on _tim_episode: final query
# probabilities.
TIM_GD_BOUDIAF = np.array([
    [0.07281734, 0.20955834, 0.30696732, 0.012125499, 0.3985315],
    [0.0091684479, 0.065526493, 0.15426373, 0.032537218, 0.73850417],
    [0.4082638, 0.3852309, 0.093725182, 0.055510819, 0.057269316],
    [0.52278233, 0.13171098, 0.1256817, 0.097334042, 0.12249096],
    [0.4996343, 0.10320236, 0.023196639, 0.038771294, 0.33519542],
    [0.11642613, 0.21924654, 0.058378771, 0.21591209, 0.39003655],
    [0.019967152, 0.18717356, 0.083992936, 0.63226557, 0.076600812],
    [0.12270042, 0.14989559, 0.65639645, 0.0025022114, 0.068505302],
    [0.16719505, 0.77599669, 0.019862769, 0.025208261, 0.011737264],
    [0.054103438, 0.087745212, 0.45955467, 0.24685118, 0.15174542],
    [0.12371652, 0.024171796, 0.319233, 0.23026395, 0.30261472],
    [0.47159144, 0.090884201, 0.1670884, 0.21333779, 0.057098221],
    [0.086985014, 0.083932757, 0.30809438, 0.24064481, 0.280343],
    [0.28848583, 0.43738037, 0.14840585, 0.076989405, 0.048738591],
    [0.054983821, 0.018324323, 0.025134912, 0.88115638, 0.020400543]])
TIM_GD_OVEILLEUX_DIRICHLET = np.array([
    [0.033621501, 0.10493881, 0.22848201, 0.0033857464, 0.62957197],
    [0.0042433441, 0.016475668, 0.1597316, 0.020496227, 0.79905307],
    [0.92901862, 0.049769066, 0.0053746602, 0.006131771, 0.009705781],
    [0.73158342, 0.065595068, 0.053579476, 0.024250813, 0.12499122],
    [0.037366509, 0.043495089, 0.012687973, 0.0066928226, 0.89975756],
    [0.051607579, 0.093348108, 0.027047491, 0.096998706, 0.7309981],
    [0.0071541676, 0.084135748, 0.070554145, 0.77479446, 0.063361593],
    [0.47385144, 0.06326101, 0.39766517, 0.00091647258, 0.064305902],
    [0.020207014, 0.95046526, 0.010391033, 0.004161254, 0.014775469],
    [0.024924304, 0.062950969, 0.56297058, 0.22790353, 0.12125059],
    [0.024537509, 0.0079187108, 0.65771872, 0.12739517, 0.18242989],
    [0.91187578, 0.012141142, 0.025641456, 0.040418886, 0.0099227689],
    [0.057856172, 0.040299084, 0.58387727, 0.15337497, 0.16459243],
    [0.037134524, 0.74861443, 0.14313912, 0.023186745, 0.047925238],
    [0.046517998, 0.011435471, 0.037008911, 0.89255697, 0.012480734]])
ALPHA_TIM_ALPHA2 = np.array([
    [0.0027964422, 0.11641692, 0.11267158, 0.0057082791, 0.76240683],
    [0.00016862719, 0.022334233, 0.051462095, 0.017341025, 0.90869403],
    [0.033144448, 0.75761032, 0.067619443, 0.088301703, 0.053324115],
    [0.11489917, 0.15562084, 0.26429734, 0.087304786, 0.37787783],
    [0.013882274, 0.037362978, 0.0041311355, 0.011123945, 0.93349963],
    [0.0027970953, 0.083294399, 0.030750304, 0.12084305, 0.76231515],
    [0.00028486937, 0.079511307, 0.056418668, 0.76839519, 0.095389999],
    [0.01720622, 0.11712615, 0.79036129, 0.0032071492, 0.072099142],
    [0.016904874, 0.92975003, 0.021650825, 0.0090976926, 0.022596646],
    [0.0033191734, 0.089512289, 0.43753654, 0.28279388, 0.18683818],
    [0.015199257, 0.016339565, 0.17426001, 0.26962033, 0.52458084],
    [0.037268676, 0.11310827, 0.15244365, 0.65565103, 0.041528322],
    [0.0088337073, 0.076988481, 0.28910121, 0.29674104, 0.32833555],
    [0.03208296, 0.79843593, 0.056642778, 0.037788097, 0.075050294],
    [0.0016485367, 0.0077257729, 0.018971624, 0.95970446, 0.011949513]])
ALPHA_TIM_ALPHA7 = np.array([
    [0.0091168871, 0.31899297, 0.086671509, 0.0024090286, 0.58280957],
    [0.00036281365, 0.058655836, 0.027940214, 0.0055006589, 0.90754044],
    [0.039764885, 0.8769871, 0.016540719, 0.017042058, 0.049665216],
    [0.11217566, 0.3302958, 0.11686262, 0.050328996, 0.39033696],
    [0.046209622, 0.10166045, 0.0029868213, 0.010656225, 0.83848685],
    [0.0065714931, 0.31399173, 0.012107115, 0.06687396, 0.60045576],
    [0.00068798591, 0.52396595, 0.047158867, 0.27946448, 0.14872263],
    [0.046550445, 0.60382593, 0.21320358, 0.001081444, 0.13533865],
    [0.01103913, 0.95867431, 0.017107241, 0.0041611306, 0.0090182051],
    [0.010885848, 0.23463817, 0.22723223, 0.19816731, 0.32907641],
    [0.025146829, 0.035516784, 0.087099932, 0.12037732, 0.73185915],
    [0.12373999, 0.43648809, 0.062581949, 0.27972984, 0.097460039],
    [0.013919809, 0.1549495, 0.23694749, 0.1444952, 0.44968796],
    [0.043728154, 0.87267148, 0.025658414, 0.016648112, 0.041293811],
    [0.0044289771, 0.040877625, 0.031897932, 0.88473463, 0.038060844]])


def _tim_episode():
    rng = np.random.default_rng(0)
    return (rng.random((5, 16)).astype(np.float32), np.arange(5),
            rng.random((15, 16)).astype(np.float32))


def test_tim_gd_and_alpha_tim_match_their_authors_code():
    xs, ys, xq = _tim_episode()
    np.testing.assert_allclose(tim.tim_gd(xs, ys, xq, 5), TIM_GD_BOUDIAF, atol=1e-5)
    dirichlet = tim.tim_gd(xs, ys, xq, 5, ce_weight=1.0, marginal_weight=1.0,
                           conditional_weight=1.0)
    np.testing.assert_allclose(dirichlet, TIM_GD_OVEILLEUX_DIRICHLET, atol=1e-5)
    np.testing.assert_allclose(tim.alpha_tim(xs, ys, xq, 5), ALPHA_TIM_ALPHA2, atol=1e-5)
    np.testing.assert_allclose(tim.alpha_tim(xs, ys, xq, 5, alpha=7.0), ALPHA_TIM_ALPHA7,
                               atol=1e-5)
    assert np.abs(ALPHA_TIM_ALPHA2 - ALPHA_TIM_ALPHA7).max() > 1e-2  # alpha matters here


def test_alpha_tim_takes_the_authors_alpha_by_shot():
    rng = np.random.default_rng(1)
    xq = rng.random((15, 8)).astype(np.float32)
    for shot, alpha in ((1, 2.0), (4, 2.0), (5, 7.0), (10, 7.0)):
        xs = rng.random((5 * shot, 8)).astype(np.float32)
        ys = np.repeat(np.arange(5), shot)
        np.testing.assert_allclose(tim.alpha_tim(xs, ys, xq, 5, steps=20),
                                   tim.alpha_tim(xs, ys, xq, 5, steps=20, alpha=alpha), atol=1e-7)
