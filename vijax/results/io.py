"""Save a fit result to one ``.npz`` file and load it back.

A result is a pytree of arrays held together by vijax classes (the result NamedTuple,
family dataclasses, an :class:`~vijax.families.layout.EventLayout`) and plain containers.
:func:`save_result` writes every array as an entry of a NumPy ``.npz`` archive and the
structure as a small JSON document (entry ``__structure__``): containers, Python scalars
and strings inline, families by their name in the family registry
(:data:`vijax.families.FAMILIES`; a family must be registered to be saved and loaded),
other vijax classes by module and name.
Nothing is pickled, and loading imports only ``vijax`` modules.

:func:`load_result` rebuilds an equal result: the same classes, tree structure, dtypes
and array values (JAX arrays come back as JAX arrays, NumPy arrays as NumPy arrays).
Load float64 results with ``jax_enable_x64`` on, as when they were fitted.

Example:
    >>> import tempfile, pathlib, jax.numpy as jnp
    >>> from vijax.families import Normal
    >>> from vijax.inference.result import FitResult
    >>> fit = FitResult({"mu": Normal.from_loc_scale(1.0, 2.0)}, jnp.array(-1.5),
    ...                 jnp.zeros(3), jnp.array(3), jnp.array(True), {"estimator": "exact"},
    ...                 {})
    >>> path = save_result(fit, pathlib.Path(tempfile.mkdtemp()) / "fit")
    >>> path.name
    'fit.npz'
    >>> back = load_result(path)
    >>> type(back).__name__, float(back.posterior["mu"].scale), back.diagnostics["estimator"]
    ('FitResult', 2.0, 'exact')
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "vijax-result"
VERSION = 1
STRUCTURE = "__structure__"


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _vijax_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    if module != "vijax" and not module.startswith("vijax."):
        raise ValueError(f"refusing to load class {path!r}: only vijax classes are loaded")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _check_vijax(cls: type, what: str) -> None:
    if not (cls.__module__ == "vijax" or cls.__module__.startswith("vijax.")):
        raise TypeError(f"save_result: cannot save the {what} {cls.__qualname__} from module "
                        f"{cls.__module__}; saved results may hold arrays, Python scalars, "
                        "strings, dicts, lists, tuples and vijax classes")


def _encode(obj: Any, arrays: dict) -> Any:
    from vijax.families.base import ExponentialFamily

    if type(obj) is not str and isinstance(obj, str):  # e.g. a label that is pytree structure
        _check_vijax(type(obj), "str subclass")
        return {"__str__": _class_path(type(obj)), "value": str(obj)}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)) and not isinstance(obj, np.generic):
        return obj
    if isinstance(obj, ExponentialFamily):
        from vijax.families import FAMILIES

        if FAMILIES.get(type(obj).__name__) is not type(obj):
            raise TypeError(f"save_result: the family {type(obj).__qualname__} is not in the "
                            "family registry; register it (vijax.families.register) so that "
                            "load_result can find it by name")
        fields = [f.name for f in dataclasses.fields(obj) if f.name != "natural"]
        return {"__family__": type(obj).__name__, "natural": _encode(obj.natural, arrays),
                "meta": {f: _encode(getattr(obj, f), arrays) for f in fields}}
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        if isinstance(obj, jax.Array) and jnp.issubdtype(obj.dtype, jax.dtypes.prng_key):
            raise TypeError("save_result: typed PRNG keys cannot be saved; store "
                            "jax.random.key_data(key) instead")
        name = f"a{len(arrays)}"
        arrays[name] = np.asarray(obj)
        return {"__array__": name, "jax": isinstance(obj, jax.Array)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        _check_vijax(type(obj), "NamedTuple")
        return {"__namedtuple__": _class_path(type(obj)),
                "fields": {f: _encode(getattr(obj, f), arrays) for f in obj._fields}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _check_vijax(type(obj), "dataclass")
        return {"__dataclass__": _class_path(type(obj)),
                "fields": {f.name: _encode(getattr(obj, f.name), arrays)
                           for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, (str, int)) or isinstance(k, bool)]
        if bad:
            raise TypeError(f"save_result: dict keys must be str or int, got {bad[:3]}")
        return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return {"__list__": [_encode(v, arrays) for v in obj]}
    raise TypeError(f"save_result: cannot save a {type(obj).__qualname__}; saved results "
                    "may hold arrays, Python scalars, strings, dicts, lists, tuples and "
                    "vijax classes")


def _decode(obj: Any, arrays: Any) -> Any:
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        a = arrays[obj["__array__"]]
        return jnp.asarray(a) if obj["jax"] else a
    if "__family__" in obj:
        from vijax.families import FAMILIES

        name = obj["__family__"]
        if name not in FAMILIES:
            raise ValueError(f"load_result: unknown family {name!r} (registered: "
                             f"{sorted(FAMILIES)}); register it before loading "
                             "(vijax.families.register)")
        meta = {k: _decode(v, arrays) for k, v in obj["meta"].items()}
        return FAMILIES[name](natural=_decode(obj["natural"], arrays), **meta)
    if "__namedtuple__" in obj:
        cls = _vijax_class(obj["__namedtuple__"])
        return cls(**{k: _decode(v, arrays) for k, v in obj["fields"].items()})
    if "__str__" in obj:
        return _vijax_class(obj["__str__"])(obj["value"])
    if "__dataclass__" in obj:
        cls = _vijax_class(obj["__dataclass__"])
        return cls(**{k: _decode(v, arrays) for k, v in obj["fields"].items()})
    if "__dict__" in obj:
        return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__list__" in obj:
        return [_decode(v, arrays) for v in obj["__list__"]]
    raise ValueError(f"load_result: unrecognized entry {sorted(obj)[:3]} in the structure")


def _npz_path(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_result(result: Any, path: str | os.PathLike) -> pathlib.Path:
    """Write ``result`` to ``path`` (``.npz`` is appended when missing).

    Args:
        result: a :class:`~vijax.FitResult`, :class:`~vijax.EMResult`,
            :class:`~vijax.LaplaceResult` (or any vijax NamedTuple of arrays, families,
            containers, scalars and strings). Its arrays must be concrete (outside jit).
        path: the file to write.

    Returns:
        the path written.

    Raises:
        TypeError: a value that cannot be saved (a non-vijax class, a typed PRNG key).
    """
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(result, arrays)
    doc = {"format": FORMAT, "version": VERSION, "tree": tree}
    path = _npz_path(path)
    np.savez(path, **{STRUCTURE: np.array(json.dumps(doc))}, **arrays)
    return path


def load_result(path: str | os.PathLike) -> Any:
    """Read a result written by :func:`save_result`.

    Raises:
        ValueError: the file is not a saved vijax result, or names a class this vijax
            does not have.
    """
    path = pathlib.Path(path)
    if not path.exists() and _npz_path(path).exists():
        path = _npz_path(path)
    with np.load(path, allow_pickle=False) as archive:
        if STRUCTURE not in archive.files:
            raise ValueError(f"{path} is not a saved vijax result (no {STRUCTURE} entry); "
                             "write results with vijax.save_result")
        doc = json.loads(str(archive[STRUCTURE]))
        if doc.get("format") != FORMAT or doc.get("version", 0) > VERSION:
            raise ValueError(f"{path}: unsupported format {doc.get('format')!r} version "
                             f"{doc.get('version')!r}; this vijax reads {FORMAT} <= {VERSION}")
        arrays = {k: archive[k] for k in archive.files if k != STRUCTURE}
    return _decode(doc["tree"], arrays)
