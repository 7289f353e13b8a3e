"""Command line: ``ocspruner train`` runs one cycle; ``export``, ``bench`` and ``report`` ship a
finished run; ``models``, ``methods``, ``datasets`` list what the registries hold. User errors print one line (``error: ...``) and exit 2, no traceback."""
from __future__ import annotations

import argparse
import os
import sys
import warnings

# flags that are shorthands for config keys
SHORTHANDS = {"init_from": "init_from", "model": "model", "dataset": "data.name", "data_root": "data.root", "epochs": "epochs",
              "target": "pruning.target", "method": "method", "out": "out_dir", "name": "name",
              "subset": "data.subset", "seed": "seed", "batch_size": "data.batch_size", "lr": "optim.lr",
              "device": "device", "threads": "threads", "workers": "data.workers"}


DEFAULT_CONFIG = "cpu_default"
# train flags that set a config key: (flag, dest, type, metavar, what it is, its default)
TRAIN_FLAGS = [
    ("--model", "model", str, "NAME", "model from the registry (see 'ocspruner models')", "resnet20"),
    ("--init-from", "init_from", str, "PATH", "pre-trained start: a state_dict or checkpoint .pt of the same "
     "(unpruned) model", "none: random init"),
    ("--dataset", "dataset", str, "NAME", "dataset (see 'ocspruner datasets')", "digits"),
    ("--data-root", "data_root", str, "DIR", "where the dataset's files are", "the dataset's own default"),
    ("--epochs", "epochs", int, "N", "training epochs of the one cycle", "30"),
    ("--target", "target", float, "F", "fraction of FLOPs (pruning.metric) to remove, e.g. 0.5", "0.5"),
    ("--method", "method", str, "NAME", "training method (see 'ocspruner methods')", "ocspruner"),
    ("--out", "out", str, "DIR", "parent directory of run directories", "runs"),
    ("--name", "name", str, "NAME", "run directory name; refused if it holds a run (see --overwrite)",
     "MODEL-DATASET-METHOD-TIME, unique"),
    ("--subset", "subset", int, "N", "use only this many training examples", "all"),
    ("--seed", "seed", int, "N", "random seed (data split, init, order)", "0"),
    ("--batch-size", "batch_size", int, "N", "batch size (per process under torchrun)", "64"),
    ("--lr", "lr", float, "F", "peak learning rate", "0.05"),
    ("--device", "device", str, "DEV", "auto, cpu, cuda or cuda:N", "auto: cuda if available, else cpu"),
    ("--threads", "threads", int, "N", "torch CPU threads (>= 1)", "torch's default"),
    ("--workers", "workers", int, "N", "data loader worker processes", "0"),
]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocspruner", description="One-cycle structured pruning (OCSPruner).")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    t = sub.add_parser("train", help="train (and prune) one model in one cycle",
                       description="Train (and prune) one model in one cycle. Flag defaults are those of the "
                                   f"shipped config {DEFAULT_CONFIG}; a --config of your own sets its own.")
    t.add_argument("--config", help=f"YAML path or shipped config name (default: {DEFAULT_CONFIG}; not with --resume)")
    for flag, dest, tp, metavar, what, default in TRAIN_FLAGS:
        t.add_argument(flag, dest=dest, type=tp, metavar=metavar, help=f"{what} (default: {default})")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (default: progress bars shown)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its newest readable "
                   "checkpoint, with the run's own config.yaml (default: a new run)")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out/--name if there is one "
                   "(default: refuse, a finished run is never overwritten)")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. pruning.epsilon=1e-3 (default: none)")
    c = sub.add_parser("compare", help="run several methods x seeds on one task and tabulate them")
    c.add_argument("--methods", default="dense,ocspruner",
                   help="comma list; a method may carry options as name:key=value+key=value (default: dense,ocspruner)")
    c.add_argument("--seeds", default="0", help="comma list of seeds (default: 0)")
    c.add_argument("--out-dir", dest="compare_out", default="runs/compare",
                   help="where tables, plots and runs go (default: runs/compare)")
    c.add_argument("--fig4", default=None, help="comma list of pruning epochs for the paper's Fig. 4 (default: none)")
    c.add_argument("--resume", action="store_true", help="reuse the finished runs in --out-dir and continue the "
                   "interrupted ones (default: refuse an --out-dir that holds runs)")
    c.add_argument("--overwrite", action="store_true", help="replace the runs in --out-dir (default: refuse)")
    for action in t._actions:   # the same shorthands as 'train'
        if action.option_strings and action.dest not in ("help", "out", "name", "seed", "method", "resume", "overwrite"):
            c._add_action(action)
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run (default: none)")
    sub.add_parser("models", help="list registered models, one line each")
    sub.add_parser("methods", help="list training methods, one line each")
    sub.add_parser("datasets", help="list datasets, one line each (and what each needs)")
    e = sub.add_parser("export", help="export a run's final model (ocs, TorchScript, ONNX), each checked")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--formats", help="comma list of ocs, torchscript, onnx (default: all three; onnx is "
                   "skipped, with a note, when its packages are missing)")
    e.add_argument("--out", help="output directory (default RUN_DIR/export)")
    e.add_argument("--atol", type=float, default=1e-4, help="largest accepted |difference| to PyTorch (default 1e-4)")
    b = sub.add_parser("bench", help="latency/throughput of dense vs pruned on this device (Table 9)")
    b.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a finished run (or give --model)")
    b.add_argument("--model", help="a registry model pruned at --target instead of a run")
    b.add_argument("--target", type=float, default=0.5, help="with --model: fraction of FLOPs to remove")
    b.add_argument("--model-options", dest="model_options", default="{}", help="with --model: YAML dict")
    b.add_argument("--input-size", dest="input_size", type=int, help="with --model: image side")
    b.add_argument("--batch-sizes", dest="batch_sizes", default="1,64", help="comma list (default 1,64)")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--repeats", type=int, default=30, help="interleaved timed calls per model and batch size")
    b.add_argument("--device", default="cpu")
    b.add_argument("--threads", type=int)
    b.add_argument("--round-to", dest="round_to", type=int, default=1,
                   help="also time a re-partition with widths rounded to multiples of N")
    b.add_argument("--channels-last", dest="channels_last", action="store_true")
    b.add_argument("--partition", choices=["ranking", "knapsack"], default="ranking",
                   help="with --model: global saliency ranking (the paper's) or the cost-aware knapsack")
    b.add_argument("--price", choices=["flops", "params", "latency", "train_latency"], default=None,
                   help="with --partition knapsack: the cost a channel is priced by (default: --metric); "
                        "--metric flops --price latency meets the FLOPs budget with the channels that save "
                        "the most measured time")
    b.add_argument("--metric", choices=["flops", "params", "latency", "train_latency"], default="flops",
                   help="with --model: the budget --target is a fraction of (latency budgets measure a table "
                        "here at the largest batch size and calibrate it)")
    b.add_argument("--clock", choices=["auto", "thread_cpu", "process_cpu", "wall"], default="auto",
                   help="timing clock (default auto: per-thread CPU time on 1 thread, process CPU time on "
                        "several, wall on CUDA)")
    b.add_argument("--no-training", dest="training", action="store_false",
                   help="skip the training-step (forward + backward) timing")
    b.add_argument("--out", "--json", dest="out", help="JSON path (default RUN_DIR/bench.json; none for --model)")
    r = sub.add_parser("report", help="write RUN_DIR/report.md (budget, accuracy, cost, Fig. 3/5/6, latency)")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--dense", help="a dense run of the same task, for the cost comparison")
    r.add_argument("--no-bench", dest="bench", action="store_false",
                   help="do not time dense vs pruned (by default a pruned run without bench.json is timed: "
                        "inference and training-step speed-ups at the training batch size)")
    return p


def _export(args) -> int:
    from .export import export_run, format_results

    from .export import FORMATS, onnx_missing

    note = None
    if args.formats is None:   # the default: every format this machine can write
        formats = list(FORMATS)
        note = onnx_missing()
        if note:
            formats.remove("onnx")
    else:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results = export_run(args.run_dir, formats, out_dir=args.out, atol=args.atol)
    print(format_results(results))
    if note:
        print(f"onnx skipped: {note}")
    bad = [f for f, r in results.items() if not r["ok"]]
    if bad:
        print(f"error: {', '.join(bad)} output differs from PyTorch by more than {args.atol}", file=sys.stderr)
        return 1
    return 0


def _bench(args) -> int:
    import yaml

    from .bench import bench_named, bench_run, format_table
    from .config import ConfigError

    try:
        batches = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--batch-sizes must be a comma list of integers, got {args.batch_sizes!r}") from None
    if (args.run_dir is None) == (args.model is None):
        raise ConfigError("give a run directory or --model NAME (one of the two)")
    if args.round_to < 1:
        raise ConfigError(f"--round-to must be >= 1, got {args.round_to}")
    kw = dict(batch_sizes=batches, round_to=args.round_to, warmup=args.warmup, repeats=args.repeats,
              device=args.device, threads=args.threads, channels_last=args.channels_last,
              clock=args.clock, training=args.training,
              progress=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True))
    from .clock import resolve_clock
    resolve_clock(args.clock, args.device, args.threads)   # a clock that cannot time here: one line now
    if args.run_dir and (args.partition != "ranking" or args.metric != "flops" or args.price):
        raise ConfigError("--partition, --metric and --price apply to --model; a run's pruned model is benched as it was "
                          "trained (drop them, or bench --model NAME)")
    if args.price and args.price != args.metric and args.partition != "knapsack":
        raise ConfigError(f"--price {args.price} prices channels for --partition knapsack only; add it or drop --price")
    if args.model and args.metric in ("latency", "train_latency"):
        print(f"bench: measuring a per-layer {args.metric} table and calibrating it (a few minutes)",
              file=sys.stderr, flush=True)
    elif args.model and args.price in ("latency", "train_latency"):
        print(f"bench: measuring a per-layer {args.price} table to price channels by (a minute)",
              file=sys.stderr, flush=True)
    if args.run_dir:
        from .rundir import RunDir
        RunDir.finished(args.run_dir)   # a one-line error before anything is built
    print(f"bench: building the models of {args.run_dir or args.model} (dense, pruned"
          f"{f', rounded to {args.round_to}' if args.round_to > 1 else ''})", file=sys.stderr, flush=True)
    if args.run_dir:
        result = bench_run(args.run_dir, out=args.out, **kw)
        where = args.out or f"{args.run_dir}/bench.json"
    else:
        options = yaml.safe_load(args.model_options) or {}
        if not isinstance(options, dict):
            raise ConfigError(f"--model-options must be a YAML mapping, got {args.model_options!r}")
        result = bench_named(args.model, args.target, model_options=options, input_size=args.input_size,
                             out=args.out, metric=args.metric, partition=args.partition, price=args.price, **kw)
        where = args.out
    print(format_table(result))
    if where:
        print(f"wrote {where}")
    return 0


def _report(args) -> int:
    from .reporting.report import write_report

    print(write_report(args.run_dir, dense_run=args.dense, measure_latency="if_missing" if args.bench else False))
    return 0


def _train(args) -> int:
    from .config import load_config
    from .trainer import Trainer

    updates = {key: getattr(args, flag) for flag, key in SHORTHANDS.items() if getattr(args, flag) is not None}
    if args.no_progress:
        updates["progress"] = False
    if args.resume:
        from .config import ConfigError
        from .rundir import RunDir
        if args.config is not None:
            raise ConfigError(f"--config cannot be used with --resume: a resumed run keeps its own "
                              f"{RunDir.CONFIG}; drop --config")
        if args.overwrite:
            raise ConfigError("--overwrite cannot be used with --resume: resume continues the run; "
                              "drop one of the two")
        rundir = RunDir.for_resume(args.resume)
        cfg = load_config(rundir.file(RunDir.CONFIG), overrides=args.overrides, updates=updates)
        trainer = Trainer(cfg, run_dir=rundir.path)
        start = trainer.resume()
        if trainer.dist.is_main:
            print(f"resuming {trainer.run_dir} at epoch {start}", flush=True)
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG, overrides=args.overrides, updates=updates)
        early = None
        if cfg.name and not args.overwrite and os.environ.get("RANK", "0") == "0":
            from .rundir import RunDir, RunDirError   # before any data loads: a writer there, or a run, is named now
            early = RunDir(os.path.join(cfg.out_dir, cfg.name))
            early.lock()
            try:
                early.check_fresh(False, flag="--overwrite")
            except RunDirError:
                early.unlock()
                raise
        try:
            trainer = Trainer(cfg, overwrite=args.overwrite)   # takes the same lock again (shared in this process)
        finally:
            if early is not None:
                early.unlock()
        if trainer.dist.is_main:   # under torchrun only rank 0 prints and writes
            print(f"run directory: {trainer.run_dir}", flush=True)
    try:
        summary = trainer.fit()
    except KeyboardInterrupt:
        if trainer.dist.is_main:
            last = trainer.ckpt.latest()
            if last:
                print(f"interrupted; run directory {trainer.run_dir}; its last checkpoint ({os.path.basename(last)}) "
                      f"is intact; continue with: {trainer.rundir.resume_command()}", file=sys.stderr)
            else:
                print(f"interrupted before the first checkpoint; run directory {trainer.run_dir}; start again "
                      f"with --overwrite to reuse its name", file=sys.stderr)
        return 130
    if trainer.dist.is_main:
        print(format_summary(summary))
    from .distributed import cleanup
    cleanup()
    return 0


def format_summary(s: dict) -> str:
    """The one-screen summary printed at the end of a run."""
    def pct(v):
        return "-" if v is None else f"{v:.2f}%"

    def mega(v):
        return "-" if v is None else f"{v / 1e6:.2f}M"

    lines = [f"run        {s.get('run_dir')}",
             f"method     {s.get('method')}  model {s.get('model')}  data {s.get('dataset')}  epochs {s.get('epochs')}",
             f"FLOPs      {mega(s.get('dense_flops'))} -> {mega(s.get('final_flops'))}"
             + (f"  ({100 * (1 - s['flops_ratio']):.2f}% removed, target {100 * s['target']:.1f}%)"
                if s.get("flops_ratio") is not None and s.get("target") else ""),
             f"params     {mega(s.get('dense_params'))} -> {mega(s.get('final_params'))}",
             f"stages     t_sl-start = {s.get('t_sl_start')}   t* = {s.get('t_star')}",
             f"accuracy   val final {pct(s.get('final_val_acc'))}  best {pct(s.get('best_val_acc'))} (epoch {s.get('best_epoch')})"
             f"   test final {pct(s.get('final_test_acc'))}  best-val model {pct(s.get('best_test_acc'))}",
             f"time       {s.get('wall_time', 0):.1f}s total" + (f", {s['time_to_prune']:.1f}s to t*" if s.get("time_to_prune") else "")]
    if s.get("plots"):
        lines.append(f"plots      {os.path.dirname(s['plots'][0])}")
    return "\n".join(lines)


def _compare(args) -> int:
    from .compare import run_compare

    updates = {key: getattr(args, flag) for flag, key in SHORTHANDS.items()
               if flag not in ("out", "name", "seed", "method") and getattr(args, flag, None) is not None}
    if args.no_progress:
        updates["progress"] = False
    # '+' separates options inside one method so that ',' can separate methods
    methods = [m.replace("+", ",") for m in args.methods.split(",") if m]
    seeds = [int(x) for x in args.seeds.split(",") if x != ""]
    fig4 = [int(x) for x in args.fig4.split(",")] if args.fig4 else None
    result = run_compare(methods, seeds, args.compare_out, args.config or DEFAULT_CONFIG, args.overrides, updates, fig4,
                         resume=args.resume, overwrite=args.overwrite)
    print(open(f"{args.compare_out}/compare.md").read())
    print(f"tables and plots in {args.compare_out}")
    return 0 if result["rows"] else 1


# one line each for 'models', 'methods', 'datasets': what it is, and what it needs
MODEL_LINES = {
    "attention_block": "a one-block transformer (qkv attention + MLP), for tests; options dim, num_heads, mlp_hidden",
    "mobilenetv2": "MobileNetV2 for 224x224 input (ImageNet); options width_mult, dropout",
    "mobilenetv2_cifar": "MobileNetV2 for 32x32 input (CIFAR); options width_mult, dropout",
    "resnet18": "ResNet-18 for 224x224 input (ImageNet)",
    "resnet20": "CIFAR ResNet-20 for 32x32 input (0.27 M params)",
    "resnet32": "CIFAR ResNet-32 for 32x32 input",
    "resnet50": "ResNet-50 for 224x224 input (ImageNet)",
    "resnet56": "CIFAR ResNet-56 for 32x32 input",
    "resnet110": "CIFAR ResNet-110 for 32x32 input",
    "tiny_convnet": "a three-conv network, for tests and quick checks",
    "vgg16": "VGG-16 with BatchNorm for 32x32 input (CIFAR); option width_mult",
    "vgg19": "VGG-19 with BatchNorm for 32x32 input (CIFAR); option width_mult",
    "vit_tiny_cifar": "a tiny ViT for 32x32 input; options img_size, patch_size, dim, depth, num_heads, mlp_ratio",
}
METHOD_LINES = {
    "ocspruner": "OCSPruner, Algorithm 1: automatic t_sl-start and t*, pruned in the one cycle",
    "dense": "no pruning, the same loop: the cost and accuracy reference",
    "ocspruner_fixed": "OCSPruner with t* fixed in advance (method_options={prune_epoch: N}, default 30% of the epochs)",
    "ocs_count_only": "ablation: OCSPruner whose stability compares per-group channel counts, not identities",
    "pat": "PaT (Shen et al. 2022): dense training, prune when the sub-network's widths stop changing, train on",
    "random": "a random sub-network at the budget, pruned at initialisation, trained from scratch",
    "magnitude_at_init": "prune at initialisation by Eq. 2 magnitude of the random weights, then train",
    "snip": "prune at initialisation by SNIP connection sensitivity on a data batch, then train",
    "prune_finetune": "train dense, prune by Eq. 2, fine-tune (two cycles, both counted)",
    "greg": "GReg-2 (Wang et al. 2021): dense, uniform growing L2 picks filters, their penalty grows until ~0, prune, fine-tune",
    "ato": "Auto-Train-Once: a controller network picks the sub-network, generic over DepGraph groups",
}
DATASET_LINES = {
    "digits": "scikit-learn's 8x8 digits upsampled to 32x32, 10 classes; needs scikit-learn, no download (the default)",
    "mnist": "MNIST, 10 classes; needs --data-root DIR with the four idx files",
    "fashion_mnist": "Fashion-MNIST, 10 classes; needs `sudo apt-get install dataset-fashion-mnist` or --data-root DIR",
    "cifar10": "CIFAR-10, 10 classes; needs --data-root with the extracted cifar-10-batches-py (default data/)",
    "cifar100": "CIFAR-100, 100 classes; needs --data-root with the extracted cifar-100-python (default data/)",
    "imagefolder": "ImageNet-style class folders; needs --data-root DIR with train/<class>/ and val/<class>/ (alias imagenet)",
    "synthetic": "random images with a learnable signal, for tests; needs nothing (options num_samples, num_classes, ...)",
}


def _first_line(obj) -> str:
    import inspect
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split(".")[0].replace("\n", " ") if doc.strip() else "(no description)"


def _listing(kind: str) -> str:
    """``ocspruner models|methods|datasets``: one line per entry."""
    if kind == "models":
        from .models import list_models
        from .models.registry import _MODELS
        entries = {n: MODEL_LINES.get(n) or _first_line(_MODELS[n]) for n in list_models()}
    elif kind == "methods":
        from .methods import _METHODS, list_methods
        entries = {n: METHOD_LINES.get(n) or _first_line(_METHODS[n]) for n in list_methods()}
    else:
        from .data import available_datasets
        from .data.sources import DATASETS
        entries = {n: DATASET_LINES.get(n) or _first_line(DATASETS[n]) for n in available_datasets()}
    width = max(map(len, entries)) + 2
    return "\n".join(f"{n:<{width}}{text}" for n, text in entries.items())


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", message=".*Unwrapped parameters.*")
    args = _parser().parse_args(argv)
    if args.command is None:   # a command is required: help on stderr, usage error
        _parser().print_help(sys.stderr)
        return 2
    from .config import ConfigError
    from .data import DataError
    from .dependency import UnsupportedModelError
    from .io import CheckpointError
    from .partition import BudgetError
    from .trainer import TrainingDiverged

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "compare":
            return _compare(args)
        if args.command in ("export", "bench", "report"):
            return {"export": _export, "bench": _bench, "report": _report}[args.command](args)
        print(_listing(args.command))
        return 0
    except (ConfigError, DataError, BudgetError, UnsupportedModelError, TrainingDiverged, CheckpointError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except ValueError as exc:  # registry lookups (unknown model/method) raise ValueError with one line
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk: atomic writes leave every earlier file intact
        print(f"error: cannot write {getattr(exc, 'filename', '') or 'output'} ({exc.strerror or exc}); "
              f"files written before are intact; free space or choose another --out", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; files written before are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
