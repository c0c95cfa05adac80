"""The drift detectors measured on the default data and model, as "Failing Loudly" (Rabanser et al.,
NeurIPS 2019) tables them: can a false alarm be trusted, how much new data finds a shift, do the
figures equal independent computations, and what a window costs.

    python -m tests.benchmark_drift

Prints, in markdown (docs/monitoring.md holds a run's output):
- calibration: the false alarm rate at p = 0.05 on clean data the model never trained on, over
  `--draws` random draws per sample size, for each detector and for the monitor's alert:
  (a) the detectors' own: each draw splits the run's unseen digits (its validation split and the test
  split) at random into a reference of the validation split's size and a new sample; (b) what a user
  sees: the run's own validation split as the reference against random clean test samples, for
  `--seeds` trained runs (each seed draws another validation split), their mean and range. The
  alert is the monitor's: either detector under alpha / 2 (Bonferroni over the two);
- power: the detection rate by severity (1-5) and new samples (10, 100, 500, 1000) for Gaussian
  noise and a subtle corruption of each ImageNet-C family, against the default run's validation
  split, with the model's accuracy under each;
- parity: the KS p-values against scipy's on the same features, the MMD² against a direct numpy
  computation, and the permutation p-value's Monte-Carlo error;
- cost: a 1,000-sample window against the reference, each detector, on this CPU.
"""

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy.stats import ks_2samp

from expframe.cli.finished_run import ModelSettings, load_run, restored_model
from expframe.data.corruptions import corrupt
from expframe.data.device_data import load, take
from expframe.data.new_data import run_split
from expframe.measure.drift import ALPHA, alert, ks, mmd
from expframe.measure.features import Features, features
from expframe.train.setup import model_inputs
from tests.conftest import make_cfg, trained
from tests.test_drift import direct_mmd2

SIZES = (10, 100, 500, 1000)
# the Gaussian noise, and one corruption of each ImageNet-C family, the subtler ones on digits
# (defocus blur, fog and contrast are found in 10 samples at every severity: nothing to table)
SHIFTS = ("gaussian_noise", "shot_noise", "motion_blur", "brightness", "jpeg_compression")


def train_runs(seeds: int, folder: Path) -> list[Path]:
    runs = []
    for seed in range(seeds):
        out = folder / f"seed{seed}"
        cfg = make_cfg(f"seed={seed}", "energy.track=false")
        metrics = trained(cfg, out)
        assert metrics["status"] == "ok"
        (out / ".hydra").mkdir()
        from omegaconf import OmegaConf

        OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
        runs.append(out)
    return runs


def model_of(run: Path):
    cfg, _ = load_run(run)
    data = load(cfg.dataset, torch.device("cpu"))
    net = restored_model(run, ModelSettings.of(cfg), model_inputs(data))
    _, val = run_split(data, cfg.dataset.val_fraction, cfg.seed)
    return net, data, val


def verdicts(ref: Features, new: Features, gen: torch.Generator) -> tuple[bool, bool, bool]:
    """Each detector's verdict and the monitor's alert (the two at Bonferroni's alpha / 2)."""
    both = (ks(ref.softmax, new.softmax), mmd(ref.embedding, new.embedding, generator=gen))
    return both[0].drift, both[1].drift, alert(both)


def rates(draws: list[tuple[bool, bool, bool]]) -> tuple[float, float, float]:
    n = len(draws)
    return tuple(sum(d[i] for d in draws) / n for i in range(3))


def calibration_exchangeable(ref: Features, test: Features, n_draws: int, sizes) -> dict[int, tuple]:
    pool = Features(torch.cat([ref.softmax, test.softmax]), torch.cat([ref.embedding, test.embedding]))
    gen = torch.Generator().manual_seed(0)
    out = {}
    for n in sizes:
        draws = []
        for _ in range(n_draws):
            order = torch.randperm(len(pool), generator=gen)
            reference, new = order[: len(ref)], order[len(ref) : len(ref) + n]
            draws.append(
                verdicts(
                    Features(pool.softmax[reference], pool.embedding[reference]),
                    Features(pool.softmax[new], pool.embedding[new]),
                    gen,
                )
            )
        out[n] = rates(draws)
    return out


def calibration_own_reference(ref: Features, test: Features, n_draws: int, sizes) -> dict[int, tuple]:
    gen = torch.Generator().manual_seed(1)
    out = {}
    for n in sizes:
        draws = []
        for _ in range(n_draws):
            new = torch.randperm(len(test), generator=gen)[:n]
            draws.append(verdicts(ref, Features(test.softmax[new], test.embedding[new]), gen))
        out[n] = rates(draws)
    return out


def power(net, data, ref: Features, n_draws: int, sizes, shifts) -> dict:
    gen = torch.Generator().manual_seed(2)
    amp = contextlib.nullcontext()
    table = {}
    for name in shifts:
        for severity in range(1, 6):
            moved = features(net, data.normalise_pixels(corrupt(data.test_pixels(), name, severity)), amp)
            table[name, severity, "accuracy"] = (moved.softmax.argmax(1) == data.test_y).double().mean().item()
            for n in sizes:
                draws = []
                for _ in range(1 if n == len(moved) else n_draws):
                    new = torch.randperm(len(moved), generator=gen)[:n]
                    draws.append(verdicts(ref, Features(moved.softmax[new], moved.embedding[new]), gen))
                table[name, severity, n] = rates(draws)
    return table


def parity(ref: Features, test: Features) -> tuple[float, float]:
    """The largest |p - scipy's p| over 20 windows, and the largest relative MMD² difference."""
    worst_p, worst_mmd = 0.0, 0.0
    for w in range(20):
        new = test.window(w * 50, w * 50 + 50)
        mine = ks(ref.softmax, new.softmax).p_value
        a, b = ref.softmax.double().numpy(), new.softmax.double().numpy()
        theirs = min(ks_2samp(a[:, j], b[:, j]).pvalue for j in range(a.shape[1]))
        worst_p = max(worst_p, abs(mine - theirs))
        statistic = mmd(ref.embedding, new.embedding, permutations=10).statistic
        direct = direct_mmd2(ref.embedding.double().numpy(), new.embedding.double().numpy())
        worst_mmd = max(worst_mmd, abs(statistic - direct) / abs(direct))
    return worst_p, worst_mmd


def cost(ref: Features, test: Features, repeats: int) -> tuple[float, float]:
    new = test.window(0, 1000)
    times = {"ks": [], "mmd": []}
    for _ in range(repeats):
        start = time.perf_counter()
        ks(ref.softmax, new.softmax)
        times["ks"].append(time.perf_counter() - start)
        start = time.perf_counter()
        mmd(ref.embedding, new.embedding)
        times["mmd"].append(time.perf_counter() - start)
    return statistics.median(times["ks"]), statistics.median(times["mmd"])


def row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=100, help="random draws per sample size (default 100)")
    parser.add_argument("--seeds", type=int, default=10, help="trained runs for calibration (b) (default 10)")
    parser.add_argument("--shifts", default=",".join(SHIFTS), help="corruptions for the power table")
    parser.add_argument("--repeats", type=int, default=5, help="timings per detector (median)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        runs = train_runs(args.seeds, Path(tmp))
        models = [model_of(r) for r in runs]
    amp = contextlib.nullcontext()
    feats = [
        (features(net, take(data.train_x, val)[:], amp), features(net, data.test_x[:], amp))
        for net, data, val in models
    ]
    ref, test = feats[0]
    print(f"default data and model: mnist_5k, the default MLP (seed 0); reference = its validation split ({len(ref)})")
    print(f"alpha = {ALPHA}; KS: BBSD with Bonferroni over 10 outputs; MMD: 100 permutations\n")

    print(f"calibration (a), the detectors' own: {args.draws} random splits of the 1,400 unseen digits per size\n")
    print(row(["new samples", "KS false alarms", "MMD false alarms", "alert"]))
    print(row(["---"] * 4))
    for n, (k, m, u) in calibration_exchangeable(ref, test, args.draws, SIZES).items():
        print(row([n, f"{k:.2f}", f"{m:.2f}", f"{u:.2f}"]))

    print(f"\ncalibration (b), the run's own validation split against {args.draws} random clean test samples,")
    print(
        f"for {args.seeds} trained runs (seeds 0-{args.seeds - 1}): mean [min, max]; seed 0 (the default run) apart\n"
    )
    own = [calibration_own_reference(r, t, args.draws, SIZES[:3]) for r, t in feats]
    print(row(["new samples", "KS false alarms", "MMD false alarms", "alert", "seed 0: KS, MMD, alert"]))
    print(row(["---"] * 5))
    for n in SIZES[:3]:
        cells = [n]
        for i in range(3):
            values = [o[n][i] for o in own]
            cells.append(f"{statistics.mean(values):.3f} [{min(values):.2f}, {max(values):.2f}]")
        cells.append(", ".join(f"{v:.2f}" for v in own[0][n]))
        print(row(cells))

    shifts = [s for s in args.shifts.split(",") if s]
    net, data, _ = models[0]
    table = power(net, data, ref, args.draws, SIZES, shifts)
    print(f"\npower: detection rate (KS / MMD) over {args.draws} draws (1 at 1000: the whole test split)\n")
    clean = (test.softmax.argmax(1) == data.test_y).double().mean().item()
    print(row(["corruption", "severity", f"accuracy (clean {clean:.3f})", *[f"n={n}" for n in SIZES]]))
    print(row(["---"] * (3 + len(SIZES))))
    for name in shifts:
        for severity in range(1, 6):
            cells = [f"{table[name, severity, n][0]:.2f} / {table[name, severity, n][1]:.2f}" for n in SIZES]
            print(row([name, severity, f"{table[name, severity, 'accuracy']:.3f}", *cells]))

    worst_p, worst_mmd = parity(ref, test)
    p_err = (ALPHA * (1 - ALPHA) / 100) ** 0.5
    print(f"\nparity: KS p-values vs scipy.stats.ks_2samp, 20 windows: largest difference {worst_p:.1e}")
    print(f"parity: MMD² vs a direct numpy computation, 20 windows: largest relative difference {worst_mmd:.1e}")
    print(
        f"parity: the permutation p-value's Monte-Carlo error at p = {ALPHA} with 100 permutations: "
        f"{p_err:.3f} (sqrt(p(1-p)/100)); its resolution 1/101 = {1 / 101:.4f}"
    )
    ks_s, mmd_s = cost(ref, test, args.repeats)
    print(
        f"\ncost: a 1,000-sample window against the {len(ref)}-sample reference on {torch.get_num_threads()} CPU "
        f"thread(s): KS {ks_s * 1000:.1f} ms, MMD (100 permutations) {mmd_s * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
