"""Inference over raw text for a multi-task model: one encoder pass per batch serves every requested task.

``MultiTaskPipeline.from_pretrained(path)(inputs, tasks=None)`` returns, per input, ``{task_name: result}``; each
task's type (``mtl_hf.task_types``) decides its result:

* classification: ``{"label": str, "score": float}`` (softmax probability of the label); a text that needed several
  windows also carries ``"windows": n`` (see "Long texts" below);
* regression: ``{"score": float}`` (the predicted value, on the scale of the training targets; ``"windows"`` too);
* multilabel: a list of ``{"label", "score"}`` (sigmoid probabilities) for every label whose probability reaches
  the task's ``threshold``, highest first; with ``all_scores=True``, every label, each with ``"passed"``;
* NER: a list of entity spans ``{"entity_group", "score", "word", "start", "end"}`` whose ``start``/``end`` are
  character offsets into the *original* text, so ``text[start:end] == word`` always holds;
* extractive QA: ``{"answer", "score", "start", "end"}``, the answer span's character offsets into the context
  (``context[start:end] == answer``; ``""`` at 0, 0 for no answer where the task allows it) and its probability
  (start x end softmax over the context tokens of its window, as transformers' question-answering pipeline scores).

An input is a text, a pair ``{"text": ..., "text_pair": ...}`` as transformers' text-classification pipeline takes
it, or a question ``{"question": ..., "context": ...}``. Tasks trained on pairs (``text_pair_column_name``) serve
pairs, extractive QA tasks serve questions, the others serve texts: each input gets the requested tasks of its kind,
and a list may mix all three (an input kind that no requested task reads is an error). A pair is encoded as in
training: the tokenizer's pair encoding of the two texts' words, the longer text cut first where the pair does not
fit ``max_length`` (no windows). A question is encoded as QA training encodes it (:func:`mtl_hf.tokenization.
encode_questions`: the raw question and context, the context cut into windows of ``max_length`` that overlap by the
task's ``doc_stride``); one encoder pass per batch of windows serves every requested QA task with that stride, and
each answer is read from all windows of its question as evaluation reads it. QA's input is not a single text, so the
other tasks are not run on it: pass the context as a text as well to get them.

How text becomes model input
----------------------------
There is one encoding for training, evaluation and this pipeline, for both task types; it lives in
:mod:`mtl_hf.tokenization`:

1. The text is split into words with character offsets by :func:`split_words`: maximal runs of letters, digits and
   combining marks form a word; every other non-space character (punctuation, symbols) is a word of its own;
   CJK ideographs are one-character words; whitespace (any amount, any kind) only separates. These are CoNLL-like
   words, as NER training data is split (``"London."`` -> ``London`` ``.``; ``"don't"`` -> ``don`` ``'`` ``t``).
2. The words are encoded with ``is_split_into_words=True`` by :func:`~mtl_hf.tokenization.encode_words`, with the
   tokenizer set up by :func:`prepare_tokenizer`: byte-level BPE tokenizers (RoBERTa, GPT-2 style) get
   ``add_prefix_space=True`` on a copy (the caller's object is left untouched).

Training encodes NER word lists the same way, and the texts of the other types with
:func:`~mtl_hf.tokenization.encode_texts` (step 1 then step 2), so a sentence that fits in one window reaches the
model with exactly the ids it was trained and evaluated on, whatever the tokenizer.

Reading predictions
-------------------
Each word's NER prediction is read at its *first* sub-token (where training puts the word's tag), and the words'
tags are grouped into spans following the task's tag scheme (``tag_scheme`` in the task's config; a model saved
without one uses IOB2). As in the "simple"/"first" aggregation of ``transformers``' token-classification pipeline,
an ill-formed sequence still gives spans:

* IOB2: ``B-X`` always opens a span; ``I-X`` continues a span of type ``X`` and opens one after ``O`` or after
  another type.
* IOBES (``B-``/``I-``/``E-``/``S-``) and BILOU (``B-``/``I-``/``L-``/``U-``): ``S-X``/``U-X`` is a span of one
  word; ``B-X`` opens a span; ``I-X`` and ``E-X``/``L-X`` continue a span of type ``X`` (or open one, as ``I-X``
  in IOB2), and ``E-X``/``L-X`` closes it.
* IO (tags without prefixes such as ``PER`` or POS tags such as ``NN``): a maximal run of words with the same tag
  other than ``O`` is one span, whose ``entity_group`` is the whole tag (``B-cell`` is the tag ``B-cell``).

A model whose labels do not fit its scheme is refused when the pipeline is built. A span covers its words and the
characters between them; its ``score`` is the mean over its words of the word's top softmax probability.

One result per input: every text gets a classification label, even an empty or blank one (``""`` is encoded as
the special tokens alone, as training encodes an empty evaluation text) and gets ``[]`` for NER. A word that yields
no sub-token (a control or zero-width character such as ``"\\u200b"``) has no prediction: it is outside every span
and does not split one (``"Peter\\u200b Smith"`` is one span when both names are tagged as one person).

Long texts
----------
A text whose sub-tokens do not fit in ``max_length`` (by default the smaller of the tokenizer's ``model_max_length``
and what the encoder's position embeddings allow) is cut into overlapping windows of whole words. Consecutive windows
share up to ``stride`` sub-tokens of whole words (default: a quarter of the window). Every word that yields a
sub-token gets a prediction; a word seen by several windows takes the prediction of the window where it is farthest from
a cut edge (most context on both sides, counted in words; on a tie, the earlier window). A classification, regression
or multilabel result over several windows is the *mean of the windows' scores* (probability vectors, or values; each
window counts once), and classification and regression report ``"windows": n``. A single word longer than a whole
window is truncated to its first sub-tokens (its prediction only needs the first one). Nothing is ever silently
dropped by the encoder and no length raises.

Batching
--------
All windows of all texts, in order, are grouped into batches of ``batch_size``; each batch is tokenized with padding
and goes through ONE ``model.forward_tasks`` call that returns the logits of every requested task, under
``torch.no_grad`` with the model in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from .configuration_multitask import OUTSIDE_TAG, TAG_SCHEMES, TaskSpec
from .modeling_multitask import MultiTaskModel
from .onnx_backend import OnnxMultiTaskModel
from .task_types import get_task_type
from .task_types.base import PipelineState
from .tokenization import Word, encode_text_pairs, encode_words, max_input_length, prepare_tokenizer, split_words

__all__ = ["MultiTaskPipeline", "group_entities", "plan_windows", "prepare_tokenizer", "split_words"]

# Extractive QA: how many batches of questions are encoded at once, so that their windows can be batched by length.
QUESTION_CHUNK = 8

# Per scheme: (prefixes that always open a span, prefixes that continue a span of the same type, prefixes after which
# the span is closed). IO tags have no prefix: the whole tag is the type, and a tag continues a span of its own type.
_SCHEME_PREFIXES: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = {
    "IOB2": (frozenset("B"), frozenset("I"), frozenset()),
    "IOBES": (frozenset("BS"), frozenset("IE"), frozenset("ES")),
    "BILOU": (frozenset("BU"), frozenset("IL"), frozenset("LU")),
    "IO": (frozenset(), frozenset("I"), frozenset()),
}


# ---- words and spans ----------------------------------------------------------------------------------------------


def _check_scheme(scheme: str | None) -> str:
    """The scheme to group by: ``None`` (models saved before schemes were recorded) means IOB2."""
    scheme = scheme or "IOB2"
    if scheme not in TAG_SCHEMES:
        raise ValueError(f"Unknown tag scheme {scheme!r}; expected one of {', '.join(TAG_SCHEMES)}")
    return scheme


def _parse_tag(label: str, scheme: str) -> tuple[str | None, str | None]:
    """``(prefix, type)`` of a tag under ``scheme``: ``"B-PER"`` -> ``("B", "PER")``, ``"O"`` -> ``(None, None)``;
    under IO the whole tag is the type (``"NN"`` -> ``("I", "NN")``, and ``"B-cell"`` stays the type ``B-cell``).

    Raises ``ValueError`` for a tag that the scheme does not allow (such as ``"S-PER"`` under IOB2).
    """
    if label == OUTSIDE_TAG:
        return None, None
    if scheme == "IO":
        return "I", label
    opens, continues, _ = _SCHEME_PREFIXES[scheme]
    prefix = label[:1]
    if len(label) > 2 and label[1] == "-" and (prefix in opens or prefix in continues):
        return prefix, label[2:]
    allowed = "/".join(sorted(opens | continues))
    raise ValueError(f"Tag {label!r} does not fit the {scheme} scheme (expected 'O' or {allowed}-TYPE)")


def group_entities(
    text: str, words: list[Word], labels: list[str], scores: list[float], scheme: str | None = "IOB2"
) -> list[dict[str, Any]]:
    """Group word-level tags into entity spans over ``text`` following the tag ``scheme`` (see the module docstring
    for the rules; ``None`` means IOB2)."""
    scheme = _check_scheme(scheme)
    opens, _, closes = _SCHEME_PREFIXES[scheme]
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            start, end = current["start"], current["end"]
            entities.append(
                {
                    "entity_group": current["type"],
                    "score": float(sum(current["scores"]) / len(current["scores"])),
                    "word": text[start:end],
                    "start": start,
                    "end": end,
                }
            )
        current = None

    for (_, start, end), label, score in zip(words, labels, scores):
        prefix, entity_type = _parse_tag(label, scheme)
        if prefix is None:
            close()
            continue
        if prefix in opens or current is None or current["type"] != entity_type:
            close()
            current = {"type": entity_type, "start": start, "end": end, "scores": [score]}
        else:
            current["end"] = end
            current["scores"].append(score)
        if prefix in closes:
            close()
    close()
    return entities


def plan_windows(token_counts: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Cut words with the given sub-token counts into windows ``[(first_word, end_word), ...]`` of whole words.

    Each window holds at most ``budget`` sub-tokens (a single longer word gets a window of its own); a window after
    the first starts with the trailing words of the previous one that fit in ``stride`` sub-tokens, and always
    starts after the previous window's start, so the plan always ends.
    """
    n = len(token_counts)
    if n == 0:
        return [(0, 0)]
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and (end == start or used + token_counts[end] <= budget):
            used += token_counts[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            return windows
        next_start, overlap = end, 0
        while next_start - 1 > start and overlap + token_counts[next_start - 1] <= stride:
            next_start -= 1
            overlap += token_counts[next_start]
        # The next window must reach past this one: give up overlap until the first new word fits.
        while next_start < end and overlap + token_counts[end] > budget:
            overlap -= token_counts[next_start]
            next_start += 1
        start = next_start


# ---- the pipeline -------------------------------------------------------------------------------------------------


@dataclass
class _Document:
    text: str
    words: list[Word]
    windows: list[tuple[int, int]]
    # per task: what its type gathers from the windows (see mtl_hf.task_types.base.PipelineState)
    states: dict[str, PipelineState] = field(default_factory=dict)


class MultiTaskPipeline:
    """Run a [`MultiTaskModel`] on raw texts for all (or some) of its tasks, one encoder pass per batch.

    Args:
        model: the multi-task model (put in eval mode; moved to ``device`` when one is given), or its ONNX export
            run by ONNX Runtime (:class:`~mtl_hf.onnx_backend.OnnxMultiTaskModel`, what ``from_pretrained(...,
            backend="onnx")`` loads).
        tokenizer: a fast tokenizer of the model's encoder, set up with :func:`prepare_tokenizer` as in training.
        device: where to run (``"cpu"``, ``"cuda:0"``, an int GPU index, a ``torch.device``); ``None`` keeps the
            model where it is.
        batch_size: windows per encoder pass (a short text is one window).
        max_length: sub-tokens per window, special tokens included; default: the model's training length
            (``config.max_seq_length``, which ``run_mtl.py`` records) where known, else what the tokenizer and the
            encoder's position embeddings allow, which is also the maximum.
        stride: at most this many sub-tokens (of whole words) are shared by consecutive windows of a long text;
            default a quarter of a window's room for words.

    Call it with a string (returns one result) or a list of strings (returns a list); see the module docstring for
    the result format, word splitting, long texts and scores.
    """

    def __init__(
        self,
        model: MultiTaskModel | OnnxMultiTaskModel,
        tokenizer: PreTrainedTokenizerBase,
        device: str | int | torch.device | None = None,
        batch_size: int = 8,
        max_length: int | None = None,
        stride: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if device is not None:
            if isinstance(device, int):
                device = torch.device("cuda", device) if device >= 0 else torch.device("cpu")
            model = model.to(torch.device(device))
        self.model = model.eval()
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.batch_size = batch_size

        limit = max_input_length(self.tokenizer, model.config.encoder)
        if max_length is None:
            trained = getattr(model.config, "max_seq_length", None)
            max_length = min(trained, limit) if isinstance(trained, int) and trained > 0 else limit
        elif max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds what this model and tokenizer allow ({limit})")
        self.num_special_tokens = self.tokenizer.num_special_tokens_to_add(pair=False)
        if max_length <= self.num_special_tokens:
            raise ValueError(
                f"max_length={max_length} leaves no room for text after {self.num_special_tokens} special tokens"
            )
        self.max_length = max_length
        room = max_length - self.num_special_tokens
        if stride is None:
            stride = room // 4
        if not isinstance(stride, int) or stride < 0:
            raise ValueError(f"stride must be a non-negative integer, got {stride!r}")
        self.stride = stride
        self._specs = {spec.name: spec for spec in model.config.task_specs}
        for spec in self._specs.values():
            get_task_type(spec).check_servable(spec)

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        device: str | int | torch.device | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        backend: str = "torch",
        quantize: bool = False,
        **kwargs: Any,
    ) -> "MultiTaskPipeline":
        """Load the model and the tokenizer saved in ``path`` (or the given ``tokenizer``, object or path).

        ``backend``: ``"torch"`` (default) runs the :class:`MultiTaskModel`; ``"onnx"`` runs its ONNX export with ONNX
        Runtime (:class:`~mtl_hf.onnx_backend.OnnxMultiTaskModel`; needs ``pip install "mtl_hf[onnx]"``), which gives
        the same predictions: ``path`` must then be a local folder, and ``path/onnx/model.onnx`` is exported on first
        use (``path`` must be writable then) and reused afterwards. ``quantize=True`` (``"onnx"`` only) runs the int8
        export ``path/onnx/model_int8.onnx`` instead (dynamic quantization, also made on first use): smaller and
        faster, its scores close to but not equal to the float model's. ``device`` for ``"onnx"``: the CPU by
        default, or a CUDA device (needs ``onnxruntime-gpu``).

        ``model_kwargs`` go to ``MultiTaskModel.from_pretrained``, or with ``"onnx"`` to
        ``OnnxMultiTaskModel.from_pretrained`` (``onnx_file=`` another export to run, ``intra_op_num_threads=``,
        ``session_options=``); ``tokenizer_kwargs`` to ``AutoTokenizer.from_pretrained``; the other keyword
        arguments (``batch_size``, ``max_length``, ``stride``) to the pipeline.
        """
        model: MultiTaskModel | OnnxMultiTaskModel
        if backend == "onnx":
            model = OnnxMultiTaskModel.from_pretrained(path, quantize=quantize, device=device, **(model_kwargs or {}))
        elif backend == "torch":
            if quantize:
                raise ValueError('quantize=True needs backend="onnx"')
            model = MultiTaskModel.from_pretrained(path, **(model_kwargs or {}))
        else:
            raise ValueError(f'Unknown backend {backend!r}; expected "torch" or "onnx"')
        if tokenizer is None or isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or path, **(tokenizer_kwargs or {}))
        return cls(model, tokenizer, device=device, **kwargs)

    # ---- public helpers -------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Where the model runs (inputs are moved there)."""
        return self.model.device

    @property
    def task_names(self) -> list[str]:
        return list(self._specs)

    def _resolve_tasks(self, tasks: str | list[str] | None) -> list[TaskSpec]:
        if tasks is None:
            return list(self._specs.values())
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if not names:
            raise ValueError(f"No task requested; this model knows: {', '.join(self._specs)}")
        specs: list[TaskSpec] = []
        for name in names:
            if name not in self._specs:
                raise ValueError(f"Unknown task {name!r}; this model knows: {', '.join(self._specs) or '(no tasks)'}")
            if all(spec.name != name for spec in specs):
                specs.append(self._specs[name])
        return specs

    # ---- call -----------------------------------------------------------------------------------------------------

    def __call__(
        self,
        inputs: str | dict[str, str] | list[str | dict[str, str]],
        tasks: str | list[str] | None = None,
        batch_size: int | None = None,
        **options: Any,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Predict the requested tasks (default: all) for one input (-> one dict) or a list (-> list of dicts).

        An input is a text, or a pair ``{"text": ..., "text_pair": ...}`` as transformers' text-classification
        pipeline takes it. A text gets the requested tasks that read single texts, a pair those that read pairs
        (``text_pair_column_name``), a question the extractive QA tasks; an input for which no requested task fits
        is an error, and so is a task named in ``tasks`` for which no input fits. ``options`` go to the
        task types' results (``all_scores=True``: every label's score for multilabel tasks).
        """
        single = isinstance(inputs, (str, dict))
        batch = [inputs] if single else inputs
        specs_of, rows_of = self.check_request(batch, tasks, options)
        batch_size = self.batch_size if batch_size is None else batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not batch:
            return []

        results: list[dict[str, Any]] = [{} for _ in batch]
        texts = rows_of["text"]
        if texts:
            documents = self._prepare([batch[i] for i in texts], specs_of["text"])
            self._predict(documents, specs_of["text"], batch_size)
            for i, document in zip(texts, documents):
                results[i] = self._finish(document, specs_of["text"], options)
        for first in range(0, len(rows_of["text_pair"]), batch_size):
            chunk = rows_of["text_pair"][first : first + batch_size]
            for i, result in zip(chunk, self._predict_pairs([batch[i] for i in chunk], specs_of["text_pair"], options)):
                results[i] = result
        questions = rows_of["question"]
        if questions:
            answers = self._predict_questions([batch[i] for i in questions], specs_of["question"], batch_size, options)
            for i, result in zip(questions, answers):
                results[i] = result
        return results[0] if single else results

    def check_request(
        self, batch: Any, tasks: str | list[str] | None, options: dict[str, Any]
    ) -> tuple[dict[str, list[TaskSpec]], dict[str, list[int]]]:
        """Check a whole request (a list of inputs, the requested tasks and options) as ``__call__`` takes it:
        ``(requested tasks by input kind, input positions by kind)``, or the error that names the first input of a
        kind no requested task reads, a task named in ``tasks`` for which no input fits, or an unknown option."""
        if not isinstance(batch, (list, tuple)) or not all(_is_input(item) for item in batch):
            raise TypeError(
                'MultiTaskPipeline expects a string, a pair {"text": str, "text_pair": str}, a question '
                '{"question": str, "context": str}, or a list of them'
            )
        specs = self._resolve_tasks(tasks)
        known = {option: spec.name for spec in specs for option in get_task_type(spec).pipeline_options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            offered = ", ".join(f"{option} ({task})" for option, task in sorted(known.items())) or "none"
            raise TypeError(f"MultiTaskPipeline: unknown option(s) {', '.join(unknown)}; the requested tasks take: "
                            f"{offered}")
        specs_of: dict[str, list[TaskSpec]] = {kind: [] for kind in _INPUT_KEYS}
        for spec in specs:
            specs_of[get_task_type(spec).pipeline_input(spec)].append(spec)
        rows_of: dict[str, list[int]] = {kind: [] for kind in _INPUT_KEYS}
        for i, item in enumerate(batch):
            rows_of[_input_kind(item)].append(i)
        for kind, rows in rows_of.items():
            if rows and not specs_of[kind]:
                takes = "; ".join(f"{', '.join(s.name for s in kind_specs)} read {_INPUT_WORDS[other]}"
                                  for other, kind_specs in specs_of.items() if kind_specs)
                raise ValueError(f"Input {rows[0]} is {_INPUT_WORDS[kind]}, which no requested task reads: {takes}")
        for kind, rows in rows_of.items():
            if tasks is not None and specs_of[kind] and not rows and batch:
                raise ValueError(f"Task(s) {', '.join(s.name for s in specs_of[kind])} read {_INPUT_WORDS[kind]}, "
                                 "and no input of the request is one")
        return specs_of, rows_of

    def _prepare(self, texts: list[str], specs: list[TaskSpec]) -> list[_Document]:
        """Split texts into words, count each word's sub-tokens, and plan the windows."""
        all_words = [split_words(text) for text in texts]
        counts_per_text: list[list[int]] = [[] for _ in texts]
        with_words = [i for i, words in enumerate(all_words) if words]
        if with_words:
            encoded = encode_words(
                self.tokenizer,
                [[w for w, _, _ in all_words[i]] for i in with_words],
                add_special_tokens=False,
                verbose=False,  # whole long texts are counted here; the windows below respect max_length
            )
            for row, i in enumerate(with_words):
                counts = [0] * len(all_words[i])
                for word_id in encoded.word_ids(row):
                    if word_id is not None:
                        counts[word_id] += 1
                counts_per_text[i] = counts

        room = self.max_length - self.num_special_tokens
        documents = []
        for text, words, counts in zip(texts, all_words, counts_per_text):
            # Words that the tokenizer drops entirely (control or zero-width characters) get no prediction and do
            # not break spans.
            kept = [(word, count) for word, count in zip(words, counts) if count > 0]
            words = [word for word, _ in kept]
            windows = plan_windows([count for _, count in kept], room, self.stride)
            states = {spec.name: get_task_type(spec).pipeline_state(spec) for spec in specs}
            documents.append(_Document(text=text, words=words, windows=windows, states=states))
        return documents

    def _forward(self, encoded: Any, specs: list[TaskSpec]) -> dict[str, torch.Tensor]:
        """One encoder pass for a tokenized batch: every task's scores (as its type reads logits), on the CPU."""
        inputs = {
            key: encoded[key].to(self.device)
            for key in ("input_ids", "attention_mask", "token_type_ids")
            if key in encoded
        }
        logits = self.model.forward_tasks(
            inputs["input_ids"],
            inputs.get("attention_mask"),
            tasks=[spec.name for spec in specs],
            token_type_ids=inputs.get("token_type_ids"),
        )
        return {spec.name: get_task_type(spec).pipeline_scores(spec, logits[spec.name]).cpu() for spec in specs}

    def _predict(self, documents: list[_Document], specs: list[TaskSpec], batch_size: int) -> None:
        """Run every window through the model, ``batch_size`` windows per encoder pass, and collect predictions."""
        windows = [(document, window) for document in documents for window in document.windows]
        self.model.eval()
        with torch.no_grad():
            for first in range(0, len(windows), batch_size):
                chunk = windows[first : first + batch_size]
                encoded = encode_words(
                    self.tokenizer,
                    [[w for w, _, _ in document.words[start:end]] for document, (start, end) in chunk],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                scores = self._forward(encoded, specs)
                for row, (document, window) in enumerate(chunk):
                    word_ids = encoded.word_ids(row)
                    for spec in specs:
                        document.states[spec.name].add(scores[spec.name][row], word_ids, window, len(document.words))

    def _predict_pairs(
        self, pairs: list[dict[str, str]], specs: list[TaskSpec], options: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One encoder pass for a batch of text pairs, encoded as in training (the tokenizer's pair encoding, the
        longer text cut first where a pair does not fit ``max_length``)."""
        encoded = encode_text_pairs(
            self.tokenizer, [pair["text"] for pair in pairs], [pair["text_pair"] for pair in pairs],
            truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt",
        )
        self.model.eval()
        with torch.no_grad():
            scores = self._forward(encoded, specs)
        results = []
        for row, pair in enumerate(pairs):
            result = {}
            for spec in specs:
                state = get_task_type(spec).pipeline_state(spec)
                state.add(scores[spec.name][row], encoded.word_ids(row), (0, 0), 0)
                result[spec.name] = state.result(pair["text"], [], **options)
            results.append(result)
        return results

    def _predict_questions(
        self, items: list[dict[str, str]], specs: list[TaskSpec], batch_size: int, options: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Answer ``{"question", "context"}`` inputs, encoded as in training (the raw question and context, the
        context cut into ``doc_stride``-overlapping windows of ``max_length``): up to ``QUESTION_CHUNK`` batches of
        inputs are encoded at a time, and their windows go through the model ``batch_size`` per encoder pass, in order
        of length (so that a pass pads little: padding is masked, so a window's logits do not depend on its batch),
        each pass serving every requested task that encodes inputs the same way (the same ``doc_stride``); each answer
        is read from all windows of its input, in their order."""
        groups: dict[Any, list[TaskSpec]] = {}
        for spec in specs:
            groups.setdefault((spec.type, get_task_type(spec).encoding_key(spec)), []).append(spec)
        results: list[dict[str, Any]] = [{} for _ in items]
        self.model.eval()
        step = batch_size * QUESTION_CHUNK
        for group in groups.values():
            task_type = get_task_type(group[0])
            for first in range(0, len(items), step):
                chunk = items[first : first + step]
                gathered: dict[str, list[list[Any]]] = {spec.name: [[] for _ in chunk] for spec in group}
                for encoded, windows in task_type.pipeline_encode(group[0], self.tokenizer, chunk, self.max_length):
                    order = sorted(range(len(windows)), key=lambda window: len(windows[window][1]))
                    for start in range(0, len(order), batch_size):
                        part = order[start : start + batch_size]
                        length = max(len(windows[window][1]) for window in part)  # right padding: cut the rest
                        inputs = {key: encoded[key][part, :length]
                                  for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
                        with torch.no_grad():
                            scores = self._forward(inputs, group)
                        for row, window in enumerate(part):
                            source, offsets = windows[window]
                            for spec in group:
                                gathered[spec.name][source].append((window, scores[spec.name][row].numpy(), offsets))
                for position, item in enumerate(chunk):
                    for spec in group:
                        in_order = [(scores, offsets) for _, scores, offsets in sorted(
                            gathered[spec.name][position], key=lambda entry: entry[0])]
                        results[first + position][spec.name] = task_type.pipeline_answer(spec, item, in_order,
                                                                                          **options)
        return results

    def _finish(self, document: _Document, specs: list[TaskSpec], options: dict[str, Any]) -> dict[str, Any]:
        return {spec.name: document.states[spec.name].result(document.text, document.words, **options)
                for spec in specs}


# What each kind of pipeline input is (`TaskType.pipeline_input`): a string, or a dict with exactly these keys.
_INPUT_KEYS: dict[str, frozenset[str] | None] = {
    "text": None, "text_pair": frozenset({"text", "text_pair"}), "question": frozenset({"question", "context"}),
}
_INPUT_WORDS = {"text": "a text (a string)", "text_pair": 'a text pair {"text": ..., "text_pair": ...}',
                "question": 'a question {"question": ..., "context": ...}'}


def _input_kind(item: Any) -> str | None:
    """``"text"`` for a string, ``"text_pair"`` / ``"question"`` for a dict of strings with those keys, else
    ``None``."""
    if isinstance(item, str):
        return "text"
    if isinstance(item, dict) and all(isinstance(value, str) for value in item.values()):
        return next((kind for kind, keys in _INPUT_KEYS.items() if keys == set(item)), None)
    return None


def _is_input(item: Any) -> bool:
    """A text, a pair ``{"text", "text_pair"}`` or a question ``{"question", "context"}``, all strings."""
    return _input_kind(item) is not None
