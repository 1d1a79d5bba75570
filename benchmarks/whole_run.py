"""The whole run a user waits for: `python train.py` with its defaults, this checkout against a
reference commit, and where the time goes.

    python benchmarks/whole_run.py [--ref 83bbf46] [--pairs 5] [--overrides logger=none]

1. **Paired wall time.** A git worktree of `--ref` (same Python, same installed libraries),
   then `--pairs` rounds of one run of each side, alternating which goes first, each a fresh
   interpreter (`python train.py <overrides>` into a temporary folder), timed from the
   process's start to its exit, after one untimed run of each side (the fresh worktree has
   no compiled .pyc files yet); peak memory is the run's maximum resident set size. The
   ratio this/ref per pair and its median: a drifting machine affects both sides of a pair
   alike.
2. **Phase profile.** One more run of each side under cProfile, summarised into phases by the
   functions both versions have (`PHASES`): the profile's own overhead inflates every
   phase, so the table gives seconds under the profiler and each phase's share of the run.
   What the named phases leave of the run is "other"; what comes before the run's entry
   point, "start-up and imports".

Writes `--out` (benchmarks/results/whole_run.json) with the command, the pairs, the phase
tables and both commits. `--quick`: tiny sizes, and the profiled run of each side stands for
the one pair (a check that the command works; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from interventions.io import write_json  # noqa: E402

# (phase, [(path suffix, function name)]): cProfile's cumulative time of the first match that
# the profile holds. Both the current layout and 83bbf46's are listed, so one table reads both.
RUN = [("interventions/runs/train.py", "train_run"), ("interventions/pipeline.py", "train_from_config")]
PHASES = [
    ("model load", [("interventions/models.py", "load_model")]),
    ("data", [("interventions/tasks/datamodule.py", "setup")]),
    ("training epochs (Lightning fit)", [("lightning/pytorch/trainer/trainer.py", "fit")]),
    ("evaluation (train, val, test)", [("interventions/training/module.py", "evaluate"), ("interventions/module.py", "evaluate")]),
    ("reports and plots", [("interventions/reports/run.py", "write_plots"), ("interventions/pipeline.py", "write_plots")]),
    ("export", [("interventions/export.py", "save_intervention")]),
]
# `python -c MEASURE <stats file or ""> <overrides>`: train.py as a shell would run it, under
# cProfile when a stats file is named, then the process's peak RSS on stderr
MEASURE = (
    "import cProfile, resource, runpy, sys\n"
    "stats, sys.argv = sys.argv[1], ['train.py', *sys.argv[2:]]\n"
    "profile = cProfile.Profile() if stats else None\n"
    "try:\n"
    "    if profile is None:\n"
    "        runpy.run_path('train.py', run_name='__main__')\n"
    "    else:\n"
    "        profile.runcall(runpy.run_path, 'train.py', run_name='__main__')\n"
    "finally:\n"
    "    if profile is not None:\n"
    "        profile.dump_stats(stats)\n"
    "    print(f'PEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
)  # fmt: skip
QUICK = ["task.n_train=16", "task.n_val=8", "task.n_test=16", "trainer.max_epochs=1"]


def refuse(message: str) -> None:
    """A mistake as one line on stderr and exit status 2, before any run."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def commit_of(path: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True).stdout.strip()


def worktree(ref: str, where: Path) -> Path:
    """A detached git worktree of `ref` in `where` (removed by `remove_worktree`)."""
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(where), ref], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    return where


def remove_worktree(where: Path) -> None:
    subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, capture_output=True)


def timed_run(checkout: Path, overrides: list[str], out: Path, stats_file: Path | None = None) -> dict:
    """One `python train.py` in `checkout` (its own package first on sys.path: runpy runs the
    script from the checkout's folder), under cProfile into `stats_file` if given: wall
    seconds from start to exit and peak RSS in MiB."""
    command = [sys.executable, "-c", MEASURE, str(stats_file or ""), *overrides, f"hydra.run.dir={out}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: the run in {checkout} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return {"seconds": seconds, "peak_rss_mib": peak / 1024}


def cumulative(stats: pstats.Stats, candidates: list[tuple[str, str]]) -> float | None:
    """The cumulative seconds of the first (path suffix, function) the profile holds, summed
    over every function of that name in a matching file (a class and its subclass's)."""
    for suffix, name in candidates:
        found = [v[3] for (path, _, func), v in stats.stats.items() if func == name and path.endswith(suffix)]
        if found:
            return max(found)  # a function that calls an override of itself (super().fit) counts once
    return None


def phase_table(stats_file: Path, wall: float) -> list[dict]:
    """[{phase, seconds, share}] of one profiled run: the named phases, the rest of the run
    ("other") and what came before it ("start-up and imports")."""
    stats = pstats.Stats(str(stats_file))
    total = cumulative(stats, RUN)
    if total is None:
        raise SystemExit(f"error: {stats_file} has none of {RUN}: is this a train.py run?")
    rows = [{"phase": "start-up and imports", "seconds": wall - total}]
    for phase, candidates in PHASES:
        seconds = cumulative(stats, candidates)
        rows.append({"phase": phase, "seconds": seconds})
    named = sum(r["seconds"] or 0.0 for r in rows[1:])
    rows.append({"phase": "other (in the run)", "seconds": total - named})
    for row in rows:
        row["share"] = None if row["seconds"] is None else row["seconds"] / wall
    return rows


def markdown(result: dict) -> str:
    lines = ["| phase | ref (s, profiled) | ref share | this (s, profiled) | this share |", "|---|---|---|---|---|"]
    for ref, this in zip(result["phases"]["ref"], result["phases"]["this"]):
        cells = [f"{r['seconds']:.2f}" if r["seconds"] is not None else "n/a" for r in (ref, this)]
        shares = [f"{r['share']:.0%}" if r["share"] is not None else "n/a" for r in (ref, this)]
        lines.append(f"| {ref['phase']} | {cells[0]} | {shares[0]} | {cells[1]} | {shares[1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/whole_run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="83bbf46", help="the reference commit (default 83bbf46)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--overrides", nargs="*", default=["logger=none"], help="train.py overrides for both sides")
    parser.add_argument("--out", default=None, help="default benchmarks/results/whole_run.json (_quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, the profiled runs as the pair: checks the command works")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        refuse("--pairs must be at least 1")
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode != 0:
        refuse(f"{ROOT} is not a git checkout; the whole-run benchmark builds a worktree of --ref from the "
               "repository's history (run it in a clone)")
    check = subprocess.run(["git", "rev-parse", "--verify", f"{args.ref}^{{commit}}"], cwd=ROOT, capture_output=True)
    if check.returncode != 0:
        refuse(f"--ref {args.ref} is not a commit of this repository")
    overrides = [*args.overrides, *(QUICK if args.quick else [])]
    timed_pairs = 0 if args.quick else args.pairs  # quick: each side's profiled run stands for the one pair
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"whole_run{'_quick' if args.quick else ''}.json"
    with tempfile.TemporaryDirectory(prefix="whole_run_") as tmp:
        tmp = Path(tmp)
        sides = {"ref": worktree(args.ref, tmp / "ref"), "this": ROOT}
        try:
            for side, path in sides.items() if not args.quick else ():  # untimed: a fresh worktree compiles its .pyc files
                timed_run(path, overrides, tmp / f"{side}_warm")
            runs = {"ref": [], "this": []}
            for i in range(timed_pairs):
                order = ("ref", "this") if i % 2 == 0 else ("this", "ref")
                for side in order:
                    runs[side].append(timed_run(sides[side], overrides, tmp / f"{side}_{i}"))
                print(f"pair {i + 1}/{timed_pairs}: ref {runs['ref'][-1]['seconds']:.1f} s, this {runs['this'][-1]['seconds']:.1f} s",
                      flush=True)  # fmt: skip
            phases, profiled = {}, {}
            for side in ("ref", "this"):
                stats_file = tmp / f"{side}.prof"
                run = timed_run(sides[side], overrides, tmp / f"{side}_prof", stats_file)
                profiled[side] = run["seconds"]
                phases[side] = phase_table(stats_file, profiled[side])
                if not timed_pairs:
                    runs[side].append(run)
            commits = {side: commit_of(path) for side, path in sides.items()}
        finally:
            remove_worktree(sides["ref"])
    ratios = [t["seconds"] / r["seconds"] for r, t in zip(runs["ref"], runs["this"])]
    result = {
        "command": "python benchmarks/whole_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commits": commits, "overrides": overrides, "runs": runs, "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "median_seconds": {side: statistics.median(r["seconds"] for r in runs[side]) for side in runs},
        "peak_rss_mib": {side: max(r["peak_rss_mib"] for r in runs[side]) for side in runs},
        "profiled_seconds": profiled, "phases": phases,
    }  # fmt: skip
    result["table"] = markdown(result)
    write_json(out, result)
    print(result["table"])
    print(f"this/ref wall time, median of {len(ratios)} pairs: {result['median_ratio']:.3f} "
          f"(pairs {', '.join(f'{r:.3f}' for r in ratios)}); peak RSS ref {result['peak_rss_mib']['ref']:.0f} MiB, "
          f"this {result['peak_rss_mib']['this']:.0f} MiB; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
