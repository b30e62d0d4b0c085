"""MultiTaskPipeline: exact spans and labels on texts whose answers are known, long texts, batching, loading.

Known answers without training: `wired_model` turns a tiny encoder into a context-free lookup. Its layers' output
projections are zeroed (each layer becomes LayerNorm(h) ~= h) and the position/token-type embeddings too, so the
hidden vector of a token is LayerNorm(its word embedding). Word embeddings are one-hot in the dimension of the tag the
test wants for that token (dim 0 = "O" for every other token), the NER head reads dims 0..6 as the 7 tags, and the
mean-pooled sentiment head reads dim 10 ("neg", the word "bad") and dim 11 ("pos", the word "good"). So the NER tag
of a word is the tag of its first sub-token, whatever the context or the window it sits in.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import transformers

from mtl_hf import MultiTaskConfig, MultiTaskModel, TaskSpec
from mtl_hf.pipeline import MultiTaskPipeline, group_entities, plan_windows, prepare_tokenizer, split_words
from tests.conftest import tiny_encoder_config

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
TASKS = [
    TaskSpec(name="sentiment", type="classification", labels=["neg", "pos"], pooling="mean", dropout=0.0),
    TaskSpec(name="ner", type="ner", labels=NER_LABELS, dropout=0.0),
]
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


def token_tags(tokenizer: transformers.PreTrainedTokenizerBase) -> dict[int, str]:
    """Token id -> tag for the TAGS words that are a single token in this vocabulary (all of them for the BERT
    vocabulary; a few for the tiny byte-level BPE, whose pieces like "Ġp" start several words)."""
    tags = {}
    for word, tag in TAGS.items():
        ids = tokenizer([word], is_split_into_words=True, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            tags[ids[0]] = tag
    return tags


def wired_model(tokenizer: transformers.PreTrainedTokenizerBase, family: str = "bert") -> MultiTaskModel:
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config(family, len(tokenizer)), tasks=TASKS)
    model = MultiTaskModel(config).eval()
    encoder = model.encoder
    with torch.no_grad():
        for layer in encoder.encoder.layer:
            for linear in (layer.attention.output.dense, layer.output.dense):
                linear.weight.zero_()
                linear.bias.zero_()
        embeddings = encoder.embeddings
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        table = torch.zeros_like(embeddings.word_embeddings.weight)
        table[:, 0] = 1.0
        for token, tag in token_tags(tokenizer).items():
            table[token] = 0.0
            table[token, NER_LABELS.index(tag)] = 1.0
        for piece, tag in TRAPS.items():
            token = tokenizer.convert_tokens_to_ids(piece)
            if token != tokenizer.unk_token_id:
                table[token] = 0.0
                table[token, NER_LABELS.index(tag)] = 1.0
        for word, dim in SENTIMENT_DIMS.items():
            table[first_subtoken_id(tokenizer, word), dim] = 1.0
        embeddings.word_embeddings.weight.copy_(table)
        ner = model.heads["ner"].classifier
        ner.weight.zero_()
        ner.bias.zero_()
        ner.weight[range(len(NER_LABELS)), range(len(NER_LABELS))] = 1.0
        sentiment = model.heads["sentiment"].classifier
        sentiment.weight.zero_()
        sentiment.bias.zero_()
        sentiment.weight[0, SENTIMENT_DIMS["bad"]] = 1.0
        sentiment.weight[1, SENTIMENT_DIMS["good"]] = 1.0
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


def expected_entities(text: str, tokenizer: transformers.PreTrainedTokenizerBase) -> list[tuple[str, str, int, int]]:
    """What the context-free wired model must give: each word takes the tag of its first sub-token (else O)."""
    words = split_words(text)
    tags = token_tags(tokenizer)
    labels = [tags.get(first_subtoken_id(tokenizer, word), "O") for word, _, _ in words]
    return spans(group_entities(text, words, labels, [1.0] * len(words)))


# ---- words and spans --------------------------------------------------------------------------------------------


def test_split_words_keeps_offsets_into_the_original_text() -> None:
    text = "  Mr. O'Neil's\t3-2 win,\n\nZoe\u0308!  (U.S.)  "
    words = split_words(text)
    assert [w for w, _, _ in words] == [
        "Mr", ".", "O", "'", "Neil", "'", "s", "3", "-", "2", "win", ",", "Zoe\u0308", "!", "(", "U", ".", "S", ".", ")"
    ]
    for word, start, end in words:
        assert text[start:end] == word
    assert split_words("") == [] and split_words(" \n\t ") == []
    assert [w for w, _, _ in split_words("东京 is 東京都.")] == ["东", "京", "is", "東", "京", "都", "."]


def test_words_give_wordpiece_the_tokens_of_the_plain_text(bert_tokenizer) -> None:
    """Why one encoding can serve classification (trained on plain text) and NER (trained on words)."""
    for text in ["Peter Smith visited London.", "  it's 3-2 , (Acme)\tCorp!! said  JOHNSON", "东京 rose 2.5%"]:
        words = [w for w, _, _ in split_words(text)]
        assert bert_tokenizer(words, is_split_into_words=True).tokens() == bert_tokenizer(text).tokens()


def test_group_entities_follows_simple_aggregation_rules() -> None:
    text = "a b c d e f g h i"
    words = split_words(text)
    labels = ["B-PER", "I-PER", "I-PER", "O", "I-LOC", "I-PER", "B-ORG", "B-ORG", "I-ORG"]
    scores = [0.9, 0.8, 0.7, 0.5, 0.6, 0.4, 1.0, 0.5, 0.7]
    entities = group_entities(text, words, labels, scores)
    assert spans(entities) == [
        ("PER", "a b c", 0, 5),  # B then I, I of the same type
        ("LOC", "e", 8, 9),  # I after O opens a span
        ("PER", "f", 10, 11),  # I of another type opens a span
        ("ORG", "g", 12, 13),  # B always opens a span
        ("ORG", "h i", 14, 17),
    ]
    assert entities[0]["score"] == pytest.approx(0.8)
    assert entities[4]["score"] == pytest.approx(0.6)
    # BIOES and IO schemes.
    bioes = ["S-PER", "B-LOC", "E-LOC", "B-LOC", "I-LOC", "O", "PER", "PER", "LOC"]
    assert [e["word"] for e in group_entities(text, words, bioes, [1.0] * 9)] == ["a", "b c", "d e", "g h", "i"]


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
    ("the smith met JOHN Mary,\tthen\n\nParis smith.", None),
    ("Anna lives in Rome (Madrid).", None),
    ("nothing to see here", []),
]


@pytest.mark.parametrize("text, expected", KNOWN)
def test_known_spans(pipe: MultiTaskPipeline, text: str, expected: list | None) -> None:
    result = pipe(text)
    assert set(result) == {"sentiment", "ner"}
    check_offsets(text, result["ner"])
    if expected is None:
        expected = expected_entities(text, pipe.tokenizer)
    assert spans(result["ner"]) == expected


def test_rules_exercised_by_the_generated_expectations(bert_tokenizer) -> None:
    text = "the smith met JOHN Mary,\tthen\n\nParis smith."
    assert expected_entities(text, bert_tokenizer) == [
        ent(text, "PER", "smith"),
        ent(text, "PER", "JOHN"),
        ent(text, "PER", "Mary"),
        ent(text, "LOC", "Paris"),
        ent(text, "PER", "smith", 1),
    ]


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


@pytest.mark.parametrize("text", ["", "   \n\t", "\u200b"])
def test_empty_texts(pipe: MultiTaskPipeline, text: str) -> None:
    result = pipe(text)
    assert result["ner"] == []
    assert result["sentiment"]["label"] in {"neg", "pos"}
    assert 0.0 < result["sentiment"]["score"] <= 1.0


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


@pytest.mark.parametrize("max_length, stride", [(None, None), (16, 0), (12, 5), (7, 3), (3, 0)])
def test_random_long_texts_match_word_lookups(bert_model, bert_tokenizer, max_length, stride) -> None:
    rng = random.Random(max_length or 0)
    vocabulary = [*TAGS, "Johnson", "Londoner", "the", "met", ",", ".", "good", "bad", "zzzzqx"]
    pipe = MultiTaskPipeline(bert_model, bert_tokenizer, max_length=max_length, stride=stride, batch_size=16)
    most_words = 150 if pipe.max_length > 8 else 40  # tiny windows: fewer words keep the test fast
    texts = [
        "".join(rng.choice(vocabulary) + rng.choice([" ", "  ", "\n", ""]) for _ in range(rng.randrange(1, most_words)))
        for _ in range(6)
    ]
    for text, result in zip(texts, pipe(texts)):
        assert spans(result["ner"]) == expected_entities(text, pipe.tokenizer)
        check_offsets(text, result["ner"])


def test_very_long_inputs_never_crash(pipe: MultiTaskPipeline) -> None:
    long_word = "z" * 300  # 300 word pieces: more than a whole window on its own
    text = " ".join(["the"] * 5000) + f" {long_word} Mary  visited Paris."
    result = pipe(text)
    assert result["sentiment"]["windows"] > 80
    assert spans(result["ner"]) == [ent(text, "PER", "Mary"), ent(text, "LOC", "Paris")]


def test_max_length_is_checked(bert_model, bert_tokenizer) -> None:
    assert MultiTaskPipeline(bert_model, bert_tokenizer).max_length == 64
    with pytest.raises(ValueError, match="max_length"):
        MultiTaskPipeline(bert_model, bert_tokenizer, max_length=65)
    with pytest.raises(ValueError, match="max_length"):
        MultiTaskPipeline(bert_model, bert_tokenizer, max_length=2)


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
    prepared = prepare_tokenizer(raw)
    assert prepared([["john", "."]], is_split_into_words=True, add_special_tokens=False).tokens() == ["Ġjohn", "Ġ."]
    assert raw(["john"], is_split_into_words=True, add_special_tokens=False).tokens() == ["john"]  # untouched

    model = wired_model(prepared, family="roberta")
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
    assert spans(results[2]["ner"])[-2:] == [ent(texts[2], "PER", "smith"), ent(texts[2], "LOC", "london")]
    for text, result in zip(texts, results):
        assert spans(result["ner"]) == expected_entities(text, pipe.tokenizer)
        check_offsets(text, result["ner"])
