"""Task types as plug-ins: one module per type owns everything about it.

A task type (``TaskSpec.type``) is a :class:`TaskType` subclass that says how its rows are read, validated and
encoded, how its labels are collated, which metrics score it and which of them stands for it in ``combined_score``,
how model outputs become predictions in label space (``predict`` and its file), what the pipeline returns and how
the model card describes it. The model, the trainer, the data pipeline, the pipeline and the card look the type up
here (:func:`get_task_type`) and call it; none of them branches on the type's name.

What a *saved model* must know of a type (its head's shape, its loss, its fields) is its entry in
``configuration_multitask.TASK_TYPES``, which travels with the weights for ``trust_remote_code`` loading.

Built-in types: ``classification`` (single-label, single texts or pairs), ``regression`` (one float, single texts
or pairs), ``multilabel`` (any number of labels per text), ``ner`` (one tag per word) and ``extractive_qa`` (an
answer span of a context). A new type is one module
that subclasses :class:`TaskType` (or :class:`~mtl_hf.task_types.sequence.SequenceTaskType` for one output vector per
input) and calls :func:`register_task_type`.
"""

from __future__ import annotations

import importlib

from ..configuration_multitask import TASK_TYPES, TaskSpec, TaskTypeInfo
from .base import TaskType

# Built-in type -> its module, imported on first use (the modules import mtl_hf.data, which imports this package).
_BUILTIN_MODULES = {
    "classification": "classification",
    "regression": "regression",
    "multilabel": "multilabel",
    "ner": "token_classification",
    "extractive_qa": "extractive_qa",
}
_REGISTRY: dict[str, TaskType] = {}


def register_task_type(task_type: type[TaskType], info: TaskTypeInfo | None = None) -> type[TaskType]:
    """Make ``task_type`` (a class) the implementation of the type ``task_type.name``. A type that is not built in
    also passes its ``info`` (head shape, loss, fields): a model with such a task needs mtl_hf (and this
    registration) to load, not only ``trust_remote_code``. Usable as a class decorator for built-in types."""
    if info is not None:
        TASK_TYPES[task_type.name] = info
    if task_type.name not in TASK_TYPES:
        raise ValueError(f"Task type {task_type.name!r} has no TaskTypeInfo; pass info= to register it")
    _REGISTRY[task_type.name] = task_type()
    return task_type


def get_task_type(spec_or_name: TaskSpec | str) -> TaskType:
    """The :class:`TaskType` of a task spec (or a type name). Any object with a ``type`` is a spec: a model loaded with
    ``trust_remote_code=True`` has specs of the copied configuration module's own ``TaskSpec`` class."""
    name = spec_or_name if isinstance(spec_or_name, str) else spec_or_name.type
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{_BUILTIN_MODULES[name]}")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task type {name!r}; known types: {', '.join(TASK_TYPES)}")
    return _REGISTRY[name]


__all__ = ["TaskType", "get_task_type", "register_task_type"]
