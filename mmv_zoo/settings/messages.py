"""Pydantic validation errors as one line per problem, naming the field path (union tags dropped)
and, for unknown keys, the valid keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError


def format_validation_error(err: ValidationError, source: str, root: Any) -> str:
    """One line per problem: `source: field.path: message` (`root`: the model that was validated). A
    message of several lines (a nested block's problems) gives one line each."""
    lines = []
    for loc, msg in problems(err, root):
        for part in msg.splitlines():
            prefix = f"{loc}: " if loc and not part.startswith(loc) else ""
            lines.append(f"{source}: {prefix}{part}")
    return "\n".join(lines)


def problems(err: ValidationError, root: Any) -> list[tuple[str, str]]:
    """(field path, message) per problem; unknown keys list the valid ones, union tags are dropped."""
    out = []
    for e in err.errors():
        loc, parent = _walk(e["loc"], root)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            if parent is not None:
                msg += f" (valid keys: {', '.join(parent.model_fields)})"
        elif e["type"] == "union_tag_invalid":
            ctx = e.get("ctx", {})
            what = ctx.get("discriminator", "kind").strip("'")
            msg = f"unknown {what} {ctx.get('tag')!r}; valid: {ctx.get('expected_tags')}"
        out.append((loc, msg))
    return out


def _members(ann: Any) -> list[Any]:
    """The pydantic models an annotation can hold (through Annotated, list, Optional, unions)."""
    import typing

    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _members(typing.get_args(ann)[0])
    if origin is not None:
        return [m for a in typing.get_args(ann) for m in _members(a)]
    return [ann] if hasattr(ann, "model_fields") else []


def _walk(loc: tuple[Any, ...], root: Any) -> tuple[str, Any]:
    """Clean field path (union tags and validator names dropped) and the model holding the last part."""
    path: list[str] = []
    models: list[Any] = [root]
    parent = None
    for part in loc:
        if isinstance(part, int):
            path.append(f"[{part}]")
            continue
        part = str(part)
        tagged = [m for m in models if _tag_of(m) == part]
        if tagged:  # the tag pydantic inserts after a discriminated-union field
            models = tagged
            continue
        if part.startswith("function-"):
            continue
        holder = next((m for m in models if part in m.model_fields), None)
        path.append(part)
        if holder is None:  # an unknown key: report the model it was given to
            parent = models[0] if len(models) == 1 else None
            models = []
            continue
        parent = holder
        models = _members(holder.model_fields[part].annotation)
    return ".".join(path).replace(".[", "["), parent


def _tag_of(model: Any) -> str | None:
    import typing

    for key in ("kind", "layout", "type"):
        f = model.model_fields.get(key)
        if f is not None and typing.get_origin(f.annotation) is Literal:
            args = typing.get_args(f.annotation)
            return str(args[0]) if len(args) == 1 else None
    return None
