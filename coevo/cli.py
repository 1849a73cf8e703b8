"""The `coevo` command: thin. Parses, loads config, calls the library, maps errors to exit codes:
0 done, 2 a user mistake (one line, no traceback), 1 anything unexpected."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Sequence

from coevo.errors import UserError, user_frame
from coevo.rundir.provenance import COEVO_VERSION  # not coevo.__version__: a folder named coevo can shadow the package


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coevo", description="Train and prune autoencoders by spatial coevolution.")
    parser.add_argument("--version", action="version", version=f"coevo {COEVO_VERSION}")
    debug_help = ("on an error, also print the full traceback (including a plug-in's file and line); "
                  "COEVO_DEBUG=1 does the same")
    parser.add_argument("--debug", action="store_true", help=debug_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)  # --debug after the command too

    run = sub.add_parser("run", help="run coevolution or canonical training")
    run.add_argument("--preset", help="start from a configuration shipped with coevo (see `coevo operators`); "
                     "--config and --set apply on top")
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one key (repeatable), e.g. --set run.generations=50")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>-...)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved configuration (TOML) and exit; runs and writes nothing")

    res = sub.add_parser("resume", help="continue a run from its last checkpoint")
    res.add_argument("run_dir", type=Path)
    res.add_argument("--generations", type=int, help="run to this many generations in total")
    res.add_argument("--quiet", action="store_true")
    res.add_argument("--data", type=Path, metavar="PATH",
                     help="the run's data file in a new place (it must be the same file: size and SHA-256 are checked)")

    rep = sub.add_parser("report", help="redraw a run's plots and print its summary")
    rep.add_argument("run_dir", type=Path)

    exp = sub.add_parser("export", help="write the best pair (or every centre pair) as a TorchScript or ONNX "
                                        "model (the MLP compacted, other models dense with masked zeros)")
    exp.add_argument("run_dir", type=Path)
    exp.add_argument("--out", type=Path, help="output file (default: RUN_DIR/model.pt, or model.onnx); "
                     "--which centres writes STEM-cellK.SUFFIX per cell, --which front STEM-frontK.SUFFIX per point")
    exp.add_argument("--format", default="torchscript", help="torchscript (default) or onnx (needs coevo[export])")
    exp.add_argument("--which", default="best", help="best (default), centres (needs run.save_centres = true) "
                     "or front (a run with selection.objectives = [\"loss\", \"kept\"])")

    ana = sub.add_parser("analyze", help="latent analysis of a run: alive latent neurons, intrinsic dimension, NMI/ARI")
    ana.add_argument("run_dir", type=Path)
    ana.add_argument("--fold-tolerance", type=float, default=0.2, metavar="F",
                     help="latent_needed: fold latent neurons while the test loss stays within this fraction "
                          "of the unfolded pair's (default 0.2)")

    sub.add_parser("operators", help="list pruning operators and schedules, with their parameters")

    bench = sub.add_parser("bench", help="sweep operators x schedules x modes with trials; rows, report, plots")
    bench.add_argument("spec", nargs="?", type=Path, help="sweep spec (TOML); or use --preset")
    bench.add_argument("--preset", help="a spec shipped with coevo: quick (minutes), seeds (every operator at its "
                                        "authors' schedule, ~30 min), quality (~1.5 h), paper (the paper's sweep, long)")
    bench.add_argument("--out", type=Path, help="bench directory (default: bench-runs/<name>); re-running resumes it")
    bench.add_argument("--jobs", type=int, help="trials run at once (default: one per core; with --executor ray, "
                       "as many as the cluster has CPUs)")
    bench.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where trials run: processes on this machine (default), or one Ray task per trial")
    bench.add_argument("--ray-address", default="", metavar="ADDR",
                       help="with --executor ray: a running cluster (auto, HOST:6379, ray://HOST:10001); "
                       "default: start a local Ray for the sweep")
    bench.add_argument("--report", type=Path, metavar="DIR", help="only rebuild DIR's report from its rows")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "run":
        from coevo import config, report, runner

        cfg = config.load(args.config, args.overrides, args.preset)
        if args.print_config:
            print(config.dumps(cfg), end="")
            return 0
        run_dir = runner.start(cfg, args.out, quiet=args.quiet)
        print(report.format_summary(report.read_summary(run_dir)))
        print(f"run directory: {run_dir}")
        return 0
    if args.command == "resume":
        from coevo import report, runner

        if args.generations is not None and args.generations < 1:
            raise UserError(f"--generations must be >= 1, got {args.generations}")
        run_dir = runner.resume(args.run_dir, args.generations, quiet=args.quiet, data=args.data)
        print(report.format_summary(report.read_summary(run_dir)))
        return 0
    if args.command == "report":
        from coevo import report

        summary = report.read_summary(args.run_dir)
        paths = report.plot_run(args.run_dir)
        if summary.get("front"):
            paths.append(report.plot_front(Path(args.run_dir) / "plots" / "front.png", summary))
        pictures = Path(args.run_dir) / "plots" / "test_reconstructions.png"  # drawn by the run (image data)
        if pictures.exists():
            paths.append(pictures)
        print(report.format_summary(summary))
        print("plots: " + ", ".join(str(p) for p in paths))
        stale = report.stale_files(args.run_dir, summary)
        if stale:
            print(f"stale: {', '.join(stale)} (made from an earlier best pair; run `coevo export` / "
                  f"`coevo analyze` again)")
        return 0
    if args.command == "export":
        from coevo import export

        print(export.format_exported(export.export(args.run_dir, args.out, args.format, args.which)))
        return 0
    if args.command == "analyze":
        from coevo import analysis

        if not args.fold_tolerance >= 0:
            raise UserError(f"--fold-tolerance {args.fold_tolerance}: a fraction of the loss, it must be >= 0")
        print(analysis.format_analysis(analysis.analyze(args.run_dir, fold_tolerance=args.fold_tolerance)))
        return 0
    if args.command == "operators":
        from coevo import operators
        from coevo import schedules
        from coevo.registry import summary

        for title, registry in (("operators", operators.registry), ("schedules", schedules.registry)):
            print(f"{title} (parameters go in [{registry.params_key}]):")
            items = list(registry.items())
            width = max(len(n) for n, _ in items)
            for name, item in items:
                print(f"  {name:<{width}}  {summary(item)}")
                parameters = registry.describe_parameters(item)
                if parameters:
                    print(f"  {'':<{width}}    parameters: {parameters}")
        from coevo.config import preset_text, presets

        from coevo.bench.spec import presets as bench_presets
        from coevo.config import shipped_text

        print("presets (coevo run --preset NAME):")
        width = max(len(n) for n in [*presets(), *bench_presets()])
        for name in presets():
            print(f"  {name:<{width}}  {_first_comment(preset_text(name))}")
        print("bench presets (coevo bench --preset NAME):")
        for name in bench_presets():
            print(f"  {name:<{width}}  {_first_comment(shipped_text('coevo.bench.presets', name))}")
        return 0
    if args.command == "bench":
        from coevo import bench
        from coevo.bench import spec as bench_spec

        if args.report is not None:
            if args.spec is not None or args.preset is not None:
                raise UserError("--report DIR rebuilds an existing report; give it no spec and no --preset")
            print(f"report: {bench.rebuild_report(args.report)}")
            return 0
        notice = bench_spec.renamed_notice(args.preset) if args.preset else None
        if notice:
            print(f"coevo: {notice}", file=sys.stderr)
            args.preset = bench_spec.RENAMED_PRESETS[args.preset]
        spec = bench_spec.load(args.spec, args.preset)
        executor = bench.make_executor(args.executor, args.jobs, args.ray_address)
        try:
            outcome = bench.run(spec, args.out or bench.default_out(spec), args.jobs, args.quiet, executor)
        except KeyboardInterrupt:
            print("coevo: interrupted; finished trials are kept, re-run the same command to continue", file=sys.stderr)
            return 130
        print(bench.format_outcome(outcome))
        for line in bench.format_failures(outcome):
            print(line, file=sys.stderr)
        return 2 if outcome.failed else 0
    raise AssertionError(args.command)


def _first_comment(text: str) -> str:
    """The opening comment of a preset file, up to its first full stop or colon."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    return " ".join(lines).split(": ")[0].split(". ")[0]


PACKAGES_NEEDED = ("coevo", "numpy", "torch", "numba", "deap", "scipy", "matplotlib", "tqdm")
"""Packages (never single-file modules) that coevo imports: a plain ``NAME.py`` found in their
place is a user's file shadowing them."""


def _import_failure(exc: ImportError | AttributeError) -> str | None:
    """A one-line message for an import of coevo's own packages that failed because a user's file
    shadows one of them or coevo's installation is broken; None for any other error (a bug)."""
    for name in PACKAGES_NEEDED:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations is None and spec.origin:
            return (f"{spec.origin} shadows the package {name!r} that coevo needs ({type(exc).__name__}: {exc}); "
                    f"rename that file, or run from a directory whose files do not take package names")
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "coevo":
        return (f"coevo's own module {exc.name!r} cannot be imported ({exc}); the installation is broken: "
                f"reinstall coevo (pip install -e . in its checkout)")
    return None


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("COEVO_DEBUG", "") not in ("", "0")


def _with_origin(exc: BaseException) -> str:
    """The error's message, with the file and line of the user's code that raised it (a plug-in's
    exception that coevo turned into an OperatorError) when there is one."""
    message = str(exc)
    cause = exc.__cause__
    if cause is not None and cause.__traceback__ is not None:
        where = user_frame(cause.__traceback__)
        if where and where not in message:
            message += f" (at {where}; --debug shows the traceback)"
    return message


OS_FIXES = {
    errno.ENOSPC: "free some space on that disk (or choose another --out); `coevo resume DIR` continues a run",
    errno.EDQUOT: "free some space within your disk quota; `coevo resume DIR` continues a run",
    errno.EROFS: "the file system is read-only: choose another place (--out)",
    errno.EACCES: "you may not write or read there: choose another place (--out) or change its permissions",
    errno.EPERM: "you may not write or read there: choose another place (--out) or change its permissions",
    errno.ENOTDIR: "a part of that path is a file, not a directory: choose another path",
    errno.ENOENT: "a part of that path does not exist: check it",
    errno.EEXIST: "something is already there: choose another path",
    errno.EISDIR: "that is a directory: give a file name",
}


def _os_failure(exc: OSError) -> str:
    """One line for an OS-level failure: what failed, on which file, and the fix."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    fix = OS_FIXES.get(exc.errno or -1, "check the file and the disk, then try again")
    return f"{what}{where}; {fix}"


def _split_override(argv: Sequence[str]) -> str | None:
    """The one-line fix for ``--set KEY VALUE`` (two words), of which argparse would say only
    "unrecognized arguments: VALUE"; None when every --set is one word."""
    for i, word in enumerate(argv[:-2]):
        key, value = argv[i + 1], argv[i + 2]
        if word == "--set" and "=" not in key and not value.startswith("-"):
            return (f"--set {key} {value}: an override is one KEY=VALUE word, "
                    f"e.g. --set {shlex.quote(f'{key}={value}')}")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    split = _split_override(argv)
    if split is not None:
        print(f"coevo: error: {split}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    debug = _debug(args)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        # a reader that stopped early (`coevo operators | head -2`): nothing to say; no flush at exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UserError as exc:
        return _fail(debug, f"coevo: error: {_with_origin(exc)}", 2)
    except OSError as exc:
        return _fail(debug, f"coevo: error: {_os_failure(exc)}", 2)
    except (ImportError, AttributeError) as exc:
        message = _import_failure(exc)
        if message is None:
            raise
        return _fail(debug, f"coevo: error: {message}", 2)
    except KeyboardInterrupt as exc:
        return _fail(debug, f"coevo: {getattr(exc, 'message', None) or 'interrupted'}", 130)


def _fail(debug: bool, line: str, code: int) -> int:
    """Print the one line (after the traceback with --debug) of the exception being handled; return ``code``."""
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main())
