"""The ``latentreason`` command line. Each command group lives in its own module and loads lazily."""

from __future__ import annotations

import importlib
import logging

import click

# command name -> (module, attribute); modules import heavy libraries only when run
COMMANDS: dict[str, tuple[str, str]] = {
    "organism": ("latentreason.cli.organism", "organism"),
    "rollouts": ("latentreason.cli.rollouts", "rollouts"),
    "cache": ("latentreason.cli.cache", "cache"),
    "steer": ("latentreason.cli.steer", "steer"),
    "taxonomy": ("latentreason.cli.taxonomy", "taxonomy"),
    "extract": ("latentreason.cli.extract", "extract"),
    "recover": ("latentreason.cli.recover", "recover"),
    "report": ("latentreason.cli.report", "report"),
    "demo": ("latentreason.cli.demo", "demo"),
    "quality": ("latentreason.cli.quality", "quality"),
    "run": ("latentreason.cli.run", "run"),
    "presets": ("latentreason.cli.presets", "presets"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup)
@click.version_option(package_name="latentreason")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """latentreason: does RL teach a model how to reason, or when?"""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
