"""Class-name files: one name a line, line i (0-based, blank lines skipped) = class i.

Read and checked against the model's number of classes for the export (``assets/labels.txt``),
the predictor and the serving client; the Kinetics-400 names ship with the package and are the
default for 400-class models.
"""
from __future__ import annotations

import os

DEFAULT_KINETICS400 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "data", "kinetics400_classes.txt")


class LabelsError(ValueError):
    """A labels file is missing, unreadable or does not match the model's classes."""


def read_labels(path: str) -> list[str]:
    """Read a labels file (UTF-8, one class name a line; blank lines are ignored)."""
    if not path:
        raise LabelsError("no labels file given")
    if not os.path.isfile(path):
        raise LabelsError(f"labels file {path!r}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsError(f"labels file {path!r}: cannot read ({e})") from None
    if not names:
        raise LabelsError(f"labels file {path!r}: no class names in it")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LabelsError(f"labels file {path!r}: duplicate class names {dup[:5]}")
    return names


def resolve_labels(path: str | None, num_classes: int) -> tuple[list[str], str]:
    """Labels for a K-class model: ``path``, or the Kinetics-400 names when K == 400.

    Returns ``(names, path_used)``; raises :class:`LabelsError` when no file is given for K != 400
    or when the file's length differs from K.
    """
    if not path:
        if num_classes == 400 and os.path.isfile(DEFAULT_KINETICS400):
            path = DEFAULT_KINETICS400
        else:
            raise LabelsError(f"the model has {num_classes} classes: pass --labels=FILE with "
                              f"{num_classes} class names, one a line (the Kinetics-400 names are "
                              "only the default for 400-class models)")
    names = read_labels(path)
    if len(names) != num_classes:
        raise LabelsError(f"labels file {path!r} has {len(names)} names, the model has "
                          f"{num_classes} classes")
    return names, path
