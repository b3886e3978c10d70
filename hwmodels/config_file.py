"""What every TOML description file shares (GPUs here, model presets in ``attnsim.models``):
reading the file, starting from a built-in entry with ``base = "NAME"``, and rejecting
unknown fields with the valid ones listed. Field types are checked by each file's owner."""
from __future__ import annotations

import contextlib
import os
import threading
import tomllib

MAX_BASE_DEPTH = 8          # files chained by ``base``: enough for any real hierarchy

_chain = threading.local()  # the files being read, outermost first (one list per thread)


def read_toml(path: str, what: str, error_cls: type[Exception]) -> dict:
    """The file as a dict; ``error_cls`` naming the file when it is missing, unreadable, not
    text or not TOML."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise error_cls(f"{what} file {path!r} does not exist") from None
    except IsADirectoryError:
        raise error_cls(f"{what} file {path!r} is a directory; give a .toml file") from None
    except PermissionError:
        raise error_cls(f"{what} file {path!r} is not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise error_cls(f"{what} file {path!r} is not a text file (not UTF-8); "
                        f"give a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error_cls(f"{what} file {path!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise error_cls(f"{what} file {path!r} cannot be read: {exc.strerror or exc}") from None


@contextlib.contextmanager
def base_chain(path: str, what: str, error_cls: type[Exception]):
    """Guard one file's reading against ``base`` cycles (a file naming itself, or two files
    naming each other) and against chains deeper than ``MAX_BASE_DEPTH``."""
    stack = getattr(_chain, "files", None)
    if stack is None:
        stack = _chain.files = []
    key = os.path.realpath(path)
    names = [p for _, p in stack] + [path]
    if any(k == key for k, _ in stack):
        raise _whole(error_cls, f"{what} file {stack[0][1]!r}: 'base' makes a cycle "
                        f"({' -> '.join(names)}); base must end at a built-in name")
    if len(stack) >= MAX_BASE_DEPTH:
        raise _whole(error_cls, f"{what} file {stack[0][1]!r}: 'base' chains more than "
                        f"{MAX_BASE_DEPTH} files ({' -> '.join(names)})")
    stack.append((key, path))
    try:
        yield
    finally:
        stack.pop()


def _whole(error_cls, message: str) -> Exception:
    """An error that already names the whole chain: the files it passes through re-raise it
    as it is instead of prefixing their own names."""
    err = error_cls(message)
    err.names_whole_chain = True
    return err


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
        if getattr(exc, "names_whole_chain", False):
            raise
        raise error_cls(f"{origin}: base: {exc}") from None
