"""The chapter's exercises and the papers' experiments as lessons: a question, a prediction, a run, a reveal.

Each ``Exercise`` trains a few variants of LeNet on the same batches from the same seed (``Variant``: the
normalisation, the activation, the learning rate, the batch and the model's options), then ``reveal`` reads
the measured numbers and says which answer they support and why, in a sentence written from them. Nothing
in a reveal is fixed in advance: if a run disagrees with the paper, the reveal says what the run shows.

    result = run(EXERCISES["bias"], data, progress=print)
    answer, text = EXERCISES["bias"].reveal(result)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bnviz.data.fashion_mnist import endless_batches
from bnviz.live.snapshot import Settings
from bnviz.step.models import build_lenet
from bnviz.step.training import evaluate, evaluate_train_mode, has_running_statistics, make_optimizer, train_step

# The live lanes' rule (Settings' defaults): a loss above 20 (chance is 2.3) 5 steps in a row, or NaN, diverges.
DIVERGE_LOSS, DIVERGE_STEPS = Settings.diverge_loss, Settings.diverge_steps
LEARNS = 0.5  # "learns": at least 50% validation accuracy at the end (chance is 10%)
SAME = 0.02  # two accuracies within 2 points are "about the same"


@dataclass(frozen=True)
class Variant:
    name: str
    norm: str = "scratch"
    activation: str = "sigmoid"
    lr: float = 0.1
    batch_size: int = 128
    classes_per_batch: int = 10
    options: dict = field(default_factory=dict)  # more of build_lenet's options: norm_at, bias, pool, first_padding


@dataclass(frozen=True)
class VariantResult:
    variant: Variant
    steps: int  # steps trained (fewer if it diverged)
    losses: tuple  # training loss per step
    val_acc: float  # eval mode (running statistics) on the validation images; NaN if it diverged
    val_acc_batch: float  # train mode (each batch's statistics); the same as val_acc without running statistics
    diverged_at: int | None
    largest_bias: float | None  # the largest |bias| of the layers before a normalisation, after training

    @property
    def name(self):
        return self.variant.name

    @property
    def learns(self):
        return self.diverged_at is None and self.val_acc >= LEARNS

    @property
    def verdict(self):
        if self.diverged_at:
            return f"diverged at step {self.diverged_at}"
        return "learns" if self.learns else "stays near chance" if self.val_acc < 0.2 else "learns slowly"


@dataclass(frozen=True)
class Exercise:
    key: str
    title: str
    question: str
    choices: tuple
    variants: tuple
    steps: int
    reveal: Callable[
        [dict], tuple[int, str]
    ]  # callable(results: {name: VariantResult}) -> (index into choices, sentence)
    source: str = ""  # where it comes from: the chapter's exercise, a paper
    train_size: int = 12_800
    finding: str = ""  # a key of norm_findings.DIRECTIONS: the same question measured at a larger scale


def train_variant(v, data, steps, *, train_size, val_size=1000, seed=0, progress=None, should_stop=lambda: False):
    """Train one variant ``steps`` steps (epochs of ``train_size`` images, reshuffled) and measure it."""
    model = build_lenet(v.norm, v.activation, seed=seed, **v.options)
    optimizer = make_optimizer(model, v.lr)
    images, labels = data.train_images[:train_size], data.train_labels[:train_size]
    val_x, val_y = data.test_images[:val_size], data.test_labels[:val_size]
    order = endless_batches(images, labels, v.batch_size, seed=seed, classes_per_batch=v.classes_per_batch)
    losses, above, diverged_at = [], 0, None
    for step in range(1, steps + 1):
        X, y = next(order)
        loss = train_step(model, optimizer, X, y)[0].item() / X.shape[0]
        losses.append(loss)
        above = above + 1 if not loss <= DIVERGE_LOSS else 0
        if not math.isfinite(loss) or above >= DIVERGE_STEPS:
            diverged_at = step - above + 1 if math.isfinite(loss) else step
            break
        if step % 20 == 0:
            if progress:
                progress(step / steps)
            if should_stop():
                break
    if diverged_at:
        acc = batch_acc = math.nan
    else:
        acc = evaluate(model, val_x, val_y)[1]
        batch_acc = evaluate_train_mode(model, val_x, val_y, v.batch_size)[1] if has_running_statistics(model) else acc
    biases = [getattr(model, n).bias for n in ("conv1", "conv2", "fc1", "fc2")]
    largest = max((b.detach().abs().max().item() for b in biases if b is not None), default=None)
    return VariantResult(v, len(losses), tuple(losses), acc, batch_acc, diverged_at, largest)


def run(exercise, data, *, seed=0, progress=None, should_stop=lambda: False):
    """Every variant of ``exercise``, one after another: {variant name: VariantResult} (those finished, if stopped)."""
    results, n = {}, len(exercise.variants)
    for i, v in enumerate(exercise.variants):
        if should_stop():
            break
        report = (lambda f, i=i: progress((i + f) / n)) if progress else None
        results[v.name] = train_variant(
            v, data, exercise.steps, train_size=exercise.train_size, seed=seed, progress=report, should_stop=should_stop
        )
    if progress:
        progress(1.0)
    return results


# ----------------------------------------------------------------------------------------- reading results
def pct(acc):
    return "diverged" if math.isnan(acc) else f"{100 * acc:.1f}%"


def acc_of(r):
    """Eval-mode accuracy, with a run that diverged counted as chance (it learned nothing it can keep)."""
    return 0.1 if math.isnan(r.val_acc) else r.val_acc


def listing(results):
    return "; ".join(f"{name} {pct(r.val_acc)}" for name, r in results.items())


def compare(a, b, same=SAME):
    """0 if a is clearly below b, 1 if within ``same``, 2 if clearly above."""
    d = acc_of(a) - acc_of(b)
    return 1 if abs(d) < same else 2 if d > 0 else 0


# ----------------------------------------------------------------------------------------- the exercises
def reveal_bias(r):
    with_bias, without = r["BN, with bias"], r["BN, no bias"]
    i = compare(without, with_bias)
    text = f"With the bias {pct(with_bias.val_acc)}, without it {pct(without.val_acc)} after {with_bias.steps} steps."
    moved = with_bias.largest_bias
    if moved is not None and moved < 1e-3:
        text += (
            f" The biases before BN ended at most {moved:.1g} away from their starting 0: BN subtracts each batch's "
            "mean, so a constant shift never reaches its output, the bias gets no gradient, and beta does its job."
        )
    elif moved is not None:
        text += f" The biases before BN moved (up to {moved:.2g}) in this run."
    return i, text


def reveal_race(r):
    def largest(norm):
        rates = [res.variant.lr for res in r.values() if res.variant.norm == norm and res.learns]
        return max(rates, default=None)

    bn, plain = largest("scratch"), largest("none")
    if bn is None and plain is None:
        return 1, "Neither network learned at any of these rates in this many steps: " + listing(r) + "."
    i = 0 if (plain is None or (bn or 0) > plain) else 1 if bn == plain else 2

    def said(rate):
        return "none of them" if rate is None else f"{rate:g}"

    text = (
        f"The largest rate that still learns (50% or more, no divergence): with BN {said(bn)}, "
        f"without BN {said(plain)}. " + "; ".join(f"{res.name}: {res.verdict}" for res in r.values()) + "."
    )
    return i, text


def reveal_positions(r):
    first, last = r["BN at bn1, bn2 only"], r["BN at bn3, bn4 only"]
    i = compare(first, last, same=0.03)
    i = {2: 0, 0: 1, 1: 2}[i]  # choices: the first two, the last two, about equally
    return i, f"{listing(r)} after {first.steps} steps."


def reveal_lite(r):
    centre, scale = r["centre only"], r["scale only"]
    i = {2: 0, 0: 1, 1: 2}[compare(centre, scale, same=0.03)]
    full, frozen = r["full BN"], r["gamma=1, beta=0"]
    text = (
        f"{listing(r)} after {full.steps} steps. Freezing gamma and beta "
        + ("costs little" if abs(acc_of(full) - acc_of(frozen)) < 0.03 else "matters")
        + " here: the layers after BN can rescale what they receive."
    )
    return i, text


def reveal_ioffe(r):
    x1, x5, x30 = r["BN, lr 0.1"], r["BN, lr 0.5"], r["BN, lr 3"]
    if x5.learns and x30.learns:
        i = 0
    elif x5.learns:
        i = 1
    else:
        i = 2
    plain = r["no BN, lr 0.1"]
    text = (
        f"{listing(r)} after {x1.steps} steps: BN at 5× {x5.verdict}, at 30× {x30.verdict}; "
        f"the plain network at 1× {plain.verdict}."
    )
    return i, text


def reveal_noisy(r):
    bn, noisy, none = r["BN"], r["noisy BN"], r["no BN"]
    if acc_of(noisy) > acc_of(bn) - 0.05:
        i = 0
    elif abs(acc_of(noisy) - acc_of(none)) < 0.05:
        i = 1
    else:
        i = 2
    text = (
        f"{listing(r)} after {bn.steps} steps. The noise moves every channel's mean and spread at every step, the "
        "'internal covariate shift' that BN was said to remove"
        + (
            ", and yet noisy BN learns about as well as BN (or better): reducing that shift is not why BN helps."
            if i == 0
            else "; in this run it did not train as well as BN."
        )
    )
    return i, text


def reveal_small(r):
    bn, gn = r["BN, batch 2"], r["GroupNorm, batch 2"]
    i = {0: 1, 2: 0, 1: 2}[compare(bn, gn, same=0.03)]
    text = (
        f"Eval mode (what a test sees): BN {pct(bn.val_acc)}, GroupNorm {pct(gn.val_acc)}; in train mode (each "
        f"batch's own statistics) BN reaches {pct(bn.val_acc_batch)}. "
    )
    if acc_of(bn) < LEARNS and not math.isnan(bn.val_acc_batch) and bn.val_acc_batch < LEARNS:
        text += (
            "BN hardly learns with 2 images a batch, in either mode: each feature gets two values a batch, "
            "which BN turns into about -1 and +1 whatever the images are. "
        )
    elif bn.val_acc_batch - acc_of(bn) > SAME:
        text += "BN's running averages of two-image statistics serve it worse than the batches did. "
    text += "GroupNorm normalises each image by itself, the same in training and at test time."
    return i, text


def reveal_skewed(r):
    bn, renorm, iid = r["BN, 2 classes a batch"], r["BN renorm, 2 classes a batch"], r["BN, i.i.d. batches"]
    i = {0: 0, 2: 1, 1: 2}[compare(bn, renorm)]  # choices: renorm keeps it, BN keeps it, about the same
    text = (
        f"BN with i.i.d. batches {pct(iid.val_acc)}; with 2-class batches BN {pct(bn.val_acc)} in eval mode "
        f"({pct(bn.val_acc_batch)} in train mode), Batch Renorm {pct(renorm.val_acc)}. "
    )
    if i == 0:
        text += (
            "Renorm corrects each batch's statistics towards the running ones (r and d), so what the network learns "
            "to expect in training is what it gets at test time."
        )
    else:
        text += (
            "Renorm's corrections grow only after step 500 (r_max and d_max open up to step 2,500), so in a run of "
            f"{bn.steps} steps they change little."
        )
    return i, text


def reveal_pooling(r):
    avg, mx, chapter, bn = r["no BN, avg pool"], r["no BN, max pool"], r["chapter's plain LeNet"], r["BN, avg pool"]
    closed = acc_of(mx) - acc_of(avg)
    gap = acc_of(bn) - acc_of(avg)
    if gap <= 0:
        i = 2
    else:
        i = 0 if closed >= 0.5 * gap else 1
    text = (
        f"{listing(r)} after {avg.steps} steps. Max pooling closes {100 * closed:.1f} of the {100 * gap:.1f} points "
        "between the plain and the BN network. The chapter's plain LeNet also pads its first convolution by 2 "
        f"(its BN LeNet does not): {pct(chapter.val_acc)} here, so its comparison mixes padding with BN."
    )
    return i, text


EXERCISES = {
    e.key: e
    for e in (
        Exercise(
            "bias",
            "Remove the bias before BN",
            "BN subtracts each batch's mean. Remove the bias of every layer that feeds a BN layer: what happens?",
            ("Accuracy drops clearly", "About the same (within 2 points)", "Accuracy rises clearly"),
            (Variant("BN, with bias"), Variant("BN, no bias", options=dict(bias=False))),
            300,
            reveal_bias,
            "The chapter's exercises: the bias before BN",
        ),
        Exercise(
            "race",
            "How large can the learning rate be?",
            "Raise the learning rate from 0.1 to 30: which network still learns at the higher rates?",
            ("BN learns at larger rates than without BN", "Both fail at the same rate", "Without BN it tolerates more"),
            tuple(
                Variant(f"{'BN' if n == 'scratch' else 'no BN'}, lr {lr:g}", n, lr=lr)
                for lr in (0.1, 1.0, 3.0, 10.0, 30.0)
                for n in ("none", "scratch")
            ),
            150,
            reveal_race,
            "The chapter's exercises: compare the learning rates (fails: diverges, or stays below 50%)",
        ),
        Exercise(
            "positions",
            "Which BN layers matter?",
            "Keep BN in only some of the four places. Which half matters more?",
            ("The first two (after the convolutions)", "The last two (after fc1, fc2)", "Both halves about equally"),
            (
                Variant("BN at all four"),
                Variant("BN at bn1, bn2 only", options=dict(norm_at=("bn1", "bn2"))),
                Variant("BN at bn3, bn4 only", options=dict(norm_at=("bn3", "bn4"))),
                Variant("no BN", "none"),
            ),
            300,
            reveal_positions,
            "The chapter's exercises: BN in every layer?",
        ),
        Exercise(
            "lite",
            "Centre only, scale only",
            "BN centres (subtracts the mean) and scales (divides by the standard deviation). Which matters more here?",
            ("Centring", "Scaling", "Both about equally"),
            (
                Variant("full BN"),
                Variant("centre only", "centre"),
                Variant("scale only", "scale"),
                Variant("gamma=1, beta=0", "frozen"),
            ),
            300,
            reveal_lite,
            'The chapter\'s exercises: "lite" BN, and gamma and beta fixed',
        ),
        Exercise(
            "ioffe",
            "BN at 5× and 30× the learning rate",
            "Ioffe & Szegedy trained BN networks at 5× and 30× the rate. What happens to our BN LeNet at 0.5 and 3?",
            ("Both higher rates learn, faster", "5× learns, 30× fails", "Both fail"),
            (
                Variant("no BN, lr 0.1", "none"),
                Variant("BN, lr 0.1"),
                Variant("BN, lr 0.5", lr=0.5),
                Variant("BN, lr 3", lr=3.0),
            ),
            300,
            reveal_ioffe,
            "Ioffe & Szegedy (2015), Section 4.2",
        ),
        Exercise(
            "noisy",
            "Noisy BN: is it the covariate shift?",
            "After BN, add noise that moves every channel's mean and spread at every step. Does it still train?",
            ("About as well as BN", "As badly as no BN", "In between"),
            (Variant("BN"), Variant("noisy BN", "noisy"), Variant("no BN", "none")),
            300,
            reveal_noisy,
            "Santurkar et al. (2018), Section 2",
            finding="noisy_bn",
        ),
        Exercise(
            "small",
            "Batches of 2 images",
            "Train with batches of 2. Which keeps its accuracy at test time (eval mode)?",
            ("BN", "GroupNorm", "Both the same"),
            (
                Variant("BN, batch 2", activation="relu", lr=0.01, batch_size=2),
                Variant("GroupNorm, batch 2", "groupnorm", activation="relu", lr=0.01, batch_size=2),
            ),
            1500,
            reveal_small,
            "Wu & He (2018): GroupNorm",
            finding="small_batch",
        ),
        Exercise(
            "skewed",
            "Batches of 2 classes",
            "Each batch holds images of only 2 classes. Which keeps its test accuracy: BN, or Batch Renorm?",
            ("Batch Renorm", "BN", "About the same"),
            (
                Variant("BN, i.i.d. batches", activation="relu", lr=0.025, batch_size=32),
                Variant("BN, 2 classes a batch", activation="relu", lr=0.025, batch_size=32, classes_per_batch=2),
                Variant(
                    "BN renorm, 2 classes a batch",
                    "renorm",
                    activation="relu",
                    lr=0.025,
                    batch_size=32,
                    classes_per_batch=2,
                ),
            ),
            2000,
            reveal_skewed,
            "Ioffe (2017): Batch Renormalization",
            finding="skewed_batches",
        ),
        Exercise(
            "pooling",
            "Average or max pooling?",
            "The chapter's LeNet uses average pooling. How much of BN's gain does max pooling give the plain network?",
            ("Most of it", "Little of it", "There is no gain to explain"),
            (
                Variant("no BN, avg pool", "none"),
                Variant("no BN, max pool", "none", options=dict(pool="max")),
                Variant("chapter's plain LeNet", "none", options=dict(first_padding=2)),
                Variant("BN, avg pool"),
            ),
            300,
            reveal_pooling,
            "The chapter's comparison, and its confounds",
        ),
    )
}
