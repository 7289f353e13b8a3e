"""Command line: ``ocspruner train`` runs one cycle; ``export``, ``bench`` and ``report`` ship a
finished run; ``models``, ``methods``, ``datasets`` list what the registries hold. User errors print one line (``error: ...``) and exit 2, no traceback."""
from __future__ import annotations

import argparse
import sys
import warnings

# flags that are shorthands for config keys
SHORTHANDS = {"init_from": "init_from", "model": "model", "dataset": "data.name", "data_root": "data.root", "epochs": "epochs",
              "target": "pruning.target", "method": "method", "out": "out_dir", "name": "name",
              "subset": "data.subset", "seed": "seed", "batch_size": "data.batch_size", "lr": "optim.lr",
              "device": "device", "threads": "threads", "workers": "data.workers"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocspruner", description="One-cycle structured pruning (OCSPruner).")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train (and prune) one model in one cycle")
    t.add_argument("--config", default="cpu_default", help="YAML path or shipped config name (default: cpu_default)")
    t.add_argument("--model")
    t.add_argument("--init-from", dest="init_from", help="pre-trained start: a state_dict or checkpoint .pt")
    t.add_argument("--dataset")
    t.add_argument("--data-root", dest="data_root")
    t.add_argument("--epochs", type=int)
    t.add_argument("--target", type=float, help="fraction of FLOPs to remove, e.g. 0.5")
    t.add_argument("--method")
    t.add_argument("--out", help="parent directory of run directories (default runs/)")
    t.add_argument("--name", help="run directory name")
    t.add_argument("--subset", type=int, help="use only this many training examples")
    t.add_argument("--seed", type=int)
    t.add_argument("--batch-size", dest="batch_size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--device")
    t.add_argument("--threads", type=int)
    t.add_argument("--workers", type=int)
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its newest checkpoint")
    t.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. pruning.epsilon=1e-3")
    c = sub.add_parser("compare", help="run several methods x seeds on one task and tabulate them")
    c.add_argument("--methods", default="dense,ocspruner",
                   help="comma list; a method may carry options as name:key=value+key=value")
    c.add_argument("--seeds", default="0", help="comma list of seeds")
    c.add_argument("--out-dir", dest="compare_out", default="runs/compare", help="where tables, plots and runs go")
    c.add_argument("--fig4", default=None, help="comma list of pruning epochs for the paper's Fig. 4")
    for action in t._actions:   # the same shorthands as 'train'
        if action.option_strings and action.dest not in ("help", "out", "name", "seed", "method"):
            c._add_action(action)
    c.add_argument("overrides", nargs="*", help="config overrides key=value for every run")
    sub.add_parser("models", help="list registered models")
    sub.add_parser("methods", help="list training methods")
    sub.add_parser("datasets", help="list datasets")
    e = sub.add_parser("export", help="export a run's final model (ocs, TorchScript, ONNX), each checked")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--formats", default="ocs,torchscript,onnx", help="comma list of ocs, torchscript, onnx")
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
    b.add_argument("--out", help="JSON path (default RUN_DIR/bench.json; none for --model)")
    r = sub.add_parser("report", help="write RUN_DIR/report.md (budget, accuracy, cost, Fig. 3/5/6, latency)")
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--dense", help="a dense run of the same task, for the cost comparison")
    return p


def _export(args) -> int:
    from .export import export_run, format_results

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results = export_run(args.run_dir, formats, out_dir=args.out, atol=args.atol)
    print(format_results(results))
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
              device=args.device, threads=args.threads, channels_last=args.channels_last)
    if args.run_dir:
        result = bench_run(args.run_dir, out=args.out, **kw)
        where = args.out or f"{args.run_dir}/bench.json"
    else:
        options = yaml.safe_load(args.model_options) or {}
        if not isinstance(options, dict):
            raise ConfigError(f"--model-options must be a YAML mapping, got {args.model_options!r}")
        result = bench_named(args.model, args.target, model_options=options, input_size=args.input_size,
                             out=args.out, **kw)
        where = args.out
    print(format_table(result))
    if where:
        print(f"wrote {where}")
    return 0


def _report(args) -> int:
    from .reporting.report import write_report

    print(write_report(args.run_dir, dense_run=args.dense))
    return 0


def _train(args) -> int:
    from .config import load_config
    from .trainer import Trainer, format_summary

    updates = {key: getattr(args, flag) for flag, key in SHORTHANDS.items() if getattr(args, flag) is not None}
    if args.no_progress:
        updates["progress"] = False
    if args.resume:
        import os
        from .io import CheckpointError
        saved = os.path.join(args.resume, "config.yaml")
        if not os.path.isfile(saved):
            raise CheckpointError(f"{args.resume!r} is not a run directory (no config.yaml); give the directory of the run to resume")
        cfg = load_config(saved, overrides=args.overrides, updates=updates)
        trainer = Trainer(cfg, run_dir=args.resume)
        start = trainer.resume()
        if trainer.dist.is_main:
            print(f"resuming {trainer.run_dir} at epoch {start}", flush=True)
    else:
        cfg = load_config(args.config, overrides=args.overrides, updates=updates)
        trainer = Trainer(cfg)
        if trainer.dist.is_main:   # under torchrun only rank 0 prints and writes
            print(f"run directory: {trainer.run_dir}", flush=True)
    summary = trainer.fit()
    if trainer.dist.is_main:
        print(format_summary(summary))
    from .distributed import cleanup
    cleanup()
    return 0


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
    result = run_compare(methods, seeds, args.compare_out, args.config, args.overrides, updates, fig4)
    print(open(f"{args.compare_out}/compare.md").read())
    print(f"tables and plots in {args.compare_out}")
    return 0 if result["rows"] else 1


def main(argv=None) -> int:
    warnings.filterwarnings("ignore", message=".*Unwrapped parameters.*")
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 0
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
        if args.command == "models":
            from .models import list_models
            print("\n".join(list_models()))
        elif args.command == "methods":
            from .methods import list_methods
            print("\n".join(list_methods()))
        elif args.command == "datasets":
            from .data import available_datasets
            print("\n".join(available_datasets()))
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
        print("interrupted; the last checkpoint in the run directory is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
