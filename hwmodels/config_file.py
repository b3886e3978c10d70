"""What every TOML description file shares (GPUs here, model presets in ``attnsim.models``):
reading the file, starting from a built-in entry with ``base = "NAME"``, and rejecting
unknown fields with the valid ones listed. Field types are checked by each file's owner."""
from __future__ import annotations

import tomllib


def read_toml(path: str, what: str, error_cls: type[Exception]) -> dict:
    """The file as a dict; ``error_cls`` naming the file when it is missing or not TOML."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error_cls(f"{what} file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise error_cls(f"{what} file {path!r} is not valid TOML: {exc}") from None


def start_from_base(data: dict, fields, lookup, what: str, origin: str,
                    error_cls: type[Exception]) -> tuple[dict, dict]:
    """(values of the ``base`` entry or {}, the file's own fields), after rejecting fields
    that are not in ``fields``. ``lookup(name) -> dict`` raises ValueError for unknown names."""
    data = dict(data)
    base = data.pop("base", None)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise error_cls(f"{origin}: unknown field(s) {', '.join(unknown)}; "
                        f"valid fields: base, {', '.join(fields)}")
    if base is None:
        return {}, data
    if not isinstance(base, str):
        raise error_cls(f"{origin}: 'base' must be a {what} name string")
    try:
        return lookup(base), data
    except ValueError as exc:
        raise error_cls(f"{origin}: base: {exc}") from None
