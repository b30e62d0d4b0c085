"""``transformers.pipeline("multitask", model=...)``: a multi-task model behind transformers' pipeline API.

``import mtl_hf`` registers :class:`MultiTaskTextPipeline` as the task ``"multitask"`` in transformers'
``PIPELINE_REGISTRY``, with ``AutoModel`` as its model class (``import mtl_hf`` also registers ``MultiTaskConfig``/
``MultiTaskModel`` with ``AutoConfig``/``AutoModel``, so a saved multi-task model folder loads as a
:class:`~mtl_hf.MultiTaskModel`)::

    import mtl_hf, transformers
    pipe = transformers.pipeline("multitask", model="out/", device="cpu")
    pipe("Peter went to London.")                        # {"topic": {...}, "ner": [...]}
    pipe(["a text", "another"], batch_size=2, tasks=["topic"])

Inputs, options and results are exactly those of :class:`mtl_hf.MultiTaskPipeline` (texts, ``{"text",
"text_pair"}`` pairs, ``{"question", "context"}`` questions; ``tasks=``; the task types' options such as
``all_scores=True``; per input ``{task_name: result}``; long texts planned into windows). The pipeline holds one
``MultiTaskPipeline`` built on the same model and tokenizer, which does the encoding, the encoder passes and the
reading of results.

What transformers handles and what mtl_hf handles
-------------------------------------------------
* transformers: loading the model (``AutoModel``) and the tokenizer from ``model=``; placing the model on
  ``device=`` / ``device_map=`` and ``dtype=``; ``torch.no_grad`` around the forward step; iterating over a list,
  a generator or a ``datasets.Dataset`` of inputs (``num_workers``), grouping the inputs into groups of
  ``batch_size`` (default 1) and un-grouping the results, one per input, in order.
* mtl_hf: each group of ``batch_size`` *inputs* goes to ONE call of the inner ``MultiTaskPipeline``, which splits
  the texts into words, plans windows for long texts and runs the group's windows through the encoder
  ``batch_size`` windows per ``forward_tasks`` pass (8 when the pipeline was built without ``batch_size``). No
  tensors are padded or collated by transformers (``preprocess`` passes the raw input through; transformers'
  collate keeps non-tensor values as lists).

Each input gets the requested tasks that read its kind (texts, pairs or questions), as with ``MultiTaskPipeline``;
the check that every input kind has a requested task, that every explicitly requested task has an input of its
kind, and that every option belongs to a requested task, is made over the whole call (a list is checked as a
whole before transformers splits it into groups).

Extra keyword arguments of ``pipeline(...)``: ``max_length`` and ``stride`` (as for ``MultiTaskPipeline``),
``tasks`` and the task types' options (defaults for every call).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline import MultiTaskPipeline, _input_kind
from .task_types import get_task_type

__all__ = ["MultiTaskTextPipeline"]

TASK = "multitask"
_DEFAULT_WINDOW_BATCH = 8


class MultiTaskTextPipeline(Pipeline):
    """A ``transformers.Pipeline`` over a :class:`~mtl_hf.MultiTaskModel`; see the module docstring."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, model: Any, tokenizer: Any = None, max_length: int | None = None, stride: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, tokenizer=tokenizer, **kwargs)
        if tokenizer is None:
            raise ValueError("The multitask pipeline needs the model's tokenizer")
        if not hasattr(self.model, "forward_tasks"):
            raise TypeError(f"The multitask pipeline needs a mtl_hf MultiTaskModel, got {type(self.model).__name__} "
                            "(was `mtl_hf` imported before the model was loaded?)")
        # The inner pipeline leaves the model where transformers put it (device=None) and reads its device.
        self._inner = MultiTaskPipeline(
            self.model, self.tokenizer, device=None, batch_size=self._batch_size or _DEFAULT_WINDOW_BATCH,
            max_length=max_length, stride=stride,
        )

    # ---- parameters -----------------------------------------------------------------------------------------------

    def _sanitize_parameters(self, tasks: Any = None, **options: Any):
        forward_params: dict[str, Any] = dict(options)
        if tasks is not None:
            forward_params["tasks"] = tasks
        return {}, forward_params, {}

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Predict for one input (-> ``{task: result}``) or a list (-> one such dict per input)."""
        if hasattr(self, "_inner"):
            _, forward_params, _ = self._sanitize_parameters(
                **{k: v for k, v in kwargs.items() if k not in ("batch_size", "num_workers")})
            forward_params = {**self._forward_params, **forward_params}
            self._check(inputs, forward_params.pop("tasks", None), forward_params)
        return super().__call__(inputs, *args, **kwargs)

    def _check(self, inputs: Any, tasks: Any, options: dict[str, Any]) -> None:
        """``MultiTaskPipeline``'s checks of a whole call, made here before transformers splits a list into groups
        (generators and datasets are checked group by group by the inner pipeline)."""
        if isinstance(inputs, (str, dict, list, tuple)):
            self._inner.check_request([inputs] if isinstance(inputs, (str, dict)) else list(inputs), tasks, options)

    # ---- the three steps ------------------------------------------------------------------------------------------

    def preprocess(self, input_: Any, **preprocess_parameters: Any) -> dict[str, Any]:
        # The raw input travels on; a group of them is collated by transformers into {"inputs": [...]}.
        return {"inputs": input_}

    def _forward(self, model_inputs: dict[str, Any], tasks: Any = None, **options: Any) -> dict[str, Any]:
        items = model_inputs["inputs"]
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        specs = self._inner._resolve_tasks(tasks)
        # A group may lack some input kind of the whole call: ask only for the tasks that read the group's kinds
        # (and only their options), so the inner pipeline's whole-call checks hold for the group.
        kinds = {_input_kind(item) for item in items}
        served = [spec for spec in specs if get_task_type(spec).pipeline_input(spec) in kinds] or specs
        allowed = {option for spec in served for option in get_task_type(spec).pipeline_options}
        results = self._inner(
            items, tasks=[spec.name for spec in served], **{k: v for k, v in options.items() if k in allowed}
        )
        return {"results": results}

    def postprocess(self, model_outputs: dict[str, Any], **postprocess_parameters: Any) -> Any:
        results = model_outputs["results"]
        # batch_size 1: the list of the single input's result; larger groups are un-grouped by transformers, which
        # hands over one input's result.
        return results[0] if isinstance(results, list) else results


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=MultiTaskTextPipeline, pt_model=AutoModel, type="text")
