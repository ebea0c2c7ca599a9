"""Markdown templates of the report's sections, with equations, filled with numbers.

A template is a ``.md`` file in this package with ``{{name}}`` placeholders (double braces,
because the equations use ``$`` and single braces). :func:`render` fills every placeholder and
refuses a template or a set of values that do not match, so a section never ships with a
hole or silently drops a number it was given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources

PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def template(name: str) -> str:
    """The text of template ``name`` (``templates/<name>.md``)."""
    path = resources.files(__package__) / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"no report template {name!r} ({path})")
    return path.read_text()


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def render(name: str, values: Mapping[str, object]) -> str:
    """Template ``name`` with each ``{{key}}`` replaced by ``str(values[key])``."""
    text = template(name)
    wanted = placeholders(text)
    missing, unused = wanted - set(values), set(values) - wanted
    if missing or unused:
        raise ValueError(
            f"template {name!r}: no value for {sorted(missing)}; values without a "
            f"placeholder: {sorted(unused)}"
        )
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)
