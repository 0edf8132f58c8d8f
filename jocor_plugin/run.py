"""Entry point: ``python -m jocor_plugin.run RECIPE [key=value ...]`` (or under ``accelerate launch``).

The training itself is ``jocor_plugin.train.trainer``; this module is its command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .config import config_to_dict, describe_config, load_config
from .core.cli import EXIT_USER_ERROR, configure_logging, exit_code_of, make_parser
from .methods import describe_method, list_methods
from .train.trainer import train

__all__ = ["main", "train", "configure_logging"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = make_parser(
        "run", "Train a pair of timm networks on noisy labels (JoCoR and baselines).",
        epilog="Example: python -m jocor_plugin.run recipes/mnist5k_sym50.yaml method.name=standard "
               "train.epochs=20")
    parser.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. noise.rate=0.2")
    parser.add_argument("--help-config", action="store_true", help="list every recipe key and exit")
    parser.add_argument("--markdown", action="store_true", help="with --help-config: a Markdown table")
    parser.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved recipe and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    args = parser.parse_args(argv)
    args.usage = parser.format_usage()
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    configure_logging()
    if args.help_config:
        print(describe_config(markdown=args.markdown))
        return 0
    if args.list_methods:
        print("Registered methods; give an argument as method.<argument>=value (e.g. method.lambda_u=0).")
        print("\n".join(describe_method(name) for name in list_methods()))
        return 0
    if args.recipe is None and not args.overrides and not args.print_config:  # a bare command: no 200-epoch default run
        print(f"{args.usage}Give a recipe, e.g. python -m jocor_plugin.run recipes/demo.yaml (recipes/ holds "
              f"more), and key=value overrides; --help for the options, --help-config for every key.",
              file=sys.stderr)
        return EXIT_USER_ERROR
    if args.recipe is not None and "=" in args.recipe and not Path(args.recipe).is_file():  # key=value, recipe=PATH
        args.overrides, args.recipe = [args.recipe, *args.overrides], None

    def body() -> int:
        cfg = load_config(args.recipe, args.overrides)
        if args.print_config:
            print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        else:
            train(cfg)
        return 0

    return exit_code_of(body, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
