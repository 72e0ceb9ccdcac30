"""Where Shoal's definitions live, checked over every module of the package.

- The exception tree: every error Shoal raises on purpose is defined in shoal.core.errors, derives from
  ShoalError and is drawn in that module's docstring. Another module keeps only private exceptions (named
  with a leading underscore), the control-flow signals caught where they are raised.
- Names with one meaning: no two modules define a public class of one name, so a reader who meets
  ``Completed`` or ``Cancel`` knows which thing it is without looking at the import.
"""

from __future__ import annotations

import importlib
import pkgutil

import shoal
from shoal.core import errors
from shoal.core.errors import ShoalError


def _classes_defined() -> list[tuple[str, str, type]]:
    """(module, name, class) of every class a module of Shoal defines."""
    found = []
    for info in pkgutil.walk_packages(shoal.__path__, "shoal."):
        if info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, type) and value.__module__ == info.name:
                found.append((info.name, name, value))
    return found


def _exceptions_defined() -> list[tuple[str, str, type]]:
    return [(module, name, cls) for module, name, cls in _classes_defined() if issubclass(cls, BaseException)]


def test_public_exceptions_are_defined_only_in_core_errors() -> None:
    # shoal.testing's test doubles (a hostile peer's client, say) may have errors of their own: they are
    # not errors of Shoal.
    stray = [
        f"{module}.{name}"
        for module, name, _ in _exceptions_defined()
        if module != "shoal.core.errors" and not module.startswith("shoal.testing.") and not name.startswith("_")
    ]
    assert stray == []


def test_every_error_is_a_shoal_error_and_drawn_in_the_tree() -> None:
    defined = [(name, cls) for module, name, cls in _exceptions_defined() if module == "shoal.core.errors"]
    assert len(defined) > 20
    tree = errors.__doc__ or ""
    for name, cls in defined:
        assert issubclass(cls, ShoalError), name
        if cls is ShoalError:
            continue
        assert f"── {name} " in tree, f"{name} is not drawn in shoal.core.errors' docstring"
        # Drawn under its parent: the parent's line comes before the class's.
        parent = cls.__mro__[1].__name__
        assert tree.index(f" {parent} ") < tree.index(f"── {name} "), name


def test_no_two_modules_define_a_public_class_of_one_name() -> None:
    defined: dict[str, list[str]] = {}
    for module, name, _ in _classes_defined():
        if not name.startswith("_"):
            defined.setdefault(name, []).append(module)
    assert {name: modules for name, modules in defined.items() if len(modules) > 1} == {}
