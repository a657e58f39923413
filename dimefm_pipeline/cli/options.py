"""Typer options made from config dataclasses (`core.options.option` fields): a command declares which
configs it fills and receives their fields' values as one dict; an option's default, help text and
flag are the field's."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing

import typer


def _flag(f: dataclasses.Field) -> str | tuple[str, ...]:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _parameters(cls, skip: tuple[str, ...]) -> list[tuple[str, inspect.Parameter, dataclasses.Field]]:
    """(field name, typer parameter, field) of every option of `cls`; a tuple field gives one per flag."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", False):
            continue
        help_ = f.metadata.get("help", "")
        kw = f.metadata.get("typer", {})
        flag, kind = _flag(f), hints[f.name]
        if isinstance(flag, tuple):  # one option per element, each defaulting to its element of the default
            args = typing.get_args(kind)
            for i, (one, default) in enumerate(zip(flag, f.default)):
                name = f"{f.name}__{i}"
                opt = typer.Option(default, one, help=help_[i] if isinstance(help_, tuple) else help_, **kw)
                out.append((name, inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=args[i]), f))
            continue
        default = ... if f.default is dataclasses.MISSING else f.default  # no default: a required option
        opt = typer.Option(default, flag, help=help_, **kw)
        out.append((f.name, inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind), f))
    return out


def config_options(*configs, skip: tuple[str, ...] = ()):
    """Decorate `fn(given, **rest)`: its typer command takes `fn`'s own parameters (`rest`) and one
    option per field of each config class in `configs`; `given` maps each field to its value (the
    default when the option is not given)."""

    def wrap(fn):
        own = [p for name, p in inspect.signature(fn, eval_str=True).parameters.items() if name != "given"]
        generated = [item for cls in configs for item in _parameters(cls, skip)]

        @functools.wraps(fn)
        def command(**kwargs):
            given = {}
            for name, _, f in generated:
                value = kwargs.pop(name)
                if "__" in name:  # an element of a tuple field
                    current = list(given.get(f.name, f.default))
                    current[int(name.rsplit("__", 1)[1])] = value
                    given[f.name] = tuple(current)
                else:
                    given[f.name] = value
            return fn(given, **kwargs)

        arguments = [p for p in own if isinstance(p.default, typer.models.ArgumentInfo)]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p not in arguments]
        params = arguments + [p for _, p, _ in generated] + rest  # the command's own options after the config's
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__
        return command

    return wrap
