"""One shared encoder, one head per task, routed by task name.

This module is copied next to the weights by ``save_pretrained`` so that ``trust_remote_code=True`` can load the
model where ``mtl_hf`` is not installed: it must import nothing but torch, transformers and
``configuration_multitask`` (relatively).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_multitask import MultiTaskConfig, TaskSpec


@dataclass
class MultiTaskModelOutput(ModelOutput):
    """Output of one task's head: ``logits`` are ``(batch, num_labels)`` for a sequence head (classification,
    regression with ``num_labels`` 1, multilabel), ``(batch, seq_len, num_labels)`` for a token head (NER) and
    ``(batch, seq_len, 2)`` start and end logits for a span head (extractive QA; padding positions at the lowest
    value);
    ``loss`` is the task type's loss (see ``LOSSES``), a mean over the batch's items, when labels are given."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of the token vectors that the attention mask keeps (padding excluded)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def cross_entropy_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of a head's logits against class ids, skipping -100 (NER positions that carry no word label).

    Works for both head shapes: ``(batch, C)`` with ``(batch,)`` labels and ``(batch, T, C)`` with ``(batch, T)``.
    A batch without any labelled position gives a zero loss (not NaN) that keeps the graph connected.
    ``label_smoothing`` is Trainer's ``label_smoothing_factor`` (the same smoothing as its ``LabelSmoother``).
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1).to(flat_logits.device)
    if not bool((flat_labels != -100).any()):
        return flat_logits.sum() * 0.0
    return nn.functional.cross_entropy(
        flat_logits, flat_labels, ignore_index=-100, reduction=reduction, label_smoothing=label_smoothing
    )


def mse_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Squared error of a one-output head ``(batch, 1)`` against float targets ``(batch,)``, as transformers'
    regression heads compute it (``problem_type="regression"``). Label smoothing has no meaning here (the trainer
    warns when it is set and a task has this loss)."""
    return nn.functional.mse_loss(logits.reshape(-1).float(), labels.reshape(-1).to(logits.device).float(),
                                  reduction=reduction)


def bce_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Binary cross-entropy with logits of ``(batch, L)`` against multi-hot ``(batch, L)`` targets, one independent
    sigmoid per label (``problem_type="multi_label_classification"``); the mean is over all batch x label entries.
    ``label_smoothing`` ε moves every target ε/2 towards the other side (1 -> 1 - ε/2, 0 -> ε/2), as cross-entropy's
    smoothing spreads ε over its classes, here two per label."""
    targets = labels.to(logits.device).float()
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / 2
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), targets, reduction=reduction)


def span_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean", label_smoothing: float = 0.0
) -> torch.Tensor:
    """Extractive QA: ``(batch, seq_len, 2)`` start and end logits against ``(batch, 2)`` start and end token
    positions, as transformers' ``*ForQuestionAnswering`` models compute it: the mean of the start and the end
    cross-entropy, positions outside the sequence ignored (clamped to ``seq_len``, the ignore index); ``"sum"`` adds
    that mean up over the examples. ``label_smoothing`` ε spreads ε over the input's own positions: padding, which
    :class:`SpanHead` masks to the lowest value, is no candidate."""
    kept = logits[..., 0] > torch.finfo(logits.dtype).min  # not padding
    start_logits, end_logits = logits.float().unbind(dim=-1)
    ignored = start_logits.shape[1]
    positions = labels.to(logits.device).long().clamp(0, ignored)

    def cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses = nn.functional.cross_entropy(scores, targets, ignore_index=ignored, reduction="none")
        if label_smoothing:
            log_probabilities = scores.log_softmax(dim=-1).masked_fill(~kept, 0.0)
            uniform = -log_probabilities.sum(dim=-1) / kept.sum(dim=-1).clamp(min=1)
            losses = (1.0 - label_smoothing) * losses + label_smoothing * uniform * (targets != ignored)
        if reduction == "sum":
            return losses.sum()
        return losses.sum() / (targets != ignored).sum().clamp(min=1)

    return (cross_entropy(start_logits, positions[:, 0]) + cross_entropy(end_logits, positions[:, 1])) / 2


def _examples(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor(labels.shape[0], device=labels.device)


def _labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    return (labels != -100).sum()


def _entries(labels: torch.Tensor) -> torch.Tensor:
    return torch.tensor(labels.numel(), device=labels.device)


@dataclass(frozen=True)
class Loss:
    """A task type's loss, and what its mean is over: ``count(labels)`` is the number of items that a ``"sum"``
    reduction adds up (labelled positions for cross-entropy, examples for MSE, example x label entries for BCE), so
    that ``loss(..., "sum") / count(labels) == loss(..., "mean")``; the trainer normalises gradient accumulation
    windows with it. (For ``span`` this holds while every position is inside the sequence, as mtl_hf's encoding
    always makes them.)"""

    fn: Any
    count: Any


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(cross_entropy_loss, _labelled_positions),
    "mse": Loss(mse_loss, _entries),
    "bce": Loss(bce_loss, _entries),
    "span": Loss(span_loss, _examples),
}


def task_loss(spec: TaskSpec) -> Loss:
    """The loss of ``spec``'s task type (``TASK_TYPES[spec.type].loss``)."""
    return LOSSES[spec.info.loss]


class ClassificationHead(nn.Module):
    """Pooled sequence vector (first token or masked mean) -> Dropout -> Linear."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, attention_mask)
        return self.classifier(self.dropout(pooled))


@dataclass(frozen=True)
class NativeClassifier:
    """An architecture's own sequence classifier, which every family computes the same way in eval mode: first token
    -> dense layer -> activation -> output layer, with dropout before the output layer (and before the dense layer
    where ``input_dropout`` names it). What differs is written here: the activation (a name in ``ACTIVATIONS``, or
    the config attribute holding one), the config attributes that give each dropout rate (the first one set wins) and the
    dense layer's width, and where the dense and output layers live in the architecture's
    ``*ForSequenceClassification`` (``mtl_hf.export`` writes the weights there). ``from_pooler``: the dense layer is
    the base model's pooler (BERT), so a new head starts from the encoder's pretrained pooler, as
    ``BertForSequenceClassification`` does."""

    activation: str
    dropout: tuple[str, ...]
    dense_weights: str
    output_weights: str
    input_dropout: tuple[str, ...] = ()
    activation_from_config: bool = False
    dense_size: str = "hidden_size"
    from_pooler: bool = False

    def activation_module(self, config: PreTrainedConfig, task: str) -> nn.Module:
        name = getattr(config, self.activation) if self.activation_from_config else self.activation
        if name not in ACTIVATIONS:
            raise ValueError(
                f"Task {task!r}: field 'classifier' is 'native', but the encoder's {self.activation} is {name!r}, "
                f"which mtl_hf's native classifier does not implement ({', '.join(ACTIVATIONS)}); use classifier: "
                "linear"
            )
        return ACTIVATIONS[name]()


# The activations of the native classifiers, as transformers' `ACT2FN` computes them ("gelu" is the exact, erf GELU),
# from torch: transformers' activations module is not public API, which this file may only use.
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


_ROBERTA_STYLE_DROPOUT = ("classifier_dropout", "hidden_dropout_prob")
# Keyed by the encoder's `model_type`; each entry was checked against transformers' own class (tests/test_export.py
# exports every one and compares logits).
NATIVE_CLASSIFIERS: dict[str, NativeClassifier] = {
    "bert": NativeClassifier("tanh", _ROBERTA_STYLE_DROPOUT, "bert.pooler.dense", "classifier", from_pooler=True),
    "roberta": NativeClassifier("tanh", _ROBERTA_STYLE_DROPOUT, "classifier.dense", "classifier.out_proj",
                                input_dropout=_ROBERTA_STYLE_DROPOUT),
    "distilbert": NativeClassifier("relu", ("seq_classif_dropout",), "pre_classifier", "classifier",
                                   dense_size="dim"),
    "electra": NativeClassifier("gelu", _ROBERTA_STYLE_DROPOUT, "classifier.dense", "classifier.out_proj",
                                input_dropout=_ROBERTA_STYLE_DROPOUT),
    "deberta-v2": NativeClassifier("pooler_hidden_act", ("cls_dropout", "hidden_dropout_prob"), "pooler.dense",
                                   "classifier", input_dropout=("pooler_dropout",), activation_from_config=True,
                                   dense_size="pooler_hidden_size"),
}


def native_classifier(encoder_config: PreTrainedConfig, task: str) -> NativeClassifier:
    """The native classifier of the encoder's architecture; a ``ValueError`` naming the task and the architectures
    that have one otherwise."""
    recipe = NATIVE_CLASSIFIERS.get(encoder_config.model_type)
    if recipe is None:
        raise ValueError(
            f"Task {task!r}: field 'classifier' is 'native', but mtl_hf knows no native classifier for the encoder's "
            f"architecture ({encoder_config.model_type}); known: {', '.join(NATIVE_CLASSIFIERS)}. Use classifier: "
            "linear"
        )
    return recipe


def _config_rate(config: PreTrainedConfig, names: tuple[str, ...]) -> float:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return 0.0


class NativeClassificationHead(nn.Module):
    """The encoder architecture's own sequence classifier (see :class:`NativeClassifier`): first token -> [dropout]
    -> dense -> activation -> dropout -> linear. ``dropout``: the task's ``dropout`` where set, replacing the
    architecture's rates."""

    def __init__(self, config: PreTrainedConfig, num_labels: int, recipe: NativeClassifier,
                 dropout: float | None, task: str) -> None:
        super().__init__()
        size = getattr(config, recipe.dense_size, None) or getattr(config, "hidden_size", None) or config.dim
        hidden_size = getattr(config, "hidden_size", None) or config.dim
        rates = [_config_rate(config, names) if dropout is None else dropout
                 for names in (recipe.input_dropout, recipe.dropout)]
        self.input_dropout = nn.Dropout(rates[0]) if recipe.input_dropout else nn.Identity()
        self.dense = nn.Linear(hidden_size, size)
        self.activation = recipe.activation_module(config, task)
        self.dropout = nn.Dropout(rates[1])
        self.classifier = nn.Linear(size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        pooled = self.activation(self.dense(self.input_dropout(hidden[:, 0])))
        return self.classifier(self.dropout(pooled))


class TokenClassificationHead(nn.Module):
    """Dropout -> Linear on every token."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))


class SpanHead(nn.Module):
    """Dropout -> Linear to start and end logits on every token (transformers' ``qa_outputs``), padding positions
    masked to the lowest value: the loss's softmax then runs over the input's own tokens only, so it does not depend
    on how far a batch is padded (which differs between micro-batches, processes and a single big batch)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        logits = self.classifier(self.dropout(hidden))
        if attention_mask is None:
            return logits
        padding = attention_mask.unsqueeze(-1) == 0
        return logits.masked_fill(padding, torch.finfo(logits.dtype).min)


class MultiTaskModel(PreTrainedModel):
    """A shared encoder (any architecture ``AutoModel`` can build) with one head per task.

    ``forward(..., task=name)`` runs the encoder once and the named task's head; ``forward_tasks`` serves several
    tasks from the same encoder pass. Losses are per-batch means, so the model does *not* accept
    ``num_items_in_batch``: ``MultiTaskTrainer`` does the token-count normalisation for gradient accumulation.
    """

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # Tells Trainer not to pass `num_items_in_batch` into forward (our losses are means, see the class docstring).
    accepts_loss_kwargs = False
    _supports_sdpa = True

    def __init__(self, config: MultiTaskConfig, encoder: PreTrainedModel | None = None) -> None:
        """``encoder``: an already loaded encoder to use as is (``from_encoder`` passes the pretrained one, so it is
        loaded once, with its loading options); by default a fresh one is built from ``config.encoder``."""
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder)
        self.heads = nn.ModuleDict({spec.name: self._build_head(spec) for spec in config.task_specs})
        self.post_init()
        if encoder is not None:
            for spec in config.task_specs:
                self._start_from_pooler(spec)

    # ---- construction -------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        encoder_config = self.config.encoder
        return getattr(encoder_config, "hidden_size", None) or encoder_config.dim  # DistilBERT calls it `dim`

    def _head_dropout(self, spec: TaskSpec) -> float:
        if spec.dropout is not None:
            return spec.dropout
        encoder_config = self.config.encoder
        for name in ("classifier_dropout", "hidden_dropout_prob", "seq_classif_dropout", "dropout"):
            value = getattr(encoder_config, name, None)
            if isinstance(value, (int, float)):
                return float(value)
        return 0.1

    def _build_head(self, spec: TaskSpec) -> nn.Module:
        if spec.classifier == "native":
            recipe = native_classifier(self.config.encoder, spec.name)
            return NativeClassificationHead(self.config.encoder, spec.num_labels, recipe, spec.dropout, spec.name)
        if spec.info.head == "token":
            return TokenClassificationHead(self.hidden_size, spec.num_labels, self._head_dropout(spec))
        if spec.info.head == "span":
            return SpanHead(self.hidden_size, spec.num_labels, self._head_dropout(spec))
        return ClassificationHead(self.hidden_size, spec.num_labels, self._head_dropout(spec), spec.pooling)

    @torch.no_grad()
    def _start_from_pooler(self, spec: TaskSpec) -> None:
        """A new native head whose dense layer is the base model's pooler (BERT) starts from the encoder's pooler,
        pretrained with it, as the architecture's own sequence classifier starts from a pretrained checkpoint."""
        pooler = getattr(self.encoder, "pooler", None)
        if spec.classifier != "native" or not native_classifier(self.config.encoder, spec.name).from_pooler:
            return
        if isinstance(getattr(pooler, "dense", None), nn.Linear):
            self.heads[spec.name].dense.load_state_dict(pooler.dense.state_dict())

    def _init_weights(self, module: nn.Module) -> None:
        # Only the heads reach this: the encoder is a PreTrainedModel and gets its own `_init_weights`.
        if isinstance(module, nn.Linear):
            std = getattr(self.config.encoder, "initializer_range", 0.02)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @classmethod
    def from_encoder(
        cls, encoder_name_or_path: str, tasks: list[TaskSpec | dict[str, Any]], **kwargs: Any
    ) -> "MultiTaskModel":
        """A model whose encoder holds the pretrained weights of ``encoder_name_or_path`` and whose heads are new.

        ``kwargs`` go to ``AutoModel.from_pretrained`` (``revision``, ``dtype``, ``attn_implementation``,
        ``cache_dir``, ...). The pretrained encoder is loaded once and becomes the model's encoder as it is, so every
        loading option applies and no second copy is ever built; only the heads are initialised here.
        """
        encoder = AutoModel.from_pretrained(encoder_name_or_path, **kwargs)
        # The composite config would reset its sub-config's attention implementation: pass on the loaded one.
        config = MultiTaskConfig(
            encoder=encoder.config, tasks=list(tasks), attn_implementation=encoder.config._attn_implementation
        )
        model = cls(config, encoder=encoder)
        model.heads.to(dtype=encoder.dtype)
        return model

    def add_task(self, spec: TaskSpec) -> None:
        """Add a freshly initialised head for ``spec``; the encoder and the other heads are left untouched."""
        self.config.add_task(spec)
        head = self._build_head(spec)
        head.apply(self._init_weights)
        head.train(self.training)  # a new module starts in training mode; follow the model's
        reference = next(self.encoder.parameters())
        self.heads[spec.name] = head.to(device=reference.device, dtype=reference.dtype)
        self._start_from_pooler(spec)

    def export_task(self, task: str, directory: str, tokenizer: Any = None, overwrite: bool = False) -> Any:
        """Write ``task`` as a plain transformers checkpoint (see ``mtl_hf.export.export_task``, which this calls;
        it needs mtl_hf installed, unlike the rest of this file)."""
        try:
            from mtl_hf.export import export_task
        except ImportError as err:  # a model loaded with trust_remote_code where mtl_hf is not installed
            raise ImportError("export_task needs mtl_hf: pip install mtl_hf") from err
        return export_task(self, task, directory, tokenizer=tokenizer, overwrite=overwrite)

    # ---- embeddings (so resize_token_embeddings and friends reach the encoder) ----------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.set_input_embeddings(value)

    # ---- forward ------------------------------------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        return self.config.task_names

    def _resolve_task(self, task: str | None) -> TaskSpec:
        if task is None:
            if len(self.config.tasks) == 1:
                return self.config.task_specs[0]
            raise ValueError(f"Pass `task=`: this model has several tasks: {', '.join(self.task_names)}")
        return self.config.get_task(task)

    def _encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> ModelOutput:
        """Run the encoder, passing only the inputs its architecture accepts (DistilBERT has no token types)."""
        accepted = inspect.signature(self.encoder.forward).parameters
        candidates = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
            "output_hidden_states": output_hidden_states,
            "output_attentions": output_attentions,
        }
        takes_kwargs = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        inputs = {
            k: v
            for k, v in candidates.items()
            if v is not None and (k in accepted or (takes_kwargs and k.startswith("output_")))
        }
        return self.encoder(**inputs, return_dict=True)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        task: str | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultiTaskModelOutput | tuple:
        """Encode once and apply the head of ``task``; the loss is computed when ``labels`` are given.

        ``labels``: classification ``(batch,)`` class ids; regression ``(batch,)`` floats; multilabel ``(batch,
        num_labels)`` multi-hot floats; NER ``(batch, seq_len)`` class ids with -100 on positions that carry no word
        label (special tokens, continuation sub-words, padding); extractive QA ``(batch, 2)`` start and end token
        positions.
        """
        spec = self._resolve_task(task)
        encoded = self._encode(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
            output_hidden_states, output_attentions,
        )
        logits = self.heads[spec.name](encoded.last_hidden_state, attention_mask)
        loss = task_loss(spec).fn(logits, labels) if labels is not None else None
        output = MultiTaskModelOutput(
            loss=loss,
            logits=logits,
            hidden_states=getattr(encoded, "hidden_states", None),
            attentions=getattr(encoded, "attentions", None),
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def forward_tasks(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        tasks: list[str] | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits of several tasks from a single encoder pass (inference): ``{task: logits}``."""
        specs = [self._resolve_task(name) for name in (tasks or self.task_names)]
        hidden = self._encode(input_ids, attention_mask, token_type_ids).last_hidden_state
        return {spec.name: self.heads[spec.name](hidden, attention_mask) for spec in specs}

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sentence embeddings: the mean of the encoder's token vectors over non-padding positions."""
        hidden = self._encode(input_ids, attention_mask, token_type_ids).last_hidden_state
        return masked_mean(hidden, attention_mask)
