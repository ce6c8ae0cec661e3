"""The automation package's error tree, and how errors point at the key that caused them.

* :class:`DefinitionError`: a workflow, filter or template definition is invalid. Raised at load
  time only; ``problems`` lists every problem found (loaders collect them all), each naming the file
  and the key path, e.g. ``config/workflows/welcome.yaml: steps[2].wait.duration: '1 dai' is not a
  duration (e.g. 30m, 4h, 1d)``.
* :class:`RenderError`: a message could not be rendered (undefined variable, sandbox violation, a
  line break in the subject, ...). ``reason`` is a one-line explanation the runtime records when it
  skips the send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.errors import HeraldError

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+\Z")


class AutomationError(HeraldError):
    """Base of every error the automation package raises on purpose."""


class DefinitionError(AutomationError, ValueError):
    """One or more definitions are invalid; ``problems`` holds one message per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems))
        super().__init__("\n".join(self.problems))

    def prefixed(self, prefix: str) -> DefinitionError:
        """The same problems, each prefixed with ``prefix: `` (e.g. the file name)."""
        return DefinitionError(f"{prefix}: {problem}" for problem in self.problems)


class RenderError(AutomationError):
    """A message could not be rendered; ``reason`` says why (one line, for the skip record)."""

    def __init__(self, template: str, reason: str) -> None:
        self.template = template
        self.reason = " ".join(reason.split())[:500]
        super().__init__(f"template {template}: {self.reason}")


def key_path(base: str, key: str | int) -> str:
    """Join a key path the way messages print it: ``steps[2].wait.duration``; keys that are not
    plain words (e.g. a dotted property path) are quoted: ``where["items.0.sku"].gt``."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if not _PLAIN_KEY.match(key):
        return f'{base}["{key}"]' if base else f'["{key}"]'
    return f"{base}.{key}" if base else key
