"""The main job for several seeds: how much its validation accuracy depends on the seed.

    python benchmarks/demo_seeds.py --seeds 0 1 2 --json benchmarks/results/cpu-2core/demo_seeds.json

Each seed runs the README's main command, ``python launch.py`` (the built-in demo, as a job on this
machine), with ``--seed_everything SEED``, in a job folder under ``--jobs-dir``; the file records
each job's final ``val/acc1``, its optimizer steps and the wall time of the whole command (setup of
the job, data conversion on the first run, training and validation), and the spread over the seeds.
Seed 0 is the demo's own seed: its run is the one ``python launch.py`` gives.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def run_seed(seed: int, jobs_dir: Path, extra: Sequence[str]) -> Dict[str, Any]:
    """Run the main command with ``seed`` in a fresh folder under ``jobs_dir``; its result.json's figures."""
    jobs_dir = jobs_dir / f"seed-{seed}"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    before = set(jobs_dir.iterdir())
    command = [sys.executable, str(REPO / "launch.py"), "--jobs-dir", str(jobs_dir), "--seed_everything", str(seed)]
    started = time.monotonic()
    subprocess.run([*command, *extra], cwd=REPO, check=True)
    wall_s = time.monotonic() - started
    (folder,) = [f for f in jobs_dir.iterdir() if f not in before and f.is_dir()]
    result = json.loads((folder / "result.json").read_text())
    return {
        "seed": seed,
        "val_acc1": result["metrics"]["val/acc1"],
        "val_acc5": result["metrics"].get("val/acc5"),
        "epochs": result.get("epoch"),
        "global_step": result.get("global_step"),
        "wall_s": wall_s,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine lengthens wall_s
    }


def summary(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    accs = sorted(r["val_acc1"] for r in runs)
    middle = len(accs) // 2
    return {
        "val_acc1_min": accs[0],
        "val_acc1_median": accs[middle] if len(accs) % 2 else (accs[middle - 1] + accs[middle]) / 2,
        "val_acc1_max": accs[-1],
        "wall_s_max": max(r["wall_s"] for r in runs),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default 0 1 2)")
    parser.add_argument("--jobs-dir", type=Path, default=REPO / "jobs" / "demo-seeds", help="where the jobs go")
    parser.add_argument("--json", type=Path, help="write the numbers there")
    args, extra = parser.parse_known_args(argv)  # anything else goes to launch.py
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args.jobs_dir, extra))
        print(
            f"seed {seed}: val/acc1 {100 * runs[-1]['val_acc1']:.1f} %, {runs[-1]['global_step']} steps, "
            f"{runs[-1]['wall_s']:.0f} s",
            flush=True,
        )
    record = {
        "command": "python launch.py --seed_everything SEED",
        "extra_args": list(extra),
        "cpus": os.cpu_count(),
        "runs": runs,
        **summary(runs),
    }
    accs = ", ".join(f"{100 * r['val_acc1']:.1f} %" for r in runs)
    print(f"val/acc1 over {len(runs)} seeds: {accs} (min {100 * record['val_acc1_min']:.1f} %)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
