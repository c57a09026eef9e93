"""One option syntax and one typed coercion for editor and metric arguments.

``--editor-arg nti_p2p.inner_steps=5`` and ``--metrics lpips_unedit_part:net=alex;chunk=4`` both end here:
each string is parsed into the type its field declares (a dataclass field of an editor config, or an
annotated constructor parameter of a metric), so ``"1"`` is ``True`` for a bool, ``1`` for an int and
``1.0`` for a float, whichever kind of plugin reads it.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
import types
import typing
from typing import Any, Optional, Union

from pie_bench.core.errors import ConfigError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
NONE_WORDS = ("none", "null")


def parse_option_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name:key=value;key=value`` -> (name, {key: value})."""
    name, _, opts = spec.strip().partition(":")
    kwargs = {}
    for item in filter(None, (o.strip() for o in opts.split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--metrics {spec!r}: option {item!r} is not key=value; write NAME:KEY=VALUE;KEY=VALUE, "
                              "e.g. lpips_unedit_part:net=alex")
        kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def _args(hint) -> tuple:
    return typing.get_args(hint)


def _is_union(hint) -> bool:
    return typing.get_origin(hint) is Union or isinstance(hint, types.UnionType)


def _scalar(text: str, kind: type, where: str):
    low = text.strip().lower()
    if kind is bool:
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise ConfigError(f"{where}: expected true/false, got {text!r}")
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if kind is str:
        return text
    raise ConfigError(f"{where}: cannot parse {text!r} as {getattr(kind, '__name__', kind)}")


def _sequence(text: str, elem: Optional[type], current, where: str) -> list:
    text = text.strip()
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{where}: {text!r} is not a JSON list") from None
    else:
        items = [t.strip() for t in text.split(",") if t.strip()]
    if elem is None and current:
        elem = type(current[0])
    if elem in (bool, int, float, str):
        items = [_scalar(str(i), elem, where) if isinstance(i, str) or elem is not type(i) else i for i in items]
    return items


def coerce(value: Any, hint, current: Any, where: str):
    """``value`` (a CLI string, or an already typed JSON value) as the type ``hint`` declares; without a
    usable hint, as the type of ``current`` (the default)."""
    if hint is None or hint is Any or hint is inspect.Parameter.empty:
        hint = type(current) if current is not None else None
    if _is_union(hint):
        members = [a for a in _args(hint) if a is not type(None)]
        if type(None) in _args(hint) and (value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)):
            return None
        errors = []
        for m in members:
            try:
                return coerce(value, m, current, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{where}: cannot parse {value!r}")
    origin = typing.get_origin(hint) or hint
    if origin in (list, tuple):
        elems = [a for a in _args(hint) if a is not Ellipsis]
        elem = elems[0] if elems else None
        items = list(value) if isinstance(value, (list, tuple)) else _sequence(str(value), elem, current, where)
        return tuple(items) if origin is tuple else items
    if not isinstance(value, str):
        if origin is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(origin, type) and not isinstance(value, origin):
            raise ConfigError(f"{where}: expected {origin.__name__}, got {value!r}")
        return value
    if origin in (bool, int, float, str):
        return _scalar(value, origin, where)
    if hint is None:  # untyped field whose default is None: JSON if it parses, else the string
        if value.strip().lower() in NONE_WORDS:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def field_hints(obj) -> dict[str, Any]:
    """Resolved annotations of a dataclass or a callable's parameters (``from __future__`` strings included)."""
    target = obj.__init__ if inspect.isclass(obj) and not hasattr(obj, "__dataclass_fields__") else obj
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to the defaults' types
        return {}


def coerce_kwargs(func, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Coerce ``kwargs`` to the annotated parameters of ``func`` (a class: its constructor); an unknown key is
    a one-line error naming the valid ones."""
    params = {n: p for n, p in inspect.signature(func).parameters.items()
              if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = field_hints(func)
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise ConfigError(f"{where}: bad option {key!r} (unknown); valid: {', '.join(params) or 'none'}")
        default = params[key].default
        out[key] = coerce(value, hints.get(key), None if default is inspect.Parameter.empty else default,
                          f"{where}.{key}")
    return out


def read_table_file(path, what: str, shape: str) -> dict[str, dict]:
    """A JSON (``.json``) or YAML file mapping names to tables, e.g. ``{editor: {key: value}}``; anything
    else is a one-line error naming the file and the expected ``shape``."""
    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else __import__("yaml").safe_load(text)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({' '.join(str(exc).split())}); give a JSON/YAML "
                          f"file {shape}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{path}: the {what} must map names to tables: {shape}")
    return {str(k): v for k, v in data.items()}


def parse_editor_args(pairs, config_file=None) -> dict[str, dict[str, str]]:
    """``--editor-config FILE`` ({editor: {key: value}}) under ``--editor-arg EDITOR.KEY=VALUE`` pairs."""
    out: dict[str, dict[str, str]] = {}
    if config_file:
        for ed, kv in read_table_file(config_file, "editor config", "{editor: {key: value}}").items():
            out.setdefault(ed, {}).update(kv)
    for pair in pairs:
        key, eq, value = pair.partition("=")
        editor, dot, field = key.partition(".")
        if not eq or not dot or not editor or not field:
            raise ConfigError(f"--editor-arg {pair!r}: expected EDITOR.KEY=VALUE, e.g. nti_p2p.inner_steps=5")
        out.setdefault(editor, {})[field] = value
    return out
