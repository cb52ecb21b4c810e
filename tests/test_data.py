"""tether.data: readers name file:line, tokenisation (prompt and completion apart, EOS appended), collators.

Expected ids are derived by hand from the word tokenizer: <pad>=0 <unk>=1 <bos>=2 <eos>=3, then WORDS from 4
(a=4, b=5, c=6, ...). It adds no special tokens of its own.
"""

import logging
import re

import pytest
import torch
from plumbing_helpers import tiny_tokenizer, word_id, write_jsonl

from tether.config import TemplateConfig, load_config
from tether.config.supervised import SFTConfig
from tether.data import (
    PromptTokens,
    SFTTokens,
    collate_prompts,
    collate_sft,
    encode_completion,
    encode_prompt,
    eos_id,
    load_prompts,
    load_sft,
    pad,
    position_ids,
    render_plain,
    set_template,
    tokenize_prompts,
    tokenize_sft,
)
from tether.errors import DataError, TetherError
from tether.preferences import PairTokens, collate_pairs, load_preferences

A, B, C, D, EOS, PAD = word_id("a"), word_id("b"), word_id("c"), word_id("d"), 3, 0


def _raises_at(path, line, fragment):
    return pytest.raises(DataError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(fragment))


def test_sft_reads_both_formats_and_skips_blank_lines(tmp_path):
    f = tmp_path / "sft.jsonl"
    f.write_text(
        '{"prompt": "a b", "completion": "c"}\n'
        "\n"
        '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b c"}]}\n'
    )
    ex = load_sft(f)
    assert [(e.prompt, e.completion, e.line) for e in ex] == [
        ("a b", "c", 1),
        ([{"role": "user", "content": "a"}], "b c", 3),  # the blank line 2 still counts
    ]


@pytest.mark.parametrize(
    ("lines", "line", "fragment"),
    [
        (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": '], 2, "malformed JSON"),
        (['["a", "b"]'], 1, "expected a JSON object"),
        (['{"prompt": "a"}'], 1, "missing column 'completion'"),
        (['{"completion": "a"}'], 1, "missing column 'prompt'"),
        (['{"text": "a"}'], 1, "missing columns"),
        (['{"prompt": "a", "completion": "  "}'], 1, "empty completion"),
        (['{"prompt": 3, "completion": "a"}'], 1, "'prompt' must be a string"),
        (['{"messages": [{"role": "user", "content": "a"}]}'], 1, "last message must be the assistant's"),
        (['{"messages": [{"role": "assistant", "content": ""}]}'], 1, "empty completion"),
        (['{"messages": [{"role": "user"}]}'], 1, "messages[0] must be an object"),
    ],
)
def test_sft_problems_name_file_and_line(tmp_path, lines, line, fragment):
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with _raises_at(f, line, fragment):
        load_sft(f)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_sft(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no records"):
        load_sft(tmp_path / "empty.jsonl")


def test_preferences_and_prompts(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": [{"role": "user", "content": "a"}], "chosen": "b", "rejected": "c", "label": 1},
    ])
    pairs = load_preferences(f)
    assert pairs[1].prompt == [{"role": "user", "content": "a"}] and pairs[1].chosen == "b"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"},
                                              {"prompt": "a", "chosen": "b", "rejected": ""}])
    with _raises_at(bad, 2, "empty rejected"):
        load_preferences(bad)
    bad2 = write_jsonl(tmp_path / "bad2.jsonl", [{"prompt": "a", "chosen": "b"}])
    with _raises_at(bad2, 1, "missing column 'rejected'"):
        load_preferences(bad2)
    prompts = load_prompts(write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a b", "answer": "7"}]))
    assert prompts[0].prompt == "a b" and prompts[0].meta == {"answer": "7"}


def test_prompt_and_completion_are_tokenised_apart_with_eos(tmp_path):
    tok = tiny_tokenizer()
    f = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a b", "completion": "c d"}])
    (item,), skips = tokenize_sft(load_sft(f), tok, max_length=16)
    assert item.prompt_ids == [A, B] and item.completion_ids == [C, D, EOS]
    assert skips.skipped == 0 and skips.truncated == 0


def test_too_long_prompt_errors_or_is_skipped_with_a_count(tmp_path, caplog):
    tok = tiny_tokenizer()
    f = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "a", "completion": "b"},
        {"prompt": "a b c d", "completion": "b"},  # 4 prompt tokens: no room in max_length 4
        {"prompt": "a b", "completion": "c d"},  # 2 + 3 tokens > 4: the completion is cut to 2
    ])
    with _raises_at(f, 2, "prompt is 4 tokens, leaving no room for a completion in max_length 4"):
        tokenize_sft(load_sft(f), tok, max_length=4)
    with caplog.at_level(logging.WARNING, logger="tether.data"):
        items, skips = tokenize_sft(load_sft(f), tok, max_length=4, too_long="skip")
    assert skips.skipped == 1 and skips.first == [f"{f}:2"] and skips.truncated == 1
    assert [(x.prompt_ids, x.completion_ids) for x in items] == [([A], [B, EOS]), ([A, B], [C, D])]
    assert "skipped 1 SFT records" in caplog.text and f"{f}:2" in caplog.text


def test_chat_template_is_used_for_messages_and_plain_text_otherwise():
    tok = tiny_tokenizer()
    messages = [{"role": "user", "content": "a b"}]
    # No template: "User: a b\n\nAssistant:" — the role words are not in the vocabulary, so <unk> (1).
    assert render_plain(messages) == "User: a b\n\nAssistant:"
    assert encode_prompt(tok, messages) == [1, A, B, 1]
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}c {% endif %}{{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}d{% endif %}"
    )
    assert encode_prompt(tok, messages) == [C, A, B, D]  # "c a b d"
    assert encode_prompt(tok, "a b") == [A, B]  # auto: a string prompt stays plain
    assert encode_prompt(tok, "a b", chat_template="always") == [C, A, B, D]
    assert encode_prompt(tok, messages, chat_template="never") == [1, A, B, 1]


def test_data_template_replaces_the_chat_template_and_sets_its_variables(tmp_path):
    """data.template.file replaces the tokenizer's template; each kwargs entry becomes a set-line at its top,
    read back by Jinja as the same Python value: true → True, 2 → 2 (so n + 1 renders 3), a string with
    quotes → itself, 0.25 → 0.25 (x * 2 renders 0.5). Without a file the variables go on top of the
    tokenizer's own template; without either nothing changes; variables with no template are refused."""
    template = tmp_path / "chat.jinja"
    template.write_text("{{ flag }}|{{ n + 1 }}|{{ word }}|{{ x * 2 }}|"
                        "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tok = tiny_tokenizer()
    kwargs = {"flag": True, "n": 2, "word": 'say "hi"', "x": 0.25}
    set_template(tok, TemplateConfig(file=str(template), kwargs=kwargs))
    messages = [{"role": "user", "content": "a b"}]
    assert tok.apply_chat_template(messages, tokenize=False) == 'True|3|say "hi"|0.5|a b'

    own = tiny_tokenizer()
    own.chat_template = "{% for m in messages %}{{ lead }} {{ m['content'] }}{% endfor %}"
    set_template(own, TemplateConfig(kwargs={"lead": "c"}))
    assert encode_prompt(own, messages) == [C, A, B]
    before = own.chat_template
    set_template(own, TemplateConfig())
    assert own.chat_template == before
    with pytest.raises(TetherError, match="data.template.kwargs: the tokenizer has no chat template"):
        set_template(tiny_tokenizer(), TemplateConfig(kwargs={"lead": "c"}))


@pytest.mark.parametrize("item, message", [
    ("data.template.file=no/such.jinja", "config key data.template.file 'no/such.jinja' is not a file"),
    ("data.template.kwargs={a-b: 1}", "config key data.template.kwargs.a-b is not a name"),
    ("data.template.kwargs.x=[1]", "config key data.template.kwargs.x: expected bool | int | str | float"),
])
def test_bad_template_settings_are_refused_at_load(item, message):
    with pytest.raises(TetherError, match=re.escape(message)):
        load_config(SFTConfig, None, ["model=m", "data.train=t.jsonl", item])


def test_all_assistant_turns_makes_one_example_per_turn(tmp_path):
    """[system, user, assistant, user, assistant]: by default one example (the last turn after the four
    messages before it); with all_assistant_turns two, each turn after the messages before it. An opening
    assistant turn has nothing before it and is not trained; an empty middle turn is named by its position,
    and two assistant turns in a row are refused as a prompt that ends on one."""
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"}]
    f = write_jsonl(tmp_path / "chat.jsonl", [{"messages": chat}, {"messages": [
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"}]}])
    assert [(x.prompt, x.completion) for x in load_sft(f)] == [(chat[:4], "a2"), (
        [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "u"}], "a")]
    every = [(x.prompt, x.completion, x.line) for x in load_sft(f, all_assistant_turns=True)]
    assert every == [(chat[:2], "a1", 1), (chat[:4], "a2", 1), (
        [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "u"}], "a", 2)]
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"messages": [*chat[:2], {**chat[2], "content": " "},
                                                                 *chat[3:]]}])
    with pytest.raises(DataError, match=r"empty.jsonl:1: empty completion \(assistant message 3\)"):
        load_sft(empty, all_assistant_turns=True)
    assert len(load_sft(empty)) == 1  # only the last turn is read by default
    twice = write_jsonl(tmp_path / "twice.jsonl", [{"messages": [*chat[:3], chat[2]]}])
    with pytest.raises(DataError, match="twice.jsonl:1: the prompt ends on an assistant turn"):
        load_sft(twice, all_assistant_turns=True)


def test_completions_end_with_the_template_s_end_of_turn_token_where_it_is_not_eos():
    """A template that ends each turn with the special token <eot> (id 16: the 12 words after ids 0-3): a
    completion "a b" is [a, b, <eot>], and <eot> is the id that stops sampling (eos_id). Where the template
    ends turns with EOS, with a plain word, or the tokenizer has no template, EOS (3) stays."""
    tok = tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<eot>"]})
    assert eos_id(tok) == EOS and encode_completion(tok, "a b") == [A, B, EOS]
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} <eot> {% endfor %}"
    assert eos_id(tok) == 16 and encode_completion(tok, "a b") == [A, B, 16]
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} <eos> {% endfor %}"
    assert eos_id(tok) == EOS
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} c {% endfor %}"
    assert eos_id(tok) == EOS


def test_collate_sft_right_and_left():
    items = [SFTTokens([A, B], [C, EOS]), SFTTokens([A], [EOS])]
    right = collate_sft(items, PAD, "right")
    assert right["input_ids"].tolist() == [[A, B, C, EOS], [A, EOS, PAD, PAD]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert right["loss_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    left = collate_sft(items, PAD, "left")
    assert left["input_ids"].tolist() == [[A, B, C, EOS], [PAD, PAD, A, EOS]]
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert left["loss_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]


def test_collate_pairs_puts_chosen_rows_first():
    batch = collate_pairs([PairTokens([A], [B, EOS], [C, D, EOS]), PairTokens([B], [A, EOS], [EOS])], PAD)
    chosen, rejected = [[A, B, EOS, PAD], [B, A, EOS, PAD]], [[A, C, D, EOS], [B, EOS, PAD, PAD]]
    assert batch["input_ids"].tolist() == chosen + rejected
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 0, 0]]


def test_prompts_left_padded_and_too_long_policies(tmp_path):
    tok = tiny_tokenizer()
    f = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a"}, {"prompt": "a b c"}])
    with _raises_at(f, 2, "prompt is 3 tokens, longer than max_prompt_length 2"):
        tokenize_prompts(load_prompts(f), tok, 2)
    items, skips = tokenize_prompts(load_prompts(f), tok, 2, too_long="truncate")
    assert [x.prompt_ids for x in items] == [[A], [B, C]] and skips.truncated == 1  # keeps the end
    items, skips = tokenize_prompts(load_prompts(f), tok, 2, too_long="skip")
    assert [x.prompt_ids for x in items] == [[A]] and skips.skipped == 1
    batch = collate_prompts([PromptTokens([A], None), PromptTokens([A, B, C], None)], PAD)
    assert batch["input_ids"].tolist() == [[PAD, PAD, A], [A, B, C]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1], [1, 1, 1]]


def test_pad_and_position_ids():
    ids, mask = pad([[7], [8, 9]], PAD, side="left")
    assert ids.tolist() == [[PAD, 7], [8, 9]] and mask.tolist() == [[0, 1], [1, 1]]
    # Positions count real tokens: a left-padded row starts at 0 at its first real token.
    assert position_ids(torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]
    with pytest.raises(ValueError):
        pad([[1]], PAD, side="middle")


def test_an_empty_prompt_is_replaced_by_bos(tmp_path):
    """Otherwise the first completion token would have no position to be predicted from (<bos> = 2)."""
    tok = tiny_tokenizer()
    f = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "", "completion": "a"}])
    (item,), _ = tokenize_sft(load_sft(f), tok, max_length=8)
    assert item.prompt_ids == [2] and item.completion_ids == [A, EOS]


# ------------------------------------------------------------------------------------------------ bad bytes


def test_a_byte_that_is_not_utf8_names_its_line_and_byte(tmp_path):
    """Line 2 is `{"prompt": "a\\xff", ...}`: the bad byte 0xff is the 14th byte of its line."""
    f = tmp_path / "s.jsonl"
    f.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a\xff", "completion": "b"}\n')
    with _raises_at(f, 2, "byte 0xff at byte 14 is not UTF-8"):
        load_sft(f)


def test_a_utf8_byte_order_mark_on_the_first_line_is_read_as_none(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}\n')
    assert [(e.prompt, e.completion) for e in load_sft(f)] == [("a", "b")]


@pytest.mark.parametrize("name", ["p.jsonl", "p.jsonl.gz"])
def test_gzip_is_read_by_its_magic_bytes_whatever_the_name(tmp_path, name):
    """Both names hold gzip bytes (1f 8b); line numbers count the decompressed lines (blank line 2)."""
    import gzip

    f = tmp_path / name
    f.write_bytes(gzip.compress(b'{"prompt": "a b", "answer": "7"}\n\n{"prompt": "c"}\n'))
    got = [(e.prompt, e.meta, e.line) for e in load_prompts(f)]
    assert got == [("a b", {"answer": "7"}, 1), ("c", {}, 3)]


def test_a_truncated_gzip_file_names_the_line_it_breaks_in(tmp_path):
    """200 lines of 32 random hex digits compress to about 4 kB; the first 40 bytes (a 10-byte header, then
    30 bytes of the first deflate block's Huffman tables) decode no text at all: line 1 is where it breaks."""
    import gzip
    import random

    rng = random.Random(0)
    text = "".join(f'{{"prompt": "{rng.getrandbits(128):032x}"}}\n' for _ in range(200))
    f = tmp_path / "p.jsonl"
    f.write_bytes(gzip.compress(text.encode())[:40])
    with _raises_at(f, 1, "corrupt or truncated gzip data"):
        load_prompts(f)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (r'{"prompt": "a", "completion": "b\ud800"}', "'completion'"),
        (r'{"messages": [{"role": "user", "content": "\udc00 a"}, {"role": "assistant", "content": "b"}]}',
         "'messages[0].content'"),
        (r'{"prompt": "a", "completion": "b", "\ud83d": 1}', "a key"),
    ],
)
def test_a_lone_surrogate_is_refused_with_its_field(tmp_path, text, field):
    """A lone surrogate is no character: a tokenizer cannot encode it. A pair (\\ud83d\\ude00: 😀) is one."""
    ok = tmp_path / "ok.jsonl"
    ok.write_text(r'{"prompt": "a \ud83d\ude00", "completion": "b \\ud800"}' + "\n")  # a pair; an escaped \
    assert [(e.prompt, e.completion) for e in load_sft(ok)] == [("a 😀", "b \\ud800")]
    f = tmp_path / "s.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n' + text + "\n")
    with _raises_at(f, 2, f"lone surrogate in {field}"):
        load_sft(f)


# ------------------------------------------------------------------------------------------------ ties


def test_pairs_with_chosen_equal_to_rejected_are_counted_and_left_out(tmp_path, caplog):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "a", "chosen": "b", "rejected": "c"},
        {"prompt": "a", "chosen": "b", "rejected": "b"},  # a tie: line 2
        {"prompt": "b", "chosen": "c", "rejected": "d"},
        {"prompt": "c", "chosen": "d e", "rejected": "d e"},  # a tie: line 4
    ])
    with caplog.at_level(logging.WARNING, logger="tether.data"):
        pairs = load_preferences(f)
    assert [p.line for p in pairs] == [1, 3]
    (msg,) = [r.getMessage() for r in caplog.records]
    assert f"2 of 4 pairs have chosen == rejected (first at {f}:2)" in msg and "left out" in msg


def test_a_file_of_ties_only_is_refused(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "b"}] * 2)
    with pytest.raises(DataError, match=re.escape(f"{f}: every pair (2) has chosen == rejected")):
        load_preferences(f)


# ------------------------------------------------------------------------------------------------ roles


USER, ASSISTANT = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}


@pytest.mark.parametrize(
    ("load", "record", "fragment"),
    [
        (load_sft, {"messages": [{"role": "human", "content": "a"}, ASSISTANT]},
         "messages[0] has role 'human'"),
        (load_sft, {"messages": [USER, {"role": "tool", "content": "a"}, USER, ASSISTANT]},
         "messages[1] has role 'tool'"),
        (load_preferences, {"prompt": [{"role": "User", "content": "a"}], "chosen": "b", "rejected": "c"},
         "prompt[0] has role 'User'"),
        (load_prompts, {"prompt": [USER, {"role": "bot", "content": "b"}]}, "prompt[1] has role 'bot'"),
        (load_prompts, {"prompt": [USER, ASSISTANT]}, "the prompt ends on an assistant turn"),
        (load_preferences, {"prompt": [USER, ASSISTANT], "chosen": "b", "rejected": "c"},
         "the prompt ends on an assistant turn"),
        (load_sft, {"messages": [USER, ASSISTANT, ASSISTANT]}, "the prompt ends on an assistant turn"),
    ],
)
def test_unknown_roles_and_prompts_ending_on_the_assistant_are_refused(tmp_path, load, record, fragment):
    good = {load_sft: {"prompt": "a", "completion": "b"}, load_prompts: {"prompt": "a"},
            load_preferences: {"prompt": [{"role": "system", "content": "a"}, USER, ASSISTANT, USER],
                               "chosen": "b", "rejected": "c"}}[load]
    f = write_jsonl(tmp_path / "d.jsonl", [good, record])
    with _raises_at(f, 2, fragment):
        load(f)


@pytest.mark.parametrize("prompt", ["", " \n "])
def test_an_empty_prompt_to_sample_from_is_refused(tmp_path, prompt):
    f = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a"}, {"prompt": prompt}])
    with _raises_at(f, 2, "empty prompt"):
        load_prompts(f)
