"""What every TOML description file shares (GPUs here, model presets in ``attnsim.models``):
reading the file, starting from a built-in entry with ``base = "NAME"`` (or another file,
``base = "other.toml"``, relative to the file that names it), and rejecting unknown fields
with the valid ones listed. Field types are checked by each file's owner."""
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
    if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
        # a FIFO or a device would block the read or never end it
        raise error_cls(f"{what} file {path!r} is not a regular file; give a .toml file")
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


def resolve_base(base: str, including: str | None = None) -> str:
    """``base`` as the loader should look it up: a relative ``.toml`` path is taken from the
    folder of the file that names it (``including``), so a file and its base can move
    together and be read from any working directory; names and absolute paths as given."""
    if including is None or not base.lower().endswith(".toml") or os.path.isabs(base):
        return base
    return os.path.join(os.path.dirname(including), base)


def _including_file() -> str | None:
    """The file whose ``base`` is being looked up: the innermost one ``base_chain`` guards
    (None for a mapping that did not come from a file)."""
    stack = getattr(_chain, "files", None)
    return stack[-1][1] if stack else None


def files_read(path: str) -> list[str]:
    """``path`` and every file its ``base`` chain reads, in order; stops quietly where the
    chain ends, breaks or cycles (loading the file reports those problems)."""
    files, seen = [], set()
    while path.lower().endswith(".toml") and len(files) <= MAX_BASE_DEPTH:
        key = os.path.realpath(path)
        if key in seen:
            break
        seen.add(key)
        files.append(path)
        try:
            with open(path, "rb") as fh:
                base = tomllib.load(fh).get("base")
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            break
        if not isinstance(base, str):
            break
        path = resolve_base(base, path)
    return files


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
        return lookup(resolve_base(base, _including_file())), data
    except ValueError as exc:
        if getattr(exc, "names_whole_chain", False):
            raise
        raise error_cls(f"{origin}: base: {exc}") from None
