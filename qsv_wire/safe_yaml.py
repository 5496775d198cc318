"""YAML for QSV's own files (board configs, fleet lists): the safe loader without anchors and aliases, size-bounded.

Nothing QSV reads needs aliases, and they are how a few hundred bytes expand into billions of nodes (the "billion
laughs" alias bomb: a 629-byte document kept the config check busy for over 400 s). An anchor or alias is rejected
at the first one, with its line and column, before anything is expanded; documents over ``MAX_BYTES`` are rejected
before parsing.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a board config is ~2 KB; a fleet list of 10,000 devices ~200 KB


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - PyYAML's node types
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&, *) are not allowed here",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _check_size(text: str) -> None:
    if len(text) > MAX_BYTES:
        raise yaml.YAMLError(f"document of {len(text)} characters; at most {MAX_BYTES} are read")


def compose(text: str) -> yaml.Node | None:
    """The node tree of ``text`` (line/column marks for error messages); yaml.YAMLError on aliases or size."""
    _check_size(text)
    return yaml.compose(text, Loader=_NoAliasLoader)


def load(text: str) -> Any:  # noqa: ANN401 - whatever the document holds
    """Plain Python data of ``text`` (safe types only); yaml.YAMLError on aliases or size."""
    _check_size(text)
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - _NoAliasLoader is a SafeLoader
