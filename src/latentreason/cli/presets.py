"""``latentreason presets``: list, show and copy the shipped pair presets.

``--pair NAME`` always reads the shipped file; to change a preset, copy it, edit the copy and
pass its path (``--pair my.toml``).
"""

from __future__ import annotations

import click


@click.group()
def presets() -> None:
    """The shipped pair presets: `list` them, `show` one, `copy` one to edit (then pass --pair FILE)."""


@presets.command("list")
def list_presets() -> None:
    """Name, task and models of every shipped preset."""
    from latentreason.presets import available_presets, read_preset, shipped_preset

    for name in available_presets():
        cfg = read_preset(shipped_preset(name))
        click.echo(f"{name:16s} {cfg['task']:8s} {cfg['base'].path} -> {cfg['post_rl'].path}")
    click.echo("Use one with --pair NAME; to edit one: latentreason presets copy NAME FILE, then --pair FILE.")


@presets.command()
@click.argument("name")
def show(name: str) -> None:
    """Print the shipped preset NAME (the file --pair NAME reads)."""
    from latentreason.presets import shipped_preset

    try:
        path = shipped_preset(name)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"# {path}")
    click.echo(path.read_text(encoding="utf-8"), nl=False)


@presets.command()
@click.argument("name")
@click.argument("dest", type=click.Path(dir_okay=True))
def copy(name: str, dest: str) -> None:
    """Copy the shipped preset NAME to DEST (a new file, or into a directory) for editing; never overwrites."""
    from latentreason.presets import copy_preset

    try:
        path = copy_preset(name, dest)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"copied preset {name} to {path}; edit it and pass --pair {path}")
