"""Values valid under a JSON Schema (pydantic v2's output), for the loopback server's
JSON mode: deterministic, and varied by the prompt so different prompts differ.

Standard library only, like the rest of `kura_magic.testing`.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TEXT_FIELD = re.compile(r"summary|request|description|text|content|answer|reason|explanation", re.I)
_FORMATS = {
    "date-time": "2024-01-01T12:00:00Z", "date": "2024-01-01", "time": "12:00:00Z",
    "duration": "PT1M", "email": "user@example.com", "uri": "https://example.com/",
    "url": "https://example.com/", "hostname": "example.com", "ipv4": "127.0.0.1", "ipv6": "::1",
}
_MAX_DEPTH = 6
_Bounds = tuple[tuple[str, Callable[[Any], int]], ...]  # (keyword, its integer form); floats stay raw
_LOW_BOUNDS: _Bounds = (
    ("minimum", math.ceil), ("exclusiveMinimum", lambda v: math.floor(v) + 1))
_HIGH_BOUNDS: _Bounds = (
    ("maximum", math.floor), ("exclusiveMaximum", lambda v: math.ceil(v) - 1))


@dataclass(frozen=True)
class _SchemaFaker:
    """Builds a value valid under a (pydantic v2) JSON schema, varied by prompt."""

    root: dict[str, Any]
    text: str
    digest: str

    def value(self, schema: Any, name: str = "item", depth: int = 0) -> Any:
        """A value valid under ``schema`` for the field ``name`` at ``depth``."""
        if depth > 4 * _MAX_DEPTH:
            raise ValueError("the response schema has no finite value (a required recursive field?)")
        schema = self._resolve(schema if isinstance(schema, dict) else {})
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._pick(schema["enum"], name)
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            return self.value(self._option(options, depth), name, depth)
        if schema.get("allOf"):
            return self.value(self._merged(schema), name, depth)
        kind = self._kind(schema, depth)
        if kind is None:
            return schema["default"] if "default" in schema else self._string(schema, name, depth)
        return _GENERATORS.get(kind, _SchemaFaker._string)(self, schema, name, depth)

    def _merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` with its ``allOf`` parts folded in, later keys winning."""
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = {**merged, **self._resolve(part)}
        return merged

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        for _ in range(64):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target: Any = self.root
            for part in ref.lstrip("#").split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def _option(self, options: list[Any], depth: int) -> Any:
        real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        if not real or (depth >= _MAX_DEPTH and len(real) < len(options)):
            return {"type": "null"}
        return real[0]

    def _kind(self, schema: dict[str, Any], depth: int) -> str | None:
        kind = schema.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            kind = "null" if not real or (depth >= _MAX_DEPTH and "null" in kind) else real[0]
        if kind is None and "properties" in schema:
            return "object"
        if kind is None and ("items" in schema or "prefixItems" in schema):
            return "array"
        return kind

    def _seed(self, name: str) -> int:
        return int(hashlib.sha256(f"{self.digest}:{name}".encode()).hexdigest()[:8], 16)

    def _pick(self, options: list[Any], name: str) -> Any:
        return options[self._seed(name) % len(options)]

    def _string(self, schema: dict[str, Any], name: str, depth: int) -> str:
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return _FORMATS[fmt]
        if fmt == "uuid":
            return str(uuid.UUID(self.digest[:32]))
        text = self.text if _TEXT_FIELD.search(name) else f"{name} {self.digest[:6]}"
        text = text.ljust(schema.get("minLength", 0), "x")
        return text[: schema["maxLength"]] if "maxLength" in schema else text

    def _integer(self, schema: dict[str, Any], name: str, depth: int) -> int:
        lo, hi = _bounds(schema, integer=True)
        seed = self._seed(name)
        if lo is not None and hi is not None:
            return lo + seed % (hi - lo + 1) if hi >= lo else lo
        if lo is not None or hi is not None:
            return lo + seed % 10 if lo is not None else hi - seed % 10
        return seed % 10

    def _number(self, schema: dict[str, Any], name: str, depth: int) -> float:
        lo, hi = _bounds(schema, integer=False)
        frac = (self._seed(name) % 999 + 1) / 1000  # strictly inside (0, 1): exclusive bounds hold
        if lo is not None and hi is not None:
            return lo + (hi - lo) * frac
        if lo is not None or hi is not None:
            return lo + 10 * frac if lo is not None else hi - 10 * frac
        return round(10 * frac, 3)

    def _array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        if "prefixItems" in schema:
            return [self.value(s, f"{name}_{i}", depth + 1) for i, s in enumerate(schema["prefixItems"])]
        count = schema.get("minItems", 0) if depth >= _MAX_DEPTH else max(schema.get("minItems", 0), 1)
        count = min(count, schema.get("maxItems", count))
        names = [name] + [f"{name}_{i}" for i in range(1, count)]
        return [self.value(schema.get("items", {}), n, depth + 1) for n in names[:count]]

    def _object(self, schema: dict[str, Any], name: str, depth: int) -> dict[str, Any]:
        props, required = schema.get("properties", {}), set(schema.get("required", []))
        keep = [k for k in props if depth < _MAX_DEPTH or k in required]
        return {k: self.value(props[k], k, depth + 1) for k in keep}


_GENERATORS: dict[str, Callable[..., Any]] = {
    "string": _SchemaFaker._string, "integer": _SchemaFaker._integer,
    "number": _SchemaFaker._number, "array": _SchemaFaker._array, "object": _SchemaFaker._object,
    "boolean": lambda self, schema, name, depth: self._seed(name) % 2 == 0,
    "null": lambda self, schema, name, depth: None,
}


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[Any, Any]:
    """The tightest (low, high) of minimum/maximum and their exclusive forms."""
    lows, highs = _limits(schema, _LOW_BOUNDS, integer), _limits(schema, _HIGH_BOUNDS, integer)
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _limits(schema: dict[str, Any], keywords: _Bounds, integer: bool) -> list[Any]:
    return [as_int(schema[key]) if integer else schema[key] for key, as_int in keywords if key in schema]


def fake_value(schema: dict[str, Any], *, text: str, digest: str) -> Any:
    """A value valid under `schema`; text fields carry `text`, others vary with `digest`.

    Example:
        >>> fake_value({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3,
        ...             "maximum": 3}}, "required": ["n"]}, text="hi", digest="00")
        {'n': 3}
    """
    return _SchemaFaker(schema, text, digest).value(schema)
