"""The Lightning side of ``shufflenet-pl``: :class:`ShuffleNetCLI` (``fit``, ``validate``, ``test``,
``predict``). Kept apart from :mod:`shufflenet_pl.cli` so that the tools there start without importing
Lightning."""

import argparse
import importlib
import re
import shutil
import sys
import inspect
from pathlib import Path
from typing import Any, List, NoReturn, Optional

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from .callbacks import PredictionWriter, RunConfigSaver
from .checkpoints import choose_checkpoint, use_verified_checkpoints, verify_checkpoint
from .cuda_driver import accelerator_problem
from .data.common import per_device_batch_size
from .errors import InputError
from .files import NoSpaceError
from .input_checks import check_run_config, check_yaml_file, config_files
from .joblock import lock_holder
from .tools import tools_epilog
from .module import ImageClassifier
from .quiet import make_trainer_quiet, silence_third_party_noise
from .tracking.wandb_logger import apply_cli_defaults, remove_wandb_loggers

__all__ = ["ShuffleNetCLI", "build_cli"]


SUBCOMMAND_HELP = {
    "fit": "train a model, validating after every epoch; --ckpt_path resumes from a checkpoint",
    "validate": "evaluate a checkpoint (--ckpt_path) or weights (--weights) on the validation set",
    "test": "evaluate once more on the held-out images (the validation set: ImageNet publishes no test labels)",
    "predict": "write top-5 predictions for the validation images to predictions.csv",
}


def _explicit_num_classes(network: Any) -> Optional[int]:
    """``num_classes`` of the network's config (``class_path`` + ``init_args``) unless it is the
    class's own default (which jsonargparse fills in whether or not the user gave it)."""
    init_args = getattr(network, "init_args", None)
    value = getattr(init_args, "num_classes", None) if init_args is not None else None
    if not isinstance(value, int):
        return None
    try:
        module, _, name = str(network.class_path).rpartition(".")
        default = inspect.signature(getattr(importlib.import_module(module), name)).parameters["num_classes"].default
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return value
    return None if value == default else value


def _input_error(err: BaseException) -> BaseException:
    """The :class:`InputError` or ``FileNotFoundError`` that ``err`` was raised from, if any: jsonargparse
    wraps an error raised while instantiating a class (a truncated file, an empty class folder) in a
    many-line "Does not validate against any of the Union subtypes" message; the user needs its cause."""
    found, seen = err, set()
    cause: Optional[BaseException] = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (InputError, FileNotFoundError)):
            found = cause
        cause = cause.__cause__ or cause.__context__
    return found


_UNKNOWN_OPTION = re.compile(r"class_path '([^']+)':\s*Option '([^']+)' is not accepted")


def one_line_parse_error(message: str) -> str:
    """jsonargparse's many-line message (a Union dump, a YAML error) as one line: the dotted key
    path of the nested ``Parser key`` lines and the innermost reason."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    keys = [line.split('"')[1] for line in lines if line.startswith('Parser key "') and line.count('"') >= 2]
    unknown = _UNKNOWN_OPTION.search(" ".join(lines))
    if keys and unknown:  # a misspelt key of a class: name it, not the whole given value
        class_path, option = unknown.groups()
        key = ".".join(dict.fromkeys(keys))
        return (
            f"{key}.init_args.{option}: {class_path} has no such parameter; check its spelling "
            f"(`shufflenet-pl fit --help` lists the accepted keys)"
        )
    reasons = [
        line for line in lines if line.startswith(("Expected", "Key ", "No action", "Unrecognized", "unrecognized"))
    ]
    if lines and lines[0].startswith("Problems parsing config"):
        return f"{lines[0].rstrip(':')}: {' '.join(lines[1:])}; fix the YAML file given with --config"
    if keys:
        key = ".".join(dict.fromkeys(keys))
        reason = reasons[0] if reasons else lines[-1]
        return f"{key}: {reason}; see --help for the accepted keys and types"
    return " ".join(lines)


def remove_empty_offline_runs(trainer: Any) -> List[Path]:
    """Remove the offline W&B runs that this process started and logged no metric to (a run that
    failed before its first step): `wandb sync` would upload them as empty runs. Runs with metrics,
    online runs and the runs of other processes stay. Returns the removed folders."""
    from .tracking import OfflineFirstWandbLogger

    removed = []
    for logger in getattr(trainer, "loggers", None) or []:
        run = getattr(logger, "_experiment", None)
        if not isinstance(logger, OfflineFirstWandbLogger) or logger.mode != "offline" or run is None or logger._rows:
            continue
        folder = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>
        # The config copy that RunConfigSaver put beside the run: <save_dir>/<project>/<run id>/config.yaml.
        config_folder = Path(logger.save_dir or ".") / str(logger.name) / str(run.id)
        try:  # silently: wandb's closing lines ("wandb sync ...") would offer the run that goes away
            run._settings.silent = True
            run.finish(exit_code=1)
        except Exception:  # a service that is gone: its files are removed all the same
            pass
        logger._experiment = None
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        if config_folder.is_dir() and {p.name for p in config_folder.iterdir()} <= {"config.yaml"}:
            shutil.rmtree(config_folder, ignore_errors=True)
            if not any(config_folder.parent.iterdir()):
                config_folder.parent.rmdir()
        wandb_dir = folder.parent
        for link in (wandb_dir / "latest-run", wandb_dir / "debug.log", wandb_dir / "debug-internal.log"):
            if link.is_symlink() and not link.exists():  # pointed into the removed run
                link.unlink()
        if wandb_dir.is_dir() and not any(wandb_dir.iterdir()):
            wandb_dir.rmdir()
    return removed


class _OneLineErrorParser(LightningArgumentParser):
    """A parse error is one ``error:`` line, exit status 2: no usage dump, no Union listing."""

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:  # type: ignore[override]
        if not self.exit_on_error:
            super().error(message, ex)
        sys.stderr.write(f"error: {one_line_parse_error(message)}\n")
        sys.exit(2)


class ShuffleNetCLI(LightningCLI):
    """LightningCLI with the model's class count linked to the data, and ``--weights``."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        self.parser_class = _OneLineErrorParser  # every parser, the subcommands' too: one-line errors
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--weights",
            type=Optional[str],
            default=None,
            help="state-dict file loaded strictly into the network before running (torchvision's "
            "shufflenet_v2_x*.pth, or a checkpoint); read with weights_only=True",
        )
        parser.add_argument(
            "--no-wandb",
            action="store_true",
            help="do not log to W&B: the config's W&B logger is dropped (a CSVLogger in "
            "trainer.default_root_dir replaces it when no other logger is left)",
        )
        parser.add_argument(
            "--restart-from-scratch",
            action="store_true",
            help="fit: when every checkpoint of --ckpt_path's folder fails to verify, start from step 0 "
            "and remove them (without it, fit refuses to start)",
        )
        # The data decides the class count; the classifier head follows it so they cannot disagree.
        parser.link_arguments(
            "data",
            "model.model.init_args.num_classes",
            compute_fn=lambda data: data.num_classes,
            apply_on="instantiate",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        given = sys.argv[1:] if args is None else args
        if isinstance(given, (list, tuple)):
            for path in config_files([str(arg) for arg in given]):
                try:  # a file that is not YAML, named with its line (jsonargparse says "<unicode string>")
                    check_yaml_file(Path(path))
                except InputError as err:
                    parser.exit(2, f"error: {err}\n")
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        # A GPU that torch cannot use (a driver older than its CUDA): one line before anything is built.
        gpu_problem = accelerator_problem(self._get(self.config, "trainer.accelerator", None))
        if gpu_problem is not None:
            self.parser.exit(2, f"error: {gpu_problem}\n")
        if self._get(self.config, "no_wandb"):
            remove_wandb_loggers(self.config.get(str(self.subcommand), self.config).trainer)
        subcommand_config = self.config.get(str(self.subcommand), self.config)
        try:  # bad values and files: one line before anything is built (no run folder, no W&B run)
            check_run_config(subcommand_config.as_dict(), self.subcommand)
        except InputError as err:
            self.parser.exit(2, f"error: {err}\n")
        # The link below overrides the network's class count with the data's: remember a count the user
        # asked for (one that is not the network's default), to refuse a different one instead of ignoring it.
        self._requested_num_classes = _explicit_num_classes(self._get(self.config, "model.model", None))

    def _parse_ckpt_path(self) -> None:
        """Verify ``--ckpt_path`` before anything reads it. For ``fit``, a file that fails is named and
        skipped for the newest good checkpoint of its folder, and none good stops here (or, with
        ``--restart-from-scratch``, fit starts from step 0); other subcommands refuse a bad file."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and Path(ckpt_path).is_file():
            if subcommand != "fit":
                why = verify_checkpoint(ckpt_path)
                if why is not None:
                    self.parser.exit(2, f"error: --ckpt_path {ckpt_path}: {why}\n")
            else:
                holder = lock_holder(Path(ckpt_path).parent) if rank_zero_only.rank == 0 else None
                if holder is not None:  # a running trainer writes there: verify or remove nothing
                    self.parser.exit(
                        2,
                        f"error: {Path(ckpt_path).parent} is in use by a running trainer: pid {holder.get('pid')} "
                        f"on {holder.get('host')} (since {holder.get('started')}); wait for it or stop it first\n",
                    )
                try:
                    choice = choose_checkpoint(
                        Path(ckpt_path),
                        restart_from_scratch=bool(self.config.get("restart_from_scratch")),
                        remove_discarded=rank_zero_only.rank == 0,
                    )
                except InputError as err:
                    self.parser.exit(2, f"error: {err}\n")
                self.config[subcommand]["ckpt_path"] = str(choice.path) if choice.path is not None else None
        super()._parse_ckpt_path()

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            # Bad values in the config: a one-line message that names the key, not a traceback.
            self.parser.exit(2, f"error: {_input_error(err)}\n")
        requested, found = self._requested_num_classes, getattr(self.datamodule, "num_classes", None)
        if requested is not None and found is not None and requested != found:
            self.parser.exit(
                2,
                f"error: model.model.init_args.num_classes={requested}, but the data has {found} classes; "
                f"the data decides the class count: leave num_classes out (or set data.num_classes)\n",
            )
        apply_cli_defaults(self.trainer, self.subcommand)
        use_verified_checkpoints(self.trainer)
        make_trainer_quiet(self.trainer)
        weights = self._get(self.config, "weights")
        if weights:
            from .models.weights import load_torchvision_weights

            try:
                load_torchvision_weights(self.model.model, weights)
            except (ValueError, FileNotFoundError) as err:
                self.parser.exit(2, f"error: --weights: {err}\n")
            if self.model.ema_model is not None:
                self.model.ema_model.module.load_state_dict(self.model.model.state_dict())

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except (InputError, NoSpaceError) as err:  # a bad file or setting, a full disk: one line
            remove_empty_offline_runs(self.trainer)
            self.parser.exit(2, f"error: {err.strerror if isinstance(err, NoSpaceError) else err}\n")
        except BaseException:
            remove_empty_offline_runs(self.trainer)
            raise

    def _check_batch_divides(self) -> None:
        """The global batch must divide over all processes: checked here, in the launching process,
        before DDP starts the others (the datamodule's own check runs in every rank, after the spawn)."""
        batch_size = getattr(self.datamodule, "batch_size", None)
        if isinstance(batch_size, int):
            try:
                per_device_batch_size(batch_size, self.trainer.world_size, max(1, self.trainer.num_nodes))
            except InputError as err:
                self.parser.exit(2, f"error: {err}\n")

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # Lightning takes each subcommand's help from the first sentence of the Trainer method's
        # docstring, which its line wrapping cuts mid-sentence ("never run on your"); say it whole.
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    choice.help = SUBCOMMAND_HELP.get(choice.dest, choice.help)

    def before_validate(self) -> None:
        self._check_batch_divides()

    def before_test(self) -> None:
        self._check_batch_divides()

    def before_fit(self) -> None:
        self._check_batch_divides()
        try:  # a setting the chosen device cannot run: one line before any work, not a traceback from fit
            self.model.check_device(self.trainer.strategy.root_device)
        except ValueError as err:
            self.parser.exit(2, f"error: {err}\n")

    def before_predict(self) -> None:
        self._check_batch_divides()
        if not any(isinstance(cb, PredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())


def build_cli(args: Optional[List[str]] = None, run: bool = True, save_config: bool = True) -> ShuffleNetCLI:
    """The Lightning CLI over ``args`` (``run=False`` only parses and instantiates).

    ``save_config=False`` writes no ``config.yaml`` into the run's folder (a launcher's job folder
    holds the file the run reads); the W&B run still receives the config.
    """
    silence_third_party_noise()
    return ShuffleNetCLI(
        ImageClassifier,
        LightningDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": save_config},
        parser_kwargs={"epilog": tools_epilog(), "formatter_class": argparse.RawDescriptionHelpFormatter},
        auto_configure_optimizers=False,
    )
