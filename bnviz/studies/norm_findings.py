"""What the batch conditions where BN breaks look like at LeNet's scale: measured numbers and true sentences.

Measured on the real Fashion-MNIST by bench/norm_conditions.py (2-core CPU, 2026-11-26; the set-up and every
number in docs/RESULTS_NORMALISATION.md): ReLU LeNet, seed 0, one run per lane, accuracies on the first 2,000
test images. Each ``Finding`` says what the literature expects, whether it holds here, the numbers, and a
sentence that is true for those numbers, for the dashboard to show beside the exercise. The directions that hold
are checked on shorter runs by tests/test_norm_directions.py; the ones that do not are stated here, not claimed.

    from bnviz.studies.norm_findings import DIRECTIONS
    f = DIRECTIONS["small_batch"]      # f.title, f.expected, f.verdict ("holds" | "partly" | "does not hold"),
                                       # f.sentence, f.numbers ({name: accuracy}), f.setup, f.tested
"""

from dataclasses import dataclass, field

HOLDS, PARTLY, NOT = "holds", "partly", "does not hold"
VERDICTS = (HOLDS, PARTLY, NOT)
SOURCE = "docs/RESULTS_NORMALISATION.md"


@dataclass(frozen=True)
class Finding:
    title: str  # the condition, short
    expected: str  # the direction the literature reports
    verdict: str  # one of VERDICTS, at LeNet's scale
    sentence: str  # what happened here, true for ``numbers``
    numbers: dict = field(default_factory=dict)  # {what: eval-mode accuracy unless named otherwise}
    setup: str = ""  # how it was measured
    tested: str = ""  # the test that checks it ("" where the direction does not hold)


DIRECTIONS = {
    "small_batch": Finding(
        title="Tiny batches (2-4 images)",
        expected="At batch 2-4 BN's eval accuracy collapses while GroupNorm holds (Wu & He 2018: GroupNorm's error "
        "10.6% lower than BN's at batch 2 on ImageNet).",
        verdict=PARTLY,
        sentence="At batch 2 BN reached 32.8% in eval mode against GroupNorm's 74.7% (and 60.5% with no "
        "normalisation): 42 points lower. Here BN did not only fail at test time: it barely trained (train-mode "
        "accuracy 22.1%, loss 2.18 near chance's 2.30), because after LeNet's fully connected layers a batch of 2 "
        "gives each feature two values, which BN turns into about -1 and +1 whatever they were. At batch 4 BN was "
        "6 points below GroupNorm (69.5% vs 75.8%); from batch 8 it was ahead (77.7% vs 74.8%).",
        numbers={
            "BN, batch 2": 0.328,
            "BN train mode, batch 2": 0.221,
            "GroupNorm, batch 2": 0.747,
            "LayerNorm, batch 2": 0.728,
            "no normalisation, batch 2": 0.605,
            "BN renorm, batch 2": 0.486,
            "BN, batch 4": 0.695,
            "GroupNorm, batch 4": 0.758,
            "BN, batch 8": 0.777,
            "GroupNorm, batch 8": 0.748,
            "BN, batch 128": 0.750,
            "GroupNorm, batch 128": 0.625,
        },
        setup="6,400 training images per lane at every batch size, lr = 0.1 x batch / 128 (linear scaling), ReLU.",
        tested="tests/test_norm_directions.py::test_batch_of_two_bn_collapses_groupnorm_holds",
    ),
    "skewed_batches": Finding(
        title="Batches of 2 classes",
        expected="With 2-class batches BN's eval accuracy falls, and Batch Renorm recovers much of it (Ioffe 2017).",
        verdict=HOLDS,
        sentence="With 2 classes in each batch BN's eval accuracy fell from 87.0% (i.i.d. batches) to 43.4%; Batch "
        "Renorm reached 75.4%, winning back 73% of the loss, and GroupNorm, with no batch statistics, 81.8%. With "
        "5 classes nothing fell (85.2%); with 1 class BN was at chance (9.9%), renorm 39.2%, GroupNorm 76.1%.",
        numbers={
            "BN, i.i.d.": 0.870,
            "BN, 5 classes": 0.852,
            "BN, 2 classes": 0.434,
            "BN renorm, 2 classes": 0.754,
            "GroupNorm, 2 classes": 0.818,
            "BN, 1 class": 0.099,
            "BN renorm, 1 class": 0.392,
            "GroupNorm, 1 class": 0.761,
        },
        setup="Batch 32, lr 0.025, 2,000 steps, ReLU; renorm's limits open from step 500 (r_max 2.5, d_max 3.75 at "
        "the end).",
        tested="tests/test_norm_directions.py::test_two_class_batches_bn_falls_renorm_recovers",
    ),
    "precise_bn": Finding(
        title="Recomputing the statistics (PreciseBN)",
        expected="Recomputing BN's running statistics with the final weights narrows the train/eval gap "
        "(Wu & Johnson 2021).",
        verdict=PARTLY,
        sentence="Where eval mode trailed train mode by several points, recomputing narrowed the gap: with 2-class "
        "batches from 11.1 to 3.8 points (eval 43.4% -> 50.7%, train mode 54.5%), and after 50 steps at batch 128 "
        "from 2.1 to 0.4. Where eval mode was ahead (batch 4 and 8, whose train-mode check is the noisy one) it "
        "did not, and for Batch Renorm at batch 2 it made eval mode worse (48.6% -> 29.0%).",
        numbers={
            "BN 2 classes, eval before": 0.434,
            "BN 2 classes, eval after": 0.5075,
            "BN 2 classes, train mode": 0.5455,
            "BN batch 128, eval before": 0.750,
            "BN batch 128, eval after": 0.775,
            "BN batch 128, train mode": 0.771,
            "BN batch 4, eval before": 0.695,
            "BN batch 4, eval after": 0.711,
            "BN batch 4, train mode": 0.635,
            "renorm batch 2, eval before": 0.486,
            "renorm batch 2, eval after": 0.2905,
        },
        setup="PreciseBN over 6,400 training images in i.i.d. batches of the training size, weights frozen, on the "
        "lanes above.",
        tested="tests/test_norm_directions.py::test_precise_bn_narrows_the_gap",
    ),
    "noisy_bn": Finding(
        title="Noisy BN",
        expected="BN with deliberate noise after it (a random scale and shift each step) trains about as well as BN "
        "(Santurkar et al. 2018).",
        verdict=NOT,
        sentence="Not at this scale: after 2,000 steps noisy BN reached 79.2%, the same as no normalisation "
        "(79.2%), and 7.8 points below BN (87.0%); its training loss was 0.58 against BN's 0.37.",
        numbers={"BN": 0.870, "noisy BN": 0.7915, "no normalisation": 0.792},
        setup="Batch 32, lr 0.025, 2,000 steps, i.i.d. batches, ReLU; noise: scale U(0.5, 2), shift U(-1, 1) per "
        "channel, drawn every step.",
    ),
}


def sentence(key):
    """The sentence for one condition (a key of DIRECTIONS), with its verdict: 'Holds at LeNet's scale. ...'."""
    f = DIRECTIONS[key]
    lead = {HOLDS: "Holds at LeNet's scale.", PARTLY: "Holds in part at LeNet's scale.", NOT: "Does not hold here."}
    return f"{lead[f.verdict]} {f.sentence}"
