"""Imports a dependency that is not installed, like a plugin whose requirements broke."""

import uad_dependency_that_does_not_exist  # noqa: F401

from uad_plugins import ModelSpec, hookimpl


@hookimpl
def uad_register_models():
    return ModelSpec(name="broken_model", target="uad_broken.model:Nothing")
