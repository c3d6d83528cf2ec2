"""Read small YAML files (``hokusai.yaml``, ``metrics.yaml``) with bounds on size and alias expansion.

YAML anchors and aliases let a 9-line file describe billions of nodes ("billion laughs"): PyYAML's
composer shares aliased nodes, but anything that walks the tree (line maps, key checks, JSON Schema)
visits each alias once per reference. The file is therefore composed once, its *expanded* size and
depth are counted on the shared node graph (linear in the file, whatever it expands to), and only
then converted to Python objects. See https://en.wikipedia.org/wiki/Billion_laughs_attack.

Pure logic: the standard library and PyYAML only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_YAML_BYTES = 1024 * 1024  # both files are a few hundred bytes in practice
MAX_YAML_NODES = 100_000  # counted with every alias expanded where it is referenced
MAX_YAML_DEPTH = 64  # hokusai.yaml is 3 levels deep, metrics.yaml 2

TOO_LARGE = "larger than {limit} KiB; these files are small settings files"
TOO_MANY_NODES = "its anchors and aliases expand to more than {limit} values (a 'billion laughs' file?)"
TOO_DEEP = "nested more than {limit} levels deep"
RECURSIVE = "an alias refers to the node that contains it (a recursive structure)"
NOT_OF_ITS_TAG = "a value is not of the type its explicit tag (!!timestamp, !!bool, ...) names"


class YamlRefused(ValueError):
    """The file is past a bound; ``str()`` is the reason, for the caller's message."""


class YamlInvalid(YamlRefused):
    """The text is not YAML (or holds a value Python cannot build); ``str()`` is the parser's detail."""


def read_bounded_text(path: Path, *, limit: int = MAX_YAML_BYTES) -> str:
    """The file's text, refusing files past ``limit`` bytes without reading them whole.

    Raises ``OSError`` / ``UnicodeDecodeError`` as ``Path.read_text`` does, and ``YamlRefused``.
    """
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise YamlRefused(TOO_LARGE.format(limit=limit // 1024))
    return data.decode("utf-8")


def _bounded_loader(text: str) -> Any:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """Stops composing past the depth bound. PyYAML's scanner does work proportional to the
        nesting for every token, so 500,000 '[' would take hours: stop before it gets there."""

        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH + 1:  # the root is one level more than its children
                    raise YamlRefused(TOO_DEEP.format(limit=MAX_YAML_DEPTH))
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader(text)


def compose_bounded(text: str) -> Any:
    """The YAML node graph of ``text`` (``None`` when empty), checked against the bounds."""
    import yaml

    loader = None
    try:
        loader = _bounded_loader(text)  # its reader already refuses control characters
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise YamlInvalid(_one_line(exc)) from exc
    except RecursionError as exc:  # PyYAML composes nested collections recursively
        raise YamlRefused(TOO_DEEP.format(limit=MAX_YAML_DEPTH)) from exc
    finally:
        if loader is not None:
            loader.dispose()
    if root is not None:
        _check_expansion(root)
    return root


def construct(root: Any) -> Any:
    """Python values of a node graph that passed ``compose_bounded``."""
    import yaml

    if root is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise YamlInvalid(_one_line(exc)) from exc
    except (ValueError, OverflowError) as exc:  # e.g. an integer past Python's 4300-digit limit
        raise YamlInvalid(_one_line(exc)) from exc
    except (AttributeError, KeyError) as exc:
        # PyYAML's constructors for an explicit !!timestamp or !!bool fail this way on a value of
        # another form (a pattern that did not match, a word missing from its table)
        raise YamlInvalid(NOT_OF_ITS_TAG) from exc
    finally:
        loader.dispose()


def load_bounded(text: str) -> Any:
    """``yaml.safe_load`` with the bounds: compose, check, then construct."""
    return construct(compose_bounded(text))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Any) -> None:
    """Count nodes and depth as if every alias were copied, without copying: each shared node's
    (size, height) is computed once and reused, so the work is linear in the composed graph."""
    measured: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def measure(node: Any) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        if key in active:
            raise YamlRefused(RECURSIVE)
        active.add(key)
        size, height = 1, 0
        for child in _children(node):
            child_size, child_height = measure(child)
            size += child_size
            height = max(height, child_height + 1)
            if size > MAX_YAML_NODES:
                raise YamlRefused(TOO_MANY_NODES.format(limit=MAX_YAML_NODES))
            if height > MAX_YAML_DEPTH:
                raise YamlRefused(TOO_DEEP.format(limit=MAX_YAML_DEPTH))
        active.discard(key)
        measured[key] = (size, height)
        return size, height

    try:
        measure(root)
    except RecursionError as exc:  # cannot happen below the depth bound; kept as a guard
        raise YamlRefused(TOO_DEEP.format(limit=MAX_YAML_DEPTH)) from exc
