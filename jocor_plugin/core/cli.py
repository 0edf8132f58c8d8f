"""Command-line plumbing shared by ``run``, ``label_issues``, ``sweep`` and ``reproduce``: argument
helpers, logging set-up and exit codes (a ``UserError`` is one ``error: ...`` line and exit 2; a
signal stop exits 128 + the signal's number)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Optional, Sequence

from .errors import Interrupted, UserError, one_line

__all__ = ["configure_logging", "multi_process_without_gpu", "launch_shortfall", "exit_code_of", "make_parser", "positive_int",
           "check_overrides", "tool_main", "read_yaml_mapping", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


def multi_process_without_gpu() -> bool:
    """``accelerate launch --multi_gpu --num_processes N`` on a machine without a GPU: Accelerate
    would otherwise start N independent single-process runs; ask it for gloo on the CPU instead."""
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


class _StdoutHandler(logging.StreamHandler):
    """Writes to ``sys.stdout`` as it is when a record is emitted, not as it was when logging was
    configured (embedded callers, e.g. pytest, replace and close it; ``logging.lastResort`` does
    the same for stderr)."""

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def launch_shortfall(num_processes: int) -> Optional[str]:
    """A warning line when the launcher asked for more processes than the run got, else None.

    ``accelerate launch --num_processes N`` starts N processes only with a multi-process launcher
    (``--multi_gpu`` / a config file such as accelerate_configs/cpu_2proc.yaml: torchrun, which sets
    WORLD_SIZE). With ``--cpu`` (or without ``--multi_gpu``) it runs the script *once*, and the only
    trace of N > 1 is the MASTER_ADDR / MASTER_PORT its simple launcher sets beside
    ACCELERATE_USE_CPU (accelerate/utils/launch.py, prepare_simple_launcher_cmd_env)."""
    env = os.environ
    asked: Optional[int] = None
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if env.get(name, "").isdigit():
            asked = int(env[name])
            break
    if asked is not None and asked <= num_processes:
        return None
    if asked is None and not ("MASTER_ADDR" in env and "ACCELERATE_USE_CPU" in env and num_processes == 1):
        return None
    several = f"{asked} processes" if asked is not None else "several processes (--num_processes > 1)"
    return (f"The launch asked for {several} but this run has {num_processes}: accelerate launch --cpu (or without "
            f"--multi_gpu) starts the script once. For N processes use --multi_gpu --num_processes N, on CPUs "
            f"too, or accelerate launch --config_file accelerate_configs/cpu_2proc.yaml (docs/scaling.md).")


def configure_logging(main_process: Optional[bool] = None) -> None:
    """Our progress lines on the main process only; libraries' chatter at warning level.
    ``main_process=None`` asks Accelerate (for the training processes it launched), and warns
    when the launch asked for more processes than Accelerate started (``launch_shortfall``)."""
    import datasets
    from accelerate import PartialState

    shortfall = None
    if main_process is None:
        state = PartialState(cpu=multi_process_without_gpu())
        main_process = state.is_main_process
        shortfall = launch_shortfall(state.num_processes)
    logging.basicConfig(format="%(message)s", level=logging.WARNING, handlers=[_StdoutHandler()], force=True)
    logging.getLogger("jocor_plugin").setLevel(logging.INFO if main_process else logging.WARNING)
    if shortfall and main_process:  # before the run's "Accelerate: N process(es)" line, once
        logging.getLogger("jocor_plugin.launch").warning(shortfall)
    # datasets and huggingface_hub bind their own handler to sys.stderr as it was at import time;
    # send their warnings through ours
    for library in ("datasets", "huggingface_hub"):
        library_logger = logging.getLogger(library)
        library_logger.handlers.clear()
        library_logger.propagate = True
    datasets.disable_progress_bars()


def exit_code_of(body: Callable[[], int], *, debug: bool = False) -> int:
    """Run a command's body; a stop on a signal prints its message and exits 128 + signal, any
    other ``UserError`` prints ``error: ...`` and exits 2 (``debug``: the full traceback)."""
    try:
        return body()
    except Interrupted as err:
        print(str(err), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C where no stop is handled (loading data, building models): no traceback
        if debug:
            raise
        print("Interrupted by Ctrl-C.", file=sys.stderr)
        return 130
    except UserError as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR


def tool_main(parse_args: Callable[[Optional[Sequence[str]]], argparse.Namespace],
              body: Callable[[argparse.Namespace], int], argv: Optional[Sequence[str]] = None) -> int:
    """A tool's ``main``: parse, log on this (the only) process, run ``body`` with the exit codes above."""
    args = parse_args(argv)
    configure_logging(main_process=True)
    return exit_code_of(lambda: body(args))


def _unique_key_loader() -> type:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """PyYAML keeps the last of two equal keys silently: a recipe with ``train:`` twice would
        lose the first section's keys. Refuse it instead."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.YAMLError(f"'{key}' appears twice (lines {seen[key]} and "
                                         f"{key_node.start_mark.line + 1}); merge the two into one.")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_yaml_mapping(path: Any, error: type[UserError], *, label: str, not_mapping: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (an empty file is {}); else ``error`` with
    '<label> is not valid YAML: ...' or ``not_mapping``."""
    import yaml

    try:
        loader = _unique_key_loader()(path.read_text())
        try:
            raw = loader.get_single_data() or {}
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise error(f"{label} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise error(not_mapping)
    return raw


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (e.g. ``--jobs``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}; use >= 1")
    return value


def make_parser(prog: str, description: str, epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser named as the module is run (``python -m jocor_plugin.X``)."""
    return argparse.ArgumentParser(prog=f"python -m jocor_plugin.{prog}", description=description, epilog=epilog)


def check_overrides(items: Sequence[str], what: str = "Override") -> None:
    """Every item must look like ``section.key=value`` (the recipe's override form)."""
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"{what} '{item}' must look like section.key=value (e.g. train.epochs=3).")
