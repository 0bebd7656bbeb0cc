"""TextAssembler: stop strings across token boundaries, held-back text, split UTF-8 characters."""

import pytest

from starchat.inference.textstream import TextAssembler


def _piece_decoder(pieces: dict[int, bytes]):
    return lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")


def _run(pieces: list[bytes], stop=()):
    table = dict(enumerate(pieces))
    asm = TextAssembler(_piece_decoder(table), stop)
    deltas = []
    for i in range(len(pieces)):
        deltas.append(asm.feed(i))
        if asm.stopped:
            break
    deltas.append(asm.finish())
    return asm, deltas


def test_stop_string_split_over_four_tokens_is_found_and_cut():
    asm, deltas = _run([b"Hello", b" wor", b"ld", b"<", b"|st", b"op", b"|>", b" more"], stop=["<|stop|>"])
    assert asm.stopped
    assert asm.text == "Hello world"
    assert "".join(deltas) == "Hello world"


def test_possible_stop_prefix_is_held_back_then_released():
    asm, deltas = _run([b"a", b"<", b"|", b"x"], stop=["<|stop|>"])
    assert not asm.stopped
    assert deltas[1:3] == ["", ""]  # "<" and "<|" might start the stop string
    assert deltas[3] == "<|x" and asm.text == "a<|x"


def test_split_utf8_character_is_never_emitted_half():
    e_acute = "é".encode()
    asm, deltas = _run([b"caf", e_acute[:1], e_acute[1:], b"!"])
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == asm.text == "café!"


def test_earliest_of_several_stop_strings_wins():
    asm, _ = _run([b"x = 1\n", b"```", b"\n\nEND"], stop=["END", "```"])
    assert asm.text == "x = 1\n"


def test_overlapping_stop_strings_cut_at_the_first_to_end():
    asm, deltas = _run([b"xxab", b"cd", b"e"], stop=["abcde", "bc", "zz"])
    assert asm.stopped and asm.text == "xxa" and "".join(deltas) == "xxa"


def test_held_back_text_is_the_longest_tail_that_may_start_a_stop_string():
    asm, deltas = _run([b"aab", b"a", b"c"], stop=["abab", "bac"])
    assert deltas[:2] == ["a", ""]  # "ab" may start "abab"; then "ba" may start "bac"
    assert asm.stopped and asm.text == "aa"


@pytest.mark.timing
def test_the_stop_check_cost_does_not_grow_with_the_stop_strings():
    """4,096 tokens of 8 characters against stop strings that the text keeps almost starting. The old
    check sliced and compared every tail of the text at every token (quadratic per token: hours here);
    the automaton does a few steps per character. Generous bound, checked as it goes so it stays bounded."""
    import time

    asm = TextAssembler(lambda ids: "xaxaxaxa" * len(ids), ["a" * 200_000 + "b", "xa" * 1500 + "y"])
    start, out = time.process_time(), []
    for i in range(4096):
        out.append(asm.feed(i))
        assert time.process_time() - start < 5, f"{i} tokens took over 5 s of CPU"
    assert not asm.stopped and len("".join(out)) == 8 * 4096 - 3000  # the tail that may start "xaxa...y"
    assert "".join(out) + asm.finish() == "xaxaxaxa" * 4096
