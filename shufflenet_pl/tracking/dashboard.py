"""``shufflenet-pl dashboard``: a W&B workspace (and optionally a report) for a project that shows
accuracy and throughput side by side, so nobody has to click the panels together.

Built with ``wandb-workspaces``. Building the spec needs no network or key; saving it does, so the
command saves only when W&B credentials exist and otherwise writes the spec (JSON) for review and
says how to save it later.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..files import write_text
from . import metrics as keys
from .wandb_logger import DEFAULT_PROJECT, find_wandb_credentials

__all__ = ["LAYOUT", "PanelSpec", "build_report", "build_workspace", "dashboard_main"]


@dataclasses.dataclass(frozen=True)
class PanelSpec:
    """One chart: a line plot of ``y`` against ``x``, or (``scatter``) one point per run from the
    run summaries."""

    title: str
    y: Sequence[str]
    x: str = keys.IMAGES_SEEN
    scatter: bool = False


# Section name -> panels. The first section is what a user sees first: accuracy next to throughput.
LAYOUT: Dict[str, List[PanelSpec]] = {
    "Accuracy and throughput": [
        PanelSpec("Validation top-1 / top-5", [keys.VAL_ACC1, keys.VAL_ACC5]),
        PanelSpec("Images/s, whole job", [keys.IMAGES_PER_SEC]),
        PanelSpec("Training loss", [keys.TRAIN_LOSS]),
        PanelSpec("Best top-1 vs images/s (one point per run)", [keys.VAL_ACC1], x=keys.IMAGES_PER_SEC, scatter=True),
    ],
    "Throughput details": [
        PanelSpec("Images/s per device", [keys.IMAGES_PER_SEC_PER_DEVICE]),
        PanelSpec("Step time (ms)", [keys.STEP_TIME_MS]),
        PanelSpec("Share of the step waiting for data", [keys.DATA_WAIT_SHARE]),
        PanelSpec("Peak device memory (GB)", [keys.PEAK_DEVICE_MEMORY_GB]),
        PanelSpec("Peak host memory (GB)", [keys.PEAK_HOST_MEMORY_GB]),
        PanelSpec("Learning rate", [keys.TRAIN_LR]),
        PanelSpec("Training resolution (progressive resizing)", [keys.TRAIN_RES]),
    ],
    "By optimizer step": [
        PanelSpec("Validation top-1 by step", [keys.VAL_ACC1], x=keys.GLOBAL_STEP),
        PanelSpec("Images/s by step", [keys.IMAGES_PER_SEC], x=keys.GLOBAL_STEP),
        PanelSpec("Validation loss by step", [keys.VAL_LOSS], x=keys.GLOBAL_STEP),
        PanelSpec("Epoch by step", [keys.EPOCH], x=keys.GLOBAL_STEP),
    ],
}


def _panel(spec: PanelSpec) -> Any:
    import wandb_workspaces.reports.v2 as wr

    if spec.scatter:
        return wr.ScatterPlot(title=spec.title, x=spec.x, y=spec.y[0])
    return wr.LinePlot(title=spec.title, x=spec.x, y=list(spec.y))


def build_workspace(entity: str, project: str, name: str = "shufflenet-pl: accuracy and throughput") -> Any:
    """A ``wandb_workspaces.workspaces.Workspace`` with :data:`LAYOUT` (built offline; ``.save()``
    needs credentials)."""
    import wandb_workspaces.workspaces as ws

    sections = [
        ws.Section(name=section, panels=[_panel(spec) for spec in panels], is_open=index == 0)
        for index, (section, panels) in enumerate(LAYOUT.items())
    ]
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections)


def build_report(entity: str, project: str, title: str = "ShuffleNet V2: accuracy and throughput") -> Any:
    """A ``wandb_workspaces.reports.v2.Report`` with the same panels, one grid per section."""
    import wandb_workspaces.reports.v2 as wr

    blocks: List[Any] = [
        wr.P(
            "Validation accuracy against training images seen, next to training throughput "
            "(images/s of the whole job). Logged by shufflenet-pl."
        )
    ]
    for section, panels in LAYOUT.items():
        blocks += [wr.H2(section), wr.PanelGrid(panels=[_panel(spec) for spec in panels])]
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks)


def workspace_spec(workspace: Any) -> Dict[str, Any]:
    """The workspace as the JSON that W&B stores (``viewType``, ``xAxis``, ``metrics``... per panel)."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def _default_entity(has_credentials: bool) -> Optional[str]:
    entity = os.environ.get("WANDB_ENTITY")
    if entity or not has_credentials:
        return entity
    import wandb

    return wandb.Api().default_entity


def dashboard_main(argv: Optional[List[str]] = None) -> None:
    """``shufflenet-pl dashboard``: build the workspace (and report) and save it when a key exists."""
    parser = argparse.ArgumentParser(
        prog="shufflenet-pl dashboard",
        description="Create a W&B workspace for a project with validation accuracy and throughput side by side "
        "(sections: " + "; ".join(LAYOUT) + "). Without W&B credentials it only builds the spec offline and "
        "writes it with --spec; run `wandb login` first to save it.",
    )
    parser.add_argument("--entity", help="W&B user or team (default: WANDB_ENTITY, else your default entity)")
    parser.add_argument(
        "--project",
        default=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
        help="W&B project (default: WANDB_PROJECT, else %(default)s)",
    )
    parser.add_argument("--name", default="shufflenet-pl: accuracy and throughput", help="workspace name")
    parser.add_argument("--report", action="store_true", help="also create a report with the same panels")
    parser.add_argument("--spec", type=Path, help="write the workspace spec (JSON) to this file")
    parser.add_argument("--dry-run", action="store_true", help="build and check only; never save")
    args = parser.parse_args(argv)

    credentials = find_wandb_credentials()
    entity = args.entity or _default_entity(credentials is not None) or "your-entity"
    workspace = build_workspace(entity, args.project, args.name)
    report = build_report(entity, args.project) if args.report else None
    spec = workspace_spec(workspace)
    if report is not None:
        report._to_model()  # validate it offline too
    panels = sum(len(section.panels) for section in workspace.sections)
    print(f"workspace {args.name!r} for {entity}/{args.project}: {len(workspace.sections)} sections, {panels} panels")
    for section, specs in LAYOUT.items():
        print(f"  {section}: " + "; ".join(f"{s.title} [{', '.join(s.y)} vs {s.x}]" for s in specs))
    if args.spec:
        args.spec.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.spec, json.dumps(spec, indent=1))
        print(f"wrote the spec to {args.spec}")
    if args.dry_run:
        return
    if credentials is None:
        print(
            "no W&B credentials (WANDB_API_KEY or ~/.netrc): nothing saved. Run `wandb login`, then this "
            "command again (with --entity) to create the workspace.",
            file=sys.stderr,
        )
        return
    if entity == "your-entity":
        parser.exit(2, "error: --entity is needed to save (or set WANDB_ENTITY)\n")
    try:
        saved = workspace.save()
        print(f"saved workspace: {saved.url}")
        if report is not None:
            saved_report = report.save()
            print(f"saved report: {saved_report.url}")
    except Exception as err:  # network, permissions: one line that says what failed
        parser.exit(1, f"error: could not save to W&B ({type(err).__name__}: {err})\n")
