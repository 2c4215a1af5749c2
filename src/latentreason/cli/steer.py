"""``latentreason steer``: compare unsteered and steered completions, interactively or once (``--prompt``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import click

COMMANDS_HELP = ":list  :use NAME[,NAME]  :alpha X  :site SITE  :at all|prompt|generated|first|positions 3,4|steps 0,1  :greedy  :sample [T]  :seed N  :help  :quit"
HELP = """Type a prompt (for the organism an expression such as 3+4*2) to see both completions.
Highlighted tokens ([x] without colour) were chosen by a steered forward pass.
  :list               vectors in the directory (* = in use)
  :use NAME[,NAME]    steer with these vectors
  :alpha X            steering strength
  :site SITE          use the same vectors' versions at another site, e.g. resid_post.2 or resid_post@0.5
  :at WHERE           all | prompt | generated | first | positions 3,4 | steps 0,1
  :greedy | :sample [T] | :seed N
  :quit"""
ON, OFF = "\x1b[1;30;43m", "\x1b[0m"


def check_at(at: str) -> str:
    """``at`` if it names a schedule the command line can express, else a one-line ValueError."""
    from latentreason.steering import Schedule

    try:
        sch = Schedule.parse(at)
    except ValueError:
        sch = None
    if sch is None or sch.kind in ("mask", "callback"):
        raise ValueError(f"Unknown schedule {at!r}: use all | prompt | generated | first | positions 3,4 | steps 0,1")
    return at


def family(vec) -> str:
    """The name a vector shares with its versions at other sites (``step@resid_post.2`` -> ``step``)."""
    return str(vec.provenance.get("strategy") or vec.name.split("@")[0])


@dataclass
class Session:
    """What the prompt loop changes: which vectors, how strongly, where, and how to sample."""

    pair: Any
    role: str
    vectors: dict[str, Any]
    use: list[str]
    alpha: float = 1.0
    at: str = "all"
    temperature: float = 0.0
    seed: int = 0
    max_new_tokens: int = 96
    color: bool = False
    task: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from latentreason.steering import check_alpha

        self.alpha = check_alpha(self.alpha)
        self.at = check_at(self.at)
        self.use = self.check_names(self.use)
        if self.pair.task == "arith":
            from latentreason.tasks.arith import ArithConfig, ArithTask

            self.task = ArithTask(ArithConfig(**self.pair.task_config)) if self.pair.task_config else ArithTask()

    def check_names(self, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in self.vectors]
        if unknown or not names:
            raise ValueError(f"Unknown vector {', '.join(map(repr, unknown)) or '(none given)'}: available {', '.join(self.vectors)} (:list shows them).")
        return names

    def prompt_text(self, text: str) -> str:
        """An organism expression becomes the task prompt; anything else is formatted as a raw prompt."""
        if self.task is not None:
            from latentreason.tasks.arith import Problem

            try:
                return self.task.prompt(Problem.parse(text))
            except ValueError:
                pass
        return self.pair.format_prompt(self.role, text)

    def run(self, text: str) -> dict[str, Any]:
        """Both completions of one prompt and what was steered."""
        from latentreason.generation import decode
        from latentreason.steering import steered_decode

        tok, model = self.pair.tokenizer(self.role), self.pair.model(self.role)
        prompt = self.prompt_text(text)
        ids = tok([prompt], return_tensors="pt").input_ids
        kw = dict(max_new_tokens=self.max_new_tokens, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, temperature=self.temperature, seed=self.seed)
        plain = decode(model, ids, **kw)
        vecs = [(self.vectors[n], self.alpha) for n in self.use]
        res = steered_decode(model, ids, vectors=vecs, at=self.at, check=False, **kw)  # checked once when loaded
        return {
            "prompt": text,
            "prompt_text": prompt,
            "vectors": [{"name": n, "site": str(self.vectors[n].site), "alpha": self.alpha} for n in self.use],
            "at": self.at,
            "temperature": self.temperature,
            "seed": self.seed,
            "unsteered": plain.completions(tok)[0],
            "steered": res.completions(tok)[0],
            "steered_positions": [p for _, p in res.steered],
            "steered_tokens": res.steering.steered_steps()[0],
            "_prompt_tokens": [tok.decode([t], skip_special_tokens=True) for t in ids[0].tolist()],
            "_plain_tokens": [tok.decode([t], skip_special_tokens=True) for t in plain.tokens[0, : int(plain.lengths[0])].tolist()],
            "_steered_tokens": [tok.decode([t], skip_special_tokens=True) for t in res.tokens[0, : int(res.lengths[0])].tolist()],
        }

    def settings(self) -> str:
        mode = "greedy" if self.temperature == 0 else f"sample T={self.temperature:g} seed={self.seed}"
        uses = ", ".join(f"{n} ({self.vectors[n].site})" for n in self.use)
        return f"using {uses} alpha={self.alpha:g} at={self.at} {mode}"

    # ------------------------------------------------------------ commands

    def command(self, line: str) -> str | None:
        """Apply a ``:command``; returns the message to print, or None to quit. Raises ValueError on misuse."""
        from latentreason.sites import site_in
        from latentreason.steering import check_alpha

        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "q", "exit"):
            return None
        if name == "help":
            return HELP
        if name == "list":
            return "\n".join(f"{'*' if n in self.use else ' '} {n:24s} {str(v.site):14s} {v.method:10s} norm {v.norm:.3g}" for n, v in self.vectors.items())
        if name == "use":
            self.use = self.check_names([n.strip() for n in arg.split(",") if n.strip()])
        elif name == "alpha":
            try:
                self.alpha = check_alpha(float(arg))
            except ValueError:
                raise ValueError(f"alpha must be a number, e.g. :alpha 2.5 (got {arg!r}).") from None
        elif name == "site":
            site = site_in(self.pair.model(self.role), arg)  # resid_post.2, or a depth fraction: resid_post@0.5
            new = []
            for n in self.use:
                fam = family(self.vectors[n])
                same = [m for m, v in self.vectors.items() if family(v) == fam]
                hit = [m for m in same if self.vectors[m].site == site]
                if not hit:
                    raise ValueError(f"No vector {fam!r} at {site}: it exists at {', '.join(sorted(str(self.vectors[m].site) for m in same))}.")
                new.append(hit[0])
            self.use = new
        elif name == "at":
            self.at = check_at(arg)
        elif name == "greedy":
            self.temperature = 0.0
        elif name == "sample":
            try:
                t = float(arg) if arg else 1.0
            except ValueError:
                t = float("nan")
            if not 0 < t < float("inf"):
                raise ValueError(f"Temperature {arg} must be positive, e.g. :sample 0.8")
            self.temperature = t
        elif name == "seed":
            if not arg.lstrip("-").isdigit():
                raise ValueError(f"seed must be an integer, e.g. :seed 3 (got {arg!r}).")
            self.seed = int(arg)
        else:
            raise ValueError(f"Unknown command {line.split()[0]!r}. Commands: {COMMANDS_HELP}")
        return self.settings()


def highlight(tokens: list[str], marked: set[int], color: bool) -> list[str]:
    """Lines of ``tokens`` with the marked ones highlighted (ANSI or brackets); a marked newline shows as ⏎."""
    lines, cur = [], ""
    for i, t in enumerate(tokens):
        if i in marked and t:
            shown = "⏎" if t == "\n" else t
            cur += f"{ON}{shown}{OFF}" if color else f"[{shown}]"
        elif t != "\n":
            cur += t
        if t == "\n":
            lines.append(cur)
            cur = ""
    if cur:
        lines.append(cur)
    return lines or [""]


def _visible(s: str) -> int:
    return len(s.replace(ON, "").replace(OFF, ""))


def render(res: dict[str, Any], color: bool) -> str:
    """The prompt (steered prompt tokens marked) and the two completions side by side."""
    n_prompt = len(res["_prompt_tokens"])
    prompt_marks = {p for p in res["steered_positions"] if p < n_prompt}  # one row, no padding: position = token index
    head = "prompt: " + "".join(highlight(res["_prompt_tokens"], prompt_marks, color)).replace("\n", "⏎")
    left = highlight(res["_plain_tokens"], set(), color)
    right = highlight(res["_steered_tokens"], set(res["steered_tokens"]), color)
    vec = "+".join(f"{v['name']}" for v in res["vectors"])
    title_r = f"steered ({vec} x{res['vectors'][0]['alpha']:g} at {res['at']})"
    width = max([len("unsteered"), *(len(x) for x in left)]) + 4
    rows = [head, f"{'unsteered':{width}s}{title_r}"]
    for i in range(max(len(left), len(right))):
        l = left[i] if i < len(left) else ""
        r = right[i] if i < len(right) else ""
        rows.append(l + " " * (width - _visible(l)) + r)
    return "\n".join(rows)


def _loop(session: Session) -> None:
    click.echo(f"latentreason steer: {session.pair.name} ({session.role}); vectors: {', '.join(session.vectors)}")
    click.echo(session.settings() + ". Type a prompt, or :help.")
    while True:
        try:
            line = input("steer> ").strip()
        except (EOFError, KeyboardInterrupt):
            click.echo("")
            return
        if not line:
            continue
        try:
            if line.startswith(":"):
                msg = session.command(line)
                if msg is None:
                    return
                click.echo(msg)
            else:
                click.echo(render(session.run(line), session.color))
        except (ValueError, FileNotFoundError) as e:
            click.echo(f"error: {e}")
        except Exception as e:  # a prompt loop reports and goes on; it never shows a traceback
            click.echo(f"error ({type(e).__name__}): {e}")


@click.command()
@click.option("--pair", "pair_spec", default="organism", show_default=True, help="'organism', an organism pair directory or a .toml preset.")
@click.option("--vectors", "vectors_dir", required=True, type=click.Path(file_okay=False), help="Directory written by save_vectors / `latentreason extract`.")
@click.option("--role", default="base", show_default=True, help="Which model of the pair to steer.")
@click.option("--prompt", default=None, help="Run once on this prompt instead of the interactive loop.")
@click.option("--vector", "vector_names", default=None, help="NAME[,NAME] to steer with (default: the first in the directory).")
@click.option("--alpha", default=1.0, show_default=True, type=float, help="Steering strength.")
@click.option("--at", "at", default="all", show_default=True, help="all | prompt | generated | first | 'positions 3,4' | 'steps 0,1'.")
@click.option("--temperature", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-new-tokens", default=None, type=int, help="Default: the pair's, else 96.")
@click.option("--json", "as_json", is_flag=True, help="With --prompt: print one JSON object.")
@click.option("--color/--no-color", default=None, help="Highlight with ANSI colours (default: when stdout is a terminal).")
@click.option("--no-check", is_flag=True, help="Do not refuse vectors made for another model.")
def steer(pair_spec: str, vectors_dir: str, role: str, prompt: str | None, vector_names: str | None, alpha: float, at: str, temperature: float, seed: int, max_new_tokens: int | None, as_json: bool, color: bool | None, no_check: bool) -> None:
    """Steer a model with saved vectors: unsteered and steered completions side by side."""
    from transformers.utils import logging as hf_logging

    from latentreason.pair import load_pair
    from latentreason.vectors import load_vectors

    hf_logging.disable_progress_bar()  # no weight-loading bars in a prompt loop
    if as_json and prompt is None:
        raise click.UsageError("--json needs --prompt (the interactive loop prints text).")
    try:
        from latentreason.steering import check_alpha
        from latentreason.validate import check_positive, check_temperature

        check_alpha(alpha, "--alpha")  # every argument, before any model loads
        check_temperature(temperature, "--temperature")
        check_at(at)
        if max_new_tokens is not None:
            check_positive("--max-new-tokens", max_new_tokens)
        vectors = load_vectors(vectors_dir)
        if not vectors:
            raise ValueError(f"{vectors_dir} holds no vectors.")
        pair = load_pair(pair_spec)
        model = pair.model(role)
        if not no_check:
            fp = pair.fingerprint(role)
            for v in vectors.values():
                try:
                    v.check_model(model, fingerprint=fp)
                except ValueError as e:
                    raise ValueError(f"{e} (On the command line: --no-check.)") from e
        names = [n.strip() for n in vector_names.split(",")] if vector_names else [next(iter(vectors))]
        session = Session(pair, role, vectors, names, alpha=alpha, at=at, temperature=temperature, seed=seed, max_new_tokens=max_new_tokens or int(pair.defaults.get("max_new_tokens", 96)), color=sys.stdout.isatty() if color is None else color)
        if prompt is None:
            _loop(session)
            return
        res = session.run(prompt)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        from latentreason.io import dumps_json

        click.echo(dumps_json({k: v for k, v in res.items() if not k.startswith("_")}))
    else:
        click.echo(render(res, session.color))
