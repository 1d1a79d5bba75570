"""What `python -m interventions circuits ...` does (its options: `cli.commands`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from pathlib import Path

from interventions.circuits.compiled import build
from interventions.circuits.planted import plant
from interventions.circuits.benchmarks import BENCHMARKS, MODELS, PLANTED, check_benchmarks, load_benchmark, refine, verify
from interventions.circuits.front import LAMBDA_F, LAMBDA_M, front_rows, front_summary
from interventions.circuits.granularity import GRANULARITIES
from interventions.circuits.programs import PROGRAMS
from interventions.circuits.report import write_results
from interventions.circuits.study import METHODS, QUICK, RANDOM, Settings, check_granularities, check_methods
from interventions.circuits.study import score_benchmark, summarize
from interventions.errors import ConfigError
from interventions.io import write_json
from interventions.loggers import make_logger
from interventions.methods.registry import method_class
from interventions.rundir import check_writable

log = logging.getLogger(__name__)


def _all(names: list[str], every) -> list[str]:
    return list(every) if names == ["all"] else names


def _settings(args) -> Settings:
    settings = Settings(seeds=tuple(range(QUICK["seeds"] if getattr(args, "quick", False) else args.seeds)))
    epochs = QUICK["epochs"] if getattr(args, "quick", False) else args.epochs
    if epochs is not None:
        settings = dataclasses.replace(settings, epochs=epochs, epochs_for={})
    return settings


def _checked(names: list[str]) -> dict:
    """{benchmark: its truth checks} for the named benchmarks, each loaded and checked once."""
    checks = {}
    for name in names:
        checks[name] = verify(load_benchmark(name))
        failed = [level for level, c in checks[name].items() if not c["passed"]]
        if failed:
            log.warning("%s: the truth fails its ablation check at %s; its results are left out", name, ", ".join(failed))
    return checks


def circuits_score(args) -> int:
    benchmarks = check_benchmarks(_all(args.benchmarks, BENCHMARKS))
    explicit = args.methods != ["all"]
    methods = _all(args.methods, METHODS)
    for name in methods:
        if name != RANDOM:
            method_class(name)  # an unknown name: one line naming the methods there are
    if explicit:
        check_methods(methods)
    else:
        methods = [m for m in methods if m == RANDOM or method_class(m).localizes]
    levels = _all(args.granularities, GRANULARITIES)
    if explicit or args.granularities != ["all"]:
        check_granularities(levels, methods if explicit else [])
    check_writable(args.out, "--out")
    settings = _settings(args)
    logger = make_logger(args.logger, args.out, name="circuits", config=vars(args))
    checks, rows = _checked(benchmarks), []
    for name in benchmarks:
        if all(c["passed"] for c in checks[name].values()):
            rows += score_benchmark(load_benchmark(name, device=args.device), methods, levels, settings)
    summary = summarize(rows)
    paths = write_results(args.out, rows, summary, checks, {**dataclasses.asdict(settings), "methods": methods}, logger)
    print(Path(paths["markdown"]).read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def circuits_front(args) -> int:
    check_benchmarks([args.benchmark])
    levels = _all(args.granularities, GRANULARITIES)
    check_granularities(levels, ["activscalar"])
    check_writable(args.out, "--out")
    bench = load_benchmark(args.benchmark, device=args.device)
    levels = [level for level in levels if level in bench.truth]
    rows = front_rows(bench, levels, args.lambda_f or LAMBDA_F, args.lambda_m or LAMBDA_M, _settings(args))
    summary = front_summary(rows, levels)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json(Path(args.out) / "front.json", {"benchmark": args.benchmark, "summary": summary, "rows": rows})
    print(json.dumps(summary, indent=2))
    print(f"wrote {Path(args.out) / 'front.json'}")
    return 0


def circuits_merge(args) -> int:
    out = Path(args.out).resolve()
    sources = [Path(s) for s in args.sources]
    if out in {s.resolve() for s in sources}:
        raise ConfigError(f"--out {args.out} is one of --from: merge into a new folder, so the results merged stay as they are")
    missing = [str(s) for s in sources if not (s / "results.json").is_file()]
    if missing:
        raise ConfigError(f"no results.json in {', '.join(missing)}: --from takes folders written by `circuits score`")
    check_writable(args.out, "--out")
    found = [json.loads((s / "results.json").read_text()) for s in sources]
    shared = set()
    for source, result in zip(sources, found):
        twice = shared & set(result["checks"])
        if twice:
            raise ConfigError(f"{source} scores {', '.join(sorted(twice))} again: merge runs of different benchmarks")
        shared |= set(result["checks"])
    rows = [row for result in found for row in result["rows"]]
    checks = {name: check for result in found for name, check in result["checks"].items()}
    settings = {"merged_from": [{"folder": str(s), "settings": r["settings"]} for s, r in zip(sources, found)]}
    paths = write_results(args.out, rows, summarize(rows), checks, settings)
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def circuits_check(args) -> int:
    names = check_benchmarks(_all(args.benchmarks, BENCHMARKS))
    failed = 0
    for name in names:
        for level, c in verify(load_benchmark(name, root=args.root)).items():
            failed += not c["passed"]
            print(f"{name:12s} {level:9s} clean LD {c['clean']:.3f}  zero: truth ablated {c['zero']['truth_ablated']:.3f}, "
                  f"rest ablated {c['zero']['rest_ablated']:.3f}  mean: truth ablated {c['mean']['truth_ablated']:.3f}, "
                  f"rest ablated {c['mean']['rest_ablated']:.3f}  {'passed' if c['passed'] else 'FAILED'}")  # fmt: skip
    return 1 if failed else 0


def _record_check(root: Path, name: str) -> None:
    """truth.json with its ablation check added (`benchmarks.verify`)."""
    path = root / name / "truth.json"
    record = json.loads(path.read_text())
    record["check"] = verify(load_benchmark(name, root=root))
    write_json(path, record)
    log.info("%s: truth %s", name, "passed its ablation check" if all(c["passed"] for c in record["check"].values())
             else "FAILED its ablation check")  # fmt: skip


def circuits_compile(args) -> int:
    if importlib.util.find_spec("tracr") is None:
        raise ConfigError("compiling the programs needs tracr, JAX and dm-haiku: pip install -e '.[tracr]' (the compiled "
                          f"models are already in {MODELS})")  # fmt: skip
    rasp = importlib.import_module("interventions.circuits.rasp")  # the optional extra (JAX): only here
    root = Path(args.out)
    for name, program in PROGRAMS.items():
        assembled, output = rasp.compile_program(name)
        build(assembled, program, output, root)
        refine(name, root)
        _record_check(root, name)
    print(f"wrote {', '.join(str(root / name) for name in PROGRAMS)}")
    return 0


def circuits_plant(args) -> int:
    root = Path(args.out)
    if (root / PLANTED / "model.safetensors").exists():
        raise ConfigError(f"{root / PLANTED} already holds a model; choose another --out")
    plant(root, steps=args.steps, seed=args.seed)
    _record_check(root, PLANTED)
    print(f"wrote {root / PLANTED}")
    return 0
