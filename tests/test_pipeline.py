"""MultiTaskPipeline: exact spans and labels on texts whose answers are known, long texts, batching, loading, and
the same model input as training.

Known answers without training: `wired_model` turns a tiny encoder into a context-free lookup. Its layers' output
projections are zeroed (each layer becomes LayerNorm(h) ~= h) and the position/token-type embeddings too, so the
hidden vector of a token is LayerNorm(its word embedding). Word embeddings are one-hot in the dimension of the tag the
test wants for that token (dim 0 = "O" for every other token), the NER head reads dims 0..n-1 as the n tags, and the
mean-pooled sentiment head reads dim 10 ("neg", the word "bad") and dim 11 ("pos", the word "good"). So the NER tag
of a word is the tag of its first sub-token, whatever the context or the window it sits in.

`positional_model` is the opposite: it ignores the words and tags each token by its position in the window
(``B-P1`` for the first token after [CLS], ...), so a word seen by two windows gets a different tag in each, and the
result shows which window the pipeline took it from.

Every expected span below is written out by hand (or located with ``str.index``), never computed with the functions
under test.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import datasets
import pytest
import torch
import transformers

from mtl_hf import MultiTaskConfig, MultiTaskModel, TaskSpec
from mtl_hf.data import MultiTaskDataCollator, preprocess_task
from mtl_hf.pipeline import MultiTaskPipeline, group_entities, plan_windows, prepare_tokenizer
from tests.conftest import tiny_encoder_config

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
SENTIMENT = TaskSpec(name="sentiment", type="classification", labels=["neg", "pos"], pooling="mean", dropout=0.0)
NER = TaskSpec(name="ner", type="ner", labels=NER_LABELS, dropout=0.0)
TASKS = [SENTIMENT, NER]
# The tag of each word's FIRST sub-token (the model sees nothing else).
TAGS = {
    "john": "B-PER", "mary": "B-PER", "peter": "B-PER", "anna": "B-PER", "smith": "I-PER",
    "london": "B-LOC", "paris": "B-LOC", "berlin": "B-LOC", "rome": "B-LOC", "madrid": "B-LOC",
    "acme": "B-ORG", "corp": "I-ORG", "google": "B-ORG",
}
SENTIMENT_DIMS = {"bad": 10, "good": 11}
# Continuation pieces get a tag too, so a pipeline that read a word's LAST sub-token would find a location in
# "Johnson" (john ##son) instead of a person.
TRAPS = {"##son": "B-LOC", "##er": "B-ORG"}


def first_subtoken_id(tokenizer: transformers.PreTrainedTokenizerBase, word: str) -> int:
    return tokenizer([word], is_split_into_words=True, add_special_tokens=False)["input_ids"][0]


def token_tags(tokenizer: transformers.PreTrainedTokenizerBase, tags: dict[str, str]) -> dict[int, str]:
    """Token id -> tag for the words that are a single token in this vocabulary (all of TAGS for the BERT
    vocabulary; a few for the tiny byte-level BPE, whose pieces like "Ġp" start several words)."""
    token_tags = {}
    for word, tag in tags.items():
        ids = tokenizer([word], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            token_tags[ids[0]] = tag
    return token_tags


def isolate_tokens(model: MultiTaskModel) -> None:
    """Make the encoder context-free: zero the layers' output projections and the position/token-type embeddings."""
    encoder = model.encoder
    for layer in encoder.encoder.layer:
        for linear in (layer.attention.output.dense, layer.output.dense):
            linear.weight.zero_()
            linear.bias.zero_()
    encoder.embeddings.position_embeddings.weight.zero_()
    encoder.embeddings.token_type_embeddings.weight.zero_()


def wire_identity(head: torch.nn.Module, dims: int) -> None:
    """A token-classification head that reads hidden dims 0..dims-1 as its labels."""
    head.classifier.weight.zero_()
    head.classifier.bias.zero_()
    head.classifier.weight[range(dims), range(dims)] = 1.0


def wired_model(
    tokenizer: transformers.PreTrainedTokenizerBase,
    family: str = "bert",
    ner: TaskSpec = NER,
    tags: dict[str, str] = TAGS,
    traps: dict[str, str] = TRAPS,
) -> MultiTaskModel:
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config(family, len(tokenizer)), tasks=[SENTIMENT, ner])
    model = MultiTaskModel(config).eval()
    with torch.no_grad():
        isolate_tokens(model)
        embeddings = model.encoder.embeddings
        table = torch.zeros_like(embeddings.word_embeddings.weight)
        table[:, 0] = 1.0
        for token, tag in token_tags(tokenizer, tags).items():
            table[token] = 0.0
            table[token, ner.labels.index(tag)] = 1.0
        for piece, tag in traps.items():
            token = tokenizer.convert_tokens_to_ids(piece)
            if token != tokenizer.unk_token_id:
                table[token] = 0.0
                table[token, ner.labels.index(tag)] = 1.0
        for word, dim in SENTIMENT_DIMS.items():
            table[first_subtoken_id(tokenizer, word), dim] = 1.0
        embeddings.word_embeddings.weight.copy_(table)
        wire_identity(model.heads[ner.name], len(ner.labels))
        sentiment = model.heads["sentiment"].classifier
        sentiment.weight.zero_()
        sentiment.bias.zero_()
        sentiment.weight[0, SENTIMENT_DIMS["bad"]] = 1.0
        sentiment.weight[1, SENTIMENT_DIMS["good"]] = 1.0
    return model


POSITIONS = 8
POSITION_NER = TaskSpec(
    name="ner", type="ner", labels=["O", *(f"B-P{p}" for p in range(1, POSITIONS + 1))], dropout=0.0
)


def positional_model(tokenizer: transformers.PreTrainedTokenizerBase) -> MultiTaskModel:
    """Tags the token at position p (1 = the first after [CLS]) ``B-P<p>``, whatever the token."""
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", len(tokenizer)), tasks=[SENTIMENT, POSITION_NER])
    model = MultiTaskModel(config).eval()
    with torch.no_grad():
        isolate_tokens(model)
        embeddings = model.encoder.embeddings
        embeddings.word_embeddings.weight.zero_()
        for position in range(1, POSITIONS + 1):
            embeddings.position_embeddings.weight[position, position] = 1.0
        wire_identity(model.heads["ner"], len(POSITION_NER.labels))
    return model


@pytest.fixture(scope="module")
def bert_model(bert_tokenizer: transformers.PreTrainedTokenizerBase) -> MultiTaskModel:
    return wired_model(bert_tokenizer)


@pytest.fixture
def pipe(bert_model: MultiTaskModel, bert_tokenizer: transformers.PreTrainedTokenizerBase) -> MultiTaskPipeline:
    return MultiTaskPipeline(bert_model, bert_tokenizer)


def ent(text: str, group: str, word: str, occurrence: int = 0) -> tuple[str, str, int, int]:
    """The expected (entity_group, word, start, end) of the `occurrence`-th `word` in `text`."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(word, start + 1)
    return group, word, start, start + len(word)


def spans(entities: list[dict]) -> list[tuple[str, str, int, int]]:
    return [(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities]


def check_offsets(text: str, entities: list[dict]) -> None:
    for e in entities:
        assert text[e["start"] : e["end"]] == e["word"]
        assert 0.0 < e["score"] <= 1.0
        assert isinstance(e["start"], int) and isinstance(e["end"], int) and isinstance(e["score"], float)


# ---- words and spans --------------------------------------------------------------------------------------------


# Nine one-letter words "a b c ... i" with their offsets.
LETTERS = "a b c d e f g h i"
LETTER_WORDS = [(letter, 2 * i, 2 * i + 1) for i, letter in enumerate(LETTERS.split())]


def letter_spans(labels: list[str], scheme: str | None) -> list[tuple[str, str]]:
    entities = group_entities(LETTERS, LETTER_WORDS, labels, [1.0] * len(labels), scheme)
    return [(e["entity_group"], e["word"]) for e in entities]


def test_group_entities_iob2_follows_simple_aggregation_rules() -> None:
    labels = ["B-PER", "I-PER", "I-PER", "O", "I-LOC", "I-PER", "B-ORG", "B-ORG", "I-ORG"]
    scores = [0.9, 0.8, 0.7, 0.5, 0.6, 0.4, 1.0, 0.5, 0.7]
    entities = group_entities(LETTERS, LETTER_WORDS, labels, scores, "IOB2")
    assert spans(entities) == [
        ("PER", "a b c", 0, 5),  # B then I, I of the same type
        ("LOC", "e", 8, 9),  # I after O opens a span
        ("PER", "f", 10, 11),  # I of another type opens a span
        ("ORG", "g", 12, 13),  # B always opens a span
        ("ORG", "h i", 14, 17),
    ]
    assert [e["score"] for e in entities] == pytest.approx([0.8, 0.6, 0.4, 1.0, 0.6])
    assert group_entities(LETTERS, LETTER_WORDS, labels, scores, None) == entities  # no scheme recorded: IOB2
    with pytest.raises(ValueError, match="'S-PER' does not fit the IOB2 scheme"):
        group_entities(LETTERS, LETTER_WORDS, ["S-PER"], [1.0], "IOB2")
    with pytest.raises(ValueError, match="Unknown tag scheme 'IOB1'"):
        group_entities(LETTERS, LETTER_WORDS, labels, scores, "IOB1")


@pytest.mark.parametrize(
    "scheme, labels",
    [
        ("IOBES", ["S-PER", "I-PER", "B-LOC", "E-LOC", "E-LOC", "B-ORG", "S-ORG", "I-ORG", "O"]),
        ("BILOU", ["U-PER", "I-PER", "B-LOC", "L-LOC", "L-LOC", "B-ORG", "U-ORG", "I-ORG", "O"]),
    ],
)
def test_group_entities_single_and_end_tags(scheme: str, labels: list[str]) -> None:
    assert letter_spans(labels, scheme) == [
        ("PER", "a"),  # a single-word tag is a span of its own and closes it: the I- after it opens a new one
        ("PER", "b"),
        ("LOC", "c d"),  # the end tag closes the span...
        ("LOC", "e"),  # ...so a second end tag is a one-word span
        ("ORG", "f"),  # a single-word tag after B- closes the open span
        ("ORG", "g"),
        ("ORG", "h"),
    ]
    other = {"IOBES": "U-PER", "BILOU": "S-PER"}[scheme]  # the other scheme's single-word prefix is refused
    with pytest.raises(ValueError, match=f"{other!r} does not fit the {scheme} scheme"):
        letter_spans([other], scheme)


def test_group_entities_io_tags_are_whole_types() -> None:
    """Tags without prefixes: a run of the same tag is one span, and a tag that merely looks prefixed (the cell
    types ``B-cell``/``T-cell``) is a type of its own, not ``B-`` + ``cell``."""
    labels = ["PER", "PER", "O", "LOC", "PER", "B-cell", "B-cell", "T-cell", "NN"]
    assert letter_spans(labels, "IO") == [
        ("PER", "a b"),
        ("LOC", "d"),
        ("PER", "e"),
        ("B-cell", "f g"),
        ("T-cell", "h"),
        ("NN", "i"),
    ]


def test_plan_windows_covers_every_word_within_budget_and_stride() -> None:
    rng = random.Random(0)
    for _ in range(200):
        counts = [rng.choice([1, 1, 1, 2, 3, 9]) for _ in range(rng.randrange(0, 80))]
        budget, stride = rng.randrange(1, 20), rng.randrange(0, 12)
        windows = plan_windows(counts, budget, stride)
        if not counts:
            assert windows == [(0, 0)]
            continue
        assert windows[0][0] == 0 and windows[-1][1] == len(counts)
        for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
            assert start < next_start <= end < next_end  # contiguous, overlapping or adjacent, progressing
            assert sum(counts[next_start:end]) <= stride
        for start, end in windows:
            assert end - start == 1 or sum(counts[start:end]) <= budget


# ---- known answers ------------------------------------------------------------------------------------------------

KNOWN = [
    # A multi-word entity and punctuation glued to an entity.
    ("Peter Smith visited London.", [("PER", "Peter Smith", 0, 11), ("LOC", "London", 20, 26)]),
    # A word split into sub-tokens (john ##son), extra spaces everywhere.
    (
        "  Mary  met   Johnson in  Paris .",
        [("PER", "Mary", 2, 6), ("PER", "Johnson", 14, 21), ("LOC", "Paris", 26, 31)],
    ),
    (
        "Acme Corp bought Google, then Berlin.",
        [("ORG", "Acme Corp", 0, 9), ("ORG", "Google", 17, 23), ("LOC", "Berlin", 30, 36)],
    ),
    # I- after O, B- after B-, I- after another type, upper case, tabs and new lines.
    (
        "the smith met JOHN Mary,\tthen\n\nParis smith.",
        [
            ("PER", "smith", 4, 9),
            ("PER", "JOHN", 14, 18),
            ("PER", "Mary", 19, 23),
            ("LOC", "Paris", 31, 36),
            ("PER", "smith", 37, 42),
        ],
    ),
    ("Anna lives in Rome (Madrid).", [("PER", "Anna", 0, 4), ("LOC", "Rome", 14, 18), ("LOC", "Madrid", 20, 26)]),
    ("nothing to see here", []),
]


@pytest.mark.parametrize("text, expected", KNOWN)
def test_known_spans(pipe: MultiTaskPipeline, text: str, expected: list) -> None:
    result = pipe(text)
    assert set(result) == {"sentiment", "ner"}
    check_offsets(text, result["ner"])
    assert spans(result["ner"]) == expected


@pytest.mark.parametrize(
    "scheme, labels, tags, expected",
    [
        (
            "IOBES",
            ["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC"],
            {"peter": "B-PER", "john": "I-PER", "smith": "E-PER", "mary": "S-PER", "london": "S-LOC"},
            [("PER", "Peter John Smith", 0, 16), ("PER", "Mary", 17, 21), ("PER", "Smith", 22, 27),
             ("LOC", "London", 28, 34)],
        ),
        (
            "BILOU",
            ["O", "B-PER", "I-PER", "L-PER", "U-PER", "U-LOC"],
            {"peter": "B-PER", "john": "I-PER", "smith": "L-PER", "mary": "U-PER", "london": "U-LOC"},
            [("PER", "Peter John Smith", 0, 16), ("PER", "Mary", 17, 21), ("PER", "Smith", 22, 27),
             ("LOC", "London", 28, 34)],
        ),
        (
            "IO",
            ["O", "B-cell", "T-cell", "NN"],
            {"peter": "B-cell", "john": "B-cell", "smith": "T-cell", "mary": "NN", "london": "NN"},
            [("B-cell", "Peter John", 0, 10), ("T-cell", "Smith", 11, 16), ("NN", "Mary", 17, 21),
             ("T-cell", "Smith", 22, 27), ("NN", "London", 28, 34)],
        ),
    ],
)
def test_spans_follow_the_task_tag_scheme(bert_tokenizer, scheme, labels, tags, expected) -> None:
    task = TaskSpec(name="tags", type="ner", labels=labels, tag_scheme=scheme, dropout=0.0)
    pipe = MultiTaskPipeline(wired_model(bert_tokenizer, ner=task, tags=tags, traps={}), bert_tokenizer)
    text = "Peter John Smith Mary Smith London"
    result = pipe(text, tasks="tags")["tags"]
    assert spans(result) == expected
    check_offsets(text, result)


def test_labels_that_do_not_fit_the_scheme_are_refused(bert_tokenizer) -> None:
    """A model saved without a scheme groups as IOB2, so BIOES labels must be declared, not misread."""
    task = TaskSpec(name="tags", type="ner", labels=["O", "B-PER", "E-PER", "S-PER"], dropout=0.0)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", len(bert_tokenizer)), tasks=[task])
    with pytest.raises(ValueError, match="Task 'tags': Tag 'E-PER' does not fit the IOB2 scheme.*'tag_scheme'"):
        MultiTaskPipeline(MultiTaskModel(config), bert_tokenizer)


def test_scores_are_word_probabilities(pipe: MultiTaskPipeline, bert_model, bert_tokenizer) -> None:
    encoded = bert_tokenizer(["london"], is_split_into_words=True, return_tensors="pt")
    logits = bert_model.forward_tasks(encoded["input_ids"], encoded["attention_mask"])
    ner_probability = logits["ner"][0, 1].softmax(-1).max().item()
    sentiment = logits["sentiment"][0].softmax(-1)

    result = pipe("London")
    assert result["ner"][0]["score"] == pytest.approx(ner_probability, abs=1e-5)
    assert result["sentiment"]["score"] == pytest.approx(sentiment.max().item(), abs=1e-5)
    # A two-word span scores the mean of its words (both are one-hot lookups of the same strength here).
    assert pipe("Peter Smith")["ner"][0]["score"] == pytest.approx(ner_probability, abs=1e-5)


def test_classification(pipe: MultiTaskPipeline) -> None:
    good, bad = pipe(["a good day in Paris", "a bad , bad game"])
    assert good["sentiment"]["label"] == "pos" and bad["sentiment"]["label"] == "neg"
    for result in (good, bad):
        assert set(result["sentiment"]) == {"label", "score"}
        assert 0.5 < result["sentiment"]["score"] <= 1.0


def test_single_string_list_tasks_and_errors(pipe: MultiTaskPipeline) -> None:
    text = "Peter Smith visited London."
    single = pipe(text)
    assert isinstance(single, dict)
    assert pipe([text]) == [single]
    assert pipe((text, text)) == [single, single]
    assert pipe([]) == []
    only_ner = pipe(text, tasks="ner")
    assert list(only_ner) == ["ner"] and only_ner["ner"] == single["ner"]
    assert list(pipe(text, tasks=["ner", "sentiment"])) == ["ner", "sentiment"]
    with pytest.raises(ValueError, match="'pos'.*sentiment, ner"):
        pipe(text, tasks=["ner", "pos"])
    with pytest.raises(TypeError):
        pipe(42)
    with pytest.raises(TypeError):
        pipe([text, None])
    with pytest.raises(ValueError, match="batch_size"):
        pipe(text, batch_size=0)


def test_one_result_per_text_even_empty_or_without_sub_tokens(pipe: MultiTaskPipeline) -> None:
    """Empty and blank texts get a label and no spans; a zero-width character (a word of its own that yields no
    sub-token) gets no prediction and neither breaks a span nor shifts the words after it."""
    texts = ["", "Peter\u200b Smith met\u200b\u200bMary", "   \n\t", "\u200b", "London"]
    results = pipe(texts)
    assert len(results) == len(texts)
    assert [spans(r["ner"]) for r in results] == [
        [],
        [("PER", "Peter\u200b Smith", 0, 12), ("PER", "Mary", 18, 22)],
        [],
        [],
        [("LOC", "London", 0, 6)],
    ]
    # Only special tokens: no word votes for either sentiment, so both are equally likely and the first wins.
    for empty in (results[0], results[2], results[3]):
        assert empty["sentiment"] == {"label": "neg", "score": pytest.approx(0.5)}


# ---- long texts ---------------------------------------------------------------------------------------------------


def test_text_longer_than_the_model_finds_entities_in_every_window(pipe: MultiTaskPipeline) -> None:
    filler = " ".join(["the market rose"] * 40)
    text = f"John  said: {filler} Acme Corp sold it. {filler}   Peter Smith visited London."
    assert len(pipe.tokenizer(text)["input_ids"]) > 64  # more than max_position_embeddings
    result = pipe(text)
    assert result["sentiment"]["windows"] > 2
    assert spans(result["ner"]) == [
        ent(text, "PER", "John"),
        ent(text, "ORG", "Acme Corp"),
        ent(text, "PER", "Peter Smith"),  # the last window
        ent(text, "LOC", "London"),
    ]
    check_offsets(text, result["ner"])


# Fragments of text and the spans the wired model must find in them, as (group, start, end) within the fragment.
# Each fragment starts with a B- word or has no entity, so fragments joined by whitespace keep their own spans.
FRAGMENTS = [
    ("Peter Smith", [("PER", 0, 11)]),
    ("Johnson", [("PER", 0, 7)]),  # john ##son: read at its first sub-token
    ("Londoner.", [("LOC", 0, 8)]),  # london ##er
    ("Acme Corp", [("ORG", 0, 9)]),
    ("Google,", [("ORG", 0, 6)]),
    ("met Mary", [("PER", 4, 8)]),
    ("the market rose", []),
    ("zzzzqx", []),  # six word pieces: longer than the smallest windows
    ("good", []),
    ("bad", []),
]


@pytest.mark.parametrize("max_length, stride", [(None, None), (16, 0), (12, 5), (7, 3), (3, 0)])
def test_random_long_texts_find_every_fragments_spans(bert_model, bert_tokenizer, max_length, stride) -> None:
    rng = random.Random(max_length or 0)
    pipe = MultiTaskPipeline(bert_model, bert_tokenizer, max_length=max_length, stride=stride, batch_size=16)
    most_fragments = 80 if pipe.max_length > 8 else 25  # tiny windows: fewer words keep the test fast
    texts, expected = [], []
    for _ in range(6):
        text, text_spans = "", []
        for _ in range(rng.randrange(1, most_fragments)):
            fragment, fragment_spans = rng.choice(FRAGMENTS)
            text += rng.choice([" ", "  ", "\n", "\t "])
            at = len(text)
            text += fragment
            text_spans += [(group, text[at + s : at + e], at + s, at + e) for group, s, e in fragment_spans]
        texts.append(text)
        expected.append(text_spans)
    for text, result, text_spans in zip(texts, pipe(texts), expected):
        assert spans(result["ner"]) == text_spans
        check_offsets(text, result["ner"])


def test_very_long_inputs_never_crash(pipe: MultiTaskPipeline) -> None:
    long_word = "z" * 300  # 300 word pieces: more than a whole window on its own
    text = " ".join(["the"] * 5000) + f" {long_word} Mary  visited Paris."
    result = pipe(text)
    assert result["sentiment"]["windows"] > 80
    assert spans(result["ner"]) == [ent(text, "PER", "Mary"), ent(text, "LOC", "Paris")]


@pytest.fixture(scope="module")
def position_model(bert_tokenizer: transformers.PreTrainedTokenizerBase) -> MultiTaskModel:
    return positional_model(bert_tokenizer)


@pytest.mark.parametrize(
    "text, max_length, stride, windows, expected",
    [
        # Four words of room per window, two shared: windows a-d, c-f, e-h, g-j. Each shared word is one word away
        # from a cut edge in one window and none in the other: c is read at position 3 of the first window (not 1 of
        # the second), d at position 2 of the second (not 4 of the first), and so on.
        (
            "a b c d e f g h i j",
            6,
            2,
            4,
            ["P1", "P2", "P3", "P2", "P3", "P2", "P3", "P2", "P3", "P4"],
        ),
        # Five words of room, three shared: windows a-e and c-g. d is one word from the cut edge in both windows (the
        # first ends after e, the second starts at c): on a tie the earlier window wins, position 4 (not 2).
        ("a b c d e f g", 7, 3, 2, ["P1", "P2", "P3", "P4", "P3", "P4", "P5"]),
    ],
)
def test_overlapping_windows_keep_the_prediction_with_most_context(
    position_model, bert_tokenizer, text: str, max_length: int, stride: int, windows: int, expected: list[str]
) -> None:
    pipe = MultiTaskPipeline(position_model, bert_tokenizer, max_length=max_length, stride=stride)
    result = pipe(text)
    assert result["sentiment"]["windows"] == windows
    # Every word is one letter, so word i sits at characters 2i..2i+1.
    assert spans(result["ner"]) == [(tag, text[2 * i], 2 * i, 2 * i + 1) for i, tag in enumerate(expected)]


def test_max_length_is_checked(bert_model, bert_tokenizer) -> None:
    assert MultiTaskPipeline(bert_model, bert_tokenizer).max_length == 64
    with pytest.raises(ValueError, match="max_length"):
        MultiTaskPipeline(bert_model, bert_tokenizer, max_length=65)
    with pytest.raises(ValueError, match="max_length"):
        MultiTaskPipeline(bert_model, bert_tokenizer, max_length=2)


def test_windows_default_to_the_length_the_model_was_trained_with(bert_model, bert_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(bert_model.config, "max_seq_length", 24, raising=False)
    assert MultiTaskPipeline(bert_model, bert_tokenizer).max_length == 24
    assert MultiTaskPipeline(bert_model, bert_tokenizer, max_length=64).max_length == 64  # asked for: allowed
    monkeypatch.setattr(bert_model.config, "max_seq_length", 512, raising=False)
    assert MultiTaskPipeline(bert_model, bert_tokenizer).max_length == 64  # never past what the model allows


# ---- batching -----------------------------------------------------------------------------------------------------


def count_encoder_calls(model: MultiTaskModel) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls: list[int] = []
    handle = model.encoder.register_forward_hook(lambda module, args, output: calls.append(output[0].shape[0]))
    return calls, handle


@pytest.mark.parametrize("n, batch_size", [(5, 2), (4, 4), (7, 3), (1, 8)])
def test_one_encoder_pass_per_batch_for_all_tasks(bert_model, bert_tokenizer, n, batch_size) -> None:
    pipe = MultiTaskPipeline(bert_model, bert_tokenizer, batch_size=batch_size)
    calls, handle = count_encoder_calls(bert_model)
    try:
        results = pipe([f"John met Mary {i} times in Paris." for i in range(n)])
    finally:
        handle.remove()
    assert len(calls) == math.ceil(n / batch_size)
    assert all(size <= batch_size for size in calls)
    assert all(set(r) == {"sentiment", "ner"} and len(r["ner"]) == 3 for r in results)


def test_batch_size_per_call_and_windows_share_batches(pipe: MultiTaskPipeline, bert_model) -> None:
    long_text = " ".join(["the market rose"] * 50) + " Anna"
    calls, handle = count_encoder_calls(bert_model)
    try:
        windows = pipe(long_text)["sentiment"]["windows"]
        calls.clear()
        results = pipe(["John", long_text, "Rome"], batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == math.ceil((windows + 2) / 2)
    assert [spans(r["ner"])[-1][1] for r in results] == ["John", "Anna", "Rome"]


def test_batched_results_equal_one_by_one_on_a_real_encoder(bert_tokenizer) -> None:
    """A randomly initialised (contextual) encoder: padding in a batch must not change any prediction."""
    torch.manual_seed(1)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", len(bert_tokenizer)), tasks=TASKS))
    texts = ["John met Mary .", "a", "Acme Corp bought Google in London yesterday , said Peter Smith", ""]
    texts.append(" ".join(["the market rose , said john"] * 30))
    one_by_one = MultiTaskPipeline(model, bert_tokenizer, batch_size=1)(texts)
    batched = MultiTaskPipeline(model, bert_tokenizer, batch_size=8)(texts)
    for a, b in zip(one_by_one, batched):
        assert a["sentiment"]["label"] == b["sentiment"]["label"]
        assert a["sentiment"]["score"] == pytest.approx(b["sentiment"]["score"], abs=1e-5)
        assert spans(a["ner"]) == spans(b["ner"])
        assert [e["score"] for e in a["ner"]] == pytest.approx([e["score"] for e in b["ner"]], abs=1e-5)
    assert not model.training


# ---- loading ------------------------------------------------------------------------------------------------------


def test_from_pretrained_round_trip(tmp_path: Path, pipe: MultiTaskPipeline, bert_model, bert_tokenizer) -> None:
    bert_model.save_pretrained(tmp_path)
    bert_tokenizer.save_pretrained(tmp_path)
    loaded = MultiTaskPipeline.from_pretrained(str(tmp_path), device="cpu", batch_size=3, stride=4)
    assert loaded.batch_size == 3 and loaded.stride == 4 and loaded.device.type == "cpu"
    assert not loaded.model.training
    texts = [text for text, _ in KNOWN]
    assert spans(loaded(texts[0])["ner"]) == KNOWN[0][1]
    for a, b in zip(loaded(texts), pipe(texts)):
        assert spans(a["ner"]) == spans(b["ner"])
        assert a["sentiment"]["label"] == b["sentiment"]["label"]


def test_roberta_byte_level_tokenizer(tmp_path: Path, roberta_tokenizer_dir: Path) -> None:
    raw = transformers.AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    assert not raw.add_prefix_space
    model = wired_model(prepare_tokenizer(raw), family="roberta")
    model.save_pretrained(tmp_path)
    raw.save_pretrained(tmp_path)
    pipe = MultiTaskPipeline.from_pretrained(str(tmp_path))
    assert pipe.max_length == 64
    texts = [
        "john smith visited london.",
        "  john  met   johnson in  london .",
        "acme corp bought google, then berlin. " * 12 + "smith lives in london",
    ]
    results = pipe(texts)
    assert spans(results[0]["ner"]) == [("PER", "john smith", 0, 10), ("LOC", "london", 19, 25)]
    assert spans(results[1]["ner"]) == [("PER", "john", 2, 6), ("PER", "johnson", 14, 21), ("LOC", "london", 26, 32)]
    assert results[2]["sentiment"]["windows"] > 1
    # acme, corp, google and berlin are several byte-level pieces here, so only the last sentence has entities.
    assert spans(results[2]["ner"]) == [("PER", "smith", 456, 461), ("LOC", "london", 471, 477)]
    for text, result in zip(texts, results):
        check_offsets(text, result["ner"])


# ---- the same input as training ----------------------------------------------------------------------------------

TOPIC = TaskSpec(name="topic", type="classification", labels=["business", "sport"], dropout=0.0)
# A training sentence of each task, and the text the pipeline gets for it. The classification text has what a plain
# tokenizer call splits differently from the word split: a symbol glued to a number ("3€": one unknown word for
# BERT's basic tokenizer) and punctuation glued to words (byte-level BPE: "'s" and "," without a prefix space). The
# NER sentence starts with a word that byte-level BPE encodes differently without a prefix space.
TOPIC_TEXT = "Johnson's sales rose 3€, said Acme."
NER_WORDS = ["Peter", "Johnson", "visited", "London", "."]
NER_TEXT = "Peter Johnson visited London."
TRAINING_ROWS = {
    "topic": (TOPIC, {"text": [TOPIC_TEXT], "label": ["business"]}, TOPIC_TEXT),
    "ner": (NER, {"tokens": [NER_WORDS], "ner_tags": [["B-PER", "I-PER", "O", "B-LOC", "O"]]}, NER_TEXT),
}


@pytest.mark.parametrize("task", ["topic", "ner"])
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pipeline_feeds_a_training_sentence_as_the_trainer_does(
    monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path, roberta_tokenizer_dir: Path, family: str, task: str
) -> None:
    """The pipeline's logits for a training sentence are the model's logits on the trainer's input for it: the row
    `preprocess_task` makes of it, collated by `MultiTaskDataCollator`. Both get the tokenizer as loaded (the
    byte-level BPE one without add_prefix_space, which training once used as it was: "john" -> "j ohn")."""
    loaded = transformers.AutoTokenizer.from_pretrained(tokenizer_dir if family == "bert" else roberta_tokenizer_dir)
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config(family, len(loaded)), tasks=[TOPIC, NER])
    model = MultiTaskModel(config).eval()  # a random, contextual encoder: every input id counts

    spec, columns, text = TRAINING_ROWS[task]
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict(columns)})
    row = preprocess_task(spec, raw, loaded, max_seq_length=64)["train"][0]
    batch = MultiTaskDataCollator(loaded)([row])
    with torch.no_grad():
        trained = model(**{key: value for key, value in batch.items() if key != "labels"}).logits

    served: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    forward_tasks = model.forward_tasks

    def recording_forward_tasks(input_ids, attention_mask=None, tasks=None, token_type_ids=None):
        logits = forward_tasks(input_ids, attention_mask, tasks=tasks, token_type_ids=token_type_ids)
        served.append((input_ids, logits))
        return logits

    monkeypatch.setattr(model, "forward_tasks", recording_forward_tasks)
    MultiTaskPipeline(model, loaded)(text)
    [(input_ids, logits)] = served
    assert loaded.convert_ids_to_tokens(input_ids[0]) == loaded.convert_ids_to_tokens(batch["input_ids"][0])
    torch.testing.assert_close(logits[task], trained)
