"""Issue 16: can the 10k test images tell the methods apart? Paired comparisons of the study's models.

    python benchmarks/fashion_full_paired.py      # reads fashion_full.py's finished runs; trains nothing

The goals compare mean accuracies over seeds, against the spread between seeds. This adds the
other source of noise: the test set. Two models are scored on the same 10k images, so their
difference is a paired measurement, and what decides it is only the images one model gets right
and the other wrong (b and c). For each pair of finished runs on the same seed (every method
against dense; the best OCSPruner variant, as fashion_full.json's summary picked it on validation,
against every other method; and each method against its own other seeds) it writes

* the difference in test accuracy (points) and b, c;
* the paired standard error of the difference, sqrt(b + c - (b - c)^2 / n) / n (points);
* McNemar's exact two-sided p: the chance of a split of b + c discordant images at least as
  uneven as b : c if both models were equally good (a fair coin per discordant image).

Each final model's predictions are computed once (one thread), and the JSON keeps every run's
right/wrong per image (``correct``, packed bits): the models live in fashion_full.py's WORK, which
a fresh checkout does not have, and the pairs a later run makes need the earlier runs' bits. The
accuracy they give must equal the run's recorded ``final_test_acc``, or the script stops (it
would not be measuring the same model). A finished run with neither bits nor model (trained
before the bits were kept, its work directory gone) keeps the pairs scored while its model
existed; its new pairs are listed as unscored. Writes
``benchmarks/results/fashion_full_paired.json`` with a top-level ``summary``.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import statistics
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from ocspruner.checkpoint import atomic_write_text  # noqa: E402

RESULT_NAME = "fashion_full_paired.json"     # beside fashion_full.json, where --report looks for it
RESULT = os.path.join(ROOT, "benchmarks", "results", RESULT_NAME)


def split_key(key: str) -> tuple[str, int]:
    """``"ocspruner_knapsack-s1"`` -> ``("ocspruner_knapsack", 1)``: a run key's label and seed."""
    label, seed = key.rsplit("-s", 1)
    return label, int(seed)


# ----------------------------------------------------------------------------------------------
# the statistics (pure)
# ----------------------------------------------------------------------------------------------
def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(b, c): images only A gets right, images only B gets right."""
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"the two runs were scored on different test sets ({correct_a.shape} vs {correct_b.shape})")
    return int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: P(a Binomial(b + c, 1/2) split at least as uneven as b : c)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def paired_se_points(b: int, c: int, n: int) -> float:
    """Standard error (points) of acc(A) - acc(B) over n images scored by both: the per-image
    difference is +1 (b images), -1 (c) or 0, so its variance is (b + c)/n - ((b - c)/n)^2."""
    return 100.0 * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n


def compare(key_a: str, key_b: str, correct: dict[str, np.ndarray]) -> dict:
    """A against B on the same images: the difference, its paired error, McNemar's p."""
    a, b_ = correct[key_a], correct[key_b]
    b, c = discordant(a, b_)
    n = len(a)
    diff = 100.0 * (b - c) / n
    se = paired_se_points(b, c, n)
    return {"a": key_a, "b": key_b, "acc_a": 100.0 * a.mean(), "acc_b": 100.0 * b_.mean(), "diff_points": diff,
            "only_a_right": b, "only_b_right": c, "paired_se_points": se,
            "z": diff / se if se > 0 else 0.0, "mcnemar_p": mcnemar_exact(b, c)}


def pairs(keys: list[str], best: str | None) -> list[tuple[str, str, str]]:
    """(kind, A, B) for finished run keys ``<label>-s<seed>``: every method against dense on the
    same seed; ``best`` against every other method on the same seed; a method's seeds against each
    other (what a seed alone moves); a Fig. 3/4 run (``fig...``) against dense and against the
    paper partition's run of its seed (what the one change moved)."""
    by = {split_key(k): k for k in keys}
    out = []
    for (label, seed), k in sorted(by.items(), key=lambda x: (x[0][1], x[0][0])):
        if label != "dense" and ("dense", seed) in by:
            out.append(("vs_dense", k, by[("dense", seed)]))
        if label.startswith("fig"):     # Fig. 3/4: the paper partition with one thing changed
            if ("ocspruner", seed) in by:
                out.append(("fig_vs_ocspruner", k, by[("ocspruner", seed)]))
            continue
        if best is not None and label != best and label != "dense" and (best, seed) in by:
            out.append(("best_ocspruner_vs", by[(best, seed)], k))
    # Fig. 4's fixed pruning epochs against each other (is the accuracy best where J_avg levels off?)
    fig4 = sorted((k for (label, _), k in by.items() if label.startswith("fig4-prune-at-")),
                  key=lambda k: (split_key(k)[1], int(split_key(k)[0].rsplit("-", 1)[1])))
    out += [("fig4_vs_fig4", a, b) for i, a in enumerate(fig4) for b in fig4[i + 1:]
            if split_key(a)[1] == split_key(b)[1]]
    labels = sorted({label for label, _ in by if not label.startswith("fig")})
    for label in labels:
        seeds = sorted(s for lb, s in by if lb == label)
        for i, s0 in enumerate(seeds):
            for s1 in seeds[i + 1:]:
                out.append(("seed_vs_seed", by[(label, s0)], by[(label, s1)]))
    return out


def summarize(rows: list[dict], best: str | None) -> dict:
    """Headline figures: the test set's resolution (the median paired error, and the difference
    1.96 of them make), and the best variant against random and prune-at-init per seed."""
    ses = [r["paired_se_points"] for r in rows if r["kind"] != "seed_vs_seed"]
    same = [r for r in rows if r["kind"] == "seed_vs_seed"]
    out = {"best_ocspruner_method": best, "pairs": len(rows),
           "median_paired_se_points": statistics.median(ses) if ses else None,
           "resolvable_difference_points": 1.96 * statistics.median(ses) if ses else None,
           "seed_vs_seed_significant": sum(r["mcnemar_p"] < 0.05 for r in same), "seed_vs_seed_pairs": len(same)}
    for other, name in (("random", "random"), ("snip", "pai"), ("dense", "dense")):
        kind, side = ("vs_dense", "a") if other == "dense" else ("best_ocspruner_vs", "b")
        key = best if other == "dense" else other
        got = [r for r in rows if r["kind"] == kind and split_key(r[side])[0] == key]
        # every row here is A = the best variant, so diff_points = best - other
        out[f"best_ocspruner_vs_{name}"] = [
            {"seed": split_key(r["a"])[1], "diff_points": round(r["diff_points"], 4),
             "paired_se_points": round(r["paired_se_points"], 4), "mcnemar_p": round(r["mcnemar_p"], 4)}
            for r in got]
    return out


# ----------------------------------------------------------------------------------------------
# predictions of the finished runs
# ----------------------------------------------------------------------------------------------
def study_test_set():
    """The study's 10k test images (the shipped recipe's data; the seed only moves the
    validation split, never the test set) and the recipe's batch size."""
    from ocspruner.config import load_config
    from ocspruner.data import build_datasets

    import fashion_full as ff
    d = load_config(ff.CONFIG).data
    bundle = build_datasets(d.name, d.root, val_fraction=d.val_fraction, seed=0, subset=None,
                            image_size=d.image_size, augment=False, **d.options)
    return bundle.test, d.batch_size


def study_epochs() -> int:
    """The recipe's cycle length (it names the Fig. 4 runs)."""
    from ocspruner.config import load_config

    import fashion_full as ff
    return load_config(ff.CONFIG).epochs


def predictions(run_dir: str, dataset, batch_size: int) -> np.ndarray:
    """The final model's predicted class per test image, in the trainer's batches (one thread,
    as the run tested it: the same arithmetic, so the same argmax)."""
    import torch

    from ocspruner.io import load

    model = load(os.path.join(run_dir, "final_model.pt"))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        return np.concatenate([model(x).argmax(1).numpy() for x, _ in loader]).astype(np.int64)


def pack(correct: np.ndarray) -> str:
    """A run's right/wrong per test image as text for the JSON: 10k images in 1,668 characters."""
    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8), count=n).astype(bool)


def score_runs(records: dict, kept: dict, trained_dirs: dict, labels: np.ndarray, test) -> tuple[dict, list[str]]:
    """Right/wrong per test image for every finished run (``records``: key -> fashion_full.json's
    record): as kept in this script's JSON (``kept``: key -> :func:`pack` text), else from the
    final model of a run trained in WORK (``trained_dirs``: key -> run dir; ``test``: (dataset,
    batch size)). Each must score the run's recorded ``final_test_acc`` exactly, or the script
    stops (it would not be measuring that model). Returns them and the finished runs that have
    neither (their model was in a work directory that is gone)."""
    correct, lost = {}, []
    for key, rec in records.items():
        if key in kept:
            c = unpack(kept[key], len(labels))
            where = "the kept right/wrong bits"
        elif key in trained_dirs:
            c = predictions(trained_dirs[key], *test) == labels
            where = f"the final model in {trained_dirs[key]}"
        else:
            lost.append(key)
            continue
        acc = 100.0 * c.mean()
        if abs(acc - rec["final_test_acc"]) > 1e-9:
            raise SystemExit(f"{key}: {where} score {acc:.4f}%, the run recorded {rec['final_test_acc']:.4f}%; "
                             f"not the run's model or test set (drop {key} from {RESULT_NAME}'s \"correct\" and rerun)")
        correct[key] = c
    return correct, lost


def merge_rows(fresh: list[dict], old: list[dict], defined: list[tuple], lost: list[str]) -> tuple[list[dict], list]:
    """The pairs of this run (``fresh``) and, of the pairs still ``defined`` that involve a
    ``lost`` run, the ones an earlier run scored (``old``: kept as they were measured, when that
    run's model existed); the defined pairs nobody can score now are returned second."""
    have = {(r["kind"], r["a"], r["b"]) for r in fresh}
    old_by = {(r["kind"], r["a"], r["b"]): r for r in old}
    kept, unscored = [], []
    for p in defined:
        if p in have or not (p[1] in lost or p[2] in lost):
            continue
        if p in old_by:
            kept.append(old_by[p])
        else:
            unscored.append(list(p))
    order = {p: i for i, p in enumerate(defined)}
    rows = sorted(fresh + kept, key=lambda r: order[(r["kind"], r["a"], r["b"])])
    return rows, unscored


def main(argv=None) -> dict:
    import torch

    import fashion_full as ff

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=ff.DEFAULT_WORK, help="fashion_full.py's work directory")
    ap.add_argument("--out", default=RESULT, help="the JSON to write (and read: what it kept)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    study = json.load(open(os.path.join(ROOT, "benchmarks", "results", "fashion_full.json")))
    best = study["summary"].get("best_ocspruner_method")
    finished = [r for r in ff.plan(study_epochs()) if r["key"] in study["runs"]]     # in plan order
    records = {r["key"]: study["runs"][r["key"]] for r in finished}
    if not records:
        raise SystemExit("no finished run in benchmarks/results/fashion_full.json; run benchmarks/fashion_full.py first")
    on_file = json.load(open(args.out)) if os.path.exists(args.out) else {}
    trained_dirs = {r["key"]: ff.run_dir(r, args.work) for r in finished if ff.trained(r, args.work)}
    dataset, batch_size = study_test_set()
    labels = np.concatenate([y.numpy() for _, y in torch.utils.data.DataLoader(dataset, batch_size=1000)])
    correct, lost = score_runs(records, on_file.get("correct") or {}, trained_dirs, labels, (dataset, batch_size))
    fresh = [{"kind": kind, **compare(a, b, correct)} for kind, a, b in pairs(list(correct), best)]
    rows, unscored = merge_rows(fresh, on_file.get("pairs") or [], pairs(list(records), best), lost)
    accs = {k: round(100.0 * c.mean(), 4) for k, c in correct.items()}
    accs.update({k: v for k, v in (on_file.get("runs") or {}).items() if k in lost})   # scored before
    summary = summarize(rows, best)
    summary["runs_without_predictions"] = lost
    summary["unscored_pairs"] = unscored
    result = {"command": "python benchmarks/fashion_full_paired.py", "n_test": int(len(labels)),
              "runs": {k: accs[k] for k in records if k in accs}, "summary": summary, "pairs": rows,
              "correct": {k: pack(c) for k, c in correct.items()}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    s = result["summary"]
    print(f"{len(correct)} runs scored, {len(rows)} pairs; median paired error {s['median_paired_se_points']:.3f} points "
          f"(a difference of {s['resolvable_difference_points']:.2f} is 1.96 of them)")
    if lost:
        print(f"  no predictions (model gone with an earlier work directory): {', '.join(lost)}; "
              f"{len(unscored)} pairs with them unscored")
    for name in ("dense", "random", "pai"):
        for r in s[f"best_ocspruner_vs_{name}"]:
            print(f"  {best} - {name} (seed {r['seed']}): {r['diff_points']:+.2f} +- {r['paired_se_points']:.2f}, "
                  f"McNemar p {r['mcnemar_p']:.3f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
